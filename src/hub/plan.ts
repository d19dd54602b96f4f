/**
 * Which files a diffusers pipeline needs, from a listing of a repo (the Hub's) or of a cached snapshot:
 * model_index.json, each component's config and tokenizer files, and each model component's
 * safetensors weights, chosen in the order the native loader tries them (`crates/sana-core/src/weights.rs`)
 * so the folder loads as it is. Pure functions, no I/O.
 */
import { posix } from 'node:path'
import { SanaError } from '../errors'

/** Base names of weights files, in the order the native loader tries them. */
const WEIGHT_BASES = ['diffusion_pytorch_model', 'model']
/** Config and tokenizer files of a component (json, vocab/merges txt, sentencepiece .model). */
const CONFIG_FILE = /\.(json|txt|model)$/
/** Index files of sharded weights (safetensors or torch), plain or variant. */
const WEIGHTS_INDEX = /\.(safetensors|bin)\.index(\.[\w-]+)?\.json$/

/** The files a pipeline needs, from a listing of a repo (the Hub's) or of a snapshot (the cache's). */
export interface PipelinePlan {
  /** Repo paths to fetch, model_index.json first, then each component's configs and weights. */
  files: string[]
  /** Sharded-weights indexes among `files`: their shards are added once the index is read. */
  indexes: string[]
  /** What the pipeline needs but the listing lacks, for people. */
  missing: string[]
  /** Components that have no weights of the requested variant, so their plain weights were chosen. */
  fallbacks: string[]
}

/** Weights-file candidates of one base name, in the native loader's order (`weights.rs` `candidates`). */
function weightCandidates(base: string, variant: string | undefined): string[] {
  const plain = [`${base}.safetensors`, `${base}.safetensors.index.json`]
  if (!variant) return plain
  return [`${base}.${variant}.safetensors`, `${base}.safetensors.index.${variant}.json`, `${base}.${variant}.safetensors.index.json`, ...plain]
}

/** Why a model component has no usable weights, for the error message. */
function whyNoWeights(names: string[], variant: string | undefined): string {
  const variants = new Set<string>()
  for (const n of names) {
    const m = /^[\w-]+\.([\w-]+)\.safetensors$|^[\w-]+\.safetensors\.index\.([\w-]+)\.json$/.exec(n)
    if (m) variants.add(m[1] ?? m[2])
  }
  if (variants.size > 0) {
    const list = [...variants].sort().join(', ')
    return variant ? `only variants ${list}, no ${variant} or plain weights` : `only variant weights (${list}): pass variant`
  }
  if (names.some((n) => /\.(bin|ckpt|pth|pt)$/.test(n))) return 'only .bin/.ckpt/.pth weights, which sana-node does not load'
  return 'no .safetensors weights'
}

/** Components listed in model_index.json: `{ "vae": ["diffusers", "AutoencoderDC"], "_class_name": … }`. */
function pipelineComponents(modelIndex: unknown): string[] {
  if (!modelIndex || typeof modelIndex !== 'object' || Array.isArray(modelIndex)) {
    throw new SanaError('SANA_INVALID_CONFIG', 'model_index.json is not a JSON object')
  }
  const out: string[] = []
  for (const [name, value] of Object.entries(modelIndex)) {
    if (name.startsWith('_') || !Array.isArray(value) || value[0] == null) continue // metadata, optional absent parts
    if (!/^[\w.-]+$/.test(name) || name === '.' || name === '..') {
      throw new SanaError('SANA_INVALID_CONFIG', `model_index.json names an invalid component folder ${JSON.stringify(name)}`)
    }
    out.push(name)
  }
  return out
}

/**
 * Choose a pipeline's files from a listing. A component folder with a `config.json` (or weights) is a
 * model and needs weights; the others (scheduler, tokenizer) need only their config files.
 */
export function planPipeline(listing: Set<string>, modelIndex: unknown, variant: string | undefined): PipelinePlan {
  const plan: PipelinePlan = { files: ['model_index.json'], indexes: [], missing: [], fallbacks: [] }
  for (const component of pipelineComponents(modelIndex)) {
    const prefix = `${component}/`
    const names = [...listing].filter((p) => p.startsWith(prefix) && !p.includes('/', prefix.length)).map((p) => p.slice(prefix.length))
    if (names.length === 0) {
      plan.missing.push(`${prefix} (no files)`)
      continue
    }
    const configs = names.filter((n) => CONFIG_FILE.test(n) && !WEIGHTS_INDEX.test(n)).sort()
    plan.files.push(...configs.map((n) => prefix + n))
    const isModel = names.includes('config.json') || names.some((n) => n.endsWith('.safetensors'))
    if (!isModel) {
      if (configs.length === 0) plan.missing.push(`${prefix} (no config files)`)
      continue
    }
    if (!names.includes('config.json')) plan.missing.push(`${prefix}config.json`)
    const chosen = WEIGHT_BASES.flatMap((b) => weightCandidates(b, variant)).find((n) => names.includes(n))
    if (!chosen) {
      plan.missing.push(`${prefix} weights (${whyNoWeights(names, variant)})`)
      continue
    }
    plan.files.push(prefix + chosen)
    if (chosen.endsWith('.json')) plan.indexes.push(prefix + chosen)
    if (variant && !chosen.includes(`.${variant}.`)) plan.fallbacks.push(component)
  }
  return plan
}

/** The shard files a sharded-weights index names (`weight_map` values), as repo paths. */
export function shardsOf(index: unknown, indexPath: string): string[] {
  const map = (index as { weight_map?: unknown } | null)?.weight_map
  if (!map || typeof map !== 'object') {
    throw new SanaError('SANA_INVALID_CONFIG', `${indexPath} has no "weight_map" object`)
  }
  const shards = new Set<string>()
  for (const file of Object.values(map)) {
    if (typeof file !== 'string' || !/^[\w.-]+$/.test(file) || file === '..') {
      throw new SanaError('SANA_INVALID_CONFIG', `${indexPath} names an invalid shard ${JSON.stringify(file)}`)
    }
    shards.add(`${posix.dirname(indexPath)}/${file}`)
  }
  return [...shards].sort()
}
