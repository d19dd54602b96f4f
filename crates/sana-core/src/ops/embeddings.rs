//! Fixed (non-learned) embeddings: the sinusoidal timestep embedding and the 2-D sin-cos positional
//! embedding of DiT/PixArt/Sana. Both are tiny host-side computations that mirror diffusers' float
//! arithmetic (which steps run in f32, which in f64) so that the results agree to the last bits.

use crate::{ensure_arg, Result};
use candle_core::{DType, Device, Tensor};

/// diffusers `get_timestep_embedding` (the `Timesteps` module): t [B] → [B, dim] f32.
///
/// ```text
/// freq_i = exp(-ln(max_period) · i / (dim/2 − shift))      # f32, i < dim/2
/// arg    = scale · t · freq                                  # f32
/// emb    = [sin(arg), cos(arg)]  or  [cos, sin] if flip_sin_to_cos; zero-padded if dim is odd
/// ```
/// `t` may be fractional (Sana passes 0..999 floats, Sprint passes values in [0, 1]).
pub fn timestep_embedding(
    t: &Tensor,
    dim: usize,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f64,
    scale: f64,
    max_period: f64,
) -> Result<Tensor> {
    ensure_arg!(t.rank() == 1, "timestep", "expected a 1-D tensor [batch], got shape {:?}", t.dims());
    let half = dim / 2;
    ensure_arg!(half > 0 && (half as f64) != downscale_freq_shift, "dim", "embedding dim {dim} is too small");
    let ts: Vec<f32> = t.to_dtype(DType::F32)?.to_vec1()?;
    // torch: exponent = (-ln(max_period) as f32) * arange_f32 / (half - shift), exp in f32.
    let neg_log = -(max_period.ln()) as f32;
    let denom = (half as f64 - downscale_freq_shift) as f32;
    let freqs: Vec<f32> = (0..half).map(|i| ((neg_log * i as f32) / denom) as f64).map(|e| e.exp() as f32).collect();
    let mut out = vec![0f32; ts.len() * dim];
    for (b, &tb) in ts.iter().enumerate() {
        let row = &mut out[b * dim..b * dim + 2 * half];
        for (i, &f) in freqs.iter().enumerate() {
            let arg = (tb * f) * scale as f32;
            let (s, c) = ((arg as f64).sin() as f32, (arg as f64).cos() as f32);
            let (first, second) = if flip_sin_to_cos { (c, s) } else { (s, c) };
            row[i] = first;
            row[half + i] = second;
        }
    }
    Ok(Tensor::from_vec(out, (ts.len(), dim), t.device())?)
}

