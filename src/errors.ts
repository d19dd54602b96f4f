/**
 * Typed errors. Every error sana-node throws is a {@link SanaError} with a stable `code`
 * (native errors arrive as `[CODE] message` and are converted here).
 */

import { cudaUnavailableReason } from './native'

/** Stable error codes. */
export type SanaErrorCode =
  | 'SANA_NOT_FOUND'
  | 'SANA_IO_ERROR'
  | 'SANA_INVALID_JSON'
  | 'SANA_INVALID_CONFIG'
  | 'SANA_UNKNOWN_CLASS'
  | 'SANA_CORRUPT_WEIGHTS'
  | 'SANA_WEIGHT_MISSING'
  | 'SANA_SHAPE_MISMATCH'
  | 'SANA_UNSUPPORTED_DTYPE'
  | 'SANA_ADAPTER_MISMATCH'
  | 'SANA_DEVICE_UNAVAILABLE'
  | 'SANA_INVALID_ARGUMENT'
  | 'SANA_TOKENIZER_ERROR'
  | 'SANA_COMPUTE_ERROR'
  | 'SANA_OUT_OF_MEMORY'
  | 'SANA_DISPOSED'
  | 'SANA_HUB_ERROR'
  | 'SANA_INTERNAL_ERROR'
  // `sana serve` / `sana worker`: the HTTP API's error codes.
  | 'SANA_QUEUE_FULL'
  | 'SANA_TIMEOUT'
  | 'SANA_UNAUTHORIZED'
  | 'SANA_UNAVAILABLE'
  | 'ABORT_ERR'

/** An error from sana-node. `code` is stable across versions; `message` is for people. */
export class SanaError extends Error {
  readonly code: SanaErrorCode
  constructor(code: SanaErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = code === 'ABORT_ERR' ? 'AbortError' : 'SanaError'
    this.code = code
  }
}

const NATIVE_CODE = /^\[([A-Z_]+)\] ([\s\S]*)$/

/** Convert an error thrown by the native binding into a SanaError (keeps the JS call-site stack). */
export function fromNative(err: unknown): unknown {
  if (err instanceof SanaError || !(err instanceof Error)) return err
  const m = NATIVE_CODE.exec(err.message)
  if (!m) return new SanaError('SANA_INTERNAL_ERROR', err.message, { cause: err })
  const code = m[1] as SanaErrorCode
  // The CPU binary rejecting a CUDA request: say why the CUDA binary is not in use.
  const why = code === 'SANA_DEVICE_UNAVAILABLE' ? cudaUnavailableReason() : undefined
  return new SanaError(code, why ? `${m[2]} (CUDA binary not used: ${why})` : m[2], { cause: err })
}

/** Run a native call (sync or async) and convert its errors. */
export async function callNative<T>(fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn()
  } catch (e) {
    throw fromNative(e)
  }
}

/** Synchronous variant of {@link callNative}. */
export function callNativeSync<T>(fn: () => T): T {
  try {
    return fn()
  } catch (e) {
    throw fromNative(e)
  }
}

function describe(value: unknown): string {
  if (value === null) return 'null'
  if (value === undefined) return 'nothing (undefined)'
  if (Array.isArray(value)) return `an array of length ${value.length}`
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? value.slice(0, 40) + '…' : value)
  if (typeof value === 'object') return `an object (${(value as object).constructor?.name ?? 'Object'})`
  return `${typeof value} ${String(value)}`
}

/** "Expected a multiple of 32 for width but received 1000". */
export function invalidArgument(name: string, expected: string, received: unknown): SanaError {
  return new SanaError('SANA_INVALID_ARGUMENT', `Expected ${expected} for ${name} but received ${describe(received)}`)
}

/** Throw the standard AbortError if `signal` is aborted. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) {
    throw new SanaError('ABORT_ERR', 'The operation was aborted', { cause: signal.reason })
  }
}

/** "DPMSolverMultistepScheduler: expected one of "midpoint" for solver_type but received "heun"". */
export function invalidConfig(owner: string, key: string, expected: string, received: unknown): SanaError {
  return new SanaError('SANA_INVALID_CONFIG', `${owner}: expected ${expected} for ${key} but received ${describe(received)}`)
}

/**
 * Run a filesystem operation, turning its errors (ENOENT, EISDIR, EACCES, …) into `SANA_IO_ERROR` that say
 * what was being done.
 * @example await io(`Could not write ${path}`, () => writeFile(path, bytes))
 */
export async function io<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn()
  } catch (e) {
    if (e instanceof SanaError) throw e
    throw new SanaError('SANA_IO_ERROR', `${what}: ${(e as Error).message}`, { cause: e })
  }
}
