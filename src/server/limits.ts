/**
 * What one request may ask for, from the memory planner (`src/memory.ts`) rather than fixed numbers: the
 * planner's estimate of a request's peak against the memory this server may use. Everything the server checks
 * goes through {@link requestLimits} (computed once per loaded pipeline, JSON so remote workers can publish it)
 * and {@link checkRequest} (per request, before it queues).
 */
import { SanaError } from '../errors'
import { assertFits, availableMemory, estimateMemory, type MemoryDType, type ModelConfigs } from '../memory'
import type { SanaPipeline } from '../pipeline'
import { aspectRatioTableFor, classifyHeightWidthBin } from '../postprocess'
import type { JobParams } from './runner'

/** The bounds a request is checked against (`GET /v1/models` shows them). JSON-serialisable. */
export interface RequestLimits {
  /** The model's native side (`sample_size · 32`): the default size. */
  nativeSize: number
  /** Smallest width/height (the VAE's 32-pixel grid). */
  minSide: number
  /** Largest width/height: 4× the native side (the widest trained aspect-ratio bins are 4:1). */
  maxSide: number
  /** Largest `n`: what the planner fits at the native size, and never above OpenAI's documented 10. */
  maxN: number
  /** Largest `steps`: the scheduler's training timesteps (more would repeat timesteps). */
  maxSteps: number
  /** Largest encoded upload (`/v1/images/edits`), bytes: an uncompressed RGBA image of the largest square that fits. */
  maxUploadBytes: number
  /** What the planner needs to check a request: the model's configs, where it runs, and the memory budget. */
  plan: { model: ModelConfigs; device: string; dtype: MemoryDType; sampleSize: number; budgetBytes: number }
}

const VAE_SCALE = 32
/** OpenAI's `n` is "between 1 and 10"; clients expect that range, and more is a batch job, not a request. */
const OPENAI_MAX_N = 10

/**
 * The memory requests may use, bytes: what the device has available now (the weights are loaded), or `budget`.
 * Unknown (a GPU without nvidia-smi) counts as unlimited: the planner then checks nothing, like `generate`.
 */
function budgetFor(pipe: SanaPipeline, budget: number | undefined): number {
  return budget ?? availableMemory(pipe.device.startsWith('cuda') ? pipe.device : 'cpu').bytes ?? Number.MAX_SAFE_INTEGER
}

/**
 * The limits for a loaded pipeline under a memory budget (bytes; defaults to the device's available memory).
 * @example requestLimits(pipe).maxN // 10 for sana-tiny
 */
export function requestLimits(pipe: SanaPipeline, budgetBytes?: number): RequestLimits {
  const sampleSize = pipe.transformer.config.sampleSize
  const native = sampleSize * VAE_SCALE
  const plan = { model: pipe.config as ModelConfigs, device: pipe.device, dtype: pipe.transformer.dtype as MemoryDType, sampleSize, budgetBytes: budgetFor(pipe, budgetBytes) }
  const activations = (batch: number, side: number) => {
    const e = estimateMemory({ model: plan.model, device: plan.device, dtype: plan.dtype, width: side, height: side, batch })
    return e.peak - e.weightsTotal - e.runtime
  }
  let maxN = 0
  while (maxN < OPENAI_MAX_N && activations(maxN + 1, native) <= plan.budgetBytes) maxN++
  let side = native * 4
  while (side > VAE_SCALE && activations(1, side) > plan.budgetBytes) side -= VAE_SCALE
  const trainSteps = Number(pipe.schedulerConfig.num_train_timesteps ?? 1000)
  return {
    nativeSize: native,
    minSide: VAE_SCALE,
    maxSide: native * 4,
    maxN: Math.max(1, maxN),
    maxSteps: Number.isInteger(trainSteps) && trainSteps > 0 ? trainSteps : 1000,
    maxUploadBytes: side * side * 4,
    plan,
  }
}

function refuse(message: string): SanaError {
  return new SanaError('SANA_INVALID_ARGUMENT', message)
}

/** The size the pipeline will generate at: the aspect-ratio bin, or the size rounded up to the 32-pixel grid. */
function generatedSize(p: JobParams, sampleSize: number): { width: number; height: number } {
  if (p.resolutionBinning ?? true) return classifyHeightWidthBin(p.height, p.width, aspectRatioTableFor(sampleSize))
  return { width: Math.ceil(p.width / VAE_SCALE) * VAE_SCALE, height: Math.ceil(p.height / VAE_SCALE) * VAE_SCALE }
}

/**
 * Throw `SANA_INVALID_ARGUMENT` (HTTP 400) naming the field when `p` is outside `limits`, or the planner's
 * `SANA_OUT_OF_MEMORY` (HTTP 400, saying what would fit) when it would not fit the budget.
 */
export function checkRequest(p: JobParams, limits: RequestLimits): void {
  for (const [name, v] of [['width', p.width], ['height', p.height]] as const) {
    if (v < limits.minSide || v > limits.maxSide) {
      throw refuse(`Expected a ${name} from ${limits.minSide} to ${limits.maxSide} in size but received ${v}`)
    }
  }
  if (p.n < 1 || p.n > limits.maxN) throw refuse(`Expected n from 1 to ${limits.maxN} but received ${p.n}`)
  if (p.steps !== undefined && (p.steps < 1 || p.steps > limits.maxSteps)) {
    throw refuse(`Expected steps from 1 to ${limits.maxSteps} but received ${p.steps}`)
  }
  const { model, device, dtype, sampleSize, budgetBytes } = limits.plan
  const size = generatedSize(p, sampleSize)
  assertFits({ model, device, dtype, ...size, batch: p.n, guidance: (p.guidanceScale ?? 4.5) > 1, weightsLoaded: true, available: budgetBytes })
}
