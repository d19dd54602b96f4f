// The wave-2 reference (wave2/reference: PAG, ControlNet, img2img, inpainting, Sprint img2img, LoRA,
// DC-AE-Lite) through the same reader as wave 1; manifest paths are relative to wave2/.
import { join } from 'node:path'
import { FIXTURES } from './paths.mjs'
import { referenceSet } from './reference.mjs'

export const WAVE2 = join(FIXTURES, 'wave2')
const wave2 = referenceSet(join(WAVE2, 'reference'))
export const { manifest, caseOf, ref, caseTensor } = wave2

/** A folder named in the wave-2 manifest (`model_dir`, `transformer_dir`, …) as an absolute path. */
export const wave2Path = (relative) => join(WAVE2, relative)
