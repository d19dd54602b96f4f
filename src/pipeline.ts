/**
 * `SanaPipeline`: loads a diffusers-format Sana pipeline folder (model_index.json + component folders)
 * and ties the components together.
 */
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { AutoencoderDC, checkDir, Gemma2TextEncoder, SanaControlNetModel, SanaTransformer2DModel, type LoadOptions } from './components'
import { SanaError, throwIfAborted } from './errors'
import { chiLines, checkMaxSequenceLength, preprocessPrompt, promptList, promptTokenBudget, selectIndex, type PromptOptions } from './prompt'
import { Tensor } from './tensor'
import { GemmaTokenizer, type Encoding } from './tokenizer'
import { repeatRows, resolveOptions, type GenerateOptions, type OutputType, type ResolvedOptions, type StepEvent } from './generate'
import { parsePythonJson } from './json'
import { denormalize, resizeAndCropTensor, type ImageSize, type PlanarImage } from './postprocess'
import { SanaImage } from './png'
import { TorchGenerator } from './random'
import { schedulerFromConfig, type Scheduler } from './schedulers'
import { resolveModel, type ResolveModelOptions } from './hub'
import { assertFits, type MemoryDType } from './memory'
import * as lora from './lora'
import type { FuseLoraOptions, LoadLoraOptions, LoraAdapterInfo } from './lora'
import { defaultSize, imageSize } from './preprocess'
import { decodePreview } from './preview'
import { buildRecipe, type PromptRows } from './sampling/build'
import { sample } from './sampling/loop'
import { Turns } from './turns'

/** The component slots of a Sana pipeline, in model_index.json's names. */
export const COMPONENT_SLOTS = ['tokenizer', 'text_encoder', 'transformer', 'vae', 'scheduler'] as const
export type ComponentSlot = (typeof COMPONENT_SLOTS)[number]

/** Classes we can load for each slot (the `[library, class]` pairs of model_index.json). */
const KNOWN_CLASSES: Record<ComponentSlot, readonly string[]> = {
  tokenizer: ['GemmaTokenizer', 'GemmaTokenizerFast'],
  text_encoder: ['Gemma2Model', 'Gemma2ForCausalLM'],
  transformer: ['SanaTransformer2DModel'],
  vae: ['AutoencoderDC'],
  scheduler: ['DPMSolverMultistepScheduler', 'FlowMatchEulerDiscreteScheduler', 'SCMScheduler'],
}
const PIPELINE_CLASSES = ['SanaPipeline', 'SanaSprintPipeline'] as const

/** model_index.json: the pipeline class and `[library, class]` per component. */
export interface ModelIndex {
  className: (typeof PIPELINE_CLASSES)[number]
  diffusersVersion?: string
  components: Partial<Record<ComponentSlot, [string, string]>>
}

/** Already-loaded components to reuse instead of loading them from the folder (diffusers does the same). */
export interface PipelineComponents {
  tokenizer?: GemmaTokenizer
  scheduler?: Scheduler
  transformer?: SanaTransformer2DModel
  vae?: AutoencoderDC
  textEncoder?: Gemma2TextEncoder
}

/** Options of {@link SanaPipeline.load}: device/dtype, plus Hub options used when a repo id is given. */
export interface PipelineLoadOptions extends LoadOptions, Omit<ResolveModelOptions, 'variant'> {
  /** Components to use as given rather than loading them (e.g. Sprint reusing a pipeline's text encoder). Defaults to none. */
  components?: PipelineComponents
  /**
   * A ControlNet for `generate({ controlImage })`: a loaded {@link SanaControlNetModel} (kept by the caller), or its
   * folder (loaded with this pipeline's device and dtype, and freed by `dispose`). Defaults to none.
   */
  controlnet?: SanaControlNetModel | string
}

function readJsonFile(path: string, what: string): unknown {
  if (!existsSync(path)) throw new SanaError('SANA_NOT_FOUND', `${what} not found: ${path}`)
  const text = readFileSync(path, 'utf8')
  try {
    return JSON.parse(text)
  } catch (e) {
    throw new SanaError('SANA_INVALID_JSON', `malformed JSON in ${path}: ${(e as Error).message}`)
  }
}

