/**
 * Memory planning: how much memory a generation needs (weights, transformer activations, text encoder, VAE
 * decode with and without tiling), computed from the component configs before anything is loaded, what the
 * device has available, and {@link assertFits}, which refuses a request that cannot fit with
 * `SANA_OUT_OF_MEMORY` and says what would.
 *
 * The VAE decode figure comes from the native planner (`vaeDecodeMemory`), the same formula and tiling
 * decision `AutoencoderDC.decode` uses, so the estimate and the auto-tiling never disagree. The transformer and
 * text-encoder figures count the tensors alive at the widest point of one forward (see `transformerActivations`),
 * checked against measured peaks on random-weight models in benches/RESULTS.md.
 */
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { freemem } from 'node:os'
import type { TilingOptions } from './components'
import type { AutoencoderDCConfig, Gemma2Config, SanaTransformerConfig } from './config'
import { callNativeSync, invalidArgument, SanaError } from './errors'
import { native } from './native'
import { countParams, type ModelConfigs } from './memory/params'
import { MODEL_PRESETS, type ModelPreset } from './memory/presets'

export { MODEL_PRESETS, type ModelPreset, type ModelConfigs }

/** Compute dtype of an estimate. */
export type MemoryDType = 'float32' | 'bfloat16' | 'float16'

/** What to estimate. */
export interface MemoryEstimateOptions {
  /**
   * A preset name (`'600m'`, `'1.6b'`, `'4.8b'`, `'1.6b-2k'`, `'1.6b-4k'`) or the component configs as
   * `pipe.config` exposes them (camelCase keys; snake_case is accepted too).
   */
  model: ModelPreset | ModelConfigs
  /** `'cpu'`, `'cuda'` or `'cuda:N'`. Defaults to `'cpu'`. */
  device?: string
  /**
   * Dtype the weights are stored in. Defaults to `'float32'` on CPU and `'bfloat16'` on CUDA. On the CPU, activations
   * are float32 whatever this is (half weights are widened as they are used).
   */
  dtype?: MemoryDType
  /** Image width in pixels, a multiple of 32. Defaults to the model's native size (`sampleSize` × 32). */
  width?: number
  /** Image height in pixels, a multiple of 32. Defaults to the model's native size. */
  height?: number
  /** Images generated in one call (prompts × numImagesPerPrompt). Defaults to 1. */
  batch?: number
  /** Distinct prompts the text encoder reads (each with its negative under CFG). Defaults to 1. */
  prompts?: number
  /** Classifier-free guidance doubles the transformer batch. Defaults to true (Sana's guidanceScale 4.5). */
  guidance?: boolean
  /** Text tokens per prompt. Defaults to 300 (Sana's maxSequenceLength). */
  maxSequenceLength?: number
  /** The VAE decode options the call would use (as `AutoencoderDC.load`/`decode` take them). Defaults to auto tiling, 4096 MiB. */
  decode?: TilingOptions
}

/** Bytes by part, from {@link estimateMemory}. */
export interface MemoryEstimate {
  device: string
  dtype: MemoryDType
  width: number
  height: number
  batch: number
  /** batch × 2 with guidance. */
  transformerBatch: number
  /** The latent the transformer and VAE see: image size / the VAE's compression (32). */
  latent: { width: number; height: number }
  /** Resident weights per component. On CPU the text encoder's embedding table stays memory-mapped and is not counted. */
  weights: { transformer: number; vae: number; textEncoder: number }
  /** Peak activations of each stage (stages run one after another; weights stay resident). */
  activations: { textEncoder: number; transformer: number; vaeDecode: number }
  /** The VAE decode: one pass, tiled (the auto plan's tile), and what the given options do. */
  vaeDecode: { untiledBytes: number; tiledBytes: number; tileSize: number | undefined; plannedTiled: boolean }
  /** Process baseline (Node, the native library, allocator slack). */
  runtime: number
  /** Sum of the weights. */
  weightsTotal: number
  /** weightsTotal + runtime + the largest stage's activations. */
  peak: number
}

const RUNTIME_BYTES = { cpu: 256 * 2 ** 20, cuda: 512 * 2 ** 20 }
const DTYPE_BYTES: Record<MemoryDType, number> = { float32: 4, bfloat16: 2, float16: 2 }

