/**
 * The Hugging Face cache of one repo, laid out as Python's `huggingface_hub` writes it:
 * `models--org--name/{blobs/<etag>, snapshots/<commit>/<path> → ../../blobs/<etag>, refs/<revision>}`.
 */
import * as fs from 'node:fs/promises'
import { homedir } from 'node:os'
import { dirname, join, relative, resolve } from 'node:path'
import { io, SanaError } from '../errors'
import { planPipeline, shardsOf } from './plan'

export const COMMIT_HASH = /^[0-9a-f]{40}$/

/** The hub cache folder (`cacheDir` ?? HF_HUB_CACHE ?? $HF_HOME/hub ?? ~/.cache/huggingface/hub). */
export function hubCacheDir(cacheDir: string | undefined): string {
  if (cacheDir !== undefined) return resolve(cacheDir)
  const env = process.env
  if (env.HF_HUB_CACHE) return resolve(env.HF_HUB_CACHE)
  const hfHome = env.HF_HOME || join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'huggingface')
  return resolve(hfHome, 'hub')
}

/** A repo-relative path that stays inside the folder it is joined to. */
export function isSafeRelPath(p: string): boolean {
  return p.length > 0 && !p.includes('\\') && !p.includes('\0') && p.split('/').every((s) => s !== '' && s !== '.' && s !== '..')
}

/** Size of a file (following symlinks), or undefined when it does not exist. */
export async function fileSize(path: string): Promise<number | undefined> {
  try {
    const st = await fs.stat(path)
    return st.isFile() ? st.size : undefined
  } catch {
    return undefined
  }
}

export async function readJson(path: string, what: string): Promise<unknown> {
  const text = await io(`Could not read ${what}`, () => fs.readFile(path, 'utf8'))
  try {
    return JSON.parse(text)
  } catch (e) {
    throw new SanaError('SANA_INVALID_JSON', `${what} is not valid JSON (${path}): ${(e as Error).message}`, { cause: e })
  }
}

export class RepoCache {
  /** `<cacheDir>/models--org--name`. */
  readonly dir: string

  constructor(cacheDir: string, readonly repoId: string) {
    this.dir = join(cacheDir, `models--${repoId.replace('/', '--')}`)
  }

  blob(etag: string): string {
    return join(this.dir, 'blobs', etag)
  }

  snapshot(commit: string): string {
    return join(this.dir, 'snapshots', commit)
  }

  /** The cached commit `revision` resolves to, if any (a commit hash to itself when its snapshot exists). */
  async commitOf(revision: string): Promise<string | undefined> {
    let commit = revision
    if (!COMMIT_HASH.test(revision)) {
      commit = (await fs.readFile(join(this.dir, 'refs', revision), 'utf8').catch(() => '')).trim()
      if (!COMMIT_HASH.test(commit)) return undefined
    }
    return (await fs.stat(this.snapshot(commit)).catch(() => undefined))?.isDirectory() ? commit : undefined
  }

  /** Record where a branch or tag points (huggingface_hub writes no ref for a commit hash). */
  async writeRef(revision: string, commit: string): Promise<void> {
    if (revision === commit) return
    const path = join(this.dir, 'refs', revision)
    await io(`Could not write ${path}`, async () => {
      await fs.mkdir(dirname(path), { recursive: true })
      await fs.writeFile(path, commit)
    })
  }

  /** Size of a file in a snapshot, or undefined when it (or the blob its link points to) is absent. */
  fileSize(commit: string, path: string): Promise<number | undefined> {
    return fileSize(join(this.snapshot(commit), path))
  }

  /** Point `snapshots/<commit>/<path>` at `blobs/<etag>` with a relative symlink, as huggingface_hub does. */
  async link(commit: string, path: string, etag: string): Promise<void> {
    const dst = join(this.snapshot(commit), path)
    const target = relative(dirname(dst), this.blob(etag))
    if ((await fs.readlink(dst).catch(() => undefined)) === target) return
    // Link beside it and rename over: replaces a dangling link atomically, so a concurrent reader
    // never sees the file missing.
    const tmp = `${dst}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`
    await io(`Could not link ${dst}`, async () => {
      await fs.mkdir(dirname(dst), { recursive: true })
      await fs.symlink(target, tmp)
      await fs.rename(tmp, dst).catch(async (e) => {
        await fs.rm(tmp, { force: true })
        throw e
      })
    })
  }

  /** Every file of a snapshot whose content is present, as repo paths. */
  async listSnapshot(commit: string): Promise<Set<string>> {
    const root = this.snapshot(commit)
    let entries: string[]
    try {
      entries = await fs.readdir(root, { recursive: true })
    } catch {
      return new Set()
    }
    const present = await Promise.all(entries.map(async (p) => ((await fileSize(join(root, p))) !== undefined ? p : undefined)))
    return new Set(present.filter((p): p is string => p !== undefined).map((p) => p.split('\\').join('/')))
  }

  /** What a cached snapshot lacks to be a complete pipeline (empty when complete). */
  async check(commit: string, variant: string | undefined): Promise<{ missing: string[]; fallbacks: string[] }> {
    const listing = await this.listSnapshot(commit)
    if (!listing.has('model_index.json')) return { missing: ['model_index.json'], fallbacks: [] }
    const root = this.snapshot(commit)
    const plan = planPipeline(listing, await readJson(join(root, 'model_index.json'), 'model_index.json'), variant)
    for (const index of plan.indexes) {
      for (const shard of shardsOf(await readJson(join(root, index), index), index)) {
        if (!listing.has(shard)) plan.missing.push(shard)
      }
    }
    return { missing: plan.missing, fallbacks: plan.fallbacks }
  }
}
