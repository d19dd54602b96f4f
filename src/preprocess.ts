/**
 * Image inputs: the inverse of `postprocess.ts`. Decodes what a user passes as an image (a file path, encoded
 * PNG/JPEG/WebP bytes, a {@link SanaImage} or a [0, 1] {@link Tensor}) and prepares it as diffusers'
 * `VaeImageProcessor.preprocess` does: RGB in [−1, 1] for the VAE, or a binarised one-channel mask.
 *
 * Decoding and resizing go through sharp (libvips). Sizes that are not multiples of 32 are resized like
 * `VaeImageProcessor`: to the requested size, or else down to the nearest multiple of 32 (no crop; Lanczos).
 */
import { readFile } from 'node:fs/promises'
import type { Sharp } from 'sharp'
import { SanaError, invalidArgument } from './errors'
import { SanaImage } from './png'
import type { ImageSize } from './postprocess'
import { Tensor } from './tensor'

/** What every image option accepts: a file path, encoded PNG/JPEG/WebP bytes, a SanaImage, or a Tensor [B,3,H,W] in [0,1]. */
export type ImageInput = string | Buffer | Uint8Array | SanaImage | Tensor

/** Interleaved 8-bit pixels. */
interface RawImage {
  data: Uint8Array
  width: number
  height: number
  channels: number
}

/** The VAE's spatial factor: image sizes are multiples of it. */
export const VAE_SCALE = 32

type SharpLib = typeof import('sharp').default
let sharpModule: SharpLib | undefined
/** sharp, loaded on first use so text-to-image never pays for libvips. */
export function sharp(): SharpLib {
  sharpModule ??= require('sharp') as SharpLib
  return sharpModule
}

function isImageInput(v: unknown): v is ImageInput {
  return typeof v === 'string' || v instanceof Uint8Array || v instanceof SanaImage || v instanceof Tensor
}

/** Check an image option's type up front (before any work); the pixels are read later. */
export function checkImageInput(name: string, v: unknown, { mask = false } = {}): asserts v is ImageInput {
  if (!isImageInput(v) || (typeof v === 'string' && v.length === 0)) {
    throw invalidArgument(name, 'a file path, a PNG/JPEG/WebP Buffer or Uint8Array, a SanaImage, or a Tensor [B, C, H, W] in [0, 1]', v)
  }
  if (v instanceof Tensor && (v.shape.length !== 4 || (!mask && v.shape[1] !== 3))) {
    throw invalidArgument(name, `a Tensor of shape [B, ${mask ? 'C' : 3}, H, W] (values in [0, 1])`, `shape [${v.shape}]`)
  }
}

/** Decode an encoded image (or read a file) into interleaved pixels, as PIL would see them (alpha dropped). */
async function decode(name: string, input: string | Uint8Array | SanaImage, keepGray: boolean): Promise<RawImage> {
  if (input instanceof SanaImage) return { data: input.data, width: input.width, height: input.height, channels: 3 }
  let bytes: Uint8Array
  if (typeof input === 'string') {
    try {
      bytes = await readFile(input)
    } catch (e) {
      const err = e as NodeJS.ErrnoException
      const code = err.code === 'ENOENT' ? 'SANA_NOT_FOUND' : 'SANA_IO_ERROR'
      throw new SanaError(code, `${name}: cannot read ${input}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`, { cause: e })
    }
  } else {
    bytes = input
  }
  try {
    let img: Sharp = sharp()(bytes, { failOn: 'error' }).removeAlpha()
    const meta = await img.metadata()
    if (!keepGray || (meta.channels ?? 3) > 2) img = img.toColourspace('srgb')
    const { data, info } = await img.raw().toBuffer({ resolveWithObject: true })
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height, channels: info.channels }
  } catch (e) {
    const msg = (e as Error).message
    if (/pixel limit/i.test(msg)) {
      throw new SanaError('SANA_INVALID_ARGUMENT', `${name}: the image is too large to decode (${msg})`, { cause: e })
    }
    throw new SanaError('SANA_INVALID_ARGUMENT', `${name}: not a decodable PNG, JPEG or WebP image (${msg})`, { cause: e })
  }
}

/** Resize interleaved pixels to exactly `size` (Lanczos, like PIL's default for VaeImageProcessor). */
async function resize(img: RawImage, size: ImageSize): Promise<RawImage> {
  if (img.width === size.width && img.height === size.height) return img
  const { data, info } = await sharp()(img.data, { raw: { width: img.width, height: img.height, channels: img.channels as 1 | 3 } })
    .resize(size.width, size.height, { fit: 'fill', kernel: 'lanczos3' })
    .raw()
    .toBuffer({ resolveWithObject: true })
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height, channels: info.channels }
}

/**
 * diffusers' `get_default_height_width`: the requested size, or the image's size rounded down to a multiple
 * of 32.
 */
