/**
 * `SanaPipeline`: loads a diffusers-format Sana pipeline folder (model_index.json + component folders)
 * and ties the components together.
 */
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { AutoencoderDC, checkDir, Gemma2TextEncoder, SanaTransformer2DModel, type LoadOptions } from './components'
import { SanaError } from './errors'

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
  transformer?: SanaTransformer2DModel
  vae?: AutoencoderDC
  textEncoder?: Gemma2TextEncoder
}

/** Options of {@link SanaPipeline.load}. */
export interface PipelineLoadOptions extends LoadOptions {
  /** Components to use as given rather than loading them (e.g. Sprint reusing a pipeline's text encoder). Defaults to none. */
  components?: PipelineComponents
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

export class SanaPipeline {
  /** The folder the pipeline was loaded from. */
  readonly dir: string
  readonly modelIndex: ModelIndex
  readonly transformer: SanaTransformer2DModel
  readonly vae: AutoencoderDC
  readonly textEncoder: Gemma2TextEncoder

  /** @internal */
  protected constructor(parts: {
    dir: string
    modelIndex: ModelIndex
    transformer: SanaTransformer2DModel
    vae: AutoencoderDC
    textEncoder: Gemma2TextEncoder
  }) {
    this.dir = parts.dir
    this.modelIndex = parts.modelIndex
    this.transformer = parts.transformer
    this.vae = parts.vae
    this.textEncoder = parts.textEncoder
  }

  /**
   * Load a diffusers-format Sana pipeline folder.
   * @example const pipe = await SanaPipeline.load('./Sana_600M_1024px_diffusers', { device: 'auto' })
   */
  static async load(dir: string, options: PipelineLoadOptions = {}): Promise<SanaPipeline> {
    const root = checkDir(dir, 'pipeline')
    const modelIndex = readModelIndex(root)
    const given = options.components ?? {}
    const loadOpts: LoadOptions = { device: options.device, dtype: options.dtype, variant: options.variant }
    // Check every folder before loading anything, so a missing one fails fast and loads nothing.
    const needed: ComponentSlot[] = []
    if (!given.transformer) needed.push('transformer')
    if (!given.vae) needed.push('vae')
    if (!given.textEncoder) needed.push('text_encoder')
    const dirs = componentDirs(root, needed)
    const loaded = await Promise.allSettled([
      given.transformer ?? SanaTransformer2DModel.load(dirs.transformer, loadOpts),
      given.vae ?? AutoencoderDC.load(dirs.vae, loadOpts),
      given.textEncoder ?? Gemma2TextEncoder.load(dirs.text_encoder, loadOpts),
    ] as const)
    const failed = loaded.find((r) => r.status === 'rejected')
    if (failed) {
      // No partial object: free what did load (but never the caller's components).
      for (const [i, r] of loaded.entries()) {
        const mine = [!given.transformer, !given.vae, !given.textEncoder][i]
        if (r.status === 'fulfilled' && mine) r.value.dispose()
      }
      throw (failed as PromiseRejectedResult).reason
    }
    const [transformer, vae, textEncoder] = loaded.map((r) => (r as PromiseFulfilledResult<unknown>).value) as [
      SanaTransformer2DModel,
      AutoencoderDC,
      Gemma2TextEncoder,
    ]
    return new SanaPipeline({ dir: root, modelIndex, transformer, vae, textEncoder })
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

  /** Free every component's weights. */
  dispose(): void {
    this.transformer.dispose()
    this.vae.dispose()
    this.textEncoder.dispose()
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose()
  }
}

