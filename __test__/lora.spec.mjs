// LoRA against diffusers/peft (wave2 §6): the transformer at scale 1 and 0.5 (per-call loraScale), fused at 0.8,
// unloaded after a fuse (= the base model, unlike diffusers), the pipeline end to end, Hub repos through the cache,
// and the typed errors of a LoRA that does not fit.
import test from 'ava'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SanaPipeline } from '../dist/index.js'
import { FakeRepo, startFakeHub } from './helpers/fake-hub.mjs'
import { SANA_TINY } from './helpers/paths.mjs'
import { callOptions } from './helpers/pipelines.mjs'
import { assertClose } from './helpers/reference.mjs'
import { transformerInput } from './helpers/tensors.mjs'
import { caseOf, caseTensor, caseTensorT, checkE2e, wave2Path } from './helpers/wave2.mjs'

for (const k of ['HF_HUB_OFFLINE', 'HF_TOKEN', 'HF_ENDPOINT', 'HF_HUB_CACHE', 'HF_HOME']) delete process.env[k]

const CASE = 'lora_transformer_scale_1'
const LORA_DIR = wave2Path('lora-tiny')
const LORA_FILE = wave2Path(caseOf(CASE).lora)

// One pipeline per test file; tests that change its adapters run serially and leave none behind.
let pipe
test.before(async () => {
  pipe = await SanaPipeline.load(SANA_TINY)
})
test.after.always(() => pipe?.dispose())

const input = () => transformerInput((role) => caseTensor(CASE, role))

async function expectOutput(t, out, name, role, tolerance) {
  assertClose(t, await out.toFloat32Array(), caseTensor(name, role).data, tolerance, `${name}/${role}`)
}

