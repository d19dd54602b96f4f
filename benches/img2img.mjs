// Image-conditioned generation at Sana's real shapes (random weights): what img2img and inpainting cost on top of
// text-to-image. Runs the one sampling loop (dist/sampling) on the random-weight Sana-600M DiT and DC-AE f32c32 of
// the benchmark cache, with random caption embeddings in place of Gemma (its cost does not depend on the image).
//
//   node benches/img2img.mjs [--size 1024] [--steps 4] [--strength 0.5]
//
// Prints one JSON line per measurement and a markdown row for benches/RESULTS.md, with the load average.
import { loadavg } from 'node:os'
import { createRequire } from 'node:module'
import { MODELS, ensureModel } from './plan.mjs'

const require = createRequire(import.meta.url)
const { AutoencoderDC, SanaTransformer2DModel, Tensor, DPMSolverMultistepScheduler } = require('../dist/index.js')
const { buildRecipe } = require('../dist/sampling/build.js')
const { sample } = require('../dist/sampling/loop.js')
const { TorchGenerator } = require('../dist/random.js')

const args = process.argv.slice(2)
const option = (name, fallback) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : fallback)
const size = option('--size', 1024)
const steps = option('--steps', 4)
const strength = option('--strength', 0.5)
const log = (m) => process.stderr.write(`${m}\n`)

const ditDir = ensureModel('dit-600m', MODELS.full['dit-600m'], log)
const vaeDir = ensureModel('dcae-f32c32', MODELS.full['dcae-f32c32'], log)
const transformer = await SanaTransformer2DModel.load(ditDir)
const vae = await AutoencoderDC.load(vaeDir)

// A smooth test image (a gradient) as a [1, 3, H, W] tensor in [0, 1], and a mask repainting the right half.
const plane = size * size
const pixels = new Float32Array(3 * plane)
for (let c = 0; c < 3; c++) for (let i = 0; i < plane; i++) pixels[c * plane + i] = ((i % size) / size + c / 3) % 1
const image = Tensor.fromFloat32Array(pixels, [1, 3, size, size])
const maskPixels = new Float32Array(plane).map((_, i) => (i % size >= size / 2 ? 1 : 0))
const mask = Tensor.fromFloat32Array(maskPixels, [1, 1, size, size])

const rng = new TorchGenerator(0)
const text = { embeds: Tensor.fromFloat32Array(rng.randn(300 * 2304), [1, 300, 2304]), mask: Tensor.fromInt32Array(new Int32Array(300).fill(1), [1, 300]) }
const parts = {
  sprint: false, vae, latentChannels: 32, numLayers: transformer.config.numLayers, timestepScale: 1, guidanceEmbedsScale: 0.1,
}
const resolved = (extra) => ({
  prompts: ['x'], negative: [''], size: { height: size, width: size }, steps, guidance: 4.5, perPrompt: 1, seed: 0,
  outputType: 'latent', doCfg: true, strength, controlnetScale: 1, previewMaxSize: 512, binning: false, ...extra,
})

async function timed(label, fn) {
  const load = loadavg()[0].toFixed(2)
  const t0 = performance.now()
  const out = await fn()
  const ms = performance.now() - t0
  console.log(JSON.stringify({ label, size, steps, strength, ms: Math.round(ms), load }))
  return { out, ms, load }
}

async function run(kind) {
  const scheduler = new DPMSolverMultistepScheduler()
  const options = kind === 'inpaint' ? { image, maskImage: mask } : { image }
  const recipe = await buildRecipe({ ...parts, scheduler }, options, resolved({}), { positive: text, negative: text }, new TorchGenerator(1))
  const stepMs = []
  let t = performance.now()
  let latents
  const loop = sample(recipe, scheduler, transformer)
  for (;;) {
    const { value, done } = await loop.next()
    if (done) {
      latents = value
      break
    }
    stepMs.push(performance.now() - t)
    t = performance.now()
  }
  const decode = await timed(`${kind}: VAE decode ${size}²`, () => vae.decode(Tensor.linearCombination([latents], [1 / vae.config.scalingFactor])))
  return { stepMs, decode }
}

const encode = await timed(`VAE encode ${size}²`, () => vae.encode(image))
for (const kind of ['img2img', 'inpaint']) {
  const load = loadavg()[0].toFixed(2)
  const t0 = performance.now()
  const { stepMs, decode } = await run(kind)
  const total = performance.now() - t0
  const perStep = stepMs.reduce((a, b) => a + b, 0) / stepMs.length
  console.log(JSON.stringify({ label: `${kind} total (encode + ${stepMs.length} CFG steps + decode)`, ms: Math.round(total), perStepMs: Math.round(perStep), load }))
  console.log(`| ${kind} ${size}², ${steps} steps × strength ${strength} → ${stepMs.length} run, CFG | ${(encode.ms / 1000).toFixed(1)} s | ${(perStep / 1000).toFixed(1)} s | ${(decode.ms / 1000).toFixed(1)} s | ${(total / 1000).toFixed(1)} s | ${load} |`)
}
transformer.dispose()
vae.dispose()
