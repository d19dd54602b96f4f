// End to end against diffusers' SanaPipeline / SanaSprintPipeline: per-step latents, final latents,
// the [0,1] image and the PNG pixels, for CFG, resolution binning, no-CFG and Sprint.
import test from 'ava'
import { join } from 'node:path'
import { Tensor } from '../dist/index.js'
import { SANA_TINY } from './helpers/paths.mjs'
import { stepSlice } from './helpers/fixtures.mjs'
import { caseGenerateOptions, loadFixturePipelines } from './helpers/pipelines.mjs'
import { assertPngMatches, readPng } from './helpers/png.mjs'
import { assertClose, caseOf, caseTensor } from './helpers/reference.mjs'

let pipe
let sprint
test.before(async () => {
  ;({ pipe, sprint } = await loadFixturePipelines())
})


const options = (name) => caseGenerateOptions(name)

async function checkCase(t, p, name, extra = {}) {
  const c = caseOf(name)
  const perStep = []
  const res = await p.generate({
    ...options(name),
    ...extra,
    outputType: 'tensor',
    onStep: async (e) => perStep.push(await e.latents.toFloat32Array()),
  })
  const steps = caseTensor(name, 'latents_per_step')
  t.is(perStep.length, steps.shape[0])
  perStep.forEach((got, k) => assertClose(t, got, stepSlice(steps, k).data, c.tolerance.final_latents, `${name} step ${k}`))
  assertClose(t, perStep.at(-1), caseTensor(name, 'final_latents').data, c.tolerance.final_latents, `${name} final latents`)
  const want = caseTensor(name, 'image_pt')
  t.deepEqual(res.images.shape, want.shape)
  assertClose(t, await res.images.toFloat32Array(), want.data, c.tolerance.image_pt, `${name} image_pt`)

  // The PNG: same pixels as the reference PNG within the stated uint8 difference.
  const png = await p.generate({ ...options(name), ...extra })
  const img = png.images[0]
  assertPngMatches(t, img, join(SANA_TINY, c.png), c.tolerance.uint8_max_diff, name)
  const decoded = readPng(img.toPng())
  t.is(decoded.text.prompt, c.call_kwargs.prompt)
}

test('e2e_a_cfg: CFG, 5 steps, 256×384', async (t) => {
  await checkCase(t, pipe, 'e2e_a_cfg')
})

test('e2e_b_binning: binning 320×448 → 832×1152 → back', async (t) => {
  await checkCase(t, pipe, 'e2e_b_binning')
})

test('e2e_c_nocfg: guidance 1.0 runs no CFG batch', async (t) => {
  await checkCase(t, pipe, 'e2e_c_nocfg')
})

test('sprint_e2e: SCM, guidance embedding, 2 steps', async (t) => {
  const noise = caseTensor('sprint_e2e', 'scheduler_noise_per_step')
  const shape = noise.shape.slice(1)
  const schedulerNoise = [0, 1].map((k) => Tensor.fromFloat32Array(stepSlice(noise, k).data, shape))
  await checkCase(t, sprint, 'sprint_e2e', { schedulerNoise })
  // The seed the reference used reproduces its noise draws (torch-compatible generator): same image.
  const seeded = await sprint.generate({ ...options('sprint_e2e'), seed: 20245256, outputType: 'tensor' })
  assertClose(t, await seeded.images.toFloat32Array(), caseTensor('sprint_e2e', 'image_pt').data,
    caseOf('sprint_e2e').tolerance.image_pt, 'sprint_e2e seeded image_pt')
})
