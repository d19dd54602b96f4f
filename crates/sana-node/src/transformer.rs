//! `NativeTransformer`: the transformer component (`SanaTransformer2DModel`).

use crate::component::ComponentKind;
use crate::job::Job;
use crate::tensor::JsTensor;
use napi::bindgen_prelude::{AsyncTask, ClassInstance};
use napi_derive::napi;
use sana_core::config::SanaTransformerConfig;
use sana_core::models::sana_transformer::{PagInput, SanaTransformer2DModel, TransformerInput};
use sana_core::Tensor;

crate::component_class!(JsTransformer, "NativeTransformer", SanaTransformerConfig, ComponentKind::Transformer, SanaTransformer2DModel);

/// Inputs of one `NativeTransformer.forward` call (diffusers' `forward` arguments). Read from JS only:
/// the tensor fields borrow the JS `NativeTensor` instances for the duration of the call.
#[napi(object, object_to_js = false)]
pub struct NativeTransformerInput<'a> {
    /// Latents [B, in_channels, H, W].
    pub hidden_states: ClassInstance<'a, JsTensor>,
    /// Caption embeddings [B, S, caption_channels].
    pub encoder_hidden_states: ClassInstance<'a, JsTensor>,
    /// [B] float timesteps.
    pub timestep: ClassInstance<'a, JsTensor>,
    /// [B, S]: 1 keep, 0 drop. Defaults to attending to every caption token.
    pub encoder_attention_mask: Option<ClassInstance<'a, JsTensor>>,
    /// [B] guidance for guidance-embedding models (Sprint), already times `guidance_embeds_scale`.
    pub guidance: Option<ClassInstance<'a, JsTensor>>,
    /// ControlNet residuals [B, N, D]; sample j is added after block j + 1. Defaults to none.
    pub controlnet_block_samples: Option<Vec<ClassInstance<'a, JsTensor>>>,
    /// Perturbed-attention guidance for this call. Defaults to none.
    pub pag: Option<NativePagInput>,
}

/// PAG (diffusers' `SanaPAGPipeline`): in the listed blocks, attn1 of the last `perturbedRows` batch rows
/// becomes identity attention `to_out(to_v(x))`; those blocks skip `norm_q`/`norm_k` on every row, as
/// diffusers' PAG processors do.
#[napi(object)]
pub struct NativePagInput {
    /// 0-based indices of `transformer_blocks`.
    pub layers: Vec<u32>,
    /// Trailing batch rows that are perturbed (the perturbed copies), 0 < perturbedRows < batch.
    pub perturbed_rows: u32,
}

/// Clones share storage with the JS tensors; sana-core casts them to the model's device and dtype.
impl From<NativeTransformerInput<'_>> for TransformerInput {
    fn from(i: NativeTransformerInput<'_>) -> Self {
        TransformerInput {
            hidden_states: i.hidden_states.inner.clone(),
            encoder_hidden_states: i.encoder_hidden_states.inner.clone(),
            timestep: i.timestep.inner.clone(),
            encoder_attention_mask: i.encoder_attention_mask.map(|m| m.inner.clone()),
            guidance: i.guidance.map(|g| g.inner.clone()),
            controlnet_block_samples: i.controlnet_block_samples.map(|s| s.iter().map(|t| t.inner.clone()).collect()),
            pag: i.pag.map(|p| PagInput { layers: p.layers.iter().map(|&l| l as usize).collect(), perturbed_rows: p.perturbed_rows as usize }),
        }
    }
}

#[napi]
impl JsTransformer {
    /// One denoiser call → [B, out_channels, H, W] in the model dtype (sana-core casts the inputs to it;
    /// the timestep and guidance embeddings are computed in f32).
    #[napi]
    pub fn forward(&self, input: NativeTransformerInput) -> napi::Result<AsyncTask<Job<Tensor, JsTensor>>> {
        let (_component, model) = self.loaded()?;
        let input = TransformerInput::from(input);
        Ok(AsyncTask::new(Job::new(move || model.forward(&input), |t| Ok(JsTensor::new(t)))))
    }
}
