/**
 * FlowMatchEulerDiscreteScheduler: the Euler method on flow-matching sigmas, reproducing diffusers'
 * `schedulers/scheduling_flow_match_euler_discrete.py` with a static shift (no dynamic shifting).
 */
import { invalidConfig } from '../errors'
import { Tensor } from '../tensor'
import {
  type Scheduler,
  type SchedulerStepOptions,
  type SchedulerStepOutput,
  checkBeginIndex,
  checkStepCount,
  flowNoiseAt,
  flowShift,
  indexForTimestep,
  notReady,
  numpyLinspace,
  requireOneOf,
  resolveConfig,
} from './scheduler'

const NAME = 'FlowMatchEulerDiscreteScheduler'

/** The `scheduler_config.json` keys this implementation reads (diffusers names and defaults). */
export interface FlowMatchEulerDiscreteSchedulerConfig {
  /** Training timesteps T; timesteps are σ·T. Defaults to 1000. */
  num_train_timesteps: number
  /** Static shift σ' = shift·σ / (1 + (shift − 1)·σ). Defaults to 1.0 (Sana uses 3.0). */
  shift: number
  /** Resolution-dependent shifting is not supported; must be false. Defaults to false. */
  use_dynamic_shifting: boolean
  /** Must be false. Defaults to false. */
  invert_sigmas: boolean
  /** Must be false. Defaults to false. */
  stochastic_sampling: boolean
  /** Alternative sigma spacings are not supported; each must be false. Default to false. */
  use_karras_sigmas: boolean
  use_exponential_sigmas: boolean
  use_beta_sigmas: boolean
  /** Stretching the schedule to a terminal value is not supported; must be null. Defaults to null. */
  shift_terminal: number | null
}

const DEFAULTS: FlowMatchEulerDiscreteSchedulerConfig = {
  num_train_timesteps: 1000,
  shift: 1.0,
  use_dynamic_shifting: false,
  invert_sigmas: false,
  stochastic_sampling: false,
  use_karras_sigmas: false,
  use_exponential_sigmas: false,
  use_beta_sigmas: false,
  shift_terminal: null,
}

/**
 * Flow-matching Euler sampler: x ← x + (σ_next − σ)·v.
 *
 * The schedule follows diffusers exactly, including a quirk: the lower end `σ_min` is taken from the
 * already-shifted training sigmas and then shifted again, so with shift 3 and 2 steps the timesteps are
 * `[1000, 8.93]`, not `[1000, 1]`.
 *
 * @example
 * const scheduler = new FlowMatchEulerDiscreteScheduler({ shift: 3.0 })
 * scheduler.setTimesteps(2)
 * scheduler.timesteps // [1000, 8.928571701049805]
 */
export class FlowMatchEulerDiscreteScheduler implements Scheduler {
  /** `"FlowMatchEulerDiscreteScheduler"`, the diffusers `_class_name`. */
  readonly className = NAME
  /** The resolved configuration. */
  readonly config: Readonly<FlowMatchEulerDiscreteSchedulerConfig>

  /** Ends of the training schedule (float32, shifted once), diffusers' `sigma_min` / `sigma_max`. */
  readonly #sigmaMin: number
  readonly #sigmaMax: number
  #timesteps: number[] = []
  #sigmas: number[] = []
  #stepIndex: number | null = null

  /**
   * @param config diffusers config keys (see {@link FlowMatchEulerDiscreteSchedulerConfig}); missing keys take
   * diffusers' defaults. Unsupported settings throw `SANA_INVALID_CONFIG`.
   */
  constructor(config: Partial<FlowMatchEulerDiscreteSchedulerConfig> = {}) {
    const c = resolveConfig(NAME, DEFAULTS, config)
    for (const key of ['use_dynamic_shifting', 'invert_sigmas', 'stochastic_sampling', 'use_karras_sigmas', 'use_exponential_sigmas', 'use_beta_sigmas'] as const) {
      requireOneOf(NAME, key, c[key], [false])
    }
    requireOneOf(NAME, 'shift_terminal', c.shift_terminal, [null])
    if (!Number.isInteger(c.num_train_timesteps) || c.num_train_timesteps < 1) {
      throw invalidConfig(NAME, 'num_train_timesteps', 'a positive integer', c.num_train_timesteps)
    }
    if (!(c.shift > 0)) throw invalidConfig(NAME, 'shift', 'a positive number', c.shift)
    this.config = Object.freeze(c)
    // __init__: t = linspace(1, T, T) (float32), σ = t/T, shifted — all float32 torch arithmetic.
    // Only the ends are needed: σ_max = shift(T/T) and σ_min = shift(1/T).
    this.#sigmaMax = this.#shiftF32(Math.fround(c.num_train_timesteps / c.num_train_timesteps))
    this.#sigmaMin = this.#shiftF32(Math.fround(1 / c.num_train_timesteps))
  }

