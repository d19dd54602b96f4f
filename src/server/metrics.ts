/**
 * `GET /metrics` in Prometheus' text format (prom-client, on a registry of our own so embedding apps keep theirs):
 * queue length, running jobs, step and job time, images made, errors by code, plus Node's process metrics (RSS, heap,
 * event-loop lag).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { QueueStats } from './queue'

/** The server's metrics, and the hooks that feed them. */
export class ServerMetrics {
  readonly registry = new Registry()
  readonly stepSeconds = new Histogram({
    name: 'sana_step_seconds',
    help: 'Time between denoising steps of a job, seconds.',
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  })
  readonly jobSeconds = new Histogram({
    name: 'sana_job_seconds',
    help: 'Wall time of a finished job (queueing excluded), seconds.',
    buckets: [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
    registers: [this.registry],
  })
  readonly images = new Counter({ name: 'sana_images_total', help: 'Images generated.', registers: [this.registry] })
  readonly jobs = new Counter({
    name: 'sana_jobs_total',
    help: 'Jobs that ended, by outcome (completed, failed, cancelled, timeout).',
    labelNames: ['outcome'],
    registers: [this.registry],
  })
  readonly errors = new Counter({
    name: 'sana_http_errors_total',
    help: 'Error responses, by HTTP status and our error code.',
    labelNames: ['status', 'code'],
    registers: [this.registry],
  })

  constructor(stats: () => QueueStats) {
    const gauges = [
      ['sana_queue_waiting', 'Jobs waiting in the queue.', 'waiting'],
      ['sana_jobs_running', 'Jobs running now.', 'running'],
    ] as const
    for (const [name, help, key] of gauges) {
      new Gauge({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.set(stats()[key])
        },
      })
    }
    collectDefaultMetrics({ register: this.registry })
  }

  /** Count a job's end by its error code (or success). */
  jobEnded(error: { code?: string } | undefined, seconds: number, images: number): void {
    if (!error) {
      this.jobs.inc({ outcome: 'completed' })
      this.images.inc(images)
      this.jobSeconds.observe(seconds)
      return
    }
    const outcome = error.code === 'ABORT_ERR' ? 'cancelled' : error.code === 'SANA_TIMEOUT' ? 'timeout' : 'failed'
    this.jobs.inc({ outcome })
  }
}
