// AutoencoderDC decode/encode against diffusers, tiled decoding, and bad inputs.
import test from 'ava'
import { join } from 'node:path'
import { AutoencoderDC, Tensor } from '../dist/index.js'
import { SANA_TINY } from './helpers/paths.mjs'
import { assertClose, caseOf, caseTensor } from './helpers/reference.mjs'
import { f32 } from './helpers/tensors.mjs'

let vae
test.before(async () => {
  vae = await AutoencoderDC.load(join(SANA_TINY, 'vae'))
})

for (const name of ['vae_decode_square', 'vae_decode_nonsquare_b2', 'vae_decode_tiny_quadratic']) {
  test(`${name} matches diffusers`, async (t) => {
    const c = caseOf(name)
    const out = await vae.decode(f32(caseTensor(name, 'z')), { tiling: 'off' })
    const want = caseTensor(name, 'image')
    t.deepEqual(out.shape, want.shape)
    assertClose(t, await out.toFloat32Array(), want.data, c.tolerance, name)
  })
}

for (const name of ['vae_encode_square', 'vae_encode_tiny_quadratic']) {
  test(`${name} matches diffusers`, async (t) => {
    const c = caseOf(name)
    const out = await vae.encode(f32(caseTensor(name, 'image')))
    const want = caseTensor(name, 'latent')
    t.deepEqual(out.shape, want.shape)
    assertClose(t, await out.toFloat32Array(), want.data, c.tolerance, name)
  })
}

test('scalingFactor comes from the config', (t) => {
  t.is(vae.config.scalingFactor, 0.41407)
})

test('tiled decode: a whole-latent tile is exact, tiny forced tiles stay seamless, auto leaves small latents untiled', async (t) => {
  const z = f32(caseTensor('vae_decode_nonsquare_b2', 'z')) // [2, 32, 6, 10] → [2, 3, 192, 320]
  const full = await (await vae.decode(z, { tiling: 'off' })).toFloat32Array()
  const whole = await (await vae.decode(z, { tiling: 'on', tileSize: 10 })).toFloat32Array()
  t.deepEqual(whole, full)
  t.deepEqual(await (await vae.decode(z)).toFloat32Array(), full)
  // Forced 3-latent tiles: each tile's linear attention sees only its own tile, so values differ from the
  // one-pass decode (the Rust fixture test measures how that shrinks with tile size); what must hold is that
  // the blend leaves no seam: the mean step across a tile-border column is no larger than elsewhere.
  const tiled = await (await vae.decode(z, { tiling: 'on', tileSize: 3, tileOverlap: 1 })).toFloat32Array()
  t.true(tiled.every(Number.isFinite))
  const [planes, h, w] = [2 * 3, 192, 320]
  const meanStep = (x) => {
    let s2 = 0
    for (let n = 0; n < planes; n++) for (let y = 0; y < h; y++) s2 += Math.abs(tiled[(n * h + y) * w + x + 1] - tiled[(n * h + y) * w + x])
    return s2 / (planes * h)
  }
  const border = new Set(Array.from({ length: 9 }, (_, k) => 32 * (k + 1) - 1))
  let borderMax = 0
  let interiorMax = 0
  for (let x = 0; x < w - 1; x++) {
    if (border.has(x)) borderMax = Math.max(borderMax, meanStep(x))
    else interiorMax = Math.max(interiorMax, meanStep(x))
  }
  t.log(`tile 3 / overlap 1: max mean step at tile borders ${borderMax.toFixed(4)}, elsewhere ${interiorMax.toFixed(4)}`)
  t.true(borderMax <= interiorMax)
})

test('bad inputs are typed errors', async (t) => {
  const zeros = (shape) => Tensor.fromFloat32Array(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape)
  const cases = [
    [() => vae.decode(zeros([1, 16, 4, 4])), 'z'],
    [() => vae.decode(zeros([1, 32, 0, 4])), 'z'],
    [() => vae.encode(zeros([1, 3, 48, 64])), 'image'],
    [() => vae.encode(zeros([1, 4, 64, 64])), 'image'],
    [() => vae.decode(zeros([1, 32, 2, 2]), { tiling: 'sometimes' }), 'tiling'],
  ]
  for (const [call, name] of cases) {
    const err = await t.throwsAsync(call())
    t.is(err.code, 'SANA_INVALID_ARGUMENT', err.message)
    t.true(err.message.includes(name), `${err.message} should name ${name}`)
  }
})
