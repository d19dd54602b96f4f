/**
 * Talking to the Hub: the repo listing, file metadata (HEAD on `resolve/`), and resumable blob
 * downloads (`blobs/<etag>.incomplete`, `Range: bytes=N-`, verified before being renamed into place).
 */
import { createHash, type Hash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import * as fs from 'node:fs/promises'
import { dirname } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { invalidArgument, io, SanaError, throwIfAborted } from '../errors'
import { COMMIT_HASH, fileSize, isSafeRelPath } from './cache'

/** The Hub's own hosts: redirects to them are followed and the token is sent to them (never to a CDN). */
const HUB_ORIGINS = new Set(['https://huggingface.co', 'https://hf.co'])
const SHA256 = /^[0-9a-f]{64}$/
const GIT_SHA1 = /^[0-9a-f]{40}$/
const DOWNLOAD_ATTEMPTS = 4
const RETRY_DELAY_MS = 250

/** One resolution against the Hub: where, what, with which credentials, how long to wait. */
export interface HubContext {
  endpoint: string
  repoId: string
  revision: string
  token: string | undefined
  signal: AbortSignal | undefined
  timeouts: HubTimeouts
}

/** How long to wait, in ms, as huggingface_hub's `HF_HUB_ETAG_TIMEOUT` / `HF_HUB_DOWNLOAD_TIMEOUT` (seconds there). */
export interface HubTimeouts {
  /** For an API or HEAD request's whole answer. */
  metadataMs: number
  /** For a download's response, then for each next chunk of its body (a stall, not the whole transfer). */
  downloadMs: number
}

/** huggingface_hub's defaults: 10 s for metadata, 10 s without bytes for downloads. */
const DEFAULT_TIMEOUT_S = 10

/**
 * The timeouts: `timeoutMs` for both when given, else `HF_HUB_ETAG_TIMEOUT` and `HF_HUB_DOWNLOAD_TIMEOUT` (seconds),
 * else 10 s each.
 */
export function hubTimeouts(timeoutMs: number | undefined): HubTimeouts {
  const fromEnv = (name: string) => {
    const raw = process.env[name]
    if (raw === undefined || raw === '') return DEFAULT_TIMEOUT_S * 1000
    const s = Number(raw)
    if (!Number.isFinite(s) || s <= 0) throw invalidArgument(name, 'a positive number of seconds', raw)
    return s * 1000
  }
  if (timeoutMs !== undefined) return { metadataMs: timeoutMs, downloadMs: timeoutMs }
  return { metadataMs: fromEnv('HF_HUB_ETAG_TIMEOUT'), downloadMs: fromEnv('HF_HUB_DOWNLOAD_TIMEOUT') }
}

function seconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(3))} s`
}

/** What to do without a network, for every error that says the Hub could not be reached. */
function offlineHint(ctx: HubContext): string {
  return (
    `to run without the Hub, pass a local diffusers folder (--model <folder>), or download it once where the Hub is ` +
    `reachable (sana pull ${ctx.repoId}) and set HF_HUB_OFFLINE=1 (or offline: true) to use the cache only`
  )
}

/** What a HEAD on `resolve/` says about a file (huggingface_hub's `get_hf_file_metadata`). */
export interface FileMetadata {
  /** Blob name: `X-Linked-Etag` (sha256, LFS files) or `ETag` (git sha1), unquoted. */
  etag: string
  /** `X-Linked-Size` or `Content-Length`. */
  size: number | undefined
  /** Where the bytes are: the CDN URL an LFS file redirects to, else the resolve URL. */
  url: string
}

/** Whether `url` is served by the Hub itself (the endpoint's origin or the Hub's hosts), not by a CDN. */
function isHubUrl(ctx: HubContext, url: string): boolean {
  const origin = new URL(url).origin
  return origin === new URL(ctx.endpoint).origin || HUB_ORIGINS.has(origin)
}

function authHeaders(ctx: HubContext, url: string): Record<string, string> {
  // The token is for the Hub only, never for the CDN that LFS files redirect to.
  return ctx.token && isHubUrl(ctx, url) ? { Authorization: `Bearer ${ctx.token}` } : {}
}

/**
 * A metadata request under the metadata timeout: `read(res)` runs on the response within the same deadline.
 * Network failures are `SANA_HUB_ERROR` (a timeout says what timed out and which setting raises it); aborts `ABORT_ERR`.
 */
async function hubRequest<T>(ctx: HubContext, url: string, init: RequestInit, read: (res: Response) => Promise<T>): Promise<T> {
  const deadline = AbortSignal.timeout(ctx.timeouts.metadataMs)
  const signal = ctx.signal ? AbortSignal.any([ctx.signal, deadline]) : deadline
  try {
    return await read(await fetch(url, { ...init, signal }))
  } catch (e) {
    throwIfAborted(ctx.signal)
    if (e instanceof SanaError) throw e
    if (deadline.aborted) {
      throw new SanaError(
        'SANA_HUB_ERROR',
        `${init.method ?? 'GET'} ${url} timed out: no complete answer within ${seconds(ctx.timeouts.metadataMs)} ` +
          `(HF_HUB_ETAG_TIMEOUT, in seconds, or timeoutMs raises the limit); ${offlineHint(ctx)}`,
        { cause: e },
      )
    }
    const cause = (e as { cause?: { message?: string } }).cause?.message ?? (e as Error).message
    throw new SanaError('SANA_HUB_ERROR', `Could not reach ${ctx.endpoint} for ${ctx.repoId}: ${cause}; ${offlineHint(ctx)}`, { cause: e })
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
export async function repoInfo(ctx: HubContext): Promise<{ commit: string; files: Set<string> }> {
  const url = `${ctx.endpoint}/api/models/${ctx.repoId}/revision/${encodeURIComponent(ctx.revision)}`
  type Info = { sha?: unknown; siblings?: Array<{ rfilename?: unknown }> }
  const info = await hubRequest(ctx, url, { headers: authHeaders(ctx, url) }, async (res): Promise<Info> => {
    if (!res.ok) throw httpError(ctx, res)
    const text = await res.text()
    try {
      return JSON.parse(text) as Info
    } catch (e) {
      throw new SanaError('SANA_HUB_ERROR', `${url} did not answer JSON: ${(e as Error).message}`, { cause: e })
    }
  })
  if (typeof info.sha !== 'string' || !COMMIT_HASH.test(info.sha) || !Array.isArray(info.siblings)) {
    throw new SanaError('SANA_HUB_ERROR', `${url} answered without a commit "sha" and "siblings"`)
  }
  const files = info.siblings.map((s) => s?.rfilename).filter((f): f is string => typeof f === 'string' && isSafeRelPath(f))
  return { commit: info.sha, files: new Set(files) }
}

function resolveUrl(ctx: HubContext, commit: string, path: string): string {
  return `${ctx.endpoint}/${ctx.repoId}/resolve/${commit}/${path.split('/').map(encodeURIComponent).join('/')}`
}

/**
 * HEAD `resolve/{commit}/{path}`, as huggingface_hub's `get_hf_file_metadata`: redirects within the Hub
 * (renamed repos) are followed; a redirect elsewhere (the CDN serving an LFS file) is not, since that
 * response itself describes the file (`X-Linked-Etag`, `X-Linked-Size`) and the token must not leave the Hub.
 */
export async function fileMetadata(ctx: HubContext, commit: string, path: string): Promise<FileMetadata> {
  let url = resolveUrl(ctx, commit, path)
  for (let hop = 0; hop < 10; hop++) {
    const init: RequestInit = { method: 'HEAD', redirect: 'manual', headers: { ...authHeaders(ctx, url), 'Accept-Encoding': 'identity' } }
    const res = await hubRequest(ctx, url, init, async (r) => r)
    const location = res.headers.get('location')
    const target = res.status >= 300 && res.status < 400 && location ? new URL(location, url).href : undefined
    if (target && isHubUrl(ctx, target)) {
      url = target
      continue
    }
    if (!target && !res.ok) throw httpError(ctx, res, path)
    const etag = (res.headers.get('x-linked-etag') ?? res.headers.get('etag') ?? '').replace(/^W\//, '').replace(/"/g, '')
    if (!/^[\w-]+$/.test(etag)) {
      throw new SanaError('SANA_HUB_ERROR', `${url} answered without a usable ETag (${JSON.stringify(etag)})`)
    }
    const size = Number.parseInt(res.headers.get('x-linked-size') ?? res.headers.get('content-length') ?? '', 10)
    return { etag, size: Number.isFinite(size) ? size : undefined, url: target ?? url }
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

/** An AbortSignal that fires when `ms` pass without `kick()` (or when `parent` aborts): a download's stall detector. */
function watchdog(ms: number, parent: AbortSignal | undefined) {
  const dog = new AbortController()
  let timer: NodeJS.Timeout | undefined
  const kick = () => {
    clearTimeout(timer)
    timer = setTimeout(() => dog.abort(), ms)
  }
  kick()
  return {
    signal: parent ? AbortSignal.any([parent, dog.signal]) : dog.signal,
    kick,
    stop: () => clearTimeout(timer),
    get stalled() {
      return dog.signal.aborted
    },
  }
}

/** Refuse to start a download that cannot fit: `need` more bytes than the disk holding `dir` has free. */
async function checkFreeSpace(dir: string, file: string, need: number): Promise<void> {
  const st = await fs.statfs(dir).catch(() => undefined) // unsupported filesystem: let the write tell
  const free = st ? st.bavail * st.bsize : Infinity
  if (need > free) {
    const gib = (n: number) => `${(n / 2 ** 30).toFixed(2)} GiB`
    throw new SanaError('SANA_IO_ERROR', `Not enough disk space for ${file}: it needs ${gib(need)} more but only ${gib(free)} are free in ${dir} (set HF_HUB_CACHE to a larger disk)`)
  }
}

/** Git's blob id, the ETag of a file stored without LFS: sha1 of `blob <size>\0` and the bytes. */
async function gitBlobSha1(path: string, size: number): Promise<string> {
  const hash = createHash('sha1').update(`blob ${size}\0`)
  await io(`Could not read ${path}`, async () => {
    for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer)
  })
  return hash.digest('hex')
}

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
  const dog = watchdog(ctx.timeouts.downloadMs, ctx.signal)
  const interrupted = (e: unknown) =>
    dog.stalled
      ? new Interrupted(`stalled: no data for ${seconds(ctx.timeouts.downloadMs)} (HF_HUB_DOWNLOAD_TIMEOUT, in seconds, or timeoutMs raises the limit)`, { cause: e })
      : new Interrupted((e as Error).message, { cause: e })
  let res: Response
  try {
    res = await fetch(meta.url, { headers, signal: dog.signal })
  } catch (e) {
    dog.stop()
    throw interrupted(e)
  }
  const resumed = res.status === 206 && have > 0 && res.headers.get('content-range')?.startsWith(`bytes ${have}-`)
  if (!resumed && res.status !== 200) throw httpError(ctx, res, file)
  let offset = resumed ? have : 0
  if (!resumed) digest = { hash: createHash('sha256'), bytes: 0 }
  else if (digest.bytes !== have) digest = await digestPrefix(part, have)
  try {
    const fh = await io(`Could not open ${part}`, () => fs.open(part, resumed ? 'a' : 'w'))
    try {
      for await (const chunk of (res.body ?? []) as AsyncIterable<Uint8Array>) {
        dog.kick()
        await io(`Could not write ${part}`, () => fh.write(chunk))
        digest.hash.update(chunk)
        digest.bytes = offset += chunk.byteLength
        report(offset)
      }
    } finally {
      await fh.close()
    }
  } catch (e) {
    if (e instanceof SanaError) throw e
    throw interrupted(e)
  } finally {
    dog.stop()
  }
  if (meta.size !== undefined && offset < meta.size) throw new Interrupted(`connection closed after ${offset} of ${meta.size} bytes`)
  return digest
}

/**
 * Download a blob to `blobs/<etag>.incomplete` (refused up front when the announced size exceeds the free disk
 * space), resuming what is there, retrying interrupted or stalled transfers from where they stopped, checking size
 * and content (sha256 for LFS files, git sha1 for the others), then renaming it into place.
 */
export async function downloadBlob(ctx: HubContext, meta: FileMetadata, file: string, blob: string, report: (bytes: number) => void): Promise<void> {
  const part = `${blob}.incomplete`
  await io(`Could not create ${dirname(blob)}`, () => fs.mkdir(dirname(blob), { recursive: true }))
  let digest: Digest = { hash: createHash('sha256'), bytes: 0 }
  if (meta.size !== undefined) await checkFreeSpace(dirname(blob), file, meta.size - ((await fileSize(part)) ?? 0))
  for (let attempt = 1; ; attempt++) {
    let have = (await fileSize(part)) ?? 0
    if (meta.size !== undefined && have > meta.size) have = 0 // not a prefix of this blob: start over
    try {
      if (have === 0 || have !== meta.size) digest = await fetchInto(ctx, meta, file, part, have, digest, report)
      else if (digest.bytes !== have) digest = await digestPrefix(part, have) // complete already: only verify
      break
    } catch (e) {
      throwIfAborted(ctx.signal)
      if (!(e instanceof Interrupted)) throw e
      if (attempt === DOWNLOAD_ATTEMPTS) {
        throw new SanaError('SANA_HUB_ERROR', `Download of ${file} from ${ctx.repoId} kept failing (${attempt} attempts): ${e.message}`, { cause: e })
      }
      await sleep(RETRY_DELAY_MS * 2 ** (attempt - 1), undefined, { signal: ctx.signal }).catch(() => {})
      throwIfAborted(ctx.signal)
    }
  }
  // 3. Verify: the size, then the content against the ETag (sha256 for LFS files, git's blob sha1 for the others).
  const size = (await fileSize(part)) ?? 0
  const kind = SHA256.test(meta.etag) ? 'sha256' : GIT_SHA1.test(meta.etag) ? 'git sha1' : undefined
  const hash = kind === 'sha256' ? digest.hash.digest('hex') : kind === 'git sha1' ? await gitBlobSha1(part, size) : undefined
  const wrongSize = meta.size !== undefined && size !== meta.size
  if (wrongSize || (hash !== undefined && hash !== meta.etag)) {
    await fs.rm(part, { force: true })
    const got = wrongSize ? `${size} bytes, expected ${meta.size}` : `${kind} ${hash}, expected ${meta.etag}`
    throw new SanaError('SANA_HUB_ERROR', `Download of ${file} from ${ctx.repoId} is corrupt (${got}); try again`)
  }
  await io(`Could not move ${part} into place`, () => fs.rename(part, blob))
}

/** Downloads in progress in this process, by blob path: two calls never write one `.incomplete`. */
const blobsInFlight = new Map<string, Promise<void>>()

/** Run `fn` once no other call of this process is downloading `key` (waiting is abortable). */
export async function oneAtATime(key: string, signal: AbortSignal | undefined, fn: () => Promise<void>): Promise<void> {
  for (let running = blobsInFlight.get(key); running; running = blobsInFlight.get(key)) await abortable(running, signal)
  const task = fn()
  const settled = task.catch(() => {})
  blobsInFlight.set(key, settled)
  try {
    await task
  } finally {
    if (blobsInFlight.get(key) === settled) blobsInFlight.delete(key)
  }
}

/** `promise`, or the ABORT_ERR of `signal` if it aborts first. */
function abortable(promise: Promise<void>, signal: AbortSignal | undefined): Promise<void> {
  if (!signal) return promise
  return new Promise((ok, fail) => {
    const onAbort = () => {
      try {
        throwIfAborted(signal)
      } catch (e) {
        fail(e)
      }
    }
    if (signal.aborted) return onAbort()
    signal.addEventListener('abort', onAbort, { once: true })
    void promise.then(() => {
      signal.removeEventListener('abort', onAbort)
      ok()
    })
  })
}
