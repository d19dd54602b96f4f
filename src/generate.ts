/**
 * The sampling loop of `SanaPipeline.generate` / `stream`, following diffusers' `SanaPipeline.__call__`
 * and `SanaSprintPipeline.__call__` step by step. TypeScript drives it; every latent stays a native Tensor.
 */
import { SanaError, invalidArgument, throwIfAborted } from './errors'
import { aspectRatioTableFor, classifyHeightWidthBin, type ImageSize } from './postprocess'
import { promptList, type PromptOptions } from './prompt'
import { TorchGenerator } from './random'
import type { Scheduler, SCMScheduler } from './schedulers'
import { Tensor } from './tensor'

/** What the pipeline hands back. */
export type OutputType = 'image' | 'tensor' | 'latent'

/** Options of `SanaPipeline.generate` (diffusers' `__call__` arguments in camelCase). */
export interface GenerateOptions extends PromptOptions {
  /** What to draw: one prompt or a batch. */
  prompt: string | string[]
  /** What to steer away from (classifier-free guidance). Defaults to `''`; unused by Sprint. */
  negativePrompt?: string | string[]
  /** Output height in pixels. Defaults to the model's native size (`sample_size · 32`, 1024 for Sana 1024px). */
  height?: number
  /** Output width in pixels. Defaults to the model's native size. */
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
  /** Starting latents [B·numImagesPerPrompt, C, H/32, W/32]; overrides `seed`. */
  latents?: Tensor
  /** N(0,1) noise for each step of the stochastic SCM scheduler (Sprint), overriding the seeded draws. */
  schedulerNoise?: Tensor[]
  /**
   * Snap the requested size to the nearest trained aspect-ratio bin, generate there, then resize and center-crop
   * back to exactly the requested size. Defaults to true.
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
  /** Called after every step (awaited). */
  onStep?: (event: StepEvent) => void | Promise<void>
  /** Aborts between steps with an `AbortError` (code `ABORT_ERR`); the pipeline stays usable. */
  signal?: AbortSignal
  /** Sprint: first TrigFlow angle. Defaults to 1.5708. */
  maxTimesteps?: number
  /** Sprint: middle angle of a 2-step schedule. Defaults to 1.3. */
  intermediateTimesteps?: number | null
}

/** One denoising step, as reported to `onStep` and yielded by `stream`. */
export interface StepEvent {
  /** 0-based step index. */
  step: number
  numSteps: number
  /** The scheduler timestep of this step. */
  timestep: number
  /** Latents after this step (native; copy with `toFloat32Array()` only if needed). */
  latents: Tensor
}

/** Everything the loop needs from the pipeline. */
export interface LoopParts {
  sprint: boolean
  scheduler: Scheduler
  sampleSize: number
  latentChannels: number
  transformer: {
    forward(input: {
      hiddenStates: Tensor
      encoderHiddenStates: Tensor
      timestep: number[]
      encoderAttentionMask?: Tensor
      guidance?: number[]
    }): Promise<Tensor>
  }
  guidanceEmbedsScale: number
  /** transformer.config.timestep_scale (SanaPipeline multiplies the timestep by it). */
  timestepScale: number
}

/** Checked and defaulted options. */
export interface ResolvedOptions {
  prompts: string[]
  negative: string[]
  requested: ImageSize
  size: ImageSize
  steps: number
  guidance: number
  perPrompt: number
  seed: number
  outputType: OutputType
  doCfg: boolean
}

const VAE_SCALE = 32

function positiveInt(name: string, v: unknown, fallback: number): number {
  const x = v ?? fallback
  if (!Number.isInteger(x) || (x as number) < 1) throw invalidArgument(name, 'a positive integer', v)
  return x as number
}

/** Samplers each pipeline kind can drive (`denoise` has one loop per kind). */
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

