// `sana serve` and `sana worker` as commands: a real process on a free port, usage errors, graceful SIGTERM.
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import test from 'ava'
import { REPO, SANA_TINY } from './helpers/paths.mjs'
import { startProcess, stop, waitForOutput } from './helpers/processes.mjs'
import { eventually, pngSize, postJson, TINY } from './helpers/server.mjs'

const CLI = join(REPO, 'dist', 'cli.js')
const sana = (...args) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' })

test('sana serve: listens on 127.0.0.1 by default, serves, and exits 0 on SIGTERM after the running job', async (t) => {
  const server = startProcess(process.execPath, [CLI, 'serve', '--model', SANA_TINY, '--port', '0', '--api-key', 'cli-key'])
  t.teardown(() => stop(server))
  await waitForOutput(server, /listening on http:\/\/127\.0\.0\.1:\d+ \(API key required\)/)
  const url = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(server.err)[1]
  const auth = { authorization: 'Bearer cli-key' }
  // 500 tiny steps (about a second): 10 could start and finish between two of eventually's 100 ms polls.
  const pending = postJson(`${url}/v1/images/generations`, { prompt: 'a fox', ...TINY, steps: 500 }, auth)
  await eventually(async () => (await (await fetch(`${url}/healthz`)).json()).running === 1)
  server.kill('SIGTERM')
  const res = await pending
  t.is(res.status, 200)
  t.deepEqual(pngSize(Buffer.from((await res.json()).data[0].b64_json, 'base64')), { width: 256, height: 256 })
  t.deepEqual(await server.exited, { code: 0, signal: null })
})

test('sana serve / worker usage errors exit 2 and name the option', (t) => {
  const noQueue = sana('worker', '--model', SANA_TINY)
  t.is(noQueue.status, 2)
  t.regex(noQueue.stderr, /missing --queue redis:\/\/host:port/)
  const badQueue = sana('serve', '--queue', 'http://localhost:6379')
  t.is(badQueue.status, 2)
  t.regex(badQueue.stderr, /Expected a redis:\/\/ URL for --queue but received "http:\/\/localhost:6379"/)
  const badPort = sana('serve', '--port', 'eighty')
  t.is(badPort.status, 2)
  t.regex(badPort.stderr, /--port/)
})

test('sana --help lists serve and worker; their --help shows the options', (t) => {
  t.regex(sana('--help').stdout, /serve\s+Serve an OpenAI-compatible images API/)
  const help = sana('serve', '--help').stdout
  for (const flag of ['--model', '--host', '--port', '--api-key', '--cors', '--max-queue', '--timeout', '--queue', '--device', '--dtype', '--variant', '--offline']) {
    t.true(help.includes(flag), flag)
  }
  t.regex(sana('worker', '--help').stdout, /--lock-duration/)
})
