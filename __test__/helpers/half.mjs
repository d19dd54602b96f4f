// Shared by the half-precision CPU specs (cpu-half.spec.mjs: bf16/f16 weights widened to f32;
// cpu-bf16-compute.spec.mjs: bf16 arithmetic on AMX).
import { join } from 'node:path'
import { Tensor } from '../../dist/index.js'
import { caseOf, caseTensor } from './reference.mjs'
import { readSafetensors, tensorsOf, writeSafetensors } from './safetensors.mjs'

/**
 * The fixture's weights are bf16-exact, so holding them in bf16 rounds nothing. This nudges every f32 weight of a
 * copied pipeline folder off the bf16 grid (×(1 + 2⁻¹¹·sin i)), as real float32 checkpoints are.
 */
export function nudgeOffBf16Grid(dir) {
  for (const file of ['transformer/diffusion_pytorch_model.safetensors', 'vae/diffusion_pytorch_model.safetensors', 'text_encoder/model.safetensors']) {
    const tensors = tensorsOf(readSafetensors(join(dir, file)))
    for (const tensor of Object.values(tensors)) {
      if (tensor.dtype !== 'F32') continue
      const v = new Float32Array(tensor.bytes.buffer, tensor.bytes.byteOffset, tensor.bytes.length / 4)
      for (let i = 0; i < v.length; i++) v[i] *= 1 + 2 ** -11 * Math.sin(i + 0.5)
    }
    writeSafetensors(join(dir, file), tensors)
  }
}

/** A transformer forward's inputs: the case's latents, a fixed 8-token caption, the case's step count as timestep. */
export function transformerForwardInput(caseName, config) {
  const k = caseOf(caseName).call_kwargs
  const lat = caseTensor(caseName, 'input_latents')
  const b = lat.shape[0]
  return {
    hiddenStates: Tensor.fromFloat32Array(lat.data, lat.shape),
    encoderHiddenStates: Tensor.fromFloat32Array(new Float32Array(b * 8 * config.captionChannels).map((_, i) => Math.sin(i * 0.37)), [b, 8, config.captionChannels]),
    timestep: Tensor.fromFloat32Array(new Float32Array(b).fill(k.num_inference_steps * 37), [b]),
  }
}

/** ‖a − b‖ / ‖a‖. */
export function relativeL2(a, b) {
  let se = 0
  let ss = 0
  for (let i = 0; i < a.length; i++) {
    se += (a[i] - b[i]) ** 2
    ss += a[i] ** 2
  }
  return Math.sqrt(se / ss)
}
