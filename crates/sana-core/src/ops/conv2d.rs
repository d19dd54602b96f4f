//! Dense k×k convolution with "same"-style zero padding (k / 2), optional stride and an optional fused
//! nearest-neighbour upsample of the input, computed a band of output rows at a time: 3×3 stride 1
//! between wide layers by Winograd F(2×2, 3×3) ([`super::winograd`]), any other stride 1 (the up blocks,
//! the image-side convs) as one GEMM call summing all taps over a channels-last band ([`conv_taps`]),
//! other strides as im2col + GEMM.
//!
//! PyTorch: `nn.Conv2d(Cin, Cout, k, stride, padding=k // 2)(F.interpolate(x, scale_factor=up, mode="nearest"))`.
//!
//! Why not candle's `conv2d`: it materialises the whole im2col matrix ([H·W, Cin·k²]), which for a DC-AE
//! decoder stage at 1024² (Cin 128) is 4.8 GB. Here the buffers are per band (under [`TAP_BAND_BYTES`]
//! or [`BAND_BYTES`]), and the ×2 upsample of DC-AE's up blocks never exists as a tensor: the stride-1
//! path computes it as up² convs of the source, one per output phase (see `Phases`), the im2col path
//! reads the source pixel `(y / up, x / up)` directly.

use super::gemm::{gemm_acc, gemm_sum, Strided};
use super::{bias_or_zeros, is_cpu_f32, with_cpu_f32};
use crate::{ensure_arg, Result};
use candle_core::Tensor;
use rayon::prelude::*;

/// Upper bound for one band's im2col buffer.
pub const BAND_BYTES: usize = 32 << 20;

/// Upper bound for each of the per-tap path's input and output band buffers. The GEMM keeps its own
/// blocks in cache, so long bands buy no speed; 16 MB keeps both buffers in the allocator's block cache
/// (at 128 MB a 512² decode peaked 0.3 GB higher at the same speed).
pub const TAP_BAND_BYTES: usize = 16 << 20;

/// x: [B, Cin, H, W], weight: [Cout, Cin, k, k] (k odd), bias: [Cout]
/// → [B, Cout, Ho, Wo] with Ho = (H·up + 2·(k/2) − k) / stride + 1 (likewise Wo).
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, stride: usize, up: usize) -> Result<Tensor> {
    conv2d_then(x, weight, bias, stride, up, Then::Nothing)
}

/// What [`conv2d_then`] applies to the conv's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    Nothing,
    /// SiLU, as `F.silu(conv(x))`.
    Silu,
}

/// [`conv2d`], then `then`. On the CPU in f32 the activation runs in place on the conv's own output
/// (the same bits as a separate op): no second tensor, which at DC-AE's 1024² stage is 512 MiB of
/// fresh pages (131 k page faults) per ResBlock.
pub fn conv2d_then(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, stride: usize, up: usize, then: Then) -> Result<Tensor> {
    let (b, cin, h, w) = x.dims4()?;
    let (cout, wcin, kh, kw) = weight.dims4()?;
    ensure_arg!(wcin == cin && kh == kw && kh % 2 == 1, "weight",
        "conv weight must be [Cout, {cin}, k, k] with odd k, got {:?}", weight.dims());
    ensure_arg!(stride >= 1 && up >= 1, "stride", "stride ({stride}) and upsample factor ({up}) must be ≥ 1");
    let (k, pad) = (kh, kh / 2);
    let (hu, wu) = (h * up, w * up);
    ensure_arg!(hu + 2 * pad >= k && wu + 2 * pad >= k, "x", "input {h}×{w} is smaller than the kernel");
    let (ho, wo) = ((hu + 2 * pad - k) / stride + 1, (wu + 2 * pad - k) / stride + 1);
    // A bf16 model multiplies in bf16 where the CPU has AMX or vdpbf16ps (as its Linears do); f32 and f16
    // stay exact.
    let bf16 = x.device().is_cpu() && weight.dtype() == candle_core::DType::BF16 && super::sgemm::bf16_rhs_rounds_lhs();
    // A CPU weight kept in bf16/f16 is widened for the f32 GEMM (a transient copy of this layer's weight).
    let weight = &if x.device().is_cpu() { super::cpu_weight(weight)? } else { weight.clone() };
    if !(is_cpu_f32(x) && is_cpu_f32(weight)) {
        let xu = if up > 1 { x.upsample_nearest2d(hu, wu)? } else { x.clone() };
        let y = xu.conv2d(weight, pad, stride, 1, 1)?;
        let y = match bias {
            Some(bias) => y.broadcast_add(&bias.reshape((1, cout, 1, 1))?)?,
            None => y,
        };
        return match then {
            Then::Nothing => Ok(y),
            Then::Silu => super::activation::silu(&y),
        };
    }
    let bias_v = bias_or_zeros(bias, cout)?;
    // The weights are read in place ([Cout, Cin·k·k] row-major), not copied per call.
    let mut out = with_cpu_f32(weight, |ws| {
        with_cpu_f32(x, |xs| {
            // Not in bf16 products on AMX: there the direct tap sum was faster (512² decode 8.2–9.1 s against
            // 9.9–10.7 s, interleaved) despite 2.25× the multiply-adds, because each of Winograd's 16
            // products per band packs its B (the transformed input, k = Cin) for one use, and on the tile
            // unit that packing, not the arithmetic, sets the time. With vdpbf16ps (Zen 4) Winograd stays
            // ahead: 512² decode 11.2–11.8 s in bf16 products, 11.3–11.9 s in f32, 13.4–13.8 s as taps.
            let tile_unit = bf16 && super::sgemm::bf16_on_amx();
            if stride == 1 && k == 3 && up == 1 && !tile_unit && super::winograd::applies(cin, cout) {
                super::winograd::conv3x3(xs, ws, &bias_v, [b, cin, cout, h, w], bf16)
            } else if stride == 1 && k > 1 {
                conv_taps(xs, ws, &bias_v, [b, cin, cout, h, w, k], up, bf16)
            } else {
                conv_im2col(xs, ws, &bias_v, &Geometry { cin, h, w, k, pad, stride, up, wo }, [b, cout, ho], bf16)
            }
        })
    })??;
    if then == Then::Silu {
        out.par_chunks_mut(1 << 16).for_each(super::fastmath::silu_in_place);
    }
    Ok(Tensor::from_vec(out, (b, cout, ho, wo), x.device())?)
}

