/**
 * Generated images: {@link SanaImage} (8-bit RGB pixels), a dependency-free PNG encoder that stores the
 * generation parameters as text chunks (`tEXt`, or `iTXt` for text outside Latin-1), and JPEG/WebP through sharp.
 */
import { writeFile } from 'node:fs/promises'
import { extname } from 'node:path'
import { crc32, deflateSync } from 'node:zlib'

import { invalidArgument, io } from './errors'
import { type PlanarImage, toRgb8 } from './postprocess'

/**
 * Text metadata for a PNG: keyword → value, written in insertion order. Keywords are 1–79 Latin-1 printable
 * characters without leading, trailing or double spaces (PNG's rule), e.g. `prompt`, `seed`, `steps`, `model`.
 * Values are converted with `String()`.
 * @example const meta: PngMetadata = { prompt: 'a cat', seed: 42, steps: 20, model: 'Sana_600M_1024px' }
 */
export type PngMetadata = Readonly<Record<string, string | number | boolean>>

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
// Latin-1 printable: the characters tEXt may hold (plus \n in values).
const LATIN1_KEYWORD = /^[\x20-\x7e\xa1-\xff]{1,79}$/
const LATIN1_TEXT = /^[\n\x20-\x7e\xa0-\xff]*$/

/** One chunk: length, type, data, CRC-32 over type and data. */
function chunk(type: string, data: Uint8Array): Buffer {
  const head = Buffer.alloc(8)
  head.writeUInt32BE(data.length, 0)
  head.write(type, 4, 'latin1')
  const crc = Buffer.alloc(4)
  crc.writeUInt32BE(crc32(data, crc32(head.subarray(4))), 0)
  return Buffer.concat([head, data, crc])
}

/** A `tEXt` chunk when the value is Latin-1, else an uncompressed `iTXt` chunk (UTF-8). */
function textChunk(keyword: string, value: string | number | boolean): Buffer {
  if (!LATIN1_KEYWORD.test(keyword) || keyword.startsWith(' ') || keyword.endsWith(' ') || keyword.includes('  ')) {
    throw invalidArgument('metadata keyword', '1–79 Latin-1 printable characters without leading, trailing or double spaces', keyword)
  }
  const text = String(value)
  if (text.includes('\0')) throw invalidArgument(`metadata.${keyword}`, 'text without NUL characters', text)
  const key = Buffer.from(keyword, 'latin1')
  if (LATIN1_TEXT.test(text)) return chunk('tEXt', Buffer.concat([key, Buffer.from([0]), Buffer.from(text, 'latin1')]))
  // iTXt: keyword \0, compression flag 0, method 0, language tag "" \0, translated keyword "" \0, UTF-8 text.
  return chunk('iTXt', Buffer.concat([key, Buffer.from([0, 0, 0, 0, 0]), Buffer.from(text, 'utf8')]))
}

/**
 * Encode 8-bit RGB pixels (row-major, `width·height·3` bytes) as a PNG: IHDR, text chunks, one IDAT (filter
 * type 0 on every row, zlib-deflated), IEND.
 */
function encodePng(width: number, height: number, rgb: Uint8Array, metadata: PngMetadata): Buffer {
  const ihdr = Buffer.alloc(13)
  ihdr.writeUInt32BE(width, 0)
  ihdr.writeUInt32BE(height, 4)
  ihdr[8] = 8 // bit depth
  ihdr[9] = 2 // colour type: truecolour (RGB)
  // compression 0, filter method 0, no interlace: the three remaining bytes stay 0.
  const stride = width * 3
  const raw = Buffer.alloc(height * (stride + 1)) // each row: filter byte 0, then the pixels
  for (let y = 0; y < height; y++) raw.set(rgb.subarray(y * stride, (y + 1) * stride), y * (stride + 1) + 1)
  return Buffer.concat([
    SIGNATURE,
    chunk('IHDR', ihdr),
    ...Object.entries(metadata).map(([k, v]) => textChunk(k, v)),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', new Uint8Array(0)),
  ])
}

/** The file formats {@link SanaImage.save} writes. */
export type ImageFormat = 'png' | 'jpeg' | 'webp'

/** Extensions (lower case) and the format each means. */
const FORMAT_OF_EXTENSION: Readonly<Record<string, ImageFormat>> = { '.png': 'png', '.jpg': 'jpeg', '.jpeg': 'jpeg', '.webp': 'webp' }

/**
 * The format a file name asks for, by its extension (`.png`, `.jpg`/`.jpeg`, `.webp`, any case); throws
 * `SANA_INVALID_ARGUMENT` for any other, rather than writing bytes the name does not promise.
 * @example imageFormatOf('out/cat.JPG') // 'jpeg'
 */
export function imageFormatOf(path: string): ImageFormat {
  const format = FORMAT_OF_EXTENSION[extname(path).toLowerCase()]
  if (!format) throw invalidArgument('path', 'a file name ending in .png, .jpg, .jpeg or .webp', path)
  return format
}

/**
 * Options of {@link SanaImage.encode}.
 * @example image.encode('webp', { quality: 90 })
 */
export interface ImageEncodeOptions {
  /** JPEG/WebP quality, 1–100 (ignored for PNG, which is lossless). Defaults to 95. */
  quality?: number
  /** PNG text chunks added to the image's own metadata (JPEG/WebP carry none). Defaults to none. */
  metadata?: PngMetadata
}

