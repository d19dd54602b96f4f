/**
 * Options of `SanaPipeline.generate` / `stream` and their validation: every argument is checked (type, range,
 * unknown keys) before any work, as diffusers' `check_inputs` does. The loop itself is `sampling/loop.ts`.
 */
import { SanaError, invalidArgument } from './errors'
import { aspectRatioTableFor, classifyHeightWidthBin, type ImageSize } from './postprocess'
import { checkImageInput, type ImageInput } from './preprocess'
import { promptList, type PromptOptions } from './prompt'
import { startIndex } from './sampling/loop'
import type { SanaImage } from './png'
import type { Scheduler } from './schedulers'
import { Tensor } from './tensor'

/** What the pipeline hands back. */
export type OutputType = 'image' | 'tensor' | 'latent'

/** Options of `SanaPipeline.generate` (diffusers' `__call__` arguments in camelCase). */
export interface GenerateOptions extends PromptOptions {
  /** What to draw: one prompt or a batch. */
  prompt: string | string[]
  /** What to steer away from (classifier-free guidance). Defaults to `''`; unused by Sprint. */
  negativePrompt?: string | string[]
  /** Output height in pixels. Defaults to the model's native size (`sample_size · 32`), or the input image's height. */
  height?: number
  /** Output width in pixels. Defaults to the model's native size, or the input image's width. */
  width?: number
  /** Denoising steps. Defaults to 20 (Sana) or 2 (Sprint). */
  numInferenceSteps?: number
  /** Classifier-free guidance scale; 1.0 disables the CFG batch. Defaults to 4.5. */
  guidanceScale?: number
  /** Images per prompt. Defaults to 1. */
  numImagesPerPrompt?: number
  /**
   * Seed of the starting noise, drawn exactly like `torch.randn(shape, generator=torch.Generator().manual_seed(seed))`
   * on CPU (see `TorchGenerator`), so it matches diffusers on CPU. Defaults to a random seed (reported in the result).
   */
  seed?: number
  /** Starting latents [B·numImagesPerPrompt, C, H/32, W/32] for text-to-image; overrides `seed`. */
  latents?: Tensor
  /** N(0,1) noise for each step of the stochastic SCM scheduler (Sprint), overriding the seeded draws. */
  schedulerNoise?: Tensor[]
  /**
   * Snap the requested size to the nearest trained aspect-ratio bin, generate there, then resize and center-crop
   * back to exactly the requested size. Defaults to true for text-to-image and false with an `image`
   * (image inputs are resized to a multiple of 32 instead; binning them is not supported).
   */
  useResolutionBinning?: boolean
  /** `'image'` (SanaImage objects), `'tensor'` ([B,3,H,W] in [0,1]) or `'latent'`. Defaults to `'image'`. */
  outputType?: OutputType
  /**
   * The sampler for this call instead of `pipe.scheduler`, e.g. a flow-match Euler sampler with the pipeline's
   * flow shift: `new FlowMatchEulerDiscreteScheduler({ shift: 3 })`. Sana takes a DPMSolverMultistepScheduler or
   * a FlowMatchEulerDiscreteScheduler, Sprint an SCMScheduler. `setTimesteps` resets it at the start of the call.
   * Defaults to `pipe.scheduler` (built from scheduler_config.json).
   */
  scheduler?: Scheduler
  /** Called after every step (awaited). If it throws, `generate` rejects with that error and the pipeline stays usable. */
  onStep?: (event: StepEvent) => void | Promise<void>
  /**
   * Aborts with an `AbortError` (code `ABORT_ERR`): between steps, or at once while the call still waits for its
   * turn (calls on one pipeline run one after another). The pipeline stays usable.
   */
  signal?: AbortSignal
  /** Sprint: first TrigFlow angle. Defaults to 1.5708. */
  maxTimesteps?: number
  /** Sprint: middle angle of a 2-step schedule. Defaults to 1.3. */
  intermediateTimesteps?: number | null

