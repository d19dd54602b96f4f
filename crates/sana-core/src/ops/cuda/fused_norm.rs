//! AdaLN's modulated LayerNorm and gated residual (kernels/fused_norm.cu), behind
//! `SANA_CUDA_FUSED=adaln` and `=residual`. shift, scale and gate are read in place from the
//! `[B, 6, D]` modulation tensor through their `[B, 1, D]` chunk views.

use super::launch::{blocks_1d, launch, ptx_module, In, Launch, Module, Out, Scalar};
use crate::{ensure_arg, Result};
use candle_core::cuda_backend::cudarc::driver::LaunchConfig;
use candle_core::{DType, Tensor};

const MODULE: Module = ptx_module!("fused_norm");
const THREADS: u32 = 256;

/// A per-batch [B, 1, D] (or [B, D]) vector as the kernels read it: a view whose last dim is contiguous,
/// and the distance between batch rows. Other layouts are copied to [B, D] first.
fn batch_rows(t: &Tensor, b: usize, d: usize, name: &str) -> Result<(Tensor, i32)> {
    ensure_arg!(t.elem_count() == b * d, name, "expected {b}×1×{d} values, got shape {:?}", t.dims());
    let st = t.stride();
    if (t.dims() == [b, 1, d] || t.dims() == [b, d]) && st[st.len() - 1] == 1 {
        return Ok((t.clone(), st[0] as i32));
    }
    Ok((t.contiguous()?.reshape((b, d))?, d as i32))
}

fn i32_of(v: usize) -> Scalar {
    Scalar::I32(v as i32)
}

