/**
 * Scale-out on BullMQ (Redis): `sana serve --queue redis://…` turns each request into a BullMQ job
 * ({@link redisRunner}); `sana worker` processes ({@link startWorker}, one per GPU, anywhere) run them on their
 * pipeline, report steps through `job.updateProgress`, and store the PNGs in Redis with a TTL. A worker that dies
 * mid-job loses its lock; BullMQ's stalled-job check hands the job to another worker, and a job that completed
 * stays completed (BullMQ only accepts the completion from the lock holder).
 *
 * Keys (prefix `sana`): `sana:limits` (the request limits the workers publish), `sana:result:<job>:<i>` (PNG
 * bytes), channel `sana:cancel` (job ids to abort), plus BullMQ's own `bull:sana-generate:*`.
 */
import { hostname } from 'node:os'
import { Queue, QueueEvents, Worker, type Job } from 'bullmq'
import IORedis, { type Redis } from 'ioredis'
import { SanaError, fromNative } from '../errors'
import type { SanaPipeline } from '../pipeline'
import { requestLimits, type RequestLimits } from './limits'
import { runOnPipeline, type JobParams, type JobRunner } from './runner'

/** The BullMQ queue both sides use. */
export const QUEUE_NAME = 'sana-generate'
const LIMITS_KEY = 'sana:limits'
const CANCEL_CHANNEL = 'sana:cancel'
const resultKey = (jobId: string, i: number) => `sana:result:${jobId}:${i}`

/** What a worker returns through BullMQ (the PNGs themselves sit under `keys`). */
interface WorkerResult {
  keys: string[]
  seed: number
  stepTimesMs: number[]
  totalMs: number
}

/** What a worker reports per step (`job.updateProgress`). */
interface WorkerProgress {
  step: number
  numSteps: number
  /** Base64 JPEG. */
  preview?: string
}

/**
 * BullMQ wants ioredis clients that retry forever (`maxRetriesPerRequest: null`). They reconnect on their own, so a
 * connection error is not fatal; `owned` collects them, since BullMQ leaves connections it was given open.
 */
function connect(url: string, owned: Redis[]): Redis {
  const client = new IORedis(url, { maxRetriesPerRequest: null })
  client.on('error', () => undefined)
  owned.push(client)
  return client
}

/** Options of {@link redisRunner}. */
export interface RedisRunnerOptions {
  /** `redis://host:port[/db]`. */
  url: string
  /** How long finished jobs and their PNGs stay in Redis, seconds. Defaults to 3600. */
  resultTtlSeconds?: number
}

/** The server side: a {@link JobRunner} that enqueues, follows progress, and fetches the PNGs. */
export interface RedisRunner extends JobRunner {
  /** The limits the workers published (cached for 5 s); `SANA_UNAVAILABLE` while no worker has started. */
  limits(): Promise<RequestLimits>
}

/**
 * @example
 * const runner = await redisRunner({ url: 'redis://127.0.0.1:6379' })
 * const app = await createServer({ runner, limits: () => runner.limits(), concurrency: 16, maxWaiting: 0 })
 */
export async function redisRunner(options: RedisRunnerOptions): Promise<RedisRunner> {
  const ttl = options.resultTtlSeconds ?? 3600
  const clients: Redis[] = []
  const redis = connect(options.url, clients)
  const queue = new Queue<JobParams, WorkerResult>(QUEUE_NAME, { connection: redis })
  const events = new QueueEvents(QUEUE_NAME, { connection: connect(options.url, clients) })
  // Every job in flight waits on these emitters: more than Node's default 10 listeners is expected.
  queue.setMaxListeners(0)
  events.setMaxListeners(0)
  await events.waitUntilReady()
  const listeners = new Map<string, (p: WorkerProgress) => void>()
  events.on('progress', ({ jobId, data }) => listeners.get(jobId)?.(data as WorkerProgress))
  let cached: { at: number; limits: RequestLimits } | undefined
  let modelId = 'sana'

  return {
    get modelId() {
      return modelId
    },
    async limits() {
      if (cached && Date.now() - cached.at < 5000) return cached.limits
      const raw = await redis.get(LIMITS_KEY)
      if (!raw) throw new SanaError('SANA_UNAVAILABLE', `no sana worker has registered on the queue yet (start one with "sana worker --queue ${options.url}")`)
      const published = JSON.parse(raw) as RequestLimits & { modelId: string }
      modelId = published.modelId
      cached = { at: Date.now(), limits: published }
      return published
    },
    async run(params, { signal, onStep, jobId }) {
      listeners.set(jobId, (p) => onStep({ step: p.step, numSteps: p.numSteps, preview: p.preview ? Buffer.from(p.preview, 'base64') : undefined }))
      const cancel = async () => {
        // A waiting job is removed; a running one is aborted by its worker at the next step.
        await redis.publish(CANCEL_CHANNEL, jobId)
        await queue.remove(jobId).catch(() => undefined)
      }
      signal.addEventListener('abort', () => void cancel().catch(() => undefined), { once: true })
      try {
        const job = await queue.add('generate', params, { jobId, removeOnComplete: { age: ttl }, removeOnFail: { age: ttl } })
        const done = job.waitUntilFinished(events) as Promise<WorkerResult>
        const result = await Promise.race([done, abortPromise(signal)])
        const images = await Promise.all(result.keys.map((k) => redis.getBuffer(k)))
        if (images.some((png) => !png)) throw new SanaError('SANA_NOT_FOUND', `the result of job ${jobId} expired before it was fetched`)
        return { images: images as Buffer[], seed: result.seed, stepTimesMs: result.stepTimesMs, totalMs: result.totalMs }
      } catch (e) {
        // A worker's failure arrives as its failedReason, "[CODE] message".
        throw e instanceof SanaError ? e : fromNative(e)
      } finally {
        listeners.delete(jobId)
      }
    },
    async close() {
      await events.close()
      await queue.close()
      for (const c of clients) c.disconnect()
    },
  }
}