  /**
   * img2img: start from this image instead of pure noise (a file path, PNG/JPEG/WebP bytes, a SanaImage, or a
   * Tensor [1, 3, H, W] in [0, 1]). It is resized to `width`×`height` when given, else down to a multiple of 32.
   * Sana: encoded, noised to the first kept timestep (SD3-img2img); Sprint: SanaSprintImg2ImgPipeline. Defaults to none.
   */
  image?: ImageInput
  /** Inpainting (base Sana, with `image`): white = repaint, black = keep; the image's size. Defaults to none. */
  maskImage?: ImageInput
  /**
   * How much of the schedule runs on the image, in (0, 1]: 1 starts from (almost) pure noise, small values stay
   * close to the image. Skips the first `numInferenceSteps − ⌊numInferenceSteps·strength⌋`-ish steps exactly as
   * diffusers computes it. Defaults to 0.6.
   */
  strength?: number
  /** img2img/inpainting: the N(0,1) noise [B, C, H/32, W/32] mixed into the image latents; overrides `seed`. */
  noise?: Tensor
  /** ControlNet conditioning image (needs a pipeline loaded with `controlnet`). Defaults to none. */
  controlImage?: ImageInput
  /** ControlNet residual scale. Defaults to 1.0. */
  controlnetConditioningScale?: number
  /** Perturbed-attention guidance scale (SanaPAGPipeline); 0 turns PAG off. Defaults to 0. */
  pagScale?: number
  /** PAG: lower the scale by this much per timestep unit below 1000 (`max(s − a·(1000 − t), 0)`). Defaults to 0. */
  pagAdaptiveScale?: number
  /**
   * PAG layers: diffusers' regexes searched in `transformer_blocks.{i}` (so `'transformer_blocks.1'` also selects
   * 10–19), or block indices. Defaults to `'transformer_blocks.0'` (diffusers' default).
   */
  pagAppliedLayers?: string | string[] | number[]
  /** LoRA scale for this call (diffusers' `attention_kwargs={"scale": s}`). Defaults to the adapters' weights. */
  loraScale?: number
  /** Attach a decoded preview (`event.previewImage`) to every k-th step event. Defaults to none. */
  previewEvery?: number
  /** Longest side of the attached previews, in pixels. Defaults to 512. */
  previewMaxSize?: number
}

/** One denoising step, as reported to `onStep` and yielded by `stream`. */
export interface StepEvent {
  /** 0-based step index. */
  step: number
  /** Steps this call runs (fewer than `numInferenceSteps` for img2img). */
  numSteps: number
  /** The scheduler timestep of this step. */
  timestep: number
  /** Latents after this step (native; copy with `toFloat32Array()` only if needed). */
  latents: Tensor
  /** The step's prediction of the final latents (x0), what a preview shows. */
  denoised: Tensor
  /**
   * Decode `denoised` into a small image: the latents are downscaled first so the longest side is at most
   * `maxSize` (default 512), so a 1024² image previews at 512² for a quarter of the decode cost.
   * @example onStep: async (e) => (await e.preview({ maxSize: 256 })).save('preview.png')
   */
  preview(options?: { maxSize?: number }): Promise<SanaImage>
  /** The decoded preview, on every `previewEvery`-th event. */
  previewImage?: SanaImage
}

/** Checked and defaulted options (sizes of image inputs are known only after decoding: see `pipeline.ts`). */
export interface ResolvedOptions {
  prompts: string[]
  negative: string[]
  /** The requested size, when given or implied (text-to-image); undefined with an image and no size given. */
  requested?: ImageSize
  /** The size generated at (the bin, with binning). */
  size?: ImageSize
  binning: boolean
  steps: number
  guidance: number
  perPrompt: number
  seed: number
  outputType: OutputType
  doCfg: boolean
  strength: number
  controlnetScale: number
  pag?: { scale: number; adaptiveScale: number; spec: string | string[] | number[] }
  previewEvery?: number
  previewMaxSize: number
  loraScale?: number
}

const VAE_SCALE = 32

