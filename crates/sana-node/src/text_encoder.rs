//! `NativeTextEncoder`: the text encoder component.
// The model type is `()` until the model port lands: `load` then validates the checkpoint only.

use crate::component::ComponentKind;
use sana_core::config::Gemma2Config;

crate::component_class!(JsTextEncoder, "NativeTextEncoder", Gemma2Config, ComponentKind::TextEncoder, ());
