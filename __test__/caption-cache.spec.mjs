// The per-generation caption cache through the package API: a forward with it equals the forward without it
// (batch 2 CFG with a mask; the ControlNet beside the transformer), a new caption recomputes, and the sampling
// loop owns one cache per generation and frees it however the loop ends.
import test from 'ava'
import { CaptionCache, SanaControlNetModel, SanaTransformer2DModel, Tensor } from '../dist/index.js'
import { sample } from '../dist/sampling/loop.js'
import { transformerInput } from './helpers/tensors.mjs'
import { caseOf, caseTensor, wave2Path } from './helpers/wave2.mjs'

const LORA = 'lora_transformer_scale_1'
const CONTROLNET = 'controlnet_forward'

async function maxDiff(a, b) {
  const [x, y] = [await a.toFloat32Array(), await b.toFloat32Array()]
  let m = 0
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - y[i]))
  return m
}

test('a transformer forward with the cache equals the one without, for every step; a new caption recomputes', async (t) => {
  const tr = await SanaTransformer2DModel.load(wave2Path(caseOf(LORA).model_dir))
  const input = transformerInput((role) => caseTensor(LORA, role)) // batch 2 [uncond; cond] with a mask
  const cache = new CaptionCache()
  t.is(cache.bytes, 0)
  for (const timestep of [input.timestep, input.timestep.map((v) => v * 0.5)]) {
    const step = { ...input, timestep }
    t.true((await maxDiff(await tr.forward({ ...step, captionCache: cache }), await tr.forward(step))) <= 1e-6)
  }
  const { numLayers, numCrossAttentionHeads, crossAttentionHeadDim } = tr.config
  const [b, s] = input.encoderHiddenStates.shape
  t.true(cache.bytes >= 2 * numLayers * b * s * numCrossAttentionHeads * crossAttentionHeadDim * 4)
  t.is(cache.entries, 1)
  // Another caption (a new tensor): recomputed, so still equal to the uncached forward, and still one entry.
  const other = { ...input, encoderHiddenStates: Tensor.linearCombination([input.encoderHiddenStates], [1.5]) }
  const changed = await tr.forward({ ...other, captionCache: cache })
  t.true((await maxDiff(changed, await tr.forward(other))) <= 1e-6)
  t.true((await maxDiff(changed, await tr.forward(input))) > 1e-4)
  t.is(cache.entries, 1)
  cache.dispose()
  cache.dispose()
  t.deepEqual([cache.bytes, cache.entries], [0, 0])
  const err = await t.throwsAsync(tr.forward({ ...input, captionCache: {} }))
  t.is(err.code, 'SANA_INVALID_ARGUMENT')
  t.regex(err.message, /captionCache/)
})

test('the ControlNet and the transformer share one cache, an entry each', async (t) => {
  const c = caseOf(CONTROLNET)
  const [controlnet, tr] = await Promise.all([SanaControlNetModel.load(wave2Path(c.model_dir)), SanaTransformer2DModel.load(wave2Path(c.transformer_dir))])
  const input = transformerInput((role) => caseTensor(CONTROLNET, role))
  const cond = Tensor.fromFloat32Array(caseTensor(CONTROLNET, 'controlnet_cond').data, caseTensor(CONTROLNET, 'controlnet_cond').shape)
  const cache = new CaptionCache()
  const cnInput = { ...input, controlnetCond: cond, conditioningScale: c.conditioning_scale }
  const [plain, cached] = [await controlnet.forward(cnInput), await controlnet.forward({ ...cnInput, captionCache: cache })]
  for (const [i, s] of plain.entries()) t.true((await maxDiff(cached[i], s)) <= 1e-6)
  const dit = { ...input, controlnetBlockSamples: plain }
  t.true((await maxDiff(await tr.forward({ ...dit, captionCache: cache }), await tr.forward(dit))) <= 1e-6)
  t.is(cache.entries, 2)
  cache.dispose()
})

/** A two-step recipe on [1] tensors whose denoiser records the cache of every call. */
function fakeLoop({ failAt } = {}) {
  const seen = []
  const x = Tensor.fromFloat32Array(new Float32Array([1]), [1])
  const recipe = {
    init: async () => ({ latents: x, timesteps: [999, 500] }),
    modelInputs: async (latents, t, _step, captionCache) => ({ hiddenStates: latents, encoderHiddenStates: x, timestep: [t], captionCache }),
    combine: (output) => output,
    stepOptions: () => ({}),
    afterStep: (out) => ({ latents: out.prevSample, denoised: out.prevSample }),
    finish: (last) => last.latents,
  }
  const scheduler = { step: async (prediction) => ({ prevSample: prediction, denoised: prediction }) }
  const transformer = {
    forward: async (input) => {
      seen.push(input.captionCache)
      if (seen.length === failAt) throw new Error('boom')
      return input.hiddenStates
    },
  }
  return { seen, loop: sample(recipe, scheduler, transformer) }
}

test('the sampling loop gives every step one cache and disposes it when it ends, fails or is stopped', async (t) => {
  const disposed = new Set()
  const dispose = CaptionCache.prototype.dispose
  CaptionCache.prototype.dispose = function () {
    disposed.add(this)
    dispose.call(this)
  }
  t.teardown(() => {
    CaptionCache.prototype.dispose = dispose
  })
  // Ran to the end: both steps got the same cache, disposed once the loop finished.
  const done = fakeLoop()
  for await (const _ of done.loop);
  t.is(done.seen.length, 2)
  t.true(done.seen[0] instanceof CaptionCache)
  t.is(done.seen[0], done.seen[1])
  t.true(disposed.has(done.seen[0]))
  // A failing forward.
  const failed = fakeLoop({ failAt: 1 })
  await t.throwsAsync(failed.loop.next(), { message: 'boom' })
  t.true(disposed.has(failed.seen[0]))
  // A consumer that stops after the first step.
  const stopped = fakeLoop()
  await stopped.loop.next()
  t.false(disposed.has(stopped.seen[0]))
  await stopped.loop.return(undefined)
  t.true(disposed.has(stopped.seen[0]))
})
