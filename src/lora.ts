/**
 * LoRA adapters on the transformer, as diffusers' LoRA loader has them: `loadLoraWeights` (a file, a folder or a Hub
 * repo in the diffusers/peft layout `save_lora_weights` writes), `setAdapters`, `fuseLora` / `unfuseLora`,
 * `unloadLoraWeights`. This module finds the file and checks options; reading the file, matching its keys to the
 * model and every weight operation are native (`crates/sana-core/src/weights/adapters.rs`, `models/lora.rs`).
 *
 * One difference from diffusers: unloading always gives the base model back. Fusing merges into copies of the
 * targeted weights, so `unloadLoraWeights()` after `fuseLora()` restores the checkpoint's weights exactly, where
 * diffusers' keeps the merged ones. The price: while fused, both the merged and the base weights are held.
 */
import { existsSync, statSync } from 'node:fs'
import { join, resolve } from 'node:path'
import type { SanaTransformer2DModel } from './components'
import { callNative, callNativeSync, invalidArgument, SanaError } from './errors'
import { resolveRepoFile, type ResolveModelOptions } from './hub'
import type { Binding } from './native'

/** The file name diffusers' `save_lora_weights` writes, and the one looked for in a folder or repo. */
export const DEFAULT_LORA_WEIGHT_NAME = 'pytorch_lora_weights.safetensors'

/**
 * Options of {@link loadLoraWeights}; the Hub options apply when a repo id is given.
 * @example await pipe.loadLoraWeights('org/sana-pixel-lora', { adapterName: 'pixel', weightName: 'pixel.safetensors' })
 */
export interface LoadLoraOptions extends Omit<ResolveModelOptions, 'variant'> {
  /** Name to refer to the adapter by (`setAdapters`, `listAdapters`). Defaults to `default_<n>`, as diffusers. */
  adapterName?: string
  /** The safetensors file inside a folder or repo. Defaults to `'pytorch_lora_weights.safetensors'`. */
  weightName?: string
}

/**
 * Options of {@link fuseLora}.
 * @example await pipe.fuseLora({ loraScale: 0.8 })
 */
export interface FuseLoraOptions {
  /** Scale the active adapters are merged at (times each adapter's weight). Defaults to 1. */
  loraScale?: number
}

/**
 * One loaded adapter, as {@link listAdapters} reports it.
 * @example { name: 'pixel', path: '/…/pytorch_lora_weights.safetensors', rank: 4, alpha: 8, layers: 20, weight: 1, active: true }
 */
export interface LoraAdapterInfo extends Binding.NativeAdapterInfo {
  /** Whether it takes part in forwards (it is among the `setAdapters` names). */
  active: boolean
}

function checkFinite(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw invalidArgument(name, 'a finite number', v)
  return v
}

function checkName(name: string, v: unknown): string {
  if (typeof v !== 'string' || v.length === 0) throw invalidArgument(name, 'a non-empty string', v)
  return v
}

/**
 * Where a LoRA's weights are: a `.safetensors` file as it is; `weightName` inside a folder; else `weightName` in the
 * Hub repo `pathOrRepoId`, through the Hugging Face cache (downloaded on first use).
 * @example const file = await resolveLoraFile('./my-lora')  // → /abs/my-lora/pytorch_lora_weights.safetensors
 */
export async function resolveLoraFile(pathOrRepoId: string, options: LoadLoraOptions = {}): Promise<string> {
  checkName('pathOrRepoId', pathOrRepoId)
  const weightName = options.weightName === undefined ? DEFAULT_LORA_WEIGHT_NAME : checkName('weightName', options.weightName)
  const local = resolve(pathOrRepoId)
  if (existsSync(local)) {
    const file = statSync(local).isDirectory() ? join(local, weightName) : local
    if (!existsSync(file)) throw new SanaError('SANA_NOT_FOUND', `LoRA weights file not found: ${file}`)
    return file
  }
  if (!/^[\w.-]+\/[\w.-]+$/.test(pathOrRepoId)) {
    throw new SanaError('SANA_NOT_FOUND', `LoRA ${pathOrRepoId} is neither a file or folder (${local} does not exist) nor a Hub repo id (org/name)`)
  }
  const { adapterName: _name, weightName: _file, ...hub } = options
  return resolveRepoFile(pathOrRepoId, weightName, hub)
}

