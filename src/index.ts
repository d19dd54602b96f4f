/**
 * sana-node: NVlabs' Sana text-to-image models from Node.js.
 * @packageDocumentation
 */
export { SanaError, type SanaErrorCode } from './errors'
export { cpuGemmKernel, type CpuGemmKernel } from './native'
export { Tensor, type DeviceRequest, type TensorDType } from './tensor'
export { CaptionCache } from './caption-cache'
export {
  SanaTransformer2DModel,
  SanaControlNetModel,
  AutoencoderDC,
  Gemma2TextEncoder,
  type LoadOptions,
  type TensorInfo,
  type TransformerInput,
  type PagInput,
  type ControlNetInput,
  type TilingOptions,
} from './components'
export type { SanaTransformerConfig, SanaControlNetConfig, AutoencoderDCConfig, Gemma2Config } from './config'
export {
  SanaPipeline,
  type PipelineLoadOptions,
  type PipelineComponents,
  type PipelineConfig,
  type ModelIndex,
  type EncodePromptOptions,
  type PromptEmbeddings,
} from './pipeline'
export { pagLayerIndices } from './pag'
export { GemmaTokenizer, type Encoding, type EncodeOptions } from './tokenizer'
export { DEFAULT_COMPLEX_HUMAN_INSTRUCTION, preprocessPrompt, type PromptOptions } from './prompt'
export { parsePythonJson } from './json'
export * from './schedulers'
export * from './postprocess'
export {
  loadLoraWeights,
  setAdapters,
  deleteAdapters,
  fuseLora,
  unfuseLora,
  unloadLoraWeights,
  listAdapters,
  fusedLoraScale,
  resolveLoraFile,
  DEFAULT_LORA_WEIGHT_NAME,
  type LoadLoraOptions,
  type FuseLoraOptions,
  type LoraAdapterInfo,
} from './lora'
export { resolveModel, resolveRepoFile, listCachedModels, type ResolveModelOptions, type CacheOptions, type DownloadProgress, type CachedModel, type CachedRevision } from './hub'
export { imageFormatOf, SanaImage, type ImageEncodeOptions, type ImageFormat, type PngMetadata, type SanaImageInit } from './png'
export type { GenerateOptions, StepEvent, OutputType } from './generate'
export type { GenerateResult } from './pipeline'
export { prepareImage, prepareMask, type ImageInput, type PreparedMask } from './preprocess'
export { decodePreview, type PreviewOptions } from './preview'
export { startIndex } from './sampling/loop'
export {
  estimateMemory,
  availableMemory,
  assertFits,
  transformerActivations,
  textEncoderActivations,
  MODEL_PRESETS,
  type ModelPreset,
  type ModelConfigs,
  type MemoryDType,
  type MemoryEstimateOptions,
  type MemoryEstimate,
  type AvailableMemory,
  type AssertFitsOptions,
} from './memory'
