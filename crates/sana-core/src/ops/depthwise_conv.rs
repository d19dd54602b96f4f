//! Depthwise k×k convolution, stride 1, "same" zero padding (k odd).
//! PyTorch: `nn.Conv2d(C, C, k, padding=k // 2, groups=C)`.
//! candle's grouped conv runs one small conv per group; for 5·C channels that is thousands of calls.

use super::{bias_or_zeros, fastmath, is_cpu_f32, with_cpu_f32};
use crate::{ensure_arg, Result};
use candle_core::Tensor;
use rayon::prelude::*;

/// x: [B, C, H, W], weight: [C, 1, k, k], bias: [C] → [B, C, H, W].
pub fn depthwise_conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (wc, one, kh, kw) = weight.dims4()?;
    ensure_arg!(wc == c && one == 1 && kh == kw && kh % 2 == 1, "weight",
        "depthwise weight must be [{c}, 1, k, k] with odd k, got {:?}", weight.dims());
    #[cfg(feature = "cuda")]
    if super::is_cuda_kernel_dtype(&[x]) {
        return super::cuda::depthwise_conv2d(x, weight, bias, false);
    }
    if !(is_cpu_f32(x) && is_cpu_f32(weight)) {
        let y = x.conv2d(weight, kh / 2, 1, 1, c)?;
        return Ok(match bias {
            Some(bias) => y.broadcast_add(&bias.reshape((1, c, 1, 1))?)?,
            None => y,
        });
    }
    let bias_v = bias_or_zeros(bias, c)?;
    let out = with_cpu_f32(weight, |wv| {
        with_cpu_f32(x, |xs| {
            let mut out = vec![0f32; b * c * h * w];
            out.par_chunks_mut(h * w).enumerate().for_each(|(bc, o)| {
                let ch = bc % c;
                let mut padded = vec![0f32; (h + kh - 1) * (w + kh - 1)];
                pad_plane(&xs[bc * h * w..(bc + 1) * h * w], w, kh / 2, &mut padded, |src, dst| dst.copy_from_slice(src));
                conv_plane(&padded, &wv[ch * kh * kh..(ch + 1) * kh * kh], bias_v[ch], h, w, kh, o);
            });
            out
        })
    })??;
    Ok(Tensor::from_vec(out, (b, c, h, w), x.device())?)
}

/// GLUMBConv's middle: depthwise conv, then `value, gate = y.chunk(2, dim=1)`; `value · silu(gate)`.
/// x: [B, 2C, H, W], weight: [2C, 1, k, k], bias: [2C] → [B, C, H, W]. On CUDA one fused kernel (the
/// 2C-channel conv output is never stored); elsewhere [`depthwise_conv2d`] then the product.
pub fn depthwise_conv2d_glu(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let c2 = x.dim(1)?;
    ensure_arg!(c2 % 2 == 0, "x", "GLU needs an even channel count, got {c2}");
    #[cfg(feature = "cuda")]
    if super::is_cuda_kernel_dtype(&[x]) {
        let (wc, one, kh, kw) = weight.dims4()?;
        ensure_arg!(wc == c2 && one == 1 && kh == kw && kh % 2 == 1, "weight",
            "depthwise weight must be [{c2}, 1, k, k] with odd k, got {:?}", weight.dims());
        return super::cuda::depthwise_conv2d(x, weight, bias, true);
    }
    let y = depthwise_conv2d(x, weight, bias)?;
    let c = c2 / 2;
    Ok((y.narrow(1, 0, c)? * y.narrow(1, c, c)?.silu()?)?)
}

/// GLUMBConv's activation and middle as one op: `depthwise_conv2d_glu(silu(x), weight, bias)`.
/// On the CPU (f32) each output channel is one task that applies SiLU to its two input planes, convolves
/// them and writes `value · silu(gate)`: the SiLU'd input and the 2C-channel conv output (each as large
/// as x) never exist. Elsewhere: `x.silu()`, then [`depthwise_conv2d_glu`].
pub fn silu_depthwise_conv2d_glu(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    silu_depthwise_conv2d_glu_with_input_bias(x, None, weight, bias)
}

