// Load time and peak RSS: the tiny fixture pipeline, and a synthetic bf16 checkpoint large enough to
// show that peak RSS stays near the converted (f32) size rather than file + converted.
// Run: node benches/load.mjs [--mb 256]   (each measurement runs in its own process)
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, openSync, writeSync, closeSync, cpSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = fileURLToPath(new URL('.', import.meta.url))
const pkg = resolve(here, '..', 'dist', 'index.js')
const fixtures = process.env.SANA_FIXTURES ?? resolve(here, '..', '..', 'shared', 'fixtures')

function measure(code) {
  const r = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(r.stderr)
  return JSON.parse(r.stdout.trim().split('\n').pop())
}

const probe = (load) => `
const s = require(${JSON.stringify(pkg)});
(async () => {
  const base = process.memoryUsage().rss
  const t0 = process.hrtime.bigint()
  const x = await ${load}
  const ms = Number(process.hrtime.bigint() - t0) / 1e6
  console.log(JSON.stringify({ ms, baseRssMb: base / 2 ** 20, peakRssMb: process.resourceUsage().maxRSS / 1024 }))
})()`

const tiny = measure(probe(`s.SanaPipeline.load(${JSON.stringify(join(fixtures, 'sana-tiny'))})`))
console.log(`tiny pipeline: load ${tiny.ms.toFixed(0)} ms, peak RSS ${tiny.peakRssMb.toFixed(0)} MiB (node baseline ${tiny.baseRssMb.toFixed(0)} MiB)`)

const mb = Number(process.argv[process.argv.indexOf('--mb') + 1] || 256)
const dir = mkdtempSync(join(tmpdir(), 'sana-loadbench-'))
try {
  // One `mb` MiB bf16 tensor (constant values are fine: we measure memory, not values), loaded as a VAE
  // (every tensor converted) and as a text encoder (whose embed_tokens table stays memory-mapped on CPU).
  const hidden = 32
  const rows = Math.floor((mb * 2 ** 20) / (2 * hidden))
  const header = { 'embed_tokens.weight': { dtype: 'BF16', shape: [rows, hidden], data_offsets: [0, rows * hidden * 2] } }
  let json = JSON.stringify(header)
  while (json.length % 8) json += ' '
  const fd = openSync(join(dir, 'model.safetensors'), 'w')
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(BigInt(json.length))
  writeSync(fd, len)
  writeSync(fd, json)
  const chunk = Buffer.alloc(16 * 2 ** 20, 0x3f) // bf16 0x3f3f ≈ 0.746
  for (let left = rows * hidden * 2; left > 0; left -= chunk.length) writeSync(fd, chunk, 0, Math.min(left, chunk.length))
  closeSync(fd)
  // The model build then fails (the file holds one tensor): what is measured is the loading before it.
  const tolerate = `.catch(e => { if (!['SANA_WEIGHT_MISSING', 'SANA_INVALID_CONFIG', 'SANA_SHAPE_MISMATCH'].includes(e.code)) throw e })`
  symlinkSync('model.safetensors', join(dir, 'diffusion_pytorch_model.safetensors'))
  cpSync(join(fixtures, 'sana-tiny', 'vae', 'config.json'), join(dir, 'config.json'))
  const big = measure(probe(`s.AutoencoderDC.load(${JSON.stringify(dir)})${tolerate}`))
  console.log(`synthetic ${mb} MiB bf16 file → ${2 * mb} MiB f32: load ${big.ms.toFixed(0)} ms, peak RSS ${big.peakRssMb.toFixed(0)} MiB ` +
    `(baseline ${big.baseRssMb.toFixed(0)} MiB; file + converted would be ${(3 * mb + big.baseRssMb).toFixed(0)} MiB)`)
  cpSync(join(fixtures, 'sana-tiny', 'text_encoder', 'config.json'), join(dir, 'config.json'))
  const emb = measure(probe(`s.Gemma2TextEncoder.load(${JSON.stringify(dir)})${tolerate}`))
  console.log(`the same file as a text-encoder embedding (left memory-mapped on CPU): load ${emb.ms.toFixed(0)} ms, ` +
    `peak RSS ${emb.peakRssMb.toFixed(0)} MiB`)
} finally {
  rmSync(dir, { recursive: true, force: true })
}