/// Any stride and upsample: banded im2col, each band's GEMM adding [Cout, kk] · cols into its block of
/// output rows in place (row stride Ho·Wo), over an output that starts as the bias. One column buffer
/// serves every band: no per-band allocation, page faults or copy of the GEMM result.
fn conv_im2col(xs: &[f32], ws: &[f32], bias: &[f32], geo: &Geometry, [b, cout, ho]: [usize; 3], bf16: bool) -> Vec<f32> {
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
            gemm_acc([cout, p, kk], (on, Strided::rows(y0 * wo, plane)), (ws, Strided::rows(0, kk)), (&cols, Strided::rows(0, p)), bf16);
        }
    }
    out
}

/// Stride 1: the convolution as k² GEMMs, one per tap, over a zero-padded, channels-last copy of a band
/// of input rows, with no column matrix. In the padded band (width Wp = W + 2·pad),
/// tap (ky, kx) of output pixel (y, x) reads padded pixel (y + ky)·Wp + x + kx; over the flat index
/// q = y·Wp + x that is the matrix [Q, Cin] starting `ky·Wp + kx` pixels in (the last 2·pad columns of
/// each row read across the row edge and are dropped). So each band is
/// `out_band[Q, Cout] = Σ_tap x_band[shifted Q, Cin] · Wt[tap][Cin, Cout]`, one GEMM call over all taps.
///
/// Why channels last: the shifted input is the GEMM's lhs, whose rows (one pixel's channels) are
/// contiguous; each thread packs its own block of them from cache with the register-transposing packer.
/// Pixels as the rhs (channels first) made every tap re-pack a Cin × 3072 block read across planes 64 KB
/// apart, on the shared packing path (10 % of a DC-AE decode, perf). The two band transposes cost one
/// pass over the band each, against k²·Cout multiply-adds per value.
///
/// With `up` > 1 (DC-AE's upsampling convs) the band holds source pixels and each of the up² output
/// phases is its own small conv over them ([`Phases`]): a 3×3 conv of a ×2 nearest upsample is four 2×2
/// convs of the source, 4/9 of the multiply-adds PyTorch spends on the upsampled image.
fn conv_taps(xs: &[f32], ws: &[f32], bias: &[f32], [b, cin, cout, sh, sw, k]: [usize; 6], up: usize, bf16: bool) -> Vec<f32> {
    let ph = Phases::new(k, up);
    let pad = ph.pad;
    // Output size (source × up); the band's rows and columns are source pixels.
    let (h, w) = (sh * up, sw * up);
    let wp = sw + 2 * pad;
    let band_rows = (TAP_BAND_BYTES / (4 * wp * cin.max(up * up * cout))).saturating_sub(2 * pad).clamp(1, sh);
    // Padded pixels per band: band_rows + 2·pad rows, + 2·pad + 1: the last term of the last (dropped)
    // columns reads up to 2·pad − 1 pixels past them (never written: zeros, or finite values of an earlier band).
    let xpix = (band_rows + 2 * pad) * wp + 2 * pad + 1;
    let mut out = vec![0f32; b * cout * h * w];
    let mut xband = vec![0f32; xpix * cin];
    // Band outputs of all phases: phase (py, px), band pixel q at ((py·Q + q)·up + px)·Cout, so one
    // band row of phase py holds output row up·y + py with its columns in order.
    let mut oband = vec![0f32; up * up * band_rows * wp * cout];
    let wt = ph.weights(ws, cin, cout);
    for n in 0..b {
        let xn = &xs[n * cin * sh * sw..(n + 1) * cin * sh * sw];
        let on = &mut out[n * cout * h * w..(n + 1) * cout * h * w];
        for y0 in (0..sh).step_by(band_rows) {
            let rows = band_rows.min(sh - y0);
            let q = rows * wp;
            // Band row r holds source row y0 + r − pad (zeros outside the image), shifted right by pad.
            xband[..(rows + 2 * pad) * wp * cin].par_chunks_mut(wp * cin).enumerate().for_each(|(r, dst)| {
                let iy = (y0 + r) as isize - pad as isize;
                if iy < 0 || iy as usize >= sh {
                    return dst.fill(0.0);
                }
                dst[..pad * cin].fill(0.0);
                dst[(pad + sw) * cin..].fill(0.0);
                transpose_rows(xn, [iy as usize * sw, sh * sw], dst, [pad * cin, cin], [cin, sw]);
            });
            let ob = &mut oband[..up * up * q * cout];
            // Each phase's terms in one call: each task keeps its block of the band's outputs in cache
            // through every term. lhs (q, ci) = xband[(q + oy·Wp + ox)·Cin + ci]; rhs (ci, co) = wt[..][ci][t][co].
            for (p, phase) in ph.phases.iter().enumerate() {
                let (py, px) = (p / up, p % up);
                let terms: Vec<_> = (phase.offsets.iter().enumerate())
                    .map(|(t, &(oy, ox))| (Strided::rows((oy * wp + ox) * cin, cin), Strided::rows((phase.weights * cin + t) * cout, phase.offsets.len() * cout)))
                    .collect();
                let d = Strided::rows((py * q * up + px) * cout, up * cout);
                gemm_sum([q, cout, cin], (&mut *ob, d), &xband, &wt, &terms, bf16);
            }
            // on[co, up·(y0 + y) + py, x] = ob[((py·Q + y·Wp)·up + x)·Cout + co] + bias[co], the dropped
            // columns skipped.
            on.par_chunks_mut(TRANSPOSE_BLOCK * h * w).enumerate().for_each(|(cb, planes)| {
                let cn = planes.len() / (h * w);
                for (y, py) in (0..rows).flat_map(|y| (0..up).map(move |py| (y, py))) {
                    let oy = up * (y0 + y) + py;
                    let src = [((py * q + y * wp) * up) * cout + cb * TRANSPOSE_BLOCK, cout];
                    transpose_rows(ob, src, planes, [oy * w, h * w], [w, cn]);
                    for (c, &bc) in bias[cb * TRANSPOSE_BLOCK..][..cn].iter().enumerate() {
                        planes[c * h * w + oy * w..][..w].iter_mut().for_each(|v| *v += bc);
                    }
                }
            });
        }
    }
    out
}

