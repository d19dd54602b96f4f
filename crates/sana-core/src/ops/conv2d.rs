//! Dense k×k convolution with "same"-style zero padding (k / 2), optional stride and an optional fused
//! nearest-neighbour upsample of the input, computed as banded im2col + GEMM.
//!
//! PyTorch: `nn.Conv2d(Cin, Cout, k, stride, padding=k // 2)(F.interpolate(x, scale_factor=up, mode="nearest"))`.
//!
//! Why not candle's `conv2d`: it materialises the whole im2col matrix ([H·W, Cin·k²]), which for a DC-AE
//! decoder stage at 1024² (Cin 128) is 4.8 GB. Here the output is produced a band of rows at a time, so
//! the column buffer stays under [`BAND_BYTES`], and the ×2 upsample of DC-AE's up blocks never exists
//! as a tensor (the column builder reads the source pixel `(y / up, x / up)` directly).

use super::gemm::{gemm_acc, Strided};
use super::{bias_or_zeros, is_cpu_f32, with_cpu_f32};
use crate::{ensure_arg, Result};
use candle_core::Tensor;
use rayon::prelude::*;

/// Upper bound for one band's im2col buffer.
pub const BAND_BYTES: usize = 32 << 20;

/// Output columns (pixels of a band) the per-tap path runs all its taps over before moving on.
const TAP_COLUMNS: usize = 3072;

/// Upper bound for each of the per-tap path's input and output band buffers. Since the taps run per
/// [`TAP_COLUMNS`] block, long bands no longer buy GEMM speed; 16 MB keeps both buffers in the allocator's
/// block cache and near L3 (at 128 MB a 512² decode peaked 0.3 GB higher at the same speed).
pub const TAP_BAND_BYTES: usize = 16 << 20;

/// x: [B, Cin, H, W], weight: [Cout, Cin, k, k] (k odd), bias: [Cout]
/// → [B, Cout, Ho, Wo] with Ho = (H·up + 2·(k/2) − k) / stride + 1 (likewise Wo).
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, stride: usize, up: usize) -> Result<Tensor> {
    let (b, cin, h, w) = x.dims4()?;
    let (cout, wcin, kh, kw) = weight.dims4()?;
    ensure_arg!(wcin == cin && kh == kw && kh % 2 == 1, "weight",
        "conv weight must be [Cout, {cin}, k, k] with odd k, got {:?}", weight.dims());
    ensure_arg!(stride >= 1 && up >= 1, "stride", "stride ({stride}) and upsample factor ({up}) must be ≥ 1");
    let (k, pad) = (kh, kh / 2);
    let (hu, wu) = (h * up, w * up);
    ensure_arg!(hu + 2 * pad >= k && wu + 2 * pad >= k, "x", "input {h}×{w} is smaller than the kernel");
    let (ho, wo) = ((hu + 2 * pad - k) / stride + 1, (wu + 2 * pad - k) / stride + 1);
    // A CPU weight kept in bf16/f16 is widened for the f32 GEMM (a transient copy of this layer's weight).
    let weight = &if x.device().is_cpu() { super::cpu_weight(weight)? } else { weight.clone() };
    if !(is_cpu_f32(x) && is_cpu_f32(weight)) {
        let xu = if up > 1 { x.upsample_nearest2d(hu, wu)? } else { x.clone() };
        let y = xu.conv2d(weight, pad, stride, 1, 1)?;
        return Ok(match bias {
            Some(bias) => y.broadcast_add(&bias.reshape((1, cout, 1, 1))?)?,
            None => y,
        });
    }
    let bias_v = bias_or_zeros(bias, cout)?;
    // The weights are read in place ([Cout, Cin·k·k] row-major), not copied per call.
    let out = with_cpu_f32(weight, |ws| {
        with_cpu_f32(x, |xs| {
            if stride == 1 && up == 1 && k > 1 {
                conv_taps(xs, ws, &bias_v, [b, cin, cout, h, w, k])
            } else {
                conv_im2col(xs, ws, &bias_v, &Geometry { cin, h, w, k, pad, stride, up, wo }, [b, cout, ho])
            }
        })
    })??;
    Ok(Tensor::from_vec(out, (b, cout, ho, wo), x.device())?)
}

