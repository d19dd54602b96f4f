/**
 * Hugging Face Hub access: turn a repo id (or a local folder) into a local diffusers pipeline folder.
 *
 * Downloads go into the standard Hugging Face cache, laid out exactly as Python's `huggingface_hub`
 * writes it, so both share one copy of every file:
 *
 *     <cacheDir>/models--<org>--<name>/
 *       blobs/<etag>                  file contents, named by ETag (sha256 for LFS files, git sha1 otherwise)
 *       blobs/<etag>.incomplete       a download in progress, resumed with `Range: bytes=N-`
 *       snapshots/<commit>/<path>     relative symlinks to ../../blobs/<etag>
 *       refs/<revision>               the commit a branch or tag pointed to when last resolved
 *
 * Only what a pipeline needs is downloaded: model_index.json, each component's config and tokenizer
 * files, and each model component's safetensors weights, chosen like the native loader chooses them
 * (`crates/sana-core/src/weights.rs`), so the folder returned loads as it is.
 */
import { createHash, type Hash } from 'node:crypto'
import { createReadStream, existsSync, statSync } from 'node:fs'
import * as fs from 'node:fs/promises'
import { homedir } from 'node:os'
import { dirname, join, relative, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { invalidArgument, SanaError, throwIfAborted } from './errors'

// ─── Public types ───────────────────────────────────────────────────────────────────────────────

/** Progress of one file of a {@link resolveModel} download. */
export interface DownloadProgress {
  /** Path of the file in the repo, e.g. `'transformer/diffusion_pytorch_model.safetensors'`. */
  file: string
  /** Bytes of this file on disk so far (a resumed download starts above 0). */
  downloadedBytes: number
  /** Size of this file, as announced by the Hub; 0 when the server sent none. */
  totalBytes: number
  /** Position of this file among the pipeline's files, from 0. */
  fileIndex: number
  /** Number of files the pipeline needs (those already cached included). */
  fileCount: number
}

/** Where the Hugging Face cache is. */
export interface CacheOptions {
  /**
   * The hub cache folder (the one holding `models--org--name/`). Defaults to `HF_HUB_CACHE`, else
   * `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub` — the
   * folder Python's `huggingface_hub` uses, so downloads are shared with it.
   */
  cacheDir?: string
}

/** Options of {@link resolveModel}. */
export interface ResolveModelOptions extends CacheOptions {
  /** Branch, tag or full commit hash to use. Defaults to `'main'`. */
  revision?: string
  /**
   * Weights variant to download, e.g. `'fp16'` or `'bf16'` for `diffusion_pytorch_model.fp16.safetensors`;
   * components without that variant get their plain weights. Pass the same `variant` when loading.
   * Defaults to none (plain weights only).
   */
  variant?: string
  /** Hub server. Defaults to `HF_ENDPOINT`, else `'https://huggingface.co'`. */
  endpoint?: string
  /** Access token for private or gated repos. Defaults to `HF_TOKEN`, else none. */
  token?: string
  /**
   * Never touch the network: serve from the cache or reject with `SANA_NOT_FOUND`.
   * Defaults to `true` when `HF_HUB_OFFLINE` is `1`/`ON`/`YES`/`TRUE`, else `false`.
   */
  offline?: boolean
  /**
   * Ask the Hub where `revision` points now even when the cache already holds a complete snapshot for
   * it (a branch that moved is then downloaded; unchanged files are reused). Defaults to `false`: a
   * complete cached snapshot is used without any request, as when offline.
   */
  refresh?: boolean
  /** Cancels the download; the call rejects with `ABORT_ERR` and the partial file is resumed next time. Defaults to none. */
  signal?: AbortSignal
  /** Called as files arrive (and once for each file found in the cache). Defaults to none. */
  onProgress?: (progress: DownloadProgress) => void
}

/** One cached snapshot of a repo, as listed by {@link listCachedModels}. */
export interface CachedRevision {
  /** Full commit hash. */
  commit: string
  /** Branches and tags (`refs/` entries) that point at this commit, e.g. `['main']`; may be empty. */
  refs: string[]
  /** Absolute path of the snapshot folder (what {@link resolveModel} returns). */
  path: string
  /** Bytes of the distinct files in the snapshot. */
  sizeBytes: number
}

/** One repo in the cache, as listed by {@link listCachedModels}. */
export interface CachedModel {
  /** `org/name`. */
  repoId: string
  /** Its snapshots, those with refs first. */
  revisions: CachedRevision[]
}

// ─── Constants and small helpers ────────────────────────────────────────────────────────────────

const DEFAULT_ENDPOINT = 'https://huggingface.co'
const COMMIT_HASH = /^[0-9a-f]{40}$/
const SHA256 = /^[0-9a-f]{64}$/
/** `org/name`, as huggingface_hub's `validate_repo_id` accepts it (with an org). */
const REPO_ID = /^[\w.-]{1,96}\/[\w.-]{1,96}$/
/** Base names of weights files, in the order the native loader tries them. */
const WEIGHT_BASES = ['diffusion_pytorch_model', 'model']
/** Config and tokenizer files of a component (json, vocab/merges txt, sentencepiece .model). */
const CONFIG_FILE = /\.(json|txt|model)$/
/** Index files of sharded weights (safetensors or torch), plain or variant. */
const WEIGHTS_INDEX = /\.(safetensors|bin)\.index(\.[\w-]+)?\.json$/
const DOWNLOAD_ATTEMPTS = 4
const RETRY_DELAY_MS = 250
const PROGRESS_INTERVAL_MS = 100

function truthyEnv(name: string): boolean {
  return ['1', 'ON', 'YES', 'TRUE'].includes((process.env[name] ?? '').toUpperCase())
}

/** The hub cache folder (see {@link CacheOptions.cacheDir}). */
function hubCacheDir(cacheDir: string | undefined): string {
  if (cacheDir !== undefined) return resolve(cacheDir)
  const env = process.env
  if (env.HF_HUB_CACHE) return resolve(env.HF_HUB_CACHE)
  const hfHome = env.HF_HOME || join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'huggingface')
  return resolve(hfHome, 'hub')
}

