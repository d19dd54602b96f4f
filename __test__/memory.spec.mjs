// Memory planner (src/memory.ts): parameter counts against the loaded fixtures, the VAE figure from the native
// planner, assertFits' SANA_OUT_OF_MEMORY and what it says fits, availableMemory; and DC-AE-Lite as a
// pipeline's vae component.
import test from 'ava'
import { join } from 'node:path'
import {
  AutoencoderDC,
  assertFits,
  availableMemory,
  estimateMemory,
  Gemma2TextEncoder,
  MODEL_PRESETS,
  SanaError,
  SanaPipeline,
  SanaTransformer2DModel,
} from '../dist/index.js'
import { FIXTURES, SANA_TINY } from './helpers/paths.mjs'

const LITE = join(FIXTURES, 'wave2', 'dc-ae-lite-tiny')

const elements = (component) => component.tensorInfo().reduce((n, i) => n + i.shape.reduce((a, b) => a * b, 1), 0)

let tiny
test.before(async () => {
  const [transformer, vae, textEncoder, lite] = await Promise.all([
    SanaTransformer2DModel.load(join(SANA_TINY, 'transformer')),
    AutoencoderDC.load(join(SANA_TINY, 'vae')),
    Gemma2TextEncoder.load(join(SANA_TINY, 'text_encoder')),
    AutoencoderDC.load(LITE),
  ])
  tiny = { transformer, vae, textEncoder, lite }
})

const configsOf = (vae = tiny.vae) => ({ transformer: tiny.transformer.config, vae: vae.config, textEncoder: tiny.textEncoder.config })

test('weights: the counts from configs equal the loaded tensors (transformer, both VAEs, text encoder)', (t) => {
  // On CUDA the embedding is resident; on CPU it stays mapped and is left out.
  const cuda = estimateMemory({ model: configsOf(), device: 'cuda', dtype: 'float32' }).weights
  t.is(cuda.transformer, 4 * elements(tiny.transformer))
  t.is(cuda.vae, 4 * elements(tiny.vae))
  t.is(cuda.textEncoder, 4 * elements(tiny.textEncoder))
  const cpu = estimateMemory({ model: configsOf() }).weights
  const { vocabSize, hiddenSize } = tiny.textEncoder.config
  t.is(cpu.textEncoder, cuda.textEncoder - 4 * vocabSize * hiddenSize)
  t.is(estimateMemory({ model: configsOf(tiny.lite), device: 'cuda', dtype: 'float32' }).weights.vae, 4 * elements(tiny.lite))
  // bf16 halves them.
  t.is(estimateMemory({ model: configsOf(), device: 'cuda' }).weights.transformer, 2 * elements(tiny.transformer))
})

test('presets: parameter counts of the released models', (t) => {
  const params = (name) => estimateMemory({ model: name, device: 'cuda', dtype: 'float32' }).weights.transformer / 4 / 1e9
  t.true(Math.abs(params('600m') - 0.59) < 0.01, `600m: ${params('600m')}`)
  t.true(Math.abs(params('1.6b') - 1.6) < 0.03, `1.6b: ${params('1.6b')}`)
  t.true(Math.abs(params('4.8b') - 4.7) < 0.1, `4.8b: ${params('4.8b')}`)
  const vae = estimateMemory({ model: '600m', device: 'cuda', dtype: 'float32' }).weights.vae / 4 / 1e6
  t.true(vae > 300 && vae < 330, `dc-ae-f32c32: ${vae}M`) // 1.22 GB of f32 random weights in benches/RESULTS.md
  for (const name of Object.keys(MODEL_PRESETS)) t.is(typeof MODEL_PRESETS[name].description, 'string')
  // Native sizes: the 4K preset defaults to 4096².
  t.is(estimateMemory({ model: '1.6b-4k' }).width, 4096)
})

test('estimates scale: activations with batch and size, CFG doubles the transformer batch, tiling caps the decode', (t) => {
  const base = estimateMemory({ model: '1.6b', width: 1024, height: 1024 })
  t.is(base.transformerBatch, 2)
  t.is(estimateMemory({ model: '1.6b', guidance: false }).transformerBatch, 1)
  const b4 = estimateMemory({ model: '1.6b', batch: 4 })
  t.true(b4.activations.transformer > 3 * base.activations.transformer)
  t.is(b4.weightsTotal, base.weightsTotal)
  const big = estimateMemory({ model: '1.6b', width: 4096, height: 4096 })
  // 16× the pixels: the one-pass decode grows 16×, the planned (auto-tiled) one stays near the 4 GiB budget.
  t.true(Math.abs(big.vaeDecode.untiledBytes - 2 * 2 ** 25 - 16 * (base.vaeDecode.untiledBytes - 2 * 2 ** 25)) < 1e3)
  t.true(big.vaeDecode.plannedTiled && !base.vaeDecode.plannedTiled)
  t.true(big.activations.vaeDecode < 1.25 * 4 * 2 ** 30 && big.vaeDecode.tileSize > 8)
  t.is(big.peak, big.weightsTotal + big.runtime + Math.max(...Object.values(big.activations)))
  // Tiling off: the planned decode is the one-pass figure (the same decision the native decode makes).
  const off = estimateMemory({ model: '1.6b', width: 4096, height: 4096, decode: { tiling: 'off' } })
  t.is(off.activations.vaeDecode, off.vaeDecode.untiledBytes)
  // A small budget makes the native planner tile even 1024².
  const tight = estimateMemory({ model: '1.6b', decode: { memoryBudgetMb: 512 } })
  t.true(tight.vaeDecode.plannedTiled && tight.vaeDecode.tileSize < 32)
})

