// Schedulers against the `schedulers` fixture case (timesteps, sigmas, full trajectories of a synthetic
// model), plus the scheduler part of the e2e cases replayed from their recorded transformer outputs.
import test from 'ava'
import { readFileSync } from 'node:fs'
import path from 'node:path'

import {
  DPMSolverMultistepScheduler,
  FlowMatchEulerDiscreteScheduler,
  SCMScheduler,
  SanaError,
  Tensor,
  parsePythonJson,
  schedulerFromConfig,
} from '../dist/index.js'
import { FIXTURES, allclose, getCase, loadReference, stepSlice, tensorFor } from './helpers/fixtures.mjs'


const readConfig = (dir) => parsePythonJson(readFileSync(path.join(FIXTURES, dir, 'scheduler/scheduler_config.json'), 'utf8'))
const toTensor = ({ data, shape }) => Tensor.fromFloat32Array(Float32Array.from(data), shape)

/** The scheduler each fixture entry was produced with, built the way a user would. */
function schedulerFor(entry) {
  if (entry.name === 'flow_dpm_solver') return schedulerFromConfig(readConfig('sana-tiny'))
  if (entry.name === 'flow_euler') return new FlowMatchEulerDiscreteScheduler(entry.config)
  if (entry.name === 'scm') return schedulerFromConfig(readConfig('sana-sprint-tiny'))
  throw new Error(`unknown scheduler entry ${entry.name}`)
}

/** Decode the manifest's strings for non-finite numbers. */
const decodeNonFinite = (v) => ({ Infinity: Infinity, '-Infinity': -Infinity, NaN: NaN })[v] ?? v

test('the Sana scheduler config parses (with -Infinity) to the config diffusers loaded', (t) => {
  const file = readConfig('sana-tiny')
  t.is(file.lambda_min_clipped, -Infinity)
  const loaded = getCase('schedulers').schedulers.find((s) => s.name === 'flow_dpm_solver').config
  for (const [key, value] of Object.entries(file)) t.deepEqual(value, decodeNonFinite(loaded[key]), key)
  const scheduler = schedulerFromConfig(file)
  t.true(scheduler instanceof DPMSolverMultistepScheduler)
  t.is(scheduler.config.flow_shift, 3)
  t.true(schedulerFromConfig(readConfig('sana-sprint-tiny')) instanceof SCMScheduler)
})

const schedulersCase = getCase('schedulers')
for (const entry of schedulersCase.schedulers) {
  const tol = entry.tolerance
  for (const run of entry.runs) {
    const n = run.num_inference_steps
    test(`${entry.name}: ${n} steps — timesteps, sigmas and trajectory`, async (t) => {
      const scheduler = schedulerFor(entry)
      if (entry.name === 'scm') scheduler.setTimesteps(n, { maxTimesteps: 1.5708 })
      else scheduler.setTimesteps(n)
      t.is(scheduler.numInferenceSteps, n)

      // 1. Timesteps (int64 for DPM-Solver, float32 otherwise) are what the transformer sees: exactly equal.
      t.deepEqual(scheduler.timesteps, Array.from(tensorFor(run.timesteps).data, Number))
      // 2. Sigmas (SCM has none).
      if (run.sigmas) {
        const r = allclose(scheduler.sigmas, tensorFor(run.sigmas).data, tol)
        t.true(r.ok, `sigmas max err ${r.maxAbsErr}`)
      } else {
        t.deepEqual(scheduler.sigmas, [])
      }

      // 3. Trajectory of the synthetic model v_k = 0.5·x_k + (0.1·cos k)·c.
      const ref = loadReference()
      const c = toTensor(ref.get(getCase('schedulers').synthetic_model.c))
      let x = toTensor(ref.get(getCase('schedulers').synthetic_model.sample_0))
      const trajectory = tensorFor(run.trajectory)
      const noise = run.noise && tensorFor(run.noise)
      const predX0 = run.pred_x0 && tensorFor(run.pred_x0)
      let worst = 0
      const steps = scheduler.timesteps.slice(0, scheduler.numInferenceSteps)
      for (const [k, ts] of steps.entries()) {
        const v = Tensor.linearCombination([x, c], [0.5, 0.1 * Math.cos(k)])
        const options = noise ? { noise: toTensor(stepSlice(noise, k)) } : {}
        const out = await scheduler.step(v, ts, x, options)
        x = out.prevSample
        const r = allclose(x.toFloat32ArraySync(), stepSlice(trajectory, k).data, tol)
        t.true(r.ok, `step ${k}: max err ${r.maxAbsErr}`)
        worst = Math.max(worst, r.maxAbsErr)
        if (predX0) {
          const d = allclose(out.denoised.toFloat32ArraySync(), stepSlice(predX0, k).data, tol)
          t.true(d.ok, `step ${k} pred_x0: max err ${d.maxAbsErr}`)
          worst = Math.max(worst, d.maxAbsErr)
        }
      }
      t.log(`max |err| ${worst.toExponential(2)} (atol ${tol.atol}, rtol ${tol.rtol})`)
    })
  }
}

