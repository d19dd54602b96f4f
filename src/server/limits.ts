/**
 * What one request may ask for, worked out from the model and the memory budget rather than fixed numbers.
 * Everything the server checks goes through {@link requestLimits} and {@link checkRequest}, so switching the
 * estimate to the project's memory planner (`src/memory.ts`, once it lands) is a change in this file only.
 */
import { freemem, totalmem } from 'node:os'
import { SanaError } from '../errors'
import type { SanaPipeline } from '../pipeline'
import type { JobParams } from './runner'

/** The bounds a request is checked against (`GET /v1/models` shows them). */
export interface RequestLimits {
  /** The model's native side (`sample_size · 32`): the default size. */
  nativeSize: number
  /** Smallest width/height (the VAE's 32-pixel grid). */
  minSide: number
  /** Largest width/height: 4× the native side (the widest trained aspect-ratio bins are 4:1). */
  maxSide: number
  /** Largest `n · width · height` that fits the memory budget. */
  maxBatchPixels: number
  /** Largest `n`: what fits at the native size, and never above OpenAI's documented 10. */
  maxN: number
  /** Largest `steps`: the scheduler's training timesteps (more would repeat timesteps). */
  maxSteps: number
  /** Largest encoded upload (`/v1/images/edits`), bytes: an uncompressed RGBA image of `maxBatchPixels`. */
  maxUploadBytes: number
}

const VAE_SCALE = 32
/** OpenAI's `n` is "between 1 and 10"; clients expect that range, and more is a batch job, not a request. */
const OPENAI_MAX_N = 10
/**
 * Bytes per output pixel at the decoder's peak: its first stage runs at full resolution with
 * `decoderBlockOutChannels[0]` float32 channels, and a ResBlock holds about four such tensors at once
 * (input, conv output, norm output, residual sum).
 */
const LIVE_TENSORS_AT_PEAK = 4

/** The memory a request may use, bytes: half the free memory at start-up (the weights are already loaded). */
export function defaultMemoryBudget(): number {
  return Math.min(freemem(), totalmem()) / 2
}

/**
 * The limits for a loaded pipeline under a memory budget.
 * @example requestLimits(pipe, 8 * 2 ** 30).maxN // 10 for sana-tiny; 4 for Sana 1024px on 8 GiB
 */
export function requestLimits(pipe: SanaPipeline, budgetBytes = defaultMemoryBudget()): RequestLimits {
  const native = pipe.transformer.config.sampleSize * VAE_SCALE
  const channels = pipe.vae.config.decoderBlockOutChannels[0]
  const bytesPerPixel = channels * 4 * LIVE_TENSORS_AT_PEAK
  const maxBatchPixels = Math.floor(budgetBytes / bytesPerPixel)
  const trainSteps = Number(pipe.schedulerConfig.num_train_timesteps ?? 1000)
  return {
    nativeSize: native,
    minSide: VAE_SCALE,
    maxSide: native * 4,
    maxBatchPixels,
    maxN: Math.max(1, Math.min(OPENAI_MAX_N, Math.floor(maxBatchPixels / (native * native)))),
    maxSteps: Number.isInteger(trainSteps) && trainSteps > 0 ? trainSteps : 1000,
    maxUploadBytes: maxBatchPixels * 4,
  }
}

function refuse(message: string): SanaError {
  return new SanaError('SANA_INVALID_ARGUMENT', message)
}

/** Throw `SANA_INVALID_ARGUMENT` (HTTP 400) naming the field when `p` is outside `limits`. */
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
  const pixels = p.n * p.width * p.height
  if (pixels > limits.maxBatchPixels) {
    throw refuse(
      `n × width × height = ${pixels} pixels does not fit this server's memory budget (at most ${limits.maxBatchPixels}); ask for fewer or smaller images`,
    )
  }
}
