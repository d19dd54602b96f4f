// ControlNet end to end against diffusers' SanaControlNetPipeline (wave2 cases): the control image is encoded once,
// its ControlNet samples reach the transformer every step — per-step latents, final latents, image_pt and PNG, from
// the seed and from the stored noise.
import test from 'ava'
import { SanaControlNetModel, SanaPipeline } from '../dist/index.js'
import { SANA_TINY } from './helpers/paths.mjs'
import { caseOptions, caseTensorT, checkE2e, input, WAVE2 } from './helpers/wave2.mjs'
import { join } from 'node:path'

const CONTROLNET = join(WAVE2, 'sana-controlnet-tiny')
let pipe
test.before(async () => {
  pipe = await SanaPipeline.load(SANA_TINY, { controlnet: CONTROLNET })
})
test.after(() => pipe.dispose())

const options = (name, extra = {}) => caseOptions(name, { controlImage: input('control_224x288.png'), ...extra })

for (const [name, what] of [
  ['controlnet_a_cfg', 'CFG, scale 0.7'],
  ['controlnet_b_nocfg', 'no CFG, scale 1.3'],
]) {
  test(`${name}: ${what}, from the seed`, async (t) => {
    await checkE2e(t, pipe, name, options(name))
  })
  test(`${name}: from the stored noise`, async (t) => {
    await checkE2e(t, pipe, name, options(name, { seed: undefined, latents: caseTensorT(name, 'start_noise') }))
  })
}

test('a pipeline with a ControlNet needs controlImage; one without refuses it; a caller-owned ControlNet survives dispose', async (t) => {
  const err = await t.throwsAsync(pipe.generate({ prompt: 'x', numInferenceSteps: 1 }))
  t.regex(err.message, /controlImage is required/)
  const controlnet = await SanaControlNetModel.load(CONTROLNET)
  const other = await SanaPipeline.load(SANA_TINY, { controlnet })
  t.is(other.controlnet, controlnet)
  other.dispose()
  t.false(controlnet.disposed)
  controlnet.dispose()
  const bad = await t.throwsAsync(SanaPipeline.load(SANA_TINY, { controlnet: 42 }))
  t.is(bad.code, 'SANA_INVALID_ARGUMENT')
})