/** A repo-relative path that stays inside the folder it is joined to. */
function isSafeRelPath(p: string): boolean {
  return p.length > 0 && !p.includes('\\') && !p.includes('\0') && p.split('/').every((s) => s !== '' && s !== '.' && s !== '..')
}

function abortError(signal: AbortSignal): SanaError {
  return new SanaError('ABORT_ERR', 'The operation was aborted', { cause: signal.reason })
}

/** Run a filesystem operation, turning its errors into `SANA_IO_ERROR`. */
async function io<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn()
  } catch (e) {
    throw new SanaError('SANA_IO_ERROR', `${what}: ${(e as Error).message}`, { cause: e })
  }
}

/** Size of a file (following symlinks), or undefined when it does not exist. */
async function fileSize(path: string): Promise<number | undefined> {
  try {
    const st = await fs.stat(path)
    return st.isFile() ? st.size : undefined
  } catch {
    return undefined
  }
}

async function readJson(path: string, what: string): Promise<unknown> {
  const text = await io(`Could not read ${what}`, () => fs.readFile(path, 'utf8'))
  try {
    return JSON.parse(text)
  } catch (e) {
    throw new SanaError('SANA_INVALID_JSON', `${what} is not valid JSON (${path}): ${(e as Error).message}`, { cause: e })
  }
}

// ─── Which files a pipeline needs ───────────────────────────────────────────────────────────────

/** The files a pipeline needs, from a listing of a repo (the Hub's) or of a snapshot (the cache's). */
interface PipelinePlan {
  /** Repo paths to fetch, model_index.json first, then each component's configs and weights. */
  files: string[]
  /** Sharded-weights indexes among `files`: their shards are added once the index is read. */
  indexes: string[]
  /** What the pipeline needs but the listing lacks, for people. */
  missing: string[]
  /** Components that have no weights of the requested variant, so their plain weights were chosen. */
  fallbacks: string[]
}

/** Weights-file candidates of one base name, in the native loader's order (`weights.rs` `candidates`). */
function weightCandidates(base: string, variant: string | undefined): string[] {
  const plain = [`${base}.safetensors`, `${base}.safetensors.index.json`]
  if (!variant) return plain
  return [`${base}.${variant}.safetensors`, `${base}.safetensors.index.${variant}.json`, `${base}.${variant}.safetensors.index.json`, ...plain]
}

/** Why a model component has no usable weights, for the error message. */
function whyNoWeights(names: string[], variant: string | undefined): string {
  const variants = new Set<string>()
  for (const n of names) {
    const m = /^[\w-]+\.([\w-]+)\.safetensors$|^[\w-]+\.safetensors\.index\.([\w-]+)\.json$/.exec(n)
    if (m) variants.add(m[1] ?? m[2])
  }
  if (variants.size > 0) {
    const list = [...variants].sort().join(', ')
    return variant ? `only variants ${list}, no ${variant} or plain weights` : `only variant weights (${list}): pass variant`
  }
  if (names.some((n) => /\.(bin|ckpt|pth|pt)$/.test(n))) return 'only .bin/.ckpt/.pth weights, which sana-node does not load'
  return 'no .safetensors weights'
}

/** Components listed in model_index.json: `{ "vae": ["diffusers", "AutoencoderDC"], "_class_name": … }`. */
function pipelineComponents(modelIndex: unknown): string[] {
  if (!modelIndex || typeof modelIndex !== 'object' || Array.isArray(modelIndex)) {
    throw new SanaError('SANA_INVALID_CONFIG', 'model_index.json is not a JSON object')
  }
  const out: string[] = []
  for (const [name, value] of Object.entries(modelIndex)) {
    if (name.startsWith('_') || !Array.isArray(value) || value[0] == null) continue // metadata, optional absent parts
    if (!/^[\w.-]+$/.test(name) || name === '.' || name === '..') {
      throw new SanaError('SANA_INVALID_CONFIG', `model_index.json names an invalid component folder ${JSON.stringify(name)}`)
    }
    out.push(name)
  }
  return out
}

