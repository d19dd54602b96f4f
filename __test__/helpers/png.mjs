// A small, strict PNG reader for tests: 8-bit RGB (colour type 2), non-interlaced, all five row filters,
// CRC-checked chunks, and tEXt / zTXt / iTXt text. Independent of the encoder in src/png.ts.
import { readFileSync } from 'node:fs'
import { crc32, inflateSync } from 'node:zlib'

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]

/** Split a PNG into chunks [{ type, data }], checking the signature and every CRC. */
export function pngChunks(bytes) {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (!SIGNATURE.every((b, i) => buf[i] === b)) throw new Error('not a PNG (bad signature)')
  const chunks = []
  let pos = 8
  while (pos < buf.length) {
    const length = buf.readUInt32BE(pos)
    const type = buf.toString('latin1', pos + 4, pos + 8)
    const data = buf.subarray(pos + 8, pos + 8 + length)
    const crc = buf.readUInt32BE(pos + 8 + length)
    if (crc32(data, crc32(buf.subarray(pos + 4, pos + 8))) !== crc) throw new Error(`bad CRC in ${type} chunk`)
    chunks.push({ type, data })
    pos += 12 + length
    if (type === 'IEND') break
  }
  if (chunks[0]?.type !== 'IHDR' || chunks.at(-1)?.type !== 'IEND') throw new Error('missing IHDR or IEND')
  return chunks
}

function paeth(a, b, c) {
  const p = a + b - c
  const pa = Math.abs(p - a)
  const pb = Math.abs(p - b)
  const pc = Math.abs(p - c)
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c
}

function readText(type, data) {
  const nul = data.indexOf(0)
  const keyword = data.toString('latin1', 0, nul)
  if (type === 'tEXt') return [keyword, data.toString('latin1', nul + 1)]
  if (type === 'zTXt') return [keyword, inflateSync(data.subarray(nul + 2)).toString('latin1')]
  // iTXt: keyword \0 flag method language \0 translated \0 text
  const compressed = data[nul + 1] === 1
  const langEnd = data.indexOf(0, nul + 3)
  const transEnd = data.indexOf(0, langEnd + 1)
  const text = data.subarray(transEnd + 1)
  return [keyword, (compressed ? inflateSync(text) : text).toString('utf8')]
}

/** Decode an 8-bit RGB PNG: { width, height, data (RGB Uint8Array, row-major), text: { keyword: value }, chunkTypes }. */
export function readPng(bytes) {
  const chunks = pngChunks(bytes)
  const ihdr = chunks[0].data
  const width = ihdr.readUInt32BE(0)
  const height = ihdr.readUInt32BE(4)
  const [bitDepth, colorType, compression, filter, interlace] = ihdr.subarray(8, 13)
  if (bitDepth !== 8 || colorType !== 2 || compression !== 0 || filter !== 0 || interlace !== 0) {
    throw new Error(`unsupported PNG: bit depth ${bitDepth}, colour type ${colorType}, interlace ${interlace}`)
  }
  const raw = inflateSync(Buffer.concat(chunks.filter((c) => c.type === 'IDAT').map((c) => c.data)))
  const bpp = 3
  const stride = width * bpp
  if (raw.length !== height * (stride + 1)) throw new Error('IDAT size does not match the image size')
  const out = new Uint8Array(height * stride)
  for (let y = 0; y < height; y++) {
    const type = raw[y * (stride + 1)]
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1))
    const row = y * stride
    for (let i = 0; i < stride; i++) {
      const a = i >= bpp ? out[row + i - bpp] : 0
      const b = y > 0 ? out[row - stride + i] : 0
      const c = i >= bpp && y > 0 ? out[row - stride + i - bpp] : 0
      const pred = [0, a, b, (a + b) >> 1, paeth(a, b, c)][type]
      if (pred === undefined) throw new Error(`bad filter type ${type} on row ${y}`)
      out[row + i] = (line[i] + pred) & 0xff
    }
  }
  const text = {}
  for (const c of chunks) if (c.type === 'tEXt' || c.type === 'zTXt' || c.type === 'iTXt') {
    const [k, v] = readText(c.type, c.data)
    text[k] = v
  }
  return { width, height, data: out, text, chunkTypes: chunks.map((c) => c.type) }
}

/**
 * Assert that a generated SanaImage has the reference PNG's size and pixels within `maxDiff` per uint8 channel
 * (the fixtures' `uint8_max_diff`). Returns the decoded reference.
 */
export function assertPngMatches(t, img, refPath, maxDiff, what) {
  const ref = readPng(readFileSync(refPath))
  t.is(img.width, ref.width, `${what} PNG width`)
  t.is(img.height, ref.height, `${what} PNG height`)
  let worst = 0
  for (let i = 0; i < ref.data.length; i++) worst = Math.max(worst, Math.abs(img.data[i] - ref.data[i]))
  t.log(`${what} PNG: max uint8 diff ${worst} (allowed ${maxDiff})`)
  t.true(worst <= maxDiff, `${what} PNG max diff ${worst}`)
  return ref
}
