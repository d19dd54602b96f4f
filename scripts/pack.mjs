#!/usr/bin/env node
// Build the npm tarballs as they would be published (napi-rs / node-llama-cpp layout):
//
//   sana-node-<v>.tgz                     JS only (dist/, the napi loader index.js, types, README, LICENSE);
//                                         optionalDependencies on the two platform packages, no binary
//   sana-node-linux-x64-gnu-<v>.tgz       the CPU binary  (os linux, cpu x64, libc glibc)
//   sana-node-linux-x64-gnu-cuda-<v>.tgz  the CUDA binary (same platform; skipped, with a message, when not built)
//
// The repository's own package.json is left as it is (installable from a clone, with the binary beside it).
// Usage: node scripts/pack.mjs [--out <folder>]   (default: pack/). Build first: npm run build [&& npm run build:cuda].
// Prints one line per tarball written.
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)))
const PLATFORMS = [
  { dir: 'npm/linux-x64-gnu', binary: 'sana.linux-x64-gnu.node', build: 'npm run build' },
  { dir: 'npm/linux-x64-gnu-cuda', binary: 'sana.linux-x64-gnu-cuda.node', build: 'npm run build:cuda' },
]

const outFlag = process.argv.indexOf('--out')
const out = resolve(outFlag >= 0 ? process.argv[outFlag + 1] : join(ROOT, 'pack'))
mkdirSync(out, { recursive: true })
const root = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'))

/** `npm pack` a staged folder into `out`; returns the tarball's path. */
function pack(stage) {
  const [{ filename }] = JSON.parse(execFileSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', out], { cwd: stage, encoding: 'utf8' }))
  rmSync(stage, { recursive: true, force: true })
  const file = join(out, filename)
  console.log(file)
  return file
}

function stage(files, pkg) {
  const dir = mkdtempSync(join(tmpdir(), 'sana-pack-'))
  for (const [from, to] of files) cpSync(join(ROOT, from), join(dir, to), { recursive: true })
  writeFileSync(join(dir, 'package.json'), JSON.stringify(pkg, null, 2) + '\n')
  return dir
}

// 1. Platform packages: their npm/<platform>/package.json, at the main package's version, plus the binary.
const optionalDependencies = {}
for (const p of PLATFORMS) {
  const pkg = { ...JSON.parse(readFileSync(join(ROOT, p.dir, 'package.json'), 'utf8')), version: root.version }
  optionalDependencies[pkg.name] = root.version
  if (!existsSync(join(ROOT, p.binary))) {
    console.error(`skipping ${pkg.name}: ${p.binary} is not built (${p.build})`)
    continue
  }
  pack(stage([[p.binary, p.binary], [join(p.dir, 'README.md'), 'README.md'], ['LICENSE', 'LICENSE']], pkg))
}

// 2. The main package: no binary, no build tooling; the platform packages as optional dependencies (npm installs
//    the one whose os/cpu/libc match; napi's index.js loads it).
const { devDependencies: _dev, scripts: _scripts, ...main } = root
main.files = ['dist', 'index.js', 'index.d.ts']
main.optionalDependencies = optionalDependencies
pack(stage([['dist', 'dist'], ['index.js', 'index.js'], ['index.d.ts', 'index.d.ts'], ['README.md', 'README.md'], ['LICENSE', 'LICENSE']], main))