/** Every key `generate` reads; anything else is a typo or an option of another library. */
const KNOWN_KEYS = [
  'prompt', 'negativePrompt', 'height', 'width', 'numInferenceSteps', 'guidanceScale', 'numImagesPerPrompt', 'seed',
  'latents', 'schedulerNoise', 'useResolutionBinning', 'outputType', 'scheduler', 'onStep', 'signal', 'maxTimesteps',
  'intermediateTimesteps', 'image', 'maskImage', 'strength', 'noise', 'controlImage', 'controlnetConditioningScale',
  'pagScale', 'pagAdaptiveScale', 'pagAppliedLayers', 'loraScale', 'previewEvery', 'previewMaxSize',
  'complexHumanInstruction', 'maxSequenceLength',
] as const satisfies readonly (keyof GenerateOptions)[]
// Compile-time check that the list names every option: a new option without an entry fails to build.
type Unlisted = Exclude<keyof GenerateOptions, (typeof KNOWN_KEYS)[number]>
const everyOptionListed: Unlisted extends never ? true : never = true
void everyOptionListed

/** Levenshtein distance, for "did you mean". */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0]
    d[0] = i
    for (let j = 1; j <= b.length; j++) {
      const tmp = d[j]
      d[j] = Math.min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1].toLowerCase() === b[j - 1].toLowerCase() ? 0 : 1))
      prev = tmp
    }
  }
  return d[b.length]
}

/**
 * Reject keys a call does not know (diffusers' `__call__` rejects unexpected keyword arguments too), naming the
 * closest known one.
 * @example rejectUnknownKeys({ numInferenceStep: 4 }, ['numInferenceSteps'], 'generate')
 */
export function rejectUnknownKeys(o: object, known: readonly string[], what: string): void {
  for (const key of Object.keys(o)) {
    if (known.includes(key) || (o as Record<string, unknown>)[key] === undefined) continue
    const closest = [...known].sort((a, b) => editDistance(key, a) - editDistance(key, b))[0]
    const hint = closest && editDistance(key, closest) <= Math.max(2, key.length / 3) ? `; did you mean "${closest}"?` : ''
    throw new SanaError('SANA_INVALID_ARGUMENT', `${what}: unknown option "${key}"${hint}`)
  }
}

/** An option that does not fit with the others: a SANA_INVALID_ARGUMENT naming it. */
function conflict(name: string, why: string): SanaError {
  return new SanaError('SANA_INVALID_ARGUMENT', `${name} ${why}`)
}

function positiveInt(name: string, v: unknown, fallback: number): number {
  const x = v ?? fallback
  if (!Number.isInteger(x) || (x as number) < 1) throw invalidArgument(name, 'a positive integer', v)
  return x as number
}

function finiteNumber(name: string, v: unknown, fallback: number, { min = -Infinity, max = Infinity, minExclusive = false } = {}): number {
  const x = v ?? fallback
  const low = minExclusive ? (x as number) <= min : (x as number) < min
  if (typeof x !== 'number' || !Number.isFinite(x) || low || x > max) {
    const range = max === Infinity ? `${minExclusive ? '>' : '≥'} ${min}` : `in ${minExclusive ? '(' : '['}${min}, ${max}]`
    throw invalidArgument(name, `a finite number ${min === -Infinity && max === Infinity ? '' : range}`.trim(), v)
  }
  return x
}

/** Samplers each pipeline kind can drive. */
const SCHEDULERS_FOR = {
  sana: ['DPMSolverMultistepScheduler', 'FlowMatchEulerDiscreteScheduler'],
  sprint: ['SCMScheduler'],
} as const

function checkScheduler(s: unknown, sprint: boolean): void {
  const allowed: readonly string[] = SCHEDULERS_FOR[sprint ? 'sprint' : 'sana']
  const className = (s as Partial<Scheduler> | null)?.className
  const usable = typeof s === 'object' && typeof (s as Scheduler).step === 'function' && typeof (s as Scheduler).setTimesteps === 'function'
  if (!usable || !allowed.includes(className as string)) {
    throw invalidArgument('scheduler', `a ${allowed.join(' or ')} (${sprint ? 'Sprint' : 'Sana'} pipeline)`, s)
  }
}