/// A k×k conv (padding k / 2) of an ×`up` nearest-upsampled image as up² convs of the source, one per
/// output phase (py, px) = (Y mod up, X mod up). Output row Y = up·y + py, tap ky reads upsampled row
/// Y + ky − k/2, which is source row y + ⌊(py + ky − k/2) / up⌋: taps with the same source offset act on the
/// same pixel, so their weights are summed once (at up = 2, k = 3: offsets {−1, 0} or {0, +1}, 2×2 per
/// phase). At up = 1 this is the plain conv: one phase, the k² taps in order, weights as they are.
struct Phases {
    k: usize,
    /// Source padding: the largest |offset|.
    pad: usize,
    phases: Vec<Phase>,
}

struct Phase {
    /// Per term, the padded source offset (oy + pad, ox + pad).
    offsets: Vec<(usize, usize)>,
    /// Terms of the phases before this one: its [Cin][terms][Cout] weights start `weights·Cin·Cout` into
    /// [`Phases::weights`].
    weights: usize,
    /// Per axis, the taps of each term's offset, indexed by term row (oy) and column (ox).
    taps: [Vec<Vec<usize>>; 2],
}

impl Phases {
    fn new(k: usize, up: usize) -> Self {
        // ⌊(p + kk − c) / up⌋ (c = k/2) without a negative numerator: (p + kk + up·c − c) / up − c.
        let c = k / 2;
        let off = |p: usize, kk: usize| ((p + kk + up * c - c) / up) as isize - c as isize;
        let pad = (0..up).flat_map(|p| (0..k).map(move |kk| (p, kk))).map(|(p, kk)| off(p, kk).unsigned_abs()).max().unwrap_or(0);
        // Per phase along one axis: the distinct offsets in order, each with its taps.
        let groups = |p: usize| {
            let mut g: Vec<(isize, Vec<usize>)> = Vec::new();
            for kk in 0..k {
                let o = off(p, kk);
                match g.last_mut() {
                    Some((last, taps)) if *last == o => taps.push(kk),
                    _ => g.push((o, vec![kk])),
                }
            }
            g
        };
        let mut phases = Vec::with_capacity(up * up);
        let mut start = 0;
        for py in 0..up {
            for px in 0..up {
                let (gy, gx) = (groups(py), groups(px));
                let shift = |o: isize| (o + pad as isize) as usize;
                let offsets = gy.iter().flat_map(|(oy, _)| gx.iter().map(move |(ox, _)| (shift(*oy), shift(*ox)))).collect::<Vec<_>>();
                let n = offsets.len();
                let taps = [gy.into_iter().map(|(_, t)| t).collect(), gx.into_iter().map(|(_, t)| t).collect()];
                phases.push(Phase { offsets, weights: start, taps });
                start += n;
            }
        }
        Phases { k, pad, phases }
    }

