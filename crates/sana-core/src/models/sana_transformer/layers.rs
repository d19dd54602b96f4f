//! Building blocks of the Sana DiT other than the transformer blocks: the input embeddings (patches,
//! timestep/guidance, caption).

use crate::config::SanaTransformerConfig;
use crate::models::linear::Linear;
use crate::ops::{embeddings, rms_norm};
use crate::weights::Vb;
use crate::Result;
use candle_core::{DType, Tensor};

/// `caption_norm = RMSNorm(inner_dim, eps=1e-5)`.
const CAPTION_NORM_EPS: f64 = 1e-5;
/// Channels of the sinusoidal timestep/guidance projection (`Timesteps(num_channels=256)`).
const TIME_PROJ_DIM: usize = 256;

// ================================================================================================
// Embeddings
// ================================================================================================

/// diffusers `PatchEmbed`: a p×p stride-p conv as a GEMM over patches, plus the optional sin-cos PE.
pub(crate) struct PatchEmbed {
    proj: Linear, // [D, C·p·p]
    patch: usize,
    /// (base_size = sample_size / p, interpolation_scale) when the model has a positional embedding.
    pos: Option<(usize, f64)>,
}

impl PatchEmbed {
    pub(crate) fn new(cfg: &SanaTransformerConfig, vb: Vb) -> Result<Self> {
        let (p, c, d) = (cfg.patch_size, cfg.in_channels, cfg.inner_dim());
        let weight = vb.pp("proj").get_weight((d, c, p, p), "weight")?.reshape((d, c * p * p))?;
        let bias = Some(vb.pp("proj").get(d, "bias")?);
        let pos = cfg.interpolation_scale.map(|s| (cfg.sample_size / p, s));
        Ok(PatchEmbed { proj: Linear::from_weight(weight, bias, vb.pp("proj").prefix()), patch: p, pos })
    }

    /// x [B, C, H, W] → tokens [B, (H/p)·(W/p), D], row-major over the patch grid.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let (p, hp, wp) = (self.patch, h / self.patch, w / self.patch);
        // 1. Patches as rows: [B, C, hp, p, wp, p] → [B, hp, wp, C, p, p] → [B, N, C·p·p].
        let patches = if p == 1 {
            x.reshape((b, c, h * w))?.transpose(1, 2)?
        } else {
            x.reshape((b, c, hp, p, wp, p))?.permute((0, 2, 4, 1, 3, 5))?.reshape((b, hp * wp, c * p * p))?
        };
        let tokens = self.proj.forward(&patches)?;
        // 2. Positional embedding, recomputed for the actual grid (diffusers does so whenever it
        //    differs from sample_size; for the default grid it is the same table).
        match self.pos {
            Some((base, scale)) => {
                let pe = embeddings::sincos_pos_embed_2d(tokens.dim(2)?, hp, wp, base, scale, x.device())?;
                Ok(tokens.broadcast_add(&pe.to_dtype(tokens.dtype())?)?)
            }
            None => Ok(tokens),
        }
    }
}

/// diffusers `TimestepEmbedding`: Linear → SiLU → Linear.
pub(super) struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    pub(super) fn new(dim: usize, vb: Vb) -> Result<Self> {
        Ok(TimestepEmbedding {
            linear_1: Linear::new(TIME_PROJ_DIM, dim, true, vb.pp("linear_1"))?,
            linear_2: Linear::new(dim, dim, true, vb.pp("linear_2"))?,
        })
    }

    /// t [B] (float) → 256-ch flip-sin-to-cos sinusoid → MLP → [B, D].
    pub(super) fn forward(&self, t: &Tensor, dtype: DType) -> Result<Tensor> {
        let proj = embeddings::timestep_embedding(t, TIME_PROJ_DIM, true, 0.0, 1.0, 10000.0)?.to_dtype(dtype)?;
        self.linear_2.forward(&self.linear_1.forward(&proj)?.silu()?)
    }
}

/// `AdaLayerNormSingle` (paths `time_embed.emb.timestep_embedder.*`) or, for Sprint,
/// `SanaCombinedTimestepGuidanceEmbeddings` (`time_embed.{timestep,guidance}_embedder.*`).
pub(crate) struct TimeEmbed {
    timestep_embedder: TimestepEmbedding,
    guidance_embedder: Option<TimestepEmbedding>,
    linear: Linear, // [6D, D]
}

impl TimeEmbed {
    pub(crate) fn new(cfg: &SanaTransformerConfig, vb: Vb) -> Result<Self> {
        let d = cfg.inner_dim();
        let (timestep_embedder, guidance_embedder) = if cfg.guidance_embeds {
            (TimestepEmbedding::new(d, vb.pp("timestep_embedder"))?, Some(TimestepEmbedding::new(d, vb.pp("guidance_embedder"))?))
        } else {
            (TimestepEmbedding::new(d, vb.pp("emb").pp("timestep_embedder"))?, None)
        };
        Ok(TimeEmbed { timestep_embedder, guidance_embedder, linear: Linear::new(d, 6 * d, true, vb.pp("linear"))? })
    }

    /// → (modulation [B, 6D], embedded timestep [B, D]).
    pub(crate) fn forward(&self, t: &Tensor, guidance: Option<&Tensor>, dtype: DType) -> Result<(Tensor, Tensor)> {
        let mut emb = self.timestep_embedder.forward(t, dtype)?;
        if let (Some(embedder), Some(g)) = (&self.guidance_embedder, guidance) {
            emb = (emb + embedder.forward(g, dtype)?)?;
        }
        Ok((self.linear.forward(&emb.silu()?)?, emb))
    }
}

/// `PixArtAlphaTextProjection` (Linear → GELU-tanh → Linear) followed by `caption_norm` (RMSNorm).
pub(crate) struct CaptionProjection {
    linear_1: Linear,
    linear_2: Linear,
    norm_weight: Tensor,
}

impl CaptionProjection {
    pub(crate) fn new(cfg: &SanaTransformerConfig, vb: &Vb) -> Result<Self> {
        let (c, d) = (cfg.caption_channels, cfg.inner_dim());
        let proj = vb.pp("caption_projection");
        Ok(CaptionProjection {
            linear_1: Linear::new(c, d, true, proj.pp("linear_1"))?,
            linear_2: Linear::new(d, d, true, proj.pp("linear_2"))?,
            norm_weight: vb.pp("caption_norm").get(d, "weight")?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.linear_2.forward(&self.linear_1.forward(x)?.gelu()?)?; // candle's gelu is the tanh form
        rms_norm(&y, Some(&self.norm_weight), None, CAPTION_NORM_EPS)
    }
}
