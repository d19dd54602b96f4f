/**
 * Server-sent events on a hijacked Fastify reply: `event: <name>\ndata: <json>\n\n` frames, a comment every
 * 15 s so proxies keep the connection open, and `closed` for the disconnect that cancels the job.
 */
import type { ServerResponse } from 'node:http'

const HEARTBEAT_MS = 15_000

/** An open event stream. */
export interface EventStream {
  send(event: string, data: unknown): void
  end(): void
  /** True once the client has gone or `end()` was called. */
  readonly closed: boolean
}

/**
 * Start the stream: status 200, `text/event-stream`, plus `headers` (those Fastify hooks set, e.g. CORS).
 * @example const sse = openEventStream(reply.raw, reply.getHeaders()); sse.send('step', { step: 1 }); sse.end()
 */
export function openEventStream(res: ServerResponse, headers: Record<string, unknown> = {}): EventStream {
  res.writeHead(200, {
    ...(headers as Record<string, string>),
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    // One stream per connection: the socket closes with the stream (nothing keeps a server that is shutting down open).
    connection: 'close',
    'x-accel-buffering': 'no', // nginx: do not buffer the stream
  })
  res.flushHeaders()
  let closed = false
  const heartbeat = setInterval(() => res.write(': ping\n\n'), HEARTBEAT_MS)
  heartbeat.unref()
  const stop = () => {
    closed = true
    clearInterval(heartbeat)
  }
  res.on('close', stop)
  return {
    get closed() {
      return closed || res.destroyed
    },
    send(event, data) {
      if (closed || res.destroyed) return
      res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
    },
    end() {
      stop()
      if (!res.destroyed) res.end()
    },
  }
}
