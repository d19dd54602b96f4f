/**
 * `sana info`: version, native build, usable devices, and the Hugging Face cache with the models in it.
 */
import { platform, arch } from 'node:os'
import { callNativeSync, SanaError } from '../errors'
import { listCachedModels } from '../hub'
import { hubCacheDir } from '../hub/cache'
import { native } from '../native'
import { Tensor } from '../tensor'
import { packageVersion, type Command } from './command'
import { formatBytes } from './progress'

/** Probe this many CUDA ordinals at most. */
const MAX_CUDA_DEVICES = 16

/** The devices a pipeline can be loaded on: `cpu`, then each `cuda:N` that accepts a tensor. */
export function usableDevices(): string[] {
  const devices = ['cpu']
  if (!native().builtWithCuda()) return devices
  for (let i = 0; i < MAX_CUDA_DEVICES; i++) {
    try {
      Tensor.fromFloat32Array(new Float32Array(1), [1], { device: `cuda:${i}` })
    } catch (e) {
      if (e instanceof SanaError) break
      throw e
    }
    devices.push(`cuda:${i}`)
  }
  return devices
}

export const info: Command = {
  name: 'info',
  summary: 'Show the version, the native build, usable devices and the models in the Hugging Face cache.',
  usage: 'sana info',
  positionals: [],
  options: {},

  async run() {
    const cuda = callNativeSync(() => native().builtWithCuda())
    const cacheDir = hubCacheDir(undefined)
    const models = await listCachedModels()
    const rows: [string, string][] = [
      ['sana-node', packageVersion()],
      ['node', `${process.version} (${platform()}-${arch()})`],
      ['native', cuda ? 'CUDA build' : 'CPU-only build (no CUDA)'],
      ['devices', usableDevices().join(', ')],
      ['HF cache', cacheDir],
    ]
    const lines = rows.map(([k, v]) => `${k.padEnd(10)}${v}`)
    lines.push(`${'models'.padEnd(10)}${models.length === 0 ? '(none)' : ''}`)
    for (const m of models) {
      if (m.revisions.length === 0) lines.push(`  ${m.repoId}  (no snapshot)`)
      for (const r of m.revisions) {
        const ref = r.refs.length ? r.refs.join(',') : r.commit.slice(0, 7)
        lines.push(`  ${m.repoId}  ${ref}  ${formatBytes(r.sizeBytes)}  ${r.path}`)
      }
    }
    process.stdout.write(lines.join('\n') + '\n')
    return 0
  },
}
