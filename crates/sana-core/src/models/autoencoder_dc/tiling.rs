//! Tiled decoding for large latents, and the activation-memory estimate that decides when to tile.
//!
//! Tiles of `tile_latent_size`² latent pixels overlap by `tile_overlap`; the last tile of a row/column is
//! shifted back to end at the border (so every tile has the full size). Each decoded tile is weighted by
//! a separable ramp that rises linearly across every overlap it shares with a neighbour (and is 1 at the
//! image border), and the image is Σ wᵢ·tileᵢ / Σ wᵢ: a linear cross-fade like diffusers' `blend_h/v`,
//! but normalised, so uneven overlaps (the shifted last tile) and corners blend correctly too.
//!
//! Tiling cannot be exact: the EfficientViT stages attend over the whole (tile) feature map, so a tile
//! sees a different global context than the full image. The overlap hides the seam, not the difference.

use crate::config::AutoencoderDCConfig;
use crate::ops::conv2d::BAND_BYTES;
use crate::{ensure_arg, Result};
use candle_core::{DType, Device, Tensor};

/// Whether to decode in tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tiling {
    /// Tile when [`decode_activation_bytes`] of the whole latent (in the model's dtype) exceeds
    /// `memory_budget_bytes`.
    #[default]
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone)]
pub struct DecodeOptions {
    pub tiling: Tiling,
    /// Tile side in latent pixels. Default: the largest tile whose estimate fits the budget (≥ 8).
    pub tile_latent_size: Option<usize>,
    /// Overlap between neighbouring tiles in latent pixels. Default: tile / 4 (at least 1).
    pub tile_overlap: Option<usize>,
    /// Activation memory allowed for one decoder pass. Default 4 GiB.
    pub memory_budget_bytes: Option<u64>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions { tiling: Tiling::Auto, tile_latent_size: None, tile_overlap: None, memory_budget_bytes: None }
    }
}

pub const DEFAULT_MEMORY_BUDGET: u64 = 4 << 30;
const MIN_AUTO_TILE: usize = 8;

/// Estimated peak activation bytes of one decoder pass on a [batch, latent, h, w] latent in `dtype`
/// (weights not included). With P_i = h·w·4^(n−1−i) the pixels of stage i and C_i its width, over the
/// stages that have layers:
///
/// ```text
/// bytes = e·batch·( max_i( K_i·C_i·P_i,  (C_{i+1}/4 + 3·C_i)·P_i )  +  O )  +  2·BAND_BYTES
/// ```
/// - e the element size; K = 3 for a ResBlock stage (residual + two live intermediates, as
///   `ResBlock::forward` frees them), K = 17 for an EfficientViT stage (the GLU conv's 8·C expansion
///   twice, plus the residual);
/// - the second term is the up block entering stage i (its half-resolution input, conv output, shortcut
///   and sum — the ×2 nearest upsample is never materialised);
/// - O the output image, 3·P_0; 6·P_0 when stage 0 is empty (DC-AE-Lite) and `conv_out` is an up block
///   (its 12-channel conv output at P_1 and the shuffled image);
/// - then the CPU conv's im2col band plus its GEMM result.
///
/// For dc-ae-f32c32 at 1024² (h = w = 32) in f32 the stage-0 up block dominates: ≈ 1.9 GB; it scales with h·w.
pub fn decode_activation_bytes(cfg: &AutoencoderDCConfig, dtype: DType, batch: usize, h: usize, w: usize) -> u64 {
    // u128, saturated to u64::MAX: callers ask about absurd sizes too (to refuse them).
    let ch = &cfg.decoder_block_out_channels;
    let layers = &cfg.decoder_layers_per_block;
    let n = ch.len();
    let pixels = |i: usize| (h as u128 * w as u128) << (2 * (n - 1 - i));
    let mut peak = 0u128;
    for i in (0..n).filter(|&i| layers[i] > 0) {
        let p = pixels(i);
        let k = if cfg.decoder_block_types.get(i) == "EfficientViTBlock" { 17 } else { 3 };
        let mut floats = k * ch[i] as u128 * p;
        if i + 1 < n {
            floats = floats.max((ch[i + 1] as u128 / 4 + 3 * ch[i] as u128) * p);
        }
        peak = peak.max(floats);
    }
    let out = if layers[0] > 0 { 3 } else { 6 } * pixels(0);
    let bytes = dtype.size_in_bytes() as u128 * batch as u128 * (peak + out) + 2 * BAND_BYTES as u128;
    u64::try_from(bytes).unwrap_or(u64::MAX)
}

