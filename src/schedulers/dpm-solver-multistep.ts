/**
 * DPMSolverMultistepScheduler as Sana configures it: "Flow-DPM-Solver" — DPM-Solver++ (order 2, midpoint)
 * on flow-matching sigmas with a flow-velocity model. Reproduces diffusers'
 * `schedulers/scheduling_dpmsolver_multistep.py` for `use_flow_sigmas=True, prediction_type="flow_prediction"`.
 *
 * Flow parameterisation: x_σ = (1 − σ)·x0 + σ·ε, so α = 1 − σ and λ = log α − log σ.
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

const NAME = 'DPMSolverMultistepScheduler'

/**
 * The `scheduler_config.json` keys this implementation reads (diffusers names). Keys not listed are ignored:
 * they only affect the beta-schedule paths, which Sana does not use.
 */
export interface DPMSolverMultistepSchedulerConfig {
  /** Training timesteps; the schedule's timesteps are `int(σ · num_train_timesteps)`. Defaults to 1000. */
  num_train_timesteps: number
  /** Multistep order: 1 (DDIM-like) or 2. Defaults to 2. */
  solver_order: number
  /** Shift applied to the flow sigmas: σ' = shift·σ / (1 + (shift − 1)·σ). Defaults to 3.0 (Sana 1024px). */
  flow_shift: number
  /** Use first order on the final step(s) (always for the last step when fewer than 15 steps). Defaults to true. */
  lower_order_final: boolean
  /** Use first order on the last step whatever the step count. Defaults to false. */
  euler_at_final: boolean
  /** Final sigma; only `"zero"` (the last step returns x0) is supported. Defaults to "zero". */
  final_sigmas_type: string
  /** Only `"dpmsolver++"` is supported. Defaults to "dpmsolver++". */
  algorithm_type: string
  /** Only `"midpoint"` is supported. Defaults to "midpoint". */
  solver_type: string
  /** Only `"flow_prediction"` (the transformer predicts the velocity ε − x0) is supported. Defaults to it. */
  prediction_type: string
  /** Must be true (flow-matching sigmas). Defaults to true. */
  use_flow_sigmas: boolean
  /** Dynamic thresholding is not supported; must be false. Defaults to false. */
  thresholding: boolean
  /** Alternative sigma spacings are not supported; each must be false. Default to false. */
  use_karras_sigmas: boolean
  use_exponential_sigmas: boolean
  use_beta_sigmas: boolean
  use_lu_lambdas: boolean
  use_dynamic_shifting: boolean
}

/** Sana's released `scheduler/scheduler_config.json`. */
const DEFAULTS: DPMSolverMultistepSchedulerConfig = {
  num_train_timesteps: 1000,
  solver_order: 2,
  flow_shift: 3.0,
  lower_order_final: true,
  euler_at_final: false,
  final_sigmas_type: 'zero',
  algorithm_type: 'dpmsolver++',
  solver_type: 'midpoint',
  prediction_type: 'flow_prediction',
  use_flow_sigmas: true,
  thresholding: false,
  use_karras_sigmas: false,
  use_exponential_sigmas: false,
  use_beta_sigmas: false,
  use_lu_lambdas: false,
  use_dynamic_shifting: false,
}

/** α_σ, σ and λ_σ = log α − log σ of the flow parameterisation (λ = +∞ at σ = 0). */
function flowLambda(sigma: number): { alpha: number; sigma: number; lambda: number } {
  const alpha = 1 - sigma
  return { alpha, sigma, lambda: Math.log(alpha) - Math.log(sigma) }
}

/**
 * Flow-DPM-Solver, the default sampler of `SanaPipeline`.
 *
 * Schedule (diffusers, `use_flow_sigmas`): `s = 1 − linspace(1, 1/T, n+1)`, shifted, flipped, last dropped,
 * then `0` appended (float32); timesteps are `int64(σ·T)` — truncated, e.g. 999, 922, 817, 666, 428 for
 * 5 steps. The transformer sees these integer timesteps while the solver uses the exact float32 sigmas.
 * The first step and (with `final_sigmas_type: "zero"`) the last step are first order; the last returns x0.
 *
 * @example
 * const scheduler = new DPMSolverMultistepScheduler()   // Sana's config
 * scheduler.setTimesteps(20)
 * for (const t of scheduler.timesteps) {
 *   const v = await predictVelocity(latents, scheduler.transformerTimestep(t))
 *   latents = (await scheduler.step(v, t, latents)).prevSample
 * }
 */
