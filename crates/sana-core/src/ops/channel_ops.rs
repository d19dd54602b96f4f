//! Channel-major ([B, C, H, W]) ops of conv autoencoders, each one pass with one output allocation:
//! - [`rms_norm_channels`]: RMSNorm over the channel dim (diffusers `RMSNorm(x.movedim(1, -1)).movedim(-1, 1)`).
//! - [`pixel_shuffle`]: `F.pixel_shuffle(x.repeat_interleave(repeats, dim=1), r)` without the repeated copy.
//! - [`pixel_unshuffle`]: `F.pixel_unshuffle(x, r).unflatten(1, (-1, group)).mean(2)` without the unshuffled copy.

use super::{is_cpu_f32, with_cpu_f32};
use crate::{ensure_arg, Result};
use candle_core::{DType, Tensor};
use rayon::prelude::*;

/// x: [B, C, H, W], weight/bias: [C] → x · rsqrt(mean_c(x²) + eps) · weight + bias, in f32.
pub fn rms_norm_channels(x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    rms_norm_channels_add(x, weight, bias, eps, None)
}

/// [`rms_norm_channels`] plus `residual` (same shape) when given: DC-AE's `norm(h) + x` that ends each
/// block. On the CPU in f32 the sum is formed as each normalised value is, with the same bits as two ops
/// but without the second tensor (at DC-AE's 1024² stage, 512 MiB of fresh pages per block).
pub fn rms_norm_channels_add(x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64, residual: Option<&Tensor>) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if let Some(r) = residual {
        ensure_arg!(r.dims() == x.dims(), "residual", "expected {:?}, got {:?}", x.dims(), r.dims());
    }
    // Off the f32 CPU pass: the norm, then the residual as a second op.
    let plus_residual = |y: Tensor| -> Result<Tensor> {
        Ok(match residual {
            Some(r) => (y + r)?,
            None => y,
        })
    };
    #[cfg(feature = "cuda")]
    if super::is_cuda_kernel_dtype(&[x]) {
        return plus_residual(super::cuda::rms_norm_channels(x, weight, bias, eps)?);
    }
    if !(is_cpu_f32(x) && residual.is_none_or(is_cpu_f32)) {
        // Generic path: permute to channels-last and reuse the last-dim RMSNorm.
        let y = super::rms_norm(&x.permute((0, 2, 3, 1))?, weight, bias, eps)?.permute((0, 3, 1, 2))?;
        return plus_residual(y.contiguous()?);
    }
    let hw = h * w;
    let wv: Vec<f32> = match weight {
        Some(t) => t.to_dtype(DType::F32)?.to_vec1()?,
        None => vec![1.0; c],
    };
    let bv = super::bias_or_zeros(bias, c)?;
    ensure_arg!(wv.len() == c && bv.len() == c, "weight", "norm weight/bias must have {c} entries");
    let mut out = vec![0f32; b * c * hw];
    let run = |xs: &[f32], rs: Option<&[f32]>, out: &mut [f32]| {
        for n in 0..b {
            let xn = &xs[n * c * hw..(n + 1) * c * hw];
            // 1. inv[p] = 1 / sqrt(mean_c x[c, p]² + eps), accumulated plane by plane (contiguous rows).
            let mut inv = vec![0f32; hw];
            inv.par_chunks_mut(4096).enumerate().for_each(|(ci, acc)| {
                let p0 = ci * 4096;
                for ch in 0..c {
                    let row = &xn[ch * hw + p0..ch * hw + p0 + acc.len()];
                    for (a, v) in acc.iter_mut().zip(row) {
                        *a += v * v;
                    }
                }
                for a in acc.iter_mut() {
                    *a = 1.0 / (*a / c as f32 + eps as f32).sqrt();
                }
            });
            // 2. out[c, p] = x[c, p] · inv[p] · w[c] + b[c] (+ residual[c, p], rounded after, as two ops)
            out[n * c * hw..(n + 1) * c * hw].par_chunks_mut(hw).enumerate().for_each(|(ch, o)| {
                let row = &xn[ch * hw..(ch + 1) * hw];
                match rs {
                    Some(rs) => {
                        let rrow = &rs[(n * c + ch) * hw..(n * c + ch + 1) * hw];
                        for (((o, v), s), r) in o.iter_mut().zip(row).zip(&inv).zip(rrow) {
                            let y = v * s * wv[ch] + bv[ch];
                            *o = y + r;
                        }
                    }
                    None => {
                        for ((o, v), s) in o.iter_mut().zip(row).zip(&inv) {
                            *o = v * s * wv[ch] + bv[ch];
                        }
                    }
                }
            });
        }
    };
    match residual {
        Some(r) => with_cpu_f32(x, |xs| with_cpu_f32(r, |rs| run(xs, Some(rs), &mut out)))??,
        None => with_cpu_f32(x, |xs| run(xs, None, &mut out))?,
    }
    Ok(Tensor::from_vec(out, (b, c, h, w), x.device())?)
}

