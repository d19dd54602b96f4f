/**
 * The base-Sana recipe (DPM-Solver or flow-match Euler): SanaPipeline's loop body, plus the image
 * conditioning diffusers composes for flow models — img2img (StableDiffusion3Img2ImgPipeline), inpainting
 * (StableDiffusion3InpaintPipeline's blend), ControlNet residuals (SanaControlNetPipeline) and PAG
 * (SanaPAGPipeline, through {@link Guidance}).
 */
import type { CaptionCache } from '../caption-cache'
import type { TransformerInput } from '../components'
import type { DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler } from '../schedulers'
import { Tensor } from '../tensor'
import type { Guidance } from './guidance'
import { startIndex, type Recipe, type StepState } from './loop'

/** A flow scheduler that can noise an image to a step of its schedule. */
export type FlowScheduler = DPMSolverMultistepScheduler | FlowMatchEulerDiscreteScheduler

/** Where a Sana generation starts. */
export type SanaStart =
  /** Text to image from N(0,1) latents [B, C, h, w]. */
  | { kind: 'noise'; noise: Tensor }
  /**
   * img2img: `z0` is the encoded image × scaling factor, [B, C, h, w]; `noise` the one N(0,1) draw of its shape.
   * With `mask` ([1, 1, h, w], 1 = repaint) it is inpainting.
   */
  | { kind: 'image'; z0: Tensor; noise: Tensor; strength: number; mask?: Tensor }

/** What the loop asks of a ControlNet (`SanaControlNetModel.forward`): its block samples, already × scale. */
export interface ControlNetLike {
  forward(input: {
    hiddenStates: Tensor
    encoderHiddenStates: Tensor
    encoderAttentionMask?: Tensor
    timestep: number[]
    controlnetCond: Tensor
    conditioningScale: number
    captionCache?: CaptionCache
  }): Promise<Tensor[]>
}

/** ControlNet for one call: the model, the encoded control image for the whole batch, and its scale. */
export interface ControlNetInput {
  model: ControlNetLike
  /** `vae.encode(control image) · scaling_factor`, repeated to the transformer batch. */
  cond: Tensor
  scale: number
}

/** Everything a Sana recipe needs from the pipeline. */
export interface SanaRecipeParts {
  scheduler: FlowScheduler
  steps: number
  start: SanaStart
  guidance: Guidance
  /** transformer.config.timestep_scale (SanaPipeline multiplies the timestep by it). */
  timestepScale: number
  controlnet?: ControlNetInput
  /** LoRA scale for this call (`attention_kwargs["scale"]`); undefined runs the adapters at their weights. */
  loraScale?: number
}

/** Repeat a batch `k` times along dim 0 as one block per copy (`torch.cat([x] * k)`). */
function copies(x: Tensor, k: number): Tensor {
  return k === 1 ? x : Tensor.cat(new Array<Tensor>(k).fill(x), 0)
}

export function sanaRecipe(p: SanaRecipeParts): Recipe {
  const { scheduler, guidance, start } = p
  let tStart = 0
  return {
    async init() {
      scheduler.setTimesteps(p.steps)
      if (start.kind === 'noise') return { latents: start.noise, timesteps: scheduler.timesteps }
      // Skip the first steps as SD3's get_timesteps does, then noise the image to the first kept sigma —
      // except inpainting at strength 1, which starts from pure noise (SD3's is_strength_max).
      tStart = startIndex(p.steps, start.strength)
      scheduler.setBeginIndex(tStart)
      const pureNoise = start.mask !== undefined && start.strength === 1
      const latents = pureNoise ? start.noise : scheduler.addNoise(start.z0, start.noise, tStart)
      return { latents, timesteps: scheduler.timesteps.slice(tStart) }
    },

    async modelInputs(latents, t, _step, captionCache) {
      const hiddenStates = copies(latents, guidance.copies)
      const b = hiddenStates.shape[0]
      // t.expand(B) · timestep_scale in float32; the model itself does not scale.
      const timestep = new Array<number>(b).fill(Math.fround(scheduler.transformerTimestep(t) * p.timestepScale))
      const input: TransformerInput = {
        hiddenStates,
        encoderHiddenStates: guidance.text.embeds,
        encoderAttentionMask: guidance.text.mask,
        timestep,
        captionCache,
      }
      const pag = guidance.pagInput(b)
      if (pag) input.pag = pag
      if (p.loraScale !== undefined) input.loraScale = p.loraScale
      if (p.controlnet) {
        const { model, cond, scale } = p.controlnet
        input.controlnetBlockSamples = await model.forward({
          hiddenStates,
          encoderHiddenStates: input.encoderHiddenStates,
          encoderAttentionMask: input.encoderAttentionMask,
          timestep,
          controlnetCond: cond,
          conditioningScale: scale,
          captionCache,
        })
      }
      return input
    },

    combine: (output, _inputs, t) => guidance.combine(output, t),

    stepOptions: () => ({}),

    afterStep(out, step): StepState {
      if (start.kind !== 'image' || start.mask === undefined) return { latents: out.prevSample, denoised: out.denoised }
      // Inpainting: the known region follows the source latents, noised to the next timestep (its sigma is the
      // scheduler's, by index: `add_noise` reads sigmas[step_index] once a begin index is set); the last step
      // puts back z0 itself.
      const next = tStart + step + 1
      const last = next >= p.steps
      const known = last ? start.z0 : scheduler.addNoise(start.z0, start.noise, next)
      return { latents: Tensor.maskedBlend(known, out.prevSample, start.mask), denoised: out.denoised }
    },

    finish: (last) => last.latents,
  }
}
