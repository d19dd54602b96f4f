/**
 * Which transformer blocks perturbed-attention guidance applies to, from diffusers' `pag_applied_layers`.
 */
import { invalidArgument } from './errors'

/**
 * Block indices for a PAG layer spec: numbers are indices; strings are regexes searched (`re.search`) in the
 * module names `transformer_blocks.{i}`, as diffusers does, so `'transformer_blocks.1'` also selects 10–19.
 * @example pagLayerIndices('transformer_blocks.1', 20) // [1, 10, 11, …, 19]
 */
export function pagLayerIndices(spec: string | string[] | number[], numLayers: number): number[] {
  const specs = Array.isArray(spec) ? spec : [spec]
  if (specs.every((x) => typeof x === 'number')) {
    const bad = (specs as number[]).find((i) => !Number.isInteger(i) || i < 0 || i >= numLayers)
    if (bad !== undefined) throw invalidArgument('pagAppliedLayers', `block indices from 0 to ${numLayers - 1}`, bad)
    return [...new Set(specs as number[])].sort((a, b) => a - b)
  }
  const res = (specs as string[]).map((re) => new RegExp(re))
  const out = Array.from({ length: numLayers }, (_, i) => i).filter((i) => res.some((re) => re.test(`transformer_blocks.${i}`)))
  if (out.length === 0) throw invalidArgument('pagAppliedLayers', `a pattern matching one of transformer_blocks.0…${numLayers - 1}`, spec)
  return out
}