    /// All phases' weights from W [Cout, Cin·k²], each phase's laid out [Cin][terms][Cout], each term
    /// the sum of the taps (ky, kx) its offset collects.
    fn weights(&self, ws: &[f32], cin: usize, cout: usize) -> Vec<f32> {
        let (k, taps) = (self.k, self.k * self.k);
        // wt[ci][tap][co] = W[co, ci, tap]: W as [Cout, Cin·k²], transposed.
        let mut full = vec![0f32; taps * cin * cout];
        transpose_rows(ws, [0, cin * taps], &mut full, [0, cout], [cout, cin * taps]);
        if self.phases.len() == 1 {
            return full; // up = 1: one term per tap, in tap order
        }
        let total: usize = self.phases.iter().map(|p| p.offsets.len()).sum();
        let mut wt = vec![0f32; total * cin * cout];
        for ph in &self.phases {
            let terms = ph.offsets.len();
            let cols = ph.taps[1].len();
            let base = ph.weights * cin * cout;
            wt[base..base + terms * cin * cout].par_chunks_mut(terms * cout).enumerate().for_each(|(ci, dst)| {
                for (t, d) in dst.chunks_mut(cout).enumerate() {
                    for &ky in &ph.taps[0][t / cols] {
                        for &kx in &ph.taps[1][t % cols] {
                            let src = &full[(ci * taps + ky * k + kx) * cout..][..cout];
                            d.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                        }
                    }
                }
            });
        }
        wt
    }
}

/// Output planes per task of the band's output transpose (16 channels: one 64-byte line of a channels-last pixel).
const TRANSPOSE_BLOCK: usize = 16;

/// `dst[d0 + v·ds + u] = src[s0 + u·ss + v]` for u < nu, v < nv (`[nu, nv]` = `n`): rows of `src`
/// (contiguous along v) written as rows of `dst` (contiguous along u). With AVX2, 8×8 blocks are
/// transposed in registers, each load and store one 32-byte run: as plain loops the band transposes of
/// [`conv_taps`] were 14 % of a 128-channel conv.
pub(super) fn transpose_rows(src: &[f32], [s0, ss]: [usize; 2], dst: &mut [f32], [d0, ds]: [usize; 2], [nu, nv]: [usize; 2]) {
    if nu == 0 || nv == 0 {
        return;
    }
    assert!(s0 + (nu - 1) * ss + nv - 1 < src.len() && d0 + (nv - 1) * ds + nu - 1 < dst.len());
    let mut blocked = [0, 0]; // [u, v] extent done by 8×8 blocks
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        blocked = [nu / 8 * 8, nv / 8 * 8];
        // SAFETY: the CPU has AVX2; every block lies within the ranges checked above.
        unsafe { transpose_blocks_avx2(src, [s0, ss], dst, [d0, ds], blocked) };
    }
    // Whatever the blocks left: v past them for the blocked u, then every v of the other u.
    for u in 0..nu {
        for v in if u < blocked[0] { blocked[1]..nv } else { 0..nv } {
            dst[d0 + v * ds + u] = src[s0 + u * ss + v];
        }
    }
}