/// The Mix-FFN's middle with the expand 1×1 conv's bias folded in: `depthwise_conv2d_glu(silu(x +
/// input_bias), weight, bias)`, input_bias [2C] or none. On CUDA with `SANA_CUDA_FUSED=mixffn` one kernel
/// (ops/cuda/depthwise_conv.rs: neither the biased nor the SiLU'd 2C-channel tensor is stored); on the
/// CPU (f32) the loop of [`silu_depthwise_conv2d_glu`] after adding the bias; elsewhere candle ops.
pub fn silu_depthwise_conv2d_glu_with_input_bias(x: &Tensor, input_bias: Option<&Tensor>, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (b, c2, h, w) = x.dims4()?;
    let (wc, one, kh, kw) = weight.dims4()?;
    ensure_arg!(c2 % 2 == 0, "x", "GLU needs an even channel count, got {c2}");
    ensure_arg!(wc == c2 && one == 1 && kh == kw && kh % 2 == 1, "weight",
        "depthwise weight must be [{c2}, 1, k, k] with odd k, got {:?}", weight.dims());
    if let Some(t) = input_bias {
        ensure_arg!(t.elem_count() == c2, "input_bias", "expected {c2} values, got shape {:?}", t.dims());
    }
    #[cfg(feature = "cuda")]
    if super::cuda::fused(super::cuda::Fused::MixFfn) && super::is_cuda_kernel_dtype(&[x]) {
        return super::cuda::silu_depthwise_conv2d_glu(x, input_bias, weight, bias);
    }
    let biased;
    let x = match input_bias {
        Some(t) => {
            biased = x.broadcast_add(&t.to_dtype(x.dtype())?.reshape((1, c2, 1, 1))?)?;
            &biased
        }
        None => x,
    };
    if !(is_cpu_f32(x) && is_cpu_f32(weight)) {
        return depthwise_conv2d_glu(&x.silu()?, weight, bias);
    }
    let c = c2 / 2;
    let bias_v = bias_or_zeros(bias, c2)?;
    let (hw, kk) = (h * w, kh * kh);
    let out = with_cpu_f32(weight, |wv| with_cpu_f32(x, |xs| {
        let mut out = vec![0f32; b * c * hw];
        out.par_chunks_mut(hw).enumerate().for_each(|(bc, o)| {
            let (n, ch) = (bc / c, bc % c);
            let plane = |k: usize| &xs[(n * c2 + k) * hw..(n * c2 + k + 1) * hw];
            let (mut act, mut gate) = (vec![0f32; (h + kh - 1) * (w + kh - 1)], vec![0f32; hw]);
            // gate = conv(silu(x[C + ch])), then o = conv(silu(x[ch])) · silu(gate).
            pad_plane(plane(c + ch), w, kh / 2, &mut act, fastmath::silu_into);
            conv_plane(&act, &wv[(c + ch) * kk..(c + ch + 1) * kk], bias_v[c + ch], h, w, kh, &mut gate);
            pad_plane(plane(ch), w, kh / 2, &mut act, fastmath::silu_into);
            conv_plane(&act, &wv[ch * kk..(ch + 1) * kk], bias_v[ch], h, w, kh, o);
            fastmath::mul_silu_in_place(o, &gate);
        });
        out
    }))??;
    Ok(Tensor::from_vec(out, (b, c, h, w), x.device())?)
}

/// Write `f(row)` of each row of an h×w plane into the interior of `padded`, a plane with a zero border of
/// `r` on every side (rows of w + 2r), so that every tap of [`conv_plane`] reads whole rows: at 32×32,
/// clipped row ends were a scalar tail on two thirds of the taps.
fn pad_plane(src: &[f32], w: usize, r: usize, padded: &mut [f32], f: impl Fn(&[f32], &mut [f32])) {
    let wp = w + 2 * r;
    for (y, row) in src.chunks_exact(w).enumerate() {
        f(row, &mut padded[(y + r) * wp + r..(y + r) * wp + r + w]);
    }
}

