// `sana serve` over real HTTP on loopback: the OpenAI Images API (with the official `openai` client), the SSE
// stream, cancellation, the bounded queue, timeouts, metrics. Bad requests are in server-errors.spec.mjs.
// Serial: the tests share one pipeline, which runs one generation at a time.
import test from 'ava'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import OpenAI, { toFile } from 'openai'
import { SanaPipeline } from '../dist/index.js'
import { FIXTURES, SANA_TINY } from './helpers/paths.mjs'
import { eventually, pngSize, postJson, sseEvents, startServer, TINY } from './helpers/server.mjs'

let pipe
test.before(async () => {
  pipe = await SanaPipeline.load(SANA_TINY)
})
test.after.always(() => pipe?.dispose())

/** Start a long job on /api/generate and return its stream and id (after its first step). */
async function longJob(url, extra = {}) {
  const controller = new AbortController()
  const res = await fetch(`${url}/api/generate`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'a slow fox', ...TINY, steps: 1000, ...extra }),
    signal: controller.signal,
  })
  const events = sseEvents(res)
  let id
  for (;;) {
    const { value, done } = await events.next() // not for-await: breaking out of it would close the stream
    if (done) throw new Error('the stream ended before the first step')
    if (value.event === 'job') id = value.data.id
    if (value.event === 'step') break
  }
  return { res, events, id, controller }
}

test.serial('the official openai client generates images, as b64_json and as url', async (t) => {
  const { url } = await startServer(t, pipe)
  const client = new OpenAI({ apiKey: 'unused', baseURL: `${url}/v1`, maxRetries: 0 })
  const b64 = await client.images.generate({ prompt: 'a red fox in snow', n: 2, ...TINY, seed: 7, quality: 'high', user: 'ignored' })
  t.is(b64.data.length, 2)
  t.true(Number.isInteger(b64.created))
  for (const d of b64.data) t.deepEqual(pngSize(Buffer.from(d.b64_json, 'base64')), { width: 256, height: 256 })
  // Same seed, same image: the server passes seed through.
  const again = await client.images.generate({ prompt: 'a red fox in snow', n: 2, ...TINY, seed: 7 })
  t.is(again.data[0].b64_json, b64.data[0].b64_json)

  const byUrl = await client.images.generate({ prompt: 'a red fox in snow', ...TINY, size: '320x256', response_format: 'url' })
  const png = Buffer.from(await (await fetch(byUrl.data[0].url)).arrayBuffer())
  t.deepEqual(pngSize(png), { width: 320, height: 256 })

  const models = await client.models.list()
  t.deepEqual(models.data.map((m) => m.id), ['sana-tiny'])
})

test.serial('the openai client sees our errors in its error classes, with our code', async (t) => {
  const { url } = await startServer(t, pipe, { apiKey: 'right key' })
  const wrong = new OpenAI({ apiKey: 'wrong key', baseURL: `${url}/v1`, maxRetries: 0 })
  const e = await t.throwsAsync(wrong.images.generate({ prompt: 'x', ...TINY }), { instanceOf: OpenAI.AuthenticationError })
  t.is(e.code, 'SANA_UNAUTHORIZED')
  const right = new OpenAI({ apiKey: 'right key', baseURL: `${url}/v1`, maxRetries: 0 })
  const bad = await t.throwsAsync(right.images.generate({ prompt: 'x', ...TINY, n: 1000 }), { instanceOf: OpenAI.BadRequestError })
  t.is(bad.code, 'SANA_INVALID_ARGUMENT')
  t.regex(bad.message, /Expected n from 1 to 10 but received 1000/)
  t.is((await right.images.generate({ prompt: 'x', ...TINY })).data.length, 1)
})