test('setTimesteps resets the solver history: a second generation repeats the first', async (t) => {
  const scheduler = new DPMSolverMultistepScheduler()
  const x0 = Tensor.fromFloat32Array(Float32Array.from({ length: 24 }, (_, i) => Math.sin(i)), [1, 2, 3, 4])
  const run = async () => {
    scheduler.setTimesteps(6)
    let x = x0
    for (const ts of scheduler.timesteps) x = (await scheduler.step(Tensor.linearCombination([x], [0.5]), ts, x)).prevSample
    return x.toFloat32ArraySync()
  }
  t.deepEqual(await run(), await run())
})

// ---------------------------------------------------------------------------------------------------
// The scheduler side of the end-to-end cases, replayed from the recorded transformer outputs.
// ---------------------------------------------------------------------------------------------------

/** Split a [2B, ...] CFG batch (negative first) into its two halves. */
function halves({ data, shape }) {
  const half = data.length / 2
  const s = [shape[0] / 2, ...shape.slice(1)]
  return [toTensor({ data: data.subarray(0, half), shape: s }), toTensor({ data: data.subarray(half), shape: s })]
}

for (const name of ['e2e_a_cfg', 'e2e_b_binning', 'e2e_c_nocfg']) {
  test(`${name}: DPM-Solver timesteps and latents from the recorded transformer outputs`, async (t) => {
    const c = getCase(name)
    const g = c.call_kwargs.guidance_scale
    const scheduler = schedulerFromConfig(readConfig('sana-tiny'))
    scheduler.setTimesteps(c.call_kwargs.num_inference_steps)
    t.deepEqual(scheduler.timesteps, Array.from(tensorFor(c.tensors.scheduler_timesteps).data, Number))
    const transformerTimesteps = tensorFor(c.tensors.transformer_timesteps)
    const outputs = tensorFor(c.tensors.transformer_output_per_step)
    const latentsPerStep = tensorFor(c.tensors.latents_per_step)
    let x = toTensor(tensorFor(c.tensors.input_latents))
    let worst = 0
    for (const [k, ts] of scheduler.timesteps.entries()) {
      for (const v of stepSlice(transformerTimesteps, k).data) t.is(v, scheduler.transformerTimestep(ts))
      let noise = toTensor(stepSlice(outputs, k))
      if (g > 1) {
        // noise = uncond + g·(text − uncond), in float32 as diffusers computes it.
        const [uncond, text] = halves(stepSlice(outputs, k))
        noise = Tensor.linearCombination([uncond, Tensor.linearCombination([text, uncond], [1, -1])], [1, g])
      }
      x = (await scheduler.step(noise, ts, x)).prevSample
      const r = allclose(x.toFloat32ArraySync(), stepSlice(latentsPerStep, k).data, c.tolerance.final_latents)
      t.true(r.ok, `step ${k}: max err ${r.maxAbsErr}`)
      worst = Math.max(worst, r.maxAbsErr)
    }
    t.log(`max |err| ${worst.toExponential(2)} (final_latents atol ${c.tolerance.final_latents.atol})`)
  })
}

test('sprint_e2e: SCM schedule, TrigFlow scalars and latents from the recorded transformer outputs', async (t) => {
  const c = getCase('sprint_e2e')
  const tol = c.tolerance.final_latents
  const scheduler = schedulerFromConfig(readConfig('sana-sprint-tiny'))
  scheduler.setTimesteps(c.call_kwargs.num_inference_steps)
  const steps = scheduler.timesteps.slice(0, scheduler.numInferenceSteps)
  t.deepEqual(steps, Array.from(tensorFor(c.tensors.scheduler_timesteps).data))

  const T = (role) => tensorFor(c.tensors[role])
  const [transformerTimesteps, inputs, outputs, noises, denoisedRef, latentsRef] = [
    'transformer_timesteps', 'transformer_input_per_step', 'transformer_output_per_step',
    'scheduler_noise_per_step', 'denoised_per_step', 'latents_per_step',
  ].map(T)
  let latents = Tensor.linearCombination([toTensor(T('input_latents'))], [scheduler.config.sigma_data])
  let worst = 0
  const check = (actual, expected, what) => {
    const r = allclose(actual.toFloat32ArraySync(), expected, tol)
    t.true(r.ok, `${what}: max err ${r.maxAbsErr}`)
    worst = Math.max(worst, r.maxAbsErr)
  }
  for (const [k, ts] of steps.entries()) {
    const s = scheduler.trigflowScales(ts)
    const r = allclose([s.timestep], stepSlice(transformerTimesteps, k).data, { atol: 1e-7, rtol: 1e-7 })
    t.true(r.ok, `transformer timestep ${s.timestep}`)
    const input = Tensor.linearCombination([latents], [s.inputScale])
    check(input, stepSlice(inputs, k).data, `step ${k} transformer input`)
    const velocity = Tensor.linearCombination([input, toTensor(stepSlice(outputs, k))], [s.inputCoeff, s.outputCoeff])
    const out = await scheduler.step(velocity, ts, latents, { noise: toTensor(stepSlice(noises, k)) })
    check(out.denoised, stepSlice(denoisedRef, k).data, `step ${k} denoised`)
    check(out.prevSample, stepSlice(latentsRef, k).data, `step ${k} latents`)
    latents = out.prevSample
  }
  t.log(`max |err| ${worst.toExponential(2)} (final_latents atol ${tol.atol}, rtol ${tol.rtol})`)
})