/** Read and check model_index.json. */
export function readModelIndex(dir: string): ModelIndex {
  const path = join(dir, 'model_index.json')
  const raw = readJsonFile(path, 'model_index.json') as Record<string, unknown>
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new SanaError('SANA_INVALID_JSON', `malformed JSON in ${path}: expected an object`)
  }
  const cls = raw._class_name
  if (!PIPELINE_CLASSES.includes(cls as never)) {
    throw new SanaError(
      'SANA_UNKNOWN_CLASS',
      `unknown _class_name ${JSON.stringify(cls)} in ${path} (expected ${PIPELINE_CLASSES.join(' or ')})`,
    )
  }
  const components: ModelIndex['components'] = {}
  for (const slot of COMPONENT_SLOTS) {
    const entry = raw[slot]
    if (entry === undefined || entry === null) continue
    if (!Array.isArray(entry) || entry.length !== 2 || typeof entry[1] !== 'string') {
      throw new SanaError('SANA_INVALID_CONFIG', `${path}: "${slot}" must be a [library, class] pair`)
    }
    if (!KNOWN_CLASSES[slot].includes(entry[1])) {
      throw new SanaError(
        'SANA_UNKNOWN_CLASS',
        `unknown class "${entry[1]}" for ${slot} in ${path} (expected ${KNOWN_CLASSES[slot].join(' or ')})`,
      )
    }
    components[slot] = [String(entry[0]), entry[1]]
  }
  return { className: cls as ModelIndex['className'], diffusersVersion: raw._diffusers_version as string, components }
}

/** Folders of the components the caller did not supply; all must exist. */
function componentDirs(dir: string, slots: ComponentSlot[]): Record<string, string> {
  const missing = slots.filter((s) => !existsSync(join(dir, s)))
  if (missing.length > 0) {
    const list = missing.map((s) => `"${s}"`).join(', ')
    throw new SanaError(
      'SANA_NOT_FOUND',
      `component folder(s) ${list} listed in ${join(dir, 'model_index.json')} not found in ${dir}; ` +
        `pass already-loaded components in options.components`,
    )
  }
  return Object.fromEntries(slots.map((s) => [s, join(dir, s)]))
}

/** Everything a loaded pipeline exposes as `pipe.config`. */
export interface PipelineConfig {
  modelIndex: ModelIndex
  transformer: SanaTransformer2DModel['config']
  vae: AutoencoderDC['config']
  textEncoder: Gemma2TextEncoder['config']
}

/** Options of {@link SanaPipeline.encodePrompt}. */
export interface EncodePromptOptions extends PromptOptions {
  /** Negative prompt(s), used with classifier-free guidance. Defaults to `''`. */
  negativePrompt?: string | string[]
  /** Also encode the negative prompts. Defaults to true. */
  doClassifierFreeGuidance?: boolean
}

/** What {@link SanaPipeline.encodePrompt} returns: native tensors ready for the transformer. */
export interface PromptEmbeddings {
  /** [B, maxSequenceLength, hidden] */
  promptEmbeds: Tensor
  /** [B, maxSequenceLength], int64 1/0 */
  promptAttentionMask: Tensor
  negativePromptEmbeds?: Tensor
  negativePromptAttentionMask?: Tensor
}

/** What {@link SanaPipeline.generate} resolves to. */
export interface GenerateResult<O extends OutputType = 'image'> {
  /** SanaImage[] for `'image'`; a Tensor [B,3,H,W] in [0,1] for `'tensor'`; the final latents for `'latent'`. */
  images: O extends 'image' ? SanaImage[] : Tensor
  /** The seed of the starting noise (the given one, or the one drawn). */
  seed: number
  /** Wall time of each denoising step, ms. */
  stepTimesMs: number[]
  /** Wall time of the whole call, ms. */
  totalMs: number
}

