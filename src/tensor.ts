/**
 * A tensor that lives in native memory (CPU RAM or GPU). Passing a Tensor between components copies
 * nothing; values reach JavaScript only through {@link Tensor.toFloat32Array}.
 */
import { callNative, callNativeSync, invalidArgument } from './errors'
import { native, type Binding } from './native'

/** Where tensors live: `'cpu'`, `'cuda'` (`'cuda:N'`) or `'auto'` (CUDA if usable, else CPU). */
export type DeviceRequest = 'cpu' | 'cuda' | `cuda:${number}` | 'auto'

/** Element type of a tensor. */
export type TensorDType = 'float32' | 'bfloat16' | 'float16' | 'float64' | 'int64' | 'uint32' | 'uint8' | 'other'

/** The largest dimension the native side takes (a u32; napi would silently wrap a larger one modulo 2³²). */
const MAX_DIM = 2 ** 32 - 1

function checkShape(shape: readonly number[]): number[] {
  if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < 0 || d > MAX_DIM)) {
    throw invalidArgument('shape', 'an array of integers from 0 to 2³² − 1', Array.isArray(shape) ? `[${shape.join(', ')}]` : shape)
  }
  return [...shape]
}

export class Tensor {
  /** @internal */
  readonly native: Binding.NativeTensor

  /** @internal Wrap a native tensor handle. */
  constructor(handle: Binding.NativeTensor) {
    this.native = handle
  }

  /**
   * A float32 tensor from JS data.
   * @example Tensor.fromFloat32Array(new Float32Array(2 * 32 * 8 * 8), [2, 32, 8, 8])
   */
  static fromFloat32Array(data: Float32Array, shape: readonly number[], options: { device?: DeviceRequest } = {}): Tensor {
    if (!(data instanceof Float32Array)) throw invalidArgument('data', 'a Float32Array', data)
    const dims = checkShape(shape)
    return new Tensor(callNativeSync(() => native().NativeTensor.fromFloat32Array(data, dims, options.device ?? 'cpu')))
  }

  /**
   * An int64 tensor (token ids, attention masks) from int32 JS data.
   * @example Tensor.fromInt32Array(Int32Array.from([2, 651, 0]), [1, 3])
   */
  static fromInt32Array(data: Int32Array, shape: readonly number[], options: { device?: DeviceRequest } = {}): Tensor {
    if (!(data instanceof Int32Array)) throw invalidArgument('data', 'an Int32Array', data)
    const dims = checkShape(shape)
    return new Tensor(callNativeSync(() => native().NativeTensor.fromInt32Array(data, dims, options.device ?? 'cpu')))
  }

  /**
   * Σᵢ coeffs[i]·tensors[i], computed natively in float32 (the schedulers' update rule).
   * @example Tensor.linearCombination([x, v], [1, -dt])
   */
  static linearCombination(tensors: readonly Tensor[], coeffs: readonly number[]): Tensor {
    return new Tensor(
      callNativeSync(() => native().NativeTensor.linearCombination(tensors.map((t) => t.native), [...coeffs])),
    )
  }

  /**
   * `(1 − mask)·keep + mask·repaint` in float32, `mask` [1 or B, 1, H, W] broadcast over batch and channels
   * (the inpainting blend: keep the known region, take the new latents where the mask is 1).
   * @example latents = Tensor.maskedBlend(renoisedSource, latents, maskLatent)
   */
  static maskedBlend(keep: Tensor, repaint: Tensor, mask: Tensor): Tensor {
    return new Tensor(callNativeSync(() => native().NativeTensor.maskedBlend(keep.native, repaint.native, mask.native)))
  }

  /**
   * Concatenate along `dim`.
   * @example Tensor.cat([negativeEmbeds, promptEmbeds], 0) // the CFG batch, negative first
   */
  static cat(tensors: readonly Tensor[], dim: number): Tensor {
    return new Tensor(callNativeSync(() => native().NativeTensor.cat(tensors.map((t) => t.native), dim)))
  }

  /**
   * Gather `indices` along `dim` (PyTorch `x.index_select(dim, indices)`).
   * @example embeds.indexSelect([0, ...range], 1)
   */
  indexSelect(indices: readonly number[], dim: number): Tensor {
    return new Tensor(callNativeSync(() => this.native.indexSelect([...indices], dim)))
  }

  /** Dimensions, e.g. `[2, 32, 8, 8]`. */
  get shape(): number[] {
    return this.native.shape
  }

  /** Element type. */
  get dtype(): TensorDType {
    return this.native.dtype as TensorDType
  }

  /** `'cpu'` or `'cuda:N'`. */
  get device(): string {
    return this.native.device
  }

  /** Number of elements. */
  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1)
  }

  /** Copy the values into a Float32Array (row-major), off the main thread. */
  async toFloat32Array(): Promise<Float32Array> {
    return callNative(() => this.native.toFloat32Array() as Promise<Float32Array>)
  }

  /**
   * Resolves when the work queued on this tensor's device has finished. CUDA runs kernels
   * asynchronously, so a timer around a call measures only its launches unless it waits here;
   * on the CPU every result is already computed and this resolves at once.
   */
  async synchronize(): Promise<void> {
    if (this.device === 'cpu') return
    await callNative(() => this.native.synchronize() as Promise<void>)
  }

  /** Synchronous copy; fine for small tensors. */
  toFloat32ArraySync(): Float32Array {
    return callNativeSync(() => this.native.toFloat32ArraySync())
  }

  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(', ')}], ${this.device})`
  }
}
