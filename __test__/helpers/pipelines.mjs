// The two fixture pipelines most tests drive: sana-tiny, and sana-sprint-tiny sharing its tokenizer,
// text encoder and VAE (the Sprint fixture ships only its transformer and scheduler).
import { SanaPipeline, Tensor } from '../../dist/index.js'
import { SANA_TINY, SPRINT_TINY } from './paths.mjs'
import { caseOf, caseTensor } from './reference.mjs'

export async function loadFixturePipelines() {
  const pipe = await SanaPipeline.load(SANA_TINY)
  const sprint = await SanaPipeline.load(SPRINT_TINY, {
    components: { tokenizer: pipe.tokenizer, textEncoder: pipe.textEncoder, vae: pipe.vae },
  })
  return { pipe, sprint }
}

/** `generate` options from a diffusers text-to-image call's kwargs (a case's `call_kwargs`). */
export function callOptions(k) {
  return {
    prompt: k.prompt,
    negativePrompt: k.negative_prompt,
    guidanceScale: k.guidance_scale,
    numInferenceSteps: k.num_inference_steps,
    height: k.height,
    width: k.width,
    useResolutionBinning: k.use_resolution_binning,
  }
}

/** `generate` options reproducing an e2e fixture case's diffusers call (its kwargs and input latents). */
export function caseGenerateOptions(name, extra = {}) {
  const lat = caseTensor(name, 'input_latents')
  return { ...callOptions(caseOf(name).call_kwargs), latents: Tensor.fromFloat32Array(lat.data, lat.shape), ...extra }
}
