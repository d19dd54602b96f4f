// The wave-2 fixtures (img2img, inpainting, Sprint img2img, ControlNet, PAG, LoRA, DC-AE-Lite): the reference
// set (through the same reader as wave 1; manifest paths are relative to wave2/), its input files, and a
// per-step/final/image/PNG check shared by every wave-2 e2e test.
import { join } from 'node:path'
import { Tensor } from '../../dist/index.js'
import { stepSlice } from './fixtures.mjs'
import { callOptions } from './pipelines.mjs'
import { WAVE2 } from './paths.mjs'
import { assertPngMatches } from './png.mjs'
import { assertClose, referenceSet } from './reference.mjs'

export { WAVE2 }
export const wave2 = referenceSet(join(WAVE2, 'reference'))
export const { manifest, caseOf, ref, caseTensor } = wave2

/** A folder named in the wave-2 manifest (`model_dir`, `transformer_dir`, …) as an absolute path. */
export const wave2Path = (relative) => join(WAVE2, relative)
/** A file of wave2/inputs. */
export const input = (name) => join(WAVE2, 'inputs', name)
/** A reference tensor of a wave-2 case as a native Tensor. */
export function caseTensorT(caseName, role) {
  const r = wave2.caseTensor(caseName, role)
  return Tensor.fromFloat32Array(r.data, r.shape)
}

/**
 * `generate` options reproducing a wave-2 e2e case's diffusers call: its call_kwargs and its generator's seed.
 * `extra` adds the case's inputs (images, scheduler, PAG layers) or replaces the seed (`seed: undefined` with
 * stored noise); undefined values are dropped.
 */
export function caseOptions(name, extra = {}) {
  const c = wave2.caseOf(name)
  const k = c.call_kwargs
  const o = {
    ...callOptions(k),
    strength: k.strength,
    pagScale: k.pag_scale,
    pagAdaptiveScale: k.pag_adaptive_scale,
    controlnetConditioningScale: k.controlnet_conditioning_scale,
    seed: c.rng.seed,
    ...extra,
  }
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined))
}

/**
 * Run `generate` for a case and compare every step's latents, the final latents, image_pt and the PNG with the
 * reference, at the case's tolerances. `options` are the generate options reproducing the case.
 */
export async function checkE2e(t, pipe, name, options) {
  const c = wave2.caseOf(name)
  const perStep = []
  const res = await pipe.generate({
    ...options,
    outputType: 'tensor',
    onStep: async (e) => perStep.push(await e.latents.toFloat32Array()),
  })
  const steps = wave2.caseTensor(name, 'latents_per_step')
  t.is(perStep.length, steps.shape[0], `${name}: steps run`)
  const tol = c.tolerance.final_latents
  perStep.forEach((got, k) => assertClose(t, got, stepSlice(steps, k).data, tol, `${name} step ${k}`))
  assertClose(t, perStep.at(-1), wave2.caseTensor(name, 'final_latents').data, tol, `${name} final latents`)
  const want = wave2.caseTensor(name, 'image_pt')
  t.deepEqual(res.images.shape, want.shape)
  assertClose(t, await res.images.toFloat32Array(), want.data, c.tolerance.image_pt, `${name} image_pt`)
  const png = await pipe.generate(options)
  assertPngMatches(t, png.images[0], join(WAVE2, c.png), c.tolerance.uint8_max_diff, name)
  return res
}
