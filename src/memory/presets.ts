/**
 * Configs of the released Sana models, for memory estimates without a download: the transformer configs of
 * the Efficient-Large-Model diffusers checkpoints, DC-AE f32c32 (SANA 1.0) and Gemma-2-2B.
 */
import type { AutoencoderDCConfig, Gemma2Config, SanaTransformerConfig } from '../config'
import type { ModelConfigs } from './params'

/** Preset names accepted by `estimateMemory({ model })` and `sana info --estimate --model`. */
export type ModelPreset = '600m' | '1.6b' | '4.8b' | '1.6b-2k' | '1.6b-4k'

function transformer(layers: number, heads: number, crossHeads: number, crossHeadDim: number, sampleSize: number, qkNorm: string | null): SanaTransformerConfig {
  return {
    className: 'SanaTransformer2DModel',
    inChannels: 32,
    outChannels: 32,
    numAttentionHeads: heads,
    attentionHeadDim: 32,
    numLayers: layers,
    numCrossAttentionHeads: crossHeads,
    crossAttentionHeadDim: crossHeadDim,
    crossAttentionDim: heads * 32,
    captionChannels: 2304,
    mlpRatio: 2.5,
    sampleSize,
    patchSize: 1,
    interpolationScale: null,
    guidanceEmbeds: false,
    guidanceEmbedsScale: 0.1,
    qkNorm,
    timestepScale: 1,
    attentionBias: false,
    normElementwiseAffine: false,
  }
}

const EFFICIENT_VIT = ['ResBlock', 'ResBlock', 'ResBlock', 'EfficientViTBlock', 'EfficientViTBlock', 'EfficientViTBlock']

/** mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers. */
const DC_AE_F32C32: AutoencoderDCConfig = {
  className: 'AutoencoderDC',
  inChannels: 3,
  latentChannels: 32,
  attentionHeadDim: 32,
  encoderBlockTypes: EFFICIENT_VIT,
  decoderBlockTypes: EFFICIENT_VIT,
  encoderBlockOutChannels: [128, 256, 512, 512, 1024, 1024],
  decoderBlockOutChannels: [128, 256, 512, 512, 1024, 1024],
  encoderLayersPerBlock: [2, 2, 2, 3, 3, 3],
  decoderLayersPerBlock: [3, 3, 3, 3, 3, 3],
  encoderQkvMultiscales: [[], [], [], [5], [5], [5]],
  decoderQkvMultiscales: [[], [], [], [5], [5], [5]],
  upsampleBlockType: 'interpolate',
  downsampleBlockType: 'conv',
  decoderNormTypes: 'rms_norm',
  decoderActFns: 'silu',
  decoderConvActFn: 'relu',
  encoderOutShortcut: true,
  decoderInShortcut: true,
  scalingFactor: 0.41407,
}

/** google/gemma-2-2b-it as Sana's text_encoder. */
const GEMMA_2_2B: Gemma2Config = {
  hiddenSize: 2304,
  intermediateSize: 9216,
  numHiddenLayers: 26,
  numAttentionHeads: 8,
  numKeyValueHeads: 4,
  headDim: 256,
  vocabSize: 256000,
}

const pipeline = (t: SanaTransformerConfig): ModelConfigs => ({ transformer: t, vae: DC_AE_F32C32, textEncoder: GEMMA_2_2B })

/** The presets, each with the checkpoint it mirrors. */
export const MODEL_PRESETS: Record<ModelPreset, { description: string; configs: ModelConfigs }> = {
  '600m': { description: 'Sana 600M 1024px (Sana_600M_1024px_diffusers)', configs: pipeline(transformer(28, 36, 16, 72, 32, null)) },
  '1.6b': { description: 'Sana 1.6B 1024px (Sana_1600M_1024px_diffusers)', configs: pipeline(transformer(20, 70, 20, 112, 32, null)) },
  '4.8b': {
    description: 'Sana 1.5 4.8B 1024px (SANA1.5_4.8B_1024px_diffusers: the 1.6B architecture at 60 layers)',
    configs: pipeline(transformer(60, 70, 20, 112, 32, 'rms_norm_across_heads')),
  },
  '1.6b-2k': { description: 'Sana 1.6B 2K (Sana_1600M_2Kpx_BF16_diffusers)', configs: pipeline(transformer(20, 70, 20, 112, 64, null)) },
  '1.6b-4k': { description: 'Sana 1.6B 4K (Sana_1600M_4Kpx_BF16_diffusers)', configs: pipeline(transformer(20, 70, 20, 112, 128, null)) },
}
