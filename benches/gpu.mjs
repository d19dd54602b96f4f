// The GPU benchmark (issue 7): random-weight Sana-600M at 1024² (32×32 latents), CFG, bf16 on CUDA —
// per-step latency (one DiT forward on 2·batch latents) and end-to-end latency / throughput of a
// 20-step generation at batch 1, 4 and 16, ours and (with --compare) diffusers on the same GPU and the
// same weight files.
//
//   npm run bench:gpu -- --compare          # needs the CUDA binary (npm run build:cuda) and a GPU
//   --batches 1,4,16 · --steps 20 · --dtype bfloat16 · --deadline S (per implementation, default 240)
//   --python PATH (default: benches/.venv/bin/python, else python3) · --no-record
//   --report benches/out/X.json              # (re)write the table of a saved run
//   --prepare                                 # only write the random-weight pipeline folder; print its path
//
// Weights: written once into $SANA_BENCH_CACHE/gpu-sana-600m by benches/gpu_weights.py (bf16 safetensors
// saved by diffusers/transformers from the real configs), so PyTorch with CUDA is needed for them too.
import { spawn, spawnSync } from 'node:child_process'
import { appendFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { MODELS, cacheDir, configJson, repo, writePipelineShell } from './plan.mjs'
import { machineInfo, median } from './report.mjs'

const args = process.argv.slice(2)
const flag = (name) => args.includes(name)
const option = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback)
const venvPython = join(repo, 'benches', '.venv', 'bin', 'python')
const python = option('--python', existsSync(venvPython) ? venvPython : 'python3')
const log = (line) => process.stderr.write(`${line}\n`)

/** The pipeline folder: configs of the real models, tokenizer and scheduler from the fixtures, random bf16 weights. */
function ensurePipeline() {
  const dir = join(cacheDir, 'gpu-sana-600m')
  const done = join(dir, '.complete')
  if (existsSync(done)) return dir
  rmSync(dir, { recursive: true, force: true })
  const parts = { transformer: 'dit-600m', vae: 'dcae-f32c32', text_encoder: 'gemma-2-2b' }
  for (const [slot, model] of Object.entries(parts)) {
    mkdirSync(join(dir, slot), { recursive: true })
    writeFileSync(join(dir, slot, 'config.json'), configJson(MODELS.full[model].config))
  }
  writePipelineShell(dir)
  log(`writing random bf16 weights into ${dir} …`)
  const r = spawnSync(python, [join(repo, 'benches', 'gpu_weights.py'), dir], { stdio: ['ignore', 'inherit', 'inherit'] })
  if (r.status !== 0) throw new Error(`gpu_weights.py failed (exit ${r.status}); it needs PyTorch, diffusers and transformers`)
  writeFileSync(done, '')
  return dir
}

