//! `NativeControlNet`: diffusers' `SanaControlNetModel` (its block samples feed `NativeTransformer.forward`).

use crate::component::ComponentKind;
use crate::caption_cache::JsCaptionCache;
use crate::job::Job;
use crate::tensor::JsTensor;
use napi::bindgen_prelude::{AsyncTask, ClassInstance};
use napi_derive::napi;
use sana_core::config::SanaControlNetConfig;
use sana_core::models::sana_controlnet::{ControlNetInput, SanaControlNetModel};
use sana_core::Tensor;

crate::component_class!(JsControlNet, "NativeControlNet", SanaControlNetConfig, ComponentKind::ControlNet, SanaControlNetModel);

/// Inputs of one `NativeControlNet.forward` call (diffusers' `forward` arguments). Read from JS only.
#[napi(object, object_to_js = false)]
pub struct NativeControlNetInput<'a> {
    /// Latents [B, in_channels, H, W], as given to the transformer.
    pub hidden_states: ClassInstance<'a, JsTensor>,
    /// Caption embeddings [B, S, caption_channels].
    pub encoder_hidden_states: ClassInstance<'a, JsTensor>,
    /// [B] float timesteps, as given to the transformer.
    pub timestep: ClassInstance<'a, JsTensor>,
    /// [B, S]: 1 keep, 0 drop. Defaults to attending to every caption token.
    pub encoder_attention_mask: Option<ClassInstance<'a, JsTensor>>,
    /// The control image's latent × scaling_factor, the shape of `hiddenStates`.
    pub controlnet_cond: ClassInstance<'a, JsTensor>,
    /// Multiplies every returned sample.
    pub conditioning_scale: f64,
    /// The generation's caption cache (one per generation, shared by the transformer and its ControlNet).
    /// Defaults to computing the caption work in this call.
    pub caption_cache: Option<ClassInstance<'a, JsCaptionCache>>,
}

/// Clones share storage with the JS tensors; sana-core casts them to the model's device and dtype.
impl From<NativeControlNetInput<'_>> for ControlNetInput {
    fn from(i: NativeControlNetInput<'_>) -> Self {
        ControlNetInput {
            hidden_states: i.hidden_states.inner.clone(),
            encoder_hidden_states: i.encoder_hidden_states.inner.clone(),
            timestep: i.timestep.inner.clone(),
            encoder_attention_mask: i.encoder_attention_mask.map(|m| m.inner.clone()),
            controlnet_cond: i.controlnet_cond.inner.clone(),
            conditioning_scale: i.conditioning_scale,
            caption_cache: i.caption_cache.map(|c| c.inner.clone()),
        }
    }
}

#[napi]
impl JsControlNet {
    /// The block samples: `num_layers` tensors [B, N, inner_dim], already × conditioning_scale, in the
    /// model dtype (pass them to the transformer as `controlnetBlockSamples`).
    #[napi(ts_return_type = "Promise<Array<NativeTensor>>")]
    pub fn forward(&self, input: NativeControlNetInput) -> napi::Result<AsyncTask<Job<Vec<Tensor>, Vec<JsTensor>>>> {
        let (_component, model) = self.loaded()?;
        let input = ControlNetInput::from(input);
        Ok(AsyncTask::new(Job::new(move || model.forward(&input), |ts| Ok(ts.into_iter().map(JsTensor::new).collect()))))
    }
}
