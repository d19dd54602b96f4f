/**
 * The routes: OpenAI's Images API (`/v1/...`), our streaming API (`/api/...`), `/healthz`, `/metrics`, and the
 * page at `/`. Every request body is validated by its JSON schema before a handler runs.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { SanaError } from '../errors'
import { sendError, type ServerContext } from './app'
import { errorFrom, generationsBody, jobParams, streamBody, type SanaBody } from './openai'
import type { JobEvent } from './queue'
import type { JobParams, JobResult } from './runner'
import { registerEdits } from './edits'
import { openEventStream } from './sse'

/** An AbortSignal that fires when the client closes the connection before the response is complete. */
function disconnectSignal(reply: FastifyReply): AbortSignal {
  const controller = new AbortController()
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished) controller.abort()
  })
  return controller.signal
}

/** Queue a job, wait for it, count it. Throws `SANA_QUEUE_FULL` at once when the queue is full. */
function runJob(ctx: ServerContext, params: JobParams, options: { signal: AbortSignal; onEvent?: (e: JobEvent) => void }) {
  let started = 0
  let lastStep = 0
  const onEvent = (e: JobEvent) => {
    if (e.type === 'started') started = lastStep = performance.now()
    if (e.type === 'step') {
      const now = performance.now()
      ctx.metrics.stepSeconds.observe((now - lastStep) / 1000)
      lastStep = now
    }
    options.onEvent?.(e)
  }
  const job = ctx.queue.submit(params, { signal: options.signal, onEvent })
  const done = job.done.then(
    (result) => {
      ctx.lastJobMs = performance.now() - started
      ctx.metrics.jobEnded(undefined, ctx.lastJobMs / 1000, result.images.length)
      return result
    },
    (e) => {
      ctx.metrics.jobEnded(e as SanaError, 0, 0)
      throw e
    },
  )
  return { job, done }
}

/** 429 with Retry-After when the queue is full; other errors as usual. */
function refuse(ctx: ServerContext, reply: FastifyReply, e: unknown): FastifyReply {
  if (e instanceof SanaError && e.code === 'SANA_QUEUE_FULL') reply.header('retry-after', String(ctx.queue.retryAfterSeconds(ctx.lastJobMs)))
  return sendError(reply, ctx.metrics, e)
}

/** `http://host:port` as the client reached us (for `url` results). */
function origin(req: FastifyRequest): string {
  return `${req.protocol}://${req.host}`
}

export function registerRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const page = readFileSync(join(__dirname, 'page', 'index.html'))
  const open = { config: { public: true } }

  app.get('/', open, async (_req, reply) => reply.type('text/html; charset=utf-8').header('cache-control', 'no-cache').send(page))

  app.get('/healthz', open, async () => ({ status: 'ok', ...ctx.queue.stats }))

  app.get('/metrics', async (_req, reply) => reply.type(ctx.metrics.registry.contentType).send(await ctx.metrics.registry.metrics()))

  app.get('/v1/models', async () => ({
    object: 'list',
    data: [{ id: ctx.runner.modelId, object: 'model', created: 0, owned_by: 'sana-node', limits: await ctx.limits() }],
  }))

  // OpenAI: POST /v1/images/generations → { created, data: [{ b64_json } | { url }] }.
  app.post<{ Body: SanaBody }>('/v1/images/generations', { schema: { body: generationsBody } }, async (req, reply) => {
    return answerImages(ctx, req, reply, { ...jobParams(req.body, await ctx.limits()), previewEvery: 0 }, req.body.response_format)
  })

  app.get<{ Params: { id: string } }>('/v1/images/results/:id', open, async (req, reply) => {
    const png = /^[0-9a-f-]{36}\.png$/.test(req.params.id) ? ctx.results.get(req.params.id.slice(0, 36)) : undefined
    if (!png) throw new SanaError('SANA_NOT_FOUND', 'no such image (results expire)')
    return reply.type('image/png').send(png)
  })

  // Ours: POST /api/generate → server-sent events queued… started, step (with preview)…, done | error.
  app.post<{ Body: SanaBody }>('/api/generate', { schema: { body: streamBody } }, async (req, reply) => {
    const params = jobParams(req.body, await ctx.limits())
    const early: JobEvent[] = []
    let sse: ReturnType<typeof openEventStream> | undefined
    const onEvent = (e: JobEvent) => (sse ? sendEvent(sse, e) : early.push(e))
    let run
    try {
      run = runJob(ctx, params, { signal: disconnectSignal(reply), onEvent })
    } catch (e) {
      return refuse(ctx, reply, e)
    }
    reply.hijack()
    sse = openEventStream(reply.raw, reply.getHeaders())
    sse.send('job', { id: run.job.id, params })
    for (const e of early) sendEvent(sse, e)
    try {
      const result = await run.done
      sse.send('done', { id: run.job.id, seed: result.seed, images: result.images.map((png) => png.toString('base64')), totalMs: result.totalMs, params })
    } catch (e) {
      sse.send('error', errorFrom(e).body)
    } finally {
      sse.end()
    }
  })

  registerEdits(app, ctx)

  app.delete<{ Params: { id: string } }>('/api/jobs/:id', async (req) => {
    const job = ctx.queue.get(req.params.id)
    if (!job) throw new SanaError('SANA_NOT_FOUND', `no job ${JSON.stringify(req.params.id)} waiting or running`)
    job.cancel('cancelled by DELETE /api/jobs/:id')
    return { id: job.id, cancelled: true }
  })
}

function sendEvent(sse: ReturnType<typeof openEventStream>, e: JobEvent): void {
  if (e.type === 'step') {
    sse.send('step', { step: e.step, numSteps: e.numSteps, preview: e.preview ? `data:image/jpeg;base64,${e.preview.toString('base64')}` : undefined })
  } else {
    sse.send(e.type, e)
  }
}

/**
 * Run a job and answer as OpenAI's Images API does: `{ created, data: [{ b64_json } | { url }] }` (plus `seed`);
 * 429 at once when the queue is full. The client disconnecting cancels the job.
 */
export async function answerImages(ctx: ServerContext, req: FastifyRequest, reply: FastifyReply, params: JobParams, format: string | undefined) {
  let run
  try {
    run = runJob(ctx, params, { signal: disconnectSignal(reply) })
  } catch (e) {
    return refuse(ctx, reply, e)
  }
  const result = await run.done
  return { created: Math.floor(Date.now() / 1000), data: imageData(ctx, req, result, format === 'url' ? 'url' : 'b64_json'), seed: result.seed }
}

/** OpenAI's `data` array: base64 PNGs, or URLs to fetch them from (kept for a while, see ResultStore). */
function imageData(ctx: ServerContext, req: FastifyRequest, result: JobResult, format: 'b64_json' | 'url') {
  if (format === 'b64_json') return result.images.map((png) => ({ b64_json: png.toString('base64') }))
  return result.images.map((png) => ({ url: `${origin(req)}/v1/images/results/${ctx.results.put(png)}.png` }))
}
