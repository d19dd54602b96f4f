// Fixture access in the shape the scheduler/post-processing/PNG tests use, built on the shared helpers
// (paths.mjs, safetensors.mjs, reference.mjs) so there is one reader and one manifest cache.
import { join } from 'node:path'
import { FIXTURES, SANA_TINY } from './paths.mjs'
import { caseOf, manifest } from './reference.mjs'
import { decodeTensor, readSafetensors as readRaw } from './safetensors.mjs'

export { FIXTURES }
export const REFERENCE_DIR = join(SANA_TINY, 'reference')
export const loadManifest = manifest
export const getCase = caseOf

/** A safetensors file as { keys, get(key) → { dtype, shape, data } } (data: Float32Array, BigInt64Array or Uint8Array). */
export function readSafetensors(file) {
  const st = readRaw(file)
  return {
    keys: Object.keys(st.header),
    get(key) {
      const info = st.header[key]
      if (!info) throw new Error(`no tensor ${key} in ${file}`)
      const data = info.dtype === 'U8' ? Uint8Array.from(st.buf.subarray(st.dataStart + info.data_offsets[0], st.dataStart + info.data_offsets[1])) : decodeTensor(st, key)
      return { dtype: info.dtype, shape: info.shape, data }
    },
  }
}

let reference
/** reference.safetensors, read once. */
export function loadReference() {
  reference ??= readSafetensors(join(REFERENCE_DIR, 'reference.safetensors'))
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
