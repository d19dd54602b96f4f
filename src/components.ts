/**
 * The checkpoint components under their diffusers/transformers names. Each is loaded from its
 * folder (config.json + safetensors) with `await X.load(dir, options)` and keeps its weights in
 * native memory until `dispose()`.
 */
import { existsSync, statSync } from 'node:fs'
import { resolve } from 'node:path'
import { camelizeKeys, type AutoencoderDCConfig, type Gemma2Config, type SanaControlNetConfig, type SanaTransformerConfig } from './config'
import { CaptionCache } from './caption-cache'
import { callNative, callNativeSync, invalidArgument, SanaError } from './errors'
import { native, type Binding } from './native'
import { Tensor, type DeviceRequest } from './tensor'
// For TSDoc links only.
import type { pagLayerIndices } from './pag'

/** Options for loading a component or a pipeline. */
export interface LoadOptions {
  /** Where to run: `'cpu'`, `'cuda'`, `'cuda:N'` or `'auto'` (CUDA when usable, else CPU). Defaults to `'cpu'`. */
  device?: DeviceRequest
  /**
   * The dtype weights are held in. Defaults to `'auto'`: float32 on CPU (images identical to diffusers' float32
   * ones), bfloat16 on CUDA. On CUDA the model also computes in it. On the CPU norms, softmax and every accumulation
   * stay float32 whatever this is: `'bfloat16'`/`'float16'` there keep the weights half in memory (about half the
   * RSS) and widen them exactly as each layer runs, except that on CPUs with Intel AMX (`cpuGemmKernel()` is
   * `'amx-bf16'`) `'bfloat16'` weights multiply in bf16 (activations rounded to bf16 as they enter each product),
   * about twice as fast. Weights stored in another dtype are converted at load (bf16/fp16 → f32 is exact; f32/fp16 →
   * bf16 rounds to nearest even).
   * @example await SanaPipeline.load(dir, { dtype: 'bfloat16' }) // CPU: ≈ half the memory
   */
  dtype?: 'float32' | 'bfloat16' | 'float16' | 'auto'
  /** Weights variant to prefer, e.g. `'fp16'` for `diffusion_pytorch_model.fp16.safetensors`. Defaults to none. */
  variant?: string
}

/** One checkpoint tensor as stored on disk and as loaded. */
export interface TensorInfo {
  name: string
  shape: number[]
  /** Dtype in the safetensors file: `'F32'`, `'BF16'`, `'F16'`, … */
  storedDtype: string
  /** Dtype after load-time conversion. */
  dtype: string
  /** The safetensors file the tensor came from. */
  file: string
}

type NativeComponent = {
  readonly configJson: string
  readonly device: string
  readonly dtype: string
  readonly disposed: boolean
  dispose(): void
  tensorInfo(): Binding.NativeTensorInfo[]
  getWeight(name: string): Binding.NativeTensor
}

function checkDir(dir: string, what: string): string {
  if (typeof dir !== 'string' || dir.length === 0) {
    throw new SanaError('SANA_INVALID_ARGUMENT', `Expected a folder path for ${what} but received ${typeof dir}`)
  }
  const abs = resolve(dir)
  if (!existsSync(abs) || !statSync(abs).isDirectory()) {
    throw new SanaError('SANA_NOT_FOUND', `${what} folder not found: ${abs}`)
  }
  return abs
}

function nativeOptions(opts: LoadOptions): Binding.NativeLoadOptions {
  return { device: opts.device ?? 'cpu', dtype: opts.dtype ?? 'auto', variant: opts.variant }
}

/** Shared behaviour of the model components: config, device, weights introspection, disposal. */
abstract class ModelComponent<N extends NativeComponent, C> {
  /** @internal */
  protected readonly handle: N
  /** The component's config.json, keys in camelCase. */
  readonly config: C
  /** The folder the component was loaded from. */
  readonly dir: string

  /** @internal */
  protected constructor(handle: N, dir: string) {
    this.handle = handle
    this.dir = dir
    this.config = camelizeKeys<C>(JSON.parse(handle.configJson))
  }

