/**
 * What every scheduler shares: the {@link Scheduler} interface the pipelines drive, and the small
 * numeric helpers that reproduce numpy/torch schedule construction.
 *
 * Division of labour: TypeScript computes only scalars (sigmas, solver coefficients, history
 * bookkeeping); latents stay native {@link Tensor}s and are combined with
 * {@link Tensor.linearCombination} (float32 on the tensors' device), as diffusers does in float32.
 */
import { SanaError, invalidArgument, invalidConfig } from '../errors'
import { Tensor } from '../tensor'

/** `_class_name` values understood by {@link schedulerFromConfig}. */
export type SchedulerClassName = 'DPMSolverMultistepScheduler' | 'FlowMatchEulerDiscreteScheduler' | 'SCMScheduler'

/** Per-step inputs besides the model output. */
export interface SchedulerStepOptions {
  /**
   * N(0, 1) noise of the sample's shape, for stochastic schedulers ({@link SCMScheduler} draws noise on every
   * step). Passing it in keeps runs reproducible without re-implementing torch's RNG. Ignored by the
   * deterministic schedulers. Defaults to none.
   */
  noise?: Tensor
}

/** Result of one {@link Scheduler.step}, like diffusers' `*SchedulerOutput`. */
export interface SchedulerStepOutput {
  /** The sample for the next timestep (diffusers' `prev_sample`), float32. */
  prevSample: Tensor
  /**
   * The scheduler's estimate of the clean sample x0 at this step (diffusers' `denoised` / `pred_original_sample`;
   * for DPM-Solver++ the converted model output). SanaSprintPipeline decodes the last one.
   */
  denoised: Tensor
}

/**
 * The interface the pipelines drive. One generation:
 * ```ts
 * scheduler.setTimesteps(20)
 * for (const t of scheduler.timesteps.slice(0, scheduler.numInferenceSteps)) {
 *   const v = await runTransformer(latents, scheduler.transformerTimestep(t))
 *   latents = (await scheduler.step(v, t, latents)).prevSample
 * }
 * ```
 * `setTimesteps` resets all per-generation state (solver history, step index), so one scheduler can
 * serve many generations, one at a time.
 */
export interface Scheduler {
  /** diffusers class this scheduler reproduces. */
  readonly className: SchedulerClassName
  /** Number of model evaluations per generation, as given to `setTimesteps`; 0 before. */
  readonly numInferenceSteps: number
  /**
   * The schedule in the scheduler's own units, exactly as diffusers' `scheduler.timesteps` (a copy).
   * SCM lists `numInferenceSteps + 1` entries (ending at 0); the pipeline steps over the first
   * `numInferenceSteps`.
   */
  readonly timesteps: number[]
  /** diffusers' `scheduler.sigmas` as float32 values (a copy); empty for SCM, which has none. */
  readonly sigmas: number[]
  /** Build the schedule for `numInferenceSteps` steps and reset the per-generation state. */
  setTimesteps(numInferenceSteps: number): void
  /**
   * diffusers' `set_begin_index`: the first `step` of this generation runs at `timesteps[index]` (img2img skips the
   * first `index` steps of the schedule). Call after `setTimesteps`.
   */
  setBeginIndex(index: number): void
  /** The value the transformer receives as `timestep` for scheduler timestep `t`. */
  transformerTimestep(t: number): number
  /**
   * Advance one step: `modelOutput` is the (guided) model prediction at timestep `t` for `sample`.
   * `t` must be one of {@link Scheduler.timesteps}; the first call fixes the step index.
   */
  step(modelOutput: Tensor, t: number, sample: Tensor, options?: SchedulerStepOptions): Promise<SchedulerStepOutput>
}

// ---------------------------------------------------------------------------------------------------
// Config handling
// ---------------------------------------------------------------------------------------------------

/**
 * Merge a diffusers config object over `defaults`: only keys present in `defaults` are read (others, such as
 * `_diffusers_version` or `beta_start`, have no effect on the supported paths and are ignored), each
 * type-checked against its default.
 */
export function resolveConfig<T extends object>(owner: string, defaults: T, given: unknown): T {
  if (given === null || typeof given !== 'object' || Array.isArray(given)) {
    throw invalidConfig(owner, 'config', 'an object', given)
  }
  const out = { ...defaults } as Record<string, unknown>
  for (const [key, fallback] of Object.entries(defaults)) {
    const value = (given as Record<string, unknown>)[key]
    if (value === undefined) continue
    if (fallback !== null && typeof value !== typeof fallback) throw invalidConfig(owner, key, `a ${typeof fallback}`, value)
    out[key] = value
  }
  return out as T
}