// ---------------------------------------------------------------------------------------------------
// Argument and config errors
// ---------------------------------------------------------------------------------------------------

const code = (code) => ({ instanceOf: SanaError, code })

test('schedulerFromConfig rejects unknown classes and malformed configs', (t) => {
  t.throws(() => schedulerFromConfig({ _class_name: 'EulerDiscreteScheduler' }), code('SANA_UNKNOWN_CLASS'))
  t.throws(() => schedulerFromConfig({}), code('SANA_INVALID_CONFIG'))
  t.throws(() => schedulerFromConfig(null), code('SANA_INVALID_CONFIG'))
  t.throws(() => schedulerFromConfig({ _class_name: 'toString' }), code('SANA_UNKNOWN_CLASS'))
})

test('unsupported scheduler settings are config errors that name the key', (t) => {
  const e = t.throws(() => new DPMSolverMultistepScheduler({ solver_type: 'heun' }), code('SANA_INVALID_CONFIG'))
  t.regex(e.message, /solver_type/)
  t.throws(() => new DPMSolverMultistepScheduler({ use_flow_sigmas: false }), code('SANA_INVALID_CONFIG'))
  t.throws(() => new DPMSolverMultistepScheduler({ flow_shift: '3' }), code('SANA_INVALID_CONFIG'))
  t.throws(() => new FlowMatchEulerDiscreteScheduler({ use_dynamic_shifting: true }), code('SANA_INVALID_CONFIG'))
  t.throws(() => new SCMScheduler({ prediction_type: 'epsilon' }), code('SANA_INVALID_CONFIG'))
})

test('bad step counts and options are invalid arguments', (t) => {
  for (const make of [() => new DPMSolverMultistepScheduler(), () => new FlowMatchEulerDiscreteScheduler(), () => new SCMScheduler()]) {
    const s = make()
    for (const n of [0, -1, 2.5, '4', undefined]) t.throws(() => s.setTimesteps(n), code('SANA_INVALID_ARGUMENT'))
  }
  const scm = new SCMScheduler()
  t.throws(() => scm.setTimesteps(5, { intermediateTimesteps: 1.3 }), code('SANA_INVALID_ARGUMENT'))
  t.throws(() => scm.setTimesteps(1001), code('SANA_INVALID_ARGUMENT'))
  scm.setTimesteps(2, { intermediateTimesteps: null })
  t.is(scm.timesteps.length, 3)
  t.not(scm.timesteps[1], Math.fround(1.3))
})

test('step needs setTimesteps, a scheduled timestep, and SCM needs noise before the last step', async (t) => {
  const x = Tensor.fromFloat32Array(new Float32Array(4), [1, 4])
  const dpm = new DPMSolverMultistepScheduler()
  await t.throwsAsync(dpm.step(x, 999, x), code('SANA_INVALID_ARGUMENT'))
  dpm.setTimesteps(2)
  await t.throwsAsync(dpm.step(x, 500, x), code('SANA_INVALID_ARGUMENT'))
  await dpm.step(x, 999, x)
  await dpm.step(x, 749, x)
  await t.throwsAsync(dpm.step(x, 749, x), code('SANA_INVALID_ARGUMENT'))

  const scm = new SCMScheduler()
  scm.setTimesteps(2)
  await t.throwsAsync(scm.step(x, scm.timesteps[0], x), code('SANA_INVALID_ARGUMENT'))
  const last = new SCMScheduler()
  last.setTimesteps(1)
  const out = await last.step(x, last.timesteps[0], x)
  t.deepEqual(Array.from(out.prevSample.toFloat32ArraySync()), Array.from(out.denoised.toFloat32ArraySync()))
})
