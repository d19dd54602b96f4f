/**
 * From checked options to a {@link Recipe}: draws the noise, encodes the image inputs (img2img source,
 * inpainting mask, ControlNet condition) and picks Sana's or Sprint's recipe.
 */
import type { AutoencoderDC } from '../components'
import { invalidArgument } from '../errors'
import { repeatRows, type GenerateOptions, type ResolvedOptions } from '../generate'
import { pagLayerIndices } from '../pag'
import type { ImageSize } from '../postprocess'
import { prepareImage, prepareMask, type ImageInput } from '../preprocess'
import type { TorchGenerator } from '../random'
import type { Scheduler, SCMScheduler } from '../schedulers'
import { Tensor } from '../tensor'
import { makeGuidance, type TextRows } from './guidance'
import type { Recipe } from './loop'
import { sanaRecipe, type ControlNetLike, type FlowScheduler, type SanaStart } from './sana'
import { sprintRecipe } from './sprint'

/** What a recipe needs from the pipeline. */
export interface RecipeParts {
  sprint: boolean
  scheduler: Scheduler
  vae: AutoencoderDC
  controlnet?: ControlNetLike
  latentChannels: number
  numLayers: number
  timestepScale: number
  guidanceEmbedsScale: number
}

/** Encoded prompts, one row per image: positive, and negative with CFG. */
export interface PromptRows {
  positive: TextRows
  negative?: TextRows
}

/** `vae.encode(x) · scaling_factor` for an image input, one row per image of the batch. */
async function encodeImage(vae: AutoencoderDC, name: string, input: ImageInput, size: ImageSize, batch: number): Promise<Tensor> {
  const x = await prepareImage(name, input, size)
  const z = Tensor.linearCombination([await vae.encode(x)], [vae.config.scalingFactor])
  const rows = z.shape[0]
  if (rows === batch) return z
  if (rows !== 1) throw invalidArgument(name, `one image or ${batch} (one per generated image)`, `${rows} images`)
  return repeatRows(z, batch)
}

function randn(rng: TorchGenerator, shape: number[]): Tensor {
  return Tensor.fromFloat32Array(rng.randn(shape.reduce((a, b) => a * b, 1)), shape)
}

/** Build the recipe of one call. `r.size` must be known (image inputs decoded). */
export async function buildRecipe(parts: RecipeParts, o: GenerateOptions, r: ResolvedOptions & { size: ImageSize }, text: PromptRows, rng: TorchGenerator): Promise<Recipe> {
  const batch = r.prompts.length * r.perPrompt
  const shape = [batch, parts.latentChannels, r.size.height / 32, r.size.width / 32]
  // The image is encoded before the first draw; the draws keep diffusers' order (start noise, then per step).
  const z0 = o.image !== undefined ? await encodeImage(parts.vae, 'image', o.image, r.size, batch) : undefined
  const noise = o.latents ?? o.noise ?? randn(rng, shape)

  if (parts.sprint) {
    return sprintRecipe({
      scheduler: parts.scheduler as SCMScheduler,
      steps: r.steps,
      timestepOptions: { maxTimesteps: o.maxTimesteps, intermediateTimesteps: o.intermediateTimesteps },
      text: text.positive,
      // float32 like diffusers: torch.full([1], g, float32) * guidance_embeds_scale
      guidance: Math.fround(Math.fround(r.guidance) * Math.fround(parts.guidanceEmbedsScale)),
      noise: Tensor.linearCombination([noise], [1]), // a float32 copy, as diffusers' `.to(float32)`
      image: z0 && { z0, strength: r.strength },
      stepNoise: (step, s) => o.schedulerNoise?.[step] ?? randn(rng, s),
      loraScale: r.loraScale,
    })
  }

  const start: SanaStart =
    z0 === undefined
      ? { kind: 'noise', noise: Tensor.linearCombination([noise], [1]) }
      : {
          kind: 'image',
          z0,
          noise,
          strength: r.strength,
          mask: o.maskImage === undefined ? undefined : (await prepareMask(o.maskImage, r.size)).latent,
        }
  const pag = r.pag && { scale: r.pag.scale, adaptiveScale: r.pag.adaptiveScale, layers: pagLayerIndices(r.pag.spec, parts.numLayers) }
  const guidance = makeGuidance(text.positive, text.negative, r.doCfg ? r.guidance : undefined, pag)
  let controlnet
  if (parts.controlnet && o.controlImage !== undefined) {
    const cond = await encodeImage(parts.vae, 'controlImage', o.controlImage, r.size, batch)
    controlnet = { model: parts.controlnet, cond: Tensor.cat(new Array<Tensor>(guidance.copies).fill(cond), 0), scale: r.controlnetScale }
  }
  return sanaRecipe({
    scheduler: parts.scheduler as FlowScheduler,
    steps: r.steps,
    start,
    guidance,
    timestepScale: parts.timestepScale,
    controlnet,
    loraScale: r.loraScale,
  })
}