export class DPMSolverMultistepScheduler implements Scheduler {
  /** `"DPMSolverMultistepScheduler"`, the diffusers `_class_name`. */
  readonly className = NAME
  /** The resolved configuration. */
  readonly config: Readonly<DPMSolverMultistepSchedulerConfig>

  #timesteps: number[] = []
  #sigmas: number[] = []
  /** The last `solver_order` data predictions x0, oldest first (diffusers' `model_outputs`). */
  #x0History: (Tensor | null)[] = []
  #lowerOrderNums = 0
  #stepIndex: number | null = null

  /**
   * @param config diffusers config keys (see {@link DPMSolverMultistepSchedulerConfig}); missing keys take
   * Sana's released values. Unsupported settings throw `SANA_INVALID_CONFIG`.
   */
  constructor(config: Partial<DPMSolverMultistepSchedulerConfig> = {}) {
    const c = resolveConfig(NAME, DEFAULTS, config)
    requireOneOf(NAME, 'solver_order', c.solver_order, [1, 2])
    requireOneOf(NAME, 'algorithm_type', c.algorithm_type, ['dpmsolver++'])
    requireOneOf(NAME, 'solver_type', c.solver_type, ['midpoint'])
    requireOneOf(NAME, 'prediction_type', c.prediction_type, ['flow_prediction'])
    requireOneOf(NAME, 'final_sigmas_type', c.final_sigmas_type, ['zero'])
    requireOneOf(NAME, 'use_flow_sigmas', c.use_flow_sigmas, [true])
    for (const key of ['thresholding', 'use_karras_sigmas', 'use_exponential_sigmas', 'use_beta_sigmas', 'use_lu_lambdas', 'use_dynamic_shifting'] as const) {
      requireOneOf(NAME, key, c[key], [false])
    }
    if (!Number.isInteger(c.num_train_timesteps) || c.num_train_timesteps < 1) {
      throw invalidConfig(NAME, 'num_train_timesteps', 'a positive integer', c.num_train_timesteps)
    }
    if (!(c.flow_shift > 0)) throw invalidConfig(NAME, 'flow_shift', 'a positive number', c.flow_shift)
    this.config = Object.freeze(c)
  }

  /** Steps in the current schedule; 0 before {@link DPMSolverMultistepScheduler.setTimesteps}. */
  get numInferenceSteps(): number {
    return this.#timesteps.length
  }