test.serial('images.edit (multipart): img2img from an uploaded image, inpainting with a mask', async (t) => {
  const { url } = await startServer(t, pipe)
  const client = new OpenAI({ apiKey: 'unused', baseURL: `${url}/v1`, maxRetries: 0 })
  const inputs = join(FIXTURES, 'wave2', 'inputs')
  const init = readFileSync(join(inputs, 'init_256x320.png'))
  const mask = readFileSync(join(inputs, 'mask_256x320.png'))
  const image = await toFile(init, 'init.png', { type: 'image/png' })
  // No size: the image's own (256×320 is already on the 32-pixel grid).
  const a = await client.images.edit({ image, prompt: 'a fox, oil painting', strength: 0.5, steps: 4, seed: 1 })
  const size = pngSize(init)
  t.deepEqual(pngSize(Buffer.from(a.data[0].b64_json, 'base64')), size)
  const b = await client.images.edit({ image: await toFile(init, 'init.png'), mask: await toFile(mask, 'mask.png'), prompt: 'a fox', steps: 4, seed: 1 })
  const inpainted = Buffer.from(b.data[0].b64_json, 'base64')
  t.deepEqual(pngSize(inpainted), size)
  t.not(inpainted.toString('base64'), a.data[0].b64_json)
})

test.serial('POST /api/generate streams queued, started, every step, then the PNG', async (t) => {
  const { url } = await startServer(t, pipe)
  const res = await postJson(`${url}/api/generate`, { prompt: 'a lighthouse', ...TINY, steps: 3, seed: 3, preview_every: 1 })
  t.is(res.status, 200)
  t.regex(res.headers.get('content-type'), /^text\/event-stream/)
  const seen = []
  for await (const ev of sseEvents(res)) seen.push(ev)
  t.deepEqual(seen.map((e) => e.event), ['job', 'queued', 'started', 'step', 'step', 'step', 'done'])
  const steps = seen.filter((e) => e.event === 'step')
  t.deepEqual(steps.map((e) => [e.data.step, e.data.numSteps]), [[0, 3], [1, 3], [2, 3]])
  // A JPEG preview of the image forming, with every step (preview_every: 1).
  for (const e of steps) t.regex(e.data.preview, /^data:image\/jpeg;base64,\/9j\//)
  const done = seen.at(-1).data
  t.is(done.seed, 3)
  t.is(done.id, seen[0].data.id)
  t.deepEqual(pngSize(Buffer.from(done.images[0], 'base64')), { width: 256, height: 256 })
})

test.serial('DELETE /api/jobs/:id cancels a running job; the stream ends with ABORT_ERR', async (t) => {
  const { url } = await startServer(t, pipe)
  const job = await longJob(url)
  const del = await fetch(`${url}/api/jobs/${job.id}`, { method: 'DELETE' })
  t.deepEqual(await del.json(), { id: job.id, cancelled: true })
  let last
  for await (const ev of job.events) last = ev
  t.is(last.event, 'error')
  t.is(last.data.error.code, 'ABORT_ERR')
  t.is((await fetch(`${url}/api/jobs/${job.id}`, { method: 'DELETE' })).status, 404)
})

test.serial('a client that disconnects cancels its job', async (t) => {
  const { url } = await startServer(t, pipe)
  const job = await longJob(url)
  job.controller.abort()
  await eventually(async () => /sana_jobs_total\{outcome="cancelled"\} 1/.test(await (await fetch(`${url}/metrics`)).text()))
  t.deepEqual(await (await fetch(`${url}/healthz`)).json(), { status: 'ok', waiting: 0, running: 0 })
})

test.serial('a full queue answers 429 with Retry-After; waiting jobs run after', async (t) => {
  const { url } = await startServer(t, pipe, { maxWaiting: 1 })
  const running = await longJob(url)
  const waiting = postJson(`${url}/v1/images/generations`, { prompt: 'second', ...TINY })
  await eventually(async () => (await (await fetch(`${url}/healthz`)).json()).waiting === 1)
  const full = await postJson(`${url}/v1/images/generations`, { prompt: 'third', ...TINY })
  t.is(full.status, 429)
  t.regex(full.headers.get('retry-after'), /^\d+$/)
  t.is((await full.json()).error.code, 'SANA_QUEUE_FULL')
  await fetch(`${url}/api/jobs/${running.id}`, { method: 'DELETE' })
  const second = await waiting
  t.is(second.status, 200)
  t.is((await second.json()).data.length, 1)
})

test.serial('a job past the per-request timeout fails with 504 SANA_TIMEOUT and the server keeps serving', async (t) => {
  const { url } = await startServer(t, pipe, { timeoutMs: 500 })
  const slow = await postJson(`${url}/v1/images/generations`, { prompt: 'slow', ...TINY, steps: 1000 })
  t.is(slow.status, 504)
  t.is((await slow.json()).error.code, 'SANA_TIMEOUT')
  // (The fast request must finish in 500 ms on a loaded machine: give it one step.)
  const ok = await postJson(`${url}/v1/images/generations`, { prompt: 'fast', ...TINY, steps: 1 })
  t.true([200, 504].includes(ok.status))
  t.regex(await (await fetch(`${url}/metrics`)).text(), /sana_jobs_total\{outcome="timeout"\} [12]/)
})

test.serial('GET /metrics is Prometheus text with queue, step time, images and errors', async (t) => {
  const { url } = await startServer(t, pipe)
  await postJson(`${url}/v1/images/generations`, { prompt: 'count me', ...TINY, n: 2 })
  await postJson(`${url}/v1/images/generations`, { prompt: 'bad', size: 'huge' })
  const res = await fetch(`${url}/metrics`)
  t.regex(res.headers.get('content-type'), /^text\/plain/)
  const text = await res.text()
  t.regex(text, /^sana_queue_waiting 0$/m)
  t.regex(text, /^sana_images_total 2$/m)
  t.regex(text, /^sana_step_seconds_count 2$/m)
  t.regex(text, /^sana_http_errors_total\{status="400",code="SANA_INVALID_ARGUMENT"\} 1$/m)
  t.regex(text, /^process_resident_memory_bytes \d+/m)
})

test.serial('the API key guards every API route (not /healthz or the page); CORS only for the given origins', async (t) => {
  const { url } = await startServer(t, pipe, { apiKey: 's3cret', corsOrigins: ['https://app.example'] })
  for (const path of ['/v1/models', '/metrics', '/api/jobs/x']) {
    t.is((await fetch(`${url}${path}`, { method: path.startsWith('/api') ? 'DELETE' : 'GET' })).status, 401, path)
  }
  const wrong = await fetch(`${url}/v1/models`, { headers: { authorization: 'Bearer s3cre' } })
  t.is(wrong.status, 401)
  t.is(wrong.headers.get('www-authenticate'), 'Bearer')
  t.is((await fetch(`${url}/v1/models`, { headers: { authorization: 'Bearer s3cret' } })).status, 200)
  t.is((await fetch(`${url}/healthz`)).status, 200)
  t.is((await fetch(`${url}/`)).status, 200)
  const allowed = await fetch(`${url}/healthz`, { headers: { origin: 'https://app.example' } })
  t.is(allowed.headers.get('access-control-allow-origin'), 'https://app.example')
  const other = await fetch(`${url}/healthz`, { headers: { origin: 'https://evil.example' } })
  t.is(other.headers.get('access-control-allow-origin'), null)

  const { url: plain } = await startServer(t, pipe)
  t.is((await fetch(`${plain}/healthz`, { headers: { origin: 'https://app.example' } })).headers.get('access-control-allow-origin'), null)
})

test.serial('close() lets the running job finish, then stops', async (t) => {
  const { app, url } = await startServer(t, pipe)
  // 500 steps of the tiny model take about a second: at 20 (≈ 50 ms on an AVX-512 CPU) the job could start and finish
  // between two 100 ms polls, so `running === 1` was never seen (a CI failure), and close() met no running job.
  const pending = postJson(`${url}/v1/images/generations`, { prompt: 'last one', ...TINY, steps: 500 })
  await eventually(async () => (await (await fetch(`${url}/healthz`)).json()).running === 1)
  await app.close()
  const res = await pending
  t.is(res.status, 200)
  t.is((await res.json()).data.length, 1)
})
