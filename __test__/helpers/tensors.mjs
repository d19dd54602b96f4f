// Reference tensors ({ shape, data } from reference.mjs / wave2.mjs) as package Tensors.
import { Tensor } from '../../dist/index.js'

export const f32 = (r) => Tensor.fromFloat32Array(r.data, r.shape)
export const i64 = (r) => Tensor.fromInt32Array(Int32Array.from(r.data), r.shape)

/**
 * The transformer inputs of a fixture case, `get(role)` reading its tensors: hidden_states,
 * encoder_hidden_states, encoder_attention_mask, timestep (and guidance where the case has it).
 */
export function transformerInput(get, { guidance = false } = {}) {
  return {
    hiddenStates: f32(get('hidden_states')),
    encoderHiddenStates: f32(get('encoder_hidden_states')),
    encoderAttentionMask: i64(get('encoder_attention_mask')),
    timestep: Array.from(get('timestep').data),
    guidance: guidance ? Array.from(get('guidance').data) : undefined,
  }
}
