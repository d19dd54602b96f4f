// Post-processing against the `postprocess` fixture case: resize-and-crop, denormalise/quantise, and the
// resolution-binning tables and bins.
import test from 'ava'
import { readFileSync } from 'node:fs'
import path from 'node:path'

import {
  ASPECT_RATIO_1024_BIN,
  ASPECT_RATIO_2048_BIN,
  ASPECT_RATIO_4096_BIN,
  ASPECT_RATIO_512_BIN,
  SanaError,
  aspectRatioTableFor,
  classifyHeightWidthBin,
  denormalize,
  resizeAndCropTensor,
  toRgb8,
} from '../dist/index.js'
import { FIXTURES, allclose, getCase, tensorFor } from './helpers/fixtures.mjs'


const planar = ({ data, shape }) => ({ data: Float32Array.from(data), shape })
const code = (code) => ({ instanceOf: SanaError, code })

test('resizeAndCropTensor matches diffusers (downscale and upscale)', (t) => {
  const c = getCase('postprocess').resize_and_crop
  for (const run of c.runs) {
    const out = resizeAndCropTensor(planar(tensorFor(run.input)), { height: run.new_height, width: run.new_width })
    const ref = tensorFor(run.output)
    t.deepEqual(out.shape, ref.shape)
    const r = allclose(out.data, ref.data, c.tolerance)
    t.true(r.ok, `max err ${r.maxAbsErr}`)
    t.log(`${run.input.shape.join('×')} → ${ref.shape.join('×')}: max |err| ${r.maxAbsErr.toExponential(2)} (atol ${c.tolerance.atol})`)
  }
})

test('denormalize and toRgb8 match diffusers bit for bit', (t) => {
  const c = getCase('postprocess').postprocess
  const pt = denormalize(planar(tensorFor(c.input)))
  t.deepEqual(pt.data, tensorFor(c.output_pt).data)
  const [n, h, w] = c.output_uint8_nhwc.shape
  const expected = tensorFor(c.output_uint8_nhwc).data
  for (let i = 0; i < n; i++) t.deepEqual(toRgb8(pt, i), expected.subarray(i * h * w * 3, (i + 1) * h * w * 3))
})

test('the four aspect-ratio tables equal the recorded ones, in order', (t) => {
  const tables = getCase('postprocess').resolution_binning.tables
  const ours = { 512: ASPECT_RATIO_512_BIN, 1024: ASPECT_RATIO_1024_BIN, 2048: ASPECT_RATIO_2048_BIN, 4096: ASPECT_RATIO_4096_BIN }
  t.deepEqual(Object.keys(ours), Object.keys(tables))
  for (const [name, table] of Object.entries(tables)) {
    t.deepEqual(Object.keys(ours[name]), Object.keys(table), `${name} key order`)
    t.deepEqual(Object.entries(ours[name]).map(([k, v]) => [k, [...v]]), Object.entries(table), name)
  }
})

test('bins for the recorded requests, with the table chosen from the transformer sample_size', (t) => {
  const sampleSize = (dir) => JSON.parse(readFileSync(path.join(FIXTURES, dir, 'config.json'), 'utf8')).sample_size
  const table = aspectRatioTableFor(sampleSize('sana-tiny/transformer'))
  t.is(table, ASPECT_RATIO_1024_BIN)
  t.is(aspectRatioTableFor(sampleSize('sana-2k-transformer-tiny')), ASPECT_RATIO_2048_BIN)
  for (const r of getCase('postprocess').resolution_binning.requests) {
    const [height, width] = r.bin_1024
    t.deepEqual(classifyHeightWidthBin(r.height, r.width, table), { height, width }, `${r.height}×${r.width}`)
  }
  const b = getCase('e2e_b_binning')
  const [rh, rw] = b.requested_height_width
  t.deepEqual(Object.values(classifyHeightWidthBin(rh, rw, table)), b.binned_height_width)
})

test('table choice and binning: argument errors and ties', (t) => {
  t.is(aspectRatioTableFor(16), ASPECT_RATIO_512_BIN)
  t.is(aspectRatioTableFor(128), ASPECT_RATIO_4096_BIN)
  t.throws(() => aspectRatioTableFor(48), code('SANA_INVALID_ARGUMENT'))
  t.throws(() => classifyHeightWidthBin(0, 512, ASPECT_RATIO_1024_BIN), code('SANA_INVALID_ARGUMENT'))
  t.throws(() => classifyHeightWidthBin(512, 512, {}), code('SANA_INVALID_ARGUMENT'))
  // A ratio exactly between two keys takes the first in table order.
  t.deepEqual(classifyHeightWidthBin(1, 1, { '0.5': [1, 2], '1.5': [3, 2] }), { height: 1, width: 2 })
})

