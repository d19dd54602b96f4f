// Image-conditioned generation against the wave-2 fixtures: base-Sana img2img (DPM-Solver and flow-match Euler),
// inpainting, and Sana-Sprint img2img — every step's latents, the final latents, image_pt and the PNG, from the seed
// alone and from the stored noise; plus the preprocessed image and the start latents.
import test from 'ava'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parsePythonJson, prepareImage, prepareMask, schedulerFromConfig, SanaImage, startIndex, Tensor } from '../dist/index.js'
import { stepSlice } from './helpers/fixtures.mjs'
import { loadFixturePipelines } from './helpers/pipelines.mjs'
import { assertClose } from './helpers/reference.mjs'
import { caseOptions, caseTensorT, checkE2e, input, wave2, WAVE2 } from './helpers/wave2.mjs'

let pipe
let sprint
test.before(async () => {
  ;({ pipe, sprint } = await loadFixturePipelines())
})

const euler = () =>
  schedulerFromConfig(parsePythonJson(readFileSync(join(WAVE2, 'scheduler-flow-euler', 'scheduler_config.json'), 'utf8')))

/** generate options of a composed img2img / inpaint / Sprint img2img case: its inputs on top of the call. */
function options(name, extra = {}) {
  return caseOptions(name, {
    image: input(name.startsWith('sprint') ? 'sprint_288x256.png' : 'init_256x320.png'),
    maskImage: name.startsWith('inpaint') ? input('mask_256x320.png') : undefined,
    scheduler: name.includes('euler') ? euler() : undefined,
    ...extra,
  })
}

const cases = [
  ['img2img_a_dpm_cfg', 'DPM-Solver, CFG, strength 0.7 (t_start 1, not int(3.5) = 2 steps skipped)'],
  ['img2img_b_euler', 'flow-match Euler, strength 0.5'],
  ['img2img_c_strength1', 'strength 1.0 keeps 3.3e-4·z0 with Flow-DPM-Solver'],
  ['inpaint_a_strength1_cfg', 'inpainting, strength 1.0 (starts from pure noise), CFG'],
  ['inpaint_b_nocfg', 'inpainting, strength 0.8, no CFG'],
]

for (const [name, what] of cases) {
  test(`${name}: ${what}, from the seed`, async (t) => {
    await checkE2e(t, pipe, name, options(name))
  })
  test(`${name}: from the stored noise`, async (t) => {
    await checkE2e(t, pipe, name, options(name, { seed: undefined, noise: caseTensorT(name, 'start_noise') }))
  })
}

for (const name of ['sprint_img2img_a', 'sprint_img2img_b']) {
  test(`${name}: Sana-Sprint img2img, from the seed`, async (t) => {
    await checkE2e(t, sprint, name, options(name))
  })
  test(`${name}: from the stored noise`, async (t) => {
    const noise = wave2.caseTensor(name, 'scheduler_noise_per_step')
    const schedulerNoise = Array.from({ length: noise.shape[0] }, (_, k) => Tensor.fromFloat32Array(stepSlice(noise, k).data, noise.shape.slice(1)))
    await checkE2e(t, sprint, name, options(name, { seed: undefined, noise: caseTensorT(name, 'start_noise'), schedulerNoise }))
  })
}