/// Any stride and upsample: banded im2col, each band's GEMM adding [Cout, kk] · cols into its block of
/// output rows in place (row stride Ho·Wo), over an output that starts as the bias. One column buffer
/// serves every band: no per-band allocation, page faults or copy of the GEMM result.
fn conv_im2col(xs: &[f32], ws: &[f32], bias: &[f32], geo: &Geometry, [b, cout, ho]: [usize; 3]) -> Vec<f32> {
    let (cin, h, w, wo) = (geo.cin, geo.h, geo.w, geo.wo);
    let kk = cin * geo.k * geo.k;
    // Rows of output per band: as many as fit in BAND_BYTES (at least one).
    let band_rows = (BAND_BYTES / (4 * kk * wo).max(1)).clamp(1, ho);
    let plane = ho * wo;
    let mut out = vec![0f32; b * cout * plane];
    out.par_chunks_mut(plane).enumerate().for_each(|(i, o)| o.fill(bias[i % cout]));
    let mut cols = vec![0f32; kk * band_rows * wo];
    for n in 0..b {
        let xn = &xs[n * cin * h * w..(n + 1) * cin * h * w];
        let on = &mut out[n * cout * plane..(n + 1) * cout * plane];
        for y0 in (0..ho).step_by(band_rows) {
            let rows = band_rows.min(ho - y0);
            let p = rows * wo;
            // 1. im2col for output rows y0..y0+rows: cols[(ci, ky, kx), pixel].
            cols[..kk * p].par_chunks_mut(p).enumerate().for_each(|(r, dst)| geo.fill_row(xn, r, y0, rows, dst));
            // 2. out[:, y0·Wo ..] += W · cols.
            gemm_acc([cout, p, kk], (on, Strided::rows(y0 * wo, plane)), (ws, Strided::rows(0, kk)), (&cols, Strided::rows(0, p)));
        }
    }
    out
}

