/**
 * `sana info`: version, native build, usable devices, and the Hugging Face cache with the models in it;
 * `sana info --estimate`: the memory a model, dtype, size and batch need, before anything is loaded.
 */
import { existsSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { platform, arch } from 'node:os'
import { camelizeKeys } from '../config'
import { callNativeSync, SanaError } from '../errors'
import { listCachedModels } from '../hub'
import { hubCacheDir } from '../hub/cache'
import { parsePythonJson } from '../json'
import { estimateMemory, MODEL_PRESETS, type MemoryDType, type MemoryEstimate, type ModelConfigs, type ModelPreset } from '../memory'
import { native } from '../native'
import { Tensor } from '../tensor'
import { choiceOption, intOption, packageVersion, stringOption, UsageError, type Command, type ParsedArgs } from './command'
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

/** The table `--estimate` prints without `--model`: each preset at 1024² and 4096². */
const TABLE_PRESETS: ModelPreset[] = ['600m', '1.6b', '4.8b']
const TABLE_SIZES = [1024, 4096]

/** The component configs of a pipeline folder (model_index.json's transformer, vae, text_encoder). */
function folderConfigs(dir: string): ModelConfigs {
  const read = (sub: string) => {
    const path = join(dir, sub, 'config.json')
    if (!existsSync(path)) throw new SanaError('SANA_NOT_FOUND', `config.json not found: ${path}`)
    return camelizeKeys(parsePythonJson(readFileSync(path, 'utf8')))
  }
  return { transformer: read('transformer'), vae: read('vae'), textEncoder: read('text_encoder') } as unknown as ModelConfigs
}

const gb = (b: number) => formatBytes(b)

/** One table row per estimate. */
function estimateTable(rows: { model: string; est: MemoryEstimate }[]): string {
  const head = ['model', 'size', 'batch', 'dtype', 'weights', 'transformer', 'text enc.', 'VAE decode', 'VAE tiled (tile)', 'peak']
  const body = rows.map(({ model, est }) => [
    model,
    `${est.width}×${est.height}`,
    `${est.batch} (DiT ${est.transformerBatch})`,
    est.dtype,
    gb(est.weightsTotal),
    gb(est.activations.transformer),
    gb(est.activations.textEncoder),
    gb(est.vaeDecode.untiledBytes),
    `${gb(est.vaeDecode.tiledBytes)} (${est.vaeDecode.tileSize ?? '-'})`,
    `${gb(est.peak)}${est.vaeDecode.plannedTiled ? ' tiled' : ''}`,
  ])
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => r[i].length)))
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()
  return [line(head), ...body.map(line)].join('\n') + '\n'
}

function runEstimate(args: ParsedArgs): number {
  const model = stringOption(args, 'model')
  const device = choiceOption(args, 'device', ['cpu', 'cuda'], /^cuda:\d+$/) ?? 'cpu'
  const dtype = choiceOption(args, 'dtype', ['float32', 'bfloat16', 'float16'] as MemoryDType[])
  const width = intOption(args, 'width', 32)
  const height = intOption(args, 'height', 32)
  const batch = intOption(args, 'batch', 1)
  const common = { device, dtype, batch }
  const rows: { model: string; est: MemoryEstimate }[] = []
  if (model === undefined) {
    if (width !== undefined || height !== undefined) throw new UsageError('--width/--height need --model (without it the table covers 1024² and 4096²)')
    for (const name of TABLE_PRESETS) {
      for (const size of TABLE_SIZES) rows.push({ model: name, est: estimateMemory({ ...common, model: name, width: size, height: size }) })
    }
  } else {
    const configs = model in MODEL_PRESETS ? (model as ModelPreset) : folderConfigs(resolve(model))
    rows.push({ model, est: estimateMemory({ ...common, model: configs, width, height: height ?? width }) })
  }
  const notes = [
    `Estimated memory on ${device} with classifier-free guidance (the transformer runs 2 × batch), 300 text tokens, VAE auto-tiling at 4096 MiB.`,
    'peak = weights + runtime + the largest stage (stages run one after another). "tiled": the auto plan tiles the decode.',
    device === 'cpu' ? 'On CPU the text encoder\'s embedding table stays memory-mapped and is not counted.' : '',
  ].filter(Boolean)
  process.stdout.write(estimateTable(rows) + notes.join('\n') + '\n')
  return 0
}

export const info: Command = {
  name: 'info',
  summary: 'Show the version, the native build, usable devices and the models in the Hugging Face cache; --estimate: memory needs.',
  usage: 'sana info [--estimate [--model 600m|1.6b|4.8b|<folder>] [--dtype D] [--width W] [--height H] [--batch N] [--device D]]',
  positionals: [],
  options: {
    estimate: { type: 'boolean', description: 'Print the memory a generation needs instead (nothing is loaded).' },
    model: { type: 'string', valueName: 'preset|folder', description: `With --estimate: ${Object.keys(MODEL_PRESETS).join(', ')} or a pipeline folder. Defaults to a table of 600m, 1.6b, 4.8b at 1024² and 4096².` },
    dtype: { type: 'string', valueName: 'dtype', description: 'With --estimate: float32, bfloat16 or float16. Defaults to float32 on cpu, bfloat16 on cuda.' },
    width: { type: 'string', valueName: 'px', description: "With --estimate --model: image width. Defaults to the model's native size." },
    height: { type: 'string', valueName: 'px', description: 'With --estimate --model: image height. Defaults to the width.' },
    batch: { type: 'string', valueName: 'N', description: 'With --estimate: images per call. Defaults to 1.' },
    device: { type: 'string', valueName: 'device', description: 'With --estimate: cpu, cuda or cuda:N. Defaults to cpu.' },
  },
  epilog: 'Examples:\n  sana info --estimate\n  sana info --estimate --model 4.8b --device cuda --width 4096 --batch 2',

  async run(args) {
    if (args.values.estimate) return runEstimate(args)
    const stray = ['model', 'dtype', 'width', 'height', 'batch', 'device'].find((k) => args.values[k] !== undefined)
    if (stray) throw new UsageError(`--${stray} is an option of --estimate`)
    const cuda = callNativeSync(() => native().builtWithCuda())
    const cacheDir = hubCacheDir(undefined)
    const models = await listCachedModels()
    const rows: [string, string][] = [
      ['sana-node', packageVersion()],
      ['node', `${process.version} (${platform()}-${arch()})`],
      ['native', cuda ? 'CUDA build' : 'CPU-only build (no CUDA)'],
      ['devices', usableDevices().join(', ')],
      // Which CPU GEMM kernel runs (amx-bf16: bfloat16 weights multiply in bf16; see README, CPU half-precision weights).
      ['CPU GEMM', native().cpuGemmKernel()],
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