  /** @internal */
  get native(): N {
    if (this.handle.disposed) {
      throw new SanaError('SANA_DISPOSED', `${this.constructor.name} at ${this.dir} was disposed; load it again`)
    }
    return this.handle
  }

  /** Where the weights live: `'cpu'` or `'cuda:N'`. */
  get device(): string {
    return callNativeSync(() => this.native.device)
  }

  /** Compute dtype of the loaded weights. */
  get dtype(): string {
    return callNativeSync(() => this.native.dtype)
  }

  /** True after {@link dispose}. */
  get disposed(): boolean {
    return this.handle.disposed
  }

  /** Every loaded tensor: checkpoint name, shape, stored and loaded dtype, source file. */
  tensorInfo(): TensorInfo[] {
    return callNativeSync(() => this.native.tensorInfo())
  }

  /** One loaded weight by its checkpoint name (shares memory with the model). */
  getWeight(name: string): Tensor {
    return new Tensor(callNativeSync(() => this.native.getWeight(name)))
  }

  /** Free the weights now (a running forward keeps its own until it finishes). Safe to call twice. */
  dispose(): void {
    this.handle.dispose()
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose()
  }
}

/** Inputs of {@link SanaTransformer2DModel.forward}. */
export interface TransformerInput {
  /** Latents [B, inChannels, H, W]. */
  hiddenStates: Tensor
  /** Caption embeddings [B, S, captionChannels]. */
  encoderHiddenStates: Tensor
  /** Timestep per batch item (0…1000 for Sana, the trigflow `scm_t` for Sprint): a Tensor [B] or numbers. */
  timestep: Tensor | number[]
  /** 1 = keep, 0 = drop, [B, S]. Defaults to all ones. */
  encoderAttentionMask?: Tensor
  /** Guidance per batch item, for guidance-embedding models (Sana-Sprint). Defaults to none. */
  guidance?: Tensor | number[]
  /**
   * ControlNet residuals [B, N, innerDim] (from {@link SanaControlNetModel.forward}, already times the
   * conditioning scale): sample k is added after block k + 1; samples beyond the transformer's depth are
   * ignored, as in diffusers. Defaults to none.
   */
  controlnetBlockSamples?: Tensor[]
  /**
   * Multiplies every active LoRA adapter for this call (diffusers' `attention_kwargs={"scale": …}`); no effect
   * while adapters are fused. Defaults to 1.
   */
  loraScale?: number
  /**
   * Perturbed-attention guidance for this call (diffusers' `SanaPAGPipeline`): in the blocks `layers`
   * (0-based, e.g. from {@link pagLayerIndices}), self-attention of the last `perturbedRows` batch rows
   * becomes the identity `to_out(to_v(x))`; the other rows attend normally. As in diffusers, those
   * blocks skip the q/k RMSNorm of qk-norm models (Sana 1.5, Sprint) on every row. Defaults to none.
   * @example { layers: [1], perturbedRows: 1 } // batch [uncond, text, perturbed]
   */
  pag?: PagInput
  /**
   * The generation's {@link CaptionCache}: the caption projection and every block's cross-attention K/V are
   * computed by the first call and reused while the caption, mask, adapters and `loraScale` stay the same.
   * Defaults to none (computed in every call).
   */
  captionCache?: CaptionCache
}

/** See {@link TransformerInput.pag}. */
export interface PagInput {
  /** Block indices (0-based) whose self-attention is perturbed. */
  layers: number[]
  /** How many trailing batch rows are the perturbed copies; 0 < perturbedRows < batch. */
  perturbedRows: number
}

function checkPag(pag: PagInput | undefined): PagInput | undefined {
  if (pag === undefined) return undefined
  const isIndex = (v: unknown) => Number.isInteger(v) && (v as number) >= 0
  if (typeof pag !== 'object' || pag === null || !Array.isArray(pag.layers) || !pag.layers.every(isIndex)) {
    throw invalidArgument('pag.layers', 'an array of block indices', pag?.layers)
  }
  if (!(isIndex(pag.perturbedRows) && pag.perturbedRows > 0)) throw invalidArgument('pag.perturbedRows', 'a positive integer', pag.perturbedRows)
  return { layers: pag.layers, perturbedRows: pag.perturbedRows }
}