/// diffusers `get_2d_sincos_pos_embed(embed_dim, (h, w), base_size, interpolation_scale)`: [h·w, embed_dim] f32,
/// token n = row·w + col (the order of `flatten(2)` on [B, C, h, w]).
///
/// ```text
/// y = row / (h / base_size) / interpolation_scale     x = col / (w / base_size) / interpolation_scale   # f32
/// emb_1d(p) = [sin(p·ω_k), cos(p·ω_k)],  ω_k = 10000^(−k / (D/4)),  k < D/4                          # f64
/// emb(row, col) = [emb_1d(x), emb_1d(y)]        # the column (x) coordinate fills the first half
/// ```
/// The x-first order comes from diffusers' `meshgrid(grid_w, grid_h, indexing="xy")`.
pub fn sincos_pos_embed_2d(
    embed_dim: usize,
    h: usize,
    w: usize,
    base_size: usize,
    interpolation_scale: f64,
    device: &Device,
) -> Result<Tensor> {
    ensure_arg!(embed_dim % 4 == 0 && embed_dim > 0, "embedDim", "2-D sin-cos embedding needs a multiple of 4, got {embed_dim}");
    ensure_arg!(h > 0 && w > 0 && base_size > 0, "gridSize", "grid {h}×{w} with base size {base_size} is empty");
    let quarter = embed_dim / 4;
    let omega: Vec<f64> = (0..quarter).map(|k| 1.0 / 10000f64.powf(k as f64 / quarter as f64)).collect();
    // f32 grid coordinates, as torch computes them from an f32 arange.
    let coord = |i: usize, n: usize| ((i as f32 / (n as f64 / base_size as f64) as f32) / interpolation_scale as f32) as f64;
    // The embedding is separable: one 1-D table per axis (h + w rows instead of h·w).
    let table = |n: usize| -> Vec<f32> {
        let mut t = vec![0f32; n * 2 * quarter];
        for i in 0..n {
            let p = coord(i, n);
            for (k, om) in omega.iter().enumerate() {
                t[i * 2 * quarter + k] = (p * om).sin() as f32;
                t[i * 2 * quarter + quarter + k] = (p * om).cos() as f32;
            }
        }
        t
    };
    let (ys, xs) = (table(h), table(w));
    let half = 2 * quarter;
    let mut out = vec![0f32; h * w * embed_dim];
    for (n, e) in out.chunks_exact_mut(embed_dim).enumerate() {
        let (row, col) = (n / w, n % w);
        e[..half].copy_from_slice(&xs[col * half..(col + 1) * half]);
        e[half..].copy_from_slice(&ys[row * half..(row + 1) * half]);
    }
    Ok(Tensor::from_vec(out, (h * w, embed_dim), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Literal transcription of diffusers' steps in f64.
    fn naive_timestep(t: f64, dim: usize, flip: bool) -> Vec<f64> {
        let half = dim / 2;
        let mut sin = Vec::new();
        let mut cos = Vec::new();
        for i in 0..half {
            let f = (-(10000f64.ln()) * i as f64 / half as f64).exp();
            sin.push((t * f).sin());
            cos.push((t * f).cos());
        }
        let mut v = if flip { [cos, sin].concat() } else { [sin, cos].concat() };
        if dim % 2 == 1 {
            v.push(0.0);
        }
        v
    }

    #[test]
    fn timestep_embedding_matches_definition() -> Result<()> {
        let ts = [0.0f32, 1.0, 0.35, 250.5, 999.0];
        for (dim, flip) in [(256, true), (256, false), (7, true)] {
            let t = Tensor::new(&ts, &Device::Cpu)?;
            let got = timestep_embedding(&t, dim, flip, 0.0, 1.0, 10000.0)?.to_vec2::<f32>()?;
            for (b, &tv) in ts.iter().enumerate() {
                let want = naive_timestep(tv as f64, dim, flip);
                for (i, w) in want.iter().enumerate() {
                    // f32 argument rounding: |Δarg| ≤ t·2⁻²³ ≈ 1.2e-4 at t = 999.
                    let tol = 2e-6 + tv as f64 * 2e-7;
                    assert!((got[b][i] as f64 - w).abs() <= tol, "dim {dim} t {tv} i {i}: {} vs {w}", got[b][i]);
                }
            }
        }
        Ok(())
    }

    #[test]
    fn sincos_2d_matches_definition_nonsquare() -> Result<()> {
        let (d, h, w, base, scale) = (16, 3, 5, 8, 2.0);
        let got = sincos_pos_embed_2d(d, h, w, base, scale, &Device::Cpu)?.to_vec2::<f32>()?;
        let emb1d = |p: f64| -> Vec<f64> {
            let q = d / 4;
            let om: Vec<f64> = (0..q).map(|k| 10000f64.powf(-(k as f64) / q as f64)).collect();
            om.iter().map(|o| (p * o).sin()).chain(om.iter().map(|o| (p * o).cos())).collect()
        };
        for r in 0..h {
            for c in 0..w {
                let y = r as f64 * base as f64 / h as f64 / scale;
                let x = c as f64 * base as f64 / w as f64 / scale;
                let want = [emb1d(x), emb1d(y)].concat();
                for (i, wv) in want.iter().enumerate() {
                    assert!((got[r * w + c][i] as f64 - wv).abs() < 1e-5, "({r},{c}) {i}");
                }
            }
        }
        assert!(sincos_pos_embed_2d(6, 2, 2, 2, 1.0, &Device::Cpu).is_err());
        Ok(())
    }
}
