//! Masked blend of two latents: inpainting keeps the known region and repaints the masked one.

use super::common_device;
use crate::Result;
use candle_core::{DType, Tensor};

/// `(1 − mask)·keep + mask·repaint` in f32 (diffusers/SD3-inpaint's blend after each step), on the
/// tensors' [`common_device`]. `keep` and `repaint` share a shape [B, C, H, W]; `mask` is [1|B, 1, H, W]
/// and broadcasts over batch and channels. A 0/1 mask selects exactly; a soft one interpolates.
pub fn masked_blend(keep: &Tensor, repaint: &Tensor, mask: &Tensor) -> Result<Tensor> {
    crate::ensure_arg!(keep.dims() == repaint.dims() && keep.rank() == 4, "repaint",
        "expected two tensors of one shape [B, C, H, W], got {:?} and {:?}", keep.dims(), repaint.dims());
    let (b, _, h, w) = keep.dims4()?;
    let m = mask.dims();
    crate::ensure_arg!(m.len() == 4 && (m[0] == 1 || m[0] == b) && m[1] == 1 && m[2] == h && m[3] == w, "mask",
        "expected shape [1 or {b}, 1, {h}, {w}], got {m:?}");
    let dev = common_device(&[keep, repaint, mask]);
    let f32_on = |t: &Tensor| t.to_device(&dev)?.to_dtype(DType::F32);
    let (keep, repaint, mask) = (f32_on(keep)?, f32_on(repaint)?, f32_on(mask)?);
    let inv = mask.affine(-1.0, 1.0)?; // 1 − m
    Ok((keep.broadcast_mul(&inv)? + repaint.broadcast_mul(&mask)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn selects_by_mask_and_interpolates_soft_values() -> Result<()> {
        let dev = Device::Cpu;
        let keep = Tensor::arange(0f32, 16.0, &dev)?.reshape((2, 2, 2, 2))?;
        let repaint = keep.affine(0.0, 100.0)?;
        let mask = Tensor::new(&[1f32, 0.0, 0.25, 1.0], &dev)?.reshape((1, 1, 2, 2))?;
        let got: Vec<f32> = masked_blend(&keep, &repaint, &mask)?.flatten_all()?.to_vec1()?;
        let m = [1f32, 0.0, 0.25, 1.0];
        let want: Vec<f32> = (0..16).map(|i| (1.0 - m[i % 4]) * i as f32 + m[i % 4] * 100.0).collect();
        assert_eq!(got, want);
        Ok(())
    }

    #[test]
    fn rejects_a_mask_of_another_size() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 2, 4, 4), DType::F32, &dev).unwrap();
        let mask = Tensor::zeros((1, 1, 2, 4), DType::F32, &dev).unwrap();
        let err = masked_blend(&x, &x, &mask).unwrap_err().to_string();
        assert!(err.contains("mask") && err.contains("[1 or 1, 1, 4, 4]"), "{err}");
    }
}