/// x: [B, Cin, H, W] → [B, Cin·repeats / r², H·r, W·r]:
/// `out[b, c, y·r + i, x·r + j] = x[b, (c·r² + i·r + j) / repeats, y, x]`.
pub fn pixel_shuffle(x: &Tensor, r: usize, repeats: usize) -> Result<Tensor> {
    let (b, cin, h, w) = x.dims4()?;
    let cv = cin * repeats;
    ensure_arg!(r >= 1 && repeats >= 1 && cv % (r * r) == 0, "x",
        "{cin} channels × {repeats} repeats is not divisible by {r}²");
    let cout = cv / (r * r);
    if !is_cpu_f32(x) {
        let xr = x.unsqueeze(2)?.broadcast_as((b, cin, repeats, h, w))?.reshape((b, cout, r, r, h, w))?;
        return Ok(xr.permute((0, 1, 4, 2, 5, 3))?.reshape((b, cout, h * r, w * r))?);
    }
    let (ho, wo) = (h * r, w * r);
    let mut out = vec![0f32; b * cout * ho * wo];
    with_cpu_f32(x, |xs| {
        out.par_chunks_mut(ho * wo).enumerate().for_each(|(bc, o)| {
            let (n, c) = (bc / cout, bc % cout);
            for i in 0..r {
                for j in 0..r {
                    let src_c = (c * r * r + i * r + j) / repeats;
                    let src = &xs[(n * cin + src_c) * h * w..(n * cin + src_c + 1) * h * w];
                    for y in 0..h {
                        let orow = &mut o[(y * r + i) * wo..(y * r + i + 1) * wo];
                        for (xx, v) in src[y * w..(y + 1) * w].iter().enumerate() {
                            orow[xx * r + j] = *v;
                        }
                    }
                }
            }
        })
    })?;
    Ok(Tensor::from_vec(out, (b, cout, ho, wo), x.device())?)
}

