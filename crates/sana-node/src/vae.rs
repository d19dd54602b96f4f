//! `NativeAutoencoderDC`: the vae component.
// The model type is `()` until the model port lands: `load` then validates the checkpoint only.

use crate::component::ComponentKind;
use sana_core::config::AutoencoderDCConfig;

crate::component_class!(JsVae, "NativeAutoencoderDC", AutoencoderDCConfig, ComponentKind::Vae, ());
