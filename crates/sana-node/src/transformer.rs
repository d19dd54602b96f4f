//! `NativeTransformer`: the transformer component.
// The model type is `()` until the model port lands: `load` then validates the checkpoint only.

use crate::component::ComponentKind;
use sana_core::config::SanaTransformerConfig;

crate::component_class!(JsTransformer, "NativeTransformer", SanaTransformerConfig, ComponentKind::Transformer, ());
