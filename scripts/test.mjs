#!/usr/bin/env node
// `npm test`: the JS suite (ava, against the built package) and the Rust suite (cargo test --release
// --workspace: sana-core's unit and fixture tests), then one summary line "N passed, N failed" (, N skipped).
// Build first: `npm run build` (CI: .ci/run does both).
import { execFileSync, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'

function run(cmd, args, parse) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: process.env })
    let text = ''
    const tee = (dst) => (chunk) => {
      text += chunk
      dst.write(chunk)
    }
    child.stdout.on('data', tee(process.stdout))
    child.stderr.on('data', tee(process.stderr))
    child.on('close', (code) => resolve({ code, ...parse(text) }))
  })
}

// ava --tap prints "# pass N", "# skip N", "# fail N".
const tapCount = (text, key) => Number(new RegExp(`^# ${key} (\\d+)`, 'm').exec(text)?.[1] ?? 0)
// cargo prints one "test result: ok. N passed; M failed; K ignored" per test binary.
function cargoCounts(text) {
  let passed = 0, failed = 0, skipped = 0
  for (const m of text.matchAll(/test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored/g)) {
    passed += Number(m[1]); failed += Number(m[2]); skipped += Number(m[3])
  }
  return { passed, failed, skipped }
}

if (!existsSync(new URL('../dist/index.js', import.meta.url))) {
  console.error('dist/ is missing: run `npm run build` first')
  process.exit(1)
}

const js = await run('npx', ['ava', '--tap'], (t) => ({
  passed: tapCount(t, 'pass'), failed: tapCount(t, 'fail'), skipped: tapCount(t, 'skip'),
}))
// `napi build` always passes --target <host> (artifacts under target/<host>/) and resolves features for the
// whole binding; testing the workspace with the same --target reuses that build instead of compiling candle
// a second time (sana-node itself has no tests: `test = false`).
const host = /^host: (\S+)$/m.exec(execFileSync('rustc', ['-vV'], { encoding: 'utf8' }))?.[1]
const rust = await run('cargo', ['test', '--release', '--workspace', ...(host ? ['--target', host] : [])], cargoCounts)

const passed = js.passed + rust.passed
// A runner that crashed without reporting counts as one failure.
const failed = js.failed + rust.failed + (js.code && !js.failed ? 1 : 0) + (rust.code && !rust.failed ? 1 : 0)
const skipped = js.skipped + rust.skipped
console.log(`\nava: ${js.passed} passed, ${js.failed} failed; cargo: ${rust.passed} passed, ${rust.failed} failed`)
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`)
process.exit(failed > 0 ? 1 : 0)
