/**
 * Image post-processing of the Sana pipelines, on float32 planes in JS (images are small next to the
 * models): resolution binning (diffusers' `PixArtImageProcessor.classify_height_width_bin` and the
 * `ASPECT_RATIO_*_BIN` tables), `resize_and_crop_tensor`, and `VaeImageProcessor.postprocess`'s
 * denormalisation and uint8 quantisation.
 */
import { invalidArgument } from './errors'

/** A batch of images as float32 planes, row-major NCHW: what `Tensor.toFloat32Array()` gives for `[N, C, H, W]`. */
export interface PlanarImage {
  /** `N·C·H·W` values. */
  data: Float32Array
  /** `[N, C, H, W]`. */
  shape: readonly [number, number, number, number]
}

/** Height × width in pixels. */
export interface ImageSize {
  /** Rows, a positive integer. */
  height: number
  /** Columns, a positive integer. */
  width: number
}

/**
 * An aspect-ratio bin table: keys are aspect ratios h/w written as in diffusers (`"0.25"` … `"4.0"`), values
 * `[height, width]`. Order matters (the first nearest key wins); every key contains a `.`, so JS keeps
 * insertion order.
 */
export type AspectRatioTable = Readonly<Record<string, readonly [height: number, width: number]>>

// ---------------------------------------------------------------------------------------------------
// Aspect-ratio bins (diffusers: pixart_alpha ASPECT_RATIO_512/1024_BIN, pixart_sigma 2048, sana 4096)
// ---------------------------------------------------------------------------------------------------

/** Bins of ≈512² pixels, multiples of 32 (diffusers `ASPECT_RATIO_512_BIN`); for `sample_size` 16. */
export const ASPECT_RATIO_512_BIN: AspectRatioTable = Object.freeze({
  '0.25': [256, 1024], '0.28': [256, 928], '0.32': [288, 896], '0.33': [288, 864], '0.35': [288, 832],
  '0.4': [320, 800], '0.42': [320, 768], '0.48': [352, 736], '0.5': [352, 704], '0.52': [352, 672],
  '0.57': [384, 672], '0.6': [384, 640], '0.68': [416, 608], '0.72': [416, 576], '0.78': [448, 576],
  '0.82': [448, 544], '0.88': [480, 544], '0.94': [480, 512], '1.0': [512, 512], '1.07': [512, 480],
  '1.13': [544, 480], '1.21': [544, 448], '1.29': [576, 448], '1.38': [576, 416], '1.46': [608, 416],
  '1.67': [640, 384], '1.75': [672, 384], '2.0': [704, 352], '2.09': [736, 352], '2.4': [768, 320],
  '2.5': [800, 320], '3.0': [864, 288], '4.0': [1024, 256],
})

/**
 * Bins of ≈1024² pixels, multiples of 64 (diffusers `ASPECT_RATIO_1024_BIN`); for `sample_size` 32.
 * @example ASPECT_RATIO_1024_BIN['0.72'] // [832, 1152]
 */
export const ASPECT_RATIO_1024_BIN: AspectRatioTable = Object.freeze({
  '0.25': [512, 2048], '0.28': [512, 1856], '0.32': [576, 1792], '0.33': [576, 1728], '0.35': [576, 1664],
  '0.4': [640, 1600], '0.42': [640, 1536], '0.48': [704, 1472], '0.5': [704, 1408], '0.52': [704, 1344],
  '0.57': [768, 1344], '0.6': [768, 1280], '0.68': [832, 1216], '0.72': [832, 1152], '0.78': [896, 1152],
  '0.82': [896, 1088], '0.88': [960, 1088], '0.94': [960, 1024], '1.0': [1024, 1024], '1.07': [1024, 960],
  '1.13': [1088, 960], '1.21': [1088, 896], '1.29': [1152, 896], '1.38': [1152, 832], '1.46': [1216, 832],
  '1.67': [1280, 768], '1.75': [1344, 768], '2.0': [1408, 704], '2.09': [1472, 704], '2.4': [1536, 640],
  '2.5': [1600, 640], '3.0': [1728, 576], '4.0': [2048, 512],
})