  /**
   * Integer timesteps `int(σ·T)` (truncated), empty before `setTimesteps`.
   * @example scheduler.setTimesteps(5); scheduler.timesteps // [999, 922, 817, 666, 428]
   */
  get timesteps(): number[] {
    return [...this.#timesteps]
  }

  /**
   * float32 sigmas, one per timestep plus the final 0.
   * @example scheduler.setTimesteps(2); scheduler.sigmas // [0.99966645…, 0.74962479…, 0]
   */
  get sigmas(): number[] {
    return [...this.#sigmas]
  }

  /**
   * Build the schedule and reset the solver history.
   * @param numInferenceSteps number of model evaluations, an integer ≥ 1.
   * @example scheduler.setTimesteps(5); scheduler.timesteps // [999, 922, 817, 666, 428]
   */
  setTimesteps(numInferenceSteps: number): void {
    const n = checkStepCount(numInferenceSteps)
    const { num_train_timesteps: T, flow_shift: shift } = this.config
    // diffusers: alphas = linspace(1, 1/T, n+1); s = 1 − alphas; shifted; flipped; last (σ = 0) dropped.
    const s = numpyLinspace(1, 1 / T, n + 1).map((a) => 1 - a)
    const shifted = s.map((x) => flowShift(x, shift)).reverse().slice(0, n)
    // Timesteps come from the float64 sigmas (np → int64 truncates); the solver uses float32 sigmas.
    this.#timesteps = shifted.map((x) => Math.trunc(x * T))
    this.#sigmas = [...shifted, 0].map(Math.fround)
    this.#x0History = new Array<Tensor | null>(this.config.solver_order).fill(null)
    this.#lowerOrderNums = 0
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
   * Noise `original` to `sigmas[index]`: (1 − σ)·original + σ·noise in float32 (diffusers' `add_noise` once a
   * begin index is set, which then reads the sigma by index, not by timestep value).
   * @example const start = scheduler.addNoise(z0, noise, tStart)
   */
  addNoise(original: Tensor, noise: Tensor, index: number): Tensor {
    return flowNoiseAt(this.#sigmas, original, noise, index)
  }

  /**
   * SanaPipeline passes the scheduler timestep unchanged (times `transformer.config.timestep_scale`, 1.0 for
   * every released model, which the pipeline applies).
   * @example scheduler.transformerTimestep(922) // 922
   */
  transformerTimestep(t: number): number {
    return t
  }

  /**
   * One DPM-Solver++ step. `modelOutput` is the flow velocity predicted at `t` (after CFG). Returns the next
   * sample and the data prediction x0 = sample − σ·v. `options.noise` is ignored (the solver is deterministic).
   * @example latents = (await scheduler.step(velocity, t, latents)).prevSample
   */
  async step(modelOutput: Tensor, t: number, sample: Tensor, _options: SchedulerStepOptions = {}): Promise<SchedulerStepOutput> {
    const n = this.#timesteps.length
    if (n === 0) throw notReady(NAME, 'call setTimesteps(n) before step()')
    if (this.#stepIndex === null) this.#stepIndex = indexForTimestep(this.#timesteps, t)
    const i = this.#stepIndex
    if (i >= n) throw notReady(NAME, `all ${n} steps have been taken; call setTimesteps(n) to start a new generation`)
    const { solver_order: order, lower_order_final, euler_at_final, final_sigmas_type } = this.config
    const isLast = i === n - 1
    const lowerOrderFinal = isLast && (euler_at_final || (lower_order_final && n < 15) || final_sigmas_type === 'zero')

    // 1. convert_model_output: flow prediction → data prediction x0 = x − σ_s·v.
    const x0 = Tensor.linearCombination([sample, modelOutput], [1, -this.#sigmas[i]])
    this.#x0History.shift()
    this.#x0History.push(x0)

    // 2. First order on the first step(s) and the final step; second order (midpoint) otherwise.
    const prevSample =
      order === 1 || this.#lowerOrderNums < 1 || lowerOrderFinal ? this.#firstOrder(i, sample, x0) : this.#secondOrder(i, sample)

    if (this.#lowerOrderNums < order) this.#lowerOrderNums++
    this.#stepIndex = i + 1
    return { prevSample, denoised: x0 }
  }

  /** x_t = (σ_t/σ_s)·x − α_t(e^{−h} − 1)·x0, h = λ_t − λ_s. */
  #firstOrder(i: number, sample: Tensor, x0: Tensor): Tensor {
    const t = flowLambda(this.#sigmas[i + 1])
    const s = flowLambda(this.#sigmas[i])
    const h = t.lambda - s.lambda
    return Tensor.linearCombination([sample, x0], [t.sigma / s.sigma, -t.alpha * Math.expm1(-h)])
  }

  /**
   * Midpoint DPM-Solver++(2M): D0 = m0, D1 = (m0 − m1)/r0 with r0 = h_prev/h;
   * x_t = (σ_t/σ_s0)·x − α_t(e^{−h} − 1)·(D0 + ½·D1), folded into one combination of x, m0, m1.
   */
  #secondOrder(i: number, sample: Tensor): Tensor {
    const [m1, m0] = this.#x0History.slice(-2) as [Tensor, Tensor]
    const t = flowLambda(this.#sigmas[i + 1])
    const s0 = flowLambda(this.#sigmas[i])
    const s1 = flowLambda(this.#sigmas[i - 1])
    const h = t.lambda - s0.lambda
    const r0 = (s0.lambda - s1.lambda) / h
    const b = -t.alpha * Math.expm1(-h) // −α_t(e^{−h} − 1)
    return Tensor.linearCombination([sample, m0, m1], [t.sigma / s0.sigma, b * (1 + 0.5 / r0), -b * (0.5 / r0)])
  }
}
