// SanaControlNetModel against diffusers: its block samples, and the transformer fed with them.
import test from 'ava'
import { SanaControlNetModel, SanaTransformer2DModel, Tensor } from '../dist/index.js'
import { assertClose } from './helpers/reference.mjs'
import { f32, transformerInput } from './helpers/tensors.mjs'
import { caseOf, caseTensor, wave2Path } from './helpers/wave2.mjs'

const NAME = 'controlnet_forward'
const c = caseOf(NAME)
const get = (role) => caseTensor(NAME, role)
let controlnet, transformer
test.before(async () => {
  controlnet = await SanaControlNetModel.load(wave2Path(c.model_dir))
  transformer = await SanaTransformer2DModel.load(wave2Path(c.transformer_dir))
})

const inputs = () => ({ ...transformerInput(get), controlnetCond: f32(get('controlnet_cond')), conditioningScale: c.conditioning_scale })

test('controlnet_forward: block samples, and the transformer with and without them, match diffusers', async (t) => {
  t.is(controlnet.config.numLayers, 2)
  const samples = await controlnet.forward(inputs())
  const want = get('block_samples') // [num_layers, B, N, D]
  t.is(samples.length, want.shape[0])
  const size = want.data.length / want.shape[0]
  for (const [k, s] of samples.entries()) {
    t.deepEqual(s.shape, want.shape.slice(1))
    assertClose(t, await s.toFloat32Array(), want.data.subarray(k * size, (k + 1) * size), c.tolerance.block_samples, `block_samples[${k}]`)
  }
  const base = transformerInput(get)
  const out = await transformer.forward({ ...base, controlnetBlockSamples: samples })
  assertClose(t, await out.toFloat32Array(), get('transformer_output').data, c.tolerance.transformer_output, 'transformer_output')
  const plain = await transformer.forward(base)
  assertClose(t, await plain.toFloat32Array(), get('transformer_output_without_controlnet').data, c.tolerance.transformer_output, 'without controlnet')
})

test('conditioningScale scales the samples linearly and defaults to 1', async (t) => {
  const [a] = await controlnet.forward({ ...inputs(), conditioningScale: 1 })
  const [b] = await controlnet.forward({ ...inputs(), conditioningScale: undefined })
  const [z] = await controlnet.forward({ ...inputs(), conditioningScale: 0 })
  const av = await a.toFloat32Array()
  t.deepEqual(await b.toFloat32Array(), av)
  t.true((await z.toFloat32Array()).every((v) => v === 0))
  t.true(av.some((v) => v !== 0))
})

test('bad ControlNet inputs are typed errors naming the argument', async (t) => {
  const expectArg = async (overrides, name) => {
    const err = await t.throwsAsync(controlnet.forward({ ...inputs(), ...overrides }))
    t.is(err.code, 'SANA_INVALID_ARGUMENT', err.message)
    t.true(err.message.includes(name), `${err.message} should name ${name}`)
  }
  const zeros = (shape) => Tensor.fromFloat32Array(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape)
  await expectArg({ controlnetCond: zeros([2, 32, 5, 6]) }, 'controlnetCond')
  await expectArg({ controlnetCond: undefined }, 'controlnetCond')
  await expectArg({ conditioningScale: NaN }, 'conditioningScale')
  await expectArg({ hiddenStates: zeros([2, 16, 5, 7]) }, 'hiddenStates')
  await expectArg({ timestep: [1] }, 'timestep')
})

test('a transformer folder is not a ControlNet', async (t) => {
  const err = await t.throwsAsync(SanaControlNetModel.load(wave2Path(c.transformer_dir)))
  t.is(err.code, 'SANA_UNKNOWN_CLASS', err.message)
})

test('a disposed ControlNet rejects with SANA_DISPOSED', async (t) => {
  const cn = await SanaControlNetModel.load(wave2Path(c.model_dir))
  t.true(cn.tensorInfo().some((i) => i.name === 'input_block.weight'))
  cn.dispose()
  const err = await t.throwsAsync(cn.forward(inputs()))
  t.is(err.code, 'SANA_DISPOSED')
})
