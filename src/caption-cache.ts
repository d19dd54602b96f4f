/**
 * The per-generation caption cache: the transformer's (and its ControlNet's) caption-only work — caption
 * projection and norm, the mask bias, every block's cross-attention K and V — computed once and reused by
 * every step. The sampling loop creates one per generation and disposes it when the loop ends.
 */
import { callNativeSync } from './errors'
import { native, type Binding } from './native'

/**
 * One generation's caption cache. Pass it as `captionCache` to every
 * {@link SanaTransformer2DModel.forward} / {@link SanaControlNetModel.forward} of a generation: the first call
 * of each model computes its caption work, later calls reuse it while the caption tensor, the mask tensor, the
 * LoRA adapters (loaded, active, fused) and `loraScale` are the same (the same Tensor objects; a change
 * recomputes). It holds ≈ 2 · layers · batch · 300 · crossAttentionWidth elements per model until
 * {@link dispose}. `SanaPipeline.generate` manages one itself.
 * @example
 * const cache = new CaptionCache()
 * for (const t of timesteps) v = await transformer.forward({ hiddenStates: x, encoderHiddenStates: e, timestep: [t], captionCache: cache })
 * cache.dispose()
 */
export class CaptionCache {
  /** @internal */
  readonly native: Binding.NativeCaptionCache

  /** An empty cache; the first forward that gets it fills it. */
  constructor() {
    this.native = callNativeSync(() => new (native().NativeCaptionCache)())
  }

  /** Native bytes the cached tensors hold (0 when empty or disposed). */
  get bytes(): number {
    return this.native.bytes
  }

  /** How many models have an entry (the transformer, and its ControlNet when one runs). */
  get entries(): number {
    return this.native.entries
  }

  /** Free the cached tensors now (a running forward keeps the ones it uses until it ends). Safe to call twice. */
  dispose(): void {
    this.native.clear()
  }

  [Symbol.dispose](): void {
    this.dispose()
  }
}