/** Bins of ≈2048² pixels, multiples of 128 (diffusers `ASPECT_RATIO_2048_BIN`); for `sample_size` 64. */
export const ASPECT_RATIO_2048_BIN: AspectRatioTable = Object.freeze({
  '0.25': [1024, 4096], '0.26': [1024, 3968], '0.27': [1024, 3840], '0.28': [1024, 3712],
  '0.32': [1152, 3584], '0.33': [1152, 3456], '0.35': [1152, 3328], '0.4': [1280, 3200],
  '0.42': [1280, 3072], '0.48': [1408, 2944], '0.5': [1408, 2816], '0.52': [1408, 2688],
  '0.57': [1536, 2688], '0.6': [1536, 2560], '0.68': [1664, 2432], '0.72': [1664, 2304],
  '0.78': [1792, 2304], '0.82': [1792, 2176], '0.88': [1920, 2176], '0.94': [1920, 2048],
  '1.0': [2048, 2048], '1.07': [2048, 1920], '1.13': [2176, 1920], '1.21': [2176, 1792],
  '1.29': [2304, 1792], '1.38': [2304, 1664], '1.46': [2432, 1664], '1.67': [2560, 1536],
  '1.75': [2688, 1536], '2.0': [2816, 1408], '2.09': [2944, 1408], '2.4': [3072, 1280],
  '2.5': [3200, 1280], '2.89': [3328, 1152], '3.0': [3456, 1152], '3.11': [3584, 1152],
  '3.62': [3712, 1024], '3.75': [3840, 1024], '3.88': [3968, 1024], '4.0': [4096, 1024],
})

/** Bins of ≈4096² pixels, multiples of 256 (diffusers `ASPECT_RATIO_4096_BIN`); for `sample_size` 128. */
export const ASPECT_RATIO_4096_BIN: AspectRatioTable = Object.freeze({
  '0.25': [2048, 8192], '0.26': [2048, 7936], '0.27': [2048, 7680], '0.28': [2048, 7424],
  '0.32': [2304, 7168], '0.33': [2304, 6912], '0.35': [2304, 6656], '0.4': [2560, 6400],
  '0.42': [2560, 6144], '0.48': [2816, 5888], '0.5': [2816, 5632], '0.52': [2816, 5376],
  '0.57': [3072, 5376], '0.6': [3072, 5120], '0.68': [3328, 4864], '0.72': [3328, 4608],
  '0.78': [3584, 4608], '0.82': [3584, 4352], '0.88': [3840, 4352], '0.94': [3840, 4096],
  '1.0': [4096, 4096], '1.07': [4096, 3840], '1.13': [4352, 3840], '1.21': [4352, 3584],
  '1.29': [4608, 3584], '1.38': [4608, 3328], '1.46': [4864, 3328], '1.67': [5120, 3072],
  '1.75': [5376, 3072], '2.0': [5632, 2816], '2.09': [5888, 2816], '2.4': [6144, 2560],
  '2.5': [6400, 2560], '2.89': [6656, 2304], '3.0': [6912, 2304], '3.11': [7168, 2304],
  '3.62': [7424, 2048], '3.75': [7680, 2048], '3.88': [7936, 2048], '4.0': [8192, 2048],
})

const TABLE_BY_SAMPLE_SIZE: ReadonlyMap<number, AspectRatioTable> = new Map([
  [16, ASPECT_RATIO_512_BIN],
  [32, ASPECT_RATIO_1024_BIN],
  [64, ASPECT_RATIO_2048_BIN],
  [128, ASPECT_RATIO_4096_BIN],
])

/**
 * The bin table SanaPipeline uses for a transformer `sample_size` (latent side): 16 → 512, 32 → 1024,
 * 64 → 2048, 128 → 4096. Other sizes throw `SANA_INVALID_ARGUMENT`, as diffusers raises "Invalid sample size".
 * @example aspectRatioTableFor(transformerConfig.sample_size) === ASPECT_RATIO_1024_BIN // for sample_size 32
 */
export function aspectRatioTableFor(sampleSize: number): AspectRatioTable {
  const table = TABLE_BY_SAMPLE_SIZE.get(sampleSize)
  if (!table) throw invalidArgument('sampleSize', 'one of 16, 32, 64 or 128', sampleSize)
  return table
}

/**
 * The bin for a requested size: the first key of `table` (in table order) whose value as a number is nearest
 * to height/width; returns that bin's size.
 * @example classifyHeightWidthBin(320, 448, ASPECT_RATIO_1024_BIN) // { height: 832, width: 1152 }
 */
