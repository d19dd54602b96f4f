// Child processes for the scale-out and browser tests: find a system binary, a free loopback port, wait for a
// line of output, and stop everything when the test ends.
import { spawn, spawnSync } from 'node:child_process'
import { createServer } from 'node:net'

/** The first of `names` on PATH, or undefined (the test then skips, saying what is missing). */
export function findBinary(...names) {
  for (const name of names) {
    const r = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' })
    if (r.status === 0 && r.stdout.trim()) return r.stdout.trim()
  }
  return undefined
}

/** A TCP port free on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

/**
 * Spawn `cmd args`, keeping its output in `proc.out` / `proc.err` and calling `onLine(line, stream)` per line.
 * `stop(proc)` (also run by `stopAll`) sends SIGTERM, then SIGKILL after 5 s.
 */
export function startProcess(cmd, args, { onLine, env } = {}) {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
  proc.out = ''
  proc.err = ''
  proc.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })))
  for (const [stream, key] of [[proc.stdout, 'out'], [proc.stderr, 'err']]) {
    let partial = ''
    stream.setEncoding('utf8')
    stream.on('data', (chunk) => {
      proc[key] += chunk
      partial += chunk
      const lines = partial.split('\n')
      partial = lines.pop()
      for (const line of lines) onLine?.(line, key)
    })
  }
  return proc
}

/** Resolve once `proc`'s output so far matches `pattern`; reject if it exits first or after `ms`. */
export function waitForOutput(proc, pattern, ms = 120_000) {
  return new Promise((resolve, reject) => {
    const check = () => pattern.test(proc.out + proc.err)
    if (check()) return resolve()
    const timer = setTimeout(() => done(new Error(`no ${pattern} from ${proc.spawnargs.join(' ')} in ${ms} ms:\n${proc.err}`)), ms)
    const onData = () => check() && done()
    const onExit = () => done(new Error(`${proc.spawnargs[0]} exited before printing ${pattern}:\n${proc.err}`))
    const done = (err) => {
      clearTimeout(timer)
      proc.stdout.off('data', onData)
      proc.stderr.off('data', onData)
      proc.off('exit', onExit)
      err ? reject(err) : resolve()
    }
    proc.stdout.on('data', onData)
    proc.stderr.on('data', onData)
    proc.on('exit', onExit)
  })
}

/** Stop a child: SIGTERM, SIGKILL if it has not exited 5 s later. */
export async function stop(proc) {
  if (proc.exitCode !== null || proc.signalCode !== null) return
  proc.kill('SIGTERM')
  const timer = setTimeout(() => proc.kill('SIGKILL'), 5000)
  await proc.exited
  clearTimeout(timer)
}
