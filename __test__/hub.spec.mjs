// Hub downloads against a local fake Hub (helpers/fake-hub.mjs, 127.0.0.1 only): the huggingface_hub
// cache layout, cache hits without requests, offline mode, variants, sharded weights, resumed and
// aborted transfers, auth and not-found errors, pinned revisions, and listCachedModels.
import test from 'ava'
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, unlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { listCachedModels, resolveModel, SanaError } from '../dist/index.js'
import { close, FakeRepo, PLAIN_FILES, SANA_TINY, fakeWeights, gitSha1, pipelineFiles, sendRange, sha256, startFakeHub } from './helpers/fake-hub.mjs'

// The tests set what they need; a developer's or CI's Hugging Face settings must not leak in.
for (const k of ['HF_HUB_OFFLINE', 'HF_TOKEN', 'HF_ENDPOINT', 'HF_HUB_CACHE', 'HF_HOME']) delete process.env[k]

const REPO = 'tiny-org/sana-tiny'
const REPO_DIR = 'models--tiny-org--sana-tiny'
const TRANSFORMER = 'transformer/diffusion_pytorch_model.safetensors'

/** A temp folder removed when the test ends. */
function tempDir(t) {
  const dir = mkdtempSync(join(tmpdir(), 'sana-hub-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** A fake Hub serving one pipeline repo, and a fresh cache folder. */
async function setup(t, { files = pipelineFiles(), ...hubOptions } = {}) {
  const repo = new FakeRepo()
  const commit = repo.commit(files)
  const hub = await startFakeHub(t, { repos: { [REPO]: repo }, ...hubOptions })
  const cacheDir = tempDir(t)
  const options = { endpoint: hub.endpoint, cacheDir }
  return { repo, commit, files, hub, cacheDir, options }
}

async function rejectsWith(t, promise, code, ...fragments) {
  const err = await t.throwsAsync(promise)
  t.true(err instanceof SanaError, `expected a SanaError, got ${err?.constructor?.name}: ${err?.message}`)
  t.is(err.code, code, err.message)
  for (const f of fragments) t.true(err.message.includes(f), `"${err.message}" should mention ${f}`)
  return err
}

/** Repo paths of every file in a snapshot folder. */
function snapshotFiles(dir) {
  return readdirSync(dir, { recursive: true })
    .filter((p) => !statSync(join(dir, p)).isDirectory())
    .sort()
}

const cdnGets = (hub) => hub.requests.filter((r) => r.method === 'GET' && r.path.startsWith('/cdn/'))

// ─── Local folders and arguments ────────────────────────────────────────────────────────────────

test('a local folder is returned as is, as an absolute path', async (t) => {
  t.is(await resolveModel(SANA_TINY), SANA_TINY)
  t.is(await resolveModel(relative(process.cwd(), SANA_TINY)), SANA_TINY)
  await rejectsWith(t, resolveModel('./no/such/folder'), 'SANA_NOT_FOUND', 'Folder not found', join(process.cwd(), 'no', 'such', 'folder'))
  await rejectsWith(t, resolveModel(''), 'SANA_INVALID_ARGUMENT', 'repoIdOrPath')
  await rejectsWith(t, resolveModel(REPO, { variant: 'fp 16' }), 'SANA_INVALID_ARGUMENT', 'variant')
  await rejectsWith(t, resolveModel(REPO, { revision: '../../etc' }), 'SANA_INVALID_ARGUMENT', 'revision')
  await rejectsWith(t, resolveModel(REPO, { endpoint: 'ftp://x' }), 'SANA_INVALID_ARGUMENT', 'endpoint')
})

// ─── Downloading into the cache ─────────────────────────────────────────────────────────────────

test('downloads only the pipeline files, into a cache laid out like huggingface_hub', async (t) => {
  const { commit, files, hub, cacheDir, options } = await setup(t)
  const dir = await resolveModel(REPO, options)
  const repoDir = join(cacheDir, REPO_DIR)
  t.is(dir, join(repoDir, 'snapshots', commit))
  t.is(readFileSync(join(repoDir, 'refs', 'main'), 'utf8'), commit) // no newline, as Python writes it
  // Exactly the pipeline's files: no README, .bin, onnx, nor variant weights.
  t.deepEqual(snapshotFiles(dir), PLAIN_FILES)
  for (const file of PLAIN_FILES) {
    const body = files.get(file)
    const etag = /\.safetensors$/.test(file) ? sha256(body) : gitSha1(body) // X-Linked-Etag, else ETag
    const link = join(dir, file)
    t.true(lstatSync(link).isSymbolicLink(), file)
    t.is(readlinkSync(link), relative(join(link, '..'), join(repoDir, 'blobs', etag)), file) // ../../blobs/… (one more ../ per folder)
    t.deepEqual(readFileSync(link), body, file)
  }
  t.deepEqual(readdirSync(join(repoDir, 'blobs')).filter((b) => b.endsWith('.incomplete')), [])
  t.is(readdirSync(join(repoDir, 'blobs')).length, PLAIN_FILES.length)
  // Files are fetched by commit, not by branch, so a moving branch cannot mix two commits.
  t.true(hub.requests.filter((r) => r.path.includes('/resolve/')).every((r) => r.path.includes(`/resolve/${commit}/`)))
})

test('a second call is served from the cache without any request', async (t) => {
  const { hub, options } = await setup(t)
  const first = await resolveModel(REPO, options)
  const seen = hub.requests.length
  t.is(await resolveModel(REPO, options), first)
  t.is(hub.requests.length, seen)
})

test('progress: every file reported once complete, in order, with stable counts', async (t) => {
  const { files, options } = await setup(t)
  const events = []
  await resolveModel(REPO, { ...options, onProgress: (p) => events.push(p) })
  const done = events.filter((e) => e.downloadedBytes === e.totalBytes && e.totalBytes > 0)
  t.deepEqual(
    done.map((e) => e.file),
    [
      'model_index.json',
      'scheduler/scheduler_config.json',
      'text_encoder/config.json',
      'text_encoder/model.safetensors.index.json',
      'text_encoder/model-00001-of-00002.safetensors',
      'text_encoder/model-00002-of-00002.safetensors',
      'tokenizer/special_tokens_map.json',
      'tokenizer/tokenizer.json',
      'tokenizer/tokenizer_config.json',
      'transformer/config.json',
      'transformer/diffusion_pytorch_model.safetensors',
      'vae/config.json',
      'vae/diffusion_pytorch_model.safetensors',
    ],
  )
  t.deepEqual(done.map((e) => e.fileIndex), [...PLAIN_FILES.keys()])
  t.true(events.every((e) => e.fileCount === PLAIN_FILES.length))
  t.true(done.every((e) => e.totalBytes === files.get(e.file).length))
  t.true(events.every((e, i) => i === 0 || e.fileIndex >= events[i - 1].fileIndex))
  // A second call reports the cached files as complete at once.
  const again = []
  await resolveModel(REPO, { ...options, refresh: true, onProgress: (p) => again.push(p) })
  t.deepEqual(again.map((e) => e.file), done.map((e) => e.file))
})

test('concurrent calls download each blob once', async (t) => {
  const { hub, options } = await setup(t)
  const [a, b] = await Promise.all([resolveModel(REPO, options), resolveModel(REPO, options)])
  t.is(a, b)
  const shas = cdnGets(hub).map((r) => r.path)
  t.is(new Set(shas).size, shas.length)
  t.is(shas.length, PLAIN_FILES.filter((f) => f.endsWith('.safetensors')).length)
})

// ─── Offline ────────────────────────────────────────────────────────────────────────────────────

test('offline: served from a complete cache; a miss or a partial cache names what is missing', async (t) => {
  const { hub, cacheDir, options } = await setup(t)
  await rejectsWith(t, resolveModel(REPO, { ...options, offline: true }), 'SANA_NOT_FOUND', REPO, 'not in the cache', 'offline')
  t.is(hub.requests.length, 0)
  const dir = await resolveModel(REPO, options)
  const seen = hub.requests.length
  t.is(await resolveModel(REPO, { ...options, offline: true }), dir)
  t.is(await resolveModel(REPO, { ...options, offline: true, refresh: true }), dir) // offline wins
  // The variant falls back to the cached plain weights, as the loader does.
  t.is(await resolveModel(REPO, { ...options, offline: true, variant: 'fp16' }), dir)
  await rejectsWith(t, resolveModel(REPO, { ...options, offline: true, revision: 'v1.0' }), 'SANA_NOT_FOUND', 'v1.0')
  // A blob deleted from under the snapshot (an interrupted Python download looks the same).
  unlinkSync(readlinkSync(join(dir, TRANSFORMER)).replace(/^(\.\.\/)+/, join(cacheDir, REPO_DIR) + '/'))
  unlinkSync(join(dir, 'text_encoder/model-00002-of-00002.safetensors'))
  await rejectsWith(t, resolveModel(REPO, { ...options, offline: true }), 'SANA_NOT_FOUND', 'transformer/ weights', 'text_encoder/model-00002-of-00002.safetensors')
  t.is(hub.requests.length, seen)
  // Online, the same call repairs the snapshot.
  t.is(await resolveModel(REPO, options), dir)
  t.true(existsSync(join(dir, TRANSFORMER)))
})

test.serial('environment: HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE', async (t) => {
  const { commit, hub, cacheDir } = await setup(t, { token: 'hf_env_token' })
  const saved = { ...process.env }
  t.teardown(() => {
    for (const k of ['HF_HUB_CACHE', 'HF_HOME', 'HF_ENDPOINT', 'HF_TOKEN', 'HF_HUB_OFFLINE']) {
      if (saved[k] === undefined) delete process.env[k]
      else process.env[k] = saved[k]
    }
  })
  Object.assign(process.env, { HF_HUB_CACHE: cacheDir, HF_ENDPOINT: hub.endpoint + '/', HF_TOKEN: 'hf_env_token', HF_HUB_OFFLINE: '0' })
  const dir = await resolveModel(REPO)
  t.is(dir, join(cacheDir, REPO_DIR, 'snapshots', commit))
  t.true(hub.requests.filter((r) => !r.path.startsWith('/cdn/')).every((r) => r.auth === 'Bearer hf_env_token'))
  // HF_HOME/hub when HF_HUB_CACHE is unset.
  delete process.env.HF_HUB_CACHE
  process.env.HF_HOME = tempDir(t)
  process.env.HF_HUB_OFFLINE = 'true'
  await rejectsWith(t, resolveModel(REPO), 'SANA_NOT_FOUND', join(process.env.HF_HOME, 'hub', REPO_DIR))
  const seen = hub.requests.length
  process.env.HF_HUB_CACHE = cacheDir
  t.is(await resolveModel(REPO, { refresh: true }), dir)
  t.is(hub.requests.length, seen)
  t.deepEqual((await listCachedModels()).map((m) => m.repoId), [REPO])
})

// ─── Variants and shards ────────────────────────────────────────────────────────────────────────

test('variant: variant weights where a component has them (single or sharded), plain elsewhere, never others', async (t) => {
  const { files, hub, options } = await setup(t)
  const dir = await resolveModel(REPO, { ...options, variant: 'fp16' })
  t.deepEqual(snapshotFiles(dir), [
    'model_index.json',
    'scheduler/scheduler_config.json',
    'text_encoder/config.json', // no fp16 text encoder: the plain shards
    'text_encoder/model-00001-of-00002.safetensors',
    'text_encoder/model-00002-of-00002.safetensors',
    'text_encoder/model.safetensors.index.json',
    'tokenizer/special_tokens_map.json',
    'tokenizer/tokenizer.json',
    'tokenizer/tokenizer_config.json',
    'transformer/config.json',
    'transformer/diffusion_pytorch_model.fp16.safetensors',
    'vae/config.json',
    'vae/diffusion_pytorch_model.fp16-00001-of-00002.safetensors',
    'vae/diffusion_pytorch_model.fp16-00002-of-00002.safetensors',
    'vae/diffusion_pytorch_model.safetensors.index.fp16.json',
  ])
  for (const f of snapshotFiles(dir)) t.deepEqual(readFileSync(join(dir, f)), files.get(f), f)
  // The text encoder fell back to plain weights, which the cache cannot tell from "the repo has no
  // fp16 text encoder": a second call asks the Hub (one API request) and downloads nothing.
  const seen = hub.requests.length
  t.is(await resolveModel(REPO, { ...options, variant: 'fp16' }), dir)
  t.deepEqual(hub.requests.slice(seen).map((r) => r.path), [`/api/models/${REPO}/revision/main`])
})

test('a repo with only variant weights asks for a variant; .bin-only weights are refused', async (t) => {
  const files = pipelineFiles()
  files.delete(TRANSFORMER)
  files.set('transformer/diffusion_pytorch_model.bf16.safetensors', fakeWeights(100))
  files.delete('vae/diffusion_pytorch_model.safetensors')
  files.delete('vae/diffusion_pytorch_model.fp16-00002-of-00002.safetensors')
  const { options } = await setup(t, { files })
  await rejectsWith(t, resolveModel(REPO, options), 'SANA_NOT_FOUND', 'transformer/ weights', 'bf16', 'pass variant', 'vae/ weights')
  // A shard named in the index but absent from the repo.
  await rejectsWith(t, resolveModel(REPO, { ...options, variant: 'fp16' }), 'SANA_NOT_FOUND', 'vae/diffusion_pytorch_model.fp16-00002-of-00002.safetensors')
  const binOnly = pipelineFiles()
  binOnly.delete(TRANSFORMER)
  binOnly.delete('transformer/diffusion_pytorch_model.fp16.safetensors')
  const other = await setup(t, { files: binOnly })
  await rejectsWith(t, resolveModel(REPO, other.options), 'SANA_NOT_FOUND', '.bin')
})

// ─── Interrupted and aborted transfers ──────────────────────────────────────────────────────────

/** A CDN hook that sends the headers and the first `bytes` of one blob, then closes the connection. */
function cutOnce(oid, bytes, { thenIgnoreRange = false } = {}) {
  let cut = false
  return (req, res, body) => {
    if (sha256(body) !== oid) return false
    if (!cut) {
      cut = true
      res.writeHead(200, { 'Content-Length': body.length })
      res.write(body.subarray(0, bytes), () => setTimeout(() => res.socket.destroy(), 20))
      return true
    }
    if (thenIgnoreRange) {
      res.writeHead(200, { 'Content-Length': body.length }).end(body)
      return true
    }
    return false
  }
}

test('an interrupted transfer resumes with a Range request and ends byte-identical', async (t) => {
  const files = pipelineFiles()
  const oid = sha256(files.get(TRANSFORMER))
  const { hub, cacheDir, options } = await setup(t, { files, cdn: cutOnce(oid, 300_000) })
  const dir = await resolveModel(REPO, options)
  const gets = cdnGets(hub).filter((r) => r.path === `/cdn/${oid}`)
  t.is(gets.length, 2)
  t.is(gets[0].range, undefined)
  const resumedAt = Number(/^bytes=(\d+)-$/.exec(gets[1].range)?.[1])
  t.true(resumedAt > 0 && resumedAt <= 300_000, `resumed at ${gets[1].range}`)
  t.deepEqual(readFileSync(join(dir, TRANSFORMER)), files.get(TRANSFORMER))
  t.false(existsSync(join(cacheDir, REPO_DIR, 'blobs', `${oid}.incomplete`)))
})

test('a server that ignores Range gets the whole file again, and the result is still identical', async (t) => {
  const files = pipelineFiles()
  const oid = sha256(files.get(TRANSFORMER))
  const { hub, options } = await setup(t, { files, cdn: cutOnce(oid, 300_000, { thenIgnoreRange: true }) })
  const dir = await resolveModel(REPO, options)
  t.true(cdnGets(hub).some((r) => r.path === `/cdn/${oid}` && r.range))
  t.deepEqual(readFileSync(join(dir, TRANSFORMER)), files.get(TRANSFORMER))
})

test('abort: rejects promptly with ABORT_ERR, keeps the .incomplete, and the next call resumes it', async (t) => {
  const files = pipelineFiles()
  const oid = sha256(files.get(TRANSFORMER))
  let stall = true
  const stalls = []
  const { hub, cacheDir, options } = await setup(t, {
    files,
    cdn: (req, res, body) => {
      if (sha256(body) !== oid || !stall) return false
      res.writeHead(200, { 'Content-Length': body.length })
      res.write(body.subarray(0, 100_000)) // …and never the rest
      stalls.push(res)
      return true
    },
  })
  const part = join(cacheDir, REPO_DIR, 'blobs', `${oid}.incomplete`)
  const controller = new AbortController()
  const pending = resolveModel(REPO, { ...options, signal: controller.signal })
  while (!(existsSync(part) && statSync(part).size > 0)) await new Promise((ok) => setTimeout(ok, 10))
  const started = Date.now()
  controller.abort()
  const err = await rejectsWith(t, pending, 'ABORT_ERR')
  t.is(err.name, 'AbortError')
  t.true(Date.now() - started < 1000)
  const kept = statSync(part).size
  t.true(kept > 0 && kept <= 100_000)
  t.false(existsSync(join(cacheDir, REPO_DIR, 'refs', 'main')))
  // An already-aborted signal rejects before any request.
  const seen = hub.requests.length
  await rejectsWith(t, resolveModel(REPO, { ...options, signal: AbortSignal.abort() }), 'ABORT_ERR')
  t.is(hub.requests.length, seen)
  stall = false
  const dir = await resolveModel(REPO, options)
  t.is(cdnGets(hub).filter((r) => r.path === `/cdn/${oid}`).at(-1).range, `bytes=${kept}-`)
  t.deepEqual(readFileSync(join(dir, TRANSFORMER)), files.get(TRANSFORMER))
})

test('abort while waiting for another call downloading the same blob rejects at once; the other goes on', async (t) => {
  const files = pipelineFiles()
  const body = files.get(TRANSFORMER)
  const oid = sha256(body)
  let stalled
  const { cacheDir, options } = await setup(t, {
    files,
    cdn: (req, res, b) => {
      if (sha256(b) !== oid || stalled) return false
      res.writeHead(200, { 'Content-Length': b.length })
      res.write(b.subarray(0, 100_000))
      stalled = res
      return true
    },
  })
  const part = join(cacheDir, REPO_DIR, 'blobs', `${oid}.incomplete`)
  const first = resolveModel(REPO, options)
  while (!(existsSync(part) && statSync(part).size > 0)) await new Promise((ok) => setTimeout(ok, 10))
  const controller = new AbortController()
  const second = resolveModel(REPO, { ...options, signal: controller.signal })
  await new Promise((ok) => setTimeout(ok, 200)) // the second call is now waiting for the first's blob
  controller.abort()
  await rejectsWith(t, second, 'ABORT_ERR')
  stalled.end(body.subarray(100_000))
  const dir = await first
  t.deepEqual(readFileSync(join(dir, TRANSFORMER)), body)
})

// ─── Errors from the Hub ────────────────────────────────────────────────────────────────────────

test('401 rejects with SANA_HUB_ERROR telling to set HF_TOKEN; the token is sent as a Bearer', async (t) => {
  const { hub, options } = await setup(t, { token: 'hf_secret' })
  await rejectsWith(t, resolveModel(REPO, options), 'SANA_HUB_ERROR', '401', 'HF_TOKEN', 'license')
  await rejectsWith(t, resolveModel(REPO, { ...options, token: 'hf_wrong' }), 'SANA_HUB_ERROR', '401')
  const dir = await resolveModel(REPO, { ...options, token: 'hf_secret' })
  t.true(existsSync(join(dir, 'model_index.json')))
  t.is(hub.requests.filter((r) => r.path.startsWith('/api/') && r.auth === 'Bearer hf_secret').length, 1)
  t.true(hub.requests.filter((r) => r.path.includes('/resolve/')).every((r) => r.auth === 'Bearer hf_secret'))
  // The token stays on the Hub: the CDN that LFS files redirect to never sees it.
  t.true(cdnGets(hub).length > 0)
  t.true(cdnGets(hub).every((r) => r.auth === undefined))
})

test('a missing repo, revision or model_index.json rejects with SANA_NOT_FOUND', async (t) => {
  const noIndex = pipelineFiles()
  noIndex.delete('model_index.json')
  const { repo, hub, options } = await setup(t)
  repo.commit(noIndex, 'no-index')
  await rejectsWith(t, resolveModel('tiny-org/no-such-repo', options), 'SANA_NOT_FOUND', 'tiny-org/no-such-repo', 'not found')
  await rejectsWith(t, resolveModel(REPO, { ...options, revision: 'v9' }), 'SANA_NOT_FOUND', '"v9"', REPO)
  await rejectsWith(t, resolveModel(REPO, { ...options, revision: 'no-index' }), 'SANA_NOT_FOUND', 'model_index.json')
  // Nothing listens on the port any more: a network error, with the offline hint.
  await close(hub.server)
  await rejectsWith(t, resolveModel(REPO, options), 'SANA_HUB_ERROR', 'Could not reach', 'HF_HUB_OFFLINE')
})

// ─── Revisions ──────────────────────────────────────────────────────────────────────────────────

/** A repo whose main moved: commit `old` had another transformer. */
async function movedMain(t) {
  const oldFiles = pipelineFiles()
  const newFiles = new Map(oldFiles)
  newFiles.set(TRANSFORMER, fakeWeights(123_456))
  const ctx = await setup(t, { files: oldFiles })
  return { ...ctx, old: ctx.commit, oldFiles, newFiles }
}

test('a revision pinned to a commit is downloaded as that commit, without writing a ref', async (t) => {
  const { repo, old, oldFiles, newFiles, cacheDir, options } = await movedMain(t)
  const head = repo.commit(newFiles)
  const dir = await resolveModel(REPO, { ...options, revision: old })
  t.is(dir, join(cacheDir, REPO_DIR, 'snapshots', old))
  t.deepEqual(readFileSync(join(dir, TRANSFORMER)), oldFiles.get(TRANSFORMER))
  t.false(existsSync(join(cacheDir, REPO_DIR, 'refs')))
  // A commit never moves: cached, it needs no request, offline included.
  t.is(await resolveModel(REPO, { ...options, revision: old, offline: true }), dir)
  await rejectsWith(t, resolveModel(REPO, { ...options, offline: true }), 'SANA_NOT_FOUND', 'main', 'not in the cache')
  await rejectsWith(t, resolveModel(REPO, { ...options, offline: true, revision: head }), 'SANA_NOT_FOUND', head, 'not in the cache')
  const main = await resolveModel(REPO, options)
  t.is(main, join(cacheDir, REPO_DIR, 'snapshots', head))
  t.deepEqual(readFileSync(join(main, TRANSFORMER)), newFiles.get(TRANSFORMER))
})

test('refresh: a branch that moved is downloaded again, reusing unchanged blobs', async (t) => {
  const { repo, old, newFiles, hub, cacheDir, options } = await movedMain(t)
  const first = await resolveModel(REPO, options)
  const head = repo.commit(newFiles)
  const seen = hub.requests.length
  t.is(await resolveModel(REPO, options), first) // cache first: no request, the old commit
  t.is(hub.requests.length, seen)
  const dir = await resolveModel(REPO, { ...options, refresh: true })
  t.is(dir, join(cacheDir, REPO_DIR, 'snapshots', head))
  t.is(readFileSync(join(cacheDir, REPO_DIR, 'refs', 'main'), 'utf8'), head)
  t.deepEqual(readFileSync(join(dir, TRANSFORMER)), newFiles.get(TRANSFORMER))
  const gets = hub.requests.slice(seen).filter((r) => r.method === 'GET' && !r.path.startsWith('/api/'))
  t.deepEqual(gets.map((r) => r.path), [`/cdn/${sha256(newFiles.get(TRANSFORMER))}`])
  t.true(existsSync(join(cacheDir, REPO_DIR, 'snapshots', old, TRANSFORMER)))
})

// ─── Listing the cache ──────────────────────────────────────────────────────────────────────────

test('listCachedModels lists repos, their snapshots, refs, paths and sizes', async (t) => {
  const { repo, old, oldFiles, newFiles, cacheDir, options } = await movedMain(t)
  t.deepEqual(await listCachedModels({ cacheDir: join(cacheDir, 'nothing-here') }), [])
  await resolveModel(REPO, { ...options, revision: old })
  const head = repo.commit(newFiles)
  await resolveModel(REPO, options)
  const size = (files) => PLAIN_FILES.reduce((n, f) => n + files.get(f).length, 0)
  t.deepEqual(await listCachedModels({ cacheDir }), [
    {
      repoId: REPO,
      revisions: [
        { commit: head, refs: ['main'], path: join(cacheDir, REPO_DIR, 'snapshots', head), sizeBytes: size(newFiles) },
        { commit: old, refs: [], path: join(cacheDir, REPO_DIR, 'snapshots', old), sizeBytes: size(oldFiles) },
      ],
    },
  ])
})
