// Packaging (issue 17, item 12): `scripts/pack.mjs` builds the tarballs as published — the main package without a
// binary, listing the platform packages as optionalDependencies — and they install into a fresh folder offline
// (`npm i --offline`, from the npm cache) and run `sana info` and a tiny generate with no compiler on PATH.
import test from 'ava'
import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { REPO, SANA_TINY } from './helpers/paths.mjs'

const exec = promisify(execFile)
const PKG = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8'))
const LOCK = JSON.parse(readFileSync(join(REPO, 'package-lock.json'), 'utf8'))

function tempDir(t) {
  const dir = mkdtempSync(join(tmpdir(), 'sana-pack-test-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** A PATH holding only node, npm, npx and the few coreutils they call: no cc, cargo or rustc. */
async function bareBin(t) {
  const bin = tempDir(t)
  for (const cmd of ['node', 'npm', 'npx', 'sh', 'bash', 'env', 'uname', 'cat', 'ls', 'mkdir', 'rm', 'cp', 'mv', 'tar', 'gzip', 'dirname', 'basename', 'readlink']) {
    const { stdout } = await exec('sh', ['-c', `command -v ${cmd}`]).catch(() => ({ stdout: '' }))
    if (stdout.trim()) symlinkSync(stdout.trim(), join(bin, cmd))
  }
  return bin
}

/**
 * package.json + package-lock.json for a fresh app that depends on the package's runtime dependencies (sharp, the
 * server's fastify/bullmq/…) at the repository's locked versions, with registry URLs, so `npm ci --offline` takes
 * every tarball from the npm cache (filled by the repository's own `npm ci`).
 */
function writeDependenciesApp(dir) {
  const packages = {}
  const todo = Object.keys(PKG.dependencies).map((name) => `node_modules/${name}`)
  while (todo.length > 0) {
    const key = todo.pop()
    const entry = LOCK.packages[key]
    if (!entry || packages[key]) continue
    const name = key.slice(key.lastIndexOf('node_modules/') + 'node_modules/'.length)
    packages[key] = { resolved: `https://registry.npmjs.org/${name}/-/${name.split('/').pop()}-${entry.version}.tgz`, ...entry }
    for (const dep of Object.keys({ ...entry.dependencies, ...entry.optionalDependencies })) {
      todo.push(LOCK.packages[`${key}/node_modules/${dep}`] ? `${key}/node_modules/${dep}` : `node_modules/${dep}`)
    }
  }
  const dependencies = PKG.dependencies
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'app', private: true, dependencies }))
  const lock = { name: 'app', lockfileVersion: 3, requires: true, packages: { '': { name: 'app', dependencies }, ...packages } }
  writeFileSync(join(dir, 'package-lock.json'), JSON.stringify(lock))
}

const tarList = async (tgz) => (await exec('tar', ['-tzf', tgz])).stdout.split('\n').filter(Boolean)
const tarJson = async (tgz, file) => JSON.parse((await exec('tar', ['-xzOf', tgz, file])).stdout)

test('pack: the main tarball has no binary and lists the platform packages; they install offline and run without a compiler', async (t) => {
  const out = tempDir(t)
  const { stdout, stderr } = await exec(process.execPath, [join(REPO, 'scripts', 'pack.mjs'), '--out', out], { cwd: REPO })
  const tarballs = stdout.trim().split('\n')
  const main = tarballs.find((f) => f.endsWith(`/sana-node-${PKG.version}.tgz`))
  const cpu = tarballs.find((f) => f.endsWith(`/sana-node-linux-x64-gnu-${PKG.version}.tgz`))
  t.truthy(main, stdout)
  t.truthy(cpu, stdout)
  const cudaBuilt = existsSync(join(REPO, 'sana.linux-x64-gnu-cuda.node'))
  if (!cudaBuilt) t.regex(stderr, /skipping sana-node-linux-x64-gnu-cuda: sana\.linux-x64-gnu-cuda\.node is not built/)
  t.is(tarballs.length, cudaBuilt ? 3 : 2)

  // 1. Layout.
  const mainFiles = await tarList(main)
  t.false(mainFiles.some((f) => f.endsWith('.node')), 'no binary in the main package')
  for (const f of ['package/LICENSE', 'package/README.md', 'package/index.js', 'package/dist/index.js', 'package/dist/cli.js']) t.true(mainFiles.includes(f), f)
  const mainPkg = await tarJson(main, 'package/package.json')
  t.deepEqual(mainPkg.optionalDependencies, { 'sana-node-linux-x64-gnu': PKG.version, 'sana-node-linux-x64-gnu-cuda': PKG.version })
  t.is(mainPkg.devDependencies, undefined)
  t.deepEqual(mainPkg.dependencies, PKG.dependencies)
  t.deepEqual((await tarList(cpu)).sort(), ['package/LICENSE', 'package/README.md', 'package/package.json', 'package/sana.linux-x64-gnu.node'])
  const cpuPkg = await tarJson(cpu, 'package/package.json')
  t.like(cpuPkg, { name: 'sana-node-linux-x64-gnu', version: PKG.version, os: ['linux'], cpu: ['x64'], libc: ['glibc'], main: 'sana.linux-x64-gnu.node' })

  // 2. A fresh folder, offline, with no compiler reachable.
  const bin = await bareBin(t)
  const env = { ...process.env, PATH: bin, HF_HUB_OFFLINE: '1', HF_HUB_CACHE: join(out, 'hf-cache'), npm_config_audit: 'false', npm_config_fund: 'false' }
  for (const cc of ['cc', 'gcc', 'cargo', 'rustc']) await t.throwsAsync(exec('sh', ['-c', `command -v ${cc}`], { env }), undefined, `${cc} must not be on PATH`)
  const app = tempDir(t)
  writeDependenciesApp(app)
  await exec('npm', ['ci', '--offline'], { cwd: app, env })
  await exec('npm', ['i', '--offline', main, cpu], { cwd: app, env })
  t.true(existsSync(join(app, 'node_modules', 'sana-node-linux-x64-gnu', 'sana.linux-x64-gnu.node')))

  const info = await exec('npx', ['sana', 'info'], { cwd: app, env })
  t.regex(info.stdout, new RegExp(`^sana-node\\s+${PKG.version.replace(/\./g, '\\.')}$`, 'm'))
  t.regex(info.stdout, /^devices\s+cpu/m)

  // 3. A tiny generate from a local folder: byte-identical to the repository's own CLI.
  const args = ['generate', 'a red fox in snow', '--model', SANA_TINY, '--width', '256', '--height', '256', '--no-binning', '--steps', '1', '--seed', '7']
  await exec('npx', ['sana', ...args, '-o', join(app, 'out.png')], { cwd: app, env })
  await exec(process.execPath, [join(REPO, 'dist', 'cli.js'), ...args, '-o', join(out, 'ref.png')], { cwd: REPO, env: { ...process.env, HF_HUB_OFFLINE: '1' } })
  t.deepEqual(readFileSync(join(app, 'out.png')), readFileSync(join(out, 'ref.png')))
})
