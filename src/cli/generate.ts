/**
 * `sana generate "<prompt>"`: load a pipeline (downloading it on first use), generate, save PNGs.
 */
import { mkdir, rename, writeFile } from 'node:fs/promises'
import { basename, dirname, extname, join, resolve } from 'node:path'
import { throwIfAborted } from '../errors'
import { SanaPipeline, type PipelineLoadOptions } from '../pipeline'
import type { SanaImage } from '../png'
import { DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, SCMScheduler, type Scheduler } from '../schedulers'
import type { DeviceRequest } from '../tensor'
import {
  choiceOption,
  intOption,
  numberOption,
  positionalArgs,
  stringOption,
  stringsOption,
  UsageError,
  withInterrupt,
  type Command,
  type OptionSpec,
  type ParsedArgs,
} from './command'
import { prepareOutputs } from './output'
import { DownloadProgressView, formatMs, StepProgress } from './progress'

/** The model `sana generate` uses without `--model`. */
export const DEFAULT_MODEL = 'Efficient-Large-Model/Sana_600M_1024px_diffusers'

/** The samplers `--scheduler` (and the server's `scheduler` field) can name. */
export const SCHEDULER_NAMES = ['dpm', 'euler', 'scm'] as const
export type SchedulerName = (typeof SCHEDULER_NAMES)[number]

/**
 * The sampler `--scheduler` asks for, configured from the pipeline's own: `dpm` and `euler` take the flow shift
 * and training timesteps of whichever of the two the pipeline has. Undefined when it is the pipeline's own.
 */
export function schedulerFor(name: SchedulerName, pipe: SanaPipeline): Scheduler | undefined {
  const own = pipe.scheduler
  const kind = pipe.isSprint ? 'a SANA-Sprint' : 'a Sana'
  if ((name === 'scm') !== pipe.isSprint) {
    throw new UsageError(`--scheduler ${name} does not fit ${kind} pipeline (${pipe.dir}); use ${pipe.isSprint ? 'scm' : 'dpm or euler'}`)
  }
  if (own instanceof SCMScheduler) return undefined
  const flow =
    own instanceof DPMSolverMultistepScheduler
      ? { shift: own.config.flow_shift, T: own.config.num_train_timesteps }
      : own instanceof FlowMatchEulerDiscreteScheduler
        ? { shift: own.config.shift, T: own.config.num_train_timesteps }
        : undefined
  if (!flow) throw new UsageError(`--scheduler ${name}: the pipeline's ${own.className} gives no flow shift to configure it with`)
  if (name === 'dpm') {
    return own instanceof DPMSolverMultistepScheduler ? undefined : new DPMSolverMultistepScheduler({ flow_shift: flow.shift, num_train_timesteps: flow.T })
  }
  return own instanceof FlowMatchEulerDiscreteScheduler ? undefined : new FlowMatchEulerDiscreteScheduler({ shift: flow.shift, num_train_timesteps: flow.T })
}

/** `out.png` for one image; `out-0.png`, `out-1.png`, … for several. */
export function outputPaths(output: string, count: number): string[] {
  if (count === 1) return [output]
  const ext = extname(output)
  const stem = output.slice(0, output.length - ext.length)
  return Array.from({ length: count }, (_, i) => `${stem}-${i}${ext}`)
}

/** The options that choose and load a model, shared by `generate`, `serve` and `worker`. */
export const MODEL_OPTIONS: Record<string, OptionSpec> = {
  model: { type: 'string', short: 'm', valueName: 'repo-or-dir', description: `Hub repo id or local diffusers folder. Defaults to ${DEFAULT_MODEL}.` },
  device: { type: 'string', valueName: 'cpu|cuda|auto', description: 'Where to run (also cuda:N). Defaults to auto: CUDA when usable, else CPU.' },
  dtype: { type: 'string', valueName: 'float32|bfloat16|float16|auto', description: 'Weights dtype. Defaults to auto: float32 on CPU (diffusers-identical), bfloat16 on CUDA. On CPU, bfloat16/float16 halve the weights\' memory; compute stays float32, except bfloat16 on CPUs with Intel AMX (bf16 products, about 2× faster; sana info shows the CPU GEMM kernel).' },
  variant: { type: 'string', valueName: 'V', description: 'Weights variant, e.g. fp16 or bf16. Defaults to the plain weights.' },
  revision: { type: 'string', valueName: 'R', description: 'Hub branch, tag or commit. Defaults to main.' },
  offline: { type: 'boolean', description: 'Never touch the network: use the Hugging Face cache only (also HF_HUB_OFFLINE=1).' },
}