/// What a decode will do and need: see [`decode_memory`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeMemory {
    /// [`decode_activation_bytes`] of the whole latent in one pass.
    pub untiled_bytes: u64,
    /// Tile side in latent pixels when the options make the decode tiled, else `None`.
    pub tile_latent_size: Option<usize>,
    /// Peak activation bytes of the decode as planned: `untiled_bytes` when untiled; when tiled, one tile's
    /// pass plus the f32 blend buffers (Σ w·tile and Σ w over the whole image) and the output image.
    pub peak_bytes: u64,
}

/// The decode plan for a [batch, latent, h, w] latent in `dtype` under `opts` (the same decision
/// `AutoencoderDC::decode` makes), with its activation-memory estimate.
pub fn decode_memory(cfg: &AutoencoderDCConfig, dtype: DType, batch: usize, h: usize, w: usize, opts: &DecodeOptions) -> Result<DecodeMemory> {
    let untiled_bytes = decode_activation_bytes(cfg, dtype, batch, h, w);
    Ok(match plan(cfg, dtype, batch, h, w, opts)? {
        None => DecodeMemory { untiled_bytes, tile_latent_size: None, peak_bytes: untiled_bytes },
        Some(p) => {
            let tile = decode_activation_bytes(cfg, dtype, batch, p.tile.min(h), p.tile.min(w));
            let f = 1u64 << (cfg.decoder_block_out_channels.len() - 1);
            let image = (h as u64 * w as u64).saturating_mul(f * f); // pixels
            let c = cfg.in_channels as u64;
            let buffers = image.saturating_mul(4 * (batch as u64 * c + 1) + dtype.size_in_bytes() as u64 * batch as u64 * c);
            DecodeMemory { untiled_bytes, tile_latent_size: Some(p.tile), peak_bytes: tile.saturating_add(buffers) }
        }
    })
}

/// Tile side and overlap, in latent pixels.
#[derive(Debug, Clone, Copy)]
pub(super) struct TilePlan {
    pub tile: usize,
    pub overlap: usize,
}

/// `None`: decode in one pass.
pub(super) fn plan(cfg: &AutoencoderDCConfig, dtype: DType, b: usize, h: usize, w: usize, o: &DecodeOptions) -> Result<Option<TilePlan>> {
    let budget = o.memory_budget_bytes.unwrap_or(DEFAULT_MEMORY_BUDGET);
    ensure_arg!(budget > 0, "memory_budget_bytes", "must be > 0");
    if let Some(t) = o.tile_latent_size {
        ensure_arg!(t >= 1, "tile_latent_size", "must be ≥ 1, got {t}");
    }
    let fits = |t: usize| decode_activation_bytes(cfg, dtype, b, t.min(h), t.min(w)) <= budget;
    let tiled = match o.tiling {
        Tiling::Off => false,
        Tiling::On => true,
        Tiling::Auto => decode_activation_bytes(cfg, dtype, b, h, w) > budget,
    };
    if !tiled {
        return Ok(None);
    }
    let tile = o.tile_latent_size.unwrap_or_else(|| {
        // Largest square tile within budget (never below MIN_AUTO_TILE), no larger than the latent.
        let mut t = h.max(w);
        while t > MIN_AUTO_TILE && !fits(t) {
            t -= 1;
        }
        t
    });
    let overlap = o.tile_overlap.unwrap_or((tile / 4).max(1));
    ensure_arg!(overlap < tile, "tile_overlap", "must be smaller than the tile size ({tile}), got {overlap}");
    if tile >= h && tile >= w {
        return Ok(None); // one tile covers everything
    }
    Ok(Some(TilePlan { tile, overlap }))
}

/// Tile starts along one axis of length `len` (the last one snapped to end at `len`).
fn starts(len: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if tile >= len {
        return vec![0];
    }
    let stride = tile - overlap;
    let mut s: Vec<usize> = (0..).map(|k| k * stride).take_while(|&s| s + tile < len).collect();
    s.push(len - tile);
    s
}

/// Blend weights along one axis for tile `i` (pixel space, `f` pixels per latent pixel): a ramp
/// (u + ½)/V over each overlap of width V shared with the previous/next tile, else 1.
fn ramp(starts: &[usize], i: usize, tile: usize, len: usize, f: usize) -> Vec<f32> {
    let t = tile.min(len);
    let mut wgt = vec![1f32; t * f];
    if i > 0 {
        let v = ((starts[i - 1] + t - starts[i]) * f) as f32;
        for (u, x) in wgt.iter_mut().enumerate().take(v as usize) {
            *x *= (u as f32 + 0.5) / v;
        }
    }
    if i + 1 < starts.len() {
        let v = (starts[i] + t - starts[i + 1]) * f;
        let n = wgt.len();
        for u in 0..v {
            wgt[n - v + u] *= (v - u) as f32 / v as f32 - 0.5 / v as f32;
        }
    }
    wgt
}