fastmath::dispatch!(
    /// One channel plane over its zero-bordered input (see [`pad_plane`]; rows of w + ks − 1): every tap
    /// is a whole-row axpy. Compiled for AVX2 where the CPU has it (the crate's baseline is SSE2).
    conv_plane, (xp: &[f32], k: &[f32], bias: f32, h: usize, w: usize, ks: usize, out: &mut [f32]), {
    let wp = w + ks - 1;
    out.fill(bias);
    for dy in 0..ks {
        for dx in 0..ks {
            let kv = k[dy * ks + dx];
            for y in 0..h {
                let irow = &xp[(y + dy) * wp + dx..(y + dy) * wp + dx + w];
                for (o, i) in out[y * w..(y + 1) * w].iter_mut().zip(irow) {
                    *o += kv * i;
                }
            }
        }
    }
});

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn naive(x: &[f32], wt: &[f32], bias: &[f32], b: usize, c: usize, h: usize, w: usize, k: usize) -> Vec<f32> {
        let r = k as isize / 2;
        let mut out = vec![0f32; b * c * h * w];
        for n in 0..b {
            for ch in 0..c {
                for y in 0..h as isize {
                    for xx in 0..w as isize {
                        let mut s = bias[ch] as f64;
                        for dy in 0..k as isize {
                            for dx in 0..k as isize {
                                let (iy, ix) = (y + dy - r, xx + dx - r);
                                if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                                    s += (wt[ch * k * k + (dy * k as isize + dx) as usize]
                                        * x[((n * c + ch) * h + iy as usize) * w + ix as usize]) as f64;
                                }
                            }
                        }
                        out[((n * c + ch) * h + y as usize) * w + xx as usize] = s as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_naive_reference_and_candle() -> Result<()> {
        for &(b, c, h, w, k) in &[(2, 3, 5, 7, 3), (1, 4, 1, 1, 3), (1, 2, 6, 4, 5), (1, 1, 2, 9, 5)] {
            let dev = Device::Cpu;
            let x = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev)?;
            let wt = Tensor::randn(0f32, 1.0, (c, 1, k, k), &dev)?;
            let bias = Tensor::randn(0f32, 1.0, c, &dev)?;
            let got = depthwise_conv2d(&x, &wt, Some(&bias))?.flatten_all()?.to_vec1::<f32>()?;
            let want = naive(
                &x.flatten_all()?.to_vec1()?, &wt.flatten_all()?.to_vec1()?, &bias.to_vec1()?, b, c, h, w, k,
            );
            let candle = x.conv2d(&wt, k / 2, 1, 1, c)?.broadcast_add(&bias.reshape((1, c, 1, 1))?)?;
            let candle = candle.flatten_all()?.to_vec1::<f32>()?;
            for i in 0..got.len() {
                assert!((got[i] - want[i]).abs() < 1e-4, "{:?} at {i}: {} vs {}", (b, c, h, w, k), got[i], want[i]);
                assert!((candle[i] - want[i]).abs() < 1e-4);
            }
        }
        Ok(())
    }

    #[test]
    fn glu_is_value_times_silu_gate() -> Result<()> {
        let dev = Device::Cpu;
        let (b, c, h, w) = (2, 6, 4, 5);
        let x = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev)?;
        let wt = Tensor::randn(0f32, 1.0, (c, 1, 3, 3), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, c, &dev)?;
        let y = depthwise_conv2d(&x, &wt, Some(&bias))?;
        let want = (y.narrow(1, 0, c / 2)? * candle_core::Tensor::silu(&y.narrow(1, c / 2, c / 2)?)?)?;
        let got = depthwise_conv2d_glu(&x, &wt, Some(&bias))?;
        assert_eq!(got.dims(), &[b, c / 2, h, w]);
        assert_eq!((got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?, 0.0);
        assert!(depthwise_conv2d_glu(&x.narrow(1, 0, 5)?, &wt.narrow(0, 0, 5)?, None).is_err());
        Ok(())
    }

    #[test]
    fn silu_glu_fused_matches_silu_then_glu() -> Result<()> {
        let dev = Device::Cpu;
        for &(b, c, h, w, k) in &[(2, 6, 4, 5, 3), (1, 4, 1, 1, 3), (1, 8, 7, 3, 5)] {
            let x = (Tensor::randn(0f32, 1.0, (b, c, h, w), &dev)? * 3.0)?;
            let wt = Tensor::randn(0f32, 1.0, (c, 1, k, k), &dev)?;
            let bias = Tensor::randn(0f32, 1.0, c, &dev)?;
            for bias in [Some(&bias), None] {
                let want = depthwise_conv2d_glu(&x.silu()?, &wt, bias)?;
                let got = silu_depthwise_conv2d_glu(&x, &wt, bias)?;
                assert_eq!(got.dims(), &[b, c / 2, h, w]);
                // Relative to the largest output (values reach ≈ 50; SiLU's exp is within 2 ulp of libm's).
                let scale = want.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?.max(1.0);
                let err = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()? / scale;
                assert!(err < 1e-6, "{:?}: relative error {err}", (b, c, h, w, k));
            }
        }
        Ok(())
    }

    #[test]
    fn input_bias_is_added_before_the_silu() -> Result<()> {
        let dev = Device::Cpu;
        let (b, c, h, w, k) = (2, 6, 4, 5, 3);
        let x = (Tensor::randn(0f32, 1.0, (b, c, h, w), &dev)? * 3.0)?;
        let wt = Tensor::randn(0f32, 1.0, (c, 1, k, k), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, c, &dev)?;
        let ib = Tensor::randn(0f32, 1.0, c, &dev)?;
        let got = silu_depthwise_conv2d_glu_with_input_bias(&x, Some(&ib), &wt, Some(&bias))?.flatten_all()?.to_vec1::<f32>()?;
        // Naive: silu(x + ib) per element in f64, the naive conv, then value · silu(gate).
        let (xv, ibv) = (x.flatten_all()?.to_vec1::<f32>()?, ib.to_vec1::<f32>()?);
        let act: Vec<f32> = xv.iter().enumerate().map(|(i, v)| {
            let z = (*v + ibv[(i / (h * w)) % c]) as f64;
            (z / (1.0 + (-z).exp())) as f32
        }).collect();
        let y = naive(&act, &wt.flatten_all()?.to_vec1()?, &bias.to_vec1()?, b, c, h, w, k);
        let hw = h * w;
        for n in 0..b {
            for ch in 0..c / 2 {
                for p in 0..hw {
                    let (v, g) = (y[(n * c + ch) * hw + p] as f64, y[(n * c + c / 2 + ch) * hw + p] as f64);
                    let want = v * g / (1.0 + (-g).exp());
                    let got = got[(n * (c / 2) + ch) * hw + p] as f64;
                    assert!((got - want).abs() < 1e-4 * want.abs().max(1.0), "[{n}, {ch}, {p}]: {got} vs {want}");
                }
            }
        }
        Ok(())
    }
}