/** `--model`, or the default model. */
export function modelOption(args: ParsedArgs): string {
  return stringOption(args, 'model') ?? DEFAULT_MODEL
}

/** `SanaPipeline.load` options from {@link MODEL_OPTIONS}' values. */
export function loadOptions(args: ParsedArgs) {
  return {
    device: choiceOption<DeviceRequest>(args, 'device', ['cpu', 'cuda', 'auto'], /^cuda:\d+$/) ?? 'auto',
    dtype: choiceOption(args, 'dtype', ['float32', 'bfloat16', 'float16', 'auto'] as const) ?? 'auto',
    variant: stringOption(args, 'variant'),
    revision: stringOption(args, 'revision'),
    offline: args.values.offline === true ? true : undefined,
  }
}

/**
 * Load a pipeline with download progress and a "loaded … in …" line on stderr (downloading into the Hugging Face
 * cache when needed).
 */
export async function loadWithProgress(model: string, load: PipelineLoadOptions, signal?: AbortSignal): Promise<SanaPipeline> {
  const err = process.stderr
  const download = new DownloadProgressView(err)
  const loadStart = performance.now()
  let pipe: SanaPipeline
  try {
    pipe = await SanaPipeline.load(model, { ...load, signal, onProgress: download.update })
  } finally {
    download.finish()
  }
  err.write(`loaded ${pipe.dir} on ${pipe.device} (${pipe.transformer.dtype}) in ${formatMs(performance.now() - loadStart)}\n`)
  return pipe
}

/** Everything the command line asks for, checked before anything loads. */
function readArgs(args: ParsedArgs) {
  const noBinning = args.values['no-binning'] === true
  const size = { width: intOption(args, 'width', 1), height: intOption(args, 'height', 1) }
  // Without binning the size must fit the VAE's 32× grid; say so now, in CLI terms, rather than after loading.
  for (const [name, v] of Object.entries(size)) {
    if (noBinning && v !== undefined && v % 32 !== 0) {
      throw new UsageError(`Expected a multiple of 32 for --${name} (or no --no-binning) but received ${v}`)
    }
  }
  return {
    model: modelOption(args),
    output: stringOption(args, 'output'),
    load: { ...loadOptions(args), controlnet: stringOption(args, 'controlnet') },
    scheduler: choiceOption(args, 'scheduler', SCHEDULER_NAMES),
    generate: {
      negativePrompt: stringOption(args, 'negative'),
      numInferenceSteps: intOption(args, 'steps', 1),
      seed: intOption(args, 'seed', 0),
      ...size,
      guidanceScale: numberOption(args, 'guidance', 0),
      numImagesPerPrompt: intOption(args, 'num-images', 1),
      useResolutionBinning: noBinning ? false : undefined,
      // Image conditioning: paths go straight to generate(), which reads and checks them.
      image: stringOption(args, 'image'),
      maskImage: stringOption(args, 'mask'),
      strength: numberOption(args, 'strength', 0),
      controlImage: stringOption(args, 'control'),
      controlnetConditioningScale: numberOption(args, 'control-scale', -Infinity),
      pagScale: numberOption(args, 'pag-scale', 0),
      pagAppliedLayers: pagLayers(stringOption(args, 'pag-layers')),
    },
    preview: stringOption(args, 'preview'),
    loras: stringsOption(args, 'lora').map(loraOption),
  }
}

/**
 * `--lora path[:scale]`: a LoRA file, folder or Hub repo id, and its weight (default 1). Only a number after the
 * last `:` is a scale, so `C:\loras\x.safetensors` stays a path.
 * @example loraOption('org/pixel-lora:0.8') // { source: 'org/pixel-lora', scale: 0.8 }
 */
export function loraOption(v: string): { source: string; scale: number } {
  const m = /^(.+):([^:\\/]*)$/.exec(v)
  if (m && /^[-+.\d]/.test(m[2])) {
    const scale = Number(m[2])
    if (m[2].trim() === '' || !Number.isFinite(scale)) throw new UsageError(`Expected a number after ':' for --lora but received ${JSON.stringify(v)}`)
    return { source: m[1], scale }
  }
  return { source: v, scale: 1 }
}