/** A [1, 1, H, W] image whose value is the row index (bilinear reproduces linear ramps exactly). */
function rowRamp(h, w) {
  const data = new Float32Array(h * w)
  for (let y = 0; y < h; y++) data.fill(y, y * w, (y + 1) * w)
  return { data, shape: [1, 1, h, w] }
}

test('resizeAndCropTensor always returns the requested size (diffusers can crop short)', (t) => {
  // diffusers: ratio = 250/1216, int(1216·ratio) = int(249.99999999999997) = 249 rows, crop start (249−250)//2 = −1,
  // so samples[:, :, -1:249] is ONE row. Ours resizes to 250 rows.
  t.is(Math.trunc(1216 * Math.max(250 / 1216, 170 / 832)), 249)
  const cases = [
    { from: [1216, 832], to: { height: 250, width: 170 } },
    { from: [10, 11], to: { height: 5, width: 15 } }, // int(11·15/11) = 14 < 15 in diffusers
    { from: [832, 1152], to: { height: 107, width: 100 } },
  ]
  for (const { from: [h, w], to } of cases) {
    const out = resizeAndCropTensor(rowRamp(h, w), to)
    t.deepEqual(out.shape, [1, 1, to.height, to.width])
    // Geometry: output row r samples source row clamp((h/rh)(r + ½) − ½, 0, h − 1), rh = max(int(h·ratio), h').
    const rh = Math.max(Math.trunc(h * Math.max(to.height / h, to.width / w)), to.height)
    const top = Math.floor((rh - to.height) / 2)
    for (let r = 0; r < to.height; r++) {
      const src = Math.min(Math.max(((h / rh) * (top + r + 0.5)) - 0.5, 0), h - 1)
      const row = out.data.subarray(r * to.width, (r + 1) * to.width)
      t.true(row.every((v) => Math.abs(v - src) <= 1e-5 * h), `${h}×${w}→${to.height}×${to.width} row ${r}: ${row[0]} vs ${src}`)
    }
  }
})

test('resizeAndCropTensor: same size is a no-op; bad arguments are rejected', (t) => {
  const img = rowRamp(4, 6)
  t.is(resizeAndCropTensor(img, { height: 4, width: 6 }), img)
  t.throws(() => resizeAndCropTensor(img, { height: 0, width: 6 }), code('SANA_INVALID_ARGUMENT'))
  t.throws(() => resizeAndCropTensor({ data: new Float32Array(3), shape: [1, 1, 2, 2] }, { height: 1, width: 1 }), code('SANA_INVALID_ARGUMENT'))
  t.throws(() => resizeAndCropTensor({ data: new Float32Array(4), shape: [2, 2] }, { height: 1, width: 1 }), code('SANA_INVALID_ARGUMENT'))
})

test('denormalize clamps and keeps NaN; toRgb8 rounds half to even and interleaves channels', (t) => {
  const pt = denormalize({ data: Float32Array.from([-3, -1, 0, 1, 3, NaN]), shape: [1, 1, 2, 3] })
  t.deepEqual(Array.from(pt.data.subarray(0, 5)), [0, 0, 0.5, 1, 1])
  t.true(Number.isNaN(pt.data[5]))
  // x = fround((k + ½)/255) gives x·255 = k + ½ exactly in float32; numpy rounds those halves to even.
  const half = (k) => Math.fround((k + 0.5) / 255)
  t.true([0, 1, 2, 3].every((k) => Math.fround(half(k) * 255) === k + 0.5))
  const rgb = toRgb8({ data: Float32Array.from([half(0), half(1), half(2), half(3), 1, 0]), shape: [1, 3, 1, 2] })
  // Planes R = [½, 1½], G = [2½, 3½], B = [1, 0] → interleaved pixels (0, 2, 255), (2, 4, 0).
  t.deepEqual(Array.from(rgb), [0, 2, 255, 2, 4, 0])
  t.throws(() => toRgb8({ data: new Float32Array(4), shape: [1, 1, 2, 2] }), code('SANA_INVALID_ARGUMENT'))
  t.throws(() => toRgb8({ data: new Float32Array(12), shape: [1, 3, 2, 2] }, 1), code('SANA_INVALID_ARGUMENT'))
})
