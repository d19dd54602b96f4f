//! `softmax(logits · scale + bias, dim=-1)` in f32: the probabilities of Sana's cross-attention
//! (diffusers: SDPA with an additive mask of 0 / −10000 per caption token).
//!
//! On the CPU one parallel pass per row with the vectorised exp of `fastmath`; as candle ops it was
//! six passes (scale, bias, max, subtract, exp, sum and divide), each allocating, and a scalar `expf`.
//! On CUDA, `SANA_CUDA_FUSED=softmax` runs one fused kernel (ops/cuda/softmax.rs) whose output is in the
//! logits' dtype; the default is still the candle composition below.

use super::{fastmath, is_cpu_f32, with_cpu_f32};
use crate::{ensure_arg, Result};
use candle_core::{DType, Tensor, D};
use rayon::prelude::*;

/// logits [B, …, S] → f32 probabilities of the same shape (in the logits' dtype on the fused CUDA path). `bias`: additive, [B, 1, …, 1, S] (one row of
/// S values per batch item), or none.
pub fn scaled_softmax(logits: &Tensor, scale: f64, bias: Option<&Tensor>) -> Result<Tensor> {
    let dims = logits.dims().to_vec();
    ensure_arg!(dims.len() >= 2, "logits", "expected [B, …, S], got {dims:?}");
    let (b, s) = (dims[0], dims[dims.len() - 1]);
    if let Some(bias) = bias {
        ensure_arg!(bias.elem_count() == b * s && bias.dim(0)? == b, "bias",
            "expected {b} rows of {s} values ([B, 1, …, S]), got {:?}", bias.dims());
    }
    #[cfg(feature = "cuda")]
    if super::cuda::fused(super::cuda::Fused::Softmax) && super::is_cuda_kernel_dtype(&[logits]) {
        return super::cuda::scaled_softmax(logits, scale, bias);
    }
    let logits = logits.to_dtype(DType::F32)?;
    if !is_cpu_f32(&logits) {
        let mut z = logits.affine(scale, 0.0)?;
        if let Some(bias) = bias {
            z = z.broadcast_add(&bias.to_dtype(DType::F32)?)?;
        }
        let e = z.broadcast_sub(&z.max_keepdim(D::Minus1)?)?.exp()?;
        return Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?);
    }
    let bias: Option<Vec<f32>> = match bias {
        Some(t) => Some(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?),
        None => None,
    };
    let rows_per_batch = logits.elem_count() / (b * s).max(1);
    let out = with_cpu_f32(&logits, |xs| {
        let mut out = vec![0f32; xs.len()];
        out.par_chunks_mut(s).zip(xs.par_chunks(s)).enumerate().for_each(|(r, (dst, src))| {
            let bias = bias.as_ref().map(|v| &v[(r / rows_per_batch) * s..(r / rows_per_batch + 1) * s]);
            fastmath::softmax_row(src, dst, scale as f32, bias);
        });
        out
    })?;
    Ok(Tensor::from_vec(out, dims, logits.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_the_candle_composition_with_and_without_bias() -> Result<()> {
        let dev = Device::Cpu;
        let (b, h, n, s) = (2, 3, 5, 17);
        let logits = (Tensor::randn(0f32, 1.0, (b, h, n, s), &dev)? * 4.0)?;
        let mask: Vec<f32> = (0..b * s).map(|i| if i % 7 == 3 { -10000.0 } else { 0.0 }).collect();
        let bias = Tensor::from_vec(mask, (b, 1, 1, s), &dev)?;
        for bias in [None, Some(&bias)] {
            let got = scaled_softmax(&logits, 0.125, bias)?;
            let mut z = logits.affine(0.125, 0.0)?;
            if let Some(bias) = bias {
                z = z.broadcast_add(bias)?;
            }
            let want = candle_nn_free_softmax(&z)?;
            let err = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(err < 1e-6, "bias {}: {err}", bias.is_some());
        }
        assert!(scaled_softmax(&logits, 1.0, Some(&Tensor::zeros((b, 1, 1, s - 1), DType::F32, &dev)?)).is_err());
        Ok(())
    }

    fn candle_nn_free_softmax(z: &Tensor) -> candle_core::Result<Tensor> {
        let e = z.broadcast_sub(&z.max_keepdim(D::Minus1)?)?.exp()?;
        e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
    }
}
