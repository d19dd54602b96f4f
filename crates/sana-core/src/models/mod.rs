//! One file per checkpoint component; struct fields and `vb.pp` paths mirror the checkpoint names.

pub mod component;
pub mod autoencoder_dc;