function tempDir(t) {
  const dir = mkdtempSync(join(tmpdir(), 'sana-lora-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

test.serial('scale 1 and a per-call loraScale of 0.5 match diffusers; unloading gives the base model', async (t) => {
  t.is(await pipe.loadLoraWeights(LORA_DIR), 'default_0')
  t.deepEqual(pipe.listAdapters().map(({ name, rank, alpha, layers, weight, active }) => ({ name, rank, alpha, layers, weight, active })), [
    { name: 'default_0', rank: 4, alpha: 8, layers: 20, weight: 1, active: true },
  ])
  const tr = pipe.transformer
  await expectOutput(t, await tr.forward(input()), CASE, 'output', caseOf(CASE).tolerance)
  const scaled = 'lora_transformer_scaled'
  await expectOutput(t, await tr.forward({ ...input(), loraScale: caseOf(scaled).lora_scale }), scaled, 'output', caseOf(scaled).tolerance)
  await pipe.unloadLoraWeights()
  t.deepEqual(pipe.listAdapters(), [])
  await expectOutput(t, await tr.forward(input()), CASE, 'output_base', caseOf(CASE).tolerance)
})

test.serial('fuseLora(0.8) matches diffusers; unloadLoraWeights after it restores the base model', async (t) => {
  const name = 'lora_fuse_unload'
  const c = caseOf(name)
  await pipe.loadLoraWeights(LORA_FILE, { adapterName: 'tiny' })
  await pipe.fuseLora({ loraScale: c.fuse_lora_scale })
  const tr = pipe.transformer
  await expectOutput(t, await tr.forward(input()), name, 'output_fused', c.tolerance.output_fused)
  // diffusers: unload after fuse keeps the merged weights (output_after_unload == output_fused); ours: the base.
  await pipe.unloadLoraWeights()
  await expectOutput(t, await tr.forward(input()), name, 'output_base', c.tolerance.output_after_unload)
})

test.serial('setAdapters: two adapters at 0.25 each equal one at 0.5; [] disables all', async (t) => {
  await pipe.loadLoraWeights(LORA_DIR, { adapterName: 'a' })
  await pipe.loadLoraWeights(LORA_DIR, { adapterName: 'b' })
  await pipe.setAdapters(['a', 'b'], [0.25, 0.25])
  const scaled = 'lora_transformer_scaled'
  await expectOutput(t, await pipe.transformer.forward(input()), scaled, 'output', caseOf(scaled).tolerance)
  await pipe.setAdapters([])
  t.deepEqual(pipe.listAdapters().map((a) => a.active), [false, false])
  await expectOutput(t, await pipe.transformer.forward(input()), CASE, 'output_base', caseOf(CASE).tolerance)
  await pipe.deleteAdapters(['a'])
  t.deepEqual(pipe.listAdapters().map((a) => a.name), ['b'])
  await pipe.unloadLoraWeights()
})

test.serial('lora_e2e: generate after loadLoraWeights (scale 1), from the seed and from the stored noise', async (t) => {
  const name = 'lora_e2e'
  const c = caseOf(name)
  const options = callOptions(c.call_kwargs)
  await pipe.loadLoraWeights(wave2Path(c.lora))
  try {
    await checkE2e(t, pipe, name, { ...options, seed: c.rng.seed })
    await checkE2e(t, pipe, name, { ...options, latents: caseTensorT(name, 'start_noise') })
  } finally {
    await pipe.unloadLoraWeights()
  }
})

test.serial('generate({ loraScale }) scales the adapters for that call only: 0 is the base model', async (t) => {
  const o = { ...callOptions(caseOf('lora_e2e').call_kwargs), seed: 7, outputType: 'latent' }
  const base = await (await pipe.generate(o)).images.toFloat32Array()
  await pipe.loadLoraWeights(LORA_DIR)
  try {
    const full = await (await pipe.generate(o)).images.toFloat32Array()
    const off = await (await pipe.generate({ ...o, loraScale: 0 })).images.toFloat32Array()
    const half = await (await pipe.generate({ ...o, loraScale: 0.5 })).images.toFloat32Array()
    t.deepEqual(off, base)
    t.notDeepEqual(half, full)
    t.notDeepEqual(half, base)
    t.deepEqual(await (await pipe.generate(o)).images.toFloat32Array(), full, 'the next call runs at the adapters\' weights again')
    const err = await t.throwsAsync(pipe.generate({ ...o, loraScale: Number.NaN }))
    t.is(err.code, 'SANA_INVALID_ARGUMENT')
  } finally {
    await pipe.unloadLoraWeights()
  }
})

test.serial('a LoRA repo id resolves through the Hugging Face cache (weightName picks the file)', async (t) => {
  const repo = new FakeRepo()
  const bytes = readFileSync(LORA_FILE)
  repo.commit(new Map([['pytorch_lora_weights.safetensors', bytes], ['styles/pixel.safetensors', bytes], ['README.md', Buffer.from('# lora\n')]]))
  const hub = await startFakeHub(t, { repos: { 'org/sana-lora': repo } })
  const options = { endpoint: hub.endpoint, cacheDir: tempDir(t) }
  t.is(await pipe.loadLoraWeights('org/sana-lora', { ...options, adapterName: 'hub' }), 'hub')
  t.regex(pipe.listAdapters()[0].path, /models--org--sana-lora[\\/]snapshots[\\/][0-9a-f]{40}[\\/]pytorch_lora_weights\.safetensors$/)
  const requests = hub.requests.length
  await pipe.loadLoraWeights('org/sana-lora', { ...options, offline: true, adapterName: 'cached' })
  t.is(hub.requests.length, requests, 'served from the cache')
  await pipe.loadLoraWeights('org/sana-lora', { ...options, weightName: 'styles/pixel.safetensors', adapterName: 'pixel' })
  t.false(hub.requests.slice(requests).some((r) => r.path.endsWith('README.md')), 'only the weights file is fetched')
  const err = await t.throwsAsync(pipe.loadLoraWeights('org/sana-lora', { ...options, weightName: 'absent.safetensors' }))
  t.is(err.code, 'SANA_NOT_FOUND', err.message)
  t.regex(err.message, /absent\.safetensors/)
  await pipe.unloadLoraWeights()
})

test.serial('a LoRA that does not fit is a typed error naming the key or file, and changes nothing', async (t) => {
  const dir = tempDir(t)
  const kohyaKey = 'lora_unet_transformer_blocks_0_attn1_to_q.lora_down.weight'
  const header = JSON.stringify({ [kohyaKey]: { dtype: 'F32', shape: [4, 64], data_offsets: [0, 1024] } })
  const kohya = join(dir, 'kohya.safetensors')
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(BigInt(header.length))
  writeFileSync(kohya, Buffer.concat([len, Buffer.from(header), Buffer.alloc(1024)]))
  await pipe.loadLoraWeights(LORA_DIR, { adapterName: 'kept' })
  const cases = [
    [pipe.loadLoraWeights(kohya), 'SANA_ADAPTER_MISMATCH', kohyaKey],
    [pipe.loadLoraWeights(join(dir, 'nothing-here')), 'SANA_NOT_FOUND', 'nothing-here'],
    [pipe.loadLoraWeights(dir), 'SANA_NOT_FOUND', 'pytorch_lora_weights.safetensors'],
    [pipe.loadLoraWeights(LORA_DIR, { adapterName: 'kept' }), 'SANA_INVALID_ARGUMENT', 'kept'],
    [pipe.loadLoraWeights(LORA_DIR, { adapterName: '' }), 'SANA_INVALID_ARGUMENT', 'adapterName'],
    [pipe.loadLoraWeights(LORA_DIR, { weightName: 7 }), 'SANA_INVALID_ARGUMENT', 'weightName'],
    [pipe.setAdapters(['kept', 'missing']), 'SANA_INVALID_ARGUMENT', 'missing'],
    [pipe.setAdapters(['kept'], [1, 2]), 'SANA_INVALID_ARGUMENT', 'weights'],
    [pipe.setAdapters(['kept'], [Number.NaN]), 'SANA_INVALID_ARGUMENT', 'weights'],
    [pipe.fuseLora({ loraScale: '0.8' }), 'SANA_INVALID_ARGUMENT', 'loraScale'],
    [pipe.transformer.forward({ ...input(), loraScale: Number.POSITIVE_INFINITY }), 'SANA_INVALID_ARGUMENT', 'loraScale'],
  ]
  for (const [promise, code, fragment] of cases) {
    const err = await t.throwsAsync(promise)
    t.is(err.code, code, err.message)
    t.true(err.message.includes(fragment), `"${err.message}" should name ${fragment}`)
  }
  t.deepEqual(pipe.listAdapters().map((a) => [a.name, a.weight]), [['kept', 1]])
  await expectOutput(t, await pipe.transformer.forward(input()), CASE, 'output', caseOf(CASE).tolerance)
  await pipe.unloadLoraWeights()
})