function toVector(v: Tensor | number[], name: string): Tensor {
  if (v instanceof Tensor) return v
  if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) {
    throw invalidArgument(name, 'a Tensor or a non-empty array of finite numbers', v)
  }
  return Tensor.fromFloat32Array(Float32Array.from(v), [v.length])
}

/** The native handle of a Tensor argument. */
function tensorArg(v: unknown, name: string): Binding.NativeTensor {
  if (!(v instanceof Tensor)) throw invalidArgument(name, 'a Tensor', v)
  return v.native
}

/** The native handle of an optional Tensor argument (undefined stays undefined). */
function optionalTensor(v: unknown, name: string): Binding.NativeTensor | undefined {
  return v === undefined ? undefined : tensorArg(v, name)
}

/** The inputs the transformer and the ControlNet share, checked, as native handles. */
function nativeDitInputs(input: Pick<TransformerInput, 'hiddenStates' | 'encoderHiddenStates' | 'timestep' | 'encoderAttentionMask' | 'captionCache'>) {
  if (!input || typeof input !== 'object') throw invalidArgument('input', 'an object', input)
  const cache = input.captionCache
  if (cache !== undefined && !(cache instanceof CaptionCache)) throw invalidArgument('captionCache', 'a CaptionCache', cache)
  return {
    hiddenStates: tensorArg(input.hiddenStates, 'hiddenStates'),
    encoderHiddenStates: tensorArg(input.encoderHiddenStates, 'encoderHiddenStates'),
    timestep: toVector(input.timestep, 'timestep').native,
    encoderAttentionMask: optionalTensor(input.encoderAttentionMask, 'encoderAttentionMask'),
    captionCache: cache?.native,
  }
}

/** The Linear DiT denoiser (`SanaTransformer2DModel`). */
export class SanaTransformer2DModel extends ModelComponent<Binding.NativeTransformer, SanaTransformerConfig> {
  /**
   * One denoiser evaluation; returns the model output [B, outChannels, H, W] (velocity / flow for Sana).
   * @example const v = await transformer.forward({ hiddenStates: x, encoderHiddenStates: e, timestep: [999] })
   */
  async forward(input: TransformerInput): Promise<Tensor> {
    const dit = nativeDitInputs(input)
    const guidance = input.guidance === undefined ? undefined : toVector(input.guidance, 'guidance')
    const samples = input.controlnetBlockSamples
    if (samples !== undefined && !(Array.isArray(samples) && samples.every((s) => s instanceof Tensor))) {
      throw invalidArgument('controlnetBlockSamples', 'an array of Tensors', samples)
    }
    const { loraScale } = input
    if (loraScale !== undefined && (typeof loraScale !== 'number' || !Number.isFinite(loraScale))) {
      throw invalidArgument('loraScale', 'a finite number', loraScale)
    }
    const out = await callNative(() =>
      this.native.forward({
        ...dit,
        guidance: guidance?.native,
        controlnetBlockSamples: samples?.map((s) => s.native),
        loraScale,
        pag: checkPag(input.pag),
      }),
    )
    return new Tensor(out as Binding.NativeTensor)
  }

  /**
   * Load a `transformer/` folder.
   * @example const transformer = await SanaTransformer2DModel.load('sana/transformer', { device: 'cpu' })
   */
  static async load(dir: string, options: LoadOptions = {}): Promise<SanaTransformer2DModel> {
    const abs = checkDir(dir, 'transformer')
    const h = await callNative(() => native().NativeTransformer.load(abs, nativeOptions(options)))
    return new SanaTransformer2DModel(h as Binding.NativeTransformer, abs)
  }
}

