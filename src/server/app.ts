/**
 * The HTTP server of `sana serve`: Fastify with strict JSON-schema validation (no type coercion), body limits,
 * OpenAI-shaped errors, bearer-key auth (constant-time), CORS only for the origins given, and a graceful
 * `close()` that lets running jobs finish. Routes live in `routes.ts`.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply } from 'fastify'
import cors from '@fastify/cors'
import multipart from '@fastify/multipart'
import { SanaError } from '../errors'
import { errorFrom, errorResponse } from './openai'
import { JobQueue } from './queue'
import { ServerMetrics } from './metrics'
import { ResultStore } from './results'
import { registerRoutes } from './routes'
import type { RequestLimits } from './limits'
import type { JobRunner } from './runner'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Served without the API key: the page, `/healthz`, and `url` results (their random id is the capability). */
    public?: boolean
  }
}

/** Options of {@link createServer}. */
export interface ServerOptions {
  /** Runs the jobs: `pipelineRunner(pipe)` in this process, or `redisRunner(...)` for remote workers. */
  runner: JobRunner
  /** The request limits (see `limits.ts`); called per request, so remote workers can report theirs. */
  limits: () => RequestLimits | Promise<RequestLimits>
  /** Required as `Authorization: Bearer <key>` on every API route when set. Defaults to none (open). */
  apiKey?: string
  /** Origins allowed by CORS, e.g. `['https://app.example']`. Defaults to none: no CORS headers at all. */
  corsOrigins?: string[]
  /** Jobs waiting before 429. Defaults to 16. */
  maxWaiting?: number
  /** Jobs run at once. Defaults to 1 (one generation at a time per pipeline). */
  concurrency?: number
  /** Per-job timeout, ms, queueing included. Defaults to 10 minutes. */
  timeoutMs?: number
  /** How long `url` results stay fetchable, ms. Defaults to 1 hour. */
  resultTtlMs?: number
  /** Fastify's logger option. Defaults to false (quiet). */
  logger?: boolean | { level: string }
}

/** What the routes share. */
export interface ServerContext {
  queue: JobQueue
  metrics: ServerMetrics
  results: ResultStore
  runner: JobRunner
  limits: () => Promise<RequestLimits>
  /** Wall time of the last finished job, ms: the Retry-After estimate. */
  lastJobMs?: number
}

/**
 * JSON bodies hold prompts only: two 32 000-character prompts of up to 4 UTF-8 bytes per character, plus the
 * other fields. Uploads (`/v1/images/edits`) get their own limit from the memory budget.
 */
const JSON_BODY_LIMIT = 2 * 32_000 * 4 + 16 * 1024

/** Fastify's client errors, in our codes (the message is Fastify's, which names the problem). */
function clientErrorCode(e: FastifyError): string {
  if (e.statusCode === 404) return 'SANA_NOT_FOUND'
  if (e.statusCode === 401) return 'SANA_UNAUTHORIZED'
  return 'SANA_INVALID_ARGUMENT'
}

/** Send an error in OpenAI's shape and count it. */
export function sendError(reply: FastifyReply, metrics: ServerMetrics, e: unknown): FastifyReply {
  let { status, body } = errorFrom(e)
  const fe = e as FastifyError
  if (!(e instanceof SanaError) && typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    ;({ body } = errorResponse(clientErrorCode(fe), fe.message, fe.validation?.[0]?.instancePath?.slice(1) || null))
    status = fe.statusCode
  }
  metrics.errors.inc({ status: String(status), code: body.error.code })
  return reply.code(status).type('application/json').send(body)
}

/** The key check: SHA-256 both sides so the compare is constant-time whatever the lengths. */
function keyMatches(header: string | undefined, key: string): boolean {
  const m = /^Bearer (.+)$/.exec(header ?? '')
  if (!m) return false
  const digest = (s: string) => createHash('sha256').update(s).digest()
  return timingSafeEqual(digest(m[1]), digest(key))
}

/**
 * Build the server (not listening yet: call `app.listen({ host, port })`). `app.close()` stops accepting
 * requests, cancels waiting jobs, waits for the running one, then frees the runner.
 * @example
 * const app = await createServer({ runner: pipelineRunner(pipe, 'sana'), limits: () => requestLimits(pipe) })
 * await app.listen({ host: '127.0.0.1', port: 8080 })
 */
export async function createServer(options: ServerOptions): Promise<FastifyInstance> {
  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit: JSON_BODY_LIMIT,
    // Strict types: "n": "2" is a 400, not a 2; unknown fields are kept (and ignored), as OpenAI's API does.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false } },
    return503OnClosing: true,
  })
  const queue = new JobQueue(options.runner, {
    maxWaiting: options.maxWaiting ?? 16,
    concurrency: options.concurrency ?? 1,
    timeoutMs: options.timeoutMs ?? 600_000,
  })
  const ctx: ServerContext = {
    queue,
    metrics: new ServerMetrics(() => queue.stats),
    results: new ResultStore({ ttlMs: options.resultTtlMs ?? 3_600_000, maxEntries: 256 }),
    runner: options.runner,
    limits: async () => options.limits(),
  }
  if (options.corsOrigins?.length) await app.register(cors, { origin: options.corsOrigins, methods: ['GET', 'POST', 'DELETE'] })
  await app.register(multipart, { limits: { files: 2, fields: 20, fieldSize: JSON_BODY_LIMIT } })

  app.setErrorHandler((e, _req, reply) => sendError(reply, ctx.metrics, e))
  app.setNotFoundHandler((req, reply) =>
    sendError(reply, ctx.metrics, new SanaError('SANA_NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}`)),
  )
  const key = options.apiKey
  if (key) {
    app.addHook('onRequest', async (req, reply) => {
      if (req.routeOptions.config?.public) return
      if (keyMatches(req.headers.authorization, key)) return
      reply.header('www-authenticate', 'Bearer')
      return sendError(reply, ctx.metrics, new SanaError('SANA_UNAUTHORIZED', 'missing or wrong API key (send "Authorization: Bearer <key>")'))
    })
  }
  // Shutting down: answer the requests in flight with `connection: close`, so their keep-alive sockets do not hold
  // the server open for keepAliveTimeout (72 s) once the last job is done.
  let closing = false
  app.addHook('preClose', async () => {
    closing = true
  })
  app.addHook('onSend', async (_req, reply) => {
    if (closing) reply.header('connection', 'close')
  })
  app.addHook('onClose', async () => {
    await queue.close()
    await options.runner.close()
  })
  registerRoutes(app, ctx)
  return app
}