/** NaN/Inf latents decode to a grey or black image; say so instead (the classic fp16 failure). */
function throwIfNotFinite(values: Float32Array, dtype: string): void {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) {
      // float16 overflows are the classic cause; in float32 or bfloat16 suspect the inputs or the weights.
      const hint = dtype === 'float16'
        ? 'numerical overflow; try dtype: "bfloat16" or "float32" instead of "float16"'
        : `computed in ${dtype}: check the inputs (latents, noise, images) and the checkpoint's weights for NaN/Inf`
      throw new SanaError('SANA_COMPUTE_ERROR', `the denoised latents contain NaN or Inf values (${hint})`)
    }
  }
}

function maskTensor(enc: Encoding): Tensor {
  const rows = enc.attentionMask
  return Tensor.fromInt32Array(Int32Array.from(rows.flat()), [rows.length, rows[0].length])
}

export class SanaPipeline {
  /** The folder the pipeline was loaded from. */
  readonly dir: string
  readonly modelIndex: ModelIndex
  readonly transformer: SanaTransformer2DModel
  readonly vae: AutoencoderDC
  readonly textEncoder: Gemma2TextEncoder
  readonly tokenizer: GemmaTokenizer
  /** The sampler, built from scheduler_config.json. */
  readonly scheduler: Scheduler
  /** scheduler_config.json as written (Python's -Infinity etc. read as numbers). */
  readonly schedulerConfig: Record<string, unknown>
  /** The ControlNet `generate({ controlImage })` uses, if the pipeline was loaded with one. */
  readonly controlnet?: SanaControlNetModel
  /** Whether `dispose` frees the ControlNet (loaded by `load` from a folder, not passed in). */
  readonly #ownsControlnet: boolean
  /** Serialises generations: a scheduler holds per-generation state. */
  readonly #turns = new Turns()

  /** @internal */
  protected constructor(parts: {
    dir: string
    modelIndex: ModelIndex
    scheduler: Scheduler
    schedulerConfig: Record<string, unknown>
    tokenizer: GemmaTokenizer
    transformer: SanaTransformer2DModel
    vae: AutoencoderDC
    textEncoder: Gemma2TextEncoder
    controlnet?: SanaControlNetModel
    ownsControlnet?: boolean
  }) {
    this.controlnet = parts.controlnet
    this.#ownsControlnet = parts.ownsControlnet ?? false
    this.dir = parts.dir
    this.modelIndex = parts.modelIndex
    this.tokenizer = parts.tokenizer
    this.scheduler = parts.scheduler
    this.schedulerConfig = parts.schedulerConfig
    this.transformer = parts.transformer
    this.vae = parts.vae
    this.textEncoder = parts.textEncoder
  }

