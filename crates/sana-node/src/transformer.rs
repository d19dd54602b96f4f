//! `NativeTransformer`: the transformer component (`SanaTransformer2DModel`).

use crate::component::ComponentKind;
use crate::job::Job;
use crate::tensor::JsTensor;
use napi::bindgen_prelude::AsyncTask;
use napi_derive::napi;
use sana_core::config::SanaTransformerConfig;
use sana_core::models::sana_transformer::{SanaTransformer2DModel, TransformerInput};
use sana_core::{DType, Tensor};

crate::component_class!(JsTransformer, "NativeTransformer", SanaTransformerConfig, ComponentKind::Transformer, SanaTransformer2DModel);

#[napi]
impl JsTransformer {
    /// One denoiser call: latents [B, C, H, W], caption embeddings [B, S, caption], timestep [B]
    /// (optional mask [B, S]: 1 keep, 0 drop; guidance [B] for Sprint, already scaled) → [B, out, H, W]
    /// in the model dtype. Inputs are cast to the model dtype; the timestep and guidance stay f32.
    #[napi]
    pub fn forward(
        &self,
        hidden_states: &JsTensor,
        encoder_hidden_states: &JsTensor,
        timestep: &JsTensor,
        encoder_attention_mask: Option<&JsTensor>,
        guidance: Option<&JsTensor>,
    ) -> napi::Result<AsyncTask<Job<Tensor, JsTensor>>> {
        let (_component, model) = self.loaded()?;
        let hidden_states = hidden_states.inner.clone();
        let encoder_hidden_states = encoder_hidden_states.inner.clone();
        let timestep = timestep.inner.clone();
        let encoder_attention_mask = encoder_attention_mask.map(|m| m.inner.clone());
        let guidance = guidance.map(|g| g.inner.clone());
        Ok(AsyncTask::new(Job::new(
            move || {
                let dtype = model.dtype();
                let input = TransformerInput {
                    hidden_states: hidden_states.to_dtype(dtype)?,
                    encoder_hidden_states: encoder_hidden_states.to_dtype(dtype)?,
                    timestep: timestep.to_dtype(DType::F32)?,
                    encoder_attention_mask,
                    guidance: guidance.map(|g| g.to_dtype(DType::F32)).transpose()?,
                    controlnet_block_samples: None,
                    lora_scale: 1.0,
                };
                model.forward(&input)
            },
            |t| Ok(JsTensor::new(t)),
        )))
    }
}
