// The fixture pipeline end to end on CUDA: float32 against diffusers' references with the fixtures'
// tolerances, bfloat16 and float16 against our own float32 image (PSNR ≥ 35 dB), and fp16 NaN latents reported as
// SANA_COMPUTE_ERROR. Without the CUDA binary or a usable GPU these tests are skipped and the reason is
// printed. Also, on any machine: the loader's fallback and the NaN check on the CPU.
import test from 'ava'
import { SanaPipeline, Tensor } from '../dist/index.js'
import { explainLoadError, nativeBackend } from '../dist/native.js'
import { SANA_TINY } from './helpers/paths.mjs'
import { caseGenerateOptions } from './helpers/pipelines.mjs'
import { assertClose, caseOf, caseTensor, psnr } from './helpers/reference.mjs'

const backend = nativeBackend()
const noGpu = backend.kind === 'cuda' ? undefined : backend.cudaUnavailable
if (noGpu) console.log(`cuda.spec: CUDA tests skipped — ${noGpu}`)
/** A GPU test, or the same title marked skipped with the reason. */
const gpuTest = (title, fn) => (noGpu ? test.skip(`${title} [no GPU: ${noGpu}]`, fn) : test(title, fn))

const CASE = 'e2e_a_cfg'

const options = (extra = {}) => caseGenerateOptions(CASE, { outputType: 'tensor', ...extra })

/** Load the fixture pipeline with `opts`, run `fn(pipe)`, dispose. */
async function withPipe(opts, fn) {
  const pipe = await SanaPipeline.load(SANA_TINY, opts)
  try {
    return await fn(pipe)
  } finally {
    pipe.dispose()
  }
}

let fp32Image
gpuTest(`${CASE} on CUDA in float32 matches diffusers within the fixture tolerances`, async (t) => {
  const c = caseOf(CASE)
  let final
  const image = await withPipe({ device: 'cuda', dtype: 'float32' }, async (pipe) => {
    t.is(pipe.device, 'cuda:0')
    const res = await pipe.generate(options({ onStep: async (e) => (final = await e.latents.toFloat32Array()) }))
    return res.images.toFloat32Array()
  })
  assertClose(t, final, caseTensor(CASE, 'final_latents').data, c.tolerance.final_latents, 'final latents')
  fp32Image = image
  assertClose(t, fp32Image, caseTensor(CASE, 'image_pt').data, c.tolerance.image_pt, 'image_pt')
})

for (const dtype of ['bfloat16', 'float16']) {
  gpuTest(`${CASE} on CUDA in ${dtype}: PSNR ≥ 35 dB against float32`, async (t) => {
    // Compared with our float32 CUDA image when that test ran first, else with diffusers' float32 image.
    const want = fp32Image ?? caseTensor(CASE, 'image_pt').data
    const image = await withPipe({ device: 'cuda', dtype }, async (pipe) => (await pipe.generate(options())).images.toFloat32Array())
    const db = psnr(image, want)
    t.log(`${dtype} vs float32: PSNR ${db.toFixed(1)} dB`)
    t.true(db >= 35, `PSNR ${db.toFixed(1)} dB < 35 dB`)
  })
}

gpuTest('float16 on CUDA: NaN latents fail with SANA_COMPUTE_ERROR instead of decoding', async (t) => {
  const lat = caseTensor(CASE, 'input_latents')
  const data = Float32Array.from(lat.data)
  data[7] = Number.NaN
  const err = await withPipe({ device: 'cuda', dtype: 'float16' }, (pipe) =>
    t.throwsAsync(pipe.generate(options({ latents: Tensor.fromFloat32Array(data, lat.shape) }))))
  t.is(err.code, 'SANA_COMPUTE_ERROR')
  t.regex(err.message, /NaN or Inf/)
})

// ---- Any machine -------------------------------------------------------------------------------

test('NaN latents fail with SANA_COMPUTE_ERROR on the CPU too (the check is device-independent)', async (t) => {
  const lat = caseTensor(CASE, 'input_latents')
  const data = Float32Array.from(lat.data)
  data[7] = Number.NaN
  const err = await withPipe({ device: 'cpu' }, (pipe) =>
    t.throwsAsync(pipe.generate(options({ latents: Tensor.fromFloat32Array(data, lat.shape), numInferenceSteps: 1 }))))
  t.is(err.code, 'SANA_COMPUTE_ERROR')
})

test('without a usable GPU the loader runs on the CPU, says why, and device: auto falls back', async (t) => {
  if (!noGpu) {
    t.is(backend.kind, 'cuda')
    t.log('CUDA binary in use; fallback not exercised here')
    return
  }
  t.is(backend.kind, 'cpu')
  t.log(`CUDA binary not used: ${noGpu}`)
  const x = Tensor.fromFloat32Array(new Float32Array(4), [4], { device: 'auto' })
  t.is(x.device, 'cpu')
  const err = t.throws(() => Tensor.fromFloat32Array(new Float32Array(4), [4], { device: 'cuda' }))
  t.is(err.code, 'SANA_DEVICE_UNAVAILABLE')
  t.true(err.message.includes(noGpu), err.message)
})

test('dlopen failures are explained: driver, CUDA library, anything else', (t) => {
  const dl = (lib) => new Error(`${lib}: cannot open shared object file: No such file or directory`)
  t.regex(explainLoadError(dl('libcuda.so.1')), /^no NVIDIA driver \(libcuda\.so\.1 not found\)/)
  t.regex(explainLoadError(dl('libcublasLt.so.13')), /^CUDA library missing: libcublasLt\.so\.13/)
  t.regex(explainLoadError(new Error('undefined symbol: cuFoo')), /failed to load: undefined symbol/)
})