  /**
   * Load a diffusers-format Sana pipeline: a local folder, or a Hub repo id (downloaded into the shared
   * Hugging Face cache on first use; see `resolveModel` for revision, offline mode, tokens and progress).
   * @example const pipe = await SanaPipeline.load('Efficient-Large-Model/Sana_600M_1024px_diffusers', { device: 'auto' })
   */
  static async load(dirOrRepoId: string, options: PipelineLoadOptions = {}): Promise<SanaPipeline> {
    const { revision, endpoint, token, offline, refresh, signal, onProgress, cacheDir, timeoutMs } = options
    const local = await resolveModel(dirOrRepoId, {
      revision, endpoint, token, offline, refresh, signal, onProgress, cacheDir, timeoutMs, variant: options.variant,
    })
    const root = checkDir(local, 'pipeline')
    const modelIndex = readModelIndex(root)
    const given = options.components ?? {}
    const loadOpts: LoadOptions = { device: options.device, dtype: options.dtype, variant: options.variant }
    // Check every folder before loading anything, so a missing one fails fast and loads nothing.
    const needed: ComponentSlot[] = []
    if (!given.tokenizer) needed.push('tokenizer')
    if (!given.scheduler) needed.push('scheduler')
    if (!given.transformer) needed.push('transformer')
    if (!given.vae) needed.push('vae')
    if (!given.textEncoder) needed.push('text_encoder')
    const dirs = componentDirs(root, needed)
    // The scheduler is configuration only: read it first, so a bad config fails before any weights load.
    let schedulerConfig: Record<string, unknown> = {}
    let scheduler = given.scheduler
    if (!scheduler) {
      const path = join(dirs.scheduler, 'scheduler_config.json')
      if (!existsSync(path)) throw new SanaError('SANA_NOT_FOUND', `scheduler_config.json not found: ${path}`)
      try {
        schedulerConfig = parsePythonJson(readFileSync(path, 'utf8')) as Record<string, unknown>
      } catch (e) {
        throw new SanaError('SANA_INVALID_JSON', `malformed JSON in ${path}: ${(e as Error).message}`)
      }
      scheduler = schedulerFromConfig(schedulerConfig)
    }
    const cn = options.controlnet
    if (cn !== undefined && typeof cn !== 'string' && !(cn instanceof SanaControlNetModel)) {
      throw new SanaError('SANA_INVALID_ARGUMENT', `Expected a SanaControlNetModel or a folder for controlnet but received ${typeof cn}`)
    }
    if (cn !== undefined && modelIndex.className === 'SanaSprintPipeline') {
      throw new SanaError('SANA_INVALID_ARGUMENT', 'controlnet: ControlNet is available for base Sana pipelines, not Sprint')
    }
    const loaded = await Promise.allSettled([
      given.tokenizer ?? GemmaTokenizer.load(dirs.tokenizer),
      given.transformer ?? SanaTransformer2DModel.load(dirs.transformer, loadOpts),
      given.vae ?? AutoencoderDC.load(dirs.vae, loadOpts),
      given.textEncoder ?? Gemma2TextEncoder.load(dirs.text_encoder, loadOpts),
      typeof cn === 'string' ? SanaControlNetModel.load(cn, loadOpts) : cn,
    ] as const)
    const failed = loaded.find((r) => r.status === 'rejected')
    if (failed) {
      // No partial object: free what did load (but never the caller's components).
      for (const [i, r] of loaded.entries()) {
        const mine = [false, !given.transformer, !given.vae, !given.textEncoder, typeof cn === 'string'][i]
        if (r.status === 'fulfilled' && mine) (r.value as { dispose(): void }).dispose()
      }
      throw (failed as PromiseRejectedResult).reason
    }
    const [tokenizer, transformer, vae, textEncoder, controlnet] = loaded.map((r) => (r as PromiseFulfilledResult<unknown>).value) as [
      GemmaTokenizer,
      SanaTransformer2DModel,
      AutoencoderDC,
      Gemma2TextEncoder,
      SanaControlNetModel | undefined,
    ]
    return new SanaPipeline({
      dir: root, modelIndex, scheduler, schedulerConfig, tokenizer, transformer, vae, textEncoder,
      controlnet, ownsControlnet: typeof cn === 'string',
    })
  }

  /** model_index plus each component's parsed config (camelCase keys). */
  get config(): PipelineConfig {
    return {
      modelIndex: this.modelIndex,
      transformer: this.transformer.config,
      vae: this.vae.config,
      textEncoder: this.textEncoder.config,
    }
  }

  /** Where the denoiser runs: `'cpu'` or `'cuda:N'` (`'auto'` resolved). */
  get device(): string {
    return this.transformer.device
  }

  /**
   * Token ids and masks exactly as diffusers feeds them to the text encoder (before `select_index`):
   * `text.lower().strip()`, CHI prepended (positive prompts), right padding to
   * CHI tokens + maxSequenceLength − 2 (or maxSequenceLength without CHI), `<bos>` first.
   * @example pipe.tokenizePrompt('a red fox in snow').inputIds[0].length // 506 with the default CHI
   */
  tokenizePrompt(prompt: string | string[], options: PromptOptions = {}): Encoding {
    const texts = promptList(prompt).map(preprocessPrompt)
    const maxSequenceLength = checkMaxSequenceLength(options.maxSequenceLength)
    const chi = chiLines(options.complexHumanInstruction)
    const maxPositions = this.textEncoder.config.maxPositionEmbeddings
    if (!chi) return this.tokenizer.encodeSync(texts, { maxLength: promptTokenBudget(maxSequenceLength, 0, maxPositions), padding: true })
    const chiPrompt = chi.join('\n')
    // diffusers: len(tokenizer.encode(chi_prompt)) counts <bos>; the budget keeps maxSequenceLength − 2 more.
    const numChi = this.tokenizer.encodeSync([chiPrompt]).inputIds[0].length
    return this.tokenizer.encodeSync(
      texts.map((t) => chiPrompt + t),
      { maxLength: promptTokenBudget(maxSequenceLength, numChi, maxPositions), padding: true },
    )
  }