/**
 * The memory a generation needs, from configs alone (nothing is loaded).
 * @example estimateMemory({ model: '1.6b', width: 4096, height: 4096 }).peak // bytes
 * @example estimateMemory({ model: pipe.config, batch: 4, device: 'cuda' })
 */
export function estimateMemory(options: MemoryEstimateOptions): MemoryEstimate {
  const o = resolve(options)
  const { transformer: tc, vae: vc, textEncoder: gc } = o.configs
  const params = countParams(o.configs, o.device === 'cpu')
  const w = DTYPE_BYTES[o.dtype]
  const weights = { transformer: params.transformer * w, vae: params.vae * w, textEncoder: params.textEncoder * w }
  // Activations are in the compute dtype: the weights' on CUDA, float32 on the CPU (half weights are widened there).
  const computeDtype: MemoryDType = o.device === 'cpu' ? 'float32' : o.dtype
  const e = DTYPE_BYTES[computeDtype]
  const f = 2 ** (vc.decoderBlockOutChannels.length - 1)
  const latent = { h: o.height / f, w: o.width / f }
  const decode = (opts: TilingOptions) => vaeDecodeMemory(vc, computeDtype, o.batch, latent.h, latent.w, opts)
  const planned = decode(o.decode)
  const tiled = decode({ ...o.decode, tiling: 'on' })
  const activations = {
    textEncoder: textEncoderActivations(gc, o.prompts * (o.guidance ? 2 : 1), o.maxSequenceLength, e),
    transformer: transformerActivations(tc, o.transformerBatch, latent.h * latent.w, o.maxSequenceLength, e, o.device === 'cpu'),
    vaeDecode: planned.peakBytes,
  }
  const runtime = o.device === 'cpu' ? RUNTIME_BYTES.cpu : RUNTIME_BYTES.cuda
  const weightsTotal = weights.transformer + weights.vae + weights.textEncoder
  return {
    device: o.device,
    dtype: o.dtype,
    width: o.width,
    height: o.height,
    batch: o.batch,
    transformerBatch: o.transformerBatch,
    latent: { width: latent.w, height: latent.h },
    weights,
    activations,
    vaeDecode: { untiledBytes: planned.untiledBytes, tiledBytes: tiled.peakBytes, tileSize: tiled.tileSize ?? undefined, plannedTiled: planned.tileSize != null },
    runtime,
    weightsTotal,
    peak: weightsTotal + runtime + Math.max(activations.textEncoder, activations.transformer, activations.vaeDecode),
  }
}

/**
 * What a CPU forward holds beyond the itemised tensors, independent of the batch and size (allocator high-water,
 * thread-pool buffers): the intercept of measured peak vs tokens on random-weight Sana-600M (32² and 64² latents,
 * 38–44 MiB) and 1.6B (77 MiB), benches/RESULTS.md "Memory estimate vs measured". The per-token slope matched the
 * itemised count within 1 %.
 */
const TRANSFORMER_OVERHEAD = 64 * 2 ** 20

/**
 * Peak activation bytes of one transformer forward on `batch` rows of `tokens` latent tokens (CFG included in
 * `batch`), `seqLen` text tokens, `e`-byte elements. Per token, the widest of (D inner dim, hid = mlpRatio·D,
 * ci the cross-attention width, Hc its heads):
 * - feed-forward: x, its modulated norm, the channel-major copy, the 2·hid expansion and its bias-added copy, the
 *   hid GLU → 3D + 5·hid (on CUDA the SiLU'd expansion is one more 2·hid) — the widest for every Sana model;
 * - self-attention: x, norm, q, k, v, their ReLUs, attention output, projection → 9D;
 * - cross-attention: x, q, its head-major copy, output and its token-major copy → D + 4·ci, plus scores per head
 *   over the text and their softmax (f32 on CPU: 8 bytes; elsewhere the scores, their f32 copy and two f32
 *   temporaries: e + 12);
 * plus the projected captions, batch·S·(caption + 2D), the generation's caption cache (every block's
 * cross-attention K and V, batch·S·2·layers·ci, held for all steps), and {@link TRANSFORMER_OVERHEAD}.
 */