/// x [B, N, D] on CUDA; shift, scale [B, 1, D] in x's dtype; `affine` = LayerNorm (weight, bias) [D]
/// (any float dtype, used as f32) → x's shape and dtype. The CPU twin is
/// [`crate::ops::modulated_layer_norm`].
pub(crate) fn modulated_layer_norm(x: &Tensor, shift: &Tensor, scale: &Tensor, eps: f64, affine: Option<&(Tensor, Tensor)>) -> Result<Tensor> {
    let (b, n, d) = x.dims3()?;
    let x = x.contiguous()?;
    let ((sh, sh_stride), (sc, sc_stride)) = (batch_rows(shift, b, d, "shift")?, batch_rows(scale, b, d, "scale")?);
    let affine = match affine {
        Some((w, bias)) => {
            ensure_arg!(w.elem_count() == d && bias.elem_count() == d, "weight", "LayerNorm affine must have {d} values");
            Some((w.to_dtype(DType::F32)?.contiguous()?, bias.to_dtype(DType::F32)?.contiguous()?))
        }
        None => None,
    };
    let (w_in, b_in) = match &affine {
        Some((w, bias)) => (In::F32(w), In::F32(bias)),
        None => (In::Null, In::Null),
    };
    let rows = b * n;
    let warps = (THREADS / 32) as usize;
    // modulated_layer_norm(x, shift, scale, w, wb, out, rows, n_tok, d, shift_stride, scale_stride, eps)
    launch(&Launch {
        module: &MODULE,
        func: "modulated_layer_norm",
        dtype: x.dtype(),
        inputs: &[In::T(&x), In::Strided(&sh), In::Strided(&sc), w_in, b_in],
        out: Out::T(x.shape().clone()),
        scalars: &[i32_of(rows), i32_of(n), i32_of(d), Scalar::I32(sh_stride), Scalar::I32(sc_stride), Scalar::F32(eps as f32)],
        cfg: LaunchConfig { grid_dim: (rows.div_ceil(warps).clamp(1, 1 << 20) as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 },
    })
}

/// x, y [B, N, D] on CUDA, gate [B, 1, D], bias [D] or none, all in x's dtype → `x + gate · (y + bias)`.
/// The CPU twin is [`crate::ops::modulation::gated_residual_with_bias`].
pub(crate) fn gated_residual(x: &Tensor, y: &Tensor, gate: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (b, n, d) = x.dims3()?;
    let (x, y) = (x.contiguous()?, y.contiguous()?);
    let (g, g_stride) = batch_rows(gate, b, d, "gate")?;
    let bias = bias.map(|t| t.contiguous()).transpose()?;
    if let Some(t) = &bias {
        ensure_arg!(t.elem_count() == d, "bias", "expected {d} bias values, got shape {:?}", t.dims());
    }
    // gated_residual(x, y, gate, bias, out, rows, n_tok, d, gate_stride)
    launch(&Launch {
        module: &MODULE,
        func: "gated_residual",
        dtype: x.dtype(),
        inputs: &[In::T(&x), In::T(&y), In::Strided(&g), bias.as_ref().map_or(In::Null, In::T)],
        out: Out::T(x.shape().clone()),
        scalars: &[i32_of(b * n), i32_of(n), i32_of(d), Scalar::I32(g_stride)],
        cfg: blocks_1d(b * n * d, THREADS),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{gpu, pair, rel_err, tol, DTYPES};
    use super::*;

    #[test]
    fn fused_modulated_layer_norm_matches_cpu() -> Result<()> {
        let Some(dev) = gpu("fused_modulated_layer_norm_matches_cpu") else { return Ok(()) };
        // (B, N, D): Sana-600M's D = 1152; D < 32; a ragged block of rows.
        for &(b, n, d) in &[(2, 64, 1152), (1, 3, 20), (3, 5, 100)] {
            for dtype in DTYPES {
                let (x, xc) = pair(&[b, n, d], dtype, &dev)?;
                let (m, mc) = pair(&[b, 6, d], dtype, &dev)?;
                let (w, wc) = pair(&[d], dtype, &dev)?;
                let (bias, bc) = pair(&[d], dtype, &dev)?;
                let (aff, aff_c) = ((w, bias), (wc, bc));
                for with_affine in [false, true] {
                    // The chunk views the block passes: rows 3 and 4 of the modulation, read in place.
                    let got = modulated_layer_norm(&x, &m.narrow(1, 3, 1)?, &m.narrow(1, 4, 1)?, 1e-6, with_affine.then_some(&aff))?;
                    assert_eq!(got.dtype(), dtype);
                    let want = crate::ops::modulated_layer_norm(&xc, &mc.narrow(1, 3, 1)?, &mc.narrow(1, 4, 1)?, 1e-6, with_affine.then_some(&aff_c))?;
                    let err = rel_err(&got, &want)?;
                    assert!(err <= tol(dtype), "{:?} {dtype:?} affine {with_affine}: err {err}", (b, n, d));
                }
            }
        }
        Ok(())
    }

    #[test]
    fn fused_gated_residual_matches_cpu() -> Result<()> {
        let Some(dev) = gpu("fused_gated_residual_matches_cpu") else { return Ok(()) };
        for &(b, n, d) in &[(2, 64, 1152), (1, 1, 3), (3, 7, 33)] {
            for dtype in DTYPES {
                let (x, xc) = pair(&[b, n, d], dtype, &dev)?;
                let (y, yc) = pair(&[b, n, d], dtype, &dev)?;
                let (m, mc) = pair(&[b, 6, d], dtype, &dev)?;
                let (bias, bc) = pair(&[d], dtype, &dev)?;
                for with_bias in [false, true] {
                    let got = gated_residual(&x, &y, &m.narrow(1, 2, 1)?, with_bias.then_some(&bias))?;
                    assert_eq!(got.dtype(), dtype);
                    let want = crate::ops::modulation::gated_residual_with_bias(&xc, &yc, &mc.narrow(1, 2, 1)?, with_bias.then_some(&bc))?;
                    let err = rel_err(&got, &want)?;
                    assert!(err <= tol(dtype), "{:?} {dtype:?} bias {with_bias}: err {err}", (b, n, d));
                }
            }
        }
        Ok(())
    }
}