/** `--pag-layers 8,9` → block indices; anything else is one diffusers-style pattern (`transformer_blocks.8`). */
function pagLayers(v: string | undefined): string | number[] | undefined {
  if (v === undefined) return undefined
  return /^\d+(,\d+)*$/.test(v) ? v.split(',').map(Number) : v
}

/** Check the options that only make sense together, in CLI terms. */
function checkCombinations(a: ReturnType<typeof readArgs>): void {
  if (a.generate.image === undefined) {
    if (a.generate.maskImage !== undefined) throw new UsageError('--mask needs --image (the picture to repaint)')
    if (a.generate.strength !== undefined) throw new UsageError('--strength needs --image')
  }
  if ((a.generate.controlImage === undefined) !== (a.load.controlnet === undefined)) {
    throw new UsageError('--control and --controlnet go together: the ControlNet folder and its conditioning image')
  }
  if (a.generate.controlnetConditioningScale !== undefined && a.generate.controlImage === undefined) throw new UsageError('--control-scale needs --control')
  if (a.generate.pagAppliedLayers !== undefined && !a.generate.pagScale) throw new UsageError('--pag-layers needs --pag-scale > 0')
}

/** Load every `--lora` (as `lora_0`, `lora_1`, …) and activate them at their scales. */
async function loadLoras(pipe: SanaPipeline, loras: { source: string; scale: number }[], options: { offline?: boolean; signal: AbortSignal }) {
  if (loras.length === 0) return
  const names: string[] = []
  for (const [i, l] of loras.entries()) {
    const download = new DownloadProgressView(process.stderr)
    try {
      names.push(await pipe.loadLoraWeights(l.source, { ...options, adapterName: `lora_${i}`, onProgress: download.update }))
    } finally {
      download.finish()
    }
  }
  await pipe.setAdapters(names, loras.map((l) => l.scale))
}

/** `--preview out.png`: rewrite one file with each step's preview, atomically (write a temp file, rename). */
function previewWriter(path: string | undefined) {
  if (!path) return undefined
  const target = resolve(path)
  const temp = join(dirname(target), `.${basename(target)}.part`)
  return async (image: SanaImage) => {
    await mkdir(dirname(target), { recursive: true })
    await writeFile(temp, image.toPng())
    await rename(temp, target)
  }
}