export function classifyHeightWidthBin(height: number, width: number, table: AspectRatioTable): ImageSize {
  checkDim('height', height)
  checkDim('width', width)
  const ar = height / width
  let best: readonly [number, number] | undefined
  let bestDist = Infinity
  for (const [key, size] of Object.entries(table)) {
    const dist = Math.abs(Number.parseFloat(key) - ar)
    if (dist < bestDist) {
      bestDist = dist
      best = size
    }
  }
  if (!best) throw invalidArgument('table', 'a non-empty aspect-ratio table', table)
  return { height: Math.trunc(best[0]), width: Math.trunc(best[1]) }
}

// ---------------------------------------------------------------------------------------------------
// Resize and crop
// ---------------------------------------------------------------------------------------------------

function checkDim(name: string, v: unknown): asserts v is number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw invalidArgument(name, 'a positive integer', v)
}

function checkImage(image: PlanarImage): void {
  const shape = image?.shape
  if (!Array.isArray(shape) || shape.length !== 4 || shape.some((d) => !Number.isInteger(d) || d < 1)) {
    throw invalidArgument('image.shape', '[N, C, H, W] of positive integers', shape)
  }
  if (!(image.data instanceof Float32Array) || image.data.length !== shape[0] * shape[1] * shape[2] * shape[3]) {
    throw invalidArgument('image.data', `a Float32Array of ${shape.join('·')} values`, image.data)
  }
}

/**
 * Source taps along one axis for bilinear resizing with align_corners=False: PyTorch's
 * `area_pixel_compute_source_index` + `guard_index_and_lambda` in float32. The source index
 * `scale·(o + ½) − ½` is rounded once, as the compiled CPU kernel does it (a fused multiply-add); rounding
 * the product first moves some taps by an ulp, which the fixtures show as errors of ~4e-6.
 */
function linearTaps(inSize: number, outSize: number): { i0: Int32Array; i1: Int32Array; w0: Float32Array; w1: Float32Array } {
  const f = Math.fround
  const i0 = new Int32Array(outSize)
  const i1 = new Int32Array(outSize)
  const w0 = new Float32Array(outSize)
  const w1 = new Float32Array(outSize)
  const scale = f(inSize / outSize)
  for (let o = 0; o < outSize; o++) {
    if (inSize === outSize) {
      i0[o] = i1[o] = o
      w0[o] = 1
      continue
    }
    const src = Math.max(0, f(scale * (o + 0.5) - 0.5)) // fma: the float32 product is exact in float64
    const idx = Math.min(Math.floor(src), inSize - 1)
    const lambda = Math.min(Math.max(f(src - idx), 0), 1)
    i0[o] = idx
    i1[o] = idx < inSize - 1 ? idx + 1 : idx
    w1[o] = lambda
    w0[o] = f(1 - lambda)
  }
  return { i0, i1, w0, w1 }
}

/**
 * Bilinear resize, `F.interpolate(x, size, mode="bilinear", align_corners=False, antialias=False)`: each output
 * pixel blends the 2×2 nearest source pixels (no low-pass filter when shrinking). Float32 throughout, with the
 * weights and accumulation order of PyTorch's CPU kernel (w00·x00 + w01·x01 + w10·x10 + w11·x11, fused);
 * results agree with torch to about one float32 ulp.
 */
function resizeBilinear(image: PlanarImage, size: ImageSize): PlanarImage {
  const [n, c, h, w] = image.shape
  const { height: oh, width: ow } = size
  const rows = linearTaps(h, oh)
  const cols = linearTaps(w, ow)
  const out = new Float32Array(n * c * oh * ow)
  const f = Math.fround
  const src = image.data
  for (let plane = 0; plane < n * c; plane++) {
    const base = plane * h * w
    let o = plane * oh * ow
    for (let y = 0; y < oh; y++) {
      const r0 = base + rows.i0[y] * w
      const r1 = base + rows.i1[y] * w
      const h0 = rows.w0[y]
      const h1 = rows.w1[y]
      for (let x = 0; x < ow; x++) {
        const a = cols.i0[x]
        const b = cols.i1[x]
        const w0 = cols.w0[x]
        const w1 = cols.w1[x]
        // Products of two float32 values are exact in float64, so f(p·x + acc) is one fused multiply-add.
        let acc = f(f(h0 * w0) * src[r0 + a])
        acc = f(f(h0 * w1) * src[r0 + b] + acc)
        acc = f(f(h1 * w0) * src[r1 + a] + acc)
        out[o++] = f(h1 * w1) * src[r1 + b] + acc
      }
    }
  }
  return { data: out, shape: [n, c, oh, ow] }
}

