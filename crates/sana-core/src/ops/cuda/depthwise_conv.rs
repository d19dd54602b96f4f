//! Depthwise k×k convolution, optionally fused with GLUMBConv's gate (kernels/depthwise_conv.cu).

use super::launch::{blocks_1d, launch, ptx_module, In, Launch, Module, Out, Scalar};
use crate::Result;
use candle_core::Tensor;

const MODULE: Module = ptx_module!("depthwise_conv");

/// x: [B, C, H, W] (C even when `glu`), weight: [C, 1, k, k], bias: [C] or none, one dtype, on CUDA.
/// `glu` → [B, C/2, H, W] = conv[:C/2] · silu(conv[C/2:]); else [B, C, H, W] = conv.
pub(crate) fn depthwise_conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, glu: bool) -> Result<Tensor> {
    let (b, cx, h, w) = x.dims4()?;
    let ks = weight.dim(2)?;
    let c_out = if glu { cx / 2 } else { cx };
    let zeros;
    let bias = match bias {
        Some(b) => b.to_dtype(x.dtype())?.contiguous()?,
        None => {
            zeros = Tensor::zeros(cx, x.dtype(), x.device())?;
            zeros
        }
    };
    let (x, weight) = (x.contiguous()?, weight.to_dtype(x.dtype())?.contiguous()?);
    let n_out = b * c_out * h * w;
    // depthwise_conv(x, weight, bias, out, batch, c_out, h, w, ks, glu)
    launch(&Launch {
        module: &MODULE,
        func: "depthwise_conv",
        dtype: x.dtype(),
        inputs: &[In::T(&x), In::T(&weight), In::T(&bias)],
        out: Out::T((b, c_out, h, w).into()),
        scalars: &[b, c_out, h, w, ks, glu as usize].map(|v| Scalar::I32(v as i32)),
        cfg: blocks_1d(n_out, 256),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{gpu, pair, rel_err, tol, DTYPES};
    use crate::ops::{depthwise_conv2d, depthwise_conv2d_glu};
    use crate::Result;
    use candle_core::DType;

    #[test]
    fn depthwise_conv_and_glu_match_cpu() -> Result<()> {
        let Some(dev) = gpu("depthwise_conv_and_glu_match_cpu") else { return Ok(()) };
        for &(b, c, h, w, k) in &[(2, 6, 5, 7, 3), (1, 4, 1, 1, 3), (1, 8, 32, 32, 3), (1, 2, 6, 4, 5)] {
            for dtype in DTYPES {
                let (x, xc) = pair(&[b, c, h, w], dtype, &dev)?;
                let (wt, wc) = pair(&[c, 1, k, k], dtype, &dev)?;
                let (bias, bc) = pair(&[c], dtype, &dev)?;
                let got = depthwise_conv2d(&x, &wt, Some(&bias))?;
                let want = depthwise_conv2d(&xc, &wc, Some(&bc))?;
                let err = rel_err(&got, &want)?;
                assert!(err <= tol(dtype), "conv {:?} {dtype:?}: rel err {err}", (b, c, h, w, k));
                let got = depthwise_conv2d_glu(&x, &wt, Some(&bias))?;
                let want = depthwise_conv2d_glu(&xc, &wc, Some(&bc))?;
                assert_eq!(got.dims(), &[b, c / 2, h, w]);
                let err = rel_err(&got, &want)?;
                assert!(err <= tol(dtype), "glu {:?} {dtype:?}: rel err {err}", (b, c, h, w, k));
            }
        }
        // No bias (DC-AE's multi-scale aggregation).
        let (x, xc) = pair(&[1, 4, 9, 9], DType::F32, &dev)?;
        let (wt, wc) = pair(&[4, 1, 5, 5], DType::F32, &dev)?;
        let err = rel_err(&depthwise_conv2d(&x, &wt, None)?, &depthwise_conv2d(&xc, &wc, None)?)?;
        assert!(err <= 1e-5, "no bias: rel err {err}");
        Ok(())
    }
}