/** What `resolveOptions` needs to know about the pipeline. */
export interface PipelineTraits {
  sprint: boolean
  sampleSize: number
  /** Whether the pipeline was loaded with a ControlNet. */
  controlnet: boolean
}

/** Check and default the size: binning for text-to-image, exact multiples of 32 otherwise. */
function resolveSize(o: GenerateOptions, t: PipelineTraits, binning: boolean): { requested?: ImageSize; size?: ImageSize } {
  const native = t.sampleSize * VAE_SCALE
  const fromImage = o.image !== undefined
  const height = o.height === undefined && fromImage ? undefined : positiveInt('height', o.height, native)
  const width = o.width === undefined && fromImage ? undefined : positiveInt('width', o.width, native)
  if (!binning) {
    if (height !== undefined && height % VAE_SCALE) throw invalidArgument('height', 'a multiple of 32 (or useResolutionBinning: true)', height)
    if (width !== undefined && width % VAE_SCALE) throw invalidArgument('width', 'a multiple of 32 (or useResolutionBinning: true)', width)
  }
  if (height === undefined || width === undefined) {
    if (height !== width) throw conflict(height === undefined ? 'width' : 'height', 'needs the other side too when an image is passed (or neither: the image size is used)')
    return {}
  }
  const requested = { height, width }
  return { requested, size: binning ? classifyHeightWidthBin(height, width, aspectRatioTableFor(t.sampleSize)) : requested }
}