  /**
   * diffusers' `encode_prompt`: Gemma-2 hidden states of the (CHI-prefixed) prompts, reduced to `<bos>` plus the
   * last maxSequenceLength − 1 positions, and — with classifier-free guidance — of the negative prompts (no CHI).
   * @example const { promptEmbeds, promptAttentionMask } = await pipe.encodePrompt('a red fox in snow')
   */
  async encodePrompt(prompt: string | string[], options: EncodePromptOptions = {}): Promise<PromptEmbeddings> {
    const prompts = promptList(prompt)
    const maxSequenceLength = checkMaxSequenceLength(options.maxSequenceLength)
    const doCfg = options.doClassifierFreeGuidance ?? true
    // Validate everything before running the encoder.
    const negatives = doCfg ? promptList(options.negativePrompt ?? '', 'negativePrompt') : []
    if (doCfg && negatives.length !== 1 && negatives.length !== prompts.length) {
      throw new SanaError(
        'SANA_INVALID_ARGUMENT',
        `Expected negativePrompt to be a string or an array of ${prompts.length} strings but received ${negatives.length}`,
      )
    }
    const tok = this.tokenizePrompt(prompts, { ...options, maxSequenceLength })
    const hidden = await this.textEncoder.forward(tok)
    const select = selectIndex(tok.inputIds[0].length, maxSequenceLength)
    const mask = maskTensor(tok)
    const out: PromptEmbeddings = {
      promptEmbeds: hidden.indexSelect(select, 1),
      promptAttentionMask: mask.indexSelect(select, 1),
    }
    if (doCfg) {
      const negTexts = negatives.length === 1 ? prompts.map(() => negatives[0]) : negatives
      const negTok = this.tokenizePrompt(negTexts, { complexHumanInstruction: null, maxSequenceLength })
      out.negativePromptEmbeds = await this.textEncoder.forward(negTok)
      out.negativePromptAttentionMask = maskTensor(negTok)
    }
    return out
  }

  /** True for a SANA-Sprint pipeline (SCM sampler, guidance embedding, 2 steps by default). */
  get isSprint(): boolean {
    return this.modelIndex.className === 'SanaSprintPipeline'
  }

  /**
   * Generate images: prompt encoding, the denoising loop, VAE decode and post-processing, as diffusers'
   * `SanaPipeline.__call__` (or `SanaSprintPipeline.__call__` for Sprint checkpoints).
   * @example
   * const { images } = await pipe.generate({ prompt: 'a red fox in snow', numInferenceSteps: 20, seed: 42 })
   * await images[0].save('fox.png')
   */
  async generate<O extends OutputType = 'image'>(options: GenerateOptions & { outputType?: O }): Promise<GenerateResult<O>> {
    const it = this.stream(options)
    let finished = false
    try {
      for (;;) {
        const { value, done } = await it.next()
        if (done) {
          finished = true
          return value
        }
        await options.onStep?.(value)
      }
    } finally {
      // A throwing onStep leaves the generator suspended at a yield: close it so its turn is released.
      if (!finished) await it.return(undefined as never)
    }
  }