/// [`transpose_rows`] over `[nu, nv]`, both multiples of 8. Safety: AVX2, and the ranges lie in the slices.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose_blocks_avx2(src: &[f32], [s0, ss]: [usize; 2], dst: &mut [f32], [d0, ds]: [usize; 2], [nu, nv]: [usize; 2]) {
    use std::arch::x86_64::*;
    for u0 in (0..nu).step_by(8) {
        for v0 in (0..nv).step_by(8) {
            let r = std::array::from_fn(|a| _mm256_loadu_ps(src.as_ptr().add(s0 + (u0 + a) * ss + v0)));
            for (b, t) in super::sgemm::transpose8(r).iter().enumerate() {
                _mm256_storeu_ps(dst.as_mut_ptr().add(d0 + (v0 + b) * ds + u0), *t);
            }
        }
    }
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
    fn a_fused_silu_has_the_bits_of_a_separate_one() -> Result<()> {
        // Winograd (16 → 16), taps (k = 5) and im2col (stride 2) paths. (Off the f32 CPU it is the two
        // ops themselves; candle's CPU conv takes no half input to test that here.)
        let dev = Device::Cpu;
        for &(cin, cout, k, s) in &[(16, 16, 3, 1), (3, 8, 5, 1), (4, 6, 3, 2)] {
            let x = Tensor::randn(0f32, 1.0, (2, cin, 9, 11), &dev)?;
            let w = Tensor::randn(0f32, 0.3, (cout, cin, k, k), &dev)?;
            let b = Tensor::randn(0f32, 0.3, cout, &dev)?;
            let fused = conv2d_then(&x, &w, Some(&b), s, 1, Then::Silu)?.flatten_all()?.to_vec1::<f32>()?;
            let apart = super::super::activation::silu(&conv2d(&x, &w, Some(&b), s, 1)?)?.flatten_all()?.to_vec1::<f32>()?;
            assert!(fused.iter().zip(&apart).all(|(a, b)| a.to_bits() == b.to_bits()), "cin {cin} k {k} stride {s}");
        }
        Ok(())
    }

    #[test]
    fn matches_candle_conv_with_stride_and_upsample() -> Result<()> {
        let dev = Device::Cpu;
        // (b, cin, cout, h, w, k, stride, up)
        for &(b, cin, cout, h, w, k, s, up) in &[
            (2, 3, 5, 7, 6, 3, 1, 1),
            (1, 4, 2, 8, 6, 3, 2, 1),
            (1, 4, 3, 5, 7, 3, 2, 1),
            (2, 3, 4, 3, 5, 3, 1, 2),
            (1, 5, 3, 4, 3, 5, 1, 2),
            (1, 3, 2, 3, 4, 3, 1, 3),
            (1, 2, 3, 1, 1, 3, 1, 2),
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
    fn bf16_weights_multiply_in_bf16_on_a_bf16_kernel_and_exactly_elsewhere() -> Result<()> {
        // Every CPU path with bf16 weights (3×3 taps where f32 takes Winograd, upsampling phases, im2col at
        // stride 2 and 1×1) against an f64 conv of the same bf16 weight values, error relative to
        // Σ|x·w| per output: of bf16 size where products run in bf16 (AMX, vdpbf16ps: the input rounded to
        // bf16, and summed phase weights rounded again), of f32 size where the weights are widened exactly.
        use candle_core::DType;
        let dev = Device::Cpu;
        let amx = crate::ops::sgemm::bf16_rhs_rounds_lhs();
        for &(cin, cout, h, w, k, s, up) in &[(32, 24, 9, 10, 3, 1, 1), (20, 16, 5, 6, 3, 1, 2), (24, 16, 8, 7, 3, 2, 1), (40, 20, 6, 6, 1, 1, 1)] {
            let x = Tensor::randn(0f32, 1.0, (1, cin, h, w), &dev)?;
            let wt = Tensor::randn(0f32, 1.0, (cout, cin, k, k), &dev)?.to_dtype(DType::BF16)?;
            let got = conv2d(&x, &wt, None, s, up)?.to_dtype(DType::F64)?;
            let conv64 = |x: &Tensor, wt: &Tensor| -> Result<Tensor> {
                let xu = x.to_dtype(DType::F64)?.upsample_nearest2d(h * up, w * up)?;
                Ok(xu.conv2d(&wt.to_dtype(DType::F64)?, k / 2, s, 1, 1)?)
            };
            let want = conv64(&x, &wt)?;
            let mag = conv64(&x.abs()?, &wt.to_dtype(DType::F32)?.abs()?)?;
            let rel = ((got - want)?.abs()? / mag)?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
            let case = (cin, cout, h, w, k, s, up);
            if amx {
                assert!(rel < 1.0 / 128.0, "{case:?}: error {rel} past bf16 size");
                assert!(rel > 1e-5, "{case:?}: error {rel} of f32 size: the products did not run in bf16");
            } else {
                assert!(rel < 1e-5, "{case:?}: error {rel}");
            }
        }
        Ok(())
    }

    #[test]
    fn tap_bands_do_not_change_results() -> Result<()> {
        // The stride-1 path with more rows than one band holds (TAP_BAND_BYTES / (4·Wp·max(Cin, up²·Cout))
        // − 2·pad source rows) and a ragged last band, for k = 3 and 5, and upsampling (pad 1 at up = 2).
        let dev = Device::Cpu;
        let cin = 256;
        for (k, up, cout, h, w) in [(3usize, 1usize, 3usize, 9usize, 2000usize), (5, 1, 3, 9, 2000), (3, 2, 20, 20, 1000)] {
            let x = Tensor::randn(0f32, 1.0, (1, cin, h, w), &dev)?;
            let (ho, wo) = (h * up, w * up);
            let pad = Phases::new(k, up).pad;
            let rows = TAP_BAND_BYTES / (4 * (w + 2 * pad) * cin.max(up * up * cout)) - 2 * pad;
            assert!(rows < h && h % rows != 0, "k {k}: {rows} rows per band");
            let wt = Tensor::randn(0f32, 0.05, (cout, cin, k, k), &dev)?;
            let bias = Tensor::randn(0f32, 1.0, cout, &dev)?;
            let got = conv2d(&x, &wt, Some(&bias), 1, up)?;
            let want = x.upsample_nearest2d(ho, wo)?.conv2d(&wt, k / 2, 1, 1, 1)?.broadcast_add(&bias.reshape((1, cout, 1, 1))?)?;
            let diff = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(diff < 1e-3, "k {k}, up {up}: diff {diff}");
        }
        Ok(())
    }

    #[test]
    fn transposes_rows_with_ragged_edges() {
        for [nu, nv] in [[8usize, 8usize], [19, 13], [3, 21], [16, 5]] {
            let (ss, ds) = (nv + 3, nu + 2);
            let src: Vec<f32> = (0..2 + nu * ss).map(|i| i as f32).collect();
            let mut dst = vec![-1f32; 1 + nv * ds];
            transpose_rows(&src, [2, ss], &mut dst, [1, ds], [nu, nv]);
            for u in 0..nu {
                for v in 0..nv {
                    assert_eq!(dst[1 + v * ds + u], src[2 + u * ss + v], "{nu}×{nv} at ({u}, {v})");
                }
            }
            // Nothing outside the destination rows' first nu values is written.
            assert!((0..dst.len()).filter(|&i| i == 0 || (i - 1) % ds >= nu).all(|i| dst[i] == -1.0));
        }
    }

    #[test]
    fn banding_does_not_change_results() -> Result<()> {
        // The im2col path (stride 2), wide enough that one band cannot hold the whole output
        // (kk·wo·4 bytes per row): several bands reuse one column buffer, padding rows included.
        let dev = Device::Cpu;
        let (cin, cout, h, w) = (300, 2, 16, 2000);
        let x = Tensor::randn(0f32, 1.0, (2, cin, h, w), &dev)?;
        let wt = Tensor::randn(0f32, 0.05, (cout, cin, 3, 3), &dev)?;
        assert!(BAND_BYTES / (4 * cin * 9 * (w / 2)) < h / 2);
        let got = conv2d(&x, &wt, None, 2, 1)?;
        let want = x.conv2d(&wt, 1, 2, 1, 1)?;
        let diff = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(diff < 1e-3, "diff {diff}");
        Ok(())
    }
}
