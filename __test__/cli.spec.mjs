// The `sana` command line, run as users run it (`node dist/cli.js …` in a child process) against the tiny
// fixture pipeline. No test reaches the internet: every run has HF_HUB_OFFLINE=1 and a temporary HF_HUB_CACHE,
// except the pull test, which talks to the local fake Hub on 127.0.0.1.
import test from 'ava'
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { FlowMatchEulerDiscreteScheduler, SanaPipeline } from '../dist/index.js'
import { FakeRepo, startFakeHub } from './helpers/fake-hub.mjs'
import { REPO, SANA_TINY, WAVE2 } from './helpers/paths.mjs'
import { readPng } from './helpers/png.mjs'

const CLI = join(REPO, 'dist', 'cli.js')
const PKG = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8'))

/** A temp folder removed when the test ends. */
function tempDir(t) {
  const dir = mkdtempSync(join(tmpdir(), 'sana-cli-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/**
 * Run the CLI; resolves to { code, signal, stdout, stderr }. The environment is scrubbed of Hugging Face
 * settings and offline by default. `onStderr(text, child)` sees stderr as it arrives.
 */
function sana(args, { cwd = REPO, env = {}, onStderr } = {}) {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HF_')))
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd,
    env: { ...base, HF_HUB_OFFLINE: '1', HF_HUB_CACHE: join(tmpdir(), 'sana-cli-no-cache'), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d) => (stdout += d))
  child.stderr.on('data', (d) => {
    stderr += d
    onStderr?.(stderr, child)
  })
  return new Promise((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }))
  })
}

/** The CLI exits with `code` and prints `error [CODE]: …` naming each fragment, without a stack trace. */
function failsWith(t, r, code, errorCode, ...fragments) {
  t.is(r.code, code, r.stderr)
  t.regex(r.stderr, new RegExp(`^error \\[${errorCode}\\]: `, 'm'))
  for (const f of fragments) t.true(r.stderr.includes(f), `stderr should mention ${f}:\n${r.stderr}`)
  t.notRegex(r.stderr, /^\s+at /m, 'no stack trace')
}

// The options every generate test shares: small, binning off, 2 steps, fixed seed.
const PROMPT = 'a red fox in snow'
const SMALL = ['--model', SANA_TINY, '--width', '256', '--height', '384', '--no-binning', '--steps', '2', '--seed', '42']
const LIBRARY = { prompt: PROMPT, width: 256, height: 384, useResolutionBinning: false, numInferenceSteps: 2, seed: 42 }

let pipe
test.before(async () => {
  pipe = await SanaPipeline.load(SANA_TINY)
})
test.after.always(() => pipe?.dispose())

// ─── generate ───────────────────────────────────────────────────────────────────────────────────

