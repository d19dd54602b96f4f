//! Depthwise k×k convolution, optionally fused with GLUMBConv's gate, and with the Mix-FFN's input
//! activation (kernels/depthwise_conv.cu).

use super::launch::{blocks_1d, launch, ptx_module, In, Launch, Module, Out, Scalar};
use crate::Result;
use candle_core::Tensor;

const MODULE: Module = ptx_module!("depthwise_conv");

/// x: [B, C, H, W] (C even when `glu`), weight: [C, 1, k, k], bias: [C] or none, one dtype, on CUDA.
/// `glu` → [B, C/2, H, W] = conv[:C/2] · silu(conv[C/2:]); else [B, C, H, W] = conv.
pub(crate) fn depthwise_conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, glu: bool) -> Result<Tensor> {
    conv(x, weight, bias, glu, None)
}

/// The Mix-FFN's middle in one kernel (behind `SANA_CUDA_FUSED=mixffn`): `depthwise_conv2d_glu(silu(x +
/// input_bias), weight, bias)`, x [B, 2C, H, W], input_bias [2C] (the expand 1×1 conv's bias) or none →
/// [B, C, H, W]. The CPU twin is [`crate::ops::silu_depthwise_conv2d_glu_with_input_bias`].
pub(crate) fn silu_depthwise_conv2d_glu(x: &Tensor, input_bias: Option<&Tensor>, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let input_bias = input_bias.map(|t| t.to_dtype(x.dtype())?.contiguous()).transpose()?;
    conv(x, weight, bias, true, Some(input_bias.as_ref()))
}

/// `act`: None → depthwise_conv (plain taps); Some(input bias or none) → depthwise_conv_silu.
fn conv(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, glu: bool, act: Option<Option<&Tensor>>) -> Result<Tensor> {
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
    if let Some(Some(t)) = act {
        crate::ensure_arg!(t.elem_count() == cx, "input_bias", "expected {cx} values, got shape {:?}", t.dims());
    }
    let n_out = b * c_out * h * w;
    let scalars = [b, c_out, h, w, ks, glu as usize].map(|v| Scalar::I32(v as i32));
    // depthwise_conv(x, weight, bias, out, batch, c_out, h, w, ks, glu);
    // depthwise_conv_silu(x, weight, bias, pre_bias, out, batch, c_out, h, w, ks, glu).
    let (func, inputs) = match act {
        None => ("depthwise_conv", vec![In::T(&x), In::T(&weight), In::T(&bias)]),
        Some(pre) => ("depthwise_conv_silu", vec![In::T(&x), In::T(&weight), In::T(&bias), pre.map_or(In::Null, In::T)]),
    };
    launch(&Launch {
        module: &MODULE,
        func,
        dtype: x.dtype(),
        inputs: &inputs,
        out: Out::T((b, c_out, h, w).into()),
        scalars: &scalars,
        cfg: blocks_1d(n_out, 256),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{gpu, pair, rel_err, tol, DTYPES};
    use crate::ops::{depthwise_conv2d, depthwise_conv2d_glu, silu_depthwise_conv2d_glu_with_input_bias};
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

    #[test]
    fn fused_mix_ffn_middle_matches_cpu() -> Result<()> {
        let Some(dev) = gpu("fused_mix_ffn_middle_matches_cpu") else { return Ok(()) };
        // (B, 2C, H, W, k): the Mix-FFN's 3×3 on a small grid; a 1×1 grid (every tap padded); k = 5.
        for &(b, c, h, w, k) in &[(2, 12, 8, 8, 3), (1, 4, 1, 1, 3), (1, 6, 5, 7, 5)] {
            for dtype in DTYPES {
                let (x, xc) = pair(&[b, c, h, w], dtype, &dev)?;
                let (x, xc) = ((x * 3.0)?, (xc * 3.0)?);
                let (wt, wc) = pair(&[c, 1, k, k], dtype, &dev)?;
                let (bias, bc) = pair(&[c], dtype, &dev)?;
                let (ib, ibc) = pair(&[c], dtype, &dev)?;
                for with_input_bias in [false, true] {
                    let got = super::silu_depthwise_conv2d_glu(&x, with_input_bias.then_some(&ib), &wt, Some(&bias))?;
                    assert_eq!((got.dims(), got.dtype()), (&[b, c / 2, h, w][..], dtype));
                    let want = silu_depthwise_conv2d_glu_with_input_bias(&xc, with_input_bias.then_some(&ibc), &wc, Some(&bc))?;
                    let err = rel_err(&got, &want)?;
                    assert!(err <= tol(dtype), "{:?} {dtype:?} input bias {with_input_bias}: err {err}", (b, c, h, w, k));
                }
            }
        }
        Ok(())
    }
}
