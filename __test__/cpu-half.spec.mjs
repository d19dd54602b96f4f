// Half-precision weights on the CPU (issue 13): `dtype: 'bfloat16'` / `'float16'` keep every weight matrix half in
// memory and compute in float32 (widened weights, f32 activations and accumulation). The fixture pipeline must stay
// within PSNR ≥ 35 dB of diffusers' float32 image, repeat bit for bit, and report its dtype; `'auto'` stays float32.
import test from 'ava'
import { join } from 'node:path'
import { SanaPipeline, SanaTransformer2DModel, Tensor } from '../dist/index.js'
import { SANA_TINY } from './helpers/paths.mjs'
import { caseGenerateOptions } from './helpers/pipelines.mjs'
import { caseOf, caseTensor, psnr } from './helpers/reference.mjs'

const CASE = 'e2e_a_cfg'

async function generate(dtype) {
  const pipe = await SanaPipeline.load(SANA_TINY, { dtype })
  try {
    for (const c of [pipe.transformer, pipe.vae, pipe.textEncoder]) if (c.dtype !== (dtype === 'auto' ? 'float32' : dtype)) throw new Error(`${c.constructor.name}.dtype is ${c.dtype}`)
    const res = await pipe.generate(caseGenerateOptions(CASE, { outputType: 'tensor' }))
    return res.images.toFloat32Array()
  } finally {
    pipe.dispose()
  }
}

for (const dtype of ['bfloat16', 'float16']) {
  test(`${CASE} on the CPU with ${dtype} weights: PSNR ≥ 35 dB against diffusers' float32 image, repeatable`, async (t) => {
    const want = caseTensor(CASE, 'image_pt').data
    const a = await generate(dtype)
    const db = psnr(a, want)
    t.log(`${dtype} weights vs diffusers float32: PSNR ${db.toFixed(1)} dB`)
    t.true(db >= 35, `PSNR ${db.toFixed(1)} dB < 35 dB`)
    // float32 compute over fixed weights: a second run gives the same image bit for bit.
    t.deepEqual(await generate(dtype), a)
  })
}

test('the transformer keeps its matrices half and computes in float32; auto stays float32 on the CPU', async (t) => {
  const dir = join(SANA_TINY, 'transformer')
  const [full, half] = [await SanaTransformer2DModel.load(dir), await SanaTransformer2DModel.load(dir, { dtype: 'bfloat16' })]
  t.is(full.dtype, 'float32')
  t.is(half.dtype, 'bfloat16')
  for (const i of half.tensorInfo()) t.is(i.dtype, 'bfloat16', i.name)
  // The fixture's float32 weights are all bf16-representable, so holding them in bf16 loses nothing: one forward
  // must equal the float32 one up to GEMM summation order (a wrong widening or layout would be far off).
  const k = caseOf(CASE).call_kwargs
  const lat = caseTensor(CASE, 'input_latents')
  const cfg = full.config
  const input = {
    hiddenStates: Tensor.fromFloat32Array(lat.data, lat.shape),
    encoderHiddenStates: Tensor.fromFloat32Array(new Float32Array(lat.shape[0] * 8 * cfg.captionChannels).map((_, i) => Math.sin(i * 0.37)), [lat.shape[0], 8, cfg.captionChannels]),
    timestep: Tensor.fromFloat32Array(new Float32Array(lat.shape[0]).fill(k.num_inference_steps * 37), [lat.shape[0]]),
  }
  const [y32, y16] = [await full.forward(input), await half.forward(input)]
  t.is(y16.dtype, 'float32')
  const [a, b] = [await y32.toFloat32Array(), await y16.toFloat32Array()]
  let se = 0
  let ss = 0
  for (let i = 0; i < a.length; i++) {
    se += (a[i] - b[i]) ** 2
    ss += a[i] ** 2
  }
  const rel = Math.sqrt(se / ss)
  t.log(`transformer forward, bf16 weights vs float32: relative L2 error ${rel.toExponential(2)}`)
  t.true(rel <= 1e-5, `relative error ${rel}`)
  full.dispose()
  half.dispose()
})