/// Stride 1, no upsample: the convolution as k² GEMMs, one per tap, over a zero-padded copy of the input,
/// with no column matrix. In a padded band of input rows (width Wp = W + 2·pad), tap (ky, kx) of output
/// pixel (y, x) reads padded pixel (y + ky)·Wp + x + kx; over the flat index q = y·Wp + x that is the
/// matrix [Cin, Q] at offset ky·Wp + kx (row stride: one channel's band). So each band of output rows
/// is computed on the padded width (Q = rows·Wp; the last 2·pad columns of each row read across the row
/// edge and are dropped) as `out_band += W[:, :, ky, kx] · x_band[:, shifted]` per tap. The im2col
/// version wrote and re-read k²·Cin values per output pixel; here GEMM packs the shifted views itself,
/// in cache. Input and output bands each stay under [`TAP_BAND_BYTES`].
fn conv_taps(xs: &[f32], ws: &[f32], bias: &[f32], [b, cin, cout, h, w, k]: [usize; 6]) -> Vec<f32> {
    let pad = k / 2;
    let wp = w + 2 * pad;
    let band_rows = (TAP_BAND_BYTES / (4 * wp * cin.max(cout))).saturating_sub(k - 1).clamp(1, h);
    // Per input channel: band_rows + k − 1 padded rows, + k: the last tap of the last (dropped) columns
    // reads up to k − 2 values past them.
    let xlen = (band_rows + k - 1) * wp + k;
    let mut out = vec![0f32; b * cout * h * w];
    let mut xband = vec![0f32; cin * xlen];
    let mut oband = vec![0f32; cout * band_rows * wp];
    for n in 0..b {
        let xn = &xs[n * cin * h * w..(n + 1) * cin * h * w];
        let on = &mut out[n * cout * h * w..(n + 1) * cout * h * w];
        for y0 in (0..h).step_by(band_rows) {
            let rows = band_rows.min(h - y0);
            let q = rows * wp;
            // Band row r holds input row y0 + r − pad (zeros outside the image), shifted right by pad.
            xband.par_chunks_mut(xlen).zip(xn.par_chunks(h * w)).for_each(|(dst, src)| {
                dst.fill(0.0);
                for r in 0..rows + k - 1 {
                    let iy = (y0 + r) as isize - pad as isize;
                    if iy >= 0 && (iy as usize) < h {
                        let iy = iy as usize;
                        dst[r * wp + pad..r * wp + pad + w].copy_from_slice(&src[iy * w..(iy + 1) * w]);
                    }
                }
            });
            let ob = &mut oband[..cout * q];
            ob.par_chunks_mut(q).enumerate().for_each(|(co, o)| o.fill(bias[co]));
            // Column block by column block, all k² taps on one block before the next: the block's
            // Cout × TAP_COLUMNS outputs stay in cache (and its pages in the TLB) across the taps, where
            // tap after tap over the whole band streamed Cout·Q values (tens of MB) k² times.
            for q0 in (0..q).step_by(TAP_COLUMNS) {
                let qc = TAP_COLUMNS.min(q - q0);
                for ky in 0..k {
                    for kx in 0..k {
                        // lhs (co, ci) = W[co, ci, ky, kx]; rhs (ci, q) = xband[ci·xlen + ky·Wp + kx + q].
                        let lhs = Strided { offset: ky * k + kx, rs: cin * k * k, cs: k * k };
                        let rhs = Strided::rows(ky * wp + kx + q0, xlen);
                        gemm_acc([cout, qc, cin], (&mut *ob, Strided::rows(q0, q)), (ws, lhs), (&xband, rhs));
                    }
                }
            }
            on.par_chunks_mut(h * w).zip(ob.par_chunks(q)).for_each(|(dst, src)| {
                for y in 0..rows {
                    dst[(y0 + y) * w..(y0 + y + 1) * w].copy_from_slice(&src[y * wp..y * wp + w]);
                }
            });
        }
    }
    out
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
    /// Row `r` = (ci, ky, kx) of the column matrix for output rows y0..y0+rows, every entry written (zero
    /// outside the image).
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
            let d = &mut dst[oy * self.wo..(oy + 1) * self.wo];
            if iy < 0 || iy >= hv || ox0 >= ox1 {
                d.fill(0.0); // padding row (the buffer is reused: write the zeros)
                continue;
            }
            d[..ox0].fill(0.0);
            d[ox1..].fill(0.0);
            let src = &plane[(iy as usize / self.up) * self.w..(iy as usize / self.up + 1) * self.w];
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
    fn tap_bands_do_not_change_results() -> Result<()> {
        // The stride-1 path with more rows than one band holds (TAP_BAND_BYTES / (4·Wp·Cin) − (k − 1)
        // rows) and a ragged last band, for k = 3 and 5.
        let dev = Device::Cpu;
        let (cin, cout, h, w) = (256, 3, 9, 2000);
        let x = Tensor::randn(0f32, 1.0, (1, cin, h, w), &dev)?;
        for k in [3usize, 5] {
            let rows = TAP_BAND_BYTES / (4 * (w + k - 1) * cin) - (k - 1);
            assert!(rows < h && h % rows != 0, "k {k}: {rows} rows per band");
            let wt = Tensor::randn(0f32, 0.05, (cout, cin, k, k), &dev)?;
            let bias = Tensor::randn(0f32, 1.0, cout, &dev)?;
            let got = conv2d(&x, &wt, Some(&bias), 1, 1)?;
            let want = x.conv2d(&wt, k / 2, 1, 1, 1)?.broadcast_add(&bias.reshape((1, cout, 1, 1))?)?;
            let diff = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(diff < 1e-3, "k {k}: diff {diff}");
        }
        Ok(())
    }

    #[test]
    fn banding_does_not_change_results() -> Result<()> {
        // The im2col path (upsampling conv), wide enough that one band cannot hold the whole output
        // (kk·wo·4 bytes per row): several bands reuse one column buffer, padding rows included.
        let dev = Device::Cpu;
        let (cin, cout, h, w) = (300, 2, 8, 500);
        let x = Tensor::randn(0f32, 1.0, (2, cin, h, w), &dev)?;
        let wt = Tensor::randn(0f32, 0.05, (cout, cin, 3, 3), &dev)?;
        assert!(BAND_BYTES / (4 * cin * 9 * 2 * w) < 2 * h);
        let got = conv2d(&x, &wt, None, 1, 2)?;
        let want = x.upsample_nearest2d(2 * h, 2 * w)?.conv2d(&wt, 1, 1, 1, 1)?;
        let diff = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(diff < 1e-3, "diff {diff}");
        Ok(())
    }
}
