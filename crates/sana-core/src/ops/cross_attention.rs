//! Softmax cross-attention of Sana's DiT (`SanaAttnProcessor2_0`, SDPA) with the caption K/V already
//! split into heads: `o[b, n, h·hd + i] = Σ_s softmax_s(q_h · k_h[s] · scale + bias[b, s]) · v_h[s, i]`.
//!
//! On the CPU (f32), `sgemm::attention_heads` (`ops/sgemm/attention.rs`): each head's K and V packed
//! once, then one rayon task per (batch item, block of [`rows_per_task`] query rows) runs head by head
//! q·kᵀ on our GEMM's microkernel into L2-sized blocks, the softmax's exponentials in place there as the
//! next product's packed operand, and p·v into the merged-heads output, each row then divided by its
//! exponentials' sum (hd divisions instead of S). The candle composition it replaces allocated the
//! [B, H, N, S] logits and probabilities (39 MB each for a 1024² CFG step) and copied q and the output
//! between [B, N, H·hd] and [B, H, N, hd]. Elsewhere: that composition (the fused CUDA softmax where
//! enabled).
//!
//! K and V may be bf16 on the CPU (a bf16 model on a CPU whose GEMM multiplies bf16 in bf16: AMX or
//! `avx512bf16`): both products then run on that kernel, q and the exponentials rounded to bf16 as they
//! enter them (as in diffusers' bf16 pipeline); the softmax itself stays f32.

use super::{is_cpu_f32, softmax::scaled_softmax, with_cpu_f32, with_cpu_rhs};
use crate::ops::sgemm::attention_heads;
use crate::{ensure_arg, Result};
use candle_core::{DType, Tensor};

/// Most query rows per task (each packs its q rows once per head; K and V are packed once per head).
const MAX_ROWS: usize = 256;

/// Query rows per task for `rows` rows in all: at most [`MAX_ROWS`], and at least 4 tasks per thread
/// where there are rows for it (512² without CFG has 256), in multiples of 16.
fn rows_per_task(rows: usize) -> usize {
    rows.div_ceil(4 * rayon::current_num_threads().max(1)).next_multiple_of(16).clamp(16, MAX_ROWS)
}

/// q [B, N, H·hd] (heads merged, as the query projection writes it), k and v [B, H, S, hd], bias
/// additive [B, 1, 1, S] or none → [B, N, H·hd]: on the CPU f32 (q f32; k, v f32 or both bf16), elsewhere
/// in v's dtype (probabilities in f32 before it).
pub fn cross_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, bias: Option<&Tensor>) -> Result<Tensor> {
    let (b, n, c) = q.dims3()?;
    let (kb, h, s, hd) = k.dims4()?;
    ensure_arg!(kb == b && h * hd == c && v.dims() == k.dims(), "k",
        "expected k and v [{b}, H, S, hd] with H·hd = {c}, got {:?} and {:?}", k.dims(), v.dims());
    if let Some(bias) = bias {
        ensure_arg!(bias.elem_count() == b * s && bias.dim(0)? == b, "bias",
            "expected {b} rows of {s} values ([B, 1, 1, S]), got {:?}", bias.dims());
    }
    let cpu_kv = k.device().is_cpu() && v.device().is_cpu() && k.dtype() == v.dtype() && matches!(k.dtype(), DType::F32 | DType::BF16);
    if !(is_cpu_f32(q) && cpu_kv) {
        let qh = q.reshape((b, n, h, hd))?.transpose(1, 2)?.contiguous()?;
        let p = scaled_softmax(&qh.matmul(&k.t()?)?, scale, bias)?.to_dtype(v.dtype())?;
        return Ok(p.matmul(v)?.transpose(1, 2)?.reshape((b, n, c))?);
    }
    let bias: Option<Vec<f32>> = match bias {
        Some(t) => Some(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?),
        None => None,
    };
    let out = with_cpu_f32(q, |qs| with_cpu_rhs(k, |ks| with_cpu_rhs(v, |vs| {
        let mut out = vec![0f32; b * n * c];
        // Keys each batch item attends to: all before its masked tail (`attended_keys`).
        let keys: Vec<usize> = (0..b).map(|bi| bias.as_ref().map_or(s, |v| attended_keys(&v[bi * s..(bi + 1) * s]))).collect();
        attention_heads([b, n, h, s, hd], &mut out, qs, (ks, vs), scale as f32, bias.as_deref(), &keys, rows_per_task(b * n));
        out
    })))???;
    Ok(Tensor::from_vec(out, (b, n, c), q.device())?)
}

