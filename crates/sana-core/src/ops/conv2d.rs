//! Dense k×k convolution with "same"-style zero padding (k / 2), optional stride and an optional fused
//! nearest-neighbour upsample of the input, computed as banded im2col + GEMM.
//!
//! PyTorch: `nn.Conv2d(Cin, Cout, k, stride, padding=k // 2)(F.interpolate(x, scale_factor=up, mode="nearest"))`.
//!
//! Why not candle's `conv2d`: it materialises the whole im2col matrix ([H·W, Cin·k²]), which for a DC-AE
//! decoder stage at 1024² (Cin 128) is 4.8 GB. Here the output is produced a band of rows at a time, so
//! the column buffer stays under [`BAND_BYTES`], and the ×2 upsample of DC-AE's up blocks never exists
//! as a tensor (the column builder reads the source pixel `(y / up, x / up)` directly).

use super::{is_cpu_f32, with_cpu_f32};
use crate::{ensure_arg, Result};
use candle_core::Tensor;
use rayon::prelude::*;

/// Upper bound for one band's im2col buffer.
pub const BAND_BYTES: usize = 32 << 20;

/// x: [B, Cin, H, W], weight: [Cout, Cin, k, k] (k odd), bias: [Cout]
/// → [B, Cout, Ho, Wo] with Ho = (H·up + 2·(k/2) − k) / stride + 1 (likewise Wo).
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, stride: usize, up: usize) -> Result<Tensor> {
    let (b, cin, h, w) = x.dims4()?;
    let (cout, wcin, kh, kw) = weight.dims4()?;
    ensure_arg!(wcin == cin && kh == kw && kh % 2 == 1, "weight",
        "conv weight must be [Cout, {cin}, k, k] with odd k, got {:?}", weight.dims());
    ensure_arg!(stride >= 1 && up >= 1, "stride", "stride ({stride}) and upsample factor ({up}) must be ≥ 1");
    let (k, pad) = (kh, kh / 2);
    let (hv, wv) = (h * up, w * up);
    ensure_arg!(hv + 2 * pad >= k && wv + 2 * pad >= k, "x", "input {h}×{w} is smaller than the kernel");
    let (ho, wo) = ((hv + 2 * pad - k) / stride + 1, (wv + 2 * pad - k) / stride + 1);
    if !(is_cpu_f32(x) && is_cpu_f32(weight)) {
        let xu = if up > 1 { x.upsample_nearest2d(hv, wv)? } else { x.clone() };
        let y = xu.conv2d(weight, pad, stride, 1, 1)?;
        return Ok(match bias {
            Some(bias) => y.broadcast_add(&bias.reshape((1, cout, 1, 1))?)?,
            None => y,
        });
    }
    let bias_v: Vec<f32> = match bias {
        Some(t) => t.to_vec1()?,
        None => vec![0.0; cout],
    };
    let kk = cin * k * k;
    let w2 = weight.reshape((cout, kk))?;
    let geo = Geometry { cin, h, w, k, pad, stride, up, wo };
    // Rows of output per band: as many as fit in BAND_BYTES (at least one).
    let band_rows = (BAND_BYTES / (4 * kk * wo).max(1)).clamp(1, ho);
    let mut out = vec![0f32; b * cout * ho * wo];
    with_cpu_f32(x, |xs| -> Result<()> {
        for n in 0..b {
            let xn = &xs[n * cin * h * w..(n + 1) * cin * h * w];
            let on = &mut out[n * cout * ho * wo..(n + 1) * cout * ho * wo];
            let mut y0 = 0;
            while y0 < ho {
                let rows = band_rows.min(ho - y0);
                let p = rows * wo;
                // 1. im2col for output rows y0..y0+rows: cols[(ci, ky, kx), pixel].
                let mut cols = vec![0f32; kk * p];
                cols.par_chunks_mut(p).enumerate().for_each(|(r, dst)| geo.fill_row(xn, r, y0, rows, dst));
                // 2. [Cout, kk] @ [kk, p] → [Cout, p], then scatter into the output plane with the bias.
                let cols = Tensor::from_vec(cols, (kk, p), x.device())?;
                let yb = w2.matmul(&cols)?;
                with_cpu_f32(&yb, |ys| {
                    on.par_chunks_mut(ho * wo).enumerate().for_each(|(co, plane)| {
                        let src = &ys[co * p..(co + 1) * p];
                        let bv = bias_v[co];
                        for (d, s) in plane[y0 * wo..y0 * wo + p].iter_mut().zip(src) {
                            *d = s + bv;
                        }
                    })
                })?;
                y0 += rows;
            }
        }
        Ok(())
    })??;
    Ok(Tensor::from_vec(out, (b, cout, ho, wo), x.device())?)
}