/**
 * Choose a pipeline's files from a listing. A component folder with a `config.json` (or weights) is a
 * model and needs weights; the others (scheduler, tokenizer) need only their config files.
 */
function planPipeline(listing: Set<string>, modelIndex: unknown, variant: string | undefined): PipelinePlan {
  const plan: PipelinePlan = { files: ['model_index.json'], indexes: [], missing: [], fallbacks: [] }
  for (const component of pipelineComponents(modelIndex)) {
    const prefix = `${component}/`
    const names = [...listing].filter((p) => p.startsWith(prefix) && !p.includes('/', prefix.length)).map((p) => p.slice(prefix.length))
    if (names.length === 0) {
      plan.missing.push(`${prefix} (no files)`)
      continue
    }
    const configs = names.filter((n) => CONFIG_FILE.test(n) && !WEIGHTS_INDEX.test(n)).sort()
    plan.files.push(...configs.map((n) => prefix + n))
    const isModel = names.includes('config.json') || names.some((n) => n.endsWith('.safetensors'))
    if (!isModel) {
      if (configs.length === 0) plan.missing.push(`${prefix} (no config files)`)
      continue
    }
    if (!names.includes('config.json')) plan.missing.push(`${prefix}config.json`)
    const chosen = WEIGHT_BASES.flatMap((b) => weightCandidates(b, variant)).find((n) => names.includes(n))
    if (!chosen) {
      plan.missing.push(`${prefix} weights (${whyNoWeights(names, variant)})`)
      continue
    }
    plan.files.push(prefix + chosen)
    if (chosen.endsWith('.json')) plan.indexes.push(prefix + chosen)
    if (variant && !chosen.includes(`.${variant}.`)) plan.fallbacks.push(component)
  }
  return plan
}

/** The shard files a sharded-weights index names (`weight_map` values), as repo paths. */
function shardsOf(index: unknown, indexPath: string): string[] {
  const map = (index as { weight_map?: unknown } | null)?.weight_map
  if (!map || typeof map !== 'object') {
    throw new SanaError('SANA_INVALID_CONFIG', `${indexPath} has no "weight_map" object`)
  }
  const shards = new Set<string>()
  for (const file of Object.values(map)) {
    if (typeof file !== 'string' || !/^[\w.-]+$/.test(file) || file === '..') {
      throw new SanaError('SANA_INVALID_CONFIG', `${indexPath} names an invalid shard ${JSON.stringify(file)}`)
    }
    shards.add(`${dirname(indexPath)}/${file}`)
  }
  return [...shards].sort()
}

// ─── The cache of one repo ──────────────────────────────────────────────────────────────────────

class RepoCache {
  /** `<cacheDir>/models--org--name`. */
  readonly dir: string

  constructor(cacheDir: string, readonly repoId: string) {
    this.dir = join(cacheDir, `models--${repoId.replace('/', '--')}`)
  }

  blob(etag: string): string {
    return join(this.dir, 'blobs', etag)
  }

  snapshot(commit: string): string {
    return join(this.dir, 'snapshots', commit)
  }

  /** The commit `revision` resolves to in the cache, if any (a commit hash resolves to itself). */
  async commitOf(revision: string): Promise<string | undefined> {
    if (COMMIT_HASH.test(revision)) return revision
    try {
      const commit = (await fs.readFile(join(this.dir, 'refs', revision), 'utf8')).trim()
      return COMMIT_HASH.test(commit) ? commit : undefined
    } catch {
      return undefined
    }
  }

  /** Record where a branch or tag points (huggingface_hub writes no ref for a commit hash). */
  async writeRef(revision: string, commit: string): Promise<void> {
    if (revision === commit) return
    const path = join(this.dir, 'refs', revision)
    await io(`Could not write ${path}`, async () => {
      await fs.mkdir(dirname(path), { recursive: true })
      await fs.writeFile(path, commit)
    })
  }

  /** Size of a file in a snapshot, or undefined when it (or the blob its link points to) is absent. */
  fileSize(commit: string, path: string): Promise<number | undefined> {
    return fileSize(join(this.snapshot(commit), path))
  }

  /** Point `snapshots/<commit>/<path>` at `blobs/<etag>` with a relative symlink, as huggingface_hub does. */
  async link(commit: string, path: string, etag: string): Promise<void> {
    const dst = join(this.snapshot(commit), path)
    const target = relative(dirname(dst), this.blob(etag))
    if ((await fs.readlink(dst).catch(() => undefined)) === target) return
    // Link beside it and rename over: replaces a dangling link atomically, so a concurrent reader
    // never sees the file missing.
    const tmp = `${dst}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`
    await io(`Could not link ${dst}`, async () => {
      await fs.mkdir(dirname(dst), { recursive: true })
      await fs.symlink(target, tmp)
      await fs.rename(tmp, dst).catch(async (e) => {
        await fs.rm(tmp, { force: true })
        throw e
      })
    })
  }

