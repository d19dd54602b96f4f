// Foundation: loading diffusers-format folders, every tensor checked against the safetensors headers,
// dtype conversion, sharded/variant files, and a typed error for every kind of broken input.
import test from 'ava'
import { existsSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { AutoencoderDC, Gemma2TextEncoder, SanaError, SanaPipeline, SanaTransformer2DModel, Tensor } from '../dist/index.js'
import { copyFixture, SANA15_TRANSFORMER, SANA2K_TRANSFORMER, SANA_TINY, SPRINT_TINY } from './helpers/paths.mjs'
import {
  decodeTensor, f32ToBf16, f32ToF16, f16ToF32, readSafetensors, tensorsOf, writeSafetensors,
} from './helpers/safetensors.mjs'

const WEIGHTS = {
  transformer: 'transformer/diffusion_pytorch_model.safetensors',
  vae: 'vae/diffusion_pytorch_model.safetensors',
  text_encoder: 'text_encoder/model.safetensors',
}

async function rejectsWith(t, promise, code, ...fragments) {
  const err = await t.throwsAsync(promise)
  t.true(err instanceof SanaError, `expected a SanaError, got ${err?.constructor?.name}: ${err?.message}`)
  t.is(err.code, code, err.message)
  for (const f of fragments) t.true(err.message.includes(f), `message ${JSON.stringify(err.message)} should name ${f}`)
  return err
}

/** Every tensor of `component` matches the file header: names, shapes, stored dtype; f32 after load. */
async function checkAgainstHeaders(t, component, file) {
  const st = readSafetensors(file)
  const info = component.tensorInfo()
  t.deepEqual(info.map((i) => i.name).sort(), Object.keys(st.header).sort())
  for (const i of info) {
    t.deepEqual(i.shape, st.header[i.name].shape, i.name)
    t.is(i.storedDtype, st.header[i.name].dtype, i.name)
    t.is(i.dtype, 'float32', i.name)
  }
  return st
}

test('SanaPipeline.load loads all components of sana-tiny and exposes configs', async (t) => {
  const pipe = await SanaPipeline.load(SANA_TINY)
  t.is(pipe.device, 'cpu')
  t.is(pipe.config.modelIndex.className, 'SanaPipeline')
  t.is(pipe.config.transformer.numLayers, 2)
  t.is(pipe.config.vae.scalingFactor, 0.41407)
  t.is(pipe.config.textEncoder.hiddenSize, 32)
  for (const [slot, rel] of Object.entries(WEIGHTS)) {
    const comp = { transformer: pipe.transformer, vae: pipe.vae, text_encoder: pipe.textEncoder }[slot]
    await checkAgainstHeaders(t, comp, join(SANA_TINY, rel))
  }
  pipe.dispose()
})

test('bf16 text-encoder weights are converted to f32 exactly', async (t) => {
  const te = await Gemma2TextEncoder.load(join(SANA_TINY, 'text_encoder'))
  const st = await checkAgainstHeaders(t, te, join(SANA_TINY, WEIGHTS.text_encoder))
  let checked = 0
  for (const name of Object.keys(st.header)) {
    t.is(st.header[name].dtype, 'BF16')
    const want = decodeTensor(st, name)
    const got = await te.getWeight(name).toFloat32Array()
    t.is(got.length, want.length)
    // Bitwise equality: bf16 → f32 is exact, so no tolerance.
    t.true(Buffer.from(got.buffer).equals(Buffer.from(want.buffer)), name)
    checked++
  }
  t.true(checked > 10)
  te.unload()
  t.true(te.disposed)
  const err = t.throws(() => te.getWeight('norm.weight'))
  t.is(err.code, 'SANA_DISPOSED')
})

test('f32 transformer and vae weights load bit-exact', async (t) => {
  for (const [Cls, rel] of [[SanaTransformer2DModel, WEIGHTS.transformer], [AutoencoderDC, WEIGHTS.vae]]) {
    const comp = await Cls.load(join(SANA_TINY, rel.split('/')[0]))
    const st = readSafetensors(join(SANA_TINY, rel))
    for (const name of Object.keys(st.header)) {
      const got = comp.getWeight(name).toFloat32ArraySync()
      t.true(Buffer.from(got.buffer).equals(Buffer.from(decodeTensor(st, name).buffer)), name)
    }
    comp.dispose()
  }
})

test('Sana 1.5 and 2K transformers load', async (t) => {
  for (const dir of [SANA15_TRANSFORMER, SANA2K_TRANSFORMER]) {
    const tr = await SanaTransformer2DModel.load(dir)
    await checkAgainstHeaders(t, tr, join(dir, 'diffusion_pytorch_model.safetensors'))
    t.is(tr.config.className, 'SanaTransformer2DModel')
  }
  const tr15 = await SanaTransformer2DModel.load(SANA15_TRANSFORMER)
  t.is(tr15.config.qkNorm, 'rms_norm_across_heads')
  const tr2k = await SanaTransformer2DModel.load(SANA2K_TRANSFORMER)
  t.is(tr2k.config.interpolationScale, 1)
})

test('Sprint pipeline loads with components from sana-tiny', async (t) => {
  const base = await SanaPipeline.load(SANA_TINY)
  const sprint = await SanaPipeline.load(SPRINT_TINY, {
    components: { tokenizer: base.tokenizer, textEncoder: base.textEncoder, vae: base.vae },
  })
  t.is(sprint.config.modelIndex.className, 'SanaSprintPipeline')
  t.true(sprint.config.transformer.guidanceEmbeds)
  t.is(sprint.vae, base.vae)
  t.is(sprint.textEncoder, base.textEncoder)
  t.is(sprint.tokenizer, base.tokenizer)
  // Without the shared components the missing folders are named.
  await rejectsWith(t, SanaPipeline.load(SPRINT_TINY), 'SANA_NOT_FOUND', 'tokenizer', 'text_encoder', 'vae', 'options.components')
})

test('Tensor handles: shape, dtype, device, round trip', async (t) => {
  const data = Float32Array.from({ length: 24 }, (_, i) => i - 3.5)
  const x = Tensor.fromFloat32Array(data, [2, 3, 4])
  t.deepEqual(x.shape, [2, 3, 4])
  t.is(x.dtype, 'float32')
  t.is(x.device, 'cpu')
  t.deepEqual(await x.toFloat32Array(), data)
  const ids = Tensor.fromInt32Array(Int32Array.from([2, 651, 0]), [1, 3])
  t.is(ids.dtype, 'int64')
  t.deepEqual([...(await ids.toFloat32Array())], [2, 651, 0])
  const y = Tensor.linearCombination([x, x], [2, -0.5])
  t.deepEqual(await y.toFloat32Array(), data.map((v) => 1.5 * v))
  t.is(t.throws(() => Tensor.fromFloat32Array(data, [5, 5])).code, 'SANA_INVALID_ARGUMENT')
  t.is(t.throws(() => Tensor.fromFloat32Array([1, 2], [2])).code, 'SANA_INVALID_ARGUMENT')
  t.is(t.throws(() => Tensor.linearCombination([x], [1, 2])).code, 'SANA_INVALID_ARGUMENT')
  t.is(t.throws(() => Tensor.linearCombination([x, ids], [1, 1])).code, 'SANA_INVALID_ARGUMENT') // shapes differ
})

test('device and dtype choice', async (t) => {
  const dir = join(SANA_TINY, 'vae')
  const auto = await AutoencoderDC.load(dir, { device: 'auto' })
  t.is(auto.device, 'cpu') // CPU-only build: auto falls back to CPU
  await rejectsWith(t, AutoencoderDC.load(dir, { device: 'cuda' }), 'SANA_DEVICE_UNAVAILABLE', 'without CUDA')
  await rejectsWith(t, AutoencoderDC.load(dir, { device: 'tpu' }), 'SANA_INVALID_ARGUMENT', 'device')
  await rejectsWith(t, AutoencoderDC.load(dir, { dtype: 'int8' }), 'SANA_INVALID_ARGUMENT', 'dtype')
  // On the CPU a half dtype keeps the weights half and computes in float32 (__test__/cpu-half.spec.mjs).
  const half = await AutoencoderDC.load(dir, { dtype: 'bfloat16' })
  t.is(half.dtype, 'bfloat16')
  half.dispose()
})

test('sharded checkpoints load from *.safetensors.index.json', async (t) => {
  const dir = copyFixture(t, join(SANA_TINY, 'vae'))
  const file = join(dir, 'diffusion_pytorch_model.safetensors')
  const all = tensorsOf(readSafetensors(file))
  const names = Object.keys(all).sort()
  const shards = [names.slice(0, names.length >> 1), names.slice(names.length >> 1)]
  const weightMap = {}
  shards.forEach((part, i) => {
    const shard = `diffusion_pytorch_model-0000${i + 1}-of-00002.safetensors`
    writeSafetensors(join(dir, shard), Object.fromEntries(part.map((n) => [n, all[n]])))
    for (const n of part) weightMap[n] = shard
  })
  rmSync(file)
  const index = join(dir, 'diffusion_pytorch_model.safetensors.index.json')
  writeFileSync(index, JSON.stringify({ metadata: {}, weight_map: weightMap }))
  const vae = await AutoencoderDC.load(dir)
  t.is(vae.tensorInfo().length, names.length)
  t.is(new Set(vae.tensorInfo().map((i) => i.file)).size, 2)
  // An index naming a shard that is not there.
  rmSync(join(dir, 'diffusion_pytorch_model-00002-of-00002.safetensors'))
  await rejectsWith(t, AutoencoderDC.load(dir), 'SANA_NOT_FOUND', '00002-of-00002')
})

test('variant files (fp16, bf16) are preferred when asked for and converted at load', async (t) => {
  const dir = copyFixture(t, join(SANA_TINY, 'vae'))
  const st = readSafetensors(join(dir, 'diffusion_pytorch_model.safetensors'))
  for (const [variant, dtype, encode, decode] of [
    ['fp16', 'F16', f32ToF16, f16ToF32],
    ['bf16', 'BF16', f32ToBf16, (b) => new Float32Array(new Uint32Array([b << 16]).buffer)[0]],
  ]) {
    const tensors = {}
    for (const name of Object.keys(st.header)) {
      const v = decodeTensor(st, name)
      const bytes = Buffer.alloc(2 * v.length)
      v.forEach((x, i) => bytes.writeUInt16LE(encode(x), 2 * i))
      tensors[name] = { dtype, shape: st.header[name].shape, bytes }
    }
    writeSafetensors(join(dir, `diffusion_pytorch_model.${variant}.safetensors`), tensors)
    const vae = await AutoencoderDC.load(dir, { variant })
    const info = vae.tensorInfo()
    t.true(info.every((i) => i.storedDtype === dtype && i.dtype === 'float32'))
    const name = 'decoder.conv_in.weight'
    const got = vae.getWeight(name).toFloat32ArraySync()
    const src = decodeTensor(st, name)
    t.deepEqual([...got], [...src].map((x) => decode(encode(x))))
    // Without the variant option the plain f32 file is used.
    const plain = await AutoencoderDC.load(dir)
    t.true(plain.tensorInfo().every((i) => i.storedDtype === 'F32'))
  }
})

// ---------------------------------------------------------------- broken inputs

test('missing pipeline folder, component folder and weights file', async (t) => {
  await rejectsWith(t, SanaPipeline.load('/nonexistent/sana'), 'SANA_NOT_FOUND', '/nonexistent/sana')
  const dir = copyFixture(t, SANA_TINY, { filter: (p) => !p.includes('reference') })
  rmSync(join(dir, 'vae'), { recursive: true })
  await rejectsWith(t, SanaPipeline.load(dir), 'SANA_NOT_FOUND', 'vae')
  const dir2 = copyFixture(t, join(SANA_TINY, 'transformer'))
  rmSync(join(dir2, 'diffusion_pytorch_model.safetensors'))
  await rejectsWith(t, SanaTransformer2DModel.load(dir2), 'SANA_NOT_FOUND', 'diffusion_pytorch_model.safetensors', dir2)
  const dir3 = copyFixture(t, join(SANA_TINY, 'transformer'))
  rmSync(join(dir3, 'config.json'))
  await rejectsWith(t, SanaTransformer2DModel.load(dir3), 'SANA_NOT_FOUND', 'config.json')
  const noIndex = copyFixture(t, SANA_TINY, { filter: (p) => !p.includes('reference') })
  rmSync(join(noIndex, 'model_index.json'))
  await rejectsWith(t, SanaPipeline.load(noIndex), 'SANA_NOT_FOUND', 'model_index.json')
})

test('malformed JSON names the file', async (t) => {
  const dir = copyFixture(t, SANA_TINY, { filter: (p) => !p.includes('reference') })
  writeFileSync(join(dir, 'model_index.json'), '{"_class_name": "SanaPipeline",')
  await rejectsWith(t, SanaPipeline.load(dir), 'SANA_INVALID_JSON', 'model_index.json')
  const vae = copyFixture(t, join(SANA_TINY, 'vae'))
  writeFileSync(join(vae, 'config.json'), '{"latent_channels": 32,, }')
  await rejectsWith(t, AutoencoderDC.load(vae), 'SANA_INVALID_JSON', join(vae, 'config.json'))
  // Valid JSON but a field of the wrong type.
  const cfg = JSON.parse(readFileSync(join(SANA_TINY, 'vae', 'config.json'), 'utf8'))
  cfg.decoder_block_out_channels = 'wide'
  writeFileSync(join(vae, 'config.json'), JSON.stringify(cfg))
  await rejectsWith(t, AutoencoderDC.load(vae), 'SANA_INVALID_CONFIG', 'decoder_block_out_channels')
})

test('unknown _class_name in model_index.json and config.json', async (t) => {
  const dir = copyFixture(t, SANA_TINY, { filter: (p) => !p.includes('reference') })
  const mi = JSON.parse(readFileSync(join(dir, 'model_index.json'), 'utf8'))
  writeFileSync(join(dir, 'model_index.json'), JSON.stringify({ ...mi, _class_name: 'StableDiffusionPipeline' }))
  await rejectsWith(t, SanaPipeline.load(dir), 'SANA_UNKNOWN_CLASS', 'StableDiffusionPipeline', 'model_index.json')
  writeFileSync(join(dir, 'model_index.json'), JSON.stringify({ ...mi, vae: ['diffusers', 'AutoencoderKL'] }))
  await rejectsWith(t, SanaPipeline.load(dir), 'SANA_UNKNOWN_CLASS', 'AutoencoderKL')
  const tr = copyFixture(t, join(SANA_TINY, 'transformer'))
  const cfg = JSON.parse(readFileSync(join(tr, 'config.json'), 'utf8'))
  writeFileSync(join(tr, 'config.json'), JSON.stringify({ ...cfg, _class_name: 'PixArtTransformer2DModel' }))
  await rejectsWith(t, SanaTransformer2DModel.load(tr), 'SANA_UNKNOWN_CLASS', 'PixArtTransformer2DModel', 'config.json')
  const te = copyFixture(t, join(SANA_TINY, 'text_encoder'))
  const tcfg = JSON.parse(readFileSync(join(te, 'config.json'), 'utf8'))
  writeFileSync(join(te, 'config.json'), JSON.stringify({ ...tcfg, architectures: ['T5EncoderModel'] }))
  await rejectsWith(t, Gemma2TextEncoder.load(te), 'SANA_UNKNOWN_CLASS', 'T5EncoderModel')
})

test('truncated and corrupt safetensors are rejected with the file named', async (t) => {
  const cases = [
    ['truncated data', (f) => truncateSync(f, statSync(f).size - 100), 'truncated'],
    ['truncated header', (f) => truncateSync(f, 20), 'exceeds file size'],
    ['tiny file', (f) => truncateSync(f, 5), 'too short'],
    ['garbage header', (f) => {
      const b = readFileSync(f)
      b.fill(0x7b, 8, 40) // '{{{{…' inside the JSON header
      writeFileSync(f, b)
    }, 'not valid JSON'],
    ['header length beyond file', (f) => {
      const b = readFileSync(f)
      b.writeBigUInt64LE(1n << 40n, 0)
      writeFileSync(f, b)
    }, 'exceeds file size'],
    ['offsets inconsistent with shape', (f) => {
      const st = readSafetensors(f)
      const all = tensorsOf(st)
      const name = Object.keys(all)[0]
      all[name].shape = [...all[name].shape, 2]
      writeSafetensors(f, all)
    }, 'does not match shape'],
  ]
  for (const [what, damage, fragment] of cases) {
    const dir = copyFixture(t, join(SANA_TINY, 'vae'))
    const file = join(dir, 'diffusion_pytorch_model.safetensors')
    damage(file)
    const err = await rejectsWith(t, AutoencoderDC.load(dir), 'SANA_CORRUPT_WEIGHTS', file, fragment)
    t.log(`${what}: ${err.message}`)
  }
})

test('unsupported dtype names the tensor', async (t) => {
  const dir = copyFixture(t, join(SANA_TINY, 'vae'))
  const file = join(dir, 'diffusion_pytorch_model.safetensors')
  const all = tensorsOf(readSafetensors(file))
  const name = 'decoder.conv_in.bias'
  all[name] = { dtype: 'I32', shape: all[name].shape, bytes: all[name].bytes } // same byte size as F32
  writeSafetensors(file, all)
  await rejectsWith(t, AutoencoderDC.load(dir), 'SANA_UNSUPPORTED_DTYPE', name, file)
})

test('missing tensor and wrong shape name the tensor', async (t) => {
  const dir = copyFixture(t, join(SANA_TINY, 'transformer'))
  const file = join(dir, 'diffusion_pytorch_model.safetensors')
  const all = tensorsOf(readSafetensors(file))
  const missing = 'transformer_blocks.1.attn2.to_k.weight'
  const { [missing]: _dropped, ...rest } = all
  writeSafetensors(file, rest)
  await rejectsWith(t, SanaTransformer2DModel.load(dir), 'SANA_WEIGHT_MISSING', missing)
  // Same bytes, transposed shape: only the model's expectations can catch it.
  const name = 'caption_projection.linear_1.weight'
  const [a, b] = all[name].shape
  t.not(a, b)
  writeSafetensors(file, { ...all, [name]: { ...all[name], shape: [b, a] } })
  await rejectsWith(t, SanaTransformer2DModel.load(dir), 'SANA_SHAPE_MISMATCH', name, `[${a}, ${b}]`)
  // A tensor the config does not account for (e.g. weights of another variant).
  writeSafetensors(file, { ...all, 'transformer_blocks.9.ff.conv_out.weight': all[name] })
  await rejectsWith(t, SanaTransformer2DModel.load(dir), 'SANA_INVALID_CONFIG', 'transformer_blocks.9')
})

test('a failed pipeline load leaves nothing half-loaded', async (t) => {
  const dir = copyFixture(t, SANA_TINY, { filter: (p) => !p.includes('reference') })
  truncateSync(join(dir, WEIGHTS.vae), 64)
  await rejectsWith(t, SanaPipeline.load(dir), 'SANA_CORRUPT_WEIGHTS', 'vae')
  t.true(existsSync(join(dir, 'transformer')))
  t.true(readdirSync(dir).includes('text_encoder'))
})