/// The additive bias of a masked key: diffusers turns a 1/0 mask into `(1 − mask) · −10000` (not −inf).
/// A bias at or below it masks the key: exp(−10000 + logit − max) is exactly 0 in f32 for any logit
/// within ±9000 of the row's max.
pub(crate) const MASK_BIAS: f32 = -10000.0;

/// Keys that take part for one batch item: all but the trailing run of masked ones (the caption's
/// padding), or all when every key is masked (the softmax then spreads over them, as in PyTorch). The
/// probabilities of the dropped keys are exactly 0 in PyTorch's softmax, so skipping them changes no
/// result while a short prompt no longer pays for 300 keys.
fn attended_keys(bias: &[f32]) -> usize {
    match bias.iter().rposition(|&b| !(b <= MASK_BIAS)) {
        Some(last) => last + 1,
        None => bias.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The diffusers composition in candle ops, in f64.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let (b, n, c) = q.dims3()?;
        let (_, h, _, hd) = k.dims4()?;
        let (q, k, v) = (q.to_dtype(DType::F64)?, k.to_dtype(DType::F64)?, v.to_dtype(DType::F64)?);
        let qh = q.reshape((b, n, h, hd))?.transpose(1, 2)?.contiguous()?;
        let mut z = (qh.matmul(&k.t()?.contiguous()?)? * scale)?;
        if let Some(bias) = bias {
            z = z.broadcast_add(&bias.to_dtype(DType::F64)?)?;
        }
        let e = z.broadcast_sub(&z.max_keepdim(3)?)?.exp()?;
        let p = e.broadcast_div(&e.sum_keepdim(3)?)?;
        p.matmul(&v)?.transpose(1, 2)?.reshape((b, n, c))?.to_dtype(DType::F32)
    }

    #[test]
    fn matches_the_reference_with_and_without_a_mask() -> Result<()> {
        let dev = Device::Cpu;
        // n past one and several row blocks (a partial last block), odd S and head dims.
        for &(b, n, h, s, hd) in &[(2, 300, 3, 17, 24), (1, 1, 1, 5, 8), (2, 32, 2, 300, 72)] {
            let q = Tensor::randn(0f32, 1.0, (b, n, h * hd), &dev)?;
            let k = Tensor::randn(0f32, 1.0, (b, h, s, hd), &dev)?;
            let v = Tensor::randn(0f32, 1.0, (b, h, s, hd), &dev)?;
            let mask: Vec<f32> = (0..b * s).map(|i| if i % 5 == 2 { -10000.0 } else { 0.0 }).collect();
            let bias = Tensor::from_vec(mask, (b, 1, 1, s), &dev)?;
            let scale = 1.0 / (hd as f64).sqrt();
            for bias in [None, Some(&bias)] {
                let got = cross_attention(&q, &k, &v, scale, bias)?;
                let want = reference(&q, &k, &v, scale, bias)?;
                let err = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                assert!(err < 2e-5, "{b}×{n}×{h}×{s}×{hd} bias {}: {err}", bias.is_some());
            }
        }
        Ok(())
    }

    #[test]
    fn a_masked_caption_tail_is_skipped_exactly() -> Result<()> {
        // Batch item 0 attends to 40 of 300 keys, item 1 to all but one masked key in the middle. (An
        // all-masked row keeps every key; its logits + −10000 lose f32 bits, here as in PyTorch.)
        let dev = Device::Cpu;
        let (b, n, h, s, hd) = (2, 70, 2, 300, 72);
        assert_eq!(attended_keys(&[0.0, -10000.0, 0.0, -10000.0, -10000.0]), 3);
        assert_eq!(attended_keys(&[-10000.0; 4]), 4);
        assert_eq!(attended_keys(&[0.0, f32::NAN, -10000.0]), 2, "a NaN bias is kept (it poisons its row)");
        let q = Tensor::randn(0f32, 1.0, (b, n, h * hd), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (b, h, s, hd), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (b, h, s, hd), &dev)?;
        let mask: Vec<f32> = (0..b * s).map(|i| match (i / s, i % s) { (0, j) if j >= 40 => -10000.0, (1, 150) => -10000.0, _ => 0.0 }).collect();
        let bias = Tensor::from_vec(mask, (b, 1, 1, s), &dev)?;
        let got = cross_attention(&q, &k, &v, 1.0 / (hd as f64).sqrt(), Some(&bias))?;
        let want = reference(&q, &k, &v, 1.0 / (hd as f64).sqrt(), Some(&bias))?;
        let err = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(err < 2e-5, "{err}");
        Ok(())
    }

    #[test]
    fn bf16_k_and_v_on_the_cpu_match_the_reference_on_the_rounded_values() -> Result<()> {
        // The CPU path with K/V held in bf16 (a bf16 model on AMX), against the f64 reference on the same
        // bf16 values: where this CPU multiplies bf16 in bf16, q and the exponentials are rounded as they
        // enter the products (errors of bf16 size, 2⁻⁹ ≈ 2e-3 relative per product); elsewhere K/V are
        // widened exactly and the f32 tolerance holds.
        let dev = Device::Cpu;
        let bf16_math = crate::ops::sgemm::bf16_rhs_rounds_lhs();
        for &(b, n, h, s, hd) in &[(2, 300, 3, 17, 24), (2, 130, 2, 300, 72)] {
            let q = Tensor::randn(0f32, 1.0, (b, n, h * hd), &dev)?;
            let k = Tensor::randn(0f32, 1.0, (b, h, s, hd), &dev)?.to_dtype(DType::BF16)?;
            let v = Tensor::randn(0f32, 1.0, (b, h, s, hd), &dev)?.to_dtype(DType::BF16)?;
            let mask: Vec<f32> = (0..b * s).map(|i| if i % 7 == 3 { -10000.0 } else { 0.0 }).collect();
            let bias = Tensor::from_vec(mask, (b, 1, 1, s), &dev)?;
            let scale = 1.0 / (hd as f64).sqrt();
            let got = cross_attention(&q, &k, &v, scale, Some(&bias))?;
            assert_eq!(got.dtype(), DType::F32);
            let want = reference(&q, &k.to_dtype(DType::F32)?, &v.to_dtype(DType::F32)?, scale, Some(&bias))?;
            let err = (got - &want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            let tol = if bf16_math { 3e-2 } else { 2e-5 };
            assert!(err < tol, "{b}×{n}×{h}×{s}×{hd}: {err} (bf16 arithmetic {bf16_math})");
        }
        Ok(())
    }

    #[test]
    fn rejects_mismatched_heads() -> Result<()> {
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 4, 6), DType::F32, &dev)?;
        let k = Tensor::zeros((1, 2, 5, 4), DType::F32, &dev)?;
        assert!(cross_attention(&q, &k, &k, 1.0, None).is_err(), "H·hd must equal q's width");
        Ok(())
    }

    #[test]
    fn the_candle_fallback_agrees_with_the_cpu_kernel() -> Result<()> {
        // bf16 inputs take the candle composition; compare it with the f32 kernel on the same values.
        let dev = Device::Cpu;
        let (b, n, h, s, hd) = (2, 40, 2, 9, 16);
        let q = Tensor::randn(0f32, 1.0, (b, n, h * hd), &dev)?.to_dtype(DType::BF16)?;
        let k = Tensor::randn(0f32, 1.0, (b, h, s, hd), &dev)?.to_dtype(DType::BF16)?;
        let v = Tensor::randn(0f32, 1.0, (b, h, s, hd), &dev)?.to_dtype(DType::BF16)?;
        let f = |t: &Tensor| t.to_dtype(DType::F32);
        let fast = cross_attention(&f(&q)?, &f(&k)?, &f(&v)?, 0.25, None)?;
        let slow = cross_attention(&q, &k, &v, 0.25, None)?.to_dtype(DType::F32)?;
        let err = (fast - slow)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(err < 0.05, "{err}");
        Ok(())
    }
}
