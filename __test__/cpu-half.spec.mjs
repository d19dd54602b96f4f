// Half-precision weights on the CPU (issue 13): `dtype: 'bfloat16'` / `'float16'` keep every weight matrix half in
// memory and compute in float32 (widened weights, f32 activations and accumulation). The fixture pipeline must stay
// within PSNR ≥ 35 dB of diffusers' float32 image, repeat bit for bit, and report its dtype; `'auto'` stays float32.
//
// This file pins the float32 kernels (SANA_CPU_GEMM=avx512, read at the first product: this process's), so on a CPU
// with AMX it tests the widening path, which bf16 weights take everywhere else. bf16 arithmetic on AMX has its own
// spec, cpu-bf16-compute.spec.mjs.
process.env.SANA_CPU_GEMM ??= 'avx512'
import test from 'ava'
import { join } from 'node:path'
import { SanaPipeline, SanaTransformer2DModel } from '../dist/index.js'
import { copyFixture, SANA_TINY } from './helpers/paths.mjs'
import { nudgeOffBf16Grid, relativeL2, transformerForwardInput } from './helpers/half.mjs'
import { caseGenerateOptions } from './helpers/pipelines.mjs'
import { caseTensor, psnr } from './helpers/reference.mjs'

const CASE = 'e2e_a_cfg'

async function generate(dtype, dir = SANA_TINY) {
  const pipe = await SanaPipeline.load(dir, { dtype })
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

test('weights that bf16 cannot hold exactly: the bf16 image stays ≥ 35 dB from the float32 one on the same weights', async (t) => {
  // The fixture's weights are bf16-exact, so nudge every f32 weight off the bf16 grid (×(1 + 2⁻¹¹·sin i)): holding
  // them in bf16 now rounds each, as it does for real float32 checkpoints.
  const dir = copyFixture(t, SANA_TINY)
  nudgeOffBf16Grid(dir)
  const full = await generate('float32', dir)
  const half = await generate('bfloat16', dir)
  const db = psnr(half, full)
  t.log(`bf16 vs float32 on off-grid weights: PSNR ${db.toFixed(1)} dB`)
  t.true(db >= 35 && db < 120, `PSNR ${db.toFixed(1)} dB (below 35, or so high that nothing was rounded)`)
})

test('the transformer keeps its matrices half and computes in float32; auto stays float32 on the CPU', async (t) => {
  const dir = join(SANA_TINY, 'transformer')
  const [full, half] = [await SanaTransformer2DModel.load(dir), await SanaTransformer2DModel.load(dir, { dtype: 'bfloat16' })]
  t.is(full.dtype, 'float32')
  t.is(half.dtype, 'bfloat16')
  // Every weight matrix is held in bf16 (biases merged with the q/k/v GEMMs may be kept in float32: they are tiny).
  for (const i of half.tensorInfo()) if (i.shape.length >= 2) t.is(i.dtype, 'bfloat16', i.name)
  // The fixture's float32 weights are all bf16-representable, so holding them in bf16 loses nothing: one forward
  // must equal the float32 one up to GEMM summation order (a wrong widening or layout would be far off).
  const input = transformerForwardInput(CASE, full.config)
  const [y32, y16] = [await full.forward(input), await half.forward(input)]
  t.is(y16.dtype, 'float32')
  const rel = relativeL2(await y32.toFloat32Array(), await y16.toFloat32Array())
  t.log(`transformer forward, bf16 weights vs float32: relative L2 error ${rel.toExponential(2)}`)
  t.true(rel <= 1e-5, `relative error ${rel}`)
  full.dispose()
  half.dispose()
})

test('LoRA on bf16 weights: scale 1 matches diffusers (the factors stay float32); unloading gives the base model', async (t) => {
  const { assertClose } = await import('./helpers/reference.mjs')
  const { transformerInput } = await import('./helpers/tensors.mjs')
  const w2 = await import('./helpers/wave2.mjs')
  const name = 'lora_transformer_scale_1'
  const c = w2.caseOf(name)
  const pipe = await SanaPipeline.load(SANA_TINY, { dtype: 'bfloat16' })
  try {
    const input = () => transformerInput((role) => w2.caseTensor(name, role))
    const check = async (role, tolerance) =>
      assertClose(t, await (await pipe.transformer.forward(input())).toFloat32Array(), w2.caseTensor(name, role).data, tolerance, role)
    await pipe.loadLoraWeights(w2.wave2Path('lora-tiny'))
    await check('output', c.tolerance)
    await pipe.unloadLoraWeights()
    await check('output_base', c.tolerance)
  } finally {
    pipe.dispose()
  }
})
