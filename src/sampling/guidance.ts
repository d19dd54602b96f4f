/**
 * Guidance for base Sana: how the transformer batch is laid out and how its chunks combine into one
 * prediction. Classifier-free guidance (SanaPipeline), perturbed-attention guidance (SanaPAGPipeline) and both
 * together; all arithmetic in float32 with diffusers' operation order.
 */
import { Tensor } from '../tensor'

/** Prompt embeddings and masks, one row per image (already repeated `numImagesPerPrompt` times). */
export interface TextRows {
  embeds: Tensor
  mask: Tensor
}

/** Perturbed-attention guidance settings, resolved. */
export interface PagSettings {
  /** Guidance scale of the perturbed branch (`pag_scale`). */
  scale: number
  /** `pag_adaptive_scale`: the scale shrinks by this much per timestep unit below 1000. 0 keeps it constant. */
  adaptiveScale: number
  /** 0-based transformer block indices whose self-attention becomes the identity for the perturbed branch. */
  layers: number[]
}

/** The batch layout and combination rule of one generation. */
export interface Guidance {
  /** Copies of the latents in the transformer batch: 1 (none), 2 (CFG or PAG), 3 (CFG + PAG). */
  readonly copies: number
  /** Caption embeddings and mask for the whole batch, chunk by chunk. */
  readonly text: TextRows
  /** What the transformer needs to know about PAG (the perturbed chunk is last), for a batch of `rows`. */
  pagInput(rows: number): { layers: number[]; perturbedRows: number } | undefined
  /** Chunked model output [copies·B, …] → the guided prediction [B, …] for scheduler timestep `t`. */
  combine(output: Tensor, t: number): Tensor
}

function rows(t: Tensor, start: number, count: number): Tensor {
  return t.indexSelect(
    Array.from({ length: count }, (_, i) => start + i),
    0,
  )
}

/** a + s·(b − c), rounded like torch: the difference, then the product, then the sum. */
function addScaledDifference(a: Tensor, b: Tensor, c: Tensor, s: number): Tensor {
  return Tensor.linearCombination([a, Tensor.linearCombination([b, c], [1, -1])], [1, s])
}

/**
 * PAG's scale at scheduler timestep `t`: `max(pag_scale − pag_adaptive_scale·(1000 − t), 0)`, computed as
 * diffusers does on a float32 tensor.
 * @example pagScaleAt({ scale: 3, adaptiveScale: 0.008, layers: [1] }, 999) // ≈ 2.992
 */
export function pagScaleAt(pag: PagSettings, t: number): number {
  if (pag.adaptiveScale <= 0) return pag.scale
  const f = Math.fround
  return Math.max(f(f(pag.scale) - f(f(pag.adaptiveScale) * f(1000 - t))), 0)
}

/**
 * Build the guidance of one call: `cfg` is the CFG scale when classifier-free guidance runs (scale > 1), else
 * undefined; `negative` is required with it. The batch is `[uncond, text, perturbed]` with both, `[uncond, text]`
 * for CFG, `[text, perturbed]` for PAG alone.
 */
export function makeGuidance(positive: TextRows, negative: TextRows | undefined, cfg: number | undefined, pag: PagSettings | undefined): Guidance {
  const chunks: TextRows[] = [...(cfg !== undefined ? [negative!] : []), positive, ...(pag ? [positive] : [])]
  const text: TextRows =
    chunks.length === 1
      ? positive
      : { embeds: Tensor.cat(chunks.map((c) => c.embeds), 0), mask: Tensor.cat(chunks.map((c) => c.mask), 0) }
  const n = positive.embeds.shape[0]
  return {
    copies: chunks.length,
    text,
    pagInput: (batch) => (pag ? { layers: pag.layers, perturbedRows: batch / chunks.length } : undefined),
    combine(output, t) {
      if (chunks.length === 1) return output
      const g = cfg === undefined ? undefined : Math.fround(cfg)
      if (!pag) return addScaledDifference(rows(output, 0, n), rows(output, n, n), rows(output, 0, n), g!) // u + g·(t − u)
      const s = pagScaleAt(pag, t)
      const perturbed = rows(output, (chunks.length - 1) * n, n)
      if (g === undefined) {
        const textOut = rows(output, 0, n)
        return addScaledDifference(textOut, textOut, perturbed, s) // t + s·(t − p)
      }
      const [uncond, textOut] = [rows(output, 0, n), rows(output, n, n)]
      return addScaledDifference(addScaledDifference(uncond, textOut, uncond, g), textOut, perturbed, s) // u + g·(t − u) + s·(t − p)
    },
  }
}