export const generate: Command = {
  name: 'generate',
  summary: 'Generate images from a text prompt and save them as PNG, JPEG or WebP.',
  usage: 'sana generate "<prompt>" [options]',
  positionals: ['prompt'],
  options: {
    output: { type: 'string', short: 'o', valueName: 'file.png', description: 'Output image (.png, .jpg/.jpeg or .webp); several → file-0.png, file-1.png, … Defaults to sana-<seed>.png.' },
    steps: { type: 'string', valueName: 'N', description: 'Denoising steps. Defaults to 20 (Sana) or 2 (Sprint).' },
    seed: { type: 'string', valueName: 'N', description: 'Seed of the starting noise (torch-compatible). Defaults to a random one, printed.' },
    width: { type: 'string', valueName: 'N', description: "Width in pixels. Defaults to the model's native size." },
    height: { type: 'string', valueName: 'N', description: "Height in pixels. Defaults to the model's native size." },
    guidance: { type: 'string', valueName: 'X', description: 'Classifier-free guidance scale (1 disables it). Defaults to 4.5.' },
    negative: { type: 'string', valueName: 'text', description: 'Negative prompt. Defaults to none.' },
    'num-images': { type: 'string', valueName: 'N', description: 'Images to generate. Defaults to 1.' },
    scheduler: { type: 'string', valueName: 'dpm|euler|scm', description: "Sampler (Sana: dpm or euler; Sprint: scm). Defaults to the model's scheduler_config.json." },
    ...MODEL_OPTIONS,
    'no-binning': { type: 'boolean', description: 'Generate at exactly width×height (multiples of 32) instead of the nearest trained aspect ratio.' },
    image: { type: 'string', valueName: 'in.png', description: 'img2img: start from this PNG/JPEG/WebP (resized to --width/--height, else to a multiple of 32).' },
    mask: { type: 'string', valueName: 'mask.png', description: "Inpainting (with --image): white = repaint, black = keep; the image's size." },
    strength: { type: 'string', valueName: 'X', description: 'img2img/inpainting strength in (0, 1]: how much of the schedule runs. Defaults to 0.6.' },
    controlnet: { type: 'string', valueName: 'dir', description: 'A SanaControlNetModel folder (config.json + safetensors), used with --control.' },
    control: { type: 'string', valueName: 'c.png', description: 'ControlNet conditioning image (with --controlnet), e.g. an edge map at the output size.' },
    'control-scale': { type: 'string', valueName: 'X', description: 'ControlNet conditioning scale. Defaults to 1.' },
    'pag-scale': { type: 'string', valueName: 'X', description: 'Perturbed-attention guidance scale (e.g. 2 or 3; base Sana). Defaults to 0 (off).' },
    'pag-layers': { type: 'string', valueName: 'i,j|pattern', description: 'PAG blocks: indices, or a diffusers pattern like transformer_blocks.8. Defaults to transformer_blocks.0.' },
    lora: { type: 'string', valueName: 'path[:scale]', multiple: true, description: 'LoRA (diffusers/peft .safetensors file, folder or Hub repo id) at this weight; repeatable. Defaults to none.' },
    preview: { type: 'string', valueName: 'file.png', description: 'Rewrite this PNG with a preview after every step (≤ 512 px). Defaults to none.' },
  },
  epilog: [
    'Examples:',
    '  sana generate "a red fox in snow, golden hour" -o fox.png --seed 42',
    '  sana generate "a lighthouse at dusk" --model ./Sana_600M_1024px_diffusers --steps 20 --width 1024 --height 768',
    '  sana generate "a cabin in winter, oil painting" --image cabin.png --strength 0.6 -o winter.png',
    '  sana generate "a red hot air balloon" --image sky.png --mask balloon-mask.png --strength 1 -o balloon.png',
    '  sana generate "a cute panda eating bamboo, ink drawing" --pag-scale 2 --pag-layers 8 -o panda.png',
    '  sana generate "a city street at night" --controlnet ./sana-controlnet-hed --control edges.png --control-scale 0.7',
    '  sana generate "pixel art of a knight" --lora ./pixel-lora --lora org/style-lora:0.6 -o knight.png',
    '',
    'Progress goes to stderr; the summary line (time per step, total, files, seed) to stdout. Ctrl-C stops after the current step.',
  ].join('\n'),

  async run(args) {
    const [prompt] = positionalArgs(this, args)
    const a = readArgs(args)
    checkCombinations(a)
    const writePreview = previewWriter(a.preview)
    // Before loading: a bad output path must not cost a whole generation (the seed-named default goes to the cwd).
    await prepareOutputs(outputPaths(a.output ?? 'sana.png', a.generate.numImagesPerPrompt ?? 1))
    if (a.preview) await prepareOutputs([a.preview])
    const err = process.stderr
    return withInterrupt(async (signal) => {
      // 1. Load (downloading into the Hugging Face cache when needed).
      const pipe = await loadWithProgress(a.model, a.load, signal)
      try {
        await loadLoras(pipe, a.loras, { offline: a.load.offline, signal })
        const scheduler = a.scheduler ? schedulerFor(a.scheduler, pipe) : undefined
        throwIfAborted(signal)
        // 2. Generate, with a step bar.
        const bar = new StepProgress(err)
        let result
        try {
          result = await pipe.generate({
            prompt,
            ...a.generate,
            scheduler,
            signal,
            previewEvery: writePreview ? 1 : undefined,
            onStep: async (e) => {
              bar.step(e.numSteps)
              if (writePreview && e.previewImage) await writePreview(e.previewImage)
            },
          })
        } finally {
          bar.finish()
        }
        // 3. Save.
        const paths = outputPaths(a.output ?? `sana-${result.seed}.png`, result.images.length)
        for (const [i, image] of result.images.entries()) await image.save(paths[i])
        const steps = result.stepTimesMs.length
        const perStep = steps ? result.stepTimesMs.reduce((x, y) => x + y, 0) / steps : 0
        process.stdout.write(
          `${steps} steps, ${formatMs(perStep)}/step, total ${formatMs(result.totalMs)}; seed ${result.seed}; saved ${paths.join(', ')}\n`,
        )
        return 0
      } finally {
        pipe.dispose()
      }
    })
  },
}