/// x: [B, C, H, W] → [B, C·r² / group, H/r, W/r]: the pixel-unshuffled channels
/// (`k = c·r² + i·r + j` ↔ `x[c, y·r + i, x·r + j]`) averaged over consecutive groups of `group`.
pub fn pixel_unshuffle(x: &Tensor, r: usize, group: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    ensure_arg!(r >= 1 && h % r == 0 && w % r == 0, "x", "spatial size {h}×{w} is not divisible by {r}");
    let cv = c * r * r;
    ensure_arg!(group >= 1 && cv % group == 0, "x", "{cv} unshuffled channels are not divisible into groups of {group}");
    let (cout, ho, wo) = (cv / group, h / r, w / r);
    if !is_cpu_f32(x) {
        let u = x.reshape((b, c, ho, r, wo, r))?.permute((0, 1, 3, 5, 2, 4))?.reshape((b, cout, group, ho, wo))?;
        return Ok(u.mean(2)?);
    }
    let mut out = vec![0f32; b * cout * ho * wo];
    let scale = 1.0 / group as f32;
    with_cpu_f32(x, |xs| {
        out.par_chunks_mut(ho * wo).enumerate().for_each(|(bo, o)| {
            let (n, oc) = (bo / cout, bo % cout);
            for k in oc * group..(oc + 1) * group {
                let (ci, i, j) = (k / (r * r), (k / r) % r, k % r);
                let plane = &xs[(n * c + ci) * h * w..(n * c + ci + 1) * h * w];
                for y in 0..ho {
                    let src = &plane[(y * r + i) * w..(y * r + i + 1) * w];
                    for (xx, d) in o[y * wo..(y + 1) * wo].iter_mut().enumerate() {
                        *d += src[xx * r + j];
                    }
                }
            }
            o.iter_mut().for_each(|v| *v *= scale);
        })
    })?;
    Ok(Tensor::from_vec(out, (b, cout, ho, wo), x.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn rms_norm_channels_matches_last_dim_rms_norm() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 5, 3, 70), &dev)?;
        let wt = Tensor::randn(0f32, 1.0, 5, &dev)?;
        let bias = Tensor::randn(0f32, 1.0, 5, &dev)?;
        let got = rms_norm_channels(&x, Some(&wt), Some(&bias), 1e-5)?;
        let want = super::super::rms_norm(&x.permute((0, 2, 3, 1))?, Some(&wt), Some(&bias), 1e-5)?.permute((0, 3, 1, 2))?;
        assert!(max_diff(&got, &want) < 1e-5);
        Ok(())
    }

    #[test]
    fn the_residual_is_added_with_the_bits_of_two_ops() -> Result<()> {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 1.0, (2, 5, 7, 9), &dev)? * 3.0)?;
        let r = Tensor::randn(0f32, 1.0, (2, 5, 7, 9), &dev)?;
        let (w, b) = (Tensor::randn(0f32, 1.0, 5, &dev)?, Tensor::randn(0f32, 1.0, 5, &dev)?);
        let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let two_ops = (rms_norm_channels(&x, Some(&w), Some(&b), 1e-5)? + &r)?;
        assert_eq!(bits(&rms_norm_channels_add(&x, Some(&w), Some(&b), 1e-5, Some(&r))?), bits(&two_ops));
        // Off the f32 CPU pass (bf16 here) the generic path: exactly the two ops.
        let h = |t: &Tensor| t.to_dtype(DType::BF16).unwrap();
        let generic = rms_norm_channels_add(&h(&x), Some(&h(&w)), Some(&h(&b)), 1e-5, Some(&h(&r)))?;
        let two_ops16 = (rms_norm_channels(&h(&x), Some(&h(&w)), Some(&h(&b)), 1e-5)? + h(&r))?;
        assert_eq!(bits(&generic.to_dtype(DType::F32)?), bits(&two_ops16.to_dtype(DType::F32)?));
        assert!(max_diff(&generic.to_dtype(DType::F32)?, &two_ops) < 0.1, "bf16 near f32");
        assert!(rms_norm_channels_add(&x, Some(&w), Some(&b), 1e-5, Some(&r.narrow(3, 0, 8)?)).is_err(), "a residual of another shape");
        Ok(())
    }

    #[test]
    fn pixel_shuffle_matches_repeat_interleave_then_shuffle() -> Result<()> {
        let dev = Device::Cpu;
        for &(b, cin, h, w, r, rep) in &[(2, 8, 3, 4, 2, 1), (1, 4, 2, 3, 2, 2), (1, 3, 2, 2, 2, 4), (1, 9, 2, 2, 3, 1)] {
            let x = Tensor::randn(0f32, 1.0, (b, cin, h, w), &dev)?;
            let got = pixel_shuffle(&x, r, rep)?;
            // Reference by explicit indices.
            let xv = x.flatten_all()?.to_vec1::<f32>()?;
            let cout = cin * rep / (r * r);
            let mut want = vec![0f32; b * cout * h * r * w * r];
            for n in 0..b {
                for c in 0..cout {
                    for oy in 0..h * r {
                        for ox in 0..w * r {
                            let k = c * r * r + (oy % r) * r + ox % r;
                            want[((n * cout + c) * h * r + oy) * w * r + ox] = xv[((n * cin + k / rep) * h + oy / r) * w + ox / r];
                        }
                    }
                }
            }
            let want = Tensor::from_vec(want, (b, cout, h * r, w * r), &dev)?;
            assert_eq!(max_diff(&got, &want), 0.0);
        }
        Ok(())
    }

    #[test]
    fn pixel_unshuffle_group_mean_matches_definition() -> Result<()> {
        let dev = Device::Cpu;
        for &(b, c, h, w, r, g) in &[(2, 2, 4, 6, 2, 1), (1, 4, 4, 4, 2, 2), (1, 3, 4, 2, 2, 6)] {
            let x = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev)?;
            let got = pixel_unshuffle(&x, r, g)?;
            let xv = x.flatten_all()?.to_vec1::<f32>()?;
            let (ho, wo, cout) = (h / r, w / r, c * r * r / g);
            let mut want = vec![0f32; b * cout * ho * wo];
            for n in 0..b {
                for o in 0..cout {
                    for y in 0..ho {
                        for xx in 0..wo {
                            let mut s = 0f32;
                            for k in o * g..(o + 1) * g {
                                let (ci, i, j) = (k / (r * r), (k / r) % r, k % r);
                                s += xv[((n * c + ci) * h + y * r + i) * w + xx * r + j];
                            }
                            want[((n * cout + o) * ho + y) * wo + xx] = s / g as f32;
                        }
                    }
                }
            }
            let want = Tensor::from_vec(want, (b, cout, ho, wo), &dev)?;
            assert!(max_diff(&got, &want) < 1e-6);
        }
        Ok(())
    }
}