  /** Every file of a snapshot whose content is present, as repo paths. */
  async listSnapshot(commit: string): Promise<Set<string>> {
    const root = this.snapshot(commit)
    let entries: string[]
    try {
      entries = await fs.readdir(root, { recursive: true })
    } catch {
      return new Set()
    }
    const present = await Promise.all(entries.map(async (p) => ((await fileSize(join(root, p))) !== undefined ? p : undefined)))
    return new Set(present.filter((p): p is string => p !== undefined).map((p) => p.split('\\').join('/')))
  }

  /** What a cached snapshot lacks to be a complete pipeline (empty when complete). */
  async check(commit: string, variant: string | undefined): Promise<{ missing: string[]; fallbacks: string[] }> {
    const listing = await this.listSnapshot(commit)
    if (!listing.has('model_index.json')) return { missing: ['model_index.json'], fallbacks: [] }
    const root = this.snapshot(commit)
    const plan = planPipeline(listing, await readJson(join(root, 'model_index.json'), 'model_index.json'), variant)
    for (const index of plan.indexes) {
      for (const shard of shardsOf(await readJson(join(root, index), index), index)) {
        if (!listing.has(shard)) plan.missing.push(shard)
      }
    }
    return { missing: plan.missing, fallbacks: plan.fallbacks }
  }
}

// ─── HTTP ───────────────────────────────────────────────────────────────────────────────────────

/** One resolution against the Hub: where, what, with which credentials. */
interface HubContext {
  endpoint: string
  repoId: string
  revision: string
  token: string | undefined
  signal: AbortSignal | undefined
}

/** What a HEAD on `resolve/` says about a file (huggingface_hub's `get_hf_file_metadata`). */
interface FileMetadata {
  /** Blob name: `X-Linked-Etag` (sha256, LFS files) or `ETag` (git sha1), unquoted. */
  etag: string
  /** `X-Linked-Size` or `Content-Length`. */
  size: number | undefined
  /** Where the bytes are: the CDN URL an LFS file redirects to, else the resolve URL. */
  url: string
}

function authHeaders(ctx: HubContext, url: string): Record<string, string> {
  // The token is for the Hub only, never for the CDN that LFS files redirect to.
  const sameOrigin = new URL(url).origin === new URL(ctx.endpoint).origin
  return ctx.token && sameOrigin ? { Authorization: `Bearer ${ctx.token}` } : {}
}

/** `fetch`, with network failures as `SANA_HUB_ERROR` and aborts as `ABORT_ERR`. */
async function hubFetch(ctx: HubContext, url: string, init: RequestInit): Promise<Response> {
  try {
    return await fetch(url, { ...init, signal: ctx.signal })
  } catch (e) {
    if (ctx.signal?.aborted) throw abortError(ctx.signal)
    const cause = (e as { cause?: { message?: string } }).cause?.message ?? (e as Error).message
    throw new SanaError(
      'SANA_HUB_ERROR',
      `Could not reach ${ctx.endpoint} for ${ctx.repoId}: ${cause} (set HF_HUB_OFFLINE=1 or offline: true to use the cache only)`,
      { cause: e },
    )
  }
}

/** The error for a failed Hub response, by status and the Hub's `X-Error-Code`. */
function httpError(ctx: HubContext, res: Response, file?: string): SanaError {
  void res.body?.cancel().catch(() => {})
  const code = res.headers.get('x-error-code')
  const detail = res.headers.get('x-error-message')
  const http = `HTTP ${res.status}${detail ? `: ${detail}` : ''}`
  const repo = `${ctx.repoId} on ${ctx.endpoint}`
  const privateHint = ctx.token ? '' : ' (if it is private or gated, set HF_TOKEN or pass token)'
  if (code === 'RepoNotFound' || (res.status === 404 && !file && code !== 'RevisionNotFound')) {
    return new SanaError('SANA_NOT_FOUND', `Repository ${repo} not found${privateHint} (${http})`)
  }
  if (code === 'RevisionNotFound') {
    return new SanaError('SANA_NOT_FOUND', `Revision ${JSON.stringify(ctx.revision)} not found in ${repo} (${http})`)
  }
  if (code === 'EntryNotFound' || res.status === 404) {
    return new SanaError('SANA_NOT_FOUND', `File ${file} not found in ${repo} (revision ${ctx.revision}) (${http})`)
  }
  if (res.status === 401 || res.status === 403 || code === 'GatedRepo') {
    return new SanaError(
      'SANA_HUB_ERROR',
      `Access to ${repo} was denied (${http}): set HF_TOKEN (or pass token) to a token that can read it, ` +
        `and accept the model's license at ${ctx.endpoint}/${ctx.repoId}`,
    )
  }
  return new SanaError('SANA_HUB_ERROR', `${file ? `Download of ${file} from` : 'Request for'} ${repo} failed (${http})`)
}