/// Where each column-matrix entry reads from.
struct Geometry {
    cin: usize,
    h: usize,
    w: usize,
    k: usize,
    pad: usize,
    stride: usize,
    up: usize,
    wo: usize,
}

impl Geometry {
    /// Row `r` = (ci, ky, kx) of the column matrix for output rows y0..y0+rows (zero outside the image).
    fn fill_row(&self, x: &[f32], r: usize, y0: usize, rows: usize, dst: &mut [f32]) {
        let (ci, ky, kx) = (r / (self.k * self.k), (r / self.k) % self.k, r % self.k);
        debug_assert!(ci < self.cin);
        let plane = &x[ci * self.h * self.w..(ci + 1) * self.h * self.w];
        let (hv, wv) = ((self.h * self.up) as isize, (self.w * self.up) as isize);
        // Output columns whose source column lies inside the (virtual, upsampled) image.
        let ix_of = |ox: usize| (ox * self.stride + kx) as isize - self.pad as isize;
        let ox0 = (0..self.wo).find(|&ox| ix_of(ox) >= 0).unwrap_or(self.wo);
        let ox1 = (0..self.wo).rev().find(|&ox| ix_of(ox) < wv).map_or(0, |o| o + 1);
        for oy in 0..rows {
            let iy = ((y0 + oy) * self.stride + ky) as isize - self.pad as isize;
            if iy < 0 || iy >= hv || ox0 >= ox1 {
                continue; // already zero
            }
            let src = &plane[(iy as usize / self.up) * self.w..(iy as usize / self.up + 1) * self.w];
            let d = &mut dst[oy * self.wo..(oy + 1) * self.wo];
            if self.stride == 1 && self.up == 1 {
                let off = (ox0 + kx) - self.pad;
                d[ox0..ox1].copy_from_slice(&src[off..off + (ox1 - ox0)]);
            } else {
                for ox in ox0..ox1 {
                    d[ox] = src[ix_of(ox) as usize / self.up];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candle_conv_with_stride_and_upsample() -> Result<()> {
        let dev = Device::Cpu;
        // (b, cin, cout, h, w, k, stride, up)
        for &(b, cin, cout, h, w, k, s, up) in &[
            (2, 3, 5, 7, 6, 3, 1, 1),
            (1, 4, 2, 8, 6, 3, 2, 1),
            (1, 4, 3, 5, 7, 3, 2, 1),
            (2, 3, 4, 3, 5, 3, 1, 2),
            (1, 2, 3, 4, 4, 1, 1, 1),
            (1, 2, 2, 6, 5, 5, 1, 1),
            (1, 1, 1, 1, 1, 3, 1, 1),
        ] {
            let x = Tensor::randn(0f32, 1.0, (b, cin, h, w), &dev)?;
            let wt = Tensor::randn(0f32, 1.0, (cout, cin, k, k), &dev)?;
            let bias = Tensor::randn(0f32, 1.0, cout, &dev)?;
            let got = conv2d(&x, &wt, Some(&bias), s, up)?;
            let xu = x.upsample_nearest2d(h * up, w * up)?;
            let want = xu.conv2d(&wt, k / 2, s, 1, 1)?.broadcast_add(&bias.reshape((1, cout, 1, 1))?)?;
            assert_eq!(got.dims(), want.dims());
            let diff = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "{:?}: diff {diff}", (b, cin, cout, h, w, k, s, up));
        }
        Ok(())
    }

    #[test]
    fn banding_does_not_change_results() -> Result<()> {
        // Wide enough that one band cannot hold the whole image (kk·wo·4 bytes per row).
        let dev = Device::Cpu;
        let (cin, cout, h, w) = (300, 2, 8, 1000);
        let x = Tensor::randn(0f32, 1.0, (1, cin, h, w), &dev)?;
        let wt = Tensor::randn(0f32, 0.05, (cout, cin, 3, 3), &dev)?;
        assert!(BAND_BYTES / (4 * cin * 9 * w) < h);
        let got = conv2d(&x, &wt, None, 1, 1)?;
        let want = x.conv2d(&wt, 1, 1, 1, 1)?;
        let diff = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(diff < 1e-3, "diff {diff}");
        Ok(())
    }
}
