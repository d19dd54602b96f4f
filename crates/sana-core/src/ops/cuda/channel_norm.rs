//! RMSNorm over the channel dim of [B, C, H, W] (DC-AE's RMSNorm2d; kernels/channel_norm.cu).

use super::launch::{blocks_1d, launch, ptx_module, In, Launch, Module, Out, Scalar};
use crate::{Result, SanaError};
use candle_core::{DType, Tensor};

const MODULE: Module = ptx_module!("channel_norm");

/// x: [B, C, H, W] on CUDA (f32/f16/bf16), weight/bias: [C] (any float dtype, used as f32) → x's shape
/// and dtype.
pub(crate) fn rms_norm_channels(x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let per_channel = |t: Option<&Tensor>, fill: f64, name: &str| -> Result<Tensor> {
        let t = match t {
            Some(t) => t.to_dtype(DType::F32)?.contiguous()?,
            None => Tensor::full(fill as f32, c, x.device())?,
        };
        crate::ensure_arg!(t.dims() == [c], name, "norm {name} must have shape [{c}], got {:?}", t.dims());
        Ok(t)
    };
    let (wt, bs) = (per_channel(weight, 1.0, "weight")?, per_channel(bias, 0.0, "bias")?);
    let x = x.contiguous()?;
    // rms_norm_channels(x, weight, bias, out, batch, c, hw, eps): one thread per pixel.
    launch(&Launch {
        module: &MODULE,
        func: "rms_norm_channels",
        dtype: x.dtype(),
        inputs: &[In::T(&x), In::F32(&wt), In::F32(&bs)],
        out: Out::T(x.shape().clone()),
        scalars: &[Scalar::I32(b as i32), Scalar::I32(c as i32), Scalar::I32((h * w) as i32), Scalar::F32(eps as f32)],
        cfg: blocks_1d(b * h * w, 256),
    })
    .map_err(SanaError::from)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{gpu, pair, rel_err, tol, DTYPES};
    use crate::ops::channel_ops;
    use crate::Result;

    #[test]
    fn rms_norm_channels_matches_cpu() -> Result<()> {
        let Some(dev) = gpu("rms_norm_channels_matches_cpu") else { return Ok(()) };
        for &(b, c, h, w) in &[(2, 5, 3, 70), (1, 512, 8, 8), (1, 1, 1, 1)] {
            for dtype in DTYPES {
                let (x, xc) = pair(&[b, c, h, w], dtype, &dev)?;
                let (wt, wc) = pair(&[c], dtype, &dev)?;
                let (bias, bc) = pair(&[c], dtype, &dev)?;
                let got = channel_ops::rms_norm_channels(&x, Some(&wt), Some(&bias), 1e-5)?;
                assert_eq!(got.dtype(), dtype);
                let want = channel_ops::rms_norm_channels(&xc, Some(&wc), Some(&bc), 1e-5)?;
                let err = rel_err(&got, &want)?;
                assert!(err <= tol(dtype), "{:?} {dtype:?}: rel err {err}", (b, c, h, w));
            }
        }
        Ok(())
    }
}