/** `GET /api/models/{repo}/revision/{revision}`: the commit and the files of the repo at `revision`. */
async function repoInfo(ctx: HubContext): Promise<{ commit: string; files: Set<string> }> {
  const url = `${ctx.endpoint}/api/models/${ctx.repoId}/revision/${encodeURIComponent(ctx.revision)}`
  const res = await hubFetch(ctx, url, { headers: authHeaders(ctx, url) })
  if (!res.ok) throw httpError(ctx, res)
  let info: { sha?: unknown; siblings?: Array<{ rfilename?: unknown }> }
  try {
    info = (await res.json()) as typeof info
  } catch (e) {
    if (ctx.signal?.aborted) throw abortError(ctx.signal)
    throw new SanaError('SANA_HUB_ERROR', `${url} did not answer JSON: ${(e as Error).message}`, { cause: e })
  }
  if (typeof info.sha !== 'string' || !COMMIT_HASH.test(info.sha) || !Array.isArray(info.siblings)) {
    throw new SanaError('SANA_HUB_ERROR', `${url} answered without a commit "sha" and "siblings"`)
  }
  const files = info.siblings.map((s) => s?.rfilename).filter((f): f is string => typeof f === 'string' && isSafeRelPath(f))
  return { commit: info.sha, files: new Set(files) }
}

function resolveUrl(ctx: HubContext, commit: string, path: string): string {
  return `${ctx.endpoint}/${ctx.repoId}/resolve/${commit}/${path.split('/').map(encodeURIComponent).join('/')}`
}

/** HEAD `resolve/{commit}/{path}`: the Hub's own redirects (renamed repos) are followed, the CDN's is not. */
async function fileMetadata(ctx: HubContext, commit: string, path: string): Promise<FileMetadata> {
  let url = resolveUrl(ctx, commit, path)
  for (let hop = 0; hop < 10; hop++) {
    const res = await hubFetch(ctx, url, { method: 'HEAD', redirect: 'manual', headers: { ...authHeaders(ctx, url), 'Accept-Encoding': 'identity' } })
    const location = res.headers.get('location')
    const isRedirect = res.status >= 300 && res.status < 400 && location
    if (isRedirect && !/^([a-z][a-z\d+.-]*:)?\/\//i.test(location)) {
      url = new URL(location, url).href
      continue
    }
    if (!isRedirect && !res.ok) throw httpError(ctx, res, path)
    const etag = (res.headers.get('x-linked-etag') ?? res.headers.get('etag') ?? '').replace(/^W\//, '').replace(/"/g, '')
    if (!/^[\w-]+$/.test(etag)) {
      throw new SanaError('SANA_HUB_ERROR', `${url} answered without a usable ETag (${JSON.stringify(etag)})`)
    }
    const size = Number.parseInt(res.headers.get('x-linked-size') ?? res.headers.get('content-length') ?? '', 10)
    return { etag, size: Number.isFinite(size) ? size : undefined, url: isRedirect ? new URL(location, url).href : url }
  }
  throw new SanaError('SANA_HUB_ERROR', `Too many redirects for ${path} in ${ctx.repoId}`)
}

// ─── Downloading one blob (resumable) ───────────────────────────────────────────────────────────

/** A running sha256 of the bytes in a `.incomplete` file, to check LFS files against their etag. */
interface Digest {
  hash: Hash
  bytes: number
}

async function digestPrefix(path: string, bytes: number): Promise<Digest> {
  const hash = createHash('sha256')
  if (bytes > 0) {
    await io(`Could not read ${path}`, async () => {
      for await (const chunk of createReadStream(path, { start: 0, end: bytes - 1 })) hash.update(chunk as Buffer)
    })
  }
  return { hash, bytes }
}

/** A network failure while reading a body that ended early; retried from where it stopped. */
class Interrupted extends Error {}

/**
 * One GET of `meta.url` into `part`, appending from `have` bytes with a Range request when the
 * server honours it (206) and starting over when it answers the whole file (200).
 */
async function fetchInto(
  ctx: HubContext,
  meta: FileMetadata,
  file: string,
  part: string,
  have: number,
  digest: Digest,
  report: (bytes: number) => void,
): Promise<Digest> {
  const headers: Record<string, string> = { ...authHeaders(ctx, meta.url), 'Accept-Encoding': 'identity' }
  if (have > 0) headers.Range = `bytes=${have}-`
  let res: Response
  try {
    res = await fetch(meta.url, { headers, signal: ctx.signal })
  } catch (e) {
    throw new Interrupted((e as Error).message, { cause: e })
  }
  const resumed = res.status === 206 && have > 0 && res.headers.get('content-range')?.startsWith(`bytes ${have}-`)
  if (!resumed && res.status !== 200) throw httpError(ctx, res, file)
  let offset = resumed ? have : 0
  if (!resumed) digest = { hash: createHash('sha256'), bytes: 0 }
  else if (digest.bytes !== have) digest = await digestPrefix(part, have)
  const fh = await io(`Could not open ${part}`, () => fs.open(part, resumed ? 'a' : 'w'))
  try {
    for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
      await io(`Could not write ${part}`, () => fh.write(chunk))
      digest.hash.update(chunk)
      digest.bytes = offset += chunk.byteLength
      report(offset)
    }
  } catch (e) {
    if (e instanceof SanaError) throw e
    throw new Interrupted((e as Error).message, { cause: e })
  } finally {
    await fh.close()
  }
  if (meta.size !== undefined && offset < meta.size) throw new Interrupted(`connection closed after ${offset} of ${meta.size} bytes`)
  return digest
}