test('bad estimate options are SANA_INVALID_ARGUMENT naming the option', (t) => {
  const bad = (o, name) => t.throws(() => estimateMemory({ model: '600m', ...o }), { instanceOf: SanaError, code: 'SANA_INVALID_ARGUMENT', message: new RegExp(name) })
  bad({ width: 1000 }, 'width')
  bad({ width: 2 ** 21 }, 'width')
  bad({ height: 0 }, 'height')
  bad({ batch: 1.5 }, 'batch')
  bad({ batch: 1e9 }, 'batch')
  bad({ device: 'tpu' }, 'device')
  bad({ dtype: 'int8' }, 'dtype')
  bad({ model: 'sd3' }, 'model')
})

test('assertFits: returns the estimate when it fits; otherwise SANA_OUT_OF_MEMORY with a batch that fits', (t) => {
  const est = estimateMemory({ model: '600m', batch: 8 })
  t.deepEqual(assertFits({ model: '600m', batch: 8, available: est.peak }), est)
  const err = t.throws(() => assertFits({ model: '600m', batch: 1000, available: est.peak }), { instanceOf: SanaError, code: 'SANA_OUT_OF_MEMORY' })
  t.regex(err.message, /1000 images of 1024×1024 on cpu/)
  const fit = Number(/(\d+) images? per call fits?\b/.exec(err.message)?.[1])
  t.true(fit >= 1, err.message)
  t.true(estimateMemory({ model: '600m', batch: fit }).peak <= est.peak)
  t.true(estimateMemory({ model: '600m', batch: fit + 1 }).peak > est.peak)
  // With the weights already loaded only the activations count.
  const act = est.peak - est.weightsTotal - est.runtime
  t.notThrows(() => assertFits({ model: '600m', batch: 8, available: act, weightsLoaded: true }))
  t.throws(() => assertFits({ model: '600m', batch: 8, available: act - 1, weightsLoaded: true }), { code: 'SANA_OUT_OF_MEMORY' })
})

test('assertFits: when no batch fits it names the largest size at batch 1, and says when tiling would fit', (t) => {
  const one = estimateMemory({ model: '600m', width: 2048, height: 1024, decode: { tiling: 'off' } })
  const err = t.throws(() => assertFits({ model: '600m', width: 2048, height: 1024, decode: { tiling: 'off' }, available: one.weightsTotal + one.runtime + 2 ** 28 }), { code: 'SANA_OUT_OF_MEMORY' })
  const m = /largest size of this aspect that fits is (\d+)×(\d+)/.exec(err.message)
  t.truthy(m, err.message)
  t.is(Number(m[1]), 2 * Number(m[2]))
  t.true(Number(m[1]) < 2048)
  // 4K untiled does not fit in 12 GiB of activations; tiled it does.
  const e4k = t.throws(() => assertFits({ model: '600m', width: 4096, height: 4096, decode: { tiling: 'off' }, available: 8 * 2 ** 30, weightsLoaded: true }), { code: 'SANA_OUT_OF_MEMORY' })
  t.regex(e4k.message, /fits with VAE tiling/)
})

test('availableMemory: a positive number on CPU; CUDA is a number or unknown, with its source', (t) => {
  const cpu = availableMemory('cpu')
  t.true(cpu.bytes > 0, JSON.stringify(cpu))
  t.true(cpu.bytes <= 2 ** 50)
  t.regex(cpu.source, /MemAvailable|freemem|cgroup/)
  const cuda = availableMemory('cuda:0')
  t.true(cuda.bytes === undefined ? /unknown/.test(cuda.source) : cuda.bytes >= 0, JSON.stringify(cuda))
  t.throws(() => availableMemory('tpu'), { code: 'SANA_INVALID_ARGUMENT' })
  // Unknown availability skips the check instead of guessing.
  if (cuda.bytes === undefined) t.notThrows(() => assertFits({ model: '4.8b', device: 'cuda', batch: 1000 }))
})

test('DC-AE-Lite as the vae component of a pipeline generates a finite image', async (t) => {
  const pipe = await SanaPipeline.load(SANA_TINY, { components: { vae: tiny.lite } })
  t.is(pipe.vae, tiny.lite)
  const out = await pipe.generate({ prompt: 'a red fox in snow', height: 64, width: 96, useResolutionBinning: false, numInferenceSteps: 2, seed: 1, outputType: 'tensor' })
  t.deepEqual(out.images.shape, [1, 3, 64, 96])
  const px = await out.images.toFloat32Array()
  t.true(px.every(Number.isFinite))
  // It decodes through the Lite decoder: different from the base VAE's image for the same latents.
  const base = await SanaPipeline.load(SANA_TINY, { components: { transformer: pipe.transformer, textEncoder: pipe.textEncoder, tokenizer: pipe.tokenizer } })
  const ref = await (await base.generate({ prompt: 'a red fox in snow', height: 64, width: 96, useResolutionBinning: false, numInferenceSteps: 2, seed: 1, outputType: 'tensor' })).images.toFloat32Array()
  t.true(px.some((v, i) => Math.abs(v - ref[i]) > 1e-3))
})

test('absurd sizes are refused by assertFits before any work, with finite numbers', (t) => {
  const est = estimateMemory({ model: '600m', width: 1e6, height: 1e6 })
  t.true(Number.isFinite(est.peak) && est.peak > 1e12)
  t.throws(() => assertFits({ model: '600m', width: 1e6, height: 1e6, available: 16 * 2 ** 30 }), { code: 'SANA_OUT_OF_MEMORY', message: /1000000×1000000/ })
})