export function transformerActivations(cfg: SanaTransformerConfig, batch: number, tokens: number, seqLen: number, e: number, cpu = true): number {
  const d = cfg.numAttentionHeads * cfg.attentionHeadDim
  const hid = Math.floor(cfg.mlpRatio * d)
  const ci = cfg.numCrossAttentionHeads * cfg.crossAttentionHeadDim
  const p = cfg.patchSize ** 2
  const ff = (3 * d + (cpu ? 5 : 7) * hid) * e
  const cross = (d + 4 * ci) * e + cfg.numCrossAttentionHeads * seqLen * (cpu ? 8 : e + 12)
  const perToken = Math.max(ff, 9 * d * e, cross)
  const captionCache = batch * seqLen * 2 * cfg.numLayers * ci * e
  return batch * (tokens / p) * perToken + batch * seqLen * (cfg.captionChannels + 2 * d) * e + captionCache + TRANSFORMER_OVERHEAD
}

/**
 * Peak activation bytes of the Gemma-2 encoder on `batch` prompts of `seqLen` tokens: the residual stream, norm,
 * q/k/v/o and the three MLP projections of one layer, plus the f32 attention scores and their softmax.
 */
export function textEncoderActivations(cfg: Gemma2Config, batch: number, seqLen: number, e: number): number {
  const inter = Number(cfg.intermediateSize)
  const attn = cfg.numAttentionHeads * cfg.headDim
  return batch * seqLen * (3 * cfg.hiddenSize + 2 * attn + 3 * inter) * e + batch * cfg.numAttentionHeads * seqLen * seqLen * 8
}

/** The native VAE planner: one-pass bytes, the tile it would use, and the planned peak. */
function vaeDecodeMemory(cfg: AutoencoderDCConfig, dtype: MemoryDType, batch: number, h: number, w: number, opts: TilingOptions) {
  const configJson = JSON.stringify(snakeKeys(cfg))
  const options = { tiling: opts.tiling, tileSize: opts.tileSize, tileOverlap: opts.tileOverlap, memoryBudgetMb: opts.memoryBudgetMb }
  return callNativeSync(() => native().vaeDecodeMemory({ configJson, dtype, batch, latentHeight: h, latentWidth: w, options }))
}

/** camelCase keys back to config.json's snake_case (`decoderBlockTypes` → `decoder_block_types`). */
function snakeKeys(cfg: object): Record<string, unknown> {
  return Object.fromEntries(Object.entries(cfg).map(([k, v]) => [k.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase()), v]))
}

interface Resolved {
  configs: ModelConfigs
  device: string
  dtype: MemoryDType
  width: number
  height: number
  batch: number
  prompts: number
  transformerBatch: number
  guidance: boolean
  maxSequenceLength: number
  decode: TilingOptions
}

function positiveInt(name: string, v: unknown, dflt: number, max = 2 ** 31 - 1): number {
  if (v === undefined) return dflt
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max) throw invalidArgument(name, `an integer from 1 to ${max}`, v)
  return v
}

function resolve(o: MemoryEstimateOptions): Resolved {
  if (!o || typeof o !== 'object') throw invalidArgument('options', 'an options object', o)
  const configs = typeof o.model === 'string' ? MODEL_PRESETS[o.model]?.configs : camelConfigs(o.model)
  if (!configs) throw invalidArgument('model', `one of ${Object.keys(MODEL_PRESETS).join(', ')} or { transformer, vae, textEncoder } configs`, o.model)
  const device = o.device ?? 'cpu'
  if (!/^(cpu|cuda(:\d+)?)$/.test(device)) throw invalidArgument('device', "'cpu', 'cuda' or 'cuda:N'", device)
  const dtype = o.dtype ?? (device === 'cpu' ? 'float32' : 'bfloat16')
  if (!(dtype in DTYPE_BYTES)) throw invalidArgument('dtype', "'float32', 'bfloat16' or 'float16'", dtype)
  const f = 2 ** (configs.vae.decoderBlockOutChannels.length - 1)
  const native = configs.transformer.sampleSize * f
  // 2^20 pixels a side is far beyond any model; the cap keeps every count an exact double.
  const side = (name: string, v: unknown) => {
    const n = positiveInt(name, v, native, 2 ** 20)
    if (n % f !== 0) throw invalidArgument(name, `a multiple of ${f}`, v)
    return n
  }
  const width = side('width', o.width)
  const height = side('height', o.height)
  const batch = positiveInt('batch', o.batch, 1, 2 ** 16)
  const guidance = o.guidance ?? true
  return {
    configs,
    device,
    dtype,
    width,
    height,
    batch,
    prompts: Math.min(positiveInt('prompts', o.prompts, 1, 2 ** 16), batch),
    transformerBatch: batch * (guidance ? 2 : 1),
    guidance,
    maxSequenceLength: positiveInt('maxSequenceLength', o.maxSequenceLength, 300, 2 ** 16),
    decode: o.decode ?? {},
  }
}

