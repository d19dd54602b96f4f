/**
 * The SANA-Sprint recipe (SCM sampler, TrigFlow): SanaSprintPipeline's loop body, and
 * SanaSprintImg2ImgPipeline's start from an encoded image.
 */
import type { SCMScheduler, SCMSetTimestepsOptions } from '../schedulers'
import { Tensor } from '../tensor'
import type { TextRows } from './guidance'
import { startIndex, type Recipe } from './loop'

export interface SprintRecipeParts {
  scheduler: SCMScheduler
  steps: number
  timestepOptions: SCMSetTimestepsOptions
  text: TextRows
  /** The guidance embedding's input: guidance_scale · guidance_embeds_scale (float32). */
  guidance: number
  /** Raw N(0,1) starting noise [B, C, h, w] (multiplied by σ_d here). */
  noise: Tensor
  /** img2img: the encoded image × scaling factor (not yet × σ_d), and the strength. */
  image?: { z0: Tensor; strength: number }
  /** N(0,1) noise for scheduler step `step` (the seeded generator's next draw, or the caller's). */
  stepNoise(step: number, shape: number[]): Tensor
  /** LoRA scale for this call; undefined runs the adapters at their weights. */
  loraScale?: number
}

export function sprintRecipe(p: SprintRecipeParts): Recipe {
  const { scheduler } = p
  const sigmaData = scheduler.config.sigma_data
  const f32 = Math.fround
  return {
    async init() {
      scheduler.setTimesteps(p.steps, p.timestepOptions)
      // The loop runs over timesteps[:-1]; img2img first drops the strength's share of the schedule.
      const tStart = p.image ? startIndex(p.steps, p.image.strength) : 0
      const timesteps = scheduler.timesteps.slice(tStart, -1)
      if (!p.image) return { latents: Tensor.linearCombination([p.noise], [sigmaData]), timesteps }
      scheduler.setBeginIndex(tStart)
      // x_t0 = cos t0 · (z0 · σ_d) + sin t0 · (noise · σ_d), t0 the first kept angle (float32 tensors in diffusers).
      const t0 = scheduler.timesteps[tStart]
      const imageLatents = Tensor.linearCombination([p.image.z0], [sigmaData])
      const latents = Tensor.linearCombination([imageLatents, p.noise], [f32(Math.cos(t0)), f32(f32(Math.sin(t0)) * sigmaData)])
      return { latents, timesteps }
    },

    async modelInputs(latents, t, _step, captionCache) {
      // The TrigFlow angle → the transformer's timestep and input scale.
      const s = scheduler.trigflowScales(t)
      const b = latents.shape[0]
      return {
        hiddenStates: Tensor.linearCombination([latents], [s.inputScale]),
        encoderHiddenStates: p.text.embeds,
        encoderAttentionMask: p.text.mask,
        timestep: new Array<number>(b).fill(s.timestep),
        guidance: new Array<number>(b).fill(p.guidance),
        captionCache,
        ...(p.loraScale === undefined ? {} : { loraScale: p.loraScale }),
      }
    },

    // Model output → the TrigFlow velocity (× σ_d folded into the coefficients).
    combine(output, inputs, t) {
      const s = scheduler.trigflowScales(t)
      return Tensor.linearCombination([inputs.hiddenStates, output], [s.inputCoeff, s.outputCoeff])
    },

    stepOptions: (step, latents) => ({ noise: p.stepNoise(step, latents.shape) }),

    // Sprint decodes the last x0 estimate, divided by σ_d.
    afterStep: (out) => ({ latents: out.prevSample, denoised: Tensor.linearCombination([out.denoised], [1 / sigmaData]) }),

    finish: (last) => last.denoised,
  }
}
