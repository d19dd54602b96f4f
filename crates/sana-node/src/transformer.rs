//! `NativeTransformer`: the transformer component (`SanaTransformer2DModel`).

use crate::component::ComponentKind;
use crate::caption_cache::JsCaptionCache;
use crate::job::Job;
use crate::tensor::JsTensor;
use napi::bindgen_prelude::{AsyncTask, ClassInstance};
use napi_derive::napi;
use sana_core::config::SanaTransformerConfig;
use sana_core::models::sana_transformer::{PagInput, SanaTransformer2DModel, TransformerInput};
use sana_core::{SanaError, Tensor};
use std::path::Path;

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
    /// Multiplies every active, unfused LoRA adapter for this call. Defaults to 1.
    pub lora_scale: Option<f64>,
    /// Perturbed-attention guidance for this call. Defaults to none.
    pub pag: Option<NativePagInput>,
    /// The generation's caption cache (one per generation, shared by the transformer and its ControlNet).
    /// Defaults to computing the caption work in this call.
    pub caption_cache: Option<ClassInstance<'a, JsCaptionCache>>,
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
            lora_scale: i.lora_scale.unwrap_or(1.0),
            pag: i.pag.map(|p| PagInput { layers: p.layers.iter().map(|&l| l as usize).collect(), perturbed_rows: p.perturbed_rows as usize }),
            caption_cache: i.caption_cache.map(|c| c.inner.clone()),
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

/// One loaded LoRA adapter.
#[napi(object)]
pub struct NativeAdapterInfo {
    pub name: String,
    /// The safetensors file it was read from.
    pub path: String,
    /// Largest rank among its layers.
    pub rank: u32,
    /// `lora_alpha` from the file's metadata; absent when the file has none (alpha = rank).
    pub alpha: Option<f64>,
    /// Number of layers it adapts.
    pub layers: u32,
    /// Its weight while active; absent when inactive.
    pub weight: Option<f64>,
}

/// LoRA adapters (sana-core `Adapters`). Changes run off the JS thread (fusing merges every targeted
/// weight) and take effect for forward calls that start after them.
#[napi]
impl JsTransformer {
    /// Read a LoRA safetensors file and attach it as `adapterName` (default `default_<n>`), active at weight 1.
    /// Resolves to the adapter's name; on any error the adapters are left as they were.
    #[napi]
    pub fn load_lora(&self, path: String, adapter_name: Option<String>) -> napi::Result<AsyncTask<Job<String, String>>> {
        let (_component, model) = self.loaded()?;
        Ok(AsyncTask::new(Job::new(move || model.adapters().load(Path::new(&path), adapter_name.as_deref()), Ok)))
    }

    /// Make exactly `names` active, with `weights` (one per name).
    #[napi]
    pub fn set_adapters(&self, names: Vec<String>, weights: Vec<f64>) -> napi::Result<AsyncTask<Job<(), ()>>> {
        let (_component, model) = self.loaded()?;
        if names.len() != weights.len() {
            return Err(crate::js_err(SanaError::invalid_arg("adapterWeights", format!("expected one weight per adapter name ({} names, {} weights)", names.len(), weights.len()))));
        }
        let active: Vec<(String, f64)> = names.into_iter().zip(weights).collect();
        Ok(AsyncTask::new(Job::new(move || model.adapters().set_active(&active), Ok)))
    }

    /// Remove the named adapters.
    #[napi]
    pub fn delete_adapters(&self, names: Vec<String>) -> napi::Result<AsyncTask<Job<(), ()>>> {
        let (_component, model) = self.loaded()?;
        Ok(AsyncTask::new(Job::new(move || model.adapters().delete(&names), Ok)))
    }

    /// Merge the active adapters at `loraScale` into copies of the targeted weights.
    #[napi]
    pub fn fuse_lora(&self, lora_scale: f64) -> napi::Result<AsyncTask<Job<(), ()>>> {
        let (_component, model) = self.loaded()?;
        Ok(AsyncTask::new(Job::new(move || model.adapters().fuse(lora_scale), Ok)))
    }

    /// Back to unfused adapters.
    #[napi]
    pub fn unfuse_lora(&self) -> napi::Result<AsyncTask<Job<(), ()>>> {
        let (_component, model) = self.loaded()?;
        Ok(AsyncTask::new(Job::new(move || model.adapters().unfuse(), Ok)))
    }

    /// Remove every adapter: the base model, exactly.
    #[napi]
    pub fn unload_lora(&self) -> napi::Result<AsyncTask<Job<(), ()>>> {
        let (_component, model) = self.loaded()?;
        Ok(AsyncTask::new(Job::new(move || model.adapters().unload(), Ok)))
    }

    /// The loaded adapters, in load order.
    #[napi]
    pub fn list_adapters(&self) -> napi::Result<Vec<NativeAdapterInfo>> {
        let (_component, model) = self.loaded()?;
        Ok(model
            .adapters()
            .list()
            .into_iter()
            .map(|a| NativeAdapterInfo { name: a.name, path: a.path, rank: a.rank as u32, alpha: a.alpha, layers: a.layers as u32, weight: a.weight })
            .collect())
    }

    /// The scale the adapters are fused at; absent when not fused.
    #[napi(getter)]
    pub fn fused_lora_scale(&self) -> napi::Result<Option<f64>> {
        Ok(self.loaded()?.1.adapters().fused())
    }
}
