//! Building blocks of the Sana DiT other than the transformer blocks: the input embeddings (patches,
//! timestep/guidance, caption).

use crate::config::SanaTransformerConfig;
use crate::models::linear::{Layout, Linear, LoraCall};
use crate::ops::{embeddings, rms_norm};
use crate::weights::Vb;
use crate::Result;
use candle_core::{DType, Tensor};

/// `caption_norm = RMSNorm(inner_dim, eps=1e-5)`.
const CAPTION_NORM_EPS: f64 = 1e-5;
/// Channels of the sinusoidal timestep/guidance projection (`Timesteps(num_channels=256)`).
const TIME_PROJ_DIM: usize = 256;

// ================================================================================================
// Merged projections
// ================================================================================================

/// Linears that read the same input (attn1's to_q/to_k/to_v, attn2's to_k/to_v) run as ONE GEMM: their
/// weights are concatenated by rows at load, W [Σ out, in], and each layer keeps a narrow view of it, so the
/// separate weights are not held beside the merged one (LoRA fusing and the checkpoint store read the views).
/// ```text
/// [q | k | v] = x · [Wq; Wk; Wv]ᵀ + [bq; bk; bv]        then narrow views along the last dim
/// ```
pub(crate) struct MergedLinear<const N: usize> {
    merged: Linear,     // [N·out, in]
    parts: [Linear; N], // views of `merged`, with the checkpoint paths
}

/// A Vec of exactly N items as an array.
fn array<T, const N: usize>(v: Vec<T>) -> Result<[T; N]> {
    let len = v.len();
    v.try_into().map_err(|_| candle_core::Error::Msg(format!("expected {N} projections, got {len}")).into())
}

impl<const N: usize> MergedLinear<N> {
    /// `prefix.{name}.weight` [out, in] (and `.bias` [out]) for each name.
    pub(crate) fn new(in_dim: usize, out_dim: usize, bias: bool, vb: Vb, names: [&str; N]) -> Result<Self> {
        let loaded = names.iter().map(|n| Linear::new(in_dim, out_dim, bias, vb.pp(n))).collect::<Result<Vec<_>>>()?;
        let weight = Tensor::cat(&loaded.iter().map(|l| l.weight()).collect::<Vec<_>>(), 0)?;
        let biases: Option<Vec<&Tensor>> = loaded.iter().map(|l| l.bias()).collect();
        let bias = biases.map(|b| Tensor::cat(&b, 0)).transpose()?;
        let parts = loaded
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let view = |t: &Tensor| t.narrow(0, i * out_dim, out_dim);
                Ok(Linear::from_weight(view(&weight)?, bias.as_ref().map(view).transpose()?, l.path()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MergedLinear { merged: Linear::from_weight(weight, bias, vb.prefix()), parts: array(parts)? })
    }

    /// The layers as the checkpoint names them (views of the merged weight): what LoRA targets.
    pub(crate) fn parts(&self) -> &[Linear; N] {
        &self.parts
    }

    /// x [..., in] → one [..., out] per layer. With adapters on any of the layers each runs on its own
    /// (so LoRA stays exact); otherwise one GEMM and narrow views of its output.
    pub(crate) fn forward(&self, x: &Tensor, lora: LoraCall) -> Result<[Tensor; N]> {
        if self.parts.iter().any(|p| p.is_adapted(lora)) {
            return array(self.parts.iter().map(|p| p.forward_lora(x, Layout::Tokens, lora)).collect::<Result<Vec<_>>>()?);
        }
        let y = self.merged.forward(x)?;
        let (last, out) = (y.rank() - 1, y.dim(candle_core::D::Minus1)? / N);
        array((0..N).map(|i| y.narrow(last, i * out, out)).collect::<candle_core::Result<Vec<_>>>()?)
    }

    /// The checkpoint tensors these layers were loaded from, as views of the merged ones (see
    /// [`BuildModel::shared_weights`](crate::models::component::BuildModel::shared_weights)).
    pub(crate) fn shared_weights(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for p in &self.parts {
            out.push((format!("{}.weight", p.path()), p.weight().clone()));
            if let Some(b) = p.bias() {
                out.push((format!("{}.bias", p.path()), b.clone()));
            }
        }
        out
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::linear::tests::{max_diff, randn};
    use crate::models::linear::{AdapterLayers, LayerAdapters, LowRank};
    use crate::weights::ParamStore;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    /// One GEMM over the merged weight equals the three separate layers, with and without adapters on one of
    /// them (which makes every part run on its own, with its terms or fused weight).
    #[test]
    fn merged_projections_equal_the_separate_layers_with_and_without_lora() -> Result<()> {
        let (i, o, r) = (6, 4, 2);
        let names = ["to_q", "to_k", "to_v"];
        let mut tensors = BTreeMap::new();
        for n in names {
            tensors.insert(format!("attn.{n}.weight"), randn(&[o, i]));
            tensors.insert(format!("attn.{n}.bias"), randn(&[o]));
        }
        let separate: Vec<Linear> = names
            .iter()
            .map(|n| Linear::from_weight(tensors[&format!("attn.{n}.weight")].clone(), Some(tensors[&format!("attn.{n}.bias")].clone()), &format!("attn.{n}")))
            .collect();
        let store = Arc::new(ParamStore::from_tensors(tensors));
        let merged = MergedLinear::new(i, o, true, store.root().pp("attn"), names)?;
        let x = randn(&[2, 5, i]);
        let mut layers = AdapterLayers::new();
        let term = LowRank { down: randn(&[r, i]), up: randn(&[o, r]), scale: 1.5 };
        layers.insert("attn.to_k".into(), LayerAdapters { merged: None, terms: vec![term] });
        let fused = LayerAdapters { merged: Some(randn(&[o, i])), terms: vec![] };
        let mut fused_layers = AdapterLayers::new();
        fused_layers.insert("attn.to_v".into(), fused);
        for lora in [LoraCall::NONE, LoraCall::new(&layers, 0.7), LoraCall::new(&fused_layers, 1.0)] {
            let got = merged.forward(&x, lora)?;
            for (g, l) in got.iter().zip(&separate) {
                assert!(max_diff(g, &l.forward_lora(&x, Layout::Tokens, lora)?) < 1e-5, "{}", l.path());
            }
        }
        // The parts keep the checkpoint paths and are views of the merged weight.
        assert_eq!(merged.parts().iter().map(|p| p.path().to_string()).collect::<Vec<_>>(), ["attn.to_q", "attn.to_k", "attn.to_v"]);
        assert_eq!(merged.shared_weights().len(), 6);
        assert_eq!(merged.parts()[2].weight().storage_and_layout().1.start_offset(), 2 * o * i);
        Ok(())
    }
}
