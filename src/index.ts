/**
 * sana-node: NVlabs' Sana text-to-image models from Node.js.
 * @packageDocumentation
 */
export { SanaError, type SanaErrorCode } from './errors'
export { Tensor, type DeviceRequest, type TensorDType } from './tensor'
export { parsePythonJson } from './json'
export * from './schedulers'
export * from './postprocess'
export { SanaImage, type PngMetadata, type SanaImageInit } from './png'