/**
 * Read a LoRA (diffusers/peft layout) and attach it to `transformer`, active at weight 1 beside the adapters already
 * active. Every key must fit a targetable layer (q/k/v/out of both attentions, the Mix-FFN 1×1 convs): otherwise it
 * rejects, naming the key (`SANA_ADAPTER_MISMATCH`, `SANA_SHAPE_MISMATCH`, `SANA_WEIGHT_MISSING`), and nothing changes.
 * @returns The adapter's name.
 * @example const name = await loadLoraWeights(pipe.transformer, './lora-tiny', { adapterName: 'tiny' })
 */
export async function loadLoraWeights(transformer: SanaTransformer2DModel, pathOrRepoId: string, options: LoadLoraOptions = {}): Promise<string> {
  if (!options || typeof options !== 'object') throw invalidArgument('options', 'an object', options)
  const name = options.adapterName === undefined ? undefined : checkName('adapterName', options.adapterName)
  const file = await resolveLoraFile(pathOrRepoId, options)
  return (await callNative(() => transformer.native.loadLora(file, name))) as string
}

/**
 * Make exactly `names` active, with `weights` (one per name; defaults to 1 each). `[]` disables every adapter.
 * @example await setAdapters(pipe.transformer, ['pixel', 'toy'], [0.7, 0.5])
 */
export async function setAdapters(transformer: SanaTransformer2DModel, names: string[], weights?: number[]): Promise<void> {
  if (!Array.isArray(names)) throw invalidArgument('names', 'an array of adapter names', names)
  names.forEach((n) => checkName('names', n))
  const w = weights ?? names.map(() => 1)
  if (!Array.isArray(w) || w.length !== names.length) throw invalidArgument('weights', `an array of ${names.length} numbers`, w)
  w.forEach((x) => checkFinite('weights', x))
  await callNative(() => transformer.native.setAdapters(names, w))
}

/**
 * Remove the named adapters (active or not).
 * @example await deleteAdapters(pipe.transformer, ['toy'])
 */
export async function deleteAdapters(transformer: SanaTransformer2DModel, names: string[]): Promise<void> {
  if (!Array.isArray(names)) throw invalidArgument('names', 'an array of adapter names', names)
  names.forEach((n) => checkName('names', n))
  await callNative(() => transformer.native.deleteAdapters(names))
}

/**
 * Merge the active adapters into (copies of) the weights at `loraScale`: faster steps, and a per-call `loraScale`
 * no longer applies. Fusing again re-merges from the base weights.
 * @example await fuseLora(pipe.transformer, { loraScale: 0.8 })
 */
export async function fuseLora(transformer: SanaTransformer2DModel, options: FuseLoraOptions = {}): Promise<void> {
  const scale = options.loraScale === undefined ? 1 : checkFinite('loraScale', options.loraScale)
  await callNative(() => transformer.native.fuseLora(scale))
}

/**
 * Undo {@link fuseLora}: the base weights again, with the adapters applied at run time at their weights.
 * @example await unfuseLora(pipe.transformer)
 */
export async function unfuseLora(transformer: SanaTransformer2DModel): Promise<void> {
  await callNative(() => transformer.native.unfuseLora())
}

/**
 * Remove every adapter: the base model exactly, fused or not (diffusers keeps fused weights here; see the module docs).
 * @example await unloadLoraWeights(pipe.transformer)
 */
export async function unloadLoraWeights(transformer: SanaTransformer2DModel): Promise<void> {
  await callNative(() => transformer.native.unloadLora())
}

/**
 * The loaded adapters, in load order.
 * @example listAdapters(pipe.transformer).filter((a) => a.active).map((a) => a.name)
 */
export function listAdapters(transformer: SanaTransformer2DModel): LoraAdapterInfo[] {
  return callNativeSync(() => transformer.native.listAdapters()).map((a) => ({
    name: a.name,
    path: a.path,
    rank: a.rank,
    alpha: a.alpha ?? undefined,
    layers: a.layers,
    weight: a.weight ?? undefined,
    active: a.weight !== undefined && a.weight !== null,
  }))
}

/**
 * The scale the adapters are fused at, or undefined when they are not fused.
 * @example if (fusedLoraScale(pipe.transformer) !== undefined) await unfuseLora(pipe.transformer)
 */
export function fusedLoraScale(transformer: SanaTransformer2DModel): number | undefined {
  return callNativeSync(() => transformer.native.fusedLoraScale) ?? undefined
}
