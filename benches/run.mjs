// The benchmark harness (issue 8): per component and end to end, ours and (with --compare) PyTorch CPU fp32,
// at real Sana shapes with random weights written once into a cache folder.
//
//   npm run bench                      # full shapes, ours only (~14 min on 2 cores)
//   npm run bench -- --compare         # + PyTorch on the same weight files (needs benches/setup-torch.sh)
//   npm run bench -- --quick           # tiny shapes, seconds: checks the harness itself
//   npm run bench -- --only dit-600m   # rows whose model or description contains the text (a,b: any of them)
//   npm run bench -- --report benches/out/X.json   # (re)write the table of a saved, possibly stopped, run
//   --threads N (default 2) · --no-record (JSON only, no RESULTS.md) · SANA_BENCH_CACHE=/tmp/… for the weights
//   --rounds N (default 1): each row N times, ours and PyTorch alternating, times pooled (see report.mjs)
//
// Each measurement runs in its own process (benches/worker-ours.mjs, benches/worker_torch.py), so peak RSS
// is per row. Results: benches/out/<date>-<mode>.json, and a markdown table appended to benches/RESULTS.md.
import { spawn } from 'node:child_process'
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { loadavg } from 'node:os'
import { join } from 'node:path'
import { psnrOfFiles } from './report.mjs'
import { MODELS, PIPELINES, cacheDir, ensureModel, ensurePipeline, repo, rows as planRows } from './plan.mjs'
import { combineRounds, machineInfo, markdown, summarize } from './report.mjs'

const args = process.argv.slice(2)
// --help (or a flag this harness does not know) prints the usage above instead of starting a 14-minute run.
const TAKES_VALUE = ['--threads', '--only', '--report', '--rounds']
const KNOWN = [...TAKES_VALUE, '--quick', '--compare', '--no-record']
const unknown = args.filter((a, i) => a.startsWith('-') && !KNOWN.includes(a) && !TAKES_VALUE.includes(args[i - 1]))
if (unknown.length > 0) {
  const usage = readFileSync(new URL(import.meta.url), 'utf8').split('\n').filter((l) => l.startsWith('//   '))
  const bad = unknown.filter((a) => a !== '--help' && a !== '-h')
  if (bad.length > 0) console.error(`unknown option${bad.length > 1 ? 's' : ''}: ${bad.join(' ')}`)
  console.error(['usage (node benches/run.mjs or npm run bench --):', ...usage.map((l) => l.slice(2))].join('\n'))
  process.exit(bad.length > 0 ? 2 : 0)
}
const flag = (name) => args.includes(name)
const option = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback)
const mode = flag('--quick') ? 'quick' : 'full'
const compare = flag('--compare')
const threads = Number(option('--threads', 2))
const only = option('--only', null)
const rounds = Number(option('--rounds', 1))
if (!Number.isInteger(rounds) || rounds < 1) {
  console.error(`--rounds takes a whole number ≥ 1, received ${option('--rounds')}`)
  process.exit(2)
}
const python = join(repo, 'benches', '.venv', 'bin', 'python')

// ─── progress (stderr) ──────────────────────────────────────────────────────────────────────────────────