export function defaultSize(width: number, height: number, requested: Partial<ImageSize>): ImageSize {
  const size = {
    height: requested.height ?? height - (height % VAE_SCALE),
    width: requested.width ?? width - (width % VAE_SCALE),
  }
  if (size.height < VAE_SCALE || size.width < VAE_SCALE) {
    throw invalidArgument('image', `an image of at least ${VAE_SCALE}×${VAE_SCALE} pixels`, `${width}×${height}`)
  }
  return size
}

/** The pixel size of an image input without preparing it. */
export async function imageSize(name: string, input: ImageInput): Promise<{ width: number; height: number }> {
  if (input instanceof Tensor) return { width: input.shape[3], height: input.shape[2] }
  if (input instanceof SanaImage) return { width: input.width, height: input.height }
  const img = await decode(name, input, false)
  return { width: img.width, height: img.height }
}

/**
 * An image input as the VAE takes it: float32 [B, 3, H, W] in [−1, 1], `x/255·2 − 1` exactly as
 * `VaeImageProcessor.preprocess` computes it (float32), resized to `size` first when it differs.
 * @example const x = await prepareImage('image', 'cat.png', { height: 1024, width: 1024 })
 */
export async function prepareImage(name: string, input: ImageInput, size: ImageSize): Promise<Tensor> {
  checkImageInput(name, input)
  const f = Math.fround
  if (input instanceof Tensor) {
    const [b, c, h, w] = input.shape
    if (c !== 3 || h !== size.height || w !== size.width) {
      throw invalidArgument(name, `a Tensor of shape [B, 3, ${size.height}, ${size.width}] (Tensors are not resized)`, `shape [${input.shape}]`)
    }
    const data = await input.toFloat32Array()
    const out = new Float32Array(data.length)
    for (let i = 0; i < data.length; i++) out[i] = f(f(2 * data[i]) - 1)
    return Tensor.fromFloat32Array(out, [b, 3, h, w])
  }
  const img = await resize(await decode(name, input, false), size)
  const plane = img.width * img.height
  const out = new Float32Array(3 * plane)
  for (let p = 0; p < plane; p++) {
    for (let ch = 0; ch < 3; ch++) out[ch * plane + p] = f(f(2 * f(img.data[p * 3 + ch] / 255)) - 1)
  }
  return Tensor.fromFloat32Array(out, [1, 3, img.height, img.width])
}

/** A binarised inpainting mask at pixel and latent resolution. */
export interface PreparedMask {
  /** [1, 1, H, W], 1 = repaint (diffusers' `mask_condition`). */
  pixels: Float32Array
  /** [1, 1, H/32, W/32]: nearest-neighbour downsampling, i.e. the top-left pixel of each 32×32 block. */
  latent: Tensor
}

/** PIL's `convert("L")`: ITU-R 601-2 luma in fixed point, L = (R·19595 + G·38470 + B·7471 + 2¹⁵) >> 16. */
function luma(img: RawImage): Uint8Array {
  if (img.channels === 1) return img.data
  const out = new Uint8Array(img.width * img.height)
  for (let p = 0; p < out.length; p++) {
    const i = p * img.channels
    out[p] = (img.data[i] * 19595 + img.data[i + 1] * 38470 + img.data[i + 2] * 7471 + 0x8000) >> 16
  }
  return out
}

/**
 * An inpainting mask (white = repaint) as diffusers' mask processor prepares it: grayscale, `x/255 ≥ 0.5` → 1,
 * else 0; then `F.interpolate(mask, (H/32, W/32))` (mode nearest). Its size must equal the image's.
 * @example const { latent } = await prepareMask('mask.png', { height: 256, width: 320 })
 */
export async function prepareMask(input: ImageInput, size: ImageSize): Promise<PreparedMask> {
  const name = 'maskImage'
  checkImageInput(name, input, { mask: true })
  let gray: Uint8Array | Float32Array
  let width: number
  let height: number
  if (input instanceof Tensor) {
    ;[, , height, width] = input.shape
    const data = await input.toFloat32Array()
    // A Tensor mask is [B, C, H, W] in [0, 1]; the first channel of the first item is used.
    gray = data.subarray(0, width * height)
  } else {
    const img = await decode(name, input, true)
    ;({ width, height } = img)
    gray = luma(img)
  }
  if (width !== size.width || height !== size.height) {
    throw invalidArgument(name, `a mask of the image's size ${size.width}×${size.height}`, `${width}×${height}`)
  }
  const f = Math.fround
  const scale = gray instanceof Uint8Array ? 255 : 1
  const pixels = new Float32Array(width * height)
  for (let i = 0; i < pixels.length; i++) pixels[i] = f(gray[i] / scale) >= 0.5 ? 1 : 0
  const h = height / VAE_SCALE
  const w = width / VAE_SCALE
  const latent = new Float32Array(h * w)
  for (let i = 0; i < h; i++) for (let j = 0; j < w; j++) latent[i * w + j] = pixels[i * VAE_SCALE * width + j * VAE_SCALE]
  return { pixels, latent: Tensor.fromFloat32Array(latent, [1, 1, h, w]) }
}