  /**
   * Like {@link generate}, as an async iterator: yields a {@link StepEvent} after each denoising step, then
   * returns the result (`for await` sees the steps; the iterator's final `value` is the result). Calls on one
   * pipeline run one at a time, in order; breaking out of the loop ends the generation and frees its turn.
   * @example for await (const ev of pipe.stream({ prompt })) bar.update(ev.step + 1)
   */
  async *stream<O extends OutputType = 'image'>(options: GenerateOptions & { outputType?: O }): AsyncGenerator<StepEvent, GenerateResult<O>> {
    const sampleSize = this.transformer.config.sampleSize
    const r = resolveOptions(options, { sprint: this.isSprint, sampleSize, controlnet: this.controlnet !== undefined })
    const release = await this.#turns.acquire(options.signal)
    try {
      const started = performance.now()
      // 1. Image inputs decide the size when none is given (rounded down to a multiple of 32).
      const size = await this.#resolveSize(options, r)
      // 2. Will it fit? Checked against free memory before any model work (the weights are already resident).
      assertFits({
        model: this.config,
        device: this.device,
        dtype: this.transformer.dtype as MemoryDType,
        width: size.width,
        height: size.height,
        batch: r.prompts.length * r.perPrompt,
        prompts: r.prompts.length,
        guidance: r.doCfg || r.pag !== undefined,
        maxSequenceLength: options.maxSequenceLength,
        decode: this.vae.tilingOptions,
        weightsLoaded: true,
      })
      // 3. Text: positive (and negative, for CFG) embeddings, one row per image.
      const text = await this.#encodeRows(options, r)
      // 4. Denoise.
      const rng = new TorchGenerator(r.seed)
      const scheduler = options.scheduler ?? this.scheduler
      const tc = this.transformer.config
      const recipe = await buildRecipe(
        {
          sprint: this.isSprint,
          scheduler,
          vae: this.vae,
          controlnet: this.controlnet,
          latentChannels: tc.inChannels,
          numLayers: tc.numLayers,
          timestepScale: tc.timestepScale ?? 1,
          guidanceEmbedsScale: tc.guidanceEmbedsScale ?? 0.1,
        },
        options,
        { ...r, size },
        text,
        rng,
      )
      const loop = sample(recipe, scheduler, this.transformer, options.signal)
      let latents: Tensor
      const stepTimes: number[] = []
      let t0 = performance.now()
      try {
        for (;;) {
          const { value, done } = await loop.next()
          if (done) {
            latents = value
            break
          }
          await value.latents.synchronize() // on CUDA: the step's time, not its launch time
          stepTimes.push(performance.now() - t0)
          const event: StepEvent = { ...value, preview: (o) => decodePreview(this.vae, value.denoised, o) }
          if (r.previewEvery && (value.step + 1) % r.previewEvery === 0) {
            event.previewImage = await event.preview({ maxSize: r.previewMaxSize })
          }
          yield event
          t0 = performance.now()
        }
      } finally {
        // A consumer that stops early, or a failed preview, must still end the loop: that frees its caption
        // cache now (a finished loop ignores this).
        await loop.return(undefined as never)
      }
      const meta = { seed: r.seed, stepTimesMs: stepTimes }
      if (r.outputType === 'latent') {
        return { images: latents, ...meta, totalMs: performance.now() - started } as GenerateResult<O>
      }
      // 5. Decode (latents / scaling_factor), then resize/crop back from the bin and denormalise.
      throwIfAborted(options.signal)
      throwIfNotFinite(await latents.toFloat32Array(), this.transformer.dtype)
      const z = Tensor.linearCombination([latents], [1 / this.vae.config.scalingFactor])
      const raw = await this.vae.decode(z)
      let image: PlanarImage = { data: await raw.toFloat32Array(), shape: raw.shape as [number, number, number, number] }
      const requested = r.requested ?? size
      if (size.height !== requested.height || size.width !== requested.width) image = resizeAndCropTensor(image, requested)
      image = denormalize(image)
      const totalMs = performance.now() - started
      if (r.outputType === 'tensor') {
        return { images: Tensor.fromFloat32Array(image.data, [...image.shape]), ...meta, totalMs } as GenerateResult<O>
      }
      const images = Array.from({ length: image.shape[0] }, (_, index) =>
        SanaImage.fromPlanar(image, {
          index,
          metadata: {
            prompt: r.prompts[Math.floor(index / r.perPrompt)],
            seed: r.seed,
            steps: r.steps,
            guidance: r.guidance,
            scheduler: scheduler.className,
            model: this.dir,
            software: 'sana-node',
            ...(options.image !== undefined ? { strength: r.strength } : {}),
          },
        }),
      )
      return { images, ...meta, totalMs } as GenerateResult<O>
    } finally {
      release()
    }
  }

