// Calls on one pipeline run in turn: a throwing onStep, an abort while waiting, and unknown options must never
// wedge the pipeline or run something the caller did not ask for.
import test from 'ava'
import { setTimeout as sleep } from 'node:timers/promises'
import { Tensor } from '../dist/index.js'
import { loadFixturePipelines } from './helpers/pipelines.mjs'

let pipe
test.before(async () => {
  ;({ pipe } = await loadFixturePipelines())
})

const small = { prompt: 'a red fox in snow', height: 64, width: 96, useResolutionBinning: false, numInferenceSteps: 2, seed: 3 }
/** Reject if `p` takes longer than `ms` (so a wedged queue fails the test instead of hanging it). */
const within = (p, ms, what) => Promise.race([p, sleep(ms).then(() => { throw new Error(`${what} did not settle within ${ms} ms`) })])

test.serial('an exception in onStep rejects with that error, and the next call runs', async (t) => {
  const boom = new Error('user callback failed')
  const err = await t.throwsAsync(pipe.generate({ ...small, onStep: () => { throw boom } }))
  t.is(err, boom)
  const async = await t.throwsAsync(pipe.generate({ ...small, onStep: async () => { throw boom } }))
  t.is(async, boom)
  const next = await within(pipe.generate({ ...small, outputType: 'latent' }), 60_000, 'the next generate')
  t.deepEqual(next.images.shape, [1, 32, 2, 3])
  // Breaking out of stream() early frees the turn too.
  for await (const _ of pipe.stream(small)) break
  await within(pipe.generate({ ...small, outputType: 'latent' }), 60_000, 'generate after a broken stream')
  t.pass()
})

test.serial('a call waiting for its turn rejects as soon as its signal fires; the queue keeps its order', async (t) => {
  let firstDone = false
  const first = pipe.generate({ ...small, numInferenceSteps: 400, outputType: 'latent' }).then((r) => ((firstDone = true), r))
  const ac = new AbortController()
  const second = pipe.generate({ ...small, signal: ac.signal, outputType: 'latent' })
  const third = pipe.generate({ ...small, outputType: 'latent' })
  await sleep(50)
  ac.abort()
  const err = await t.throwsAsync(within(second, 2_000, 'the aborted waiting call'))
  t.is(err.code, 'ABORT_ERR')
  t.false(firstDone, 'the aborted call rejected before the running one finished')
  await first
  t.deepEqual((await third).images.shape, [1, 32, 2, 3])
  // An already-aborted signal rejects without waiting at all.
  const pre = AbortSignal.abort()
  t.is((await t.throwsAsync(pipe.generate({ ...small, signal: pre }))).code, 'ABORT_ERR')
})

test('unknown option keys are rejected, naming the closest known option', async (t) => {
  const err = await t.throwsAsync(pipe.generate({ ...small, numInferenceStep: 4 }))
  t.is(err.code, 'SANA_INVALID_ARGUMENT')
  t.regex(err.message, /unknown option "numInferenceStep"; did you mean "numInferenceSteps"\?/)
  const far = await t.throwsAsync(pipe.generate({ ...small, zzz: 1 }))
  t.regex(far.message, /unknown option "zzz"$/)
  // An explicit undefined is not a typo worth failing on (spread option objects produce them).
  await t.notThrowsAsync(pipe.generate({ ...small, outputType: 'latent', negativePrompt: undefined }))
})

test('a latents shape error says when resolution binning chose the size', async (t) => {
  const latents = Tensor.fromFloat32Array(new Float32Array(32 * 10 * 10), [1, 32, 10, 10])
  const err = await t.throwsAsync(pipe.generate({ prompt: 'x', height: 320, width: 320, latents, numInferenceSteps: 1 }))
  t.regex(err.message, /after resolution binning/)
})

test('a batch that cannot fit is refused before any work with SANA_OUT_OF_MEMORY saying what fits', async (t) => {
  const started = performance.now()
  for (const o of [
    { numImagesPerPrompt: 5_000, height: 4096, width: 4096 },
    { numImagesPerPrompt: 1_000 }, // the tiny model's native 1024²: ≈ 31 GiB, more than this 24 GB machine
    { width: 999_968 }, // 1e6 rounded to a multiple of 32, at the native height
  ]) {
    const err = await t.throwsAsync(pipe.generate({ prompt: 'x', useResolutionBinning: false, ...o }))
    t.is(err.code, 'SANA_OUT_OF_MEMORY', JSON.stringify(o))
    t.regex(err.message, /fit/)
  }
  t.true(performance.now() - started < 5_000, 'refused up front, not after generating')
  // The pipeline is still usable.
  t.deepEqual((await pipe.generate({ ...small, outputType: 'latent' })).images.shape, [1, 32, 2, 3])
})
