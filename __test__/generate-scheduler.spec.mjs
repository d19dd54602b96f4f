// The per-call `scheduler` option of SanaPipeline.generate: which sampler drives the loop, and which are refused.
import test from 'ava'
import {
  DPMSolverMultistepScheduler,
  FlowMatchEulerDiscreteScheduler,
  SCMScheduler,
} from '../dist/index.js'
import { loadFixturePipelines } from './helpers/pipelines.mjs'

let pipe
let sprint
test.before(async () => {
  ;({ pipe, sprint } = await loadFixturePipelines())
})
test.after.always(() => {
  sprint?.transformer.dispose()
  pipe?.dispose()
})

const base = { prompt: 'a red fox in snow', height: 64, width: 96, useResolutionBinning: false, numInferenceSteps: 2, seed: 7 }

async function run(options) {
  const timesteps = []
  const res = await pipe.generate({ ...base, outputType: 'latent', onStep: (e) => timesteps.push(e.timestep), ...options })
  return { timesteps, latents: await res.images.toFloat32Array() }
}

test('a given scheduler drives the loop instead of pipe.scheduler', async (t) => {
  const own = await run({})
  t.deepEqual(own.timesteps, [999, 749]) // DPM-Solver, flow shift 3: int64(σ·1000)
  // A fresh DPM-Solver from the same config reproduces the default exactly.
  const dpm = await run({ scheduler: new DPMSolverMultistepScheduler(pipe.schedulerConfig) })
  t.deepEqual(dpm.timesteps, own.timesteps)
  t.deepEqual(dpm.latents, own.latents)
  // Flow-match Euler with the same shift: its own schedule (diffusers' [1000, 8.93] for 2 steps), other latents.
  const euler = new FlowMatchEulerDiscreteScheduler({ shift: 3 })
  const e = await run({ scheduler: euler })
  t.deepEqual(e.timesteps, euler.timesteps)
  t.is(e.timesteps[0], 1000)
  t.true(Math.abs(e.timesteps[1] - 8.9286) < 1e-3)
  t.notDeepEqual(e.latents, own.latents)
  // pipe.scheduler is untouched and still the default afterwards.
  t.deepEqual((await run({})).latents, own.latents)
})

test('the PNG metadata names the scheduler used', async (t) => {
  const { images } = await pipe.generate({ ...base, scheduler: new FlowMatchEulerDiscreteScheduler({ shift: 3 }) })
  t.is(images[0].metadata.scheduler, 'FlowMatchEulerDiscreteScheduler')
  const { images: own } = await pipe.generate(base)
  t.is(own[0].metadata.scheduler, 'DPMSolverMultistepScheduler')
})

test('a scheduler that does not fit the pipeline is refused before any work', async (t) => {
  const onSana = await t.throwsAsync(pipe.generate({ ...base, scheduler: new SCMScheduler() }))
  t.is(onSana.code, 'SANA_INVALID_ARGUMENT')
  t.regex(onSana.message, /^Expected a DPMSolverMultistepScheduler or FlowMatchEulerDiscreteScheduler \(Sana pipeline\) for scheduler but received an object \(SCMScheduler\)$/)
  const onSprint = await t.throwsAsync(sprint.generate({ ...base, scheduler: new DPMSolverMultistepScheduler() }))
  t.is(onSprint.code, 'SANA_INVALID_ARGUMENT')
  t.regex(onSprint.message, /Expected a SCMScheduler \(Sprint pipeline\) for scheduler/)
  const notOne = await t.throwsAsync(pipe.generate({ ...base, scheduler: { className: 'FlowMatchEulerDiscreteScheduler' } }))
  t.is(notOne.code, 'SANA_INVALID_ARGUMENT')
})