/** Accept snake_case configs (as config.json) as well as camelCase ones (as `pipe.config`). */
function camelConfigs(m: ModelConfigs | undefined): ModelConfigs | undefined {
  if (!m || typeof m !== 'object' || !m.transformer || !m.vae || !m.textEncoder) return undefined
  const camel = (c: object) =>
    Object.fromEntries(Object.entries(c).map(([k, v]) => [k.replace(/^_+/, '').replace(/_([a-z0-9])/g, (_, ch: string) => ch.toUpperCase()), v]))
  return { transformer: camel(m.transformer), vae: camel(m.vae), textEncoder: camel(m.textEncoder) } as unknown as ModelConfigs
}

// ─── Available memory ─────────────────────────────────────────────────────────────────────────────

/** What a device can still allocate. */
export interface AvailableMemory {
  /** Bytes, or undefined when this device cannot be queried. */
  bytes: number | undefined
  /** Where the number came from (or why there is none). */
  source: string
}

/**
 * Memory available on `device`. CPU: `MemAvailable` (/proc/meminfo; else `os.freemem()`), capped by the cgroup
 * limit minus its usage when the process runs in a memory-limited container. CUDA: free memory as `nvidia-smi`
 * reports it; undefined (unknown) when there is no `nvidia-smi`, since the native binding has no query.
 * @example availableMemory('cpu') // { bytes: 12884901888, source: 'MemAvailable' }
 */
export function availableMemory(device = 'cpu'): AvailableMemory {
  const cuda = /^cuda(?::(\d+))?$/.exec(device)
  if (cuda) return cudaFree(Number(cuda[1] ?? 0))
  if (device !== 'cpu') throw invalidArgument('device', "'cpu', 'cuda' or 'cuda:N'", device)
  const host = meminfoAvailable()
  const cgroup = cgroupHeadroom()
  if (cgroup !== undefined && cgroup < host.bytes) return { bytes: cgroup, source: 'cgroup memory limit' }
  return host
}

function meminfoAvailable(): { bytes: number; source: string } {
  try {
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'))
    if (m) return { bytes: Number(m[1]) * 1024, source: 'MemAvailable' }
  } catch {
    // not Linux: os.freemem() below
  }
  return { bytes: freemem(), source: 'os.freemem()' }
}

/** cgroup v2 (memory.max − memory.current) or v1 (limit − usage); undefined when unlimited or absent. */
function cgroupHeadroom(): number | undefined {
  const read = (p: string) => {
    try {
      return readFileSync(p, 'utf8').trim()
    } catch {
      return undefined
    }
  }
  for (const [limit, usage] of [
    ['/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory.current'],
    ['/sys/fs/cgroup/memory/memory.limit_in_bytes', '/sys/fs/cgroup/memory/memory.usage_in_bytes'],
  ]) {
    const l = read(limit)
    const u = read(usage)
    if (l === undefined || u === undefined || l === 'max') continue
    const [lim, use] = [Number(l), Number(u)]
    // v1 reports "unlimited" as a huge page-rounded number.
    if (Number.isFinite(lim) && Number.isFinite(use) && lim < 2 ** 60) return Math.max(0, lim - use)
  }
  return undefined
}

function cudaFree(ordinal: number): AvailableMemory {
  try {
    const out = execFileSync('nvidia-smi', ['--query-gpu=memory.free', '--format=csv,noheader,nounits', '-i', String(ordinal)], {
      encoding: 'utf8',
      timeout: 5000,
      stdio: ['ignore', 'pipe', 'ignore'],
    })
    const mib = Number(out.trim())
    if (Number.isFinite(mib)) return { bytes: mib * 2 ** 20, source: `nvidia-smi (GPU ${ordinal})` }
  } catch {
    // no nvidia-smi or no such GPU: unknown
  }
  return { bytes: undefined, source: 'unknown (no nvidia-smi; the native binding has no free-memory query)' }
}

