// Scale-out: `sana serve --queue` in front of a real redis-server and two `sana worker` processes on the tiny
// model. 20 jobs, one worker killed mid-job: every job completes, exactly once.
import { join } from 'node:path'
import test from 'ava'
import { createServer, redisRunner } from '../dist/server/index.js'
import { REPO, SANA_TINY } from './helpers/paths.mjs'
import { findBinary, freePort, startProcess, stop, waitForOutput } from './helpers/processes.mjs'
import { eventually, pngSize, postJson, sseEvents, TINY } from './helpers/server.mjs'

const REDIS = findBinary('redis-server')
const CLI = join(REPO, 'dist', 'cli.js')
const maybe = REDIS ? test.serial : test.skip
if (!REDIS) console.warn('server-redis.spec.mjs: SKIPPED, redis-server not found on PATH (.ci/run installs it: apt-get install redis-server)')

async function startRedis(t) {
  const port = await freePort()
  const redis = startProcess(REDIS, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'])
  t.teardown(() => stop(redis))
  await waitForOutput(redis, /Ready to accept connections/)
  return `redis://127.0.0.1:${port}`
}

function startWorker(t, queue, onLine) {
  // A 1 s lock: a killed worker's job moves to the other one within a few seconds.
  const w = startProcess(process.execPath, [CLI, 'worker', '--queue', queue, '--model', SANA_TINY, '--lock-duration', '1000'], { onLine })
  t.teardown(() => stop(w))
  return w
}

async function startQueueServer(t, queue) {
  const runner = await redisRunner({ url: queue })
  const app = await createServer({ runner, limits: () => runner.limits(), concurrency: 32, maxWaiting: 0 })
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  t.teardown(() => app.close())
  return url
}

maybe('20 jobs on two workers, one killed mid-job: each job completes exactly once', async (t) => {
  const queue = await startRedis(t)
  const completed = []
  let killed
  const started = {}
  const onLine = (name) => (line) => {
    const [what, id] = line.split(' ')
    if (what === 'completed') completed.push({ id, by: name })
    if (what === 'started') started[name] = id
    // Kill worker a while it runs its second job (after it has completed one).
    if (what === 'started' && name === 'a' && !killed && completed.some((c) => c.by === 'a')) {
      killed = id
      workers.a.kill('SIGKILL')
    }
  }
  const workers = { a: startWorker(t, queue, onLine('a')), b: startWorker(t, queue, onLine('b')) }
  await Promise.all(Object.values(workers).map((w) => waitForOutput(w, /waiting for jobs/)))
  const url = await startQueueServer(t, queue)

  const responses = await Promise.all(
    Array.from({ length: 20 }, (_, i) => postJson(`${url}/v1/images/generations`, { prompt: `fox ${i}`, ...TINY, steps: 10, seed: i })),
  )
  t.truthy(killed, 'worker a was killed mid-job')
  t.deepEqual((await workers.a.exited).signal, 'SIGKILL')
  const images = []
  for (const res of responses) {
    t.is(res.status, 200)
    const body = await res.json()
    t.deepEqual(pngSize(Buffer.from(body.data[0].b64_json, 'base64')), { width: 256, height: 256 })
    images.push(body.data[0].b64_json)
  }
  t.is(new Set(images).size, 20, 'seeds 0..19 gave 20 different images (no result handed to the wrong job)')
  const ids = completed.map((c) => c.id)
  t.is(ids.length, 20, 'completions reported by the workers')
  t.is(new Set(ids).size, 20, 'no job completed twice')
  t.is(completed.find((c) => c.id === killed)?.by, 'b', "the killed worker's job was finished by the other")
})

maybe('progress streams back from a worker through the queue; DELETE cancels a job running on a worker', async (t) => {
  const queue = await startRedis(t)
  const w = startWorker(t, queue)
  await waitForOutput(w, /waiting for jobs/)
  const url = await startQueueServer(t, queue)

  const res = await postJson(`${url}/api/generate`, { prompt: 'a remote fox', ...TINY, steps: 4, seed: 1 })
  const seen = []
  for await (const ev of sseEvents(res)) seen.push(ev)
  t.deepEqual(seen.filter((e) => e.event === 'step').map((e) => e.data.step), [0, 1, 2, 3])
  t.deepEqual(pngSize(Buffer.from(seen.at(-1).data.images[0], 'base64')), { width: 256, height: 256 })
  t.is((await (await fetch(`${url}/v1/models`)).json()).data[0].id, 'sana-tiny')

  const long = await postJson(`${url}/api/generate`, { prompt: 'a slow fox', ...TINY, steps: 1000 })
  const events = sseEvents(long)
  let id
  for (;;) {
    const { value } = await events.next()
    if (value.event === 'job') id = value.data.id
    if (value.event === 'step') break
  }
  await fetch(`${url}/api/jobs/${id}`, { method: 'DELETE' })
  let last
  for (let r = await events.next(); !r.done; r = await events.next()) last = r.value
  t.is(last.event, 'error')
  t.is(last.data.error.code, 'ABORT_ERR')
  // The worker stays up and takes the next job.
  const after = await postJson(`${url}/v1/images/generations`, { prompt: 'next', ...TINY })
  t.is(after.status, 200)
  await eventually(async () => /completed/.test(w.out))
})