pub(super) fn tiled_decode(z: &Tensor, p: &TilePlan, f: usize, decode: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let (b, _, h, w) = z.dims4()?;
    let (ys, xs) = (starts(h, p.tile, p.overlap), starts(w, p.tile, p.overlap));
    let (th, tw) = (p.tile.min(h), p.tile.min(w));
    let (hp, wp, thp, twp) = (h * f, w * f, th * f, tw * f);
    let mut acc: Vec<f32> = Vec::new();
    // The blended output lives in host memory: fallible allocations, so an absurd size is an error, not an abort.
    let mut wsum = crate::alloc::try_zeros_f32("latents", "tiled decode weights", &[hp, wp])?;
    let mut channels = 0;
    for (iy, &y0) in ys.iter().enumerate() {
        let wy = ramp(&ys, iy, p.tile, h, f);
        for (ix, &x0) in xs.iter().enumerate() {
            let wx = ramp(&xs, ix, p.tile, w, f);
            // 1. Decode one tile: [B, 3, th·f, tw·f] (to host memory for blending).
            let tile = decode(&z.narrow(2, y0, th)?.narrow(3, x0, tw)?)?;
            let tile = tile.to_device(&Device::Cpu)?.to_dtype(candle_core::DType::F32)?;
            let c = tile.dim(1)?;
            if acc.is_empty() {
                channels = c;
                acc = crate::alloc::try_zeros_f32("latents", "tiled decode output", &[b, c, hp, wp])?;
            }
            let tv = tile.flatten_all()?.to_vec1::<f32>()?;
            // 2. Accumulate weighted pixels and weights.
            for plane in 0..b * c {
                for y in 0..thp {
                    let dst = &mut acc[(plane * hp + y0 * f + y) * wp + x0 * f..][..twp];
                    let src = &tv[(plane * thp + y) * twp..][..twp];
                    for ((d, s), wxv) in dst.iter_mut().zip(src).zip(&wx) {
                        *d += s * wy[y] * wxv;
                    }
                }
            }
            for y in 0..thp {
                let dst = &mut wsum[(y0 * f + y) * wp + x0 * f..][..twp];
                for (d, wxv) in dst.iter_mut().zip(&wx) {
                    *d += wy[y] * wxv;
                }
            }
        }
    }
    // 3. Normalise by the weight sum (> 0 everywhere: every pixel lies in some tile's plateau or ramp).
    for plane in acc.chunks_mut(hp * wp) {
        for (a, s) in plane.iter_mut().zip(&wsum) {
            *a /= s;
        }
    }
    Ok(Tensor::from_vec(acc, (b, channels, hp, wp), &Device::Cpu)?.to_device(z.device())?.to_dtype(z.dtype())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_cover_the_axis_and_end_at_the_border() {
        assert_eq!(starts(10, 4, 1), vec![0, 3, 6]);
        assert_eq!(starts(11, 4, 1), vec![0, 3, 6, 7]);
        assert_eq!(starts(4, 8, 2), vec![0]);
        assert_eq!(starts(5, 4, 2), vec![0, 1]);
    }

    #[test]
    fn ramps_of_neighbours_sum_to_one_in_the_overlap() {
        let s = starts(11, 4, 1);
        let f = 4;
        let mut total = vec![0f32; 11 * f];
        for i in 0..s.len() {
            for (u, v) in ramp(&s, i, 4, 11, f).iter().enumerate() {
                total[s[i] * f + u] += v;
            }
        }
        for v in total {
            assert!((v - 1.0).abs() < 1e-6, "{v}");
        }
    }

    /// A decoder whose output pixel depends only on its own latent pixel: tiling must be exact.
    #[test]
    fn blending_is_exact_for_a_local_decoder() -> Result<()> {
        let dev = Device::Cpu;
        let z = Tensor::randn(0f32, 1.0, (2, 4, 7, 11), &dev)?;
        let f = 4;
        let local = |t: &Tensor| -> Result<Tensor> {
            let (_, _, h, w) = t.dims4()?;
            Ok(t.narrow(1, 0, 3)?.tanh()?.upsample_nearest2d(h * f, w * f)?)
        };
        let full = local(&z)?;
        for (tile, overlap) in [(3, 1), (4, 2), (5, 1), (6, 4)] {
            let got = tiled_decode(&z, &TilePlan { tile, overlap }, f, local)?;
            let d = (got - &full)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(d < 1e-5, "tile {tile} overlap {overlap}: {d}");
        }
        Ok(())
    }
}