  /** The generation size: as resolved, or from the image input (its size rounded down to a multiple of 32). */
  async #resolveSize(o: GenerateOptions, r: ResolvedOptions): Promise<ImageSize> {
    if (r.size) return r.size
    const { width, height } = await imageSize('image', o.image!)
    return defaultSize(width, height, {})
  }

  /** Prompt embeddings and masks repeated per image (diffusers' `repeat(1, num_images_per_prompt, 1)`). */
  async #encodeRows(o: GenerateOptions, r: ResolvedOptions): Promise<PromptRows> {
    const enc = await this.encodePrompt(r.prompts, {
      negativePrompt: r.negative.length ? r.negative : undefined,
      doClassifierFreeGuidance: r.doCfg,
      complexHumanInstruction: o.complexHumanInstruction,
      maxSequenceLength: o.maxSequenceLength,
    })
    const rows = (embeds: Tensor, mask: Tensor) => ({ embeds: repeatRows(embeds, r.perPrompt), mask: repeatRows(mask, r.perPrompt) })
    return {
      positive: rows(enc.promptEmbeds, enc.promptAttentionMask),
      negative: r.doCfg ? rows(enc.negativePromptEmbeds!, enc.negativePromptAttentionMask!) : undefined,
    }
  }

  /** Free every component's weights. */
  dispose(): void {
    this.transformer.dispose()
    this.vae.dispose()
    this.textEncoder.dispose()
    if (this.#ownsControlnet) this.controlnet?.dispose()
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose()
  }

  // ─── LoRA (src/lora.ts) ───────────────────────────────────────────────────────────────────────

  /**
   * Load a LoRA into the transformer: a `.safetensors` file, a folder, or a Hub repo id (through the Hugging Face
   * cache), in the diffusers/peft layout `save_lora_weights` writes. Active at weight 1 beside those already active.
   * Keys that do not fit reject with an error naming them, and the pipeline stays as it was.
   * @returns The adapter's name (`adapterName`, default `default_<n>`).
   * @example await pipe.loadLoraWeights('./my-lora', { adapterName: 'pixel' })
   */
  loadLoraWeights(pathOrRepoId: string, options: LoadLoraOptions = {}): Promise<string> {
    return lora.loadLoraWeights(this.transformer, pathOrRepoId, options)
  }

  /**
   * Make exactly `names` active, with `weights` (default 1 each); `[]` disables every adapter.
   * @example await pipe.setAdapters(['pixel', 'toy'], [0.7, 0.5])
   */
  setAdapters(names: string[], weights?: number[]): Promise<void> {
    return lora.setAdapters(this.transformer, names, weights)
  }

  /**
   * Remove the named adapters.
   * @example await pipe.deleteAdapters(['toy'])
   */
  deleteAdapters(names: string[]): Promise<void> {
    return lora.deleteAdapters(this.transformer, names)
  }

  /**
   * Merge the active adapters into copies of the weights at `loraScale` (default 1); the per-call `loraScale` then
   * has no effect until {@link unfuseLora}.
   * @example await pipe.fuseLora({ loraScale: 0.8 })
   */
  fuseLora(options: FuseLoraOptions = {}): Promise<void> {
    return lora.fuseLora(this.transformer, options)
  }

  /**
   * Undo {@link fuseLora}: base weights plus the adapters at run time.
   * @example await pipe.unfuseLora()
   */
  unfuseLora(): Promise<void> {
    return lora.unfuseLora(this.transformer)
  }

  /**
   * Remove every adapter: the base model exactly, also after {@link fuseLora} (unlike diffusers, which keeps the
   * fused weights there).
   * @example await pipe.unloadLoraWeights()
   */
  unloadLoraWeights(): Promise<void> {
    return lora.unloadLoraWeights(this.transformer)
  }

  /**
   * The loaded adapters, in load order, with rank, alpha and weight.
   * @example pipe.listAdapters().filter((a) => a.active).map((a) => a.name)
   */
  listAdapters(): LoraAdapterInfo[] {
    return lora.listAdapters(this.transformer)
  }
}
