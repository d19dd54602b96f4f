// PAG: the transformer's perturbed self-attention against diffusers' SanaPAGPipeline processors, and
// pagLayerIndices (diffusers' pag_applied_layers matching).
import test from 'ava'
import { pagLayerIndices, SanaTransformer2DModel } from '../dist/index.js'
import { assertClose } from './helpers/reference.mjs'
import { transformerInput } from './helpers/tensors.mjs'
import { caseOf, caseTensor, wave2Path } from './helpers/wave2.mjs'

const models = new Map()
async function model(dir) {
  if (!models.has(dir)) models.set(dir, await SanaTransformer2DModel.load(wave2Path(dir)))
  return models.get(dir)
}

for (const name of ['pag_transformer_forward_cfg', 'pag_transformer_forward_nocfg']) {
  test(`${name} matches diffusers, with and without PAG`, async (t) => {
    const c = caseOf(name)
    const tr = await model(c.model_dir)
    const input = transformerInput((role) => caseTensor(name, role))
    const layers = pagLayerIndices(c.pag_applied_layers, tr.config.numLayers)
    t.deepEqual(layers, [1])
    // The pipeline's batch ends with one perturbed copy per image: [uncond, text, perturbed] or [text, perturbed].
    const out = await tr.forward({ ...input, pag: { layers, perturbedRows: 1 } })
    const want = caseTensor(name, 'output')
    t.deepEqual(out.shape, want.shape)
    assertClose(t, await out.toFloat32Array(), want.data, c.tolerance, `${name} output`)
    const plain = await tr.forward(input)
    assertClose(t, await plain.toFloat32Array(), caseTensor(name, 'output_without_pag_processors').data, c.tolerance, `${name} without PAG`)
  })
}

test('bad pag inputs are typed errors naming pag', async (t) => {
  const name = 'pag_transformer_forward_cfg'
  const tr = await model(caseOf(name).model_dir)
  const input = transformerInput((role) => caseTensor(name, role))
  for (const pag of [
    { layers: [2], perturbedRows: 1 }, // the tiny model has 2 blocks
    { layers: [1], perturbedRows: 3 }, // batch 3: no unperturbed row left
    { layers: [1], perturbedRows: 0 },
    { layers: ['1'], perturbedRows: 1 },
    { layers: [], perturbedRows: 1 },
  ]) {
    const err = await t.throwsAsync(tr.forward({ ...input, pag }))
    t.is(err.code, 'SANA_INVALID_ARGUMENT', err.message)
    t.regex(err.message, /pag/, err.message)
  }
})

test('pagLayerIndices follows diffusers: regex search in transformer_blocks.{i}.attn1, numbers are indices', (t) => {
  // The unanchored pattern also selects blocks 10–19, as diffusers does.
  t.deepEqual(pagLayerIndices('transformer_blocks.1', 20), [1, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19])
  t.deepEqual(pagLayerIndices('transformer_blocks\\.1\\.', 20), [1])
  t.deepEqual(pagLayerIndices(['transformer_blocks.8', 'transformer_blocks.3'], 10), [3, 8])
  t.deepEqual(pagLayerIndices('attn1', 3), [0, 1, 2])
  t.deepEqual(pagLayerIndices([7, 2, 7], 20), [2, 7])
  t.deepEqual(pagLayerIndices('transformer_blocks.(2|4)', 5), [2, 4])
  for (const bad of ['transformer_blocks.9', 'attn2', [20], [-1], [1.5], [], '(', [{}]]) {
    const err = t.throws(() => pagLayerIndices(bad, 5))
    t.is(err.code, 'SANA_INVALID_ARGUMENT', String(bad))
    t.regex(err.message, /pagAppliedLayers/)
  }
})
