/**
 * SCMScheduler: the multistep sampler of SANA-Sprint's sCM (continuous-time consistency) models, reproducing
 * diffusers' `schedulers/scheduling_scm.py` with TrigFlow parameterisation: x_t = cos(t)·x0 + sin(t)·σ_d·ε,
 * t ∈ [0, π/2].
 */
import { invalidArgument, invalidConfig } from '../errors'
import { Tensor } from '../tensor'
import {
  type Scheduler,
  type SchedulerStepOptions,
  type SchedulerStepOutput,
  checkBeginIndex,
  checkStepCount,
  indexForTimestep,
  notReady,
  requireOneOf,
  resolveConfig,
  torchLinspaceF32,
} from './scheduler'

const NAME = 'SCMScheduler'
const f32 = Math.fround

/** The `scheduler_config.json` keys this implementation reads (diffusers names and defaults). */
export interface SCMSchedulerConfig {
  /** Upper bound on the number of steps. Defaults to 1000. */
  num_train_timesteps: number
  /** Only `"trigflow"` is supported. Defaults to "trigflow". */
  prediction_type: string
  /** Standard deviation of the data, σ_d. Defaults to 0.5. */
  sigma_data: number
}

const DEFAULTS: SCMSchedulerConfig = { num_train_timesteps: 1000, prediction_type: 'trigflow', sigma_data: 0.5 }

/** Options of {@link SCMScheduler.setTimesteps}. */
export interface SCMSetTimestepsOptions {
  /** First TrigFlow angle. Defaults to 1.5708 (≈ π/2, SanaSprintPipeline's default). */
  maxTimesteps?: number
  /**
   * Middle angle of a 2-step schedule `[maxTimesteps, intermediateTimesteps, 0]`. Defaults to 1.3 for 2 steps
   * (SanaSprintPipeline's default) and to none otherwise; pass `null` for an even 2-step spacing. Only valid
   * with 2 steps, as in diffusers.
   */
  intermediateTimesteps?: number | null
}

/** Scalars SanaSprintPipeline derives from a TrigFlow angle `t` (see {@link SCMScheduler.trigflowScales}). */
export interface TrigFlowScales {
  /** scm_t = sin t / (cos t + sin t): the transformer's `timestep` (not multiplied by 1000). */
  timestep: number
  /** transformer input = inputScale · latents, i.e. latents / σ_d · √(scm_t² + (1 − scm_t)²). */
  inputScale: number
  /** TrigFlow model output = inputCoeff · transformerInput + outputCoeff · transformerOutput. */
  inputCoeff: number
  /** See {@link TrigFlowScales.inputCoeff}. */
  outputCoeff: number
}

/**
 * sCM sampler for SANA-Sprint: each step predicts x0 = cos(s)·x − sin(s)·F and re-noises it to the next angle t,
 * x' = cos(t)·x0 + sin(t)·σ_d·ε, with fresh N(0,1) noise ε on every step (the last step has t = 0, so its
 * noise has no effect). `step` takes that noise as `options.noise`, so runs are reproducible without torch's RNG.
 *
 * `timesteps` holds `numInferenceSteps + 1` angles ending at 0; the pipeline steps over all but the last.
 *
 * @example
 * const scheduler = new SCMScheduler()
 * scheduler.setTimesteps(2)            // [1.5708, 1.3, 0]
 * let latents = Tensor.linearCombination([initialNoise], [scheduler.config.sigma_data])
 * for (const t of scheduler.timesteps.slice(0, scheduler.numInferenceSteps)) {
 *   const s = scheduler.trigflowScales(t)
 *   const input = Tensor.linearCombination([latents], [s.inputScale])
 *   const out = await transformer(input, s.timestep)
 *   const F = Tensor.linearCombination([input, out], [s.inputCoeff, s.outputCoeff])
 *   ;({ prevSample: latents, denoised } = await scheduler.step(F, t, latents, { noise: randn() }))
 * }
 */
export class SCMScheduler implements Scheduler {
  /** `"SCMScheduler"`, the diffusers `_class_name`. */
  readonly className = NAME
  /** The resolved configuration. */
  readonly config: Readonly<SCMSchedulerConfig>

  #timesteps: number[] = []
  #stepIndex: number | null = null

  /**
   * @param config diffusers config keys (see {@link SCMSchedulerConfig}); missing keys take diffusers' defaults.
   * Unsupported settings throw `SANA_INVALID_CONFIG`.
   */
  constructor(config: Partial<SCMSchedulerConfig> = {}) {
    const c = resolveConfig(NAME, DEFAULTS, config)
    requireOneOf(NAME, 'prediction_type', c.prediction_type, ['trigflow'])
    if (!(c.sigma_data > 0)) throw invalidConfig(NAME, 'sigma_data', 'a positive number', c.sigma_data)
    if (!Number.isInteger(c.num_train_timesteps) || c.num_train_timesteps < 1) {
      throw invalidConfig(NAME, 'num_train_timesteps', 'a positive integer', c.num_train_timesteps)
    }
    this.config = Object.freeze(c)
  }

