/**
 * Live previews: decode a step's x0 estimate into a small image. The latents are area-downscaled first, so the
 * VAE decodes fewer pixels (a 1024² image previews at 512² for about a quarter of the decode cost).
 */
import type { AutoencoderDC } from './components'
import { invalidArgument } from './errors'
import { SanaImage } from './png'
import { denormalize } from './postprocess'
import { Tensor } from './tensor'

/** Options of a preview decode. */
export interface PreviewOptions {
  /** Longest side in pixels; the latents are downscaled by the smallest integer factor that fits. Defaults to 512. */
  maxSize?: number
  /** Which image of the batch. Defaults to 0. */
  index?: number
}

/**
 * Mean over k×k blocks of one image's latents [C, h, w] → [1, C, ⌈h/k⌉, ⌈w/k⌉] (edge blocks average what they
 * cover, like `F.adaptive_avg_pool2d`'s border cells).
 */
export function areaDownscale(data: Float32Array, c: number, h: number, w: number, k: number): Tensor {
  const oh = Math.ceil(h / k)
  const ow = Math.ceil(w / k)
  const out = new Float32Array(c * oh * ow)
  for (let ch = 0; ch < c; ch++) {
    for (let i = 0; i < oh; i++) {
      for (let j = 0; j < ow; j++) {
        let sum = 0
        let n = 0
        for (let y = i * k; y < Math.min(h, (i + 1) * k); y++) {
          for (let x = j * k; x < Math.min(w, (j + 1) * k); x++, n++) sum += data[(ch * h + y) * w + x]
        }
        out[(ch * oh + i) * ow + j] = sum / n
      }
    }
  }
  return Tensor.fromFloat32Array(out, [1, c, oh, ow])
}

/**
 * Decode latents (diffusion space, as the scheduler sees them) into a preview image.
 * @example const img = await decodePreview(pipe.vae, event.denoised, { maxSize: 256 })
 */
export async function decodePreview(vae: AutoencoderDC, latents: Tensor, options: PreviewOptions = {}): Promise<SanaImage> {
  const { maxSize = 512, index = 0 } = options
  if (!Number.isInteger(maxSize) || maxSize < 32) throw invalidArgument('maxSize', 'an integer ≥ 32', maxSize)
  const [b, c, h, w] = latents.shape
  if (!Number.isInteger(index) || index < 0 || index >= b) throw invalidArgument('index', `an integer from 0 to ${b - 1}`, index)
  const k = Math.max(1, Math.ceil((Math.max(h, w) * 32) / maxSize))
  const all = await latents.toFloat32Array()
  const one = all.subarray(index * c * h * w, (index + 1) * c * h * w)
  const small = areaDownscale(one, c, h, w, k)
  const z = Tensor.linearCombination([small], [1 / vae.config.scalingFactor])
  const raw = await vae.decode(z)
  const image = denormalize({ data: await raw.toFloat32Array(), shape: raw.shape as [number, number, number, number] })
  return SanaImage.fromPlanar(image, { metadata: { software: 'sana-node (preview)' } })
}
