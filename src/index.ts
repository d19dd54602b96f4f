/**
 * sana-node: NVlabs' Sana text-to-image models from Node.js.
 * @packageDocumentation
 */
export { SanaError, type SanaErrorCode } from './errors'
export { Tensor, type DeviceRequest, type TensorDType } from './tensor'
export { resolveModel, listCachedModels, type ResolveModelOptions, type CacheOptions, type DownloadProgress, type CachedModel, type CachedRevision } from './hub'