/** One implementation's worker; resolves with its result JSON (or { error }). */
function measure(impl, spec) {
  const [cmd, argv] = impl === 'ours'
    ? [process.execPath, [join(repo, 'benches', 'gpu-worker-ours.mjs'), JSON.stringify(spec)]]
    : [python, [join(repo, 'benches', 'gpu_worker_torch.py'), JSON.stringify(spec)]]
  return new Promise((done) => {
    const child = spawn(cmd, argv, { cwd: repo, env: { ...process.env, HF_HUB_OFFLINE: '1', TOKENIZERS_PARALLELISM: 'false' }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let errText = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => {
      for (const line of String(d).split('\n')) {
        if (line.startsWith('progress ')) {
          const p = JSON.parse(line.slice(9))
          log(`  ${impl}: ${p.phase === 'loaded' ? `loaded in ${p.loadS.toFixed(1)} s` : `${p.what} ${p.phase} ${p.i + 1}/${p.n}`}`)
        } else if (line.trim()) {
          errText += `${line}\n`
        }
      }
    })
    // The deadline stops new batch sizes; this stops a batch that runs far past it (its rows so far are kept).
    const killer = setTimeout(() => child.kill('SIGKILL'), (spec.deadlineS + 90) * 1000)
    child.on('close', (code, signal) => {
      clearTimeout(killer)
      const last = stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop()
      const why = `${signal ? `killed (${signal}) at the time limit` : `exit ${code}`}: ${(errText || stdout).trim().split('\n').slice(-8).join(' | ')}`
      if (code === 0 && last) done(JSON.parse(last))
      else if (last) done({ ...JSON.parse(last), error: why })
      else done({ impl, error: why })
    })
  })
}

// ─── report ─────────────────────────────────────────────────────────────────────────────────────────────

const ms = (s) => (Number.isFinite(s) ? `${(s * 1000).toFixed(s < 1 ? 1 : 0)} ms` : '—')
const sec = (s) => (Number.isFinite(s) ? `${s.toFixed(2)} s` : '—')
const cell = (times, fmt) => (times?.length ? `${fmt(median(times))} (${times.length})` : '—')
const ratio = (a, b) => (a?.length && b?.length ? (median(a) / median(b)).toFixed(2) : '—')

export function markdown({ info, spec, ours, pytorch, note }) {
  const head = `\n## ${info.date.slice(0, 16).replace('T', ' ')} UTC · GPU · ${info.commit} (${info.branch})\n\n` +
    `${pytorch?.gpu ?? info.gpu ?? 'GPU ?'}; host ${info.cpu}, ${info.cores} cores; Node ${info.node}` +
    (pytorch?.versions ? `; PyTorch ${pytorch.versions.torch}, diffusers ${pytorch.versions.diffusers}, transformers ${pytorch.versions.transformers}` : '') +
    `.\n\nRandom-weight Sana-600M (Gemma-2-2B, DC-AE f32c32), ${spec.size}², ${spec.dtype}, CFG 4.5, ${spec.steps} steps; ` +
    'time = median (runs); a step = one DiT forward on 2·batch latents, waited for on the GPU; end to end = ' +
    'prompt encoding + steps + VAE decode + conversion to 8-bit RGB; img/s = batch / end-to-end time.\n'
  const lines = [
    '| batch | ours step | PyTorch step | step ratio | ours end to end | PyTorch end to end | e2e ratio | ours img/s | PyTorch img/s |',
    '|---|---|---|---|---|---|---|---|---|',
  ]
  for (const b of spec.batches) {
    const find = (r, k) => r?.[k]?.find((x) => x.batch === b)?.timesS
    const [od, pd, oe, pe] = [find(ours, 'dit'), find(pytorch, 'dit'), find(ours, 'e2e'), find(pytorch, 'e2e')]
    const ips = (t) => (t?.length ? (b / median(t)).toFixed(2) : '—')
    lines.push(`| ${b} | ${cell(od, ms)} | ${cell(pd, ms)} | ${ratio(od, pd)} | ${cell(oe, sec)} | ${cell(pe, sec)} | ${ratio(oe, pe)} | ${ips(oe)} | ${ips(pe)} |`)
  }
  const notes = []
  for (const r of [ours, pytorch].filter(Boolean)) {
    if (r.error) notes.push(`- ${r.impl}: failed — ${r.error}`)
    else notes.push(`- ${r.impl}: load ${sec(r.loadS)}${r.peakGpuMemGiB ? `, peak GPU memory ${r.peakGpuMemGiB.toFixed(1)} GiB` : ''}${r.skipped?.length ? `; skipped: ${r.skipped.join('; ')}` : ''}`)
  }
  if (note) notes.push(`- ${note}`)
  return `${head}\n${lines.join('\n')}\n\n${notes.join('\n')}\n`
}

async function main() {
  const report = option('--report', null)
  if (report) {
    process.stdout.write(markdown(JSON.parse(readFileSync(report, 'utf8'))))
    return
  }
  const spec = {
    device: 'cuda', dtype: option('--dtype', 'bfloat16'), size: 1024, steps: Number(option('--steps', 20)),
    batches: option('--batches', '1,4,16').split(',').map(Number), deadlineS: Number(option('--deadline', 240)),
    dit: { warmup: 2, runs: 10, budgetS: 5 }, e2e: { warmup: 1, runs: 3, budgetS: 20 },
  }
  spec.dir = ensurePipeline()
  if (flag('--prepare')) return console.log(spec.dir) // weights only (for scripts/cuda-repeatability.mjs)
  const info = machineInfo(null)
  const gpu = spawnSync('nvidia-smi', ['--query-gpu=name,driver_version', '--format=csv,noheader'], { encoding: 'utf8' })
  info.gpu = gpu.status === 0 ? gpu.stdout.trim() : undefined
  const run = { info, spec }
  const outDir = join(repo, 'benches', 'out')
  mkdirSync(outDir, { recursive: true })
  const jsonPath = join(outDir, `${info.date.replace(/[:.]/g, '-')}-gpu.json`)
  const save = () => writeFileSync(jsonPath, JSON.stringify(run, null, 2))
  log('ours …')
  run.ours = await measure('ours', spec)
  save()
  if (flag('--compare')) {
    log('PyTorch …')
    run.pytorch = await measure('pytorch', spec)
    save()
  }
  const md = markdown(run)
  if (!flag('--no-record')) appendFileSync(join(repo, 'benches', 'RESULTS.md'), md)
  process.stdout.write(md)
  log(`JSON: ${jsonPath}`)
  if (run.ours.error || run.pytorch?.error) process.exitCode = 1
}

main().catch((e) => {
  log(`error: ${e.stack ?? e}`)
  process.exit(1)
})
