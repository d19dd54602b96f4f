//! 3×3, stride-1, "same"-padded convolution on the CPU by Winograd's minimal filtering F(2×2, 3×3)
//! (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", arXiv 1509.09308).
//!
//! Why: DC-AE's ResBlocks are 3×3 convs at full width (128–512 channels, up to 1024²), three quarters of
//! a decode's GEMM time. F(2×2, 3×3) computes each 2×2 block of outputs from a 4×4 block of inputs with
//! 16 products per (input, output) channel pair instead of 36: the GEMM work drops 2.25×, and what it adds
//! (the input and output transforms) is additions only: ≈ 7 % of a 512² decode's time (perf), against
//! the ≈ 35 % of its GEMM time it saves.
//!
//! Per 2×2 output tile and channel, with d the 4×4 input patch and g the 3×3 kernel:
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`, where the ⊙ summed over input channels is 16 GEMMs, one per
//! position ξ of the 4×4 transformed tile: `M_ξ[Cout, tiles] = U_ξ[Cout, Cin] · V_ξ[Cin, tiles]`.
//!
//! Precision: the transforms' coefficients are 0, ±1 and ±½, so every value is formed exactly up to the
//! sums' rounding; the error stays within a small factor of the direct conv's (test against an f64
//! reference). `SANA_CONV_WINOGRAD=0` switches to the direct tap-sum conv for results closest to PyTorch's
//! summation order.

use super::fastmath::dispatch;
use super::gemm::{gemm_serial, Strided};
use rayon::prelude::*;

/// Upper bound for a band's transformed input (16 values per tile and channel) and, likewise, its
/// transformed output: at most 2 × 16 MB in all (the band is one GEMM per ξ, so it is kept long).
const BAND_BYTES: usize = 16 << 20;

/// Whether [`conv3x3`] serves a Cin → Cout conv: both widths large enough that the GEMMs dominate (a
/// 3-channel image conv stays direct), unless `SANA_CONV_WINOGRAD=0`.
pub(super) fn applies(cin: usize, cout: usize) -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let enabled = *ENABLED.get_or_init(|| std::env::var("SANA_CONV_WINOGRAD").map_or(true, |v| v != "0"));
    enabled && cin >= 16 && cout >= 16
}

/// x [B, Cin, H, W], weight [Cout, Cin, 3, 3] (row-major [Cout, Cin·9]), bias [Cout] → [B, Cout, H, W],
/// padding 1. Per band of tile rows: V = Bᵀ d B per input channel, 16 GEMMs M_ξ = U_ξ · V_ξ, then
/// Y = Aᵀ M A + bias per output channel straight into its plane.
///
/// Everything stays channel-major, like the tensors around it: a channel's tiles lie side by side
/// (8 tiles are one vector), V is [Cin][ξ][tiles], M [ξ][Cout][tiles] (each product's output one
/// block), so each transform task reads or writes one channel's runs and no transposes are needed. A
/// band's tile rows are padded to a multiple of 8 tiles (zeros in, the extra outputs dropped). (V as
/// [ξ][Cin][tiles], each product's B one block, measured the same: 13.1 against 13.4 s over 7 noisy runs.)
pub(super) fn conv3x3(xs: &[f32], ws: &[f32], bias: &[f32], [b, cin, cout, h, w]: [usize; 5], bf16: bool) -> Vec<f32> {
    let (th_all, tw) = (h.div_ceil(2), w.div_ceil(2).next_multiple_of(8));
    let th = (BAND_BYTES / (4 * 16 * tw * cin.max(cout))).clamp(1, th_all);
    let mut out = vec![0f32; b * cout * h * w];
    let mut v = vec![0f32; cin * 16 * th * tw];
    let mut m = vec![0f32; cout * 16 * th * tw];
    let u = filter_transform(ws, cin, cout);
    for n in 0..b {
        let xn = &xs[n * cin * h * w..(n + 1) * cin * h * w];
        let on = &mut out[n * cout * h * w..(n + 1) * cout * h * w];
        for ty0 in (0..th_all).step_by(th) {
            let bt = th.min(th_all - ty0);
            let t = bt * tw; // tiles in this band
            let geo = Band { h, w, y0: 2 * ty0, bt, tw };
            // 1. V[ci][ξ][tile] = (Bᵀ d B)_ξ, a channel per task.
            v[..cin * 16 * t].par_chunks_mut(16 * t).zip(xn.par_chunks(h * w)).for_each(|(vc, plane)| geo.input(plane, vc));
            // 2. M_ξ[Cout, tiles] = U_ξ[Cout, Cin] · V_ξ[Cin, tiles] (rows 16·Cin and 16·tiles apart), the
            // 16 products spread over the threads, each on one: split inside, each product's B (the
            // band's V_ξ) was packed by one thread while the other waited.
            let (u, v) = (&u, &v);
            m[..16 * cout * t].par_chunks_mut(cout * t).enumerate().for_each(|(xi, mx)| {
                let (lhs, rhs) = (Strided::rows(xi * cin, 16 * cin), Strided::rows(xi * t, 16 * t));
                gemm_serial([cout, t, cin], (mx, Strided::rows(0, t)), (u, lhs), (v, rhs), bf16);
            });
            // 3. Output rows y0 .. y0 + 2·bt (inside the image) of each channel's plane.
            let m = &m;
            on.par_chunks_mut(h * w).enumerate().for_each(|(co, plane)| geo.output(&m[co * t..], cout * t, bias[co], plane));
        }
    }
    out
}

/// One band: tile rows `bt` from output row `y0`, `tw` tiles per row (a multiple of 8).
struct Band {
    h: usize,
    w: usize,
    y0: usize,
    bt: usize,
    tw: usize,
}

impl Band {
    /// One input channel's V[ξ][tile] (`vc`, 16 runs of bt·tw) from its plane. The 2·bt + 2 input rows
    /// the band reads (y0 − 1 ..) are first copied with a zero column on the left and zeros past the
    /// right edge, so every tile loads in bounds.
    fn input(&self, plane: &[f32], vc: &mut [f32]) {
        let (rows, wp) = (2 * self.bt + 2, 2 * self.tw + 2);
        let mut pad = vec![0f32; rows * wp];
        for (r, dst) in pad.chunks_exact_mut(wp).enumerate() {
            let iy = (self.y0 + r).wrapping_sub(1); // input row; wraps to usize::MAX above the image
            if iy < self.h {
                dst[1..1 + self.w].copy_from_slice(&plane[iy * self.w..][..self.w]);
            }
        }
        input_rows(&pad, wp, self.bt, self.tw, vc);
    }

    /// One output channel's rows of the band from its M[ξ][tile] (`mc`, ξ runs `xs` apart), plus the bias.
    fn output(&self, mc: &[f32], xs: usize, bias: f32, plane: &mut [f32]) {
        let mut rows = vec![0f32; 2 * 2 * self.tw];
        for ty in 0..self.bt {
            output_row(mc, xs, ty * self.tw, bias, &mut rows);
            for (i, row) in rows.chunks_exact(2 * self.tw).enumerate() {
                let y = self.y0 + 2 * ty + i;
                if y < self.h {
                    plane[y * self.w..][..self.w].copy_from_slice(&row[..self.w]);
                }
            }
        }
    }
}

/// U[co][ξ][ci] = (G g Gᵀ)_ξ of W[co, ci], G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]. Formed in
/// f64 and rounded once. Per call rather than at load: kept beside W (CUDA and the direct path read W)
/// it would add 16/9 of the ResBlock weights (≈ 130 MB for f32c32) to RSS, for under 0.4 % of a decode (perf).
fn filter_transform(ws: &[f32], cin: usize, cout: usize) -> Vec<f32> {
    let mut u = vec![0f32; cout * 16 * cin];
    let g_rows = |g: [f64; 3]| [g[0], 0.5 * (g[0] + g[1] + g[2]), 0.5 * (g[0] - g[1] + g[2]), g[2]];
    u.par_chunks_mut(16 * cin).enumerate().for_each(|(co, uc)| {
        for ci in 0..cin {
            let g = &ws[(co * cin + ci) * 9..][..9];
            // G g: 4×3 (per column kx), then (G g) Gᵀ: 4×4.
            let cols: [[f64; 4]; 3] = std::array::from_fn(|kx| g_rows([g[kx] as f64, g[3 + kx] as f64, g[6 + kx] as f64]));
            for a in 0..4 {
                for (bi, val) in g_rows([cols[0][a], cols[1][a], cols[2][a]]).into_iter().enumerate() {
                    uc[(4 * a + bi) * cin + ci] = val as f32;
                }
            }
        }
    });
    u
}

/// Eight tiles' values of one position: the transforms run 8 tiles at a time, as 8-wide vector adds
/// under [`dispatch`] (AVX2).
type Lanes = [f32; 8];

#[inline(always)]
fn add(a: Lanes, b: Lanes) -> Lanes {
    std::array::from_fn(|l| a[l] + b[l])
}

#[inline(always)]
fn sub(a: Lanes, b: Lanes) -> Lanes {
    std::array::from_fn(|l| a[l] - b[l])
}

dispatch!(
    /// V = Bᵀ d B, Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]], for every tile of a
    /// band: tile (ty, tx) reads the padded rows 2·ty .. 2·ty + 4 at columns 2·tx .. 2·tx + 4 (`pad`, rows
    /// `wp` apart); `vc[ξ·bt·tw + ty·tw + tx]` for ξ = 4a + b.
    input_rows, (pad: &[f32], wp: usize, bt: usize, tw: usize, vc: &mut [f32]), {
    let t = bt * tw;
    for ty in 0..bt {
        for tx in (0..tw).step_by(8) {
            // d[i][j] for 8 tiles: row 2·ty + i, columns 2·(tx + l) + j, from two runs of 16 values.
            let d: [[Lanes; 4]; 4] = std::array::from_fn(|i| {
                let row = &pad[(2 * ty + i) * wp + 2 * tx..][..18];
                std::array::from_fn(|j| std::array::from_fn(|l| row[2 * l + j]))
            });
            // Bᵀ d: row combinations, per column j; then the same combinations of each row's columns.
            let r: [[Lanes; 4]; 4] = std::array::from_fn(|j| [sub(d[0][j], d[2][j]), add(d[1][j], d[2][j]), sub(d[2][j], d[1][j]), sub(d[1][j], d[3][j])]);
            for a in 0..4 {
                let [c0, c1, c2, c3] = [r[0][a], r[1][a], r[2][a], r[3][a]];
                for (bi, val) in [sub(c0, c2), add(c1, c2), sub(c2, c1), sub(c1, c3)].iter().enumerate() {
                    vc[(4 * a + bi) * t + ty * tw + tx..][..8].copy_from_slice(val);
                }
            }
        }
    }
});

dispatch!(
    /// Y = Aᵀ M A + bias, Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]], for tile row `ty0 / tw` of one channel:
    /// M at `mc[ξ·xs + ty0 + tx]`, the two output rows (2·tw pixels each) into `rows`.
    output_row, (mc: &[f32], xs: usize, ty0: usize, bias: f32, rows: &mut [f32]), {
    let tw = rows.len() / 4;
    let (top, bottom) = rows.split_at_mut(2 * tw);
    for tx in (0..tw).step_by(8) {
        let m: [Lanes; 16] = std::array::from_fn(|xi| mc[xi * xs + ty0 + tx..][..8].try_into().unwrap());
        // Aᵀ M: per column b, the two row combinations; then the same of each row's columns.
        let s: [[Lanes; 2]; 4] = std::array::from_fn(|b| [add(add(m[b], m[4 + b]), m[8 + b]), sub(sub(m[4 + b], m[8 + b]), m[12 + b])]);
        for (i, row) in [&mut *top, &mut *bottom].into_iter().enumerate() {
            let y0 = add(add(s[0][i], s[1][i]), s[2][i]);
            let y1 = sub(sub(s[1][i], s[2][i]), s[3][i]);
            // Pixels 2·(tx + l) + j, interleaved.
            let px: [f32; 16] = std::array::from_fn(|p| if p % 2 == 0 { y0[p / 2] } else { y1[p / 2] } + bias);
            row[2 * tx..][..16].copy_from_slice(&px);
        }
    }
});

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};

    /// The Winograd conv of random x, weights and bias, and candle's direct conv of the same in f64
    /// (flattened), for [b, cin, cout, h, w].
    fn both(dims: [usize; 5]) -> candle_core::Result<(Vec<f32>, Vec<f64>)> {
        let [b, cin, cout, h, w] = dims;
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (b, cin, h, w), &dev)?;
        let wt = Tensor::randn(0f32, 0.1, (cout, cin, 3, 3), &dev)?;
        let bias = Tensor::randn(0f32, 0.5, cout, &dev)?;
        let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let (xf, wf, bf) = (flat(&x)?, flat(&wt)?, flat(&bias)?);
        let got = conv3x3(&xf, &wf, &bf, dims, false);
        // This CPU's vector tier of the transforms gives the baseline's bits.
        let base = crate::ops::fastmath::with_tier(crate::ops::fastmath::Tier::Base, || conv3x3(&xf, &wf, &bf, dims, false));
        assert!(got.iter().zip(&base).all(|(g, b)| g.to_bits() == b.to_bits()), "{dims:?}: tier {:?} differs from the baseline", crate::ops::fastmath::tier());
        let want = x.to_dtype(DType::F64)?.conv2d(&wt.to_dtype(DType::F64)?, 1, 1, 1, 1)?
            .broadcast_add(&bias.to_dtype(DType::F64)?.reshape((1, cout, 1, 1))?)?;
        Ok((got, want.flatten_all()?.to_vec1::<f64>()?))
    }

    /// Largest |got − want| relative to the largest |want|.
    fn rel_error(got: &[f32], want: &[f64]) -> f64 {
        let scale = want.iter().fold(0f64, |a, v| a.max(v.abs()));
        got.iter().zip(want).fold(0f64, |a, (g, w)| a.max((*g as f64 - w).abs())) / scale
    }

    #[test]
    fn matches_a_direct_f64_conv_on_ragged_shapes() -> candle_core::Result<()> {
        // Odd and even sizes (a partial last tile row and column), a 1×1 image, batch 2, channel counts
        // that are not multiples of 8.
        for dims in [[2usize, 16, 24, 7, 9], [1, 19, 17, 8, 8], [1, 32, 16, 1, 1], [1, 16, 16, 2, 5]] {
            let (got, want) = both(dims)?;
            let err = rel_error(&got, &want);
            assert!(err <= 2e-6, "{dims:?}: relative error {err:e}");
        }
        Ok(())
    }

    #[test]
    fn bands_do_not_change_results() -> candle_core::Result<()> {
        // More tile rows than one band holds (BAND_BYTES / (64·tw·max(Cin, Cout))), a ragged last band and
        // an odd height: each band must read its halo rows from the image, not from the previous band.
        let (cin, cout, h, w) = (64usize, 32usize, 23usize, 1000usize);
        let th = BAND_BYTES / (4 * 16 * w.div_ceil(2).next_multiple_of(8) * cin);
        assert!(th < h.div_ceil(2) && h.div_ceil(2) % th != 0, "{th} tile rows per band");
        let (got, want) = both([1, cin, cout, h, w])?;
        let err = rel_error(&got, &want);
        assert!(err <= 2e-6, "relative error {err:e}");
        Ok(())
    }
}