/** Inputs of {@link SanaControlNetModel.forward}: the transformer's inputs plus the control latent. */
export interface ControlNetInput {
  /** Latents [B, inChannels, H, W], as given to the transformer. */
  hiddenStates: Tensor
  /** Caption embeddings [B, S, captionChannels]. */
  encoderHiddenStates: Tensor
  /** Timestep per batch item, as given to the transformer: a Tensor [B] or numbers. */
  timestep: Tensor | number[]
  /** 1 = keep, 0 = drop, [B, S]. Defaults to all ones. */
  encoderAttentionMask?: Tensor
  /** The control image's VAE latent × `vae.config.scalingFactor`, the shape of `hiddenStates`. */
  controlnetCond: Tensor
  /** Multiplies every block sample (diffusers' `conditioning_scale`). Defaults to 1. */
  conditioningScale?: number
  /** The generation's {@link CaptionCache} (the transformer's one: entries are per model). Defaults to none. */
  captionCache?: CaptionCache
}

/**
 * The Sana ControlNet (`SanaControlNetModel`): a copy of the transformer's first `numLayers` blocks
 * fed the control image's latent; its block samples go to {@link SanaTransformer2DModel.forward} as
 * `controlnetBlockSamples`.
 */
export class SanaControlNetModel extends ModelComponent<Binding.NativeControlNet, SanaControlNetConfig> {
  /**
   * Load a ControlNet folder (config.json + diffusion_pytorch_model.safetensors). Hub repo ids are not
   * resolved here: download the repo with your tools, or pass the folder of a cached snapshot.
   * @example const controlnet = await SanaControlNetModel.load('sana-controlnet-hed', { device: 'cpu' })
   */
  static async load(dir: string, options: LoadOptions = {}): Promise<SanaControlNetModel> {
    const abs = checkDir(dir, 'controlnet')
    const h = await callNative(() => native().NativeControlNet.load(abs, nativeOptions(options)))
    return new SanaControlNetModel(h as Binding.NativeControlNet, abs)
  }

  /**
   * The block samples: `config.numLayers` tensors [B, H·W / patch², innerDim], already times
   * `conditioningScale`, in the model dtype.
   * @example
   * const samples = await controlnet.forward({ hiddenStates: x, encoderHiddenStates: e, timestep: [999, 999], controlnetCond: cond, conditioningScale: 0.7 })
   * const v = await transformer.forward({ hiddenStates: x, encoderHiddenStates: e, timestep: [999, 999], controlnetBlockSamples: samples })
   */
  async forward(input: ControlNetInput): Promise<Tensor[]> {
    const dit = nativeDitInputs(input)
    const controlnetCond = tensorArg(input.controlnetCond, 'controlnetCond')
    const scale = input.conditioningScale ?? 1
    if (typeof scale !== 'number' || !Number.isFinite(scale)) throw invalidArgument('conditioningScale', 'a finite number', scale)
    const out = await callNative(() => this.native.forward({ ...dit, controlnetCond, conditioningScale: scale }))
    return out.map((t) => new Tensor(t))
  }
}

/** Tiled decoding: how large latents are split so a 4K decode fits in memory. */
export interface TilingOptions {
  /**
   * `'auto'` tiles when the activation-memory estimate exceeds `memoryBudgetMb`; `'on'` always tiles;
   * `'off'` never does. Defaults to `'auto'`.
   */
  tiling?: 'auto' | 'on' | 'off'
  /** Tile size in latent pixels (×32 in image pixels). Defaults to the native default (see README). */
  tileSize?: number
  /** Overlap between tiles in latent pixels, blended linearly. Defaults to the native default. */
  tileOverlap?: number
  /** Activation-memory budget for `'auto'`, in MiB. Defaults to the native default. */
  memoryBudgetMb?: number
}

/** The DC-AE autoencoder (`AutoencoderDC`, f32c32). */
export class AutoencoderDC extends ModelComponent<Binding.NativeAutoencoderDC, AutoencoderDCConfig> {
  /** Decode options given at load; each `decode` call may override them. */
  readonly tilingOptions: TilingOptions = {}