// ─── assertFits ───────────────────────────────────────────────────────────────────────────────────

/** Options of {@link assertFits}: the estimate's, plus what to compare it with. */
export interface AssertFitsOptions extends MemoryEstimateOptions {
  /** Bytes available. Defaults to {@link availableMemory}(device); when that is unknown nothing is checked. */
  available?: number
  /**
   * The weights are already resident (a loaded pipeline): only the runtime-free activation peak must fit in
   * what is available. Defaults to false (a plan before loading: weights count too).
   */
  weightsLoaded?: boolean
}

/**
 * Throw `SanaError('SANA_OUT_OF_MEMORY')` when the request cannot fit, saying how much it needs, how much is
 * available and what would fit (the largest batch at this size, else the largest size at batch 1, and whether
 * tiling the VAE decode would make it fit). Returns the estimate when it fits (or when availability is unknown).
 * @example assertFits({ model: pipe.config, batch: 1000, width: 1024, height: 1024, weightsLoaded: true })
 */
export function assertFits(options: AssertFitsOptions): MemoryEstimate {
  const est = estimateMemory(options)
  const available = options.available ?? availableMemory(est.device).bytes
  if (available === undefined) return est
  if (!Number.isFinite(available) || available < 0) throw invalidArgument('available', 'a number of bytes ≥ 0', options.available)
  const need = (e: MemoryEstimate) => (options.weightsLoaded ? e.peak - e.weightsTotal - e.runtime : e.peak)
  if (need(est) <= available) return est
  const fits = (o: Partial<MemoryEstimateOptions>) => need(estimateMemory({ ...options, ...o })) <= available
  const hints: string[] = []
  if (!est.vaeDecode.plannedTiled && fits({ decode: { ...options.decode, tiling: 'on' } })) hints.push("it fits with VAE tiling ({ tiling: 'on' })")
  const batch = largest(est.batch - 1, (b) => fits({ batch: b, prompts: Math.min(options.prompts ?? 1, b) }))
  if (batch > 0) hints.push(`at ${est.width}×${est.height} ${batch} image${batch === 1 ? '' : 's'} per call fit${batch === 1 ? 's' : ''}`)
  else {
    const f = est.width / est.latent.width
    const scale = largest(Math.min(est.width, est.height) / f - 1, (k) => fits(scaled(est, k, f)))
    const s = scale > 0 ? scaled(est, scale, f) : undefined
    hints.push(s ? `at batch 1 the largest size of this aspect that fits is ${s.width}×${s.height}` : 'not even the smallest image fits')
  }
  const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`
  const parts = options.weightsLoaded ? '' : `weights ${gib(est.weightsTotal)}, `
  const act = est.activations
  throw new SanaError(
    'SANA_OUT_OF_MEMORY',
    `${est.batch} image${est.batch === 1 ? '' : 's'} of ${est.width}×${est.height} on ${est.device} (${est.dtype}) need ≈ ${gib(need(est))} ` +
      `(${parts}transformer ${gib(act.transformer)}, VAE decode ${gib(act.vaeDecode)}, text encoder ${gib(act.textEncoder)} at their peaks) ` +
      `but ${gib(available)} is available; ${hints.join('; ')}`,
  )
}

/**
 * A large k in [1, hi] with ok(k), or 0: binary search, then upwards while ok holds. ok is only roughly
 * monotone (auto-tiling keeps the decode near its budget as the batch grows), so k is a size that fits and
 * k + 1 does not, not necessarily the largest.
 */
function largest(hi: number, ok: (k: number) => boolean): number {
  let [lo, best, top] = [1, 0, hi]
  while (lo <= top) {
    const mid = Math.floor((lo + top) / 2)
    if (ok(mid)) [best, lo] = [mid, mid + 1]
    else top = mid - 1
  }
  while (best > 0 && best < hi && ok(best + 1)) best++
  return best
}

/** The request's aspect with its shorter side k·f pixels (both sides multiples of f). */
function scaled(est: MemoryEstimate, k: number, f: number): { width: number; height: number; batch: number } {
  const short = Math.min(est.width, est.height)
  const side = (v: number) => Math.max(f, Math.floor((v * k * f) / short / f) * f)
  return { width: side(est.width), height: side(est.height), batch: 1 }
}
