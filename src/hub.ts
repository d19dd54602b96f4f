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
import { statSync } from 'node:fs'
import * as fs from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'
import { invalidArgument, SanaError, throwIfAborted } from './errors'
import { COMMIT_HASH, fileSize, hubCacheDir, isSafeRelPath, readJson, RepoCache } from './hub/cache'
import { downloadBlob, fileMetadata, hubTimeouts, oneAtATime, repoInfo, type HubContext } from './hub/download'
import { planPipeline, shardsOf } from './hub/plan'

// ─── Public types ───────────────────────────────────────────────────────────────────────────────

/**
 * Progress of one file of a {@link resolveModel} download.
 * @example
 * onProgress: ({ file, downloadedBytes, totalBytes, fileIndex, fileCount }) =>
 *   console.log(`[${fileIndex + 1}/${fileCount}] ${file} ${Math.round((100 * downloadedBytes) / (totalBytes || 1))}%`)
 */
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

/**
 * Where the Hugging Face cache is.
 * @example await listCachedModels({ cacheDir: '/data/hf-cache/hub' })
 */
export interface CacheOptions {
  /**
   * The hub cache folder (the one holding `models--org--name/`). Defaults to `HF_HUB_CACHE`, else
   * `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub` — the
   * folder Python's `huggingface_hub` uses, so downloads are shared with it.
   */
  cacheDir?: string
}

/**
 * Options of {@link resolveModel}.
 * @example
 * // Pinned to a commit, fp16 weights, cancellable after 10 minutes.
 * await resolveModel('Efficient-Large-Model/Sana_600M_1024px_diffusers', {
 *   revision: '0123456789abcdef0123456789abcdef01234567',
 *   variant: 'fp16',
 *   signal: AbortSignal.timeout(600_000),
 * })
 */
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
  /**
   * How long to wait for the Hub, in ms: for an API/HEAD request's whole answer, and for a download's next bytes
   * (a stalled download is retried from where it stopped, 4 attempts in all). Defaults to `HF_HUB_ETAG_TIMEOUT`
   * and `HF_HUB_DOWNLOAD_TIMEOUT` (seconds, as in huggingface_hub), else 10 s each.
   */
  timeoutMs?: number
  /** Cancels the download; the call rejects with `ABORT_ERR` and the partial file is resumed next time. Defaults to none. */
  signal?: AbortSignal
  /** Called as files arrive (and once for each file found in the cache). Defaults to none. */
  onProgress?: (progress: DownloadProgress) => void
}

/**
 * One cached snapshot of a repo, as listed by {@link listCachedModels}.
 * @example { commit: '1c2d…', refs: ['main'], path: '/home/me/.cache/huggingface/hub/models--org--name/snapshots/1c2d…', sizeBytes: 6442450944 }
 */
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

/**
 * One repo in the cache, as listed by {@link listCachedModels}.
 * @example { repoId: 'Efficient-Large-Model/Sana_600M_1024px_diffusers', revisions: [{ commit: '1c2d…', refs: ['main'], … }] }
 */
export interface CachedModel {
  /** `org/name`. */
  repoId: string
  /** Its snapshots, those with refs first. */
  revisions: CachedRevision[]
}

// ─── Constants and small helpers ────────────────────────────────────────────────────────────────

const DEFAULT_ENDPOINT = 'https://huggingface.co'
/** `org/name`, as huggingface_hub's `validate_repo_id` accepts it (with an org). */
const REPO_ID = /^[\w.-]{1,96}\/[\w.-]{1,96}$/
const PROGRESS_INTERVAL_MS = 100

/** Where to go from a cache miss while offline. */
function offlineNextSteps(repoId: string): string {
  return `download it first while online (sana pull ${repoId}, or without offline), or pass a local diffusers folder (--model <folder>)`
}

function truthyEnv(name: string): boolean {
  return ['1', 'ON', 'YES', 'TRUE'].includes((process.env[name] ?? '').toUpperCase())
}

// ─── Resolving a pipeline ───────────────────────────────────────────────────────────────────────

/** huggingface_hub's `validate_repo_id`, with an org: no `--` or `..`, no part starting or ending with `.` or `-`. */
function isRepoId(id: string): boolean {
  return REPO_ID.test(id) && !id.includes('--') && !id.includes('..') && id.split('/').every((p) => !/^[.-]|[.-]$/.test(p))
}

/**
 * `p` as a local pipeline folder: the folder itself, or the folder of a `model_index.json` path (a common slip).
 * Undefined when nothing exists there; `SANA_IO_ERROR` / `SANA_INVALID_ARGUMENT` when what exists cannot be one.
 */