/**
 * Download a blob to `blobs/<etag>.incomplete`, resuming what is there, retrying interrupted transfers
 * from where they stopped, checking size (and sha256 for LFS files), then renaming it into place.
 */
async function downloadBlob(ctx: HubContext, meta: FileMetadata, file: string, blob: string, report: (bytes: number) => void): Promise<void> {
  const part = `${blob}.incomplete`
  await io(`Could not create ${dirname(blob)}`, () => fs.mkdir(dirname(blob), { recursive: true }))
  let digest: Digest = { hash: createHash('sha256'), bytes: 0 }
  for (let attempt = 1; ; attempt++) {
    let have = (await fileSize(part)) ?? 0
    if (meta.size !== undefined && have > meta.size) have = 0 // not a prefix of this blob: start over
    try {
      if (have === 0 || have !== meta.size) digest = await fetchInto(ctx, meta, file, part, have, digest, report)
      else if (digest.bytes !== have) digest = await digestPrefix(part, have) // complete already: only verify
      break
    } catch (e) {
      if (ctx.signal?.aborted) throw abortError(ctx.signal)
      if (!(e instanceof Interrupted)) throw e
      if (attempt === DOWNLOAD_ATTEMPTS) {
        throw new SanaError('SANA_HUB_ERROR', `Download of ${file} from ${ctx.repoId} kept failing (${attempt} attempts): ${e.message}`, { cause: e })
      }
      await sleep(RETRY_DELAY_MS * 2 ** (attempt - 1), undefined, { signal: ctx.signal }).catch(() => {})
      throwIfAborted(ctx.signal)
    }
  }
  const size = (await fileSize(part)) ?? 0
  const sha = SHA256.test(meta.etag) ? digest.hash.digest('hex') : undefined
  if ((meta.size !== undefined && size !== meta.size) || (sha !== undefined && sha !== meta.etag)) {
    await fs.rm(part, { force: true })
    const got = sha !== undefined && sha !== meta.etag ? `sha256 ${sha}, expected ${meta.etag}` : `${size} bytes, expected ${meta.size}`
    throw new SanaError('SANA_HUB_ERROR', `Download of ${file} from ${ctx.repoId} is corrupt (${got}); try again`)
  }
  await io(`Could not move ${part} into place`, () => fs.rename(part, blob))
}

/** Downloads in progress in this process, by blob path: two calls never write one `.incomplete`. */
const blobsInFlight = new Map<string, Promise<void>>()

async function oneAtATime(key: string, fn: () => Promise<void>): Promise<void> {
  for (let running = blobsInFlight.get(key); running; running = blobsInFlight.get(key)) await running
  const task = fn()
  const settled = task.catch(() => {})
  blobsInFlight.set(key, settled)
  try {
    await task
  } finally {
    if (blobsInFlight.get(key) === settled) blobsInFlight.delete(key)
  }
}

// ─── Resolving a pipeline ───────────────────────────────────────────────────────────────────────

/** Progress reporter for one file: the first and the complete value once, others at most every 100 ms. */
function fileReporter(options: ResolveModelOptions, file: string, fileIndex: number, fileCount: number) {
  let last = 0
  let complete = false
  return (downloadedBytes: number, totalBytes: number) => {
    const now = Date.now()
    const done = downloadedBytes === totalBytes
    if (!options.onProgress || complete || (downloadedBytes !== 0 && !done && now - last < PROGRESS_INTERVAL_MS)) return
    last = now
    complete = done
    options.onProgress({ file, downloadedBytes, totalBytes, fileIndex, fileCount })
  }
}

/** Make `snapshots/<commit>/<path>` present, downloading its blob unless the cache has it. */
async function ensureFile(
  ctx: HubContext,
  cache: RepoCache,
  commit: string,
  path: string,
  report: (downloaded: number, total: number) => void,
): Promise<void> {
  throwIfAborted(ctx.signal)
  const cached = await cache.fileSize(commit, path)
  if (cached !== undefined) return report(cached, cached)
  const meta = await fileMetadata(ctx, commit, path)
  const blob = cache.blob(meta.etag)
  await oneAtATime(blob, async () => {
    if ((await fileSize(blob)) !== undefined) return // shared with another file or revision
    const total = meta.size ?? 0
    report((await fileSize(`${blob}.incomplete`)) ?? 0, total)
    await downloadBlob(ctx, meta, path, blob, (n) => report(n, total))
  })
  await cache.link(commit, path, meta.etag)
  const size = (await cache.fileSize(commit, path)) ?? 0
  report(size, size)
}