function abortPromise(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    const fail = () => reject(signal.reason ?? new SanaError('ABORT_ERR', 'The operation was aborted'))
    if (signal.aborted) fail()
    else signal.addEventListener('abort', fail, { once: true })
  })
}

/** Options of {@link startWorker}. */
export interface WorkerOptions {
  url: string
  pipe: SanaPipeline
  /** Name of the model, for `GET /v1/models`. */
  modelId: string
  /** How long PNGs stay in Redis, seconds. Defaults to 3600. */
  resultTtlSeconds?: number
  /**
   * A job's lock lasts this long and is renewed every half of it; a worker that stops renewing (it died) loses
   * the job to another after at most this long plus `stalledIntervalMs`. Defaults to 30 000 (BullMQ's).
   */
  lockDurationMs?: number
  /** How often workers look for stalled jobs, ms. Defaults to 30 000 (BullMQ's). */
  stalledIntervalMs?: number
  /** Memory one job may use, bytes (sets the published limits). Defaults to half the free memory. */
  memoryBudget?: number
  /** Called with each job id this worker takes. */
  onStarted?: (jobId: string) => void
  /** Called with each job id this worker completed (after BullMQ recorded the completion). */
  onCompleted?: (jobId: string) => void
}

/** A running worker; `close()` finishes the current job, then disconnects. */
export interface SanaWorker {
  readonly id: string
  close(): Promise<void>
}

/**
 * Pull jobs from the queue and run them on `pipe`, one at a time.
 * @example const worker = await startWorker({ url: 'redis://127.0.0.1:6379', pipe, modelId: 'Sana_600M' })
 */
export async function startWorker(options: WorkerOptions): Promise<SanaWorker> {
  const ttl = options.resultTtlSeconds ?? 3600
  const clients: Redis[] = []
  const redis = connect(options.url, clients)
  const subscriber = connect(options.url, clients)
  const limits = { ...requestLimits(options.pipe, options.memoryBudget), modelId: options.modelId }
  await redis.set(LIMITS_KEY, JSON.stringify(limits))

  const process = async (job: Job<JobParams, WorkerResult>, _token?: string, signal?: AbortSignal): Promise<WorkerResult> => {
    try {
      const result = await runOnPipeline(options.pipe, job.data, {
        signal: signal ?? new AbortController().signal,
        onStep: (p) => {
          const progress: WorkerProgress = { step: p.step, numSteps: p.numSteps, preview: p.preview?.toString('base64') }
          job.updateProgress(progress as unknown as object).catch(() => undefined)
        },
      })
      const keys = result.images.map((_, i) => resultKey(job.id!, i))
      const tx = redis.multi()
      result.images.forEach((png, i) => tx.set(keys[i], png, 'EX', ttl))
      await tx.exec()
      return { keys, seed: result.seed, stepTimesMs: result.stepTimesMs, totalMs: result.totalMs }
    } catch (e) {
      const err = e instanceof SanaError ? e : fromNative(e)
      throw err instanceof SanaError ? new Error(`[${err.code}] ${err.message}`) : err
    }
  }
  const worker = new Worker<JobParams, WorkerResult>(QUEUE_NAME, process, {
    connection: connect(options.url, clients),
    concurrency: 1, // one pipeline runs one generation at a time
    lockDuration: options.lockDurationMs ?? 30_000,
    stalledInterval: options.stalledIntervalMs ?? 30_000,
  })
  worker.on('active', (job) => options.onStarted?.(job.id!))
  worker.on('completed', (job) => options.onCompleted?.(job.id!))
  worker.on('error', () => undefined) // connection blips: ioredis reconnects; BullMQ retries
  await subscriber.subscribe(CANCEL_CHANNEL)
  subscriber.on('message', (_channel, jobId: string) => worker.cancelJob(jobId, 'cancelled by the client'))
  await worker.waitUntilReady()

  return {
    id: `${hostname()}:${globalThis.process.pid}`,
    async close() {
      await worker.close()
      for (const c of clients) c.disconnect()
    },
  }
}
