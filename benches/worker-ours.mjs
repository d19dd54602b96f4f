// One measurement of ours (the built package, dist/), in its own process so peak RSS is this row's.
// Usage: node benches/worker-ours.mjs '<row JSON with dir>'   → last stdout line: the result JSON.
// Progress goes to stderr as `progress <JSON>` lines, which run.mjs displays.
import { mkdirSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { randn } from './inputs.mjs'

const require = createRequire(import.meta.url)
const sana = require(resolve(fileURLToPath(new URL('.', import.meta.url)), '..', 'dist', 'index.js'))
const spec = JSON.parse(process.argv[2])
const progress = (o) => process.stderr.write(`progress ${JSON.stringify(o)}\n`)
const now = () => performance.now() / 1000
// `dtype` of the row: what the weights are held in ('float32' unless the row says; on the CPU compute stays f32).
const load = { dtype: spec.dtype ?? 'float32' }

/** Token ids spread over the vocabulary, <bos> first (as bench_gemma.rs). */
const tokenIds = (len, vocab) => Array.from({ length: len }, (_, t) => (t === 0 ? 2 : (t * 7919) % vocab))

async function setup() {
  const { kind, dir, batch: b } = spec
  if (kind === 'transformer') {
    const m = await sana.SanaTransformer2DModel.load(dir, load)
    const [h, w] = spec.latent
    const x = sana.Tensor.fromFloat32Array(randn(b * 32 * h * w), [b, 32, h, w])
    const e = sana.Tensor.fromFloat32Array(randn(b * spec.seqLen * m.config.captionChannels, 2), [b, spec.seqLen, m.config.captionChannels])
    const input = { hiddenStates: x, encoderHiddenStates: e, timestep: Array(b).fill(999) }
    return { run: () => m.forward(input) }
  }
  if (kind === 'vae') {
    const m = await sana.AutoencoderDC.load(dir, load)
    const [h, w] = spec.latent
    const z = sana.Tensor.fromFloat32Array(randn(b * 32 * h * w), [b, 32, h, w])
    // PyTorch's AutoencoderDC.decode does not tile unless asked; neither do we here.
    return { run: () => m.decode(z, { tiling: 'off' }) }
  }
  if (kind === 'text_encoder') {
    const m = await sana.Gemma2TextEncoder.load(dir, load)
    const ids = Array.from({ length: b }, () => tokenIds(spec.seqLen, m.config.vocabSize))
    const mask = ids.map((r) => r.map(() => 1))
    return { run: () => m.forward({ inputIds: ids, attentionMask: mask }) }
  }
  if (kind === 'pipeline') {
    const pipe = await sana.SanaPipeline.load(dir, load)
    const [height, width] = spec.size
    const opts = {
      prompt: Array(b).fill('a red fox in the snow, golden hour, highly detailed'),
      numInferenceSteps: spec.steps, guidanceScale: 4.5, height, width, seed: 42, useResolutionBinning: false,
    }
    return {
      run: async () => {
        const r = await pipe.generate(opts)
        return { out: r.images, stepS: r.stepTimesMs.map((ms) => ms / 1000) }
      },
    }
  }
  throw new Error(`unknown kind ${kind}`)
}

async function finite(out) {
  if (!(out instanceof sana.Tensor)) return true // images: the pipeline itself rejects non-finite latents
  const v = await out.toFloat32Array()
  return v.every(Number.isFinite)
}

const t0 = now()
const job = await setup()
const loadS = now() - t0
progress({ phase: 'loaded', loadS })
const timesS = []
const stepS = []
let last
for (let i = 0; i < spec.warmup + spec.runs; i++) {
  const warm = i < spec.warmup
  progress({ phase: warm ? 'warmup' : 'run', i: warm ? i : i - spec.warmup, n: warm ? spec.warmup : spec.runs })
  const t = now()
  const r = await job.run()
  const s = now() - t
  last = r.out ?? r
  if (!warm) {
    timesS.push(s)
    if (r.stepS) stepS.push(r.stepS)
  }
  progress({ phase: warm ? 'warmup-done' : 'run-done', s })
  if (!warm && timesS.reduce((a, x) => a + x, 0) >= spec.budgetS) break
}
const shape = last instanceof sana.Tensor ? last.shape : [last.length]
const ok = await finite(last)
// The output as raw little-endian f32, for run.mjs to compare a half-precision row with its float32 twin.
if (spec.outputFile && last instanceof sana.Tensor) {
  mkdirSync(dirname(spec.outputFile), { recursive: true })
  writeFileSync(spec.outputFile, Buffer.from((await last.toFloat32Array()).buffer))
}
console.log(JSON.stringify({
  impl: 'ours', loadS, timesS, stepS, outShape: shape, finite: ok,
  peakRssMb: process.resourceUsage().maxRSS / 1024,
  threads: Number(process.env.RAYON_NUM_THREADS) || null,
}))
