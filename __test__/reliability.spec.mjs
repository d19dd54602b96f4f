// Issue 17: hangs, aborts and plain errors turned into prompt `SanaError`s with documented codes. Every test
// runs locally: servers bind 127.0.0.1 and close at teardown; no test reaches the internet.
import test from 'ava'
import { execFile } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import sharp from 'sharp'
import { Gemma2TextEncoder, resolveModel, SanaImage, SanaPipeline, SanaTransformer2DModel, Tensor } from '../dist/index.js'
import { close, gitSha1 } from './helpers/fake-hub.mjs'
import { REPO, SANA_TINY } from './helpers/paths.mjs'

function tempDir(t) {
  const dir = mkdtempSync(join(tmpdir(), 'sana-rel-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

async function rejectsWith(t, promise, code, ...fragments) {
  const err = await t.throwsAsync(promise)
  t.is(err.code, code, err.message)
  for (const f of fragments) t.true(err.message.includes(f), `"${err.message}" should mention ${f}`)
  return err
}

/** Run `node <script> args` with a scrubbed, offline Hugging Face environment; resolves to { code, stdout, stderr }. */
function run(script, args, { cwd = REPO, env = {} } = {}) {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HF_') && k !== 'SANA_DEBUG'))
  return new Promise((ok) => {
    execFile(process.execPath, [script, ...args], { cwd, env: { ...base, HF_HUB_OFFLINE: '1', ...env } }, (err, stdout, stderr) =>
      ok({ code: err ? err.code : 0, stdout, stderr }),
    )
  })
}
const sana = (args, opts) => run(join(REPO, 'dist', 'cli.js'), args, opts)

function failsWith(t, r, exit, code, ...fragments) {
  t.is(r.code, exit, r.stderr)
  t.regex(r.stderr, new RegExp(`^error \\[${code}\\]: `, 'm'))
  for (const f of fragments) t.true(r.stderr.includes(f), `stderr should mention ${f}:\n${r.stderr}`)
  t.notRegex(r.stderr, /^\s+at /m, 'no stack trace')
}

const SMALL = ['--model', SANA_TINY, '--width', '256', '--height', '384', '--no-binning', '--steps', '2', '--seed', '42']

// ─── 3. Output paths, checked before loading ───────────────────────────────────────────────────────

test('generate -o: a path that cannot be written fails at once with SANA_IO_ERROR, before the model loads', async (t) => {
  const dir = tempDir(t)
  writeFileSync(join(dir, 'file'), 'x')
  // The model does not exist: reaching the load would fail with SANA_NOT_FOUND instead.
  const common = ['generate', 'a fox', '--model', join(dir, 'no-model')]
  failsWith(t, await sana([...common, '-o', '/proc/sana-test/y.png']), 1, 'SANA_IO_ERROR', '/proc/sana-test')
  failsWith(t, await sana([...common, '-o', join(dir, 'file', 'y.png')]), 1, 'SANA_IO_ERROR', join(dir, 'file'))
  mkdirSync(join(dir, 'taken.png'))
  failsWith(t, await sana([...common, '-o', join(dir, 'taken.png')]), 1, 'SANA_IO_ERROR', 'is a folder')
  failsWith(t, await sana([...common, '-o', join(dir, 'out.gif')]), 2, 'SANA_INVALID_ARGUMENT', '.jpg', 'out.gif')
  // A creatable folder is created (and the load is then what fails).
  failsWith(t, await sana([...common, '-o', join(dir, 'new', 'sub', 'y.png')]), 1, 'SANA_NOT_FOUND', 'no-model')
  t.true(existsSync(join(dir, 'new', 'sub')))
})

// ─── 10. JPEG and WebP by extension ────────────────────────────────────────────────────────────────

test('generate -o out.jpg / out.webp writes JPEG / WebP of the same image as the PNG', async (t) => {
  const dir = tempDir(t)
  for (const name of ['out.png', 'out.jpg', 'out.webp']) {
    const r = await sana(['generate', 'a red fox in snow', ...SMALL, '-o', join(dir, name)])
    t.is(r.code, 0, r.stderr)
  }
  // Compared at a quarter of the size: WebP halves the chroma resolution, which averaging removes.
  const quarter = (name) => sharp(join(dir, name)).removeAlpha().resize(64, 96, { kernel: 'linear' }).raw().toBuffer()
  const png = await quarter('out.png')
  for (const [name, format] of [['out.jpg', 'jpeg'], ['out.webp', 'webp']]) {
    const meta = await sharp(join(dir, name)).metadata()
    t.is(meta.format, format)
    t.deepEqual([meta.width, meta.height], [256, 384])
    // Lossy at quality 95: the same picture, mean error well under 4 levels of 255.
    const lossy = await quarter(name)
    let err = 0
    for (let i = 0; i < lossy.length; i++) err += Math.abs(lossy[i] - png[i])
    t.true(err / lossy.length < 4, `${name}: mean abs error ${err / lossy.length}`)
  }
})

test('SanaImage.save picks the format by extension and refuses others; encode checks quality', async (t) => {
  const dir = tempDir(t)
  const image = new SanaImage({ width: 2, height: 1, data: Uint8Array.of(255, 0, 0, 0, 0, 255), metadata: { seed: 1 } })
  await image.save(join(dir, 'a.JPG'))
  await image.save(join(dir, 'a.webp'))
  t.deepEqual([...readFileSync(join(dir, 'a.JPG')).subarray(0, 3)], [0xff, 0xd8, 0xff])
  t.is(readFileSync(join(dir, 'a.webp')).subarray(8, 12).toString('latin1'), 'WEBP')
  await rejectsWith(t, image.save(join(dir, 'a.gif')), 'SANA_INVALID_ARGUMENT', '.png')
  await rejectsWith(t, image.save(join(dir, 'missing', 'a.png')), 'SANA_IO_ERROR', join(dir, 'missing'))
  await rejectsWith(t, image.encode('jpeg', { quality: 0 }), 'SANA_INVALID_ARGUMENT', 'quality')
  t.deepEqual(await image.encode('png'), image.toPng())
})

// ─── 4 and 11. The Hub: timeouts, ETags, disk space ────────────────────────────────────────────────

/** A minimal Hub whose answers the test scripts: `handle(req, res)` after the repo API. */
async function scriptedHub(t, files, handle) {
  const requests = []
  const server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`)
    if (req.url.startsWith('/api/models/')) {
      return res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ sha: 'a'.repeat(40), siblings: files.map((rfilename) => ({ rfilename })) }))
    }
    handle(req, res)
  })
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok))
  t.teardown(() => close(server))
  return { endpoint: `http://127.0.0.1:${server.address().port}`, requests }
}

const hubOptions = (t, endpoint, extra = {}) => ({ endpoint, cacheDir: tempDir(t), offline: false, ...extra })

test.serial('a Hub that never answers times out after HF_HUB_ETAG_TIMEOUT (or timeoutMs), saying what timed out', async (t) => {
  const { endpoint } = await scriptedHub(t, ['model_index.json'], () => {}) // HEAD: no answer, ever
  const before = process.env.HF_HUB_ETAG_TIMEOUT
  process.env.HF_HUB_ETAG_TIMEOUT = '0.5'
  t.teardown(() => (before === undefined ? delete process.env.HF_HUB_ETAG_TIMEOUT : (process.env.HF_HUB_ETAG_TIMEOUT = before)))
  await rejectsWith(t, resolveModel('org/name', hubOptions(t, endpoint)), 'SANA_HUB_ERROR', 'timed out', '0.5 s', 'HF_HUB_ETAG_TIMEOUT', '--model <folder>')
  await rejectsWith(t, resolveModel('org/name', hubOptions(t, endpoint, { timeoutMs: 400 })), 'SANA_HUB_ERROR', 'timed out', '0.4 s')
  process.env.HF_HUB_ETAG_TIMEOUT = 'soon'
  await rejectsWith(t, resolveModel('org/name', hubOptions(t, endpoint)), 'SANA_INVALID_ARGUMENT', 'HF_HUB_ETAG_TIMEOUT')
  await rejectsWith(t, resolveModel('org/name', hubOptions(t, endpoint, { timeoutMs: -1 })), 'SANA_INVALID_ARGUMENT', 'timeoutMs')
})

test('a download whose body stalls is retried, then fails naming HF_HUB_DOWNLOAD_TIMEOUT', async (t) => {
  const body = Buffer.from('{"_class_name": "SanaPipeline"}')
  const { endpoint, requests } = await scriptedHub(t, ['model_index.json'], (req, res) => {
    res.writeHead(200, { ETag: `"${gitSha1(body)}"`, 'Content-Length': body.length })
    if (req.method === 'HEAD') return res.end()
    res.write(body.subarray(0, 5)) // …and nothing more
  })
  await rejectsWith(t, resolveModel('org/name', hubOptions(t, endpoint, { timeoutMs: 1000 })), 'SANA_HUB_ERROR', 'stalled', '4 attempts', 'HF_HUB_DOWNLOAD_TIMEOUT')
  t.is(requests.filter((r) => r.startsWith('GET /org')).length, 4)
})

test("a small file whose bytes do not match its git-sha1 ETag is refused as corrupt", async (t) => {
  const body = Buffer.from('{"_class_name": "SanaPipeline"}')
  const { endpoint } = await scriptedHub(t, ['model_index.json'], (req, res) => {
    res.writeHead(200, { ETag: `"${gitSha1(Buffer.from('something else'))}"`, 'Content-Length': body.length })
    res.end(req.method === 'HEAD' ? undefined : body)
  })
  const cacheDir = tempDir(t)
  await rejectsWith(t, resolveModel('org/name', hubOptions(t, endpoint, { cacheDir })), 'SANA_HUB_ERROR', 'corrupt', 'git sha1')
  t.false(existsSync(join(cacheDir, 'models--org--name', 'blobs', gitSha1(body))))
})

test('a download announced larger than the free disk space is refused before any byte is fetched', async (t) => {
  const { endpoint, requests } = await scriptedHub(t, ['model_index.json'], (req, res) => {
    res.writeHead(200, { ETag: `"${'b'.repeat(64)}"`, 'X-Linked-Size': String(2 ** 60) }).end()
  })
  await rejectsWith(t, resolveModel('org/name', hubOptions(t, endpoint)), 'SANA_IO_ERROR', 'Not enough disk space', 'model_index.json')
  t.deepEqual(requests.filter((r) => r.startsWith('GET /org')), [])
})

// ─── 8. Messages that mislead ──────────────────────────────────────────────────────────────────────

test('a path-looking model that does not exist is SANA_NOT_FOUND naming the path, never a Hub request', async (t) => {
  const { endpoint, requests } = await scriptedHub(t, [], () => t.fail('no request expected'))
  for (const p of ['./relative-missing', '../relative-missing', '/abs/missing']) {
    await rejectsWith(t, resolveModel(p, hubOptions(t, endpoint)), 'SANA_NOT_FOUND', resolve(p))
  }
  t.deepEqual(requests, [])
  const r = await sana(['generate', 'a fox', '-m', './relative-missing', '-o', join(tempDir(t), 'x.png')], { env: { HF_HUB_OFFLINE: '0', HF_ENDPOINT: endpoint } })
  failsWith(t, r, 1, 'SANA_NOT_FOUND', resolve(REPO, 'relative-missing'))
})

test("model_index.json: its path stands for the folder; a folder in its place is SANA_IO_ERROR", async (t) => {
  t.is(await resolveModel(join(SANA_TINY, 'model_index.json')), SANA_TINY)
  const dir = tempDir(t)
  mkdirSync(join(dir, 'model_index.json'))
  await rejectsWith(t, resolveModel(dir), 'SANA_IO_ERROR', join(dir, 'model_index.json'), 'not a file')
  await rejectsWith(t, SanaPipeline.load(dir), 'SANA_IO_ERROR', 'model_index.json')
  await rejectsWith(t, resolveModel(join(SANA_TINY, 'vae', 'config.json')), 'SANA_INVALID_ARGUMENT', 'pass the pipeline folder')
})

test('offline and network errors say how to go on: a local --model folder or sana pull', async (t) => {
  await rejectsWith(t, resolveModel('org/name', { cacheDir: tempDir(t), offline: true }), 'SANA_NOT_FOUND', 'sana pull org/name', '--model <folder>')
  // A port nothing listens on: closed right after it was bound.
  const server = createServer()
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok))
  const endpoint = `http://127.0.0.1:${server.address().port}`
  await close(server)
  await rejectsWith(t, resolveModel('org/name', hubOptions(t, endpoint)), 'SANA_HUB_ERROR', 'Could not reach', '--model <folder>', 'sana pull org/name')
})

test('an argument given as undefined is described as such, not as "undefined undefined"', (t) => {
  const err = t.throws(() => new SanaImage({ height: 1, data: new Uint8Array(3) }))
  t.is(err.code, 'SANA_INVALID_ARGUMENT')
  t.false(err.message.includes('undefined undefined'), err.message)
  t.true(err.message.includes('received nothing (undefined)'), err.message)
})

// ─── 5 and 6. Sizes ────────────────────────────────────────────────────────────────────────────────

test('tensor dimensions that do not fit 32 bits are rejected, in the facade and natively (no wrap modulo 2³²)', (t) => {
  const err = t.throws(() => Tensor.fromFloat32Array(new Float32Array(4), [2 ** 32 + 2, 2]))
  t.is(err.code, 'SANA_INVALID_ARGUMENT')
  t.true(err.message.includes('4294967298'), err.message)
  // The binding itself (index.js at the package root), bypassing the facade's checks.
  const { NativeTensor } = createRequire(import.meta.url)(join(REPO, 'index.js'))
  t.throws(() => NativeTensor.fromFloat32Array(new Float32Array(4), [2 ** 32 + 2, 2]), { message: /\[SANA_INVALID_ARGUMENT\].*shape/ })
  t.throws(() => NativeTensor.fromInt32Array(new Int32Array(4), [-4]), { message: /\[SANA_INVALID_ARGUMENT\].*shape/ })
})

test('maxSequenceLength beyond the text encoder positions is refused before any work; an absurd native length is an error', async (t) => {
  const pipe = await SanaPipeline.load(SANA_TINY)
  t.teardown(() => pipe.dispose())
  await rejectsWith(t, pipe.encodePrompt('a fox', { maxSequenceLength: 1e6 }), 'SANA_INVALID_ARGUMENT', 'maxSequenceLength', 'max_position_embeddings 8192')
  await rejectsWith(t, pipe.generate({ prompt: 'a fox', maxSequenceLength: 1e6, numInferenceSteps: 1 }), 'SANA_INVALID_ARGUMENT', 'maxSequenceLength')
  await rejectsWith(t, pipe.encodePrompt('a fox', { maxSequenceLength: 8193, complexHumanInstruction: null }), 'SANA_INVALID_ARGUMENT', 'from 2 to 8192')
  // The text encoder called directly with 2¹⁹ tokens: its attention logits would need terabytes.
  const l = 2 ** 19
  const ids = Tensor.fromInt32Array(new Int32Array(l), [1, l])
  const mask = Tensor.fromInt32Array(new Int32Array(l).fill(1), [1, l])
  await rejectsWith(t, pipe.textEncoder.forward({ inputIds: ids, attentionMask: mask }), 'SANA_INVALID_ARGUMENT', 'attention logits')
  t.true(pipe.textEncoder instanceof Gemma2TextEncoder)
})

// ─── 7. A missing native binary ────────────────────────────────────────────────────────────────────

test('a missing native binary is SANA_NOT_FOUND naming the file and the package to install', async (t) => {
  const dir = tempDir(t)
  for (const p of ['package.json', 'index.js', 'index.d.ts', 'dist']) cpSync(join(REPO, p), join(dir, p), { recursive: true })
  symlinkSync(join(REPO, 'node_modules'), join(dir, 'node_modules'))
  const r = await run(join(dir, 'dist', 'cli.js'), ['info'], { cwd: dir, env: { SANA_NODE_BINARY: 'cpu' } })
  failsWith(t, r, 1, 'SANA_NOT_FOUND', join(dir, 'sana.linux-x64-gnu.node'), 'npm i sana-node-linux-x64-gnu', 'npm run build')
  t.false(r.stderr.includes('npm/cli/issues'), 'not napi’s advice about an npm bug')
})

// ─── 8. A defaulted config key behind a shape mismatch ─────────────────────────────────────────────

test('a shape mismatch names the config keys that config.json lacks and were defaulted', async (t) => {
  const dir = tempDir(t)
  cpSync(join(SANA_TINY, 'transformer'), dir, { recursive: true })
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'))
  delete config.num_attention_heads // diffusers' default, 70, does not fit the tiny checkpoint
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config))
  const err = await rejectsWith(t, SanaTransformer2DModel.load(dir), 'SANA_SHAPE_MISMATCH', 'lacks num_attention_heads = 70', 'defaults were used')
  t.false(err.message.includes('attention_head_dim ='), `keys the config gives are not listed: ${err.message}`)
})
