/**
 * The one sampling loop behind `SanaPipeline.generate` / `stream`. What differs between Sana and Sprint, and
 * between text-to-image, img2img, inpainting, ControlNet and PAG, lives in a {@link Recipe}; the loop only
 * runs: model inputs → transformer → combine → scheduler step → after-step, once per timestep.
 */
import { CaptionCache } from '../caption-cache'
import type { TransformerInput } from '../components'
import { throwIfAborted } from '../errors'
import type { Scheduler, SchedulerStepOptions, SchedulerStepOutput } from '../schedulers'
import type { Tensor } from '../tensor'

/** The latents after a step and the step's estimate of the clean latents (what a preview decodes). */
export interface StepState {
  /** Latents to continue from (diffusion space). */
  latents: Tensor
  /** The x0 estimate, in the space the VAE decodes after `/ scaling_factor` (Sprint: already `/ σ_d`). */
  denoised: Tensor
}

/** How one kind of generation fills in the loop. Built per call; holds that call's state only. */
export interface Recipe {
  /** Build the schedule and the starting latents: noise, or an encoded image noised to the first kept timestep. */
  init(): Promise<{ latents: Tensor; timesteps: number[] }>
  /**
   * The transformer's input for one step: the CFG/PAG batch, Sprint's input scaling, ControlNet residuals.
   * `captions` is the generation's caption cache, for the transformer and a ControlNet alike.
   */
  modelInputs(latents: Tensor, t: number, step: number, captions: CaptionCache): Promise<TransformerInput>
  /** Model output → what the scheduler steps with: the guidance formula (Sana), the TrigFlow conversion (Sprint). */
  combine(output: Tensor, inputs: TransformerInput, t: number, step: number): Tensor
  /** Scheduler options for a step (Sprint's fresh noise). */
  stepOptions(step: number, latents: Tensor): SchedulerStepOptions
  /** After the scheduler step: inpainting puts the known region back. */
  afterStep(out: SchedulerStepOutput, step: number): StepState
  /** The latents to decode once the last step is done. */
  finish(last: StepState): Tensor
}

/** What the loop yields after each step. */
export interface LoopStep extends StepState {
  /** 0-based step index. */
  step: number
  /** Steps this generation runs (fewer than `numInferenceSteps` for img2img). */
  numSteps: number
  /** The scheduler timestep of this step. */
  timestep: number
}

/** The forward the loop calls: the transformer (or anything with its signature, e.g. a test double). */
export interface Denoiser {
  forward(input: TransformerInput): Promise<Tensor>
}

/**
 * Run a recipe to the end: yields after every step, returns the latents to decode. Aborts between steps with
 * an `AbortError` when `signal` fires. The caption work is done once for all steps (one {@link CaptionCache},
 * freed when the loop ends, however it ends).
 */
export async function* sample(
  recipe: Recipe,
  scheduler: Scheduler,
  transformer: Denoiser,
  signal?: AbortSignal,
): AsyncGenerator<LoopStep, Tensor> {
  const { latents, timesteps } = await recipe.init()
  let state: StepState = { latents, denoised: latents }
  const captions = new CaptionCache()
  try {
    for (const [step, t] of timesteps.entries()) {
      throwIfAborted(signal)
      // 1. Model inputs, 2. one transformer call, 3. guidance, 4. scheduler, 5. after-step hooks.
      const inputs = await recipe.modelInputs(state.latents, t, step, captions)
      const output = await transformer.forward(inputs)
      const prediction = recipe.combine(output, inputs, t, step)
      const out = await scheduler.step(prediction, t, state.latents, recipe.stepOptions(step, state.latents))
      state = recipe.afterStep(out, step)
      yield { step, numSteps: timesteps.length, timestep: t, ...state }
    }
  } finally {
    captions.dispose()
  }
  return recipe.finish(state)
}

/**
 * The first kept step of a strength-`s` schedule, exactly as diffusers' img2img pipelines compute it (IEEE
 * doubles as in Python): `init = min(n·s, n)`, `t_start = int(max(n − init, 0))`. 10 steps × 0.7 give 2, not 3.
 * @example startIndex(5, 0.7) // 1
 */
export function startIndex(numInferenceSteps: number, strength: number): number {
  const init = Math.min(numInferenceSteps * strength, numInferenceSteps)
  return Math.trunc(Math.max(numInferenceSteps - init, 0))
}
