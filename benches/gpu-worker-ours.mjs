// GPU measurements of ours (issue 7), one process: the pipeline loads once, then per batch size the DiT
// forward of one CFG step and the whole `generate`. Usage: node benches/gpu-worker-ours.mjs '<spec JSON>'
// → last stdout line: the result JSON. Progress: `progress <JSON>` lines on stderr (as worker-ours.mjs).
import { createRequire } from 'node:module'
import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { randn } from './inputs.mjs'

const require = createRequire(import.meta.url)
const sana = require(resolve(fileURLToPath(new URL('.', import.meta.url)), '..', 'dist', 'index.js'))
const spec = JSON.parse(process.argv[2])
const progress = (o) => process.stderr.write(`progress ${JSON.stringify(o)}\n`)
const now = () => performance.now() / 1000
const started = now()
const overDeadline = () => now() - started > spec.deadlineS

/** Time `fn` (which must return once the GPU is done): `warmup` untimed runs, then up to `runs` timed ones within `budgetS`. */
async function timeIt(label, fn, { warmup, runs, budgetS }, timesS = []) {
  for (let i = 0; i < warmup; i++) {
    progress({ phase: 'warmup', what: label, i, n: warmup })
    await fn(true)
  }
  while (timesS.length < runs && (timesS.length === 0 || timesS.reduce((a, b) => a + b, 0) < budgetS)) {
    progress({ phase: 'run', what: label, i: timesS.length, n: runs })
    const t = now()
    await fn(false)
    timesS.push(now() - t)
  }
  return timesS
}

const t0 = now()
const pipe = await sana.SanaPipeline.load(spec.dir, { device: spec.device, dtype: spec.dtype })
const loadS = now() - t0
progress({ phase: 'loaded', loadS })
const { transformer } = pipe
const [h, w] = [spec.size / 32, spec.size / 32]

async function measureBatch(b) {
  // One denoising step with CFG: the transformer on 2·b latents (negative and positive halves).
  const n = 2 * b
  const input = {
    hiddenStates: sana.Tensor.fromFloat32Array(randn(n * 32 * h * w), [n, 32, h, w], { device: spec.device }),
    encoderHiddenStates: sana.Tensor.fromFloat32Array(randn(n * 300 * transformer.config.captionChannels, 2), [n, 300, transformer.config.captionChannels], { device: spec.device }),
    timestep: Array(n).fill(999),
  }
  let out
  const ditS = await timeIt(`DiT b${b}`, async () => {
    out = await transformer.forward(input)
    await out.synchronize()
  }, spec.dit)
  const finite = (await out.toFloat32Array()).every(Number.isFinite)
  result.dit.push({ batch: b, timesS: ditS, finite })

  const opts = {
    prompt: Array(b).fill('a red fox in the snow, golden hour, highly detailed'),
    numInferenceSteps: spec.steps, guidanceScale: 4.5, height: spec.size, width: spec.size, seed: 42,
    useResolutionBinning: false,
  }
  // The row is kept with the runs that finished even if a later run fails.
  const row = { batch: b, timesS: [], stepS: [] }
  result.e2e.push(row)
  await timeIt(`pipeline b${b}`, async (warm) => {
    // The warm-up runs 2 steps: enough to load every kernel and size every buffer.
    const r = await pipe.generate(warm ? { ...opts, numInferenceSteps: 2 } : opts)
    if (!warm) row.stepS = r.stepTimesMs.map((ms) => ms / 1000)
  }, spec.e2e, row.timesS)
}

const result = { impl: 'ours', device: pipe.device, dtype: spec.dtype, loadS, dit: [], e2e: [], skipped: [] }

for (const b of spec.batches) {
  if (overDeadline()) {
    result.skipped.push(`batch ${b}: over the ${spec.deadlineS} s deadline`)
    continue
  }
  try {
    await measureBatch(b)
  } catch (e) {
    result.skipped.push(`batch ${b}: ${e.code ?? ''} ${e.message}`.trim())
  }
  result.peakRssMb = process.resourceUsage().maxRSS / 1024
  console.log(JSON.stringify(result)) // after every batch: a worker stopped at its time limit keeps its rows
}
pipe.dispose()
// Exit explicitly: a pending CUDA teardown must not keep the benchmark waiting.
process.exit(0)
