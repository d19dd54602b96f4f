//! Cross-attention softmax with scale and mask folded in (kernels/softmax.cu), behind
//! `SANA_CUDA_FUSED=softmax`.

use super::launch::{launch, ptx_module, In, Launch, Module, Out, Scalar};
use crate::Result;
use candle_core::cuda_backend::cudarc::driver::LaunchConfig;
use candle_core::{DType, Tensor};

const MODULE: Module = ptx_module!("softmax");
const THREADS: u32 = 256;

/// logits [B, …, S] on CUDA (f32/f16/bf16), bias [B, 1, …, 1, S] (any float dtype, used as f32) or none
/// → `softmax(logits · scale + bias)` over the last dim, in the LOGITS' dtype (the CPU twin,
/// [`crate::ops::softmax::scaled_softmax`], returns f32; its caller casts to v's dtype anyway, which
/// here is then a no-op instead of a pass over the scores). The caller has checked the bias shape.
pub(crate) fn scaled_softmax(logits: &Tensor, scale: f64, bias: Option<&Tensor>) -> Result<Tensor> {
    let dims = logits.dims();
    let (b, s) = (dims[0], dims[dims.len() - 1]);
    let rows = logits.elem_count() / s.max(1);
    let x = logits.contiguous()?;
    let bias = bias.map(|t| t.to_dtype(DType::F32)?.contiguous()).transpose()?;
    let warps = (THREADS / 32) as usize;
    // softmax_rows(x, bias, out, rows, s, rows_per_batch, scale): one warp per row.
    launch(&Launch {
        module: &MODULE,
        func: "softmax_rows",
        dtype: x.dtype(),
        inputs: &[In::T(&x), bias.as_ref().map_or(In::Null, In::F32)],
        out: Out::T(x.shape().clone()),
        scalars: &[Scalar::I32(rows as i32), Scalar::I32(s as i32), Scalar::I32((rows / b.max(1)) as i32), Scalar::F32(scale as f32)],
        cfg: LaunchConfig { grid_dim: (rows.div_ceil(warps).clamp(1, 1 << 20) as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 },
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{gpu, pair, rel_err, tol, DTYPES};
    use super::*;
    use candle_core::Device;

    #[test]
    fn fused_softmax_matches_cpu() -> Result<()> {
        let Some(dev) = gpu("fused_softmax_matches_cpu") else { return Ok(()) };
        // (B, heads, N, S): Sana's S = 300; a row count that leaves a block partly empty; S < 32; S > 1024.
        for &(b, h, n, s) in &[(2, 16, 64, 300), (1, 3, 5, 17), (2, 1, 7, 1), (1, 2, 3, 1500)] {
            // Scores as large as bf16 cross-attention gives (|z| up to ≈ 12), and a mask of −10000 on
            // every 7th caption token of the first image, none on the second.
            let mask: Vec<f32> = (0..b * s).map(|i| if i < s && i % 7 == 3 { -10000.0 } else { 0.0 }).collect();
            let bias_cpu = Tensor::from_vec(mask, (b, 1, 1, s), &Device::Cpu)?;
            for dtype in DTYPES {
                let (x, xc) = pair(&[b, h, n, s], dtype, &dev)?;
                let (x, xc) = ((x * 4.0)?, (xc * 4.0)?);
                for bias in [None, Some(&bias_cpu)] {
                    let bias_gpu = bias.map(|t| t.to_device(&dev)).transpose()?;
                    let got = scaled_softmax(&x, 0.125, bias_gpu.as_ref())?;
                    assert_eq!(got.dtype(), dtype);
                    let want = crate::ops::softmax::scaled_softmax(&xc, 0.125, bias)?;
                    let err = rel_err(&got, &want)?;
                    assert!(err <= tol(dtype), "{:?} {dtype:?} bias {}: err {err}", (b, h, n, s), bias.is_some());
                }
            }
        }
        Ok(())
    }

    #[test]
    fn fused_softmax_propagates_nan_to_its_row_only() -> Result<()> {
        let Some(dev) = gpu("fused_softmax_propagates_nan_to_its_row_only") else { return Ok(()) };
        let mut v = vec![0.5f32; 2 * 40];
        v[45] = f32::NAN;
        let x = Tensor::from_vec(v, (1, 2, 40), &dev)?;
        let p = scaled_softmax(&x, 1.0, None)?.to_vec3::<f32>()?;
        assert!(p[0][1].iter().all(|v| v.is_nan()), "row with a NaN");
        assert!(p[0][0].iter().all(|v| (v - 1.0 / 40.0).abs() < 1e-6), "clean row");
        Ok(())
    }
}
