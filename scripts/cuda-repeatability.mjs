// Repeatability check on a GPU: the same inputs through each component several times must give the same
// bits (our kernels are deterministic: no atomics), and a generation must stay finite at every step.
// A difference between runs points at a race or at memory read before it is written.
//   node scripts/cuda-repeatability.mjs PIPELINE_DIR [dtype=bfloat16] [steps=20] [device=cuda]
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const sana = require('../dist/index.js')
const [dir, dtype = 'bfloat16', stepsArg = '20', device = 'cuda'] = process.argv.slice(2)
const steps = Number(stepsArg)
const report = (o) => console.log(JSON.stringify(o))
const t0 = performance.now()
const elapsed = () => ((performance.now() - t0) / 1000).toFixed(1)

function summary(a, b) {
  let diff = 0
  let maxAbs = 0
  let nonFinite = 0
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) nonFinite++
    if (a[i] !== b[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) diff++
    maxAbs = Math.max(maxAbs, Math.abs(a[i] - b[i]) || 0)
  }
  return { n: a.length, differing: diff, maxAbsDiff: maxAbs, nonFinite }
}

async function repeat(what, times, fn) {
  const first = await fn()
  for (let i = 1; i < times; i++) report({ what, run: i, t: elapsed(), ...summary(await fn(), first) })
  return first
}

const pipe = await sana.SanaPipeline.load(dir, { device, dtype })
report({ what: 'loaded', t: elapsed(), device: pipe.device, dtype })
const prompt = 'a red fox in the snow, golden hour, highly detailed'

const enc = await pipe.encodePrompt(prompt, { doClassifierFreeGuidance: true })
await repeat('text encoder', 3, async () =>
  (await pipe.encodePrompt(prompt, { doClassifierFreeGuidance: true })).promptEmbeds.toFloat32Array())

const lat = sana.Tensor.fromFloat32Array(
  Float32Array.from({ length: 2 * 32 * 32 * 32 }, (_, i) => Math.sin(i * 12.9898) * 1.5), [2, 32, 32, 32], { device })
const embeds = sana.Tensor.cat([enc.negativePromptEmbeds, enc.promptEmbeds], 0)
const mask = sana.Tensor.cat([enc.negativePromptAttentionMask, enc.promptAttentionMask], 0)
await repeat('transformer', 4, async () =>
  (await pipe.transformer.forward({ hiddenStates: lat, encoderHiddenStates: embeds, encoderAttentionMask: mask, timestep: [999, 999] })).toFloat32Array())

const z = sana.Tensor.fromFloat32Array(
  Float32Array.from({ length: 32 * 32 * 32 }, (_, i) => Math.cos(i * 78.233)), [1, 32, 32, 32], { device })
await repeat('vae decode', 2, async () => (await pipe.vae.decode(z)).toFloat32Array())

// Whole generations: the first non-finite step, and the final latents against the first run's.
let firstFinal
for (let run = 0; run < 3; run++) {
  let firstBad = null
  const r = await pipe.generate({
    prompt, numInferenceSteps: steps, guidanceScale: 4.5, height: 1024, width: 1024, seed: 42,
    useResolutionBinning: false, outputType: 'latent',
    onStep: async (e) => {
      if (firstBad === null && !(await e.latents.toFloat32Array()).every(Number.isFinite)) firstBad = e.step
    },
  })
  const final = await r.images.toFloat32Array()
  firstFinal ??= final
  report({ what: 'generate (latent)', run, t: elapsed(), firstNonFiniteStep: firstBad, ...summary(final, firstFinal) })
}
pipe.dispose()
process.exit(0)