/** Validate every argument before any work (diffusers' `check_inputs`, plus types and unknown keys). */
export function resolveOptions(o: GenerateOptions, t: PipelineTraits): ResolvedOptions {
  if (!o || typeof o !== 'object') throw invalidArgument('options', 'an options object', o)
  rejectUnknownKeys(o, KNOWN_KEYS, 'generate')
  const prompts = promptList(o.prompt)
  const fromImage = o.image !== undefined
  const binning = o.useResolutionBinning ?? !fromImage
  if (typeof binning !== 'boolean') throw invalidArgument('useResolutionBinning', 'a boolean', binning)
  if (binning && fromImage) throw conflict('useResolutionBinning', 'is not supported with image: the image is resized to a multiple of 32 instead')
  const { requested, size } = resolveSize(o, t, binning)
  const steps = positiveInt('numInferenceSteps', o.numInferenceSteps, t.sprint ? 2 : 20)
  const guidance = finiteNumber('guidanceScale', o.guidanceScale, 4.5, { min: 0 })
  const perPrompt = positiveInt('numImagesPerPrompt', o.numImagesPerPrompt, 1)
  const seed = o.seed ?? Math.floor(Math.random() * 2 ** 32)
  if (!Number.isSafeInteger(seed) || seed < 0) throw invalidArgument('seed', 'a non-negative integer', o.seed)
  const outputType = o.outputType ?? 'image'
  if (!['image', 'tensor', 'latent'].includes(outputType)) {
    throw invalidArgument('outputType', "'image', 'tensor' or 'latent'", outputType)
  }
  const doCfg = !t.sprint && guidance > 1
  let negative: string[] = []
  if (doCfg) {
    negative = promptList(o.negativePrompt ?? '', 'negativePrompt')
    if (negative.length === 1) negative = prompts.map(() => negative[0])
    if (negative.length !== prompts.length) {
      throw invalidArgument('negativePrompt', `a string or an array of ${prompts.length} strings`, o.negativePrompt)
    }
  }
  const batch = prompts.length * perPrompt
  checkNoiseTensor('latents', o.latents, batch, size)
  checkNoiseTensor('noise', o.noise, batch, size)

  if (o.scheduler !== undefined) checkScheduler(o.scheduler, t.sprint)
  if (o.onStep !== undefined && typeof o.onStep !== 'function') throw invalidArgument('onStep', 'a function', o.onStep)
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw invalidArgument('signal', 'an AbortSignal', o.signal)

  // Image conditioning.
  if (fromImage) {
    checkImageInput('image', o.image)
    if (o.latents !== undefined) throw conflict('latents', 'replaces the image as the start; with image, pass noise to fix the starting noise')
  } else {
    for (const key of ['maskImage', 'strength', 'noise'] as const) {
      if (o[key] !== undefined) throw conflict(key, 'is used only with image (img2img / inpainting); pass image too')
    }
  }
  const strength = finiteNumber('strength', o.strength, 0.6, { min: 0, max: 1, minExclusive: true })
  const stepsRun = fromImage ? steps - startIndex(steps, strength) : steps
  if (o.schedulerNoise !== undefined) {
    if (!Array.isArray(o.schedulerNoise) || o.schedulerNoise.length < stepsRun || !o.schedulerNoise.every((x) => x instanceof Tensor)) {
      throw invalidArgument('schedulerNoise', `an array of ${stepsRun} Tensors (one per step run)`, o.schedulerNoise)
    }
  }
  if (o.maskImage !== undefined) {
    if (t.sprint) throw conflict('maskImage', 'is not supported by Sprint pipelines: inpainting is available for base Sana')
    checkImageInput('maskImage', o.maskImage, { mask: true })
  }
  if (o.controlImage !== undefined) {
    if (!t.controlnet) throw conflict('controlImage', 'needs a pipeline loaded with a controlnet: SanaPipeline.load(dir, { controlnet })')
    checkImageInput('controlImage', o.controlImage)
  } else if (t.controlnet) {
    throw conflict('controlImage', 'is required: this pipeline was loaded with a ControlNet')
  }
  const controlnetScale = finiteNumber('controlnetConditioningScale', o.controlnetConditioningScale, 1)

  // Perturbed-attention guidance.
  const pagScale = finiteNumber('pagScale', o.pagScale, 0, { min: 0 })
  const pagAdaptive = finiteNumber('pagAdaptiveScale', o.pagAdaptiveScale, 0, { min: 0 })
  if (pagScale > 0 && t.sprint) throw conflict('pagScale', 'is not supported by Sprint pipelines: PAG is available for base Sana')
  const spec = o.pagAppliedLayers ?? 'transformer_blocks.0'
  const specOk = typeof spec === 'string' || (Array.isArray(spec) && spec.length > 0 && (spec.every((x) => typeof x === 'string') || spec.every((x) => Number.isInteger(x))))
  if (!specOk) throw invalidArgument('pagAppliedLayers', 'a regex string, an array of them, or an array of block indices', spec)
  const loraScale = o.loraScale === undefined ? undefined : finiteNumber('loraScale', o.loraScale, 1)

  // Previews.
  const previewEvery = o.previewEvery === undefined ? undefined : positiveInt('previewEvery', o.previewEvery, 1)
  const previewMaxSize = positiveInt('previewMaxSize', o.previewMaxSize, 512)
  return {
    prompts, negative, requested, size, binning, steps, guidance, perPrompt, seed, outputType, doCfg, strength,
    controlnetScale, previewEvery, previewMaxSize, loraScale,
    pag: pagScale > 0 ? { scale: pagScale, adaptiveScale: pagAdaptive, spec } : undefined,
  }
}

function checkNoiseTensor(name: 'latents' | 'noise', v: Tensor | undefined, batch: number, size: ImageSize | undefined): void {
  if (v === undefined) return
  if (!(v instanceof Tensor)) throw invalidArgument(name, 'a Tensor', v)
  const s = v.shape
  const [h, w] = size ? [size.height / VAE_SCALE, size.width / VAE_SCALE] : [s[2], s[3]]
  if (s.length !== 4 || s[0] !== batch || s[2] !== h || s[3] !== w) {
    const binned = size && name === 'latents' ? ` (the generation size ${size.width}×${size.height}, after resolution binning)` : ''
    throw invalidArgument(name, `a Tensor of shape [${batch}, C, ${h}, ${w}]${binned}`, `shape [${s}]`)
  }
}

/** Repeat each row `k` times, consecutively (diffusers' `repeat(1, k, 1).view(B·k, …)`). */
export function repeatRows(t: Tensor, k: number): Tensor {
  if (k === 1) return t
  const idx = Array.from({ length: t.shape[0] * k }, (_, i) => Math.floor(i / k))
  return t.indexSelect(idx, 0)
}

export { SanaError }
