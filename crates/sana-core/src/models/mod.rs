//! One file per checkpoint component; struct fields and `vb.pp` paths mirror the checkpoint names.

pub mod component;
pub mod gemma2;
pub mod linear;
pub mod lora;
pub mod sana_controlnet;
pub mod sana_transformer;
pub mod autoencoder_dc;
