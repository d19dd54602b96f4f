/**
 * Parameter counts from configs: exactly the tensors our constructors load (sana-core's `new(cfg, vb)`s), so
 * weight memory is known before a checkpoint is opened. The ava tests compare each count with the loaded
 * fixtures' `tensorInfo()`.
 */
import type { AutoencoderDCConfig, Gemma2Config, SanaTransformerConfig } from '../config'

/** The three component configs, camelCase keys (as `pipe.config` exposes them). */
export interface ModelConfigs {
  transformer: SanaTransformerConfig
  vae: AutoencoderDCConfig
  textEncoder: Gemma2Config
}

/**
 * Parameters per component. `mappedEmbedding`: on CPU the text encoder's embedding table stays memory-mapped
 * (a prompt touches a few hundred rows), so it is left out of the resident count.
 */
export function countParams(c: ModelConfigs, mappedEmbedding: boolean): { transformer: number; vae: number; textEncoder: number } {
  return { transformer: transformerParams(c.transformer), vae: vaeParams(c.vae), textEncoder: gemmaParams(c.textEncoder, mappedEmbedding) }
}

/** Linear(in, out) with optional bias. */
const linear = (cin: number, cout: number, bias = true) => cin * cout + (bias ? cout : 0)

/** `SanaTransformer2DModel` (sana_transformer.rs + layers.rs). */
export function transformerParams(cfg: SanaTransformerConfig): number {
  const d = cfg.numAttentionHeads * cfg.attentionHeadDim
  const hid = Math.floor(cfg.mlpRatio * d)
  const ci = cfg.numCrossAttentionHeads * cfg.crossAttentionHeadDim
  const kvIn = cfg.crossAttentionDim ?? d
  const p = cfg.patchSize
  const out = cfg.outChannels ?? cfg.inChannels
  const qkNorm = cfg.qkNorm ? 1 : 0
  const timestep = linear(256, d) + linear(d, d)
  const block =
    6 * d + // scale_shift_table
    3 * linear(d, d, Boolean(cfg.attentionBias)) + linear(d, d) + 2 * qkNorm * d + // attn1 (+ norm_q, norm_k)
    linear(d, ci) + 2 * linear(kvIn, ci) + linear(ci, d) + 2 * qkNorm * ci + // attn2
    linear(d, 2 * hid) + 2 * hid * 9 + 2 * hid + hid * d + // ff: conv_inverted, conv_depth, conv_point
    (cfg.normElementwiseAffine ? 2 * d : 0)
  return (
    linear(cfg.inChannels * p * p, d) + // patch_embed
    timestep * (cfg.guidanceEmbeds ? 2 : 1) + linear(d, 6 * d) + // time_embed
    linear(cfg.captionChannels, d) + linear(d, d) + d + // caption_projection, caption_norm
    cfg.numLayers * block +
    2 * d + linear(d, p * p * out) // scale_shift_table, proj_out
  )
}

/** One per-stage value of a string-or-list config key. */
function perStage(v: unknown, i: number, dflt: string): string {
  if (Array.isArray(v)) return String(v[Math.min(i, v.length - 1)])
  return typeof v === 'string' ? v : dflt
}

const conv = (cin: number, cout: number, k: number, bias = true) => cout * cin * k * k + (bias ? cout : 0)

/** A ResBlock or an EfficientViTBlock of width c (autoencoder_dc.rs `Block::new`). */
function vaeBlock(kind: string, c: number, headDim: number, scales: number[], norm: string): number {
  const normParams = norm === 'batch_norm' ? 4 * c : 2 * c
  if (kind === 'ResBlock') return conv(c, c, 3) + conv(c, c, 3, false) + normParams
  const inner = Math.floor(c / headDim) * headDim
  const attn = 3 * inner * c + scales.reduce((s, k) => s + 3 * inner * k * k + 3 * inner * headDim, 0) + c * inner * (1 + scales.length) + normParams
  const glu = conv(c, 8 * c, 1) + conv(1, 8 * c, 3) + 4 * c * c + 2 * c
  return attn + glu
}

/** `AutoencoderDC`: encoder + decoder (autoencoder_dc.rs `Encoder::new`, `Decoder::new`). */
export function vaeParams(cfg: AutoencoderDCConfig): number {
  const ch = cfg.encoderBlockOutChannels
  const layers = cfg.encoderLayersPerBlock as number[]
  const n = ch.length
  const unshuffle = (cfg.downsampleBlockType ?? 'pixel_unshuffle') === 'pixel_unshuffle'
  const down = (cin: number, cout: number) => conv(cin, unshuffle ? cout / 4 : cout, 3)
  let enc = layers[0] > 0 ? conv(cfg.inChannels, ch[0], 3) : down(cfg.inChannels, ch[1])
  const encScales = cfg.encoderQkvMultiscales as number[][]
  for (let i = 0; i < n; i++) {
    enc += layers[i] * vaeBlock(perStage(cfg.encoderBlockTypes, i, 'ResBlock'), ch[i], cfg.attentionHeadDim, encScales[i], 'rms_norm')
    if (i < n - 1 && layers[i] > 0) enc += down(ch[i], ch[i + 1])
  }
  enc += conv(ch[n - 1], cfg.latentChannels, 3)

  const dch = cfg.decoderBlockOutChannels
  const dl = cfg.decoderLayersPerBlock as number[]
  const interpolate = (cfg.upsampleBlockType ?? 'pixel_shuffle') === 'interpolate'
  const up = (cin: number, cout: number) => conv(cin, interpolate ? cout : 4 * cout, 3)
  const decScales = cfg.decoderQkvMultiscales as number[][]
  let dec = conv(cfg.latentChannels, dch[n - 1], 3)
  for (let i = 0; i < dch.length; i++) {
    if (i < dch.length - 1 && dl[i] > 0) dec += up(dch[i + 1], dch[i])
    const norm = perStage(cfg.decoderNormTypes, i, 'rms_norm')
    dec += dl[i] * vaeBlock(perStage(cfg.decoderBlockTypes, i, 'ResBlock'), dch[i], cfg.attentionHeadDim, decScales[i], norm)
  }
  const c0 = dl[0] > 0 ? dch[0] : dch[1]
  dec += 2 * c0 + (dl[0] > 0 ? conv(c0, cfg.inChannels, 3) : up(c0, cfg.inChannels))
  return enc + dec
}

/** `Gemma2Model` (gemma2.rs): embedding, per layer attention + MLP + four norms, final norm. */
export function gemmaParams(cfg: Gemma2Config, mappedEmbedding: boolean): number {
  const h = cfg.hiddenSize
  const attn = cfg.numAttentionHeads * cfg.headDim
  const kv = cfg.numKeyValueHeads * cfg.headDim
  const inter = Number(cfg.intermediateSize)
  const layer = h * attn + 2 * h * kv + attn * h + 3 * h * inter + 4 * h
  return (mappedEmbedding ? 0 : cfg.vocabSize * h) + cfg.numHiddenLayers * layer + h
}
