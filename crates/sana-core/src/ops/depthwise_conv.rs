//! Depthwise k×k convolution, stride 1, "same" zero padding (k odd).
//! PyTorch: `nn.Conv2d(C, C, k, padding=k // 2, groups=C)`.
//! candle's grouped conv runs one small conv per group; for 5·C channels that is thousands of calls.

use super::{bias_or_zeros, fastmath, is_cpu_f32, with_cpu_f32, DstPtr};
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

/// Check a GLU's depthwise weight against its input's 2C channels: [2C, 1, k, k] with k odd and 2C even.
/// Returns k.
fn glu_kernel_size(c2: usize, weight: &Tensor) -> Result<usize> {
    let (wc, one, kh, kw) = weight.dims4()?;
    ensure_arg!(c2 % 2 == 0, "x", "GLU needs an even channel count, got {c2}");
    ensure_arg!(wc == c2 && one == 1 && kh == kw && kh % 2 == 1, "weight",
        "depthwise weight must be [{c2}, 1, k, k] with odd k, got {:?}", weight.dims());
    Ok(kh)
}

/// GLUMBConv's middle: depthwise conv, then `value, gate = y.chunk(2, dim=1)`; `value · silu(gate)`.
/// x: [B, 2C, H, W], weight: [2C, 1, k, k], bias: [2C] → [B, C, H, W]. On CUDA one fused kernel (the
/// 2C-channel conv output is never stored); elsewhere [`depthwise_conv2d`] then the product.
pub fn depthwise_conv2d_glu(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let c2 = x.dim(1)?;
    ensure_arg!(c2 % 2 == 0, "x", "GLU needs an even channel count, got {c2}");
    #[cfg(feature = "cuda")]
    if super::is_cuda_kernel_dtype(&[x]) {
        glu_kernel_size(c2, weight)?;
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
    let kh = glu_kernel_size(c2, weight)?;
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

/// [`silu_depthwise_conv2d_glu`] channels-last, the Mix-FFN's middle on the CPU: x [B, H, W, 2C] (the
/// expand GEMM's token-major output, bias included) → [B, H, W, C]. So both of the Mix-FFN's 1×1 convs are
/// token-major GEMMs over every token of the CFG batch, and no plane-major copy exists. Each output
/// value is the planar op's sum, term for term in the same order (bias, then the taps row-major). Off
/// the CPU (or not f32): a permute around the planar op.
pub fn silu_depthwise_conv2d_glu_nhwc(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (b, h, w, c2) = x.dims4()?;
    let kh = glu_kernel_size(c2, weight)?;
    if !(is_cpu_f32(x) && is_cpu_f32(weight)) {
        let planar = silu_depthwise_conv2d_glu(&x.permute((0, 3, 1, 2))?.contiguous()?, weight, bias)?;
        return Ok(planar.permute((0, 2, 3, 1))?.contiguous()?);
    }
    let (c, kk) = (c2 / 2, kh * kh);
    let bias_v = bias_or_zeros(bias, c2)?;
    // Taps outermost ([tap][2C]), so that a tap's weights for a block of channels are contiguous.
    let taps = with_cpu_f32(weight, |wv| (0..kk * c2).map(|i| wv[(i % c2) * kk + i / c2]).collect::<Vec<f32>>())?;
    let blocks = c.div_ceil(NHWC_CHANNELS);
    let out = with_cpu_f32(x, |xs| {
        // Not zeroed first (a 24 MB pass at 1024²): the tasks write every value before set_len.
        let len = b * h * w * c;
        let mut out: Vec<f32> = Vec::with_capacity(len);
        let dst = DstPtr(out.as_mut_ptr());
        (0..b * blocks).into_par_iter().for_each(|task| {
            let (n, c0) = (task / blocks, task % blocks * NHWC_CHANNELS);
            let cb = NHWC_CHANNELS.min(c - c0);
            let image = &xs[n * h * w * c2..(n + 1) * h * w * c2];
            glu_channel_block(image, &taps, &bias_v, [h, w, c2, kh], [c0, cb], &mut |y, row| {
                for (x, px) in row.chunks_exact(cb).enumerate() {
                    // SAFETY: task (n, c0) alone writes channels c0..c0 + cb of image n's pixels, all
                    // inside out's capacity.
                    unsafe { std::ptr::copy_nonoverlapping(px.as_ptr(), dst.get().add((n * h * w + y * w + x) * c + c0), cb) };
                }
            });
        });
        // SAFETY: the (image, channel block, row, pixel) writes above cover all len values.
        unsafe { out.set_len(len) };
        out
    })?;
    Ok(Tensor::from_vec(out, (b, h, w, c), x.device())?)
}

/// Output channels per task of [`silu_depthwise_conv2d_glu_nhwc`]: its k rows of SiLU'd value and gate
/// input (2 · 3 · 34 pixels · 256 channels at 32×32, 209 KB) stay in L2, and each pixel's read is 1 KB
/// contiguous.
const NHWC_CHANNELS: usize = 256;

/// Channels c0..c0 + cb of one image's GLU output, handed to `emit` row by row (y, [W][cb]): value =
/// conv(silu(x[c0..])), gate = conv(silu(x[C + c0..])), value · silu(gate). SiLU'd input rows are kept
/// in a ring of k zero-bordered rows per half, each row computed once.
fn glu_channel_block(image: &[f32], taps: &[f32], bias: &[f32], [h, w, c2, kh]: [usize; 4], [c0, cb]: [usize; 2], emit: &mut dyn FnMut(usize, &[f32])) {
    let (c, r, wp) = (c2 / 2, kh / 2, w + kh - 1);
    let mut ring = [vec![0f32; kh * wp * cb], vec![0f32; kh * wp * cb]]; // value, gate
    let slot = |row: usize| (row % kh) * wp * cb; // padded row index (image row + r)
    let (mut value, mut gate) = (vec![0f32; w * cb], vec![0f32; w * cb]);
    // Fill padded row `pr` (image row pr − r, or zeros outside the image) of both rings.
    let fill = |ring: &mut [Vec<f32>; 2], pr: usize| {
        for (half, ring) in ring.iter_mut().enumerate() {
            let row = &mut ring[slot(pr)..slot(pr) + wp * cb];
            match pr.checked_sub(r).filter(|&y| y < h) {
                Some(y) => {
                    for x in 0..w {
                        // The pixels' channel blocks lie c2 values apart, past what the hardware
                        // prefetcher follows: fetch the next pixel's block while this one is computed.
                        #[cfg(target_arch = "x86_64")]
                        if let Some(next) = image.get((y * w + x + 1) * c2 + half * c + c0..) {
                            for line in (0..cb.min(next.len())).step_by(16) {
                                // SAFETY: a prefetch only hints; the address lies inside `image`.
                                unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(next.as_ptr().add(line).cast()) };
                            }
                        }
                        let src = &image[(y * w + x) * c2 + half * c + c0..][..cb];
                        fastmath::silu_into(src, &mut row[(x + r) * cb..(x + r + 1) * cb]);
                    }
                }
                None => row.fill(0.0),
            }
        }
    };
    (0..kh - 1).for_each(|pr| fill(&mut ring, pr));
    for y in 0..h {
        fill(&mut ring, y + kh - 1);
        conv_row_nhwc(&ring[0], y, taps, c2, &bias[c0..c0 + cb], w, kh, c0, &mut value);
        conv_row_nhwc(&ring[1], y, taps, c2, &bias[c + c0..c + c0 + cb], w, kh, c + c0, &mut gate);
        fastmath::mul_silu_in_place(&mut value, &gate);
        emit(y, &value);
    }
}

fastmath::dispatch!(
    /// Output row `y` of a channels-last depthwise conv over `cb` channels: out[x] = bias + Σ taps, each
    /// tap (dy, dx) `taps[(dy·k + dx)·c2 + ch0 ..]` times pixel x + dx of padded row y + dy, which the ring
    /// (k rows of (w + k − 1) · cb) holds in slot (y + dy) % k.
    conv_row_nhwc,
    (ring: &[f32], y: usize, taps: &[f32], c2: usize, bias: &[f32], w: usize, ks: usize, ch0: usize, out: &mut [f32]),
    {
    let cb = bias.len();
    let row_len = (w + ks - 1) * cb;
    // Where each tap row's ring slot starts: once per output row, not a division per tap and channel.
    let slots: Vec<usize> = (0..ks).map(|dy| (y + dy) % ks * row_len).collect();
    for (x, o) in out.chunks_exact_mut(cb).enumerate().take(w) {
        // Tap (dy, dx)'s weights and inputs from channel ch on.
        let tap = |dy: usize, dx: usize, ch: usize| (&taps[(dy * ks + dx) * c2 + ch0 + ch..], &ring[slots[dy] + (x + dx) * cb + ch..]);
        // L channels at a time, their sums held in registers through all k² taps (a tap at a time over
        // the whole block would load and store the output once per tap); 32 = 4 independent vectors.
        let ch = taps_sum::<64>(0, cb, ks, bias, &tap, o);
        let ch = taps_sum::<32>(ch, cb, ks, bias, &tap, o);
        let ch = taps_sum::<8>(ch, cb, ks, bias, &tap, o);
        taps_sum::<1>(ch, cb, ks, bias, &tap, o);
    }
});

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

/// Output channels `ch..` of one pixel in steps of L while L fit below `cb`: bias, then each tap's
/// product, in order. Returns the first channel not done. Inlined into [`conv_row_nhwc`]'s AVX2 body.
#[inline(always)]
fn taps_sum<'a, const L: usize>(mut ch: usize, cb: usize, ks: usize, bias: &[f32], tap: &impl Fn(usize, usize, usize) -> (&'a [f32], &'a [f32]), o: &mut [f32]) -> usize {
    while ch + L <= cb {
        // Fixed-size arrays: LLVM keeps `acc` in registers.
        let mut acc: [f32; L] = bias[ch..ch + L].try_into().expect("L values");
        for dy in 0..ks {
            for dx in 0..ks {
                let (kv, iv) = tap(dy, dx, ch);
                let (kv, iv): (&[f32; L], &[f32; L]) = (kv[..L].try_into().expect("L"), iv[..L].try_into().expect("L"));
                for l in 0..L {
                    acc[l] += kv[l] * iv[l];
                }
            }
        }
        o[ch..ch + L].copy_from_slice(&acc);
        ch += L;
    }
    ch
}

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
    fn channels_last_glu_equals_the_planar_op() -> Result<()> {
        // Channel blocks past NHWC_CHANNELS with a partial last one, k = 3 and 5, a 1×1 image; the sums
        // are the planar op's term for term, so the results are equal bit for bit.
        let dev = Device::Cpu;
        for &(b, c, h, w, k) in &[(2, 2 * 300, 4, 5, 3), (1, 4, 1, 1, 3), (1, 8, 7, 3, 5)] {
            let x = (Tensor::randn(0f32, 1.0, (b, c, h, w), &dev)? * 3.0)?;
            let wt = Tensor::randn(0f32, 1.0, (c, 1, k, k), &dev)?;
            let bias = Tensor::randn(0f32, 1.0, c, &dev)?;
            for bias in [Some(&bias), None] {
                // On every vector tier this CPU has, equal to the baseline's planar op bit for bit.
                let want = fastmath::with_tier(fastmath::Tier::Base, || silu_depthwise_conv2d_glu(&x, &wt, bias))?.permute((0, 2, 3, 1))?;
                let want = want.flatten_all()?.to_vec1::<f32>()?;
                for tier in fastmath::tiers_here() {
                    let (planar, got) = fastmath::with_tier(tier, || -> Result<_> {
                        Ok((silu_depthwise_conv2d_glu(&x, &wt, bias)?.permute((0, 2, 3, 1))?, silu_depthwise_conv2d_glu_nhwc(&x.permute((0, 2, 3, 1))?.contiguous()?, &wt, bias)?))
                    })?;
                    assert_eq!(got.dims(), &[b, h, w, c / 2]);
                    for got in [got, planar] {
                        let got = got.flatten_all()?.to_vec1::<f32>()?;
                        assert!(got.iter().zip(&want).all(|(g, w)| g == w), "{tier:?} {:?}", (b, c, h, w, k));
                    }
                }
            }
        }
        assert!(silu_depthwise_conv2d_glu_nhwc(&Tensor::zeros((1, 2, 2, 6), candle_core::DType::F32, &dev)?, &Tensor::zeros((4, 1, 3, 3), candle_core::DType::F32, &dev)?, None).is_err());
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
