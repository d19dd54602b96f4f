#!/usr/bin/env node
// Bounded load test of `sana serve` on loopback (issue 16): the tiny fixture model, autocannon for 60 s at
// concurrency 8 on POST /v1/images/generations (256², 2 steps). Reports requests by status, errors and
// timeouts (a lost or hung request shows as one), the server's own job counts, and its RSS over the run.
// Usage: node benches/serve-load.mjs [--duration 60] [--connections 8] [--max-queue 8]
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { loadavg } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import autocannon from 'autocannon'
import { REPO, SANA_TINY } from '../__test__/helpers/paths.mjs'
import { freePort, waitForOutput } from '../__test__/helpers/processes.mjs'

const { values } = parseArgs({ options: { duration: { type: 'string', default: '60' }, connections: { type: 'string', default: '8' }, 'max-queue': { type: 'string', default: '8' } } })
const port = await freePort()
const server = spawn(process.execPath, [join(REPO, 'dist', 'cli.js'), 'serve', '--model', SANA_TINY, '--port', String(port), '--max-queue', values['max-queue']], { stdio: ['ignore', 'pipe', 'pipe'] })
server.out = ''
server.err = ''
server.stdout.on('data', (c) => (server.out += c))
server.stderr.on('data', (c) => (server.err += c))
server.exited = new Promise((r) => server.on('exit', r))
const rss = () => Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${server.pid}/status`, 'utf8'))[1]) / 1024
try {
  await waitForOutput(server, /listening on/)
  const url = `http://127.0.0.1:${port}`
  const body = JSON.stringify({ prompt: 'a red fox in snow', size: '256x256', resolution_binning: false, steps: 2 })
  const post = () => fetch(`${url}/v1/images/generations`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
  for (let i = 0; i < 3; i++) await post() // warm-up
  const samples = [rss()]
  const sampler = setInterval(() => samples.push(rss()), 5000)
  const load0 = loadavg()[0]
  const result = await autocannon({
    url: `${url}/v1/images/generations`,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
    connections: Number(values.connections),
    duration: Number(values.duration),
    timeout: 120, // seconds: a request still open after this counts as hung
  })
  clearInterval(sampler)
  samples.push(rss())
  const metrics = await (await fetch(`${url}/metrics`)).text()
  const metric = (re) => Number(re.exec(metrics)?.[1] ?? 0)
  const codes = Object.fromEntries(Object.entries(result.statusCodeStats).map(([k, v]) => [k, v.count]))
  const report = {
    duration_s: Number(values.duration),
    connections: Number(values.connections),
    maxQueue: Number(values['max-queue']),
    requests: result.requests.total,
    statusCodes: codes,
    errors: result.errors,
    timeouts: result.timeouts,
    reqPerSec: result.requests.average,
    latencyMs: { p50: result.latency.p50, p99: result.latency.p99, max: result.latency.max },
    jobsCompleted: metric(/^sana_jobs_total\{outcome="completed"\} (\d+)/m) - 3,
    jobsCancelled: metric(/^sana_jobs_total\{outcome="cancelled"\} (\d+)/m),
    jobsFailed: metric(/^sana_jobs_total\{outcome="failed"\} (\d+)/m),
    rssMiB: { afterWarmup: Math.round(samples[0]), max: Math.round(Math.max(...samples)), end: Math.round(samples.at(-1)) },
    loadAverage: { before: load0, after: loadavg()[0] },
  }
  console.log(JSON.stringify(report, null, 2))
} finally {
  server.kill('SIGTERM')
  await server.exited
}
