//! AdaLN-single's elementwise steps (diffusers `SanaTransformerBlock`), each one pass over the tokens:
//! - [`modulated_layer_norm`]: `LayerNorm(x) · (1 + scale) + shift` (norm without affine, or with norm2's);
//! - [`gated_residual`]: `x + gate · y`; [`gated_residual_with_bias`]: `x + gate · (y + bias)`, the
//!   branch's output-projection bias folded in.
//!
//! On CUDA, `SANA_CUDA_FUSED=adaln` / `=residual` run one fused kernel each (ops/cuda/fused_norm.rs);
//! the default is still the candle composition below.
//!
//! Why: as candle ops these are 9 and 2 passes over a [B, N, D] tensor, each allocating its output
//! and running on one core; for Sana-600M at 1024² that is ≈ 19 MB per pass, 28 blocks, twice per block.
//! Here every row is one parallel task that reads x once and writes once.

use super::{fastmath, is_cpu_f32, par_filled, with_cpu_f32};
use crate::{ensure_arg, Result};
use candle_core::{DType, Tensor, D};
use std::mem::MaybeUninit;

/// [B, 1, D] (or [B, D]) modulation vector → B·D f32 values.
fn per_batch(t: &Tensor, b: usize, d: usize, name: &str) -> Result<Vec<f32>> {
    ensure_arg!(t.elem_count() == b * d, name, "expected {b}×1×{d} values, got shape {:?}", t.dims());
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// Rows per rayon task in the row-wise ops below: one 1152-wide row is too little work to hand out alone.
const ROWS_PER_TASK: usize = 16;

/// x [B, N, D]; shift, scale [B, 1, D]; `affine` = LayerNorm (weight, bias) [D] or none.
/// → `((x − mean) / sqrt(var + eps) · w + b) · (1 + scale) + shift`, statistics in f32, over the last dim.
pub fn modulated_layer_norm(x: &Tensor, shift: &Tensor, scale: &Tensor, eps: f64, affine: Option<&(Tensor, Tensor)>) -> Result<Tensor> {
    let (b, n, d) = x.dims3()?;
    #[cfg(feature = "cuda")]
    if super::cuda::fused(super::cuda::Fused::AdaLn) && super::is_cuda_kernel_dtype(&[x, shift, scale]) {
        return super::cuda::modulated_layer_norm(x, shift, scale, eps, affine);
    }
    if !is_cpu_f32(x) {
        let dtype = x.dtype();
        let xf = x.to_dtype(DType::F32)?;
        let xc = xf.broadcast_sub(&xf.mean_keepdim(D::Minus1)?)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let mut y = xc.broadcast_div(&(var + eps)?.sqrt()?)?.to_dtype(dtype)?;
        if let Some((w, bias)) = affine {
            y = y.broadcast_mul(w)?.broadcast_add(bias)?;
        }
        return Ok(y.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(shift)?);
    }
    let (shift, scale) = (per_batch(shift, b, d, "shift")?, per_batch(scale, b, d, "scale")?);
    let affine = match affine {
        Some((w, bias)) => Some((per_batch(w, 1, d, "weight")?, per_batch(bias, 1, d, "bias")?)),
        None => None,
    };
    let eps = eps as f32;
    let out = with_cpu_f32(x, |xs| {
        let norm_rows = |task: usize, o: &mut [MaybeUninit<f32>]| {
            for (r, o) in o.chunks_exact_mut(d).enumerate() {
                let row = task * ROWS_PER_TASK + r;
                let (x, bi) = (&xs[row * d..(row + 1) * d], row / n);
                let (sh, sc) = (&shift[bi * d..(bi + 1) * d], &scale[bi * d..(bi + 1) * d]);
                // Two passes (mean, then the mean of squared deviations), as torch's LayerNorm.
                let mean = fastmath::sum(x) / d as f32;
                let inv = 1.0 / (fastmath::sum_sq_dev(x, mean) / d as f32 + eps).sqrt();
                match &affine {
                    None => {
                        for (((o, x), sc), sh) in o.iter_mut().zip(x).zip(sc).zip(sh) {
                            o.write((x - mean) * inv * (1.0 + sc) + sh);
                        }
                    }
                    Some((w, bias)) => {
                        for (((o, x), sc), (sh, (w, bias))) in o.iter_mut().zip(x).zip(sc).zip(sh.iter().zip(w.iter().zip(bias))) {
                            o.write(((x - mean) * inv * w + bias) * (1.0 + sc) + sh);
                        }
                    }
                }
            }
        };
        // SAFETY: each part is ROWS_PER_TASK whole rows (the last fewer) and every value of each is written.
        unsafe { par_filled(b * n * d, d * ROWS_PER_TASK, norm_rows) }
    })?;
    Ok(Tensor::from_vec(out, (b, n, d), x.device())?)
}

/// x, y [B, N, D]; gate [B, 1, D] → `x + gate · y`.
pub fn gated_residual(x: &Tensor, y: &Tensor, gate: &Tensor) -> Result<Tensor> {
    gated_residual_with_bias(x, y, gate, None)
}

/// x, y [B, N, D]; gate [B, 1, D]; bias [D] or none → `x + gate · (y + bias)`.
pub fn gated_residual_with_bias(x: &Tensor, y: &Tensor, gate: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (b, n, d) = x.dims3()?;
    ensure_arg!(y.dims() == x.dims(), "y", "residual branch {:?} does not match x {:?}", y.dims(), x.dims());
    #[cfg(feature = "cuda")]
    if super::cuda::fused(super::cuda::Fused::Residual) && super::is_cuda_kernel_dtype(&[x, y, gate]) {
        return super::cuda::gated_residual(x, y, gate, bias);
    }
    if !(is_cpu_f32(x) && is_cpu_f32(y)) {
        let y = match bias {
            Some(bias) => y.broadcast_add(bias)?,
            None => y.clone(),
        };
        return Ok((x + y.broadcast_mul(gate)?)?);
    }
    let gate = per_batch(gate, b, d, "gate")?;
    let bias = match bias {
        Some(t) => per_batch(t, 1, d, "bias")?,
        None => vec![0f32; d],
    };
    let out = with_cpu_f32(x, |xs| {
        with_cpu_f32(y, |ys| {
            let residual_rows = |task: usize, o: &mut [MaybeUninit<f32>]| {
                for (r, o) in o.chunks_exact_mut(d).enumerate() {
                    let row = task * ROWS_PER_TASK + r;
                    let g = &gate[(row / n) * d..(row / n + 1) * d];
                    let (xr, yr) = (&xs[row * d..(row + 1) * d], &ys[row * d..(row + 1) * d]);
                    for ((o, x), (y, (g, bias))) in o.iter_mut().zip(xr).zip(yr.iter().zip(g.iter().zip(&bias))) {
                        o.write(x + g * (y + bias));
                    }
                }
            };
            // SAFETY: as in modulated_layer_norm: whole rows per part, every value written.
            unsafe { par_filled(b * n * d, d * ROWS_PER_TASK, residual_rows) }
        })
    })??;
    Ok(Tensor::from_vec(out, (b, n, d), x.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The definition, in f64.
    fn reference(x: &Tensor, shift: &Tensor, scale: &Tensor, eps: f64, affine: Option<&(Tensor, Tensor)>) -> Result<Tensor> {
        let d = x.dim(2)?;
        let v64 = |t: &Tensor| -> Result<Vec<f64>> { Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?) };
        let (sh, sc) = (v64(shift)?, v64(scale)?);
        let aff = match affine {
            Some((w, bias)) => Some((v64(w)?, v64(bias)?)),
            None => None,
        };
        let mut out = Vec::with_capacity(x.elem_count());
        for (bi, rows) in x.to_dtype(DType::F64)?.to_vec3::<f64>()?.iter().enumerate() {
            for row in rows {
                let mean = row.iter().sum::<f64>() / d as f64;
                let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
                for (i, v) in row.iter().enumerate() {
                    let mut y = (v - mean) / (var + eps).sqrt();
                    if let Some((w, bias)) = &aff {
                        y = y * w[i] + bias[i];
                    }
                    out.push((y * (1.0 + sc[bi * d + i]) + sh[bi * d + i]) as f32);
                }
            }
        }
        Ok(Tensor::from_vec(out, x.dims(), x.device())?)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
    }

    /// Deterministic values in [-amp, amp] (the tolerances below are for these exact inputs).
    fn wave(dims: &[usize], amp: f32, phase: f32) -> Result<Tensor> {
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|i| amp * (i as f32 * 0.731 + phase).sin()).collect();
        Ok(Tensor::from_vec(v, dims, &Device::Cpu)?)
    }

    #[test]
    fn modulated_layer_norm_matches_the_definition() -> Result<()> {
        // 18 rows: two tasks of ROWS_PER_TASK, the first spanning both batch items; 50 = 3 × 16 + a tail.
        let (b, n, d) = (2, 9, 50);
        let x0 = wave(&[b, n, d], 1.5, 0.0)?;
        // shift/scale as the block takes them: [B, 1, D] narrow views of a [B, 6, D] tensor.
        let m = wave(&[b, 6, d], 0.5, 1.0)?;
        let (shift, scale) = (m.narrow(1, 3, 1)?, m.narrow(1, 4, 1)?);
        let affine = (wave(&[d], 2.0, 2.0)?, wave(&[d], 1.0, 3.0)?);
        // Offset 0, and a common offset of 100, where f32 rounding of the row sum limits any f32 LayerNorm
        // (PyTorch's too) to ≈ 1e-4 here.
        for (offset, tol) in [(0.0, 1e-5), (100.0, 3e-4)] {
            let x = (&x0 + offset)?;
            for aff in [None, Some(&affine)] {
                let want = reference(&x, &shift, &scale, 1e-6, aff)?;
                let got = modulated_layer_norm(&x, &shift, &scale, 1e-6, aff)?;
                assert!(max_diff(&got, &want)? < tol, "offset {offset}, affine {}: {}", aff.is_some(), max_diff(&got, &want)?);
                // The candle composition (the path for other devices and dtypes), run here in f64.
                let aff64 = match aff {
                    Some((w, bias)) => Some((w.to_dtype(DType::F64)?, bias.to_dtype(DType::F64)?)),
                    None => None,
                };
                let (x64, s64, c64) = (x.to_dtype(DType::F64)?, shift.to_dtype(DType::F64)?, scale.to_dtype(DType::F64)?);
                let other = modulated_layer_norm(&x64, &s64, &c64, 1e-6, aff64.as_ref())?.to_dtype(DType::F32)?;
                assert!(max_diff(&other, &want)? < tol, "candle path, offset {offset}: {}", max_diff(&other, &want)?);
            }
        }
        Ok(())
    }

    #[test]
    fn gated_residual_is_x_plus_gate_times_y() -> Result<()> {
        let dev = Device::Cpu;
        let (b, n, d) = (2, 3, 8);
        let x = Tensor::randn(0f32, 1.0, (b, n, d), &dev)?;
        let y = Tensor::randn(0f32, 1.0, (b, n, d), &dev)?;
        let gate = Tensor::randn(0f32, 1.0, (b, 6, d), &dev)?.narrow(1, 2, 1)?;
        let got = gated_residual(&x, &y, &gate)?;
        assert!(max_diff(&got, &(&x + y.broadcast_mul(&gate)?)?)? < 1e-6);
        // A transposed view as y is read in its logical order.
        let yt = Tensor::randn(0f32, 1.0, (b, d, n), &dev)?.transpose(1, 2)?;
        let got = gated_residual(&x, &yt, &gate)?;
        assert!(max_diff(&got, &(&x + yt.broadcast_mul(&gate)?)?)? < 1e-6);
        assert!(gated_residual(&x, &x.narrow(1, 0, 2)?, &gate).is_err());
        Ok(())
    }

    #[test]
    fn gated_residual_with_bias_adds_the_bias_before_the_gate() -> Result<()> {
        let (b, n, d) = (2, 3, 5);
        let (x, y) = (wave(&[b, n, d], 1.0, 0.0)?, wave(&[b, n, d], 2.0, 1.0)?);
        let (m, bias) = (wave(&[b, 6, d], 0.7, 2.0)?, wave(&[d], 0.5, 3.0)?);
        let gate = m.narrow(1, 5, 1)?;
        let got = gated_residual_with_bias(&x, &y, &gate, Some(&bias))?.to_vec3::<f32>()?;
        // The definition, element by element in f64.
        let (xv, yv) = (x.to_vec3::<f32>()?, y.to_vec3::<f32>()?);
        let (gv, bv) = (gate.squeeze(1)?.to_vec2::<f32>()?, bias.to_vec1::<f32>()?);
        for bi in 0..b {
            for t in 0..n {
                for i in 0..d {
                    let want = xv[bi][t][i] as f64 + gv[bi][i] as f64 * (yv[bi][t][i] as f64 + bv[i] as f64);
                    assert!((got[bi][t][i] as f64 - want).abs() < 1e-6, "[{bi}, {t}, {i}]: {} vs {want}", got[bi][t][i]);
                }
            }
        }
        // The candle composition (other devices and dtypes) agrees, run here in f64.
        let f64s = |t: &Tensor| t.to_dtype(DType::F64);
        let other = gated_residual_with_bias(&f64s(&x)?, &f64s(&y)?, &f64s(&gate)?, Some(&f64s(&bias)?))?.to_dtype(DType::F32)?;
        assert!(max_diff(&other, &Tensor::new(got, &Device::Cpu)?)? < 1e-6);
        Ok(())
    }
}