test('img2img start: t_start as diffusers computes it (float arithmetic), z0 and the start latents', async (t) => {
  for (const name of ['img2img_a_dpm_cfg', 'img2img_b_euler', 'img2img_c_strength1', 'inpaint_b_nocfg', 'sprint_img2img_a', 'sprint_img2img_b']) {
    const s = wave2.caseOf(name).schedule
    t.is(startIndex(s.num_inference_steps ?? 2, s.strength ?? wave2.caseOf(name).call_kwargs.strength), s.t_start, name)
  }
  t.is(startIndex(25, 0.56), 10) // 25 × 0.56 = 14.000000000000002 in doubles: int(10.999…) = 10, not 11
  // The pieces of the start, each against its reference: the preprocessed image, z0, the start latents, the mask.
  for (const name of ['img2img_a_dpm_cfg', 'img2img_b_euler', 'inpaint_b_nocfg']) {
    const c = wave2.caseOf(name)
    const size = { height: c.call_kwargs.height, width: c.call_kwargs.width }
    const x = await prepareImage('image', input('init_256x320.png'), size)
    assertClose(t, await x.toFloat32Array(), wave2.caseTensor(name, 'image_preprocessed').data, { atol: 1e-7, rtol: 0 }, `${name} image_preprocessed`)
    const z0 = Tensor.linearCombination([await pipe.vae.encode(x)], [pipe.vae.config.scalingFactor])
    assertClose(t, await z0.toFloat32Array(), wave2.caseTensor(name, 'z0').data, c.tolerance.final_latents, `${name} z0`)
    // A scheduler of its own: pipe.scheduler belongs to the generations the other tests run meanwhile (ava runs
    // a file's tests concurrently), and resetting it mid-run broke their second DPM step (a flaky failure).
    const scheduler = name.includes('euler') ? euler() : schedulerFromConfig(pipe.schedulerConfig)
    scheduler.setTimesteps(c.call_kwargs.num_inference_steps)
    t.deepEqual(scheduler.timesteps.map(Math.fround), Array.from(wave2.caseTensor(name, 'scheduler_timesteps_full').data).map(Math.fround), `${name} timesteps`)
    const start = scheduler.addNoise(z0, caseTensorT(name, 'start_noise'), c.schedule.t_start)
    assertClose(t, await start.toFloat32Array(), wave2.caseTensor(name, 'initial_latents').data, c.tolerance.final_latents, `${name} initial latents`)
    if (name.startsWith('inpaint')) {
      const m = await prepareMask(input('mask_256x320.png'), size)
      t.deepEqual(Array.from(m.pixels), Array.from(wave2.caseTensor(name, 'mask_condition').data), `${name} mask_condition`)
      t.deepEqual(Array.from(await m.latent.toFloat32Array()), Array.from(wave2.caseTensor(name, 'mask_latent').data), `${name} mask_latent`)
    }
  }
})

test('image inputs: a path, PNG bytes, a SanaImage and a [0,1] Tensor give the same img2img result', async (t) => {
  const name = 'img2img_b_euler'
  const bytes = readFileSync(input('init_256x320.png'))
  const pre = wave2.caseTensor(name, 'image_preprocessed') // [1,3,H,W] in [-1,1]
  const unit = Float32Array.from(pre.data, (x) => (x + 1) / 2)
  const results = []
  for (const image of [input('init_256x320.png'), bytes, new Uint8Array(bytes), Tensor.fromFloat32Array(unit, pre.shape)]) {
    const r = await pipe.generate({ ...options(name), image, outputType: 'latent' })
    results.push(await r.images.toFloat32Array())
  }
  const img = (await pipe.generate({ ...options(name), image: bytes })).images[0]
  const fromSanaImage = await pipe.generate({ ...options(name), image: new SanaImage({ width: img.width, height: img.height, data: img.data }), outputType: 'latent' })
  t.true((await fromSanaImage.images.toFloat32Array()).every(Number.isFinite))
  for (const [i, r] of results.entries()) {
    assertClose(t, r, results[0], { atol: 1e-6, rtol: 0 }, `input kind ${i}`)
  }
})

test('img2img size: without width/height the image size is used; other sizes are resized (Lanczos) to a multiple of 32', async (t) => {
  const r = await pipe.generate({ prompt: 'a cabin', image: input('init_256x320.png'), numInferenceSteps: 2, guidanceScale: 1, seed: 1, outputType: 'tensor' })
  t.deepEqual(r.images.shape, [1, 3, 256, 320])
  const r2 = await pipe.generate({ prompt: 'a cabin', image: input('init_256x320.png'), numInferenceSteps: 2, guidanceScale: 1, seed: 1, width: 224, height: 192, outputType: 'tensor' })
  t.deepEqual(r2.images.shape, [1, 3, 192, 224])
  const { readPng } = await import('./helpers/png.mjs')
  const odd = await (await import('sharp')).default(readFileSync(input('init_256x320.png'))).resize(300, 250).png().toBuffer()
  const r3 = await pipe.generate({ prompt: 'a cabin', image: odd, numInferenceSteps: 1, guidanceScale: 1, seed: 1 })
  t.is(r3.images[0].width, 288) // 300 rounded down to a multiple of 32
  t.is(r3.images[0].height, 224)
  t.truthy(readPng(r3.images[0].toPng()))
})

