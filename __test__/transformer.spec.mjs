// SanaTransformer2DModel forward against diffusers for Sana 1.0, 1.5 (qk-norm), Sprint (guidance) and 2K (sincos PE).
import test from 'ava'
import { join } from 'node:path'
import { SanaTransformer2DModel, Tensor } from '../dist/index.js'
import { FIXTURES } from './helpers/paths.mjs'
import { assertClose, caseOf, caseTensor } from './helpers/reference.mjs'
import { transformerInput } from './helpers/tensors.mjs'

const CASES = [
  'transformer_square',
  'transformer_nonsquare',
  'transformer_sana15_square',
  'transformer_sprint_square',
  'transformer_sana2k_nonsquare',
]

const models = new Map()
async function model(dir) {
  if (!models.has(dir)) models.set(dir, await SanaTransformer2DModel.load(join(FIXTURES, dir)))
  return models.get(dir)
}

function inputs(name) {
  return transformerInput((role) => caseTensor(name, role), { guidance: Boolean(caseOf(name).tensors.guidance) })
}

for (const name of CASES) {
  test(`${name} matches diffusers`, async (t) => {
    const c = caseOf(name)
    const tr = await model(c.model_dir)
    const out = await tr.forward(inputs(name))
    const want = caseTensor(name, 'output')
    t.deepEqual(out.shape, want.shape)
    assertClose(t, await out.toFloat32Array(), want.data, c.tolerance, name)
  })
}

test('timestep accepts a Tensor as well as numbers', async (t) => {
  const tr = await model(caseOf('transformer_square').model_dir)
  const inp = inputs('transformer_square')
  const a = await (await tr.forward(inp)).toFloat32Array()
  const b = await (await tr.forward({ ...inp, timestep: Tensor.fromFloat32Array(Float32Array.from(inp.timestep), [2]) })).toFloat32Array()
  t.deepEqual(a, b)
})

test('bad inputs are typed errors naming the argument', async (t) => {
  const tr = await model(caseOf('transformer_square').model_dir)
  const inp = inputs('transformer_square')
  const expectArg = async (overrides, name) => {
    const err = await t.throwsAsync(tr.forward({ ...inp, ...overrides }))
    t.is(err.code, 'SANA_INVALID_ARGUMENT', err.message)
    t.true(err.message.includes(name), `${err.message} should name ${name}`)
  }
  const zeros = (shape) => Tensor.fromFloat32Array(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape)
  await expectArg({ hiddenStates: zeros([2, 16, 8, 8]) }, 'hiddenStates') // wrong channel count
  await expectArg({ encoderHiddenStates: zeros([1, 300, 32]) }, 'encoderHiddenStates') // batch mismatch
  await expectArg({ encoderAttentionMask: Tensor.fromInt32Array(new Int32Array(2 * 7).fill(1), [2, 7]) }, 'encoderAttentionMask')
  await expectArg({ timestep: [1, 2, 3] }, 'timestep')
  await expectArg({ timestep: [NaN, 1] }, 'timestep')
  await expectArg({ hiddenStates: 'latents' }, 'hiddenStates')
  await expectArg({ controlnetBlockSamples: [zeros([2, 64, 64]), 'sample'] }, 'controlnetBlockSamples')
  await expectArg({ controlnetBlockSamples: [zeros([2, 63, 64])] }, 'controlnetBlockSamples') // native shape check
  const sprint = await model(caseOf('transformer_sprint_square').model_dir)
  const err = await t.throwsAsync(sprint.forward({ ...inputs('transformer_sprint_square'), guidance: undefined }))
  t.is(err.code, 'SANA_INVALID_ARGUMENT')
  t.true(err.message.includes('guidance'))
})

test('patch size 1 accepts any latent size (2K model, odd sizes)', async (t) => {
  const tr = await model(caseOf('transformer_sana2k_nonsquare').model_dir)
  const inp = inputs('transformer_sana2k_nonsquare')
  const x = Tensor.fromFloat32Array(new Float32Array(2 * 32 * 5 * 7), [2, 32, 5, 7])
  const out = await tr.forward({ ...inp, hiddenStates: x })
  t.deepEqual(out.shape, [2, 32, 5, 7])
})
