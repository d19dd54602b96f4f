//! RMSNorm over the last dimension, computed in f32 (diffusers `RMSNorm`, Gemma's `Gemma2RMSNorm`).
//!
//! `y = x · rsqrt(mean(x²) + eps) · weight (+ bias)`, then cast back to x's dtype.
//! Gemma scales by `(1 + w)`: its loader passes `w + 1` (the same f32 value torch computes).

use crate::Result;
use candle_core::{DType, Tensor, D};

pub fn rms_norm(x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?;
    let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
    let mut y = xf.broadcast_div(&(var + eps)?.sqrt()?)?;
    if let Some(w) = weight {
        y = y.broadcast_mul(&w.to_dtype(DType::F32)?)?;
    }
    if let Some(b) = bias {
        y = y.broadcast_add(&b.to_dtype(DType::F32)?)?;
    }
    Ok(y.to_dtype(dtype)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_definition() -> Result<()> {
        let x = Tensor::new(&[[1f32, 2., 3., 4.], [-1., 0., 0.5, 2.]], &Device::Cpu)?;
        let w = Tensor::new(&[0.5f32, 1., 2., -1.], &Device::Cpu)?;
        let b = Tensor::new(&[0.1f32, 0., 0., 0.], &Device::Cpu)?;
        let got = rms_norm(&x, Some(&w), Some(&b), 1e-6)?.to_vec2::<f32>()?;
        for (r, row) in [[1f32, 2., 3., 4.], [-1., 0., 0.5, 2.]].iter().enumerate() {
            let ms = row.iter().map(|v| v * v).sum::<f32>() / 4.0;
            let inv = 1.0 / (ms + 1e-6).sqrt();
            for c in 0..4 {
                let want = row[c] * inv * [0.5, 1., 2., -1.][c] + [0.1, 0., 0., 0.][c];
                assert!((got[r][c] - want).abs() < 1e-6);
            }
        }
        Ok(())
    }
}
