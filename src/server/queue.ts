/**
 * The in-process queue in front of a {@link JobRunner}: bounded (a full queue refuses at once, so the server
 * answers 429 instead of piling up work), `concurrency` jobs at a time (1 for a local pipeline), a per-job
 * timeout, and cancellation by id or by the caller's signal (a disconnected client).
 */
import { randomUUID } from 'node:crypto'
import { SanaError } from '../errors'
import type { JobParams, JobResult, JobRunner, StepProgress } from './runner'

/** Options of {@link JobQueue}. */
export interface JobQueueOptions {
  /** Jobs waiting (not counting running ones) before `submit` refuses with `SANA_QUEUE_FULL`. */
  maxWaiting: number
  /** Jobs run at once: 1 for a pipeline in this process (it runs one generation at a time anyway). */
  concurrency: number
  /** A job running or waiting longer than this fails with `SANA_TIMEOUT`. */
  timeoutMs: number
}

/** What a job tells its submitter while it waits and runs. */
export type JobEvent =
  | { type: 'queued'; position: number }
  | { type: 'started' }
  | ({ type: 'step' } & StepProgress)

/** A submitted job: its id (for `DELETE /api/jobs/:id`), its outcome, and `cancel()`. */
export interface Job {
  readonly id: string
  readonly params: JobParams
  /** Resolves with the images; rejects with `ABORT_ERR` (cancelled), `SANA_TIMEOUT` or the runner's error. */
  readonly done: Promise<JobResult>
  cancel(reason?: string): void
}

interface Entry {
  job: Job
  controller: AbortController
  onEvent: (e: JobEvent) => void
  start: () => void
}

/** Counters the metrics read. */
export interface QueueStats {
  waiting: number
  running: number
}

/**
 * @example
 * const queue = new JobQueue(runner, { maxWaiting: 16, concurrency: 1, timeoutMs: 600_000 })
 * const job = queue.submit(params, { onEvent: (e) => console.log(e) })
 * const { images } = await job.done
 */
export class JobQueue {
  private readonly waiting: Entry[] = []
  private readonly running = new Map<string, Entry>()
  private closed = false

  constructor(
    private readonly runner: JobRunner,
    private readonly options: JobQueueOptions,
  ) {}

  get stats(): QueueStats {
    return { waiting: this.waiting.length, running: this.running.size }
  }

  /** Seconds a client refused with 429 should wait: a rough time for one running job to finish. */
  retryAfterSeconds(lastJobMs: number | undefined): number {
    return Math.max(1, Math.ceil((lastJobMs ?? 1000) / 1000))
  }

  /**
   * Queue a job; throws `SANA_QUEUE_FULL` when `maxWaiting` jobs already wait. `signal` (e.g. the client
   * connection closing) cancels it.
   */
  submit(params: JobParams, options: { signal?: AbortSignal; onEvent?: (e: JobEvent) => void } = {}): Job {
    if (this.closed) throw new SanaError('SANA_UNAVAILABLE', 'the server is shutting down')
    if (this.running.size >= this.options.concurrency && this.waiting.length >= this.options.maxWaiting) {
      throw new SanaError('SANA_QUEUE_FULL', `the queue is full (${this.options.maxWaiting} jobs waiting); retry later`)
    }
    const id = randomUUID()
    const controller = new AbortController()
    const timer = setTimeout(
      () => controller.abort(new SanaError('SANA_TIMEOUT', `the job took longer than ${this.options.timeoutMs} ms`)),
      this.options.timeoutMs,
    )
    timer.unref()
    const onAbort = () => controller.abort(new SanaError('ABORT_ERR', 'the client went away'))
    options.signal?.addEventListener('abort', onAbort, { once: true })
    let start!: () => void
    const started = new Promise<void>((res) => (start = res))
    const onEvent = options.onEvent ?? (() => undefined)
    const done = (async () => {
      try {
        await Promise.race([started, aborted(controller.signal)])
        onEvent({ type: 'started' })
        return await this.runner.run(params, {
          jobId: id,
          signal: controller.signal,
          onStep: (p) => onEvent({ type: 'step', ...p }),
        })
      } catch (e) {
        // The runner sees a plain abort; report why it was aborted (timeout, cancel, disconnect).
        throw controller.signal.aborted && controller.signal.reason instanceof SanaError ? controller.signal.reason : e
      } finally {
        clearTimeout(timer)
        options.signal?.removeEventListener('abort', onAbort)
        this.finish(id)
      }
    })()
    done.catch(() => undefined) // the submitter awaits it; never an unhandled rejection
    const job: Job = {
      id,
      params,
      done,
      cancel: (reason = 'cancelled') => controller.abort(new SanaError('ABORT_ERR', `the job was ${reason}`)),
    }
    const entry: Entry = { job, controller, onEvent, start }
    this.waiting.push(entry)
    onEvent({ type: 'queued', position: this.waiting.length })
    this.pump()
    return job
  }

  /** A job waiting or running, by id. */
  get(id: string): Job | undefined {
    return this.running.get(id)?.job ?? this.waiting.find((e) => e.job.id === id)?.job
  }

  /** Refuse new jobs, cancel waiting ones, and wait for the running ones. */
  async close(): Promise<void> {
    this.closed = true
    for (const e of this.waiting.splice(0)) e.controller.abort(new SanaError('SANA_UNAVAILABLE', 'the server is shutting down'))
    await Promise.allSettled([...this.running.values()].map((e) => e.job.done))
  }

  private finish(id: string): void {
    const i = this.waiting.findIndex((e) => e.job.id === id)
    if (i >= 0) this.waiting.splice(i, 1)
    this.running.delete(id)
    this.pump()
  }

  private pump(): void {
    while (this.running.size < this.options.concurrency && this.waiting.length > 0) {
      const entry = this.waiting.shift()!
      this.running.set(entry.job.id, entry)
      entry.start()
      this.waiting.forEach((e, i) => e.onEvent({ type: 'queued', position: i + 1 }))
    }
  }
}

/** A promise that rejects when `signal` aborts (never resolves). */
function aborted(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    const fail = () => reject(signal.reason)
    if (signal.aborted) fail()
    else signal.addEventListener('abort', fail, { once: true })
  })
}