/** Throw `SANA_INVALID_CONFIG` unless `value` is one of `allowed`. */
export function requireOneOf(owner: string, key: string, value: unknown, allowed: readonly unknown[]): void {
  if (!allowed.includes(value)) {
    throw invalidConfig(owner, key, allowed.length === 1 ? JSON.stringify(allowed[0]) : `one of ${JSON.stringify(allowed)}`, value)
  }
}

/** Validate a step count: an integer ≥ 1 (and ≤ `max` when given). */
export function checkStepCount(n: unknown, max = Infinity): number {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > max) {
    throw invalidArgument('numInferenceSteps', max === Infinity ? 'an integer ≥ 1' : `an integer from 1 to ${max}`, n)
  }
  return n
}

// ---------------------------------------------------------------------------------------------------
// Schedule helpers
// ---------------------------------------------------------------------------------------------------

/** The flow-matching time shift: shift·σ / (1 + (shift − 1)·σ) (SD3's `time_shift`, Sana's `flow_shift`). */
export function flowShift(sigma: number, shift: number): number {
  return (shift * sigma) / (1 + (shift - 1) * sigma)
}

/**
 * `np.linspace(start, stop, num)` in float64, rounding exactly as numpy does: `i * step + start`,
 * with the last element set to `stop`.
 */
export function numpyLinspace(start: number, stop: number, num: number): number[] {
  const div = num - 1
  const step = (stop - start) / div
  const out = Array.from({ length: num }, (_, i) => (div > 0 ? i * step + start : start))
  if (num > 1) out[num - 1] = stop
  return out
}

/**
 * `torch.linspace(start, end, steps)` in float32 (CPU kernel): the first half counts up from `start`, the second
 * half down from `end`, each product and sum rounded to float32.
 */
export function torchLinspaceF32(start: number, end: number, steps: number): number[] {
  const f = Math.fround
  const s = f(start)
  const e = f(end)
  const step = f(f(e - s) / (steps - 1))
  const halfway = Math.floor(steps / 2)
  return Array.from({ length: steps }, (_, i) => (i < halfway ? f(s + f(step * i)) : f(e - f(step * (steps - i - 1)))))
}

/**
 * diffusers' `index_for_timestep`: the position of `t` in `timesteps`; when `t` occurs more than once
 * the second occurrence is taken (so a first step never skips a sigma). Throws if `t` is not scheduled.
 */
export function indexForTimestep(timesteps: readonly number[], t: number): number {
  const hits: number[] = []
  timesteps.forEach((v, i) => v === t && hits.push(i))
  if (hits.length === 0) throw invalidArgument('timestep', 'one of scheduler.timesteps', t)
  return hits.length > 1 ? hits[1] : hits[0]
}

/** Validate a begin index against a schedule of `n` steps (see {@link Scheduler.setBeginIndex}). */
export function checkBeginIndex(owner: string, index: unknown, n: number): number {
  if (n === 0) throw notReady(owner, 'call setTimesteps(n) before setBeginIndex()')
  if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index >= n) {
    throw invalidArgument('beginIndex', `an integer from 0 to ${n - 1}`, index)
  }
  return index
}

/**
 * A flow-matching forward process: (1 − σ)·original + σ·noise in float32 — diffusers'
 * `DPMSolverMultistepScheduler.add_noise` and `FlowMatchEulerDiscreteScheduler.scale_noise` (equal elementwise:
 * each product is rounded once and the sum commutes).
 */
export function flowNoise(original: Tensor, noise: Tensor, sigma: number): Tensor {
  return Tensor.linearCombination([original, noise], [Math.fround(1 - sigma), sigma])
}

/** {@link flowNoise} at `sigmas[index]` of a schedule (the flow schedulers' `addNoise`). */
export function flowNoiseAt(sigmas: readonly number[], original: Tensor, noise: Tensor, index: number): Tensor {
  const sigma = Number.isInteger(index) ? sigmas[index] : undefined
  if (sigma === undefined) throw invalidArgument('index', `an integer from 0 to ${sigmas.length - 1} (call setTimesteps first)`, index)
  return flowNoise(original, noise, sigma)
}

/** Error for `step` before `setTimesteps`, or past the last step. */
export function notReady(owner: string, what: string): SanaError {
  return new SanaError('SANA_INVALID_ARGUMENT', `${owner}: ${what}`)
}