  /** shift·σ / (1 + (shift − 1)·σ) with every operation rounded to float32, as torch does on a float32 tensor. */
  #shiftF32(sigma: number): number {
    const f = Math.fround
    const shift = this.config.shift
    return f(f(shift * sigma) / f(1 + f((shift - 1) * sigma)))
  }

  /** Steps in the current schedule; 0 before {@link FlowMatchEulerDiscreteScheduler.setTimesteps}. */
  get numInferenceSteps(): number {
    return this.#timesteps.length
  }

  /**
   * float32 timesteps σ·T, empty before `setTimesteps`.
   * @example scheduler.setTimesteps(5); scheduler.timesteps // [1000, 900.359…, 751.121…, 502.985…, 8.928…] (shift 3)
   */
  get timesteps(): number[] {
    return [...this.#timesteps]
  }

  /**
   * float32 sigmas, one per timestep plus the final 0.
   * @example scheduler.setTimesteps(2); scheduler.sigmas // [1, 0.008928…, 0] (shift 3)
   */
  get sigmas(): number[] {
    return [...this.#sigmas]
  }

  /**
   * Build the schedule and reset the step index.
   * @param numInferenceSteps number of model evaluations, an integer ≥ 1.
   * @example scheduler.setTimesteps(20)
   */
  setTimesteps(numInferenceSteps: number): void {
    const n = checkStepCount(numInferenceSteps)
    const { num_train_timesteps: T, shift } = this.config
    // diffusers: linspace(σ_max·T, σ_min·T, n)/T in float64, shifted (again), cast to float32.
    const sigmas = numpyLinspace(this.#sigmaMax * T, this.#sigmaMin * T, n)
      .map((t) => t / T)
      .map((s) => Math.fround(flowShift(s, shift)))
    this.#timesteps = sigmas.map((s) => Math.fround(s * T))
    this.#sigmas = [...sigmas, 0]
    this.#stepIndex = null
  }

  /**
   * Start at `timesteps[index]` instead of the first (diffusers' `set_begin_index`, used by img2img).
   * @example scheduler.setTimesteps(5); scheduler.setBeginIndex(1) // the first step runs at timesteps[1]
   */
  setBeginIndex(index: number): void {
    this.#stepIndex = checkBeginIndex(NAME, index, this.#timesteps.length)
  }

  /**
   * Noise `original` to `sigmas[index]`: (1 − σ)·original + σ·noise in float32 (diffusers' `scale_noise` once a
   * begin index is set, which then reads the sigma by index, not by timestep value).
   * @example const start = scheduler.addNoise(z0, noise, tStart)
   */
  addNoise(original: Tensor, noise: Tensor, index: number): Tensor {
    return flowNoiseAt(this.#sigmas, original, noise, index)
  }

  /**
   * SanaPipeline passes the scheduler timestep σ·T unchanged (times `timestep_scale`, applied by the pipeline).
   * @example scheduler.transformerTimestep(900.359) // 900.359
   */
  transformerTimestep(t: number): number {
    return t
  }

  /**
   * One Euler step with the flow velocity `modelOutput`: prevSample = x + (σ_next − σ)·v; `denoised` is
   * x − σ·v. `options.noise` is ignored.
   * @example latents = (await scheduler.step(velocity, t, latents)).prevSample
   */
  async step(modelOutput: Tensor, t: number, sample: Tensor, _options: SchedulerStepOptions = {}): Promise<SchedulerStepOutput> {
    const n = this.#timesteps.length
    if (n === 0) throw notReady(NAME, 'call setTimesteps(n) before step()')
    if (this.#stepIndex === null) this.#stepIndex = indexForTimestep(this.#timesteps, t)
    const i = this.#stepIndex
    if (i >= n) throw notReady(NAME, `all ${n} steps have been taken; call setTimesteps(n) to start a new generation`)
    const sigma = this.#sigmas[i]
    const dt = Math.fround(this.#sigmas[i + 1] - sigma) // float32 tensor subtraction in diffusers
    const prevSample = Tensor.linearCombination([sample, modelOutput], [1, dt])
    const denoised = Tensor.linearCombination([sample, modelOutput], [1, -sigma])
    this.#stepIndex = i + 1
    return { prevSample, denoised }
  }
}