test('bad image inputs: typed errors naming the argument, before any work', async (t) => {
  const base = { prompt: 'x', image: input('init_256x320.png'), numInferenceSteps: 2 }
  const cases = [
    [{ ...base, strength: 0 }, /strength/],
    [{ ...base, strength: 1.5 }, /strength/],
    [{ ...base, strength: Number.NaN }, /strength/],
    [{ ...base, image: Buffer.from('not an image at all') }, /image: not a decodable PNG, JPEG or WebP/],
    [{ ...base, image: 42 }, /image/],
    [{ ...base, image: join(WAVE2, 'inputs', 'missing.png') }, /image: cannot read/],
    [{ ...base, maskImage: input('control_224x288.png') }, /mask of the image's size 320×256 for maskImage/],
    [{ ...base, latents: Tensor.fromFloat32Array(new Float32Array(32 * 80), [1, 32, 8, 10]) }, /latents/],
    [{ prompt: 'x', strength: 0.5 }, /strength is used only with image/],
    [{ prompt: 'x', maskImage: input('mask_256x320.png') }, /maskImage/],
    [{ ...base, useResolutionBinning: true }, /useResolutionBinning/],
    [{ prompt: 'x', controlImage: input('control_224x288.png') }, /controlImage needs a pipeline loaded with a controlnet/],
  ]
  for (const [o, re] of cases) {
    const err = await t.throwsAsync(pipe.generate(o))
    t.is(err.code, o.image === 42 || !/decodable|cannot read/.test(String(re)) ? 'SANA_INVALID_ARGUMENT' : err.code, String(re))
    t.regex(err.message, re)
  }
  const missing = await t.throwsAsync(pipe.generate({ ...base, image: join(WAVE2, 'inputs', 'missing.png') }))
  t.is(missing.code, 'SANA_NOT_FOUND')
  const mask = await t.throwsAsync(sprint.generate({ ...base, maskImage: input('mask_256x320.png') }))
  t.regex(mask.message, /inpainting is available for base Sana/)
})

test('an aborted img2img leaves the pipeline usable', async (t) => {
  const ac = new AbortController()
  const err = await t.throwsAsync(
    pipe.generate({ ...options('img2img_a_dpm_cfg'), signal: ac.signal, onStep: () => ac.abort() }),
  )
  t.is(err.code, 'ABORT_ERR')
  await checkE2e(t, pipe, 'img2img_b_euler', options('img2img_b_euler'))
})

test('previews: each event carries denoised and preview(); previewEvery attaches decoded previews', async (t) => {
  const seen = []
  const res = await pipe.generate({
    ...options('img2img_a_dpm_cfg'),
    previewEvery: 2,
    previewMaxSize: 160,
    onStep: async (e) => {
      t.deepEqual(e.denoised.shape, e.latents.shape)
      seen.push({ step: e.step, preview: e.previewImage })
      if (e.step === 0) {
        const p = await e.preview()
        t.deepEqual([p.width, p.height], [320, 256]) // already within 512: decoded at full size
      }
    },
  })
  t.deepEqual(seen.map((s) => s.step), [0, 1, 2, 3])
  t.deepEqual(seen.map((s) => Boolean(s.preview)), [false, true, false, true])
  // 320×256 into 160: the 10×8 latents are averaged 2×2 → 5×4 → 160×128 pixels.
  t.deepEqual([seen[1].preview.width, seen[1].preview.height], [160, 128])
  t.is(res.images.length, 1)
})