/** Copy the `size` window at (top, left) out of every plane. */
function crop(image: PlanarImage, top: number, left: number, size: ImageSize): PlanarImage {
  const [n, c, h, w] = image.shape
  const { height: oh, width: ow } = size
  const out = new Float32Array(n * c * oh * ow)
  for (let plane = 0; plane < n * c; plane++) {
    for (let y = 0; y < oh; y++) {
      const from = plane * h * w + (top + y) * w + left
      out.set(image.data.subarray(from, from + ow), (plane * oh + y) * ow)
    }
  }
  return { data: out, shape: [n, c, oh, ow] }
}

/**
 * Resize to cover `size` and center-crop to it, like diffusers' `PixArtImageProcessor.resize_and_crop_tensor`
 * (used after decoding at the binned size): ratio = max(h'/h, w'/w); bilinear resize (align_corners=False,
 * no antialias) to (int(h·ratio), int(w·ratio)); crop at top = (rh − h')//2, left = (rw − w')//2.
 * Returns `image` itself when it already has that size.
 *
 * One deliberate difference: the output always has exactly `size`. In diffusers the truncation `int(h·ratio)`
 * can fall one pixel short of h' (h·(h'/h) = 249.999…), and the crop then starts at index −1, so Python slicing
 * returns a single row or column (e.g. 250×170 from an 1216×832 bin comes back 1 pixel tall). Here the resized
 * side is never smaller than the requested one; whenever diffusers' output has the right size, this is identical.
 *
 * @example resizeAndCropTensor(decoded, { height: 320, width: 448 }) // decoded: [1, 3, 832, 1152]
 */
export function resizeAndCropTensor(image: PlanarImage, size: ImageSize): PlanarImage {
  checkImage(image)
  checkDim('height', size?.height)
  checkDim('width', size?.width)
  const [, , h, w] = image.shape
  if (h === size.height && w === size.width) return image
  const ratio = Math.max(size.height / h, size.width / w)
  const resized = {
    height: Math.max(Math.trunc(h * ratio), size.height),
    width: Math.max(Math.trunc(w * ratio), size.width),
  }
  const top = Math.floor((resized.height - size.height) / 2)
  const left = Math.floor((resized.width - size.width) / 2)
  return crop(resizeBilinear(image, resized), top, left, size)
}

// ---------------------------------------------------------------------------------------------------
// Denormalise and quantise
// ---------------------------------------------------------------------------------------------------

/**
 * VAE output (nominally [−1, 1]) to [0, 1]: `(x·0.5 + 0.5).clamp(0, 1)` (NaN stays NaN, as in torch).
 * This is diffusers' `output_type="pt"` image.
 * @example const pt = denormalize(decoded)
 */
export function denormalize(image: PlanarImage): PlanarImage {
  checkImage(image)
  const out = new Float32Array(image.data.length)
  for (let i = 0; i < out.length; i++) {
    const v = image.data[i] * 0.5 + 0.5
    out[i] = v < 0 ? 0 : v > 1 ? 1 : v
  }
  return { data: out, shape: image.shape }
}

/** numpy's `round`: half to even. */
function roundHalfEven(v: number): number {
  const r = Math.round(v)
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r
}

/**
 * One image of a denormalised RGB batch as interleaved 8-bit RGB (HWC), like diffusers' `numpy_to_pil`:
 * `round(x·255)` in float32 with numpy's half-to-even rounding (NaN → 0).
 * @param image a [0, 1] batch with 3 channels, e.g. from {@link denormalize}.
 * @param index which image of the batch. Defaults to 0.
 * @example const rgb = toRgb8(denormalize(decoded)) // Uint8Array of H·W·3
 */
export function toRgb8(image: PlanarImage, index = 0): Uint8Array {
  checkImage(image)
  const [n, c, h, w] = image.shape
  if (c !== 3) throw invalidArgument('image.shape', '3 channels (RGB)', image.shape)
  if (!Number.isInteger(index) || index < 0 || index >= n) throw invalidArgument('index', `an integer from 0 to ${n - 1}`, index)
  const plane = h * w
  const base = index * 3 * plane
  const out = new Uint8Array(plane * 3)
  for (let p = 0; p < plane; p++) {
    for (let ch = 0; ch < 3; ch++) {
      const v = roundHalfEven(Math.fround(image.data[base + ch * plane + p] * 255))
      out[p * 3 + ch] = Number.isNaN(v) ? 0 : v < 0 ? 0 : v > 255 ? 255 : v
    }
  }
  return out
}
