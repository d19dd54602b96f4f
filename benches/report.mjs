// Summaries of the measurements, machine info, and the markdown table appended to benches/RESULTS.md.
import { execSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { cpus, loadavg, totalmem } from 'node:os'
import { join } from 'node:path'
import { repo } from './plan.mjs'

/** Our CPU GEMM kernel on this machine (`cpuGemmKernel()`): it decides what bf16 weights compute in. */
function cpuGemmKernel() {
  try {
    return createRequire(import.meta.url)(join(repo, 'dist', 'index.js')).cpuGemmKernel()
  } catch {
    return '?'
  }
}

const sh = (cmd) => {
  try {
    return execSync(cmd, { cwd: repo, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
  } catch {
    return '?'
  }
}

export function machineInfo(threads) {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8')
  return {
    date: new Date().toISOString(),
    commit: sh('git rev-parse --short HEAD') + (sh('git status --porcelain --untracked-files=no') ? ' (+ uncommitted changes)' : ''),
    branch: sh('git rev-parse --abbrev-ref HEAD'),
    cpu: /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1] ?? cpus()[0]?.model ?? '?',
    cores: cpus().length,
    memGiB: Math.round(totalmem() / 2 ** 30),
    threads,
    node: process.version,
    loadAvg: loadavg().map((x) => x.toFixed(2)).join(' '),
    cpuGemm: cpuGemmKernel(),
  }
}

/**
 * One side's result from its `--rounds` measurements (fresh processes, alternating with the other side's):
 * the timed runs of every round together (so the row's median is over all of them), the largest peak RSS,
 * the median load time, the load average from the first round's start to the last round's end. A failed
 * round fails the whole (its error is kept); a single round is returned as it is.
 */
export function combineRounds(rounds) {
  if (rounds.length === 1) return rounds[0]
  const failed = rounds.find((r) => r.error)
  if (failed) return { ...failed, error: `round ${rounds.indexOf(failed) + 1} of ${rounds.length}: ${failed.error}` }
  return {
    ...rounds.at(-1),
    rounds: rounds.length,
    timesS: rounds.flatMap((r) => r.timesS),
    stepS: rounds.flatMap((r) => r.stepS ?? []),
    finite: rounds.every((r) => r.finite),
    peakRssMb: Math.max(...rounds.map((r) => r.peakRssMb)),
    loadS: median(rounds.map((r) => r.loadS)),
    wallS: rounds.reduce((a, r) => a + (r.wallS ?? 0), 0),
    loadAvg: [rounds[0].loadAvg?.[0], rounds.at(-1).loadAvg?.[1]],
  }
}

export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

/** Per-step time of a pipeline run: steps after the first (PyTorch's first interval includes prompt encoding). */
function stepSeconds(res) {
  const later = res.stepS.flatMap((steps) => (res.impl === 'pytorch' ? steps.slice(1) : steps))
  return later.length ? median(later) : NaN
}

/** Numbers of one implementation's result: median, runs, images/s, peak RSS (and pipeline extrapolation). */
export function stats(row, res) {
  if (!res || res.error) return null
  const med = median(res.timesS)
  const out = { median: med, runs: res.timesS.length, min: Math.min(...res.timesS), imagesPerS: row.batch / med, peakRssMb: res.peakRssMb }
  if (row.kind === 'pipeline') {
    out.stepS = stepSeconds(res)
    out.est20S = med + (20 - row.steps) * out.stepS
    out.imagesPerS = row.batch / out.est20S
  }
  return out
}

const fmtS = (s) => (s >= 100 ? s.toFixed(0) : s >= 10 ? s.toFixed(1) : s.toFixed(2)) + ' s'
const fmtRate = (r) => (r >= 1 ? r.toFixed(2) : r >= 0.01 ? r.toFixed(3) : r.toExponential(1))
const fmtMb = (mb) => (mb >= 1024 ? `${(mb / 1024).toFixed(1)} GiB` : `${mb.toFixed(0)} MiB`)

function cell(row, res) {
  if (!res) return ['–', '–', '–']
  if (res.error) return ['failed', '–', '–']
  const s = stats(row, res)
  const time = `${fmtS(s.median)} (${s.runs})` + (row.kind === 'pipeline' ? `; step ${fmtS(s.stepS)}; 20 steps ≈ ${fmtS(s.est20S)}` : '')
  return [time + (res.finite ? '' : ' **non-finite**'), fmtRate(s.imagesPerS), fmtMb(s.peakRssMb)]
}

/** One-line summary for the progress log. */
export function summarize(row) {
  const one = (res) => (!res ? '–' : res.error ? `failed (${res.error})` : `${fmtS(stats(row, res).median)} × ${res.timesS.length}, peak ${fmtMb(res.peakRssMb)}`)
  return { ours: one(row.ours), pytorch: one(row.pytorch), ratio: ratio(row) }
}

function ratio(row) {
  const a = stats(row, row.ours)
  const b = stats(row, row.pytorch)
  if (!a || !b) return '–'
  return (row.kind === 'pipeline' ? a.est20S / b.est20S : a.median / b.median).toFixed(2)
}

const loadTime = (res) => (res?.loadS === undefined ? '–' : fmtS(res.loadS))
const load = (res) => (res?.loadAvg ? res.loadAvg.map((x) => x.toFixed(1)).join('→') : '–')

export function markdown({ mode, compare, torchNote, info, results }) {
  const torch = results.map((r) => r.pytorch).find((r) => r?.versions)
  const lines = [
    '',
    `## ${info.date.slice(0, 16).replace('T', ' ')} UTC · ${mode}${compare ? ' · compare' : ''} · ${info.commit} (${info.branch})`,
    '',
    `${info.cpu}, ${info.cores} cores, ${info.memGiB} GiB; ${info.threads} threads each (RAYON_NUM_THREADS for ours, ` +
      `torch.set_num_threads for PyTorch); our CPU GEMM kernel ${info.cpuGemm ?? cpuGemmKernel()}; Node ${info.node}` +
      (torch ? `; PyTorch ${torch.versions.torch}, diffusers ${torch.versions.diffusers ?? '?'}, transformers ${torch.versions.transformers ?? '?'}` : '') +
      `. Load average at the end: ${info.loadAvg}.`,
    '',
    'Time: median of the timed runs (count in parentheses) after the warm-up runs the row lists; CPU, random weights, float32 unless the row names a dtype ' +
      '(ours with half weights computes in f32, except bfloat16 weights on the `amx-bf16` and `avx512bf16` kernels, which multiply in bf16; PyTorch stays float32 unless named). PSNR: 10·log10(range² / MSE) of the output against our float32 row, range = max − min of the float32 output.',
    'Pipeline rows: one `generate` of `steps` steps with CFG (DiT batch 2), prompt encoding and VAE decode included; ' +
      '"20 steps ≈" adds 18 more steps at the measured per-step time, and images/s is from that estimate.',
    'Load time: weights from disk to a ready model (not in the timed runs). Load avg: 1-minute load average before → after the row (2 cores: above 2 means the run shared the CPU).',
    ...(info.rounds > 1
      ? [`Rounds: ${info.rounds}. Each row ran ${info.rounds} rounds of (ours, then PyTorch), each side a fresh process with the row's warm-ups; a time is the median over all rounds' timed runs (the count in parentheses), a peak RSS the largest of the rounds. Alternating keeps a slow spell of this shared machine from landing on one side only.`]
      : []),
    ...(torchNote ? ['', `**${torchNote}**`] : []),
    '',
    '| row | batch | warm-up | ours time (runs) | ours img/s | ours peak RSS | PyTorch time (runs) | PyTorch img/s | PyTorch peak RSS | ours / PyTorch | load time (ours; PyTorch) | load avg (ours; PyTorch) |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
  ]
  for (const r of results) {
    const [ot, oi, om] = cell(r, r.ours)
    const [pt, pi, pm] = compare ? cell(r, r.pytorch) : ['–', '–', '–']
    const dtype = r.dtype && r.dtype !== 'float32'
      ? ` · ours ${r.dtype} weights${r.psnrDb !== undefined ? ` (PSNR ${r.psnrDb.toFixed(1)} dB vs ours float32)` : ''}${r.torchDtype ? ` · PyTorch ${r.torchDtype}` : ''}`
      : r.torchDtype ? ` · PyTorch ${r.torchDtype}` : ''
    lines.push(`| ${r.model} ${r.what}${dtype} | ${r.batch} | ${r.warmup} | ${ot} | ${oi} | ${om} | ${pt} | ${pi} | ${pm} | ${ratio(r)} | ${loadTime(r.ours)}; ${loadTime(r.pytorch)} | ${load(r.ours)}; ${load(r.pytorch)} |`)
  }
  const errors = results.flatMap((r) => ['ours', 'pytorch'].filter((k) => r[k]?.error).map((k) => `- ${r.model} ${r.what} b${r.batch}, ${k}: ${r[k].error}`))
  if (errors.length) lines.push('', 'Failures:', ...errors)
  return `${lines.join('\n')}\n`
}

/** PSNR in dB of the raw f32 file `a` against the reference file `b`, peak = the reference's value range. */
export function psnrOfFiles(a, b) {
  const read = (f) => {
    const buf = readFileSync(f)
    return new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4)
  }
  if (!existsSync(a) || !existsSync(b)) return undefined
  const [x, y] = [read(a), read(b)]
  if (x.length !== y.length) return undefined
  let se = 0
  let lo = Infinity
  let hi = -Infinity
  for (let i = 0; i < y.length; i++) {
    se += (x[i] - y[i]) ** 2
    lo = Math.min(lo, y[i])
    hi = Math.max(hi, y[i])
  }
  return 10 * Math.log10(((hi - lo) ** 2) / Math.max(se / y.length, 1e-30))
}
