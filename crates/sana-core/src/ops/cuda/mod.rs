//! Our CUDA kernels (`crates/sana-core/kernels/NAME.cu`, compiled to PTX by build.rs for compute_80 and
//! compute_90), one Rust file per kernel here (`NAME.rs`), all launched through [`launch`]. Only the CUDA
//! device reaches here: each op module dispatches (`is_cuda()` → these, CPU f32 → its Rust loop,
//! anything else → candle ops).
//!
//! Storage f32, f16 or bf16 (one kernel per type, `NAME_f32/_f16/_bf16`); math in f32.
//!
//! # Switching the fused kernels on: `SANA_CUDA_FUSED`
//! The fused kernels below replace chains of candle ops. No GPU has run them yet, so each op keeps its
//! old candle path by default; the environment variable `SANA_CUDA_FUSED` (read once per process) turns
//! them on: a comma-separated list of `softmax` (cross-attention softmax with scale and mask folded in),
//! `adaln` (modulated LayerNorm reading shift/scale from the modulation tensor), `residual` (gated
//! residual `x + gate·(y + bias)`), `mixffn` (the Mix-FFN's SiLU, with the expand bias when the caller
//! passes it, folded into the depthwise 3×3 + GLU kernel), or `all`. Unset or empty: none. Once a GPU
//! session has verified them (scripts/device-check.sh), flip the default in [`fused`].
//! Linear attention, depthwise conv (+GLU) and channel RMSNorm are verified and always on.

mod channel_norm;
mod depthwise_conv;
mod fused_norm;
mod launch;
mod linear_attention;
mod softmax;
#[cfg(test)]
mod testing;

pub(crate) use channel_norm::rms_norm_channels;
pub(crate) use depthwise_conv::{depthwise_conv2d, silu_depthwise_conv2d_glu};
pub(crate) use fused_norm::{gated_residual, modulated_layer_norm};
pub(crate) use linear_attention::{relu_linear_attention, LINEAR_ATTENTION_MAX_HEAD_DIM};
pub(crate) use softmax::scaled_softmax;

/// A fused kernel that `SANA_CUDA_FUSED` can switch on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Fused {
    Softmax,
    AdaLn,
    Residual,
    MixFfn,
}

/// Whether `kernel` is switched on (`SANA_CUDA_FUSED`, see the module doc; default: off).
pub(crate) fn fused(kernel: Fused) -> bool {
    use std::sync::OnceLock;
    static ON: OnceLock<Vec<Fused>> = OnceLock::new();
    ON.get_or_init(|| parse_fused(&std::env::var("SANA_CUDA_FUSED").unwrap_or_default())).contains(&kernel)
}

/// `"softmax,adaln"` → [Softmax, AdaLn]; `"all"` → every kernel; unknown names are ignored.
fn parse_fused(list: &str) -> Vec<Fused> {
    let all = [Fused::Softmax, Fused::AdaLn, Fused::Residual, Fused::MixFfn];
    let mut on = Vec::new();
    for name in list.split(',').map(|s| s.trim().to_ascii_lowercase()) {
        match name.as_str() {
            "all" => on.extend(all),
            "softmax" => on.push(Fused::Softmax),
            "adaln" => on.push(Fused::AdaLn),
            "residual" => on.push(Fused::Residual),
            "mixffn" => on.push(Fused::MixFfn),
            _ => {}
        }
    }
    on
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fused_switch_parses_names_and_all() {
        assert_eq!(parse_fused(""), vec![]);
        assert_eq!(parse_fused("softmax, ADALN"), vec![Fused::Softmax, Fused::AdaLn]);
        assert_eq!(parse_fused("residual,bogus"), vec![Fused::Residual]);
        assert_eq!(parse_fused("all"), vec![Fused::Softmax, Fused::AdaLn, Fused::Residual, Fused::MixFfn]);
    }
}