/** Download what the pipeline at `ctx.revision` needs and return its snapshot folder. */
async function download(ctx: HubContext, cache: RepoCache, options: ResolveModelOptions): Promise<string> {
  const { commit, files: listing } = await repoInfo(ctx)
  const where = `${ctx.repoId} (revision ${ctx.revision}, commit ${commit})`
  if (!listing.has('model_index.json')) {
    throw new SanaError('SANA_NOT_FOUND', `${where} has no model_index.json: it is not a diffusers pipeline`)
  }
  const silent = () => {}
  // 1. model_index.json and the sharded-weights indexes, to know every file before downloading weights.
  await ensureFile(ctx, cache, commit, 'model_index.json', silent)
  const root = cache.snapshot(commit)
  const plan = planPipeline(listing, await readJson(join(root, 'model_index.json'), 'model_index.json'), options.variant)
  if (plan.missing.length > 0) {
    throw new SanaError('SANA_NOT_FOUND', `${where} lacks what the pipeline needs: ${plan.missing.join(', ')}`)
  }
  const files: string[] = []
  for (const file of plan.files) {
    files.push(file)
    if (!plan.indexes.includes(file)) continue
    await ensureFile(ctx, cache, commit, file, silent)
    const shards = shardsOf(await readJson(join(root, file), file), file)
    const absent = shards.filter((s) => !listing.has(s))
    if (absent.length > 0) throw new SanaError('SANA_NOT_FOUND', `${where} lacks shards listed in ${file}: ${absent.join(', ')}`)
    files.push(...shards)
  }
  // 2. Everything, in order, with progress.
  for (const [i, file] of files.entries()) {
    await ensureFile(ctx, cache, commit, file, fileReporter(options, file, i, files.length))
  }
  await cache.writeRef(ctx.revision, commit)
  return root
}

function checkOptions(options: ResolveModelOptions): void {
  if (!options || typeof options !== 'object') throw invalidArgument('options', 'an object', options)
  const strings = ['revision', 'variant', 'cacheDir', 'endpoint', 'token'] as const
  for (const name of strings) {
    const v = options[name]
    if (v !== undefined && (typeof v !== 'string' || v.length === 0)) throw invalidArgument(name, 'a non-empty string', v)
  }
  for (const name of ['offline', 'refresh'] as const) {
    if (options[name] !== undefined && typeof options[name] !== 'boolean') throw invalidArgument(name, 'a boolean', options[name])
  }
  if (options.revision !== undefined && !isSafeRelPath(options.revision)) {
    throw invalidArgument('revision', 'a branch, tag or commit hash', options.revision)
  }
  if (options.variant !== undefined && !/^[\w-]+$/.test(options.variant)) {
    throw invalidArgument('variant', "a variant name such as 'fp16'", options.variant)
  }
  if (options.endpoint !== undefined && !/^https?:\/\/[^/]/.test(options.endpoint)) {
    throw invalidArgument('endpoint', 'an http(s) URL', options.endpoint)
  }
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
    throw invalidArgument('signal', 'an AbortSignal', options.signal)
  }
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') {
    throw invalidArgument('onProgress', 'a function', options.onProgress)
  }
}

/**
 * Get a local folder holding a diffusers pipeline: an existing folder as it is, or a Hugging Face Hub
 * repo id (`org/name`) downloaded into the Hugging Face cache (shared with Python) and served from it
 * afterwards without any request. Only what the pipeline needs is downloaded: model_index.json, the
 * components' config and tokenizer files and their safetensors weights (the requested `variant`
 * where a component has it, else plain; sharded weights with all their shards). Interrupted and
 * aborted downloads resume where they stopped.
 *
 * Rejects with `SANA_NOT_FOUND` for a missing folder, repo, revision or file, or for a cache miss
 * when offline; `SANA_HUB_ERROR` for network and HTTP failures (401/403: set `HF_TOKEN` and accept
 * the license); `ABORT_ERR` when `signal` aborts.
 *
 * @param repoIdOrPath A folder path, or a repo id such as `'Efficient-Large-Model/Sana_600M_1024px_diffusers'`.
 * @returns The absolute path of the folder (for a repo: `…/models--org--name/snapshots/<commit>`).
 * @example
 * const dir = await resolveModel('Efficient-Large-Model/Sana_1600M_1024px_BF16_diffusers', {
 *   variant: 'bf16',
 *   onProgress: ({ file, downloadedBytes, totalBytes }) => console.log(file, downloadedBytes, '/', totalBytes),
 * })
 * const transformer = await SanaTransformer2DModel.load(`${dir}/transformer`, { variant: 'bf16' })
 */
