//! `NativeTextEncoder`: the Gemma-2 text encoder component (`Gemma2Model`).

use crate::component::ComponentKind;
use crate::job::Job;
use crate::tensor::JsTensor;
use napi::bindgen_prelude::AsyncTask;
use napi_derive::napi;
use sana_core::config::Gemma2Config;
use sana_core::models::gemma2::Gemma2Model;
use sana_core::Tensor;

crate::component_class!(JsTextEncoder, "NativeTextEncoder", Gemma2Config, ComponentKind::TextEncoder, Gemma2Model);

#[napi]
impl JsTextEncoder {
    /// `Gemma2Model(input_ids, attention_mask).last_hidden_state`, off the JS thread.
    /// inputIds, attentionMask: [B, L] integer tensors (`NativeTensor.fromInt32Array`) → [B, L, hidden].
    /// Values at padded positions are finite but implementation-defined.
    #[napi]
    pub fn forward(&self, input_ids: &JsTensor, attention_mask: &JsTensor) -> napi::Result<AsyncTask<Job<Tensor, JsTensor>>> {
        let (_component, model) = self.loaded()?;
        let (ids, mask) = (input_ids.inner.clone(), attention_mask.inner.clone());
        Ok(AsyncTask::new(Job::new(move || model.forward(&ids, &mask), |t| Ok(JsTensor::new(t)))))
    }
}