/** Validate every argument before any work (diffusers' `check_inputs`, plus types). */
export function resolveOptions(o: GenerateOptions, parts: Pick<LoopParts, 'sprint' | 'sampleSize'>): ResolvedOptions {
  if (!o || typeof o !== 'object') throw invalidArgument('options', 'an options object', o)
  const prompts = promptList(o.prompt)
  const native = parts.sampleSize * VAE_SCALE
  const height = positiveInt('height', o.height, native)
  const width = positiveInt('width', o.width, native)
  const binning = o.useResolutionBinning ?? true
  if (typeof binning !== 'boolean') throw invalidArgument('useResolutionBinning', 'a boolean', binning)
  const requested = { height, width }
  let size = requested
  if (binning) {
    size = classifyHeightWidthBin(height, width, aspectRatioTableFor(parts.sampleSize))
  } else {
    if (height % VAE_SCALE) throw invalidArgument('height', 'a multiple of 32 (or useResolutionBinning: true)', height)
    if (width % VAE_SCALE) throw invalidArgument('width', 'a multiple of 32 (or useResolutionBinning: true)', width)
  }
  const steps = positiveInt('numInferenceSteps', o.numInferenceSteps, parts.sprint ? 2 : 20)
  const guidance = o.guidanceScale ?? 4.5
  if (typeof guidance !== 'number' || !Number.isFinite(guidance) || guidance < 0) {
    throw invalidArgument('guidanceScale', 'a finite number ≥ 0', o.guidanceScale)
  }
  const perPrompt = positiveInt('numImagesPerPrompt', o.numImagesPerPrompt, 1)
  const seed = o.seed ?? Math.floor(Math.random() * 2 ** 32)
  if (!Number.isSafeInteger(seed) || seed < 0) throw invalidArgument('seed', 'a non-negative integer', o.seed)
  const outputType = o.outputType ?? 'image'
  if (!['image', 'tensor', 'latent'].includes(outputType)) {
    throw invalidArgument('outputType', "'image', 'tensor' or 'latent'", outputType)
  }
  const doCfg = !parts.sprint && guidance > 1
  let negative: string[] = []
  if (doCfg) {
    negative = promptList(o.negativePrompt ?? '', 'negativePrompt')
    if (negative.length === 1) negative = prompts.map(() => negative[0])
    if (negative.length !== prompts.length) {
      throw invalidArgument('negativePrompt', `a string or an array of ${prompts.length} strings`, o.negativePrompt)
    }
  }
  const batch = prompts.length * perPrompt
  const latentShape = [batch, -1, size.height / VAE_SCALE, size.width / VAE_SCALE]
  if (o.latents !== undefined) {
    if (!(o.latents instanceof Tensor)) throw invalidArgument('latents', 'a Tensor', o.latents)
    const s = o.latents.shape
    if (s.length !== 4 || s[0] !== batch || s[2] !== latentShape[2] || s[3] !== latentShape[3]) {
      throw invalidArgument('latents', `a Tensor of shape [${batch}, C, ${latentShape[2]}, ${latentShape[3]}]`, `shape [${s}]`)
    }
  }
  if (o.schedulerNoise !== undefined) {
    if (!Array.isArray(o.schedulerNoise) || o.schedulerNoise.length < steps || !o.schedulerNoise.every((t) => t instanceof Tensor)) {
      throw invalidArgument('schedulerNoise', `an array of ${steps} Tensors (one per step)`, o.schedulerNoise)
    }
  }
  if (o.scheduler !== undefined) checkScheduler(o.scheduler, parts.sprint)
  if (o.onStep !== undefined && typeof o.onStep !== 'function') throw invalidArgument('onStep', 'a function', o.onStep)
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw invalidArgument('signal', 'an AbortSignal', o.signal)
  return { prompts, negative, requested, size, steps, guidance, perPrompt, seed, outputType, doCfg }
}

/** Repeat each row `k` times, consecutively (diffusers' `repeat(1, k, 1).view(B·k, …)`). */
export function repeatRows(t: Tensor, k: number): Tensor {
  if (k === 1) return t
  const idx = Array.from({ length: t.shape[0] * k }, (_, i) => Math.floor(i / k))
  return t.indexSelect(idx, 0)
}

function rowsOf(t: Tensor, start: number, count: number): Tensor {
  return t.indexSelect(
    Array.from({ length: count }, (_, i) => start + i),
    0,
  )
}

