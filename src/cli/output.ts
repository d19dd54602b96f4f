/**
 * Where `sana generate` writes: checked, and its folders created, before anything loads, so a bad `-o` fails in
 * a second instead of after the whole generation (or, for `/proc/…`, never: Node's recursive `mkdir` loops there
 * forever, since `mkdir` answers ENOENT under a parent that exists).
 */
import { constants } from 'node:fs'
import * as fs from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { io, SanaError } from '../errors'
import { imageFormatOf } from '../png'
import { UsageError } from './command'

/** `mkdir -p`, one level at a time, so a parent that exists but takes no children is an error, not a loop. */
async function makeDirs(dir: string): Promise<void> {
  const missing: string[] = []
  for (let d = dir; ; d = dirname(d)) {
    const st = await fs.stat(d).catch(() => undefined)
    if (st?.isDirectory()) break
    if (st) throw new SanaError('SANA_IO_ERROR', `Cannot create the folder ${dir}: ${d} is a file`)
    if (dirname(d) === d) break
    missing.unshift(d)
  }
  for (const d of missing) {
    await io(`Cannot create the folder ${dir}`, () => fs.mkdir(d).catch((e: NodeJS.ErrnoException) => (e.code === 'EEXIST' ? undefined : Promise.reject(e))))
  }
}

/** The folder takes new files: create (and remove) an empty probe file, which also catches read-only mounts. */
async function checkWritableDir(dir: string): Promise<void> {
  const probe = join(dir, `.sana-write-test-${process.pid}-${Date.now()}`)
  await io(`Cannot write into ${dir}`, async () => {
    await (await fs.open(probe, 'wx')).close()
    await fs.rm(probe, { force: true })
  })
}

/**
 * Check every output path: a known image extension (usage error otherwise), not a folder, an existing file
 * writable, and the folder created and writable. Errors are `SANA_IO_ERROR` naming the path.
 * @example await prepareOutputs(['out/fox-0.png', 'out/fox-1.png'])
 */
export async function prepareOutputs(paths: readonly string[]): Promise<void> {
  for (const path of paths) {
    try {
      imageFormatOf(path)
    } catch (e) {
      throw new UsageError(`${(e as Error).message} (--output)`)
    }
  }
  for (const dir of new Set(paths.map((p) => dirname(resolve(p))))) {
    await makeDirs(dir)
    await checkWritableDir(dir)
  }
  for (const path of paths) {
    const st = await fs.stat(path).catch(() => undefined)
    if (st?.isDirectory()) throw new SanaError('SANA_IO_ERROR', `Cannot write ${path}: it is a folder (give a file name, e.g. ${join(path, 'image.png')})`)
    if (st) await io(`Cannot write ${path}`, () => fs.access(path, constants.W_OK))
  }
}
