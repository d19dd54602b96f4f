/**
 * Perturbed-attention guidance (PAG, diffusers' `SanaPAGPipeline`): which transformer blocks get the
 * perturbed self-attention. The transformer side is {@link TransformerInput.pag}.
 */
import { invalidArgument, SanaError } from './errors'

/**
 * Block indices selected by a diffusers-style `pag_applied_layers` spec, sorted and without repeats.
 *
 * Each string is a regular expression searched (Python `re.search`, no anchoring) in the name of every
 * self-attention module, `transformer_blocks.{i}.attn1`, exactly as diffusers' `PAGMixin` does, so
 * `'transformer_blocks.1'` selects block 1 **and** blocks 10–19 of a 20-block model (anchor it,
 * `'transformer_blocks\\.1\\.'`, for block 1 alone). Numbers are block indices. A spec that matches no
 * block, an index out of range or an invalid expression throws `SANA_INVALID_ARGUMENT` naming
 * `pagAppliedLayers`. Both arguments are required (no defaults).
 * @example pagLayerIndices('transformer_blocks.1', 20) // → [1, 10, 11, …, 19]
 * @example pagLayerIndices([7, 8], 20) // → [7, 8]
 */
export function pagLayerIndices(spec: string | string[] | number[], numLayers: number): number[] {
  if (!Number.isInteger(numLayers) || numLayers <= 0) throw invalidArgument('numLayers', 'a positive integer', numLayers)
  const items: unknown[] = Array.isArray(spec) ? spec : [spec]
  if (items.length === 0) throw invalidArgument('pagAppliedLayers', 'a layer pattern, a block index or a non-empty list of them', spec)
  const selected = new Set<number>()
  for (const item of items) {
    for (const i of matchOne(item, numLayers)) selected.add(i)
  }
  return [...selected].sort((a, b) => a - b)
}

/** The blocks one spec entry selects (at least one, else an error naming the entry). */
function matchOne(item: unknown, numLayers: number): number[] {
  if (typeof item === 'number') {
    if (!Number.isInteger(item) || item < 0 || item >= numLayers) {
      throw invalidArgument('pagAppliedLayers', `a block index in 0..${numLayers - 1}`, item)
    }
    return [item]
  }
  if (typeof item !== 'string') throw invalidArgument('pagAppliedLayers', 'a string pattern or a block index', item)
  let re: RegExp
  try {
    re = new RegExp(item)
  } catch (e) {
    throw new SanaError('SANA_INVALID_ARGUMENT', `pagAppliedLayers: ${JSON.stringify(item)} is not a valid regular expression`, { cause: e })
  }
  const hits = Array.from({ length: numLayers }, (_, i) => i).filter((i) => re.test(`transformer_blocks.${i}.attn1`))
  if (hits.length === 0) {
    throw new SanaError(
      'SANA_INVALID_ARGUMENT',
      `pagAppliedLayers: ${JSON.stringify(item)} matches no self-attention layer (transformer_blocks.0.attn1 … transformer_blocks.${numLayers - 1}.attn1)`,
    )
  }
  return hits
}
