// Access to the golden fixtures in ../shared/fixtures: the manifest (reference.json) and a minimal
// safetensors reader (8-byte LE header length, JSON header, raw little-endian data).
import { readFileSync, existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import path from 'node:path'

const here = path.dirname(fileURLToPath(import.meta.url))

/** Root of the shared fixtures (override with SANA_FIXTURES). */
export const FIXTURES = process.env.SANA_FIXTURES ?? path.resolve(here, '../../../shared/fixtures')
export const REFERENCE_DIR = path.join(FIXTURES, 'sana-tiny/reference')
export const fixturesAvailable = existsSync(path.join(REFERENCE_DIR, 'reference.json'))

let manifest
/** reference.json (strict JSON; non-finite numbers are the strings "Infinity", "-Infinity", "NaN"). */
export function loadManifest() {
  manifest ??= JSON.parse(readFileSync(path.join(REFERENCE_DIR, 'reference.json'), 'utf8'))
  return manifest
}

/** The manifest case called `name`. */
export function getCase(name) {
  const found = loadManifest().cases.find((c) => c.name === name)
  if (!found) throw new Error(`no case ${name} in reference.json`)
  return found
}

const DTYPES = {
  F32: { bytes: 4, read: (buf) => new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4) },
  I64: { bytes: 8, read: (buf) => new BigInt64Array(buf.buffer, buf.byteOffset, buf.byteLength / 8) },
  U8: { bytes: 1, read: (buf) => new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength) },
}

/**
 * Read a .safetensors file. Returns { keys, get(key) } where get returns { dtype, shape, data } with data a
 * Float32Array (F32), BigInt64Array (I64) or Uint8Array (U8) — copies, aligned and independent of the file.
 */
export function readSafetensors(file) {
  const bytes = readFileSync(file)
  const headerLen = Number(bytes.readBigUInt64LE(0))
  const header = JSON.parse(bytes.subarray(8, 8 + headerLen).toString('utf8'))
  const base = 8 + headerLen
  return {
    keys: Object.keys(header).filter((k) => k !== '__metadata__'),
    get(key) {
      const entry = header[key]
      if (!entry) throw new Error(`no tensor ${key} in ${file}`)
      const dtype = DTYPES[entry.dtype]
      if (!dtype) throw new Error(`unsupported dtype ${entry.dtype} for ${key}`)
      const [begin, end] = entry.data_offsets
      const count = entry.shape.reduce((a, b) => a * b, 1)
      if (end - begin !== count * dtype.bytes) throw new Error(`size mismatch for ${key}`)
      // Copy into a fresh buffer so typed-array views are aligned.
      const copy = Buffer.from(bytes.subarray(base + begin, base + end))
      return { dtype: entry.dtype, shape: entry.shape, data: dtype.read(copy) }
    },
  }
}

let reference
/** reference.safetensors, read once. */
export function loadReference() {
  reference ??= readSafetensors(path.join(REFERENCE_DIR, 'reference.safetensors'))
  return reference
}

/** The tensor a manifest entry `{ key, dtype, shape }` points to. */
export function tensorFor(entry) {
  const t = loadReference().get(entry.key)
  if (JSON.stringify(t.shape) !== JSON.stringify(entry.shape)) throw new Error(`shape mismatch for ${entry.key}`)
  return t
}

/** Slab `k` along the leading (step) axis of a tensor from {@link tensorFor}: { shape, data }. */
export function stepSlice(tensor, k) {
  const [steps, ...shape] = tensor.shape
  if (!(k >= 0 && k < steps)) throw new Error(`step ${k} out of range ${steps}`)
  const size = tensor.data.length / steps
  return { shape, data: tensor.data.subarray(k * size, (k + 1) * size) }
}

/**
 * Compare `actual` to `expected` element-wise with |a − e| ≤ atol + rtol·|e| (numpy allclose).
 * Returns { ok, maxAbsErr, worst } where worst is the index of the largest excess over the bound.
 */
export function allclose(actual, expected, { atol, rtol }) {
  if (actual.length !== expected.length) return { ok: false, maxAbsErr: Infinity, worst: -1, reason: 'length' }
  let maxAbsErr = 0
  let worst = -1
  let worstExcess = -Infinity
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i] - expected[i])
    if (!(err <= maxAbsErr)) maxAbsErr = err
    const excess = err - (atol + rtol * Math.abs(expected[i]))
    if (!(excess <= worstExcess)) {
      worstExcess = excess
      worst = i
    }
  }
  return { ok: worstExcess <= 0, maxAbsErr, worst }
}
