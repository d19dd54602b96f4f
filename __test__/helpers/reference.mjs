// The fixture manifest and reference tensors (sana-tiny/reference), plus an allclose assertion.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { SANA_TINY } from './paths.mjs'
import { decodeTensor, readSafetensors } from './safetensors.mjs'

/**
 * One reference set: a manifest (reference.json, strict JSON: non-finite numbers appear as strings) and
 * its reference.safetensors, both read once.
 */
export function referenceSet(refDir) {
  let manifestCache, fileCache
  const set = {
    manifest() {
      manifestCache ??= JSON.parse(readFileSync(join(refDir, 'reference.json'), 'utf8'))
      return manifestCache
    },
    caseOf(name) {
      const c = set.manifest().cases.find((x) => x.name === name)
      if (!c) throw new Error(`no fixture case ${name}`)
      return c
    },
    /** A reference tensor by key: { shape, data } with Float32Array data, or number[] for int64. */
    ref(key) {
      fileCache ??= readSafetensors(join(refDir, 'reference.safetensors'))
      const info = fileCache.header[key]
      if (!info) throw new Error(`no reference tensor ${key}`)
      const data = decodeTensor(fileCache, key)
      return { shape: info.shape, data: data instanceof BigInt64Array ? Array.from(data, Number) : data }
    },
    /** The tensor of `role` in a case's `tensors` (or `intermediates`). */
    caseTensor(caseName, role) {
      const c = set.caseOf(caseName)
      const entry = c.tensors?.[role] ?? c.intermediates?.[role]
      if (!entry) throw new Error(`case ${caseName} has no tensor ${role}`)
      return set.ref(entry.key)
    },
  }
  return set
}

/** The wave-1 reference (sana-tiny/reference). */
const wave1 = referenceSet(join(SANA_TINY, 'reference'))
export const manifest = wave1.manifest
export const caseOf = wave1.caseOf
export const ref = wave1.ref
export const caseTensor = wave1.caseTensor

/** Rows of an int64 [B, L] reference as number[][]. */
export function rows(t) {
  const [b, l] = t.shape
  return Array.from({ length: b }, (_, i) => t.data.slice(i * l, (i + 1) * l))
}

/**
 * numpy allclose: |got − want| ≤ atol + rtol·|want| everywhere `where(i)` holds (default: everywhere).
 * Asserts finiteness too. Returns the max abs error so tests can log it.
 */
export function assertClose(t, got, want, { atol, rtol }, what, where = () => true) {
  t.is(got.length, want.length, `${what}: length`)
  let maxErr = 0
  let worst = null
  let compared = 0
  for (let i = 0; i < want.length; i++) {
    if (!where(i)) continue
    compared++
    const err = Math.abs(got[i] - want[i])
    if (!Number.isFinite(got[i])) {
      worst = { i, err: Infinity }
      break
    }
    maxErr = Math.max(maxErr, err)
    if (err > atol + rtol * Math.abs(want[i]) && !worst) worst = { i, err }
  }
  t.true(compared > 0, `${what}: nothing compared`)
  t.is(worst, null, worst ? `${what}: at ${worst.i} got ${got[worst.i]} want ${want[worst.i]} (err ${worst.err}); atol ${atol} rtol ${rtol}` : '')
  t.log(`${what}: max abs err ${maxErr.toExponential(2)} (atol ${atol}, rtol ${rtol}, ${compared} values)`)
  return maxErr
}

/** Peak signal-to-noise ratio of two images with values in [0, 1], in dB. */
export function psnr(a, b) {
  if (a.length !== b.length) throw new Error(`psnr: lengths differ (${a.length} vs ${b.length})`)
  let se = 0
  for (let i = 0; i < a.length; i++) se += (a[i] - b[i]) ** 2
  return 10 * Math.log10(1 / Math.max(se / a.length, 1e-20))
}