/** Constructor fields of {@link SanaImage}. */
export interface SanaImageInit {
  /** Width in pixels. */
  width: number
  /** Height in pixels. */
  height: number
  /** Interleaved 8-bit RGB, row-major: `width·height·3` bytes (not copied). */
  data: Uint8Array
  /** Text metadata written into the PNG by {@link SanaImage.toPng} and {@link SanaImage.save}. Defaults to none. */
  metadata?: PngMetadata
}

/**
 * A generated image: 8-bit RGB pixels plus the text metadata (prompt, seed, …) its PNG will carry.
 *
 * @example
 * const image = SanaImage.fromPlanar(pt, { metadata: { prompt, seed: 42, steps: 20, model: 'Sana_1600M_1024px' } })
 * await image.save('cat.png')
 */
export class SanaImage {
  /** Width in pixels. */
  readonly width: number
  /** Height in pixels. */
  readonly height: number
  /** Interleaved 8-bit RGB, row-major (`width·height·3` bytes). */
  readonly data: Uint8Array
  /** Text metadata for the PNG. */
  readonly metadata: PngMetadata

  /**
   * Wrap RGB bytes; throws `SANA_INVALID_ARGUMENT` unless `data` holds exactly `width·height·3` bytes.
   * @example new SanaImage({ width: 2, height: 1, data: Uint8Array.of(255, 0, 0, 0, 0, 255) })
   */
  constructor(init: SanaImageInit) {
    const { width, height, data, metadata = {} } = init ?? ({} as SanaImageInit)
    for (const [name, v] of [['width', width], ['height', height]] as const) {
      if (!Number.isInteger(v) || v < 1 || v > 0x7fffffff) throw invalidArgument(name, 'a positive integer', v)
    }
    if (!(data instanceof Uint8Array) || data.length !== width * height * 3) {
      throw invalidArgument('data', `a Uint8Array of ${width}·${height}·3 RGB bytes`, data)
    }
    if (metadata === null || typeof metadata !== 'object') throw invalidArgument('metadata', 'an object', metadata)
    this.width = width
    this.height = height
    this.data = data
    this.metadata = Object.freeze({ ...metadata })
  }

  /**
   * Image `index` of a [0, 1] RGB batch (diffusers' `output_type="pt"` image, e.g. from `denormalize`),
   * quantised like diffusers' PIL output: round(x·255), half to even.
   * @param options.index which image of the batch. Defaults to 0.
   * @param options.metadata PNG text metadata. Defaults to none.
   */
  static fromPlanar(image: PlanarImage, options: { index?: number; metadata?: PngMetadata } = {}): SanaImage {
    const [, , height, width] = image.shape
    return new SanaImage({ width, height, data: toRgb8(image, options.index ?? 0), metadata: options.metadata })
  }

  /**
   * The PNG file: 8-bit RGB with `this.metadata` and then `extra` as text chunks (a key in `extra` replaces the
   * one in `this.metadata`).
   * @example writeFileSync('out.png', image.toPng({ note: 'draft' }))
   */
  toPng(extra: PngMetadata = {}): Buffer {
    return encodePng(this.width, this.height, this.data, { ...this.metadata, ...extra })
  }

  /**
   * The image file in `format`: PNG by the encoder above (with the text metadata), JPEG or WebP through sharp
   * (pixels only: those formats get no text metadata; JPEG keeps full-resolution colour, 4:4:4).
   * @example const jpeg = await image.encode('jpeg', { quality: 90 })
   */
  async encode(format: ImageFormat, options: ImageEncodeOptions = {}): Promise<Buffer> {
    const { quality = 95, metadata = {} } = options ?? {}
    if (!Number.isInteger(quality) || quality < 1 || quality > 100) throw invalidArgument('quality', 'an integer from 1 to 100', quality)
    if (format === 'png') return this.toPng(metadata)
    if (format !== 'jpeg' && format !== 'webp') throw invalidArgument('format', "'png', 'jpeg' or 'webp'", format)
    // Loaded on first use: PNG-only callers never load libvips.
    const { default: sharp } = await import('sharp')
    const raw = sharp(this.data, { raw: { width: this.width, height: this.height, channels: 3 } })
    return format === 'jpeg' ? raw.jpeg({ quality, chromaSubsampling: '4:4:4' }).toBuffer() : raw.webp({ quality }).toBuffer()
  }

  /**
   * Write the image to `path`, replacing any existing file, in the format its extension names (`.png` with
   * `this.metadata` and then `extra` as text chunks; `.jpg`/`.jpeg`, `.webp` at quality 95). Any other extension
   * is `SANA_INVALID_ARGUMENT`; a failed write is `SANA_IO_ERROR`.
   * @example await image.save('out/cat.png'); await image.save('out/cat.webp')
   */
  async save(path: string, extra: PngMetadata = {}): Promise<void> {
    if (typeof path !== 'string' || path.length === 0) throw invalidArgument('path', 'a file path', path)
    const bytes = await this.encode(imageFormatOf(path), { metadata: extra })
    await io(`Could not write ${path}`, () => writeFile(path, bytes))
  }
}