test.serial('generate writes the PNG the library produces, with text metadata, progress and a summary', async (t) => {
  const dir = tempDir(t)
  const r = await sana(['generate', PROMPT, ...SMALL, '-o', 'fox.png'], { cwd: dir })
  t.is(r.code, 0, r.stderr)
  const png = readPng(readFileSync(join(dir, 'fox.png')))
  const { images } = await pipe.generate(LIBRARY)
  t.is(png.width, 256)
  t.is(png.height, 384)
  t.deepEqual(png.data, images[0].data)
  t.like(png.text, { prompt: PROMPT, seed: '42', steps: '2', scheduler: 'DPMSolverMultistepScheduler', software: 'sana-node' })
  // Off a TTY the bar is plain lines: here both steps (the first and the last).
  t.regex(r.stderr, /^step 1\/2 .*ms\/step/m)
  t.regex(r.stderr, /^step 2\/2 .*100%/m)
  t.notRegex(r.stderr, /\r|\x1b\[/, 'no terminal control codes off a TTY')
  t.regex(r.stdout, /^2 steps, [\d.]+ m?s\/step, total [\d.]+ m?s; seed 42; saved fox\.png\n$/)
})

test.serial('generate: several images are numbered, and match the library batch', async (t) => {
  const dir = tempDir(t)
  const r = await sana(['generate', PROMPT, ...SMALL, '--num-images', '2', '-o', join(dir, 'out', 'img.png')])
  t.is(r.code, 0, r.stderr)
  t.deepEqual(readdirSync(join(dir, 'out')).sort(), ['img-0.png', 'img-1.png'])
  const { images } = await pipe.generate({ ...LIBRARY, numImagesPerPrompt: 2 })
  for (const i of [0, 1]) t.deepEqual(readPng(readFileSync(join(dir, 'out', `img-${i}.png`))).data, images[i].data)
  t.notDeepEqual(images[0].data, images[1].data)
  t.true(r.stdout.includes(`saved ${join(dir, 'out', 'img-0.png')}, ${join(dir, 'out', 'img-1.png')}`), r.stdout)
})

test.serial('generate --scheduler euler uses flow-match Euler with the config flow_shift; without -o the file is named by seed', async (t) => {
  const dir = tempDir(t)
  const r = await sana(['generate', PROMPT, ...SMALL, '--scheduler', 'euler', '--guidance', '3', '--negative', 'blurry'], { cwd: dir })
  t.is(r.code, 0, r.stderr)
  const png = readPng(readFileSync(join(dir, 'sana-42.png')))
  t.is(pipe.schedulerConfig.flow_shift, 3)
  const scheduler = new FlowMatchEulerDiscreteScheduler({ shift: pipe.schedulerConfig.flow_shift })
  const { images } = await pipe.generate({ ...LIBRARY, scheduler, guidanceScale: 3, negativePrompt: 'blurry' })
  t.deepEqual(png.data, images[0].data)
  t.is(png.text.scheduler, 'FlowMatchEulerDiscreteScheduler')
  t.is(png.text.guidance, '3')
  // A sampler the pipeline cannot drive is a usage error.
  failsWith(t, await sana(['generate', PROMPT, ...SMALL, '--scheduler', 'scm']), 2, 'SANA_INVALID_ARGUMENT', '--scheduler scm', 'dpm or euler')
})

test.serial('Ctrl-C aborts the generation between steps: ABORT_ERR, exit 130, no file', async (t) => {
  const dir = tempDir(t)
  let sent = false
  const r = await sana(['generate', PROMPT, ...SMALL, '--steps', '10000', '-o', 'never.png'], {
    cwd: dir,
    onStderr: (text, child) => {
      if (!sent && /^step 1\//m.test(text)) child.kill('SIGINT')
      sent ||= /^step 1\//m.test(text)
    },
  })
  t.true(sent)
  failsWith(t, r, 130, 'ABORT_ERR', 'aborting after the current step')
  t.false(existsSync(join(dir, 'never.png')))
})

// ─── Usage errors and failures ──────────────────────────────────────────────────────────────────

test.serial('usage errors exit 2 and name the option', async (t) => {
  failsWith(t, await sana(['generate']), 2, 'SANA_INVALID_ARGUMENT', 'missing prompt', 'sana generate --help')
  failsWith(t, await sana(['generate', PROMPT, '--steps', 'abc']), 2, 'SANA_INVALID_ARGUMENT', '--steps', '"abc"')
  failsWith(t, await sana(['generate', PROMPT, '--seed', '-1']), 2, 'SANA_INVALID_ARGUMENT', '--seed')
  failsWith(t, await sana(['generate', PROMPT, '--guidance', 'x']), 2, 'SANA_INVALID_ARGUMENT', '--guidance', '"x"')
  failsWith(t, await sana(['generate', PROMPT, '--width', '100', '--no-binning']), 2, 'SANA_INVALID_ARGUMENT', '--width', 'multiple of 32')
  failsWith(t, await sana(['generate', PROMPT, '--device', 'gpu']), 2, 'SANA_INVALID_ARGUMENT', '--device', 'cpu, cuda, auto')
  failsWith(t, await sana(['generate', PROMPT, '--stpes', '2']), 2, 'SANA_INVALID_ARGUMENT', '--stpes')
  failsWith(t, await sana(['generate', 'a', 'fox']), 2, 'SANA_INVALID_ARGUMENT', '"fox"', 'quote the prompt')
  failsWith(t, await sana(['pull']), 2, 'SANA_INVALID_ARGUMENT', 'missing repo')
  failsWith(t, await sana(['paint']), 2, 'SANA_INVALID_ARGUMENT', 'unknown command "paint"')
  const none = await sana([])
  t.is(none.code, 2)
  t.regex(none.stderr, /^Usage: sana <command>/)
})

test.serial('a missing model folder with --offline fails with SANA_NOT_FOUND, exit 1', async (t) => {
  const missing = join(tempDir(t), 'no-such-model')
  failsWith(t, await sana(['generate', PROMPT, '--model', missing, '--offline']), 1, 'SANA_NOT_FOUND', missing)
  // The default model is a Hub repo: offline with an empty cache, it is a cache miss, not a download.
  const cache = tempDir(t)
  const r = await sana(['generate', PROMPT, '--offline'], { env: { HF_HUB_CACHE: cache } })
  failsWith(t, r, 1, 'SANA_NOT_FOUND', 'Efficient-Large-Model/Sana_600M_1024px_diffusers', 'offline')
})

// ─── pull and info ──────────────────────────────────────────────────────────────────────────────

test.serial('pull --offline with an empty cache fails cleanly', async (t) => {
  const cache = tempDir(t)
  const r = await sana(['pull', 'tiny-org/sana-tiny', '--offline'], { env: { HF_HUB_CACHE: cache } })
  failsWith(t, r, 1, 'SANA_NOT_FOUND', 'tiny-org/sana-tiny', 'not in the cache')
  t.is(r.stdout, '')
  t.deepEqual(readdirSync(cache), [])
})

test.serial('pull downloads into the cache (from a local fake Hub), then generate and info use it offline', async (t) => {
  const files = new Map(
    readdirSync(SANA_TINY, { recursive: true })
      .filter((p) => !p.startsWith('reference') && statSync(join(SANA_TINY, p)).isFile())
      .map((p) => [p.split('\\').join('/'), readFileSync(join(SANA_TINY, p))]),
  )
  const repo = new FakeRepo()
  const commit = repo.commit(files)
  const hub = await startFakeHub(t, { repos: { 'tiny-org/sana-tiny': repo } })
  const cache = tempDir(t)
  const online = { HF_HUB_CACHE: cache, HF_HUB_OFFLINE: '0', HF_ENDPOINT: hub.endpoint }
  const r = await sana(['pull', 'tiny-org/sana-tiny'], { env: online })
  t.is(r.code, 0, r.stderr)
  const snapshot = join(cache, 'models--tiny-org--sana-tiny', 'snapshots', commit)
  t.is(r.stdout, snapshot + '\n') // only the path on stdout, for `$(sana pull …)`
  t.regex(r.stderr, /^\[\d+\/\d+\] transformer\/diffusion_pytorch_model\.safetensors \[█+\] 772 kB \/ 772 kB$/m)
  // The cached pipeline generates offline, as from the folder.
  const dir = tempDir(t)
  const gen = await sana(['generate', PROMPT, ...SMALL.slice(2), '--model', 'tiny-org/sana-tiny', '--offline', '-o', 'fox.png'], {
    cwd: dir,
    env: { HF_HUB_CACHE: cache },
  })
  t.is(gen.code, 0, gen.stderr)
  const { images } = await pipe.generate(LIBRARY)
  t.deepEqual(readPng(readFileSync(join(dir, 'fox.png'))).data, images[0].data)
  // info lists it.
  const info = await sana(['info'], { env: { HF_HUB_CACHE: cache } })
  t.is(info.code, 0, info.stderr)
  t.regex(info.stdout, new RegExp(`^  tiny-org/sana-tiny  main  [\\d.]+ MB  ${snapshot}$`, 'm'))
  t.is(relative(cache, snapshot).split('/')[0], 'models--tiny-org--sana-tiny')
})

test.serial('info prints the version, the native build, devices and the cache folder', async (t) => {
  const cache = tempDir(t)
  const r = await sana(['info'], { env: { HF_HUB_CACHE: cache } })
  t.is(r.code, 0, r.stderr)
  t.regex(r.stdout, new RegExp(`^sana-node +${PKG.version.replaceAll('.', '\\.')}$`, 'm'))
  t.regex(r.stdout, /^native +(CPU-only build \(no CUDA\)|CUDA build)$/m)
  t.regex(r.stdout, /^devices +cpu(, cuda:\d+)*$/m)
  t.regex(r.stdout, /^CPU GEMM +(amx-bf16|avx512bf16|avx512f|avx2-fma|scalar)$/m)
  t.true(r.stdout.includes(`HF cache  ${cache}\n`), r.stdout)
  t.regex(r.stdout, /^models +\(none\)$/m)
})

test.serial('info --estimate prints the memory table for 600m, 1.6b and 4.8b at 1024² and 4096², or one model', async (t) => {
  const r = await sana(['info', '--estimate'])
  t.is(r.code, 0, r.stderr)
  const rows = r.stdout.split('\n').filter((l) => /^(600m|1\.6b|4\.8b) /.test(l))
  t.deepEqual(rows.map((l) => l.split(/ +/).slice(0, 2).join(' ')), ['600m 1024×1024', '600m 4096×4096', '1.6b 1024×1024', '1.6b 4096×4096', '4.8b 1024×1024', '4.8b 4096×4096'])
  t.regex(r.stdout, /^model +size +batch +dtype +weights +transformer +text enc\. +VAE decode +VAE tiled \(tile\) +peak$/m)
  // 4096² is auto-tiled; 1024² is not.
  t.true(rows[1].endsWith(' tiled') && !rows[0].endsWith(' tiled'), r.stdout)
  // A pipeline folder: its configs, here at 64×96, batch 3, on CUDA in bf16 (an estimate needs no GPU).
  const one = await sana(['info', '--estimate', '--model', SANA_TINY, '--width', '96', '--height', '64', '--batch', '3', '--device', 'cuda'])
  t.is(one.code, 0, one.stderr)
  t.regex(one.stdout, /^\S*sana-tiny +96×64 +3 \(DiT 6\) +bfloat16 /m)
  const bad = await sana(['info', '--estimate', '--width', '512'])
  t.is(bad.code, 2)
  t.regex(bad.stderr, /--width\/--height need --model/)
  t.is((await sana(['info', '--batch', '2'])).code, 2)
  t.is((await sana(['info', '--estimate', '--model', '600m', '--width', '1000'])).code, 1)
})

// ─── Help and version ───────────────────────────────────────────────────────────────────────────

test.serial('--help, <command> --help and --version', async (t) => {
  const main = await sana(['--help'])
  t.is(main.code, 0)
  for (const name of ['generate', 'pull', 'info']) t.regex(main.stdout, new RegExp(`^  ${name} `, 'm'))
  const gen = await sana(['generate', '--help'])
  t.is(gen.code, 0)
  t.regex(gen.stdout, /^Usage: sana generate "<prompt>" \[options\]/)
  for (const o of ['-o, --output', '--model', '--steps', '--seed', '--width', '--height', '--guidance', '--negative', '--device', '--dtype', '--scheduler', '--num-images', '--no-binning', '--offline', '--revision']) {
    t.true(gen.stdout.includes(o), `generate --help should list ${o}`)
  }
  t.regex((await sana(['pull', '-h'])).stdout, /--variant <V>/)
  t.regex((await sana(['help', 'info'])).stdout.split('\n')[0], /^Usage: sana info \[--estimate /)
  const v = await sana(['--version'])
  t.is(v.code, 0)
  t.is(v.stdout, `${PKG.version}\n`)
})

test('generate --image --mask --strength --preview: inpainting from the command line, with a live preview file', async (t) => {
  const dir = tempDir(t)
  const { WAVE2 } = await import('./helpers/paths.mjs')
  const inputs = join(WAVE2, 'inputs')
  const out = join(dir, 'out.png')
  const preview = join(dir, 'preview', 'live.png')
  const r = await sana(['generate', 'a red hot air balloon', '--model', SANA_TINY, '--image', join(inputs, 'init_256x320.png'),
    '--mask', join(inputs, 'mask_256x320.png'), '--strength', '0.8', '--steps', '3', '--seed', '1', '--preview', preview, '-o', out])
  t.is(r.code, 0, r.stderr)
  const png = readPng(readFileSync(out))
  t.deepEqual([png.width, png.height], [320, 256]) // the image's size
  const live = readPng(readFileSync(preview))
  t.deepEqual([live.width, live.height], [320, 256])
  t.false(existsSync(join(dir, 'preview', '.live.png.part')), 'the temporary preview file is renamed into place')
  // The same call through the library gives the same pixels.
  const pipe = await SanaPipeline.load(SANA_TINY)
  const lib = await pipe.generate({ prompt: 'a red hot air balloon', image: join(inputs, 'init_256x320.png'), maskImage: join(inputs, 'mask_256x320.png'), strength: 0.8, numInferenceSteps: 3, seed: 1 })
  t.deepEqual(Buffer.from(lib.images[0].data), Buffer.from(png.data))
  pipe.dispose()
})

test('generate: --mask or --strength without --image is a usage error', async (t) => {
  const mask = await sana(['generate', PROMPT, ...SMALL, '--mask', 'm.png'])
  failsWith(t, mask, 2, 'SANA_INVALID_ARGUMENT', '--mask needs --image')
  const strength = await sana(['generate', PROMPT, ...SMALL, '--strength', '0.5'])
  failsWith(t, strength, 2, 'SANA_INVALID_ARGUMENT', '--strength needs --image')
  const bad = await sana(['generate', PROMPT, ...SMALL.slice(0, 2), '--image', join(tempDir(t), 'missing.png'), '--steps', '1'])
  failsWith(t, bad, 1, 'SANA_NOT_FOUND', 'missing.png')
})

test('generate --pag-scale --pag-layers: the same image as the library call', async (t) => {
  const dir = tempDir(t)
  const out = join(dir, 'pag.png')
  const r = await sana(['generate', PROMPT, ...SMALL, '--pag-scale', '3', '--pag-layers', '1', '-o', out])
  t.is(r.code, 0, r.stderr)
  const pipe = await SanaPipeline.load(SANA_TINY)
  const lib = await pipe.generate({ ...LIBRARY, pagScale: 3, pagAppliedLayers: [1] })
  t.deepEqual(Buffer.from(lib.images[0].data), Buffer.from(readPng(readFileSync(out)).data))
  pipe.dispose()
  failsWith(t, await sana(['generate', PROMPT, ...SMALL, '--pag-layers', '1']), 2, 'SANA_INVALID_ARGUMENT', '--pag-layers needs --pag-scale')
})

test('generate --controlnet --control --control-scale: the same image as the library call', async (t) => {
  const dir = tempDir(t)
  const { WAVE2 } = await import('./helpers/paths.mjs')
  const out = join(dir, 'cn.png')
  const control = join(WAVE2, 'inputs', 'control_224x288.png')
  const controlnet = join(WAVE2, 'sana-controlnet-tiny')
  const r = await sana(['generate', PROMPT, '--model', SANA_TINY, '--width', '288', '--height', '224', '--no-binning', '--steps', '2', '--seed', '5',
    '--controlnet', controlnet, '--control', control, '--control-scale', '0.7', '-o', out])
  t.is(r.code, 0, r.stderr)
  const pipe = await SanaPipeline.load(SANA_TINY, { controlnet })
  const lib = await pipe.generate({ prompt: PROMPT, width: 288, height: 224, useResolutionBinning: false, numInferenceSteps: 2, seed: 5, controlImage: control, controlnetConditioningScale: 0.7 })
  t.deepEqual(Buffer.from(lib.images[0].data), Buffer.from(readPng(readFileSync(out)).data))
  pipe.dispose()
  failsWith(t, await sana(['generate', PROMPT, ...SMALL, '--control', control]), 2, 'SANA_INVALID_ARGUMENT', '--control and --controlnet go together')
})

test('generate --lora path --lora path:scale: the same image as the library with those adapters', async (t) => {
  const dir = tempDir(t)
  const out = join(dir, 'lora.png')
  const lora = join(WAVE2, 'lora-tiny')
  const file = join(lora, 'pytorch_lora_weights.safetensors')
  const r = await sana(['generate', PROMPT, ...SMALL, '--lora', lora, '--lora', `${file}:0.5`, '-o', out])
  t.is(r.code, 0, r.stderr)
  const pipe = await SanaPipeline.load(SANA_TINY)
  await pipe.loadLoraWeights(lora)
  await pipe.loadLoraWeights(file)
  await pipe.setAdapters(['default_0', 'default_1'], [1, 0.5])
  const lib = await pipe.generate(LIBRARY)
  t.deepEqual(Buffer.from(lib.images[0].data), Buffer.from(readPng(readFileSync(out)).data))
  await pipe.unloadLoraWeights()
  const base = await pipe.generate(LIBRARY)
  t.notDeepEqual(Buffer.from(base.images[0].data), Buffer.from(lib.images[0].data), 'the LoRA changes the image')
  pipe.dispose()
  failsWith(t, await sana(['generate', PROMPT, ...SMALL, '--lora', join(dir, 'absent')]), 1, 'SANA_NOT_FOUND', 'absent')
  failsWith(t, await sana(['generate', PROMPT, ...SMALL, '--lora', `${file}:1e`]), 2, 'SANA_INVALID_ARGUMENT', '--lora')
})