  /** Steps in the current schedule (one less than `timesteps.length`); 0 before `setTimesteps`. */
  get numInferenceSteps(): number {
    return Math.max(0, this.#timesteps.length - 1)
  }

  /**
   * float32 TrigFlow angles, `numInferenceSteps + 1` of them, ending at 0; empty before `setTimesteps`.
   * @example scheduler.setTimesteps(2); scheduler.timesteps // [1.5707999…, 1.2999999…, 0]
   */
  get timesteps(): number[] {
    return [...this.#timesteps]
  }

  /** SCM has no sigma schedule; always `[]` (present for the {@link Scheduler} interface). */
  get sigmas(): number[] {
    return []
  }

  /**
   * Build the schedule: `[maxTimesteps, intermediateTimesteps, 0]` for 2 steps (by default), otherwise
   * `torch.linspace(maxTimesteps, 0, n + 1)` in float32.
   * @param numInferenceSteps an integer from 1 to `num_train_timesteps`.
   * @example scheduler.setTimesteps(5, { maxTimesteps: 1.5708 })
   */
  setTimesteps(numInferenceSteps: number, options: SCMSetTimestepsOptions = {}): void {
    const n = checkStepCount(numInferenceSteps, this.config.num_train_timesteps)
    const max = options.maxTimesteps ?? 1.5708
    if (typeof max !== 'number' || !Number.isFinite(max) || max <= 0) {
      throw invalidArgument('maxTimesteps', 'a positive number', max)
    }
    const mid = options.intermediateTimesteps === undefined ? (n === 2 ? 1.3 : null) : options.intermediateTimesteps
    if (mid !== null) {
      if (n !== 2) throw invalidArgument('intermediateTimesteps', 'null or undefined unless numInferenceSteps is 2', mid)
      if (typeof mid !== 'number' || !Number.isFinite(mid)) throw invalidArgument('intermediateTimesteps', 'a number', mid)
    }
    this.#timesteps = mid === null ? torchLinspaceF32(max, 0, n + 1) : [max, mid, 0].map(f32)
    this.#stepIndex = null
  }

  /**
   * Start at `timesteps[index]` (diffusers' `set_begin_index`, used by SanaSprintImg2ImgPipeline).
   * @example scheduler.setTimesteps(2); scheduler.setBeginIndex(1) // one step, from 1.3 to 0
   */
  setBeginIndex(index: number): void {
    this.#stepIndex = checkBeginIndex(NAME, index, this.numInferenceSteps)
  }

  /**
   * The transformer's timestep for angle `t`: scm_t = sin t / (cos t + sin t), in float32.
   * @example scheduler.transformerTimestep(1.5708) // ≈ 1 (pure noise)
   */
  transformerTimestep(t: number): number {
    const sin = f32(Math.sin(t))
    return f32(sin / f32(f32(Math.cos(t)) + sin))
  }

  /**
   * The SanaSprintPipeline conversions around the transformer at angle `t` (float32 scalars). With
   * s = scm_t and n = √(s² + (1 − s)²):
   * - input  = latents / σ_d · n
   * - F      = ((1 − 2s)·input + (1 − 2s + 2s²)·output) / n · σ_d   (the TrigFlow velocity `step` expects)
   * @example const { timestep, inputScale, inputCoeff, outputCoeff } = scheduler.trigflowScales(1.3)
   */
  trigflowScales(t: number): TrigFlowScales {
    const s = this.transformerTimestep(t)
    const sd = this.config.sigma_data
    const norm = f32(Math.sqrt(f32(f32(s * s) + f32(f32(1 - s) * f32(1 - s)))))
    return {
      timestep: s,
      inputScale: f32(norm / sd),
      inputCoeff: f32(((1 - 2 * s) / norm) * sd),
      outputCoeff: f32(((1 - 2 * s + 2 * s * s) / norm) * sd),
    }
  }

  /**
   * One sCM step with the TrigFlow model output F at angle `t`: denoised = cos(s)·x − sin(s)·F, then
   * prevSample = cos(t')·denoised + sin(t')·σ_d·noise for the next angle t'. `options.noise` (N(0,1), the
   * sample's shape) is required except on the last step, where sin(0) = 0.
   * @example const { prevSample, denoised } = await scheduler.step(F, t, latents, { noise })
   */
  async step(modelOutput: Tensor, t: number, sample: Tensor, options: SchedulerStepOptions = {}): Promise<SchedulerStepOutput> {
    const n = this.numInferenceSteps
    if (n === 0) throw notReady(NAME, 'call setTimesteps(n) before step()')
    if (this.#stepIndex === null) this.#stepIndex = indexForTimestep(this.#timesteps, t)
    const i = this.#stepIndex
    if (i >= n) throw notReady(NAME, `all ${n} steps have been taken; call setTimesteps(n) to start a new generation`)
    const s = this.#timesteps[i]
    const next = this.#timesteps[i + 1]

    // 1. TrigFlow x0 prediction (torch.cos/sin of a float32 tensor are float32).
    const denoised = Tensor.linearCombination([sample, modelOutput], [f32(Math.cos(s)), -f32(Math.sin(s))])
    // 2. Re-noise to the next angle.
    const sinNext = f32(Math.sin(next))
    const cosNext = f32(Math.cos(next))
    let prevSample: Tensor
    if (options.noise !== undefined) {
      if (!(options.noise instanceof Tensor)) throw invalidArgument('options.noise', 'a Tensor', options.noise)
      prevSample = Tensor.linearCombination([denoised, options.noise], [cosNext, sinNext * this.config.sigma_data])
    } else if (sinNext === 0) {
      prevSample = Tensor.linearCombination([denoised], [cosNext])
    } else {
      throw invalidArgument('options.noise', 'an N(0,1) Tensor of the sample shape (SCMScheduler re-noises on every step but the last)', undefined)
    }
    this.#stepIndex = i + 1
    return { prevSample, denoised }
  }
}
