// Shared by the server tests: one tiny pipeline served on a free loopback port, and a reader for
// server-sent events.
import { createServer, pipelineRunner, requestLimits } from '../../dist/server/index.js'

/**
 * Start `sana serve`'s app on 127.0.0.1:<free port> for `pipe` (which the test owns: closing the server does not
 * dispose it). Returns { app, url }; closed when the test ends (pass t = null to close it yourself).
 */
export async function startServer(t, pipe, options = {}) {
  const runner = { ...pipelineRunner(pipe, 'sana-tiny'), close: async () => undefined }
  const app = await createServer({ runner, limits: () => requestLimits(pipe), ...options })
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  t?.teardown(() => app.close())
  return { app, url }
}

/** Parse a `text/event-stream` response into { event, data } objects as they arrive. */
export async function* sseEvents(response) {
  const decoder = new TextDecoder()
  let buffer = ''
  for await (const chunk of response.body) {
    buffer += decoder.decode(chunk, { stream: true })
    let end
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const frame = buffer.slice(0, end)
      buffer = buffer.slice(end + 2)
      const event = /^event: (.*)$/m.exec(frame)?.[1]
      const data = /^data: (.*)$/m.exec(frame)?.[1]
      if (event && data) yield { event, data: JSON.parse(data) }
    }
  }
}

/** POST JSON; returns the fetch Response. */
export function postJson(url, body, headers = {}) {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
}

/** Width and height from a PNG's IHDR (and a check that it is a PNG at all). */
export function pngSize(buf) {
  if (buf.subarray(0, 8).toString('hex') !== '89504e470d0a1a0a') throw new Error('not a PNG')
  return { width: buf.readUInt32BE(16), height: buf.readUInt32BE(20) }
}

/** Poll `check` (async) until it returns truthy; fail after `tries` × 100 ms. Not a timing assertion. */
export async function eventually(check, tries = 300) {
  for (let i = 0; i < tries; i++) {
    const v = await check()
    if (v) return v
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error('condition not met')
}

/** A small, fast request for the tiny model: 256², no aspect-ratio binning (which would generate at 1024²). */
export const TINY = { size: '256x256', resolution_binning: false, steps: 2 }
