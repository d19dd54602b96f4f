// Minimal safetensors reader/writer for tests: 8-byte LE header length, JSON header, raw LE data.
import { readFileSync, writeFileSync } from 'node:fs'

const BYTES = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, U8: 1, I8: 1, BOOL: 1 }

/** Parse a safetensors file: { header: {name: {dtype, shape, data_offsets}}, dataStart, buf }. */
export function readSafetensors(path) {
  const buf = readFileSync(path)
  const n = Number(buf.readBigUInt64LE(0))
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'))
  delete header.__metadata__
  return { header, dataStart: 8 + n, buf }
}

/** Raw bytes of one tensor. */
export function tensorBytes(file, name) {
  const info = file.header[name]
  const [b, e] = info.data_offsets
  return file.buf.subarray(file.dataStart + b, file.dataStart + e)
}

/** Decode a tensor to Float32Array (F32, BF16, F16 exact) or BigInt64Array (I64). */
export function decodeTensor(file, name) {
  const info = file.header[name]
  const bytes = tensorBytes(file, name)
  const n = info.shape.reduce((a, b) => a * b, 1)
  if (info.dtype === 'F32') return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + 4 * n))
  if (info.dtype === 'I64') return new BigInt64Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + 8 * n))
  if (info.dtype === 'BF16') {
    const out = new Float32Array(n)
    const u32 = new Uint32Array(out.buffer)
    for (let i = 0; i < n; i++) u32[i] = bytes.readUInt16LE(2 * i) << 16
    return out
  }
  if (info.dtype === 'F16') {
    const out = new Float32Array(n)
    for (let i = 0; i < n; i++) out[i] = f16ToF32(bytes.readUInt16LE(2 * i))
    return out
  }
  throw new Error(`decodeTensor: unsupported dtype ${info.dtype}`)
}

export function f16ToF32(h) {
  const s = h & 0x8000 ? -1 : 1
  const e = (h >> 10) & 0x1f
  const m = h & 0x3ff
  if (e === 0) return s * m * 2 ** -24
  if (e === 31) return m ? NaN : s * Infinity
  return s * (1 + m / 1024) * 2 ** (e - 15)
}

/** float32 → float16 bits, round-to-nearest-even (normal range only; tests use small weights). */
export function f32ToF16(x) {
  const f = new Float32Array([x])
  const u = new Uint32Array(f.buffer)[0]
  const sign = (u >>> 16) & 0x8000
  const exp = ((u >>> 23) & 0xff) - 127 + 15
  let mant = u & 0x7fffff
  if (exp <= 0) {
    // subnormal half
    if (exp < -10) return sign
    mant |= 0x800000
    const shift = 14 - exp
    let h = mant >>> shift
    const rem = mant & ((1 << shift) - 1)
    const half = 1 << (shift - 1)
    if (rem > half || (rem === half && h & 1)) h++
    return sign | h
  }
  if (exp >= 31) return sign | 0x7c00
  let h = sign | (exp << 10) | (mant >>> 13)
  const rem = mant & 0x1fff
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++
  return h
}

/** float32 → bfloat16 bits, round-to-nearest-even. */
export function f32ToBf16(x) {
  const u = new Uint32Array(new Float32Array([x]).buffer)[0]
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff
}

/** Write a safetensors file from {name: {dtype, shape, bytes: Buffer}} (names sorted, like safetensors). */
export function writeSafetensors(path, tensors) {
  const names = Object.keys(tensors).sort()
  const header = {}
  let off = 0
  for (const name of names) {
    const t = tensors[name]
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + t.bytes.length] }
    off += t.bytes.length
  }
  let json = JSON.stringify(header)
  while ((8 + json.length) % 8) json += ' '
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)))
  writeFileSync(path, Buffer.concat([len, Buffer.from(json), ...names.map((n) => tensors[n].bytes)]))
}

/** All tensors of a file as {name: {dtype, shape, bytes}} (for rewriting in tests). */
export function tensorsOf(file) {
  const out = {}
  for (const [name, info] of Object.entries(file.header)) {
    out[name] = { dtype: info.dtype, shape: info.shape, bytes: Buffer.from(tensorBytes(file, name)) }
  }
  return out
}

export { BYTES }
