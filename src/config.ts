/** Config helpers: diffusers/transformers config.json files exposed with camelCase keys. */

/** `scaling_factor` → `scalingFactor`; `_class_name` → `className`. */
export function camelCase(key: string): string {
  return key.replace(/^_+/, '').replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase())
}

/** Recursively camelCase the keys of a parsed config (arrays and values unchanged). */
export function camelizeKeys<T = Record<string, unknown>>(value: unknown): T {
  if (Array.isArray(value)) return value.map((v) => camelizeKeys(v)) as T
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(value)) out[camelCase(k)] = camelizeKeys(v)
    return out as T
  }
  return value as T
}

/** SanaTransformer2DModel config (camelCase view of config.json). */
export interface SanaTransformerConfig {
  className: 'SanaTransformer2DModel'
  inChannels: number
  outChannels: number | null
  numAttentionHeads: number
  attentionHeadDim: number
  numLayers: number
  numCrossAttentionHeads: number
  crossAttentionHeadDim: number
  crossAttentionDim: number
  captionChannels: number
  mlpRatio: number
  sampleSize: number
  patchSize: number
  interpolationScale: number | null
  guidanceEmbeds: boolean
  guidanceEmbedsScale: number
  qkNorm: string | null
  timestepScale: number
  [key: string]: unknown
}

/** SanaControlNetModel config (camelCase view of config.json): the transformer's widths, no qk-norm or guidance embedding. */
export type SanaControlNetConfig = Pick<
  SanaTransformerConfig,
  | 'inChannels' | 'numAttentionHeads' | 'attentionHeadDim' | 'numCrossAttentionHeads' | 'crossAttentionHeadDim'
  | 'crossAttentionDim' | 'captionChannels' | 'patchSize' | 'interpolationScale'
> & {
  className: 'SanaControlNetModel'
  /** Blocks copied from the transformer; sample k is added after transformer block k + 1. */
  numLayers: number
  [key: string]: unknown
}

/** AutoencoderDC config (camelCase view of config.json). */
export interface AutoencoderDCConfig {
  className: 'AutoencoderDC'
  inChannels: number
  latentChannels: number
  attentionHeadDim: number
  encoderBlockOutChannels: number[]
  decoderBlockOutChannels: number[]
  /** Latents are divided by this before decoding (and multiplied after encoding). */
  scalingFactor: number
  [key: string]: unknown
}

/** Gemma2 text-encoder config (camelCase view of config.json; transformers 4.x or 5.x keys). */
export interface Gemma2Config {
  hiddenSize: number
  numHiddenLayers: number
  numAttentionHeads: number
  numKeyValueHeads: number
  headDim: number
  vocabSize: number
  /** Longest sequence the encoder takes (Gemma 2: 8192); bounds `maxSequenceLength`. */
  maxPositionEmbeddings?: number
  [key: string]: unknown
}
