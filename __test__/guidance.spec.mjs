// Perturbed-attention guidance end to end against diffusers' SanaPAGPipeline (wave2 cases): CFG + PAG, PAG
// alone, and the adaptive scale — every step's latents, final latents, image_pt and PNG, from the seed and from
// the stored noise.
import test from 'ava'
import { pagScaleAt } from '../dist/sampling/guidance.js'
import { loadFixturePipelines } from './helpers/pipelines.mjs'
import { caseOptions, caseTensorT, checkE2e, wave2 } from './helpers/wave2.mjs'

let pipe
test.before(async () => {
  ;({ pipe } = await loadFixturePipelines())
})

// The pipeline's pag_applied_layers (README §1).
const options = (name, extra = {}) => caseOptions(name, { pagAppliedLayers: 'transformer_blocks.1', ...extra })

for (const [name, what] of [
  ['pag_a_cfg', 'CFG + PAG: [uncond, text, perturbed]'],
  ['pag_b_nocfg', 'PAG alone: [text, perturbed]'],
  ['pag_c_adaptive', 'adaptive PAG scale'],
]) {
  test(`${name}: ${what}, from the seed`, async (t) => {
    await checkE2e(t, pipe, name, options(name))
  })
  test(`${name}: from the stored noise`, async (t) => {
    await checkE2e(t, pipe, name, options(name, { seed: undefined, latents: caseTensorT(name, 'start_noise') }))
  })
}

test('the adaptive PAG scale per step matches the pipeline', async (t) => {
  const name = 'pag_c_adaptive'
  const k = wave2.caseOf(name).call_kwargs
  const timesteps = Array.from(wave2.caseTensor(name, 'scheduler_timestep_per_step').data)
  const want = Array.from(wave2.caseTensor(name, 'pag_scale_per_step').data)
  const got = timesteps.map((ts) => pagScaleAt({ scale: k.pag_scale, adaptiveScale: k.pag_adaptive_scale, layers: [1] }, ts))
  t.deepEqual(got.map(Math.fround), want.map(Math.fround))
})

test('pagScale 0 is plain SanaPipeline; PAG options are checked', async (t) => {
  const base = { ...options('pag_a_cfg'), outputType: 'latent' }
  const off = await pipe.generate({ ...base, pagScale: 0 })
  const { pagScale: _s, pagAdaptiveScale: _a, pagAppliedLayers: _l, ...plain } = base
  const ref = await pipe.generate(plain)
  t.deepEqual(await off.images.toFloat32Array(), await ref.images.toFloat32Array())
  for (const [o, re] of [
    [{ pagScale: -1 }, /pagScale/],
    [{ pagAppliedLayers: 'no_such_block' }, /pagAppliedLayers/],
    [{ pagAppliedLayers: [99] }, /pagAppliedLayers/],
    [{ pagAppliedLayers: {} }, /pagAppliedLayers/],
  ]) {
    const err = await t.throwsAsync(pipe.generate({ ...base, pagScale: 3, ...o }))
    t.is(err.code, 'SANA_INVALID_ARGUMENT')
    t.regex(err.message, re)
  }
})