function localPipeline(p: string): string | undefined {
  const abs = resolve(p)
  const st = statSync(abs, { throwIfNoEntry: false })
  if (!st) return undefined
  if (st.isFile() && basename(abs) === 'model_index.json') return dirname(abs)
  if (!st.isDirectory()) {
    throw new SanaError('SANA_INVALID_ARGUMENT', `${abs} is a file: pass the pipeline folder, the one holding model_index.json`)
  }
  const index = statSync(join(abs, 'model_index.json'), { throwIfNoEntry: false })
  if (index && !index.isFile()) throw new SanaError('SANA_IO_ERROR', `${join(abs, 'model_index.json')} is not a file (a folder?)`)
  return abs
}

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
  await oneAtATime(blob, ctx.signal, async () => {
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
  if (options.timeoutMs !== undefined && !(typeof options.timeoutMs === 'number' && options.timeoutMs > 0 && Number.isFinite(options.timeoutMs))) {
    throw invalidArgument('timeoutMs', 'a positive number of milliseconds', options.timeoutMs)
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
 * A path to a folder's `model_index.json` stands for the folder. A path-looking argument (`./x`, `../x`, `/x`)
 * that does not exist is `SANA_NOT_FOUND` naming the path, never a Hub request.
 *
 * Rejects with `SANA_NOT_FOUND` for a missing folder, repo, revision or file, or for a cache miss
 * when offline; `SANA_HUB_ERROR` for network and HTTP failures and timeouts (401/403: set `HF_TOKEN` and
 * accept the license); `SANA_IO_ERROR` for cache write failures or too little disk space; `ABORT_ERR` when
 * `signal` aborts.
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
  // 1. A local folder, or its model_index.json.
  const local = localPipeline(repoIdOrPath)
  if (local) return local
  if (!isRepoId(repoIdOrPath)) {
    const abs = resolve(repoIdOrPath)
    // "./x", "../x", "/x", "~/x" are paths: sending them to the Hub as repo ids would only confuse.
    const path = /^(\.{1,2}|~)?\//.test(repoIdOrPath) || repoIdOrPath.startsWith('~') || repoIdOrPath.includes('\\')
    throw new SanaError(
      'SANA_NOT_FOUND',
      path ? `Folder not found: ${abs}` : `${repoIdOrPath} is neither a folder (${abs} does not exist) nor a Hub repo id (org/name)`,
    )
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
          `(HF_HUB_OFFLINE / offline): missing ${missing.join(', ')}; ${offlineNextSteps(repoIdOrPath)}`,
      )
    }
  }
  if (offline) {
    throw new SanaError(
      'SANA_NOT_FOUND',
      `${repoIdOrPath} (revision ${revision}) is not in the cache ${cache.dir} and offline mode is on ` +
        `(HF_HUB_OFFLINE / offline); ${offlineNextSteps(repoIdOrPath)}`,
    )
  }
  // 3. The Hub.
  return download(hubContext(repoIdOrPath, revision, options), cache, options)
}

/** Endpoint, token and signal for requests about `repoId` (options first, then HF_ENDPOINT / HF_TOKEN). */
function hubContext(repoId: string, revision: string, options: ResolveModelOptions): HubContext {
  const endpoint = (options.endpoint ?? (process.env.HF_ENDPOINT || DEFAULT_ENDPOINT)).replace(/\/+$/, '')
  if (!URL.canParse(endpoint) || !/^https?:$/.test(new URL(endpoint).protocol)) {
    throw invalidArgument(options.endpoint ? 'endpoint' : 'HF_ENDPOINT', 'an http(s) URL', endpoint)
  }
  const token = options.token ?? (process.env.HF_TOKEN || undefined)
  return { endpoint, repoId, revision, token, signal: options.signal, timeouts: hubTimeouts(options.timeoutMs) }
}

/**
 * Get one file of a Hub repo (a LoRA's `pytorch_lora_weights.safetensors`, say) through the Hugging Face
 * cache: served from a cached snapshot of `revision` without any request when it is there (unless
 * `refresh`), else downloaded into it, resumably, with progress. `variant` does not apply.
 *
 * Rejects with `SANA_NOT_FOUND` for a repo, revision or file that does not exist, or a cache miss when
 * offline; `SANA_HUB_ERROR` for network and HTTP failures; `ABORT_ERR` when `signal` aborts.
 *
 * @param repoId A repo id such as `'org/sana-pixel-art-lora'`.
 * @param file The file's path in the repo.
 * @returns The absolute path of the file in the cache's snapshot folder.
 * @example const path = await resolveRepoFile('org/sana-pixel-art-lora', 'pytorch_lora_weights.safetensors')
 */
export async function resolveRepoFile(repoId: string, file: string, options: ResolveModelOptions = {}): Promise<string> {
  if (typeof repoId !== 'string' || !REPO_ID.test(repoId) || repoId.includes('--') || repoId.includes('..')) {
    throw invalidArgument('repoId', 'a Hub repo id (org/name)', repoId)
  }
  if (typeof file !== 'string' || !isSafeRelPath(file)) throw invalidArgument('file', 'a relative file path inside the repo', file)
  checkOptions(options)
  throwIfAborted(options.signal)
  const revision = options.revision ?? 'main'
  const cache = new RepoCache(hubCacheDir(options.cacheDir), repoId)
  const offline = options.offline ?? truthyEnv('HF_HUB_OFFLINE')
  const cachedCommit = await cache.commitOf(revision)
  if (cachedCommit && (offline || !options.refresh) && (await cache.fileSize(cachedCommit, file)) !== undefined) {
    return join(cache.snapshot(cachedCommit), file)
  }
  if (offline) {
    throw new SanaError('SANA_NOT_FOUND', `${file} of ${repoId} (revision ${revision}) is not in the cache ${cache.dir} and offline mode is on (HF_HUB_OFFLINE / offline)`)
  }
  const ctx = hubContext(repoId, revision, options)
  const { commit, files } = await repoInfo(ctx)
  if (!files.has(file)) {
    throw new SanaError('SANA_NOT_FOUND', `${repoId} (revision ${revision}, commit ${commit}) has no file ${file}`)
  }
  await ensureFile(ctx, cache, commit, file, fileReporter(options, file, 0, 1))
  await cache.writeRef(revision, commit)
  return join(cache.snapshot(commit), file)
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