/** Starting noise: given latents (as float32), or seeded torch-compatible N(0,1). */
export function initialLatents(o: GenerateOptions, r: ResolvedOptions, channels: number, rng: TorchGenerator): Tensor {
  if (o.latents) return Tensor.linearCombination([o.latents], [1]) // a float32 copy, as diffusers' `.to(float32)`
  const shape = [r.prompts.length * r.perPrompt, channels, r.size.height / VAE_SCALE, r.size.width / VAE_SCALE]
  return Tensor.fromFloat32Array(rng.randn(shape.reduce((a, b) => a * b, 1)), shape)
}

/**
 * The denoising loop. Yields a StepEvent after each step and returns the latents to decode
 * (already divided by σ_d for Sprint).
 */
export async function* denoise(
  parts: LoopParts,
  o: GenerateOptions,
  r: ResolvedOptions,
  text: { embeds: Tensor; mask: Tensor },
  rng: TorchGenerator,
): AsyncGenerator<StepEvent, Tensor> {
  const { scheduler, transformer } = parts
  let latents = initialLatents(o, r, parts.latentChannels, rng)
  if (parts.sprint) {
    const scm = scheduler as SCMScheduler
    scm.setTimesteps(r.steps, { maxTimesteps: o.maxTimesteps, intermediateTimesteps: o.intermediateTimesteps })
    const sigmaData = scm.config.sigma_data
    latents = Tensor.linearCombination([latents], [sigmaData])
    const batch = latents.shape[0]
    // float32 like diffusers: torch.full([1], g, float32) * guidance_embeds_scale
    const guidance = new Array(batch).fill(Math.fround(Math.fround(r.guidance) * Math.fround(parts.guidanceEmbedsScale)))
    let denoised = latents
    const ts = scheduler.timesteps.slice(0, r.steps)
    for (const [step, t] of ts.entries()) {
      throwIfAborted(o.signal)
      // 1. TrigFlow angle → the transformer's timestep and input scale (SanaSprintPipeline).
      const s = scm.trigflowScales(t)
      const input = Tensor.linearCombination([latents], [s.inputScale])
      const out = await transformer.forward({
        hiddenStates: input,
        encoderHiddenStates: text.embeds,
        encoderAttentionMask: text.mask,
        timestep: new Array(batch).fill(s.timestep),
        guidance,
      })
      // 2. Model output → TrigFlow prediction (× σ_d folded into the coefficients), then the sCM step.
      const flow = Tensor.linearCombination([input, out], [s.inputCoeff, s.outputCoeff])
      const noise = o.schedulerNoise?.[step] ?? Tensor.fromFloat32Array(rng.randn(latents.size), latents.shape)
      const res = await scheduler.step(flow, t, latents, { noise })
      latents = res.prevSample
      denoised = res.denoised
      yield { step, numSteps: r.steps, timestep: t, latents }
    }
    return Tensor.linearCombination([denoised], [1 / sigmaData])
  }

  scheduler.setTimesteps(r.steps)
  const ts = scheduler.timesteps.slice(0, r.steps)
  const batch = latents.shape[0]
  for (const [step, t] of ts.entries()) {
    throwIfAborted(o.signal)
    // 1. CFG batch: [latents, latents] against [negative, positive] embeddings.
    const input = r.doCfg ? Tensor.cat([latents, latents], 0) : latents
    // SanaPipeline: t.expand(B) * transformer.config.timestep_scale (float32); the model itself does not scale.
    const tt = Math.fround(scheduler.transformerTimestep(t) * parts.timestepScale)
    const out = await transformer.forward({
      hiddenStates: input,
      encoderHiddenStates: text.embeds,
      encoderAttentionMask: text.mask,
      timestep: new Array(input.shape[0]).fill(tt),
    })
    // 2. Guidance: uncond + g·(text − uncond), in float32.
    let noisePred = out
    if (r.doCfg) {
      const uncond = rowsOf(out, 0, batch)
      const diff = Tensor.linearCombination([rowsOf(out, batch, batch), uncond], [1, -1])
      noisePred = Tensor.linearCombination([uncond, diff], [1, Math.fround(r.guidance)]) // same rounding order as torch
    }
    // 3. Scheduler update.
    latents = (await scheduler.step(noisePred, t, latents)).prevSample
    yield { step, numSteps: r.steps, timestep: t, latents }
  }
  return latents
}

export { SanaError }