const started = Date.now()
const clock = () => {
  const s = Math.round((Date.now() - started) / 1000)
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`
}
const tty = process.stderr.isTTY
let statusShown = false
function status(line) {
  if (tty) {
    process.stderr.write(`\r\x1b[2K${line}`)
    statusShown = true
  } else {
    process.stderr.write(`${line}\n`)
  }
}
function log(line) {
  if (statusShown) process.stderr.write('\r\x1b[2K')
  statusShown = false
  process.stderr.write(`[${clock()}] ${line}\n`)
}

// ─── one measurement in a child process ─────────────────────────────────────────────────────────────────

function measure(impl, spec, label) {
  const [cmd, argv] = impl === 'ours'
    ? [process.execPath, [join(repo, 'benches', 'worker-ours.mjs'), JSON.stringify(spec)]]
    : [python, [join(repo, 'benches', 'worker_torch.py'), JSON.stringify(spec)]]
  const env = {
    ...process.env,
    RAYON_NUM_THREADS: String(threads),
    SANA_BENCH_THREADS: String(threads),
    OMP_NUM_THREADS: String(threads),
    MKL_NUM_THREADS: String(threads),
    TOKENIZERS_PARALLELISM: 'false',
    HF_HUB_OFFLINE: '1',
  }
  return new Promise((resolveRun) => {
    const child = spawn(cmd, argv, { cwd: repo, env, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let errText = ''
    let errBuf = ''
    const t0 = Date.now()
    const load0 = loadavg()[0]
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => {
      errBuf += d
      let nl
      while ((nl = errBuf.indexOf('\n')) >= 0) {
        const line = errBuf.slice(0, nl)
        errBuf = errBuf.slice(nl + 1)
        if (line.startsWith('progress ')) {
          const p = JSON.parse(line.slice(9))
          const what = p.phase === 'loaded' ? `loaded in ${p.loadS.toFixed(1)} s`
            : p.phase.endsWith('done') ? `${p.phase.replace('-done', '')} took ${p.s.toFixed(2)} s`
            : `${p.phase} ${p.i + 1}/${p.n} …`
          status(`[${clock()}] ${label} · ${impl}: ${what}`)
        } else {
          errText += `${line}\n`
        }
      }
    })
    child.on('close', (code, signal) => {
      const secs = (Date.now() - t0) / 1000
      const loadAvg = [load0, loadavg()[0]]
      const last = stdout.trim().split('\n').pop()
      if (code === 0 && last?.startsWith('{')) {
        resolveRun({ ...JSON.parse(last), wallS: secs, loadAvg })
      } else {
        const why = signal ? `killed by ${signal}` : `exit ${code}`
        resolveRun({ impl, error: `${why}: ${(errText || stdout).trim().split('\n').slice(-6).join(' | ')}`, wallS: secs, loadAvg })
      }
    })
  })
}

// ─── main ───────────────────────────────────────────────────────────────────────────────────────────────

function record(run) {
  const md = markdown(run)
  if (!flag('--no-record')) appendFileSync(join(repo, 'benches', 'RESULTS.md'), md)
  process.stdout.write(md)
}

async function main() {
  if (option('--report', null)) return record(JSON.parse(readFileSync(option('--report'), 'utf8')))
  if (!existsSync(join(repo, 'dist', 'index.js'))) throw new Error('dist/ is missing: run `npm run build` first')
  let torchNote = null
  if (compare && !existsSync(python)) {
    torchNote = 'PyTorch rows skipped: benches/.venv is missing (run `bash benches/setup-torch.sh`)'
    log(torchNote)
  }
  const runTorch = compare && !torchNote
  let todo = planRows(mode)
  // --only a,b: rows whose model or description (with its batch as `bN`) contains any of the texts.
  if (only) todo = todo.filter((r) => only.split(',').some((o) => `${r.model} ${r.what} b${r.batch}`.includes(o)))

  // 1. Random-weight folders (written once, reused while the config is unchanged).
  const modelDirs = {}
  const needed = new Set(todo.flatMap((r) => (PIPELINES[mode][r.model] ? Object.values(PIPELINES[mode][r.model]) : [r.model])))
  for (const name of needed) modelDirs[name] = ensureModel(name, MODELS[mode][name], log)
  for (const r of todo) {
    if (PIPELINES[mode][r.model]) modelDirs[r.model] ??= ensurePipeline(r.model, PIPELINES[mode][r.model], modelDirs)
  }
  log(`weights in ${cacheDir}; ${todo.length} rows × ${runTorch ? 'ours + PyTorch' : 'ours'}, ${threads} threads`)

  // 2. Measurements, one process each; the JSON is rewritten after every row, so a stopped run keeps its rows.
  const info = { ...machineInfo(threads), rounds }
  const outDir = join(repo, 'benches', 'out')
  mkdirSync(outDir, { recursive: true })
  const jsonPath = join(outDir, `${info.date.replace(/[:.]/g, '-')}-${mode}${compare ? '-compare' : ''}.json`)
  const results = []
  const save = () => writeFileSync(jsonPath, JSON.stringify({ mode, compare, torchNote, info, results }, null, 2))
  // Rows that differ only in `dtype` share inputs (seeded), so a half row's output is compared with its float32 twin.
  const outputFile = (r) => join(outDir, 'outputs', `${r.model}-${r.what}-b${r.batch}-${r.dtype ?? 'float32'}.f32`.replace(/[^\w.-]+/g, '_'))
  const twinOf = (r) => todo.find((o) => o !== r && o.model === r.model && o.what === r.what && o.batch === r.batch && (o.dtype ?? 'float32') === 'float32')
  const hasHalfTwin = (r) => todo.some((o) => (o.dtype ?? 'float32') !== 'float32' && twinOf(o) === r)
  for (const [i, r] of todo.entries()) {
    const spec = { ...r, dir: modelDirs[r.model], outputFile: hasHalfTwin(r) || (r.dtype ?? 'float32') !== 'float32' ? outputFile(r) : undefined }
    const label = `[${i + 1}/${todo.length}] ${r.model} ${r.what} b${r.batch}${r.dtype ? ` ${r.dtype}` : ''}`
    const twin = (r.dtype ?? 'float32') !== 'float32' ? twinOf(r) : undefined
    // A half row's PyTorch side is the float32 anchor its twin already measured: reused, not run twice.
    const twinRow = twin && !r.torchDtype ? results.find((x) => x.model === twin.model && x.what === twin.what && x.batch === twin.batch && !x.dtype) : undefined
    const torchHere = runTorch && r.torch !== false && !twinRow?.pytorch
    const [ours, torch] = [[], []]
    for (let k = 0; k < rounds; k++) {
      const tag = rounds > 1 ? ` (round ${k + 1}/${rounds})` : ''
      ours.push(await measure('ours', spec, label + tag))
      if (torchHere) torch.push(await measure('pytorch', spec, label + tag))
    }
    const row = { ...r, ours: combineRounds(ours) }
    if (twin && !row.ours.error) row.psnrDb = psnrOfFiles(spec.outputFile, outputFile(twin))
    if (runTorch && r.torch !== false) row.pytorch = twinRow?.pytorch ?? combineRounds(torch)
    const s = summarize(row)
    results.push(row)
    save()
    log(`${label}: ours ${s.ours}${runTorch ? ` · PyTorch ${s.pytorch} · ratio ${s.ratio}` : ''}`)
  }

  // 3. The markdown table, appended to RESULTS.md.
  info.loadAvg = machineInfo(threads).loadAvg
  save()
  record({ mode, compare, torchNote, info, results })
  log(`done in ${clock()}; JSON: ${jsonPath}${flag('--no-record') ? '' : '; table appended to benches/RESULTS.md'}`)
  if (results.some((r) => r.ours.error || r.pytorch?.error)) process.exitCode = 1
}

main().catch((e) => {
  log(`error: ${e.stack ?? e}`)
  process.exit(1)
})
