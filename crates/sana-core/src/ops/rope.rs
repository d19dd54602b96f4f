//! Rotary position embedding, "rotate_half" convention (transformers' default RoPE, as in Llama/Gemma).
//!
//! ```text
//! inv_freq[i] = 1 / theta^(2i/D)                   # float32, i < D/2
//! freqs[p, i] = p · inv_freq[i]                    # float32 (transformers forces f32, even under bf16)
//! cos, sin    = cos(cat(freqs, freqs)), sin(…)     # [L, D]; here only the first half is kept: [L, D/2]
//! x_rot       = x·cos + rotate_half(x)·sin         # rotate_half(x) = cat(-x[D/2:], x[:D/2])
//! ```

use super::{is_cpu_f32, with_cpu_f32};
use crate::{ensure_arg, Result};
use candle_core::{Device, Tensor, D};
use rayon::prelude::*;

/// cos/sin tables [seq_len, head_dim/2] in f32 for position ids `0..seq_len`.
pub fn rope_cos_sin(head_dim: usize, theta: f64, seq_len: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    ensure_arg!(head_dim > 0 && head_dim.is_multiple_of(2), "headDim", "RoPE needs an even head_dim, got {head_dim}");
    let half = head_dim / 2;
    // f32 inverse frequencies, as transformers stores them (`base ** (arange(0, D, 2).float() / D)`).
    let inv_freq: Vec<f32> =
        (0..half).map(|i| (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32).collect();
    let mut cos = Vec::with_capacity(seq_len * half);
    let mut sin = Vec::with_capacity(seq_len * half);
    for p in 0..seq_len {
        for &f in &inv_freq {
            // The angle is an f32 product (torch: `inv_freq @ position_ids` in float32); cos/sin of
            // that f32 angle are then rounded once to f32.
            let angle = (p as f32 * f) as f64;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    let cos = Tensor::from_vec(cos, (seq_len, half), &Device::Cpu)?.to_device(device)?;
    let sin = Tensor::from_vec(sin, (seq_len, half), &Device::Cpu)?.to_device(device)?;
    Ok((cos, sin))
}

/// Rotate x [B, H, L, D] (any strides) by the tables from [`rope_cos_sin`] ([≥L, D/2]).
/// Returns a contiguous [B, H, L, D] tensor in x's dtype. The tables are cast to x's dtype first,
/// as transformers does (`cos.to(x.dtype)`), so bf16 models round them like PyTorch.
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (b, h, l, d) = x.dims4()?;
    let half = d / 2;
    ensure_arg!(d % 2 == 0, "x", "RoPE needs an even head dim, got shape {:?}", x.dims());
    ensure_arg!(cos.dims().len() == 2 && cos.dims() == sin.dims() && cos.dim(0)? >= l && cos.dim(1)? == half,
        "cos", "tables must be [>= {l}, {half}], got cos {:?} and sin {:?}", cos.dims(), sin.dims());
    if !(is_cpu_f32(x) && is_cpu_f32(cos) && is_cpu_f32(sin)) {
        return fallback(x, cos, sin);
    }
    let out = with_cpu_f32(x, |xs| {
        with_cpu_f32(cos, |cs| {
            with_cpu_f32(sin, |ss| {
                let mut out = vec![0f32; xs.len()];
                out.par_chunks_mut(l * d).zip(xs.par_chunks(l * d)).for_each(|(o, xbh)| {
                    for p in 0..l {
                        let (c, s) = (&cs[p * half..(p + 1) * half], &ss[p * half..(p + 1) * half]);
                        let (xr, or) = (&xbh[p * d..(p + 1) * d], &mut o[p * d..(p + 1) * d]);
                        for i in 0..half {
                            let (x1, x2) = (xr[i], xr[i + half]);
                            or[i] = x1 * c[i] - x2 * s[i];
                            or[i + half] = x2 * c[i] + x1 * s[i];
                        }
                    }
                });
                out
            })
        })
    })???;
    Ok(Tensor::from_vec(out, (b, h, l, d), x.device())?)
}

/// Candle-op version for other devices and dtypes.
fn fallback(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (_, _, l, d) = x.dims4()?;
    let half = d / 2;
    let cos = cos.narrow(0, 0, l)?.to_dtype(x.dtype())?;
    let sin = sin.narrow(0, 0, l)?.to_dtype(x.dtype())?;
    let cos = Tensor::cat(&[&cos, &cos], D::Minus1)?; // [L, D]
    let sin = Tensor::cat(&[&sin, &sin], D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?.contiguous()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naive f64 RoPE on one row at position p.
    fn naive_row(x: &[f32], p: usize, theta: f64) -> Vec<f64> {
        let d = x.len();
        let half = d / 2;
        (0..d)
            .map(|j| {
                let i = j % half;
                let a = p as f64 / theta.powf((2 * i) as f64 / d as f64);
                let rot = if j < half { -(x[j + half] as f64) } else { x[j - half] as f64 };
                x[j] as f64 * a.cos() + rot * a.sin()
            })
            .collect()
    }

    #[test]
    fn matches_naive_reference_and_fallback() -> Result<()> {
        let (b, h, l, d) = (2, 3, 37, 8);
        let data: Vec<f32> = (0..b * h * l * d).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
        // Build x as a transposed view of [B, L, H, D], the layout a projection produces.
        let x = Tensor::from_vec(data, (b, l, h, d), &Device::Cpu)?.transpose(1, 2)?;
        let (cos, sin) = rope_cos_sin(d, 10000.0, l + 5, &Device::Cpu)?;
        let got = apply_rope(&x, &cos, &sin)?;
        let fb = fallback(&x, &cos, &sin)?;
        let xv = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let (gv, fv) = (got.flatten_all()?.to_vec1::<f32>()?, fb.flatten_all()?.to_vec1::<f32>()?);
        for row in 0..b * h * l {
            let p = row % l;
            let want = naive_row(&xv[row * d..(row + 1) * d], p, 10000.0);
            for (j, w) in want.iter().enumerate() {
                let k = row * d + j;
                assert!((gv[k] as f64 - w).abs() < 1e-5, "row {row} col {j}: {} vs {w}", gv[k]);
                assert!((fv[k] - gv[k]).abs() < 1e-6);
            }
        }
        Ok(())
    }

    #[test]
    fn position_zero_is_identity() -> Result<()> {
        let x = Tensor::new(&[[[[1f32, -2., 3., 0.5]]]], &Device::Cpu)?;
        let (cos, sin) = rope_cos_sin(4, 10000.0, 1, &Device::Cpu)?;
        assert_eq!(apply_rope(&x, &cos, &sin)?.flatten_all()?.to_vec1::<f32>()?, vec![1., -2., 3., 0.5]);
        Ok(())
    }
}