export async function resolveModel(repoIdOrPath: string, options: ResolveModelOptions = {}): Promise<string> {
  if (typeof repoIdOrPath !== 'string' || repoIdOrPath.length === 0) {
    throw invalidArgument('repoIdOrPath', 'a folder path or a Hub repo id (org/name)', repoIdOrPath)
  }
  checkOptions(options)
  throwIfAborted(options.signal)
  // 1. A local folder.
  const local = resolve(repoIdOrPath)
  if (existsSync(local) && statSync(local).isDirectory()) return local
  if (!REPO_ID.test(repoIdOrPath) || repoIdOrPath.includes('--') || repoIdOrPath.includes('..')) {
    throw new SanaError('SANA_NOT_FOUND', `${repoIdOrPath} is neither a folder (${local} does not exist) nor a Hub repo id (org/name)`)
  }
  // 2. The cache, when it holds a complete snapshot for this revision (and variant).
  const revision = options.revision ?? 'main'
  const cache = new RepoCache(hubCacheDir(options.cacheDir), repoIdOrPath)
  const offline = options.offline ?? truthyEnv('HF_HUB_OFFLINE')
  const cachedCommit = await cache.commitOf(revision)
  if (cachedCommit && (offline || !options.refresh)) {
    const { missing, fallbacks } = await cache.check(cachedCommit, options.variant)
    // Online, plain weights for a component stand for the variant only if the repo lacks it: ask.
    if (missing.length === 0 && (offline || fallbacks.length === 0)) return cache.snapshot(cachedCommit)
    if (offline) {
      throw new SanaError(
        'SANA_NOT_FOUND',
        `${repoIdOrPath} (revision ${revision}) is only partly cached in ${cache.dir} and offline mode is on ` +
          `(HF_HUB_OFFLINE / offline): missing ${missing.join(', ')}`,
      )
    }
  }
  if (offline) {
    throw new SanaError(
      'SANA_NOT_FOUND',
      `${repoIdOrPath} (revision ${revision}) is not in the cache ${cache.dir} and offline mode is on (HF_HUB_OFFLINE / offline)`,
    )
  }
  // 3. The Hub.
  const endpoint = (options.endpoint ?? (process.env.HF_ENDPOINT || DEFAULT_ENDPOINT)).replace(/\/+$/, '')
  const token = options.token ?? (process.env.HF_TOKEN || undefined)
  return download({ endpoint, repoId: repoIdOrPath, revision, token, signal: options.signal }, cache, options)
}

/**
 * List the models in the Hugging Face cache (those downloaded by sana-node or by Python), with each
 * cached snapshot, the branches/tags pointing at it, its folder and its size. Snapshots may be
 * incomplete (an interrupted download); {@link resolveModel} with `offline: true` tells.
 *
 * @returns Repos sorted by id; an empty array when the cache folder does not exist.
 * @example
 * for (const { repoId, revisions } of await listCachedModels()) {
 *   for (const r of revisions) console.log(repoId, r.refs.join(',') || r.commit.slice(0, 7), r.sizeBytes)
 * }
 */
export async function listCachedModels(options: CacheOptions = {}): Promise<CachedModel[]> {
  if (!options || typeof options !== 'object') throw invalidArgument('options', 'an object', options)
  if (options.cacheDir !== undefined && (typeof options.cacheDir !== 'string' || options.cacheDir.length === 0)) {
    throw invalidArgument('cacheDir', 'a non-empty string', options.cacheDir)
  }
  const root = hubCacheDir(options.cacheDir)
  const dirs = await fs.readdir(root).catch(() => [] as string[])
  const models: CachedModel[] = []
  for (const name of dirs.filter((d) => d.startsWith('models--')).sort()) {
    const cache = new RepoCache(root, name.slice('models--'.length).split('--').join('/'))
    const refs = new Map<string, string[]>()
    const refsDir = join(cache.dir, 'refs')
    for (const ref of (await fs.readdir(refsDir, { recursive: true }).catch(() => [] as string[])).sort()) {
      const commit = await cache.commitOf(ref.split('\\').join('/'))
      if (commit && !COMMIT_HASH.test(ref)) refs.set(commit, [...(refs.get(commit) ?? []), ref])
    }
    const commits = (await fs.readdir(join(cache.dir, 'snapshots')).catch(() => [] as string[])).filter((c) => COMMIT_HASH.test(c))
    const revisions: CachedRevision[] = []
    for (const commit of commits) {
      const path = cache.snapshot(commit)
      const blobs = new Map<string, number>() // real path → size: a blob linked twice counts once
      for (const file of await cache.listSnapshot(commit)) {
        const real = await fs.realpath(join(path, file))
        blobs.set(real, (await fileSize(real)) ?? 0)
      }
      const sizeBytes = [...blobs.values()].reduce((a, b) => a + b, 0)
      revisions.push({ commit, refs: refs.get(commit) ?? [], path, sizeBytes })
    }
    revisions.sort((a, b) => b.refs.length - a.refs.length || a.commit.localeCompare(b.commit))
    models.push({ repoId: cache.repoId, revisions })
  }
  return models
}
