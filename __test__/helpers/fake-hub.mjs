// A local stand-in for the Hugging Face Hub, for tests: the endpoints resolveModel uses, answered the
// way huggingface.co answers them, from in-memory repos. Listens on 127.0.0.1 only.
//
//   GET  /api/models/{org}/{name}/revision/{rev}   → { id, sha, siblings: [{ rfilename }] }
//   HEAD/GET /{org}/{name}/resolve/{rev}/{path}     → small files: 200, ETag = git blob sha1
//                                                     LFS files: 302 to the CDN, X-Linked-Etag/-Size
//   GET  /cdn/{sha256}  (the CDN: another port, so another origin, like the real one)
//                                                   → the bytes, honouring Range: bytes=N-
import { createHash, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { join } from 'node:path'
import { SANA_TINY } from './paths.mjs'

export { SANA_TINY }

const LFS = /\.(safetensors|bin|onnx|ckpt|pth)$/

export const sha256 = (buf) => createHash('sha256').update(buf).digest('hex')
export const gitSha1 = (buf) => createHash('sha1').update(`blob ${buf.length}\0`).update(buf).digest('hex')

/** A safetensors-looking file of `n` random bytes (the hub code never parses weights). */
export const fakeWeights = (n) => randomBytes(n)

/** A small diffusers pipeline: real configs from the sana-tiny fixture, fake weights, and files to skip. */
export function pipelineFiles() {
  const fixture = (p) => readFileSync(join(SANA_TINY, p))
  const json = (v) => Buffer.from(JSON.stringify(v, null, 2))
  const shardIndex = (base, shards) => json({ metadata: { total_size: 0 }, weight_map: Object.fromEntries(shards.map((s, i) => [`w${i}.weight`, s])) })
  return new Map([
    ['model_index.json', fixture('model_index.json')],
    ['README.md', Buffer.from('# tiny\n')],
    ['.gitattributes', Buffer.from('*.safetensors filter=lfs\n')],
    ['onnx/model.onnx', fakeWeights(1000)],
    ['scheduler/scheduler_config.json', fixture('scheduler/scheduler_config.json')],
    ['tokenizer/tokenizer_config.json', fixture('tokenizer/tokenizer_config.json')],
    ['tokenizer/special_tokens_map.json', json({ bos_token: '<bos>' })],
    ['tokenizer/tokenizer.json', json({ version: '1.0', model: { type: 'BPE' } })],
    ['text_encoder/config.json', fixture('text_encoder/config.json')],
    // Sharded, plain only: the fp16 request falls back to these.
    ['text_encoder/model.safetensors.index.json', shardIndex('model', ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'])],
    ['text_encoder/model-00001-of-00002.safetensors', fakeWeights(70_000)],
    ['text_encoder/model-00002-of-00002.safetensors', fakeWeights(50_000)],
    ['text_encoder/pytorch_model.bin', fakeWeights(1000)],
    ['transformer/config.json', fixture('transformer/config.json')],
    ['transformer/diffusion_pytorch_model.safetensors', fixture('transformer/diffusion_pytorch_model.safetensors')],
    ['transformer/diffusion_pytorch_model.fp16.safetensors', fakeWeights(200_000)],
    ['transformer/diffusion_pytorch_model.bin', fakeWeights(1000)],
    ['vae/config.json', fixture('vae/config.json')],
    ['vae/diffusion_pytorch_model.safetensors', fakeWeights(150_000)],
    // Sharded variant (diffusers names: index.fp16.json, .fp16-0000k-of-0000n shards) and another variant.
    ['vae/diffusion_pytorch_model.safetensors.index.fp16.json', shardIndex('diffusion_pytorch_model', ['diffusion_pytorch_model.fp16-00001-of-00002.safetensors', 'diffusion_pytorch_model.fp16-00002-of-00002.safetensors'])],
    ['vae/diffusion_pytorch_model.fp16-00001-of-00002.safetensors', fakeWeights(40_000)],
    ['vae/diffusion_pytorch_model.fp16-00002-of-00002.safetensors', fakeWeights(30_000)],
    ['vae/diffusion_pytorch_model.bf16.safetensors', fakeWeights(1000)],
  ])
}

/** The files resolveModel should fetch from {@link pipelineFiles} without a variant. */
export const PLAIN_FILES = [
  'model_index.json',
  'scheduler/scheduler_config.json',
  'text_encoder/config.json',
  'text_encoder/model-00001-of-00002.safetensors',
  'text_encoder/model-00002-of-00002.safetensors',
  'text_encoder/model.safetensors.index.json',
  'tokenizer/special_tokens_map.json',
  'tokenizer/tokenizer.json',
  'tokenizer/tokenizer_config.json',
  'transformer/config.json',
  'transformer/diffusion_pytorch_model.safetensors',
  'vae/config.json',
  'vae/diffusion_pytorch_model.safetensors',
]

/** A repo: commits (sha → files) and refs (branch/tag → sha). */
export class FakeRepo {
  commits = new Map()
  refs = new Map()

  /** Add a commit with these files and point `ref` at it; returns its sha. */
  commit(files, ref = 'main') {
    const sha = createHash('sha1').update(`${this.commits.size}:${[...files.keys()].join(',')}`).digest('hex')
    this.commits.set(sha, files)
    if (ref) this.refs.set(ref, sha)
    return sha
  }

  resolve(rev) {
    return this.commits.has(rev) ? rev : this.refs.get(rev)
  }
}

/**
 * Start a fake Hub and its CDN for a test (closed in t.teardown). `repos`: { 'org/name': FakeRepo }.
 * `token`: when set, the API and resolve endpoints answer 401 without `Authorization: Bearer <token>`.
 * `cdn(req, res, body)`: optional hook for CDN downloads; return true when it answered itself.
 * Every request is logged in `hub.requests` as { method, path, range, auth } (CDN paths start with /cdn/).
 */
export async function startFakeHub(t, { repos = {}, token, cdn } = {}) {
  const blobs = new Map()
  const requests = []
  const log = (req) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname)
    requests.push({ method: req.method, path, range: req.headers.range, auth: req.headers.authorization })
    return path
  }
  const fail = (res, status, code) => {
    if (code) res.setHeader('X-Error-Code', code)
    res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify({ error: code ?? status }))
  }
  const cdnServer = createServer((req, res) => {
    const path = log(req)
    const body = blobs.get(/^\/cdn\/([0-9a-f]{64})$/.exec(path)?.[1])
    if (!body) return fail(res, 404)
    if (cdn?.(req, res, body)) return
    sendRange(req, res, body)
  })
  const hubServer = createServer((req, res) => {
    const path = log(req)
    if (token && req.headers.authorization !== `Bearer ${token}`) return fail(res, 401)
    let m
    if ((m = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/(.+)$/.exec(path))) {
      const repo = repos[m[1]]
      if (!repo) return fail(res, 404, 'RepoNotFound')
      const sha = repo.resolve(m[2])
      if (!sha) return fail(res, 404, 'RevisionNotFound')
      const siblings = [...repo.commits.get(sha).keys()].map((rfilename) => ({ rfilename }))
      return res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ id: m[1], sha, siblings }))
    }
    if ((m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path))) {
      const repo = repos[m[1]]
      if (!repo) return fail(res, 404, 'RepoNotFound')
      const sha = repo.resolve(m[2])
      if (!sha) return fail(res, 404, 'RevisionNotFound')
      const body = repo.commits.get(sha).get(m[3])
      if (!body) return fail(res, 404, 'EntryNotFound')
      if (LFS.test(m[3])) {
        const oid = sha256(body)
        blobs.set(oid, body)
        return res
          .writeHead(302, {
            Location: `http://127.0.0.1:${cdnServer.address().port}/cdn/${oid}`,
            'X-Repo-Commit': sha,
            'X-Linked-Etag': `"${oid}"`,
            'X-Linked-Size': String(body.length),
            ETag: `W/"not-the-blob-name"`,
          })
          .end()
      }
      res.writeHead(200, { 'X-Repo-Commit': sha, ETag: `"${gitSha1(body)}"`, 'Content-Length': body.length })
      return res.end(req.method === 'HEAD' ? undefined : body)
    }
    fail(res, 404)
  })
  for (const server of [hubServer, cdnServer]) {
    await new Promise((ok) => server.listen(0, '127.0.0.1', ok))
    t.teardown(() => close(server))
  }
  return { endpoint: `http://127.0.0.1:${hubServer.address().port}`, requests, server: hubServer }
}

/** Close a server now, its open (keep-alive, stalled) connections included. */
export function close(server) {
  server.closeAllConnections()
  return new Promise((ok) => server.close(() => ok()))
}

/** Answer `body`, from `Range: bytes=N-` when asked (206), else whole (200). */
export function sendRange(req, res, body) {
  const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '')
  const start = m ? Number(m[1]) : 0
  if (start >= body.length && body.length > 0) return res.writeHead(416).end()
  const headers = { 'Content-Length': body.length - start, ETag: `"${sha256(body)}"` }
  if (m) headers['Content-Range'] = `bytes ${start}-${body.length - 1}/${body.length}`
  res.writeHead(m ? 206 : 200, headers).end(body.subarray(start))
}
