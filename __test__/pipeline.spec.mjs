// SanaPipeline.generate / stream behaviour: seeds, streaming, abort, argument checks, batching, output types.
import test from 'ava'
import { SanaError, Tensor } from '../dist/index.js'
import { loadFixturePipelines } from './helpers/pipelines.mjs'

let pipe
let sprint
test.before(async () => {
  ;({ pipe, sprint } = await loadFixturePipelines())
})

const small = { prompt: 'a red fox in snow', height: 64, width: 96, useResolutionBinning: false, numInferenceSteps: 2 }

test('the same seed gives the same latents; another seed does not', async (t) => {
  const a = await pipe.generate({ ...small, seed: 7, outputType: 'latent' })
  const b = await pipe.generate({ ...small, seed: 7, outputType: 'latent' })
  const c = await pipe.generate({ ...small, seed: 8, outputType: 'latent' })
  t.is(a.seed, 7)
  t.deepEqual(a.images.shape, [1, 32, 2, 3])
  const [va, vb, vc] = await Promise.all([a, b, c].map((r) => r.images.toFloat32Array()))
  t.deepEqual(va, vb)
  t.notDeepEqual(va, vc)
  const drawn = await pipe.generate({ ...small, outputType: 'latent' })
  t.true(Number.isSafeInteger(drawn.seed)) // a random seed is reported so the run can be repeated
})

test('stream yields one event per step, then the result', async (t) => {
  const it = pipe.stream({ ...small, numInferenceSteps: 3, seed: 1 })
  const events = []
  let result
  for (;;) {
    const { value, done } = await it.next()
    if (done) {
      result = value
      break
    }
    events.push(value)
  }
  t.deepEqual(events.map((e) => e.step), [0, 1, 2])
  t.true(events.every((e) => e.numSteps === 3 && e.latents instanceof Tensor))
  t.deepEqual(events.map((e) => e.timestep), pipe.scheduler.timesteps.slice(0, 3))
  t.is(result.images.length, 1)
  t.is(result.stepTimesMs.length, 3)
  t.is(result.images[0].width, 96)
})

test('abort rejects with AbortError within a step and leaves the pipeline usable', async (t) => {
  const ac = new AbortController()
  let steps = 0
  const err = await t.throwsAsync(
    pipe.generate({
      ...small,
      numInferenceSteps: 5,
      signal: ac.signal,
      onStep: () => {
        steps++
        if (steps === 2) ac.abort()
      },
    }),
  )
  t.true(err instanceof SanaError)
  t.is(err.code, 'ABORT_ERR')
  t.is(err.name, 'AbortError')
  t.is(steps, 2)
  const ok = await pipe.generate({ ...small, seed: 3 })
  t.is(ok.images.length, 1)
})

test('argument errors are typed, name the argument, and come before any work', async (t) => {
  const bad = [
    [{ width: 100 }, 'width'],
    [{ height: 0 }, 'height'],
    [{ numInferenceSteps: 0 }, 'numInferenceSteps'],
    [{ numInferenceSteps: 2.5 }, 'numInferenceSteps'],
    [{ guidanceScale: -1 }, 'guidanceScale'],
    [{ prompt: 42 }, 'prompt'],
    [{ prompt: ['a', 'b'], negativePrompt: ['x', 'y', 'z'] }, 'negativePrompt'],
    [{ latents: Tensor.fromFloat32Array(new Float32Array(32 * 4), [1, 32, 2, 2]) }, 'latents'],
    [{ outputType: 'jpeg' }, 'outputType'],
    [{ seed: -1 }, 'seed'],
    [{ numImagesPerPrompt: 0 }, 'numImagesPerPrompt'],
    [{ onStep: 'yes' }, 'onStep'],
  ]
  for (const [override, name] of bad) {
    let stepped = false
    const err = await t.throwsAsync(pipe.generate({ ...small, ...override, onStep: override.onStep ?? (() => (stepped = true)) }))
    t.is(err.code, 'SANA_INVALID_ARGUMENT', `${name}: ${err.message}`)
    t.true(err.message.includes(name), `${err.message} should name ${name}`)
    t.false(stepped)
  }
})

test('batches: prompts × numImagesPerPrompt, negative prompts per prompt', async (t) => {
  const res = await pipe.generate({
    ...small,
    prompt: ['a cat', 'a dog'],
    negativePrompt: ['blurry', 'dark'],
    numImagesPerPrompt: 2,
    seed: 5,
  })
  t.is(res.images.length, 4)
  t.deepEqual(res.images.map((im) => im.metadata.prompt), ['a cat', 'a cat', 'a dog', 'a dog'])
  const tensor = await pipe.generate({ ...small, outputType: 'tensor', seed: 5 })
  t.deepEqual(tensor.images.shape, [1, 3, 64, 96])
  const v = await tensor.images.toFloat32Array()
  t.true(v.every((x) => x >= 0 && x <= 1))
})

test('binning always returns exactly the requested size (even where diffusers crops short)', async (t) => {
  // 250×170 bins to a tall 1216×832 bucket; diffusers' int() arithmetic would hand back 1 row here.
  const res = await pipe.generate({ prompt: 'a tower', height: 250, width: 170, numInferenceSteps: 1, seed: 2 })
  t.is(res.images[0].height, 250)
  t.is(res.images[0].width, 170)
})

test('Sprint: 2 steps by default, guidance embedded, no CFG batch', async (t) => {
  t.true(sprint.isSprint)
  const steps = []
  const res = await sprint.generate({ prompt: 'a cat', height: 64, width: 96, useResolutionBinning: false, seed: 4, onStep: (e) => steps.push(e.timestep) })
  t.is(steps.length, 2)
  t.is(res.images.length, 1)
})

test('concurrent generate calls on one pipeline are serialised, not interleaved', async (t) => {
  const [a, b] = await Promise.all([
    pipe.generate({ ...small, seed: 11, outputType: 'latent' }),
    pipe.generate({ ...small, seed: 11, outputType: 'latent' }),
  ])
  t.deepEqual(await a.images.toFloat32Array(), await b.images.toFloat32Array())
})