  /**
   * Load a `vae/` folder.
   * @example const vae = await AutoencoderDC.load('sana/vae', { tiling: 'auto', memoryBudgetMb: 4096 })
   */
  static async load(dir: string, options: LoadOptions & TilingOptions = {}): Promise<AutoencoderDC> {
    const abs = checkDir(dir, 'vae')
    const h = await callNative(() => native().NativeAutoencoderDC.load(abs, nativeOptions(options)))
    const vae = new AutoencoderDC(h as Binding.NativeAutoencoderDC, abs)
    const { tiling, tileSize, tileOverlap, memoryBudgetMb } = options
    Object.assign(vae.tilingOptions, { tiling, tileSize, tileOverlap, memoryBudgetMb })
    return vae
  }

  /**
   * Latents → image. `z` is `latents / config.scalingFactor`, [B, 32, h, w]; returns the raw image
   * [B, 3, 32h, 32w] (nominally [-1, 1], not clamped).
   * @example const image = await vae.decode(z, { tiling: 'on' })
   */
  async decode(z: Tensor, options: TilingOptions = {}): Promise<Tensor> {
    if (!(z instanceof Tensor)) throw invalidArgument('z', 'a Tensor', z)
    const o = { ...this.tilingOptions, ...options }
    const out = await callNative(() => this.native.decode(z.native, o))
    return new Tensor(out as Binding.NativeTensor)
  }

  /**
   * Image [B, 3, H, W] in [-1, 1] (H, W multiples of 32) → raw latent [B, 32, H/32, W/32]
   * (multiply by `config.scalingFactor` for a diffusion latent).
   * @example const latent = await vae.encode(image)
   */
  async encode(image: Tensor): Promise<Tensor> {
    if (!(image instanceof Tensor)) throw invalidArgument('image', 'a Tensor', image)
    const out = await callNative(() => this.native.encode(image.native))
    return new Tensor(out as Binding.NativeTensor)
  }
}

/** The Gemma-2 text encoder (`Gemma2Model`): last hidden state after the final norm. */
export class Gemma2TextEncoder extends ModelComponent<Binding.NativeTextEncoder, Gemma2Config> {
  /**
   * Load a `text_encoder/` folder.
   * @example const textEncoder = await Gemma2TextEncoder.load('sana/text_encoder')
   */
  static async load(dir: string, options: LoadOptions = {}): Promise<Gemma2TextEncoder> {
    const abs = checkDir(dir, 'text_encoder')
    const h = await callNative(() => native().NativeTextEncoder.load(abs, nativeOptions(options)))
    return new Gemma2TextEncoder(h as Binding.NativeTextEncoder, abs)
  }

  /**
   * Last hidden state after the final norm for token ids and attention masks (row-major [B, L]).
   * @example const h = await textEncoder.forward(await tokenizer.encode(['a cat'], { maxLength: 300, padding: true }))
   */
  async forward(input: { inputIds: number[][] | Tensor; attentionMask: number[][] | Tensor }): Promise<Tensor> {
    const ids = toIdTensor(input.inputIds, 'inputIds')
    const mask = toIdTensor(input.attentionMask, 'attentionMask')
    const out = await callNative(() => this.native.forward(ids.native, mask.native))
    return new Tensor(out as Binding.NativeTensor)
  }

  /** Free the encoder's weights (~5 GB for real Sana) once prompts are encoded. Alias of {@link dispose}. */
  unload(): void {
    this.dispose()
  }
}

/** number[][] (rows of equal length) → int64 Tensor [B, L]; Tensors pass through. */
export function toIdTensor(rows: number[][] | Tensor, name: string): Tensor {
  if (rows instanceof Tensor) return rows
  if (!Array.isArray(rows) || rows.length === 0 || !rows.every((r) => Array.isArray(r) && r.length === rows[0].length)) {
    throw invalidArgument(name, 'a Tensor or a non-empty array of equal-length number arrays', rows)
  }
  const flat = Int32Array.from(rows.flat())
  return Tensor.fromInt32Array(flat, [rows.length, rows[0].length])
}

export { checkDir }
