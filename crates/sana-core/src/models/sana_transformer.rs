//! Sana's Linear DiT: diffusers `SanaTransformer2DModel` (NVlabs Sana, arXiv 2410.10629).
//!
//! Covers Sana 1.0 (no positional embedding), 2K/4K (2-D sin-cos PE when `interpolation_scale` is set),
//! Sana 1.5 (`qk_norm = "rms_norm_across_heads"`) and Sana-Sprint (`guidance_embeds`).
//! `timestep_scale` and `guidance_embeds_scale` are read by the pipelines, not by the model: the caller
//! passes `t · timestep_scale` and `guidance · guidance_embeds_scale`, as diffusers' pipelines do.
//!
//! ```text
//! x [B,C,H,W] ─ patch_embed (+ sincos PE) ─► tokens [B,N,D]        t ─ time_embed ─► temb [B,6D], emb [B,D]
//! text [B,S,caption] ─ caption_projection ─ caption_norm ─► [B,S,D]
//! for each block:  x += g1 · attn1(modulated LN(x))        ReLU linear attention
//!                  x += attn2(x, text, mask)               softmax cross-attention, no pre-norm
//!                  x += g2 · ff(modulated LN(x))           GLUMBConv on the [B,D,H,W] grid
//! norm_out (modulated LN) ─ proj_out ─ unpatchify ─► [B,out,H,W]
//! ```

use crate::config::SanaTransformerConfig;
use crate::models::component::{BuildModel, Component};
use crate::ops::cross_attention::cross_attention;
use crate::ops::{gated_residual, modulated_layer_norm, relu_linear_attention, rms_norm, silu_depthwise_conv2d_glu, silu_depthwise_conv2d_glu_nhwc};
use crate::weights::Vb;
use crate::{ensure_arg, Result, SanaError};
use candle_core::{DType, Device, Tensor};

pub(crate) mod caption;
pub(crate) mod layers;
use crate::models::linear::{Layout, Linear, LoraCall};
use crate::models::lora::Adapters;
use crate::weights::adapters::{AdapterTarget, AdapterTargets};
pub use caption::{CaptionCache, CaptionState};
use caption::{CaptionInput, CaptionModel};
use layers::{CaptionProjection, MergedLinear, PatchEmbed, TimeEmbed};
use std::sync::Arc;

/// diffusers `Attention(qk_norm="rms_norm_across_heads")` builds `RMSNorm(heads·dim_head, eps=1e-5)`.
const QK_NORM_EPS: f64 = 1e-5;
/// `norm_out = SanaModulatedNorm(inner_dim, eps=1e-6)`, independent of `norm_eps`.
const NORM_OUT_EPS: f64 = 1e-6;
/// `SanaLinearAttnProcessor2_0`'s denominator epsilon.
const LINEAR_ATTN_EPS: f64 = 1e-15;

// ================================================================================================
// Blocks
// ================================================================================================

/// Optional RMSNorm weight (`norm_q` / `norm_k` of the qk-norm variants).
fn qk_norm(cfg: &SanaTransformerConfig, dim: usize, vb: Vb) -> Result<Option<Tensor>> {
    match cfg.qk_norm {
        Some(_) => Ok(Some(vb.get(dim, "weight")?)),
        None => Ok(None),
    }
}

fn apply_norm(x: Tensor, w: &Option<Tensor>) -> Result<Tensor> {
    match w {
        Some(w) => rms_norm(&x, Some(w), None, QK_NORM_EPS),
        None => Ok(x),
    }
}

/// `attn1`: ReLU linear self-attention (`SanaLinearAttnProcessor2_0`).
struct LinearSelfAttention {
    /// to_q, to_k, to_v as one [3D, D] GEMM.
    qkv: MergedLinear<3>,
    norm_q: Option<Tensor>,
    norm_k: Option<Tensor>,
    to_out: Linear,
    heads: usize,
}

impl LinearSelfAttention {
    fn new(cfg: &SanaTransformerConfig, vb: Vb) -> Result<Self> {
        let d = cfg.inner_dim();
        let bias = cfg.attention_bias;
        Ok(LinearSelfAttention {
            qkv: MergedLinear::new(d, d, bias, vb.clone(), ["to_q", "to_k", "to_v"])?,
            norm_q: qk_norm(cfg, d, vb.pp("norm_q"))?,
            norm_k: qk_norm(cfg, d, vb.pp("norm_k"))?,
            to_out: Linear::new(d, d, true, vb.pp("to_out").pp(0))?,
            heads: cfg.num_attention_heads,
        })
    }

    /// x [B, N, D] → [B, N, D]. No mask: the self-attention sees every latent token.
    /// `perturbed_rows` > 0 is a PAG layer (see [`PagInput`]).
    fn forward(&self, x: &Tensor, perturbed_rows: usize, lora: LoraCall) -> Result<Tensor> {
        let o = if perturbed_rows == 0 {
            let [q, k, v] = self.qkv.forward(x, lora)?;
            let (q, k) = (apply_norm(q, &self.norm_q)?, apply_norm(k, &self.norm_k)?);
            self.to_out.forward_lora(&relu_linear_attention(&q, &k, &v, self.heads, LINEAR_ATTN_EPS)?, Layout::Tokens, lora)?
        } else {
            self.forward_pag(x, perturbed_rows, lora)?
        };
        // diffusers clips to the f16 range after the out projection, for f16 only.
        Ok(if o.dtype() == DType::F16 { o.clamp(-65504f32, 65504f32)? } else { o })
    }

    /// diffusers' `PAGCFGSanaLinearAttnProcessor2_0` / `PAGIdentitySanaLinearAttnProcessor2_0`: the first
    /// B − p rows get the linear attention as one batch, the last p rows identity attention
    /// `to_out(to_v(x))`. Like diffusers' PAG processors this skips `norm_q`/`norm_k` on every row
    /// (so PAG on a qk-norm model, Sana 1.5 / Sprint, also changes the unperturbed rows).
    fn forward_pag(&self, x: &Tensor, p: usize, lora: LoraCall) -> Result<Tensor> {
        let proj = |l: &Linear, x: &Tensor| l.forward_lora(x, Layout::Tokens, lora);
        let b = x.dim(0)?;
        let (xo, xp) = (x.narrow(0, 0, b - p)?, x.narrow(0, b - p, p)?);
        let [q, k, v] = self.qkv.forward(&xo, lora)?;
        let o = proj(&self.to_out, &relu_linear_attention(&q, &k, &v, self.heads, LINEAR_ATTN_EPS)?)?;
        let ptb = proj(&self.to_out, &proj(&self.qkv.parts()[2], &xp)?)?;
        Ok(Tensor::cat(&[o, ptb], 0)?)
    }
}

/// `attn2`: softmax cross-attention to the caption (`SanaAttnProcessor2_0`, SDPA), own heads/head dim.
struct CrossAttention {
    to_q: Linear,
    /// to_k, to_v as one [2·inner, kv_in] GEMM (run once per generation with a caption cache).
    kv: MergedLinear<2>,
    norm_q: Option<Tensor>,
    norm_k: Option<Tensor>,
    to_out: Linear,
    heads: usize,
    head_dim: usize,
}

impl CrossAttention {
    fn new(cfg: &SanaTransformerConfig, vb: Vb) -> Result<Self> {
        let d = cfg.inner_dim();
        // `check()` guarantees the three cross-attention fields are set.
        let heads = cfg.num_cross_attention_heads.unwrap_or(0);
        let head_dim = cfg.cross_attention_head_dim.unwrap_or(0);
        let (inner, kv_in) = (heads * head_dim, cfg.cross_attention_dim.unwrap_or(d));
        Ok(CrossAttention {
            to_q: Linear::new(d, inner, true, vb.pp("to_q"))?,
            kv: MergedLinear::new(kv_in, inner, true, vb.clone(), ["to_k", "to_v"])?,
            norm_q: qk_norm(cfg, inner, vb.pp("norm_q"))?,
            norm_k: qk_norm(cfg, inner, vb.pp("norm_k"))?,
            to_out: Linear::new(inner, d, true, vb.pp("to_out").pp(0))?,
            heads,
            head_dim,
        })
    }

    /// The caption side: ctx [B, S, kv_in] → K (after `norm_k`), V [B, H, S, hd]. The same for every step of
    /// a generation (see [`CaptionCache`]).
    fn caption_kv(&self, ctx: &Tensor, lora: LoraCall) -> Result<(Tensor, Tensor)> {
        let (b, s, _) = ctx.dims3()?;
        let [k, v] = self.kv.forward(ctx, lora)?;
        let (k, v) = (self.split_heads(&apply_norm(k, &self.norm_k)?, b, s)?, self.split_heads(&v, b, s)?);
        // A bf16 model on a CPU that multiplies bf16 in bf16 (AMX, vdpbf16ps) holds the caption's K/V in bf16, as
        // diffusers' bf16 pipeline does: the attention's q·kᵀ and p·v then run on that kernel too.
        let bf16_math = ctx.device().is_cpu() && self.kv.parts()[0].weight().dtype() == DType::BF16 && crate::ops::sgemm::bf16_rhs_rounds_lhs();
        Ok(if bf16_math { (k.to_dtype(DType::BF16)?, v.to_dtype(DType::BF16)?) } else { (k, v) })
    }

    /// [B, len, H·hd] → [B, H, len, hd], contiguous.
    fn split_heads(&self, t: &Tensor, b: usize, len: usize) -> Result<Tensor> {
        Ok(t.reshape((b, len, self.heads, self.head_dim))?.transpose(1, 2)?.contiguous()?)
    }

    /// x [B, N, D], (k, v) [B, H, S, hd] from [`CrossAttention::caption_kv`], bias [B, 1, 1, S] (additive) → [B, N, D].
    fn forward(&self, x: &Tensor, (k, v): &(Tensor, Tensor), bias: Option<&Tensor>, lora: LoraCall) -> Result<Tensor> {
        // 1. Query projection (+ qk RMSNorm over all heads), heads still merged: [B, N, H·hd].
        let q = apply_norm(self.to_q.forward_lora(x, Layout::Tokens, lora)?, &self.norm_q)?;
        // 2. softmax(q kᵀ / √hd + bias) (f32) · v per head, merged again: [B, N, H·hd].
        let o = cross_attention(&q, k, v, 1.0 / (self.head_dim as f64).sqrt(), bias)?;
        // 3. Out projection.
        self.to_out.forward_lora(&o, Layout::Tokens, lora)
    }
}

/// `ff`: GLUMBConv (Mix-FFN): 1×1 conv → SiLU → depthwise 3×3 → value·SiLU(gate) → 1×1 conv.
struct GluMbConv {
    conv_inverted: Linear, // [2·hidden, D]
    conv_depth_w: Tensor,  // [2·hidden, 1, 3, 3]
    conv_depth_b: Tensor,  // [2·hidden]
    conv_point: Linear,    // [D, hidden], no bias
    hidden: usize,
}

impl GluMbConv {
    fn new(cfg: &SanaTransformerConfig, vb: Vb) -> Result<Self> {
        let d = cfg.inner_dim();
        let hidden = (cfg.mlp_ratio * d as f64) as usize; // Python int(expand_ratio * in_channels)
        Ok(GluMbConv {
            conv_inverted: Linear::conv1x1(d, 2 * hidden, true, vb.pp("conv_inverted"))?,
            conv_depth_w: vb.pp("conv_depth").get((2 * hidden, 1, 3, 3), "weight")?,
            conv_depth_b: vb.pp("conv_depth").get(2 * hidden, "bias")?,
            conv_point: Linear::conv1x1(hidden, d, false, vb.pp("conv_point"))?,
            hidden,
        })
    }

    /// x [B, N, D] tokens of an h×w grid (row-major) → [B, N, D].
    fn forward(&self, x: &Tensor, h: usize, w: usize, lora: LoraCall) -> Result<Tensor> {
        let (b, n, _) = x.dims3()?;
        let hid = self.hidden;
        if crate::ops::is_cpu_f32(x) {
            // CPU: channels-last throughout. Both 1×1 convs are token-major GEMMs over all B·N tokens,
            // and the depthwise conv reads each pixel's channels contiguously (vectorized over channels).
            let y = self.conv_inverted.forward_lora(x, Layout::Tokens, lora)?;
            let y = silu_depthwise_conv2d_glu_nhwc(&y.reshape((b, h, w, 2 * hid))?, &self.conv_depth_w, Some(&self.conv_depth_b))?;
            return self.conv_point.forward_lora(&y.reshape((b, n, hid))?, Layout::Tokens, lora);
        }
        // 1. 1×1 conv on [B, D, N] (x transposed, no copy) → [B, 2·hid, N].
        let y = self.conv_inverted.forward_lora(&x.transpose(1, 2)?, Layout::Channels, lora)?;
        // 2. SiLU, depthwise 3×3 on the grid [B, 2·hid, h, w], torch.chunk(2, dim=1): value · SiLU(gate).
        let y = silu_depthwise_conv2d_glu(&y.reshape((b, 2 * hid, h, w))?, &self.conv_depth_w, Some(&self.conv_depth_b))?;
        // 3. 1×1 conv back to D channels, tokens-major.
        self.conv_point.forward_lora(&y.reshape((b, hid, n))?, Layout::ChannelsToTokens, lora)
    }
}

/// What every block of one forward shares.
#[derive(Clone, Copy)]
pub(crate) struct BlockShared<'a> {
    /// Additive caption-mask bias [B, 1, 1, S] (f32).
    pub bias: Option<&'a Tensor>,
    /// Modulation [B, 6D] from the time embedding.
    pub temb: &'a Tensor,
    /// Patch-grid height and width.
    pub h: usize,
    pub w: usize,
    /// This call's LoRA adapters and scale.
    pub lora: LoraCall<'a>,
}

/// `SanaTransformerBlock`.
pub(crate) struct SanaTransformerBlock {
    attn1: LinearSelfAttention,
    attn2: CrossAttention,
    ff: GluMbConv,
    scale_shift_table: Tensor, // [6, D]
    /// `norm2` weight and bias when `norm_elementwise_affine` (norm1 never has them).
    norm2_affine: Option<(Tensor, Tensor)>,
    norm_eps: f64,
}

impl SanaTransformerBlock {
    pub(crate) fn new(cfg: &SanaTransformerConfig, vb: Vb) -> Result<Self> {
        let d = cfg.inner_dim();
        let norm2_affine = if cfg.norm_elementwise_affine {
            Some((vb.pp("norm2").get(d, "weight")?, vb.pp("norm2").get(d, "bias")?))
        } else {
            None
        };
        Ok(SanaTransformerBlock {
            attn1: LinearSelfAttention::new(cfg, vb.pp("attn1"))?,
            attn2: CrossAttention::new(cfg, vb.pp("attn2"))?,
            ff: GluMbConv::new(cfg, vb.pp("ff"))?,
            scale_shift_table: vb.get((6, d), "scale_shift_table")?,
            norm2_affine,
            norm_eps: cfg.norm_eps,
        })
    }

    /// The layers a Sana LoRA can target: q/k/v/out of both attentions, the Mix-FFN's 1×1 convs.
    fn lora_targets(&self) -> [&Linear; 10] {
        let (a1, a2, ff) = (&self.attn1, &self.attn2, &self.ff);
        let ([q1, k1, v1], [k2, v2]) = (a1.qkv.parts(), a2.kv.parts());
        [q1, k1, v1, &a1.to_out, &a2.to_q, k2, v2, &a2.to_out, &ff.conv_inverted, &ff.conv_point]
    }

    /// The checkpoint tensors this block holds merged, as views (see [`BuildModel::shared_weights`]).
    pub(crate) fn shared_weights(&self) -> Vec<(String, Tensor)> {
        [self.attn1.qkv.shared_weights(), self.attn2.kv.shared_weights()].concat()
    }

    /// This block's cross-attention K, V [B, H, S, hd] of the caption tokens ctx [B, S, D].
    pub(crate) fn caption_kv(&self, ctx: &Tensor, lora: LoraCall) -> Result<(Tensor, Tensor)> {
        self.attn2.caption_kv(ctx, lora)
    }

    /// x [B, N, D] → [B, N, D], with this block's caption K/V; `perturbed_rows` > 0 makes attn1 a PAG layer
    /// for the last rows.
    pub(crate) fn forward(&self, x: &Tensor, kv: &(Tensor, Tensor), shared: &BlockShared, perturbed_rows: usize) -> Result<Tensor> {
        let BlockShared { bias, temb, h, w, lora } = *shared;
        let (b, _, d) = x.dims3()?;
        // 1. Modulation: table[None] + temb.reshape(B, 6, D) → shift/scale/gate for attention and FFN.
        let m = temb.reshape((b, 6, d))?.broadcast_add(&self.scale_shift_table)?;
        let chunk = |i: usize| m.narrow(1, i, 1); // [B, 1, D]
        let (shift_msa, scale_msa, gate_msa) = (chunk(0)?, chunk(1)?, chunk(2)?);
        let (shift_mlp, scale_mlp, gate_mlp) = (chunk(3)?, chunk(4)?, chunk(5)?);
        // 2. Self-attention: x += gate_msa · attn1(norm1(x)·(1+scale)+shift).
        let nx = modulated_layer_norm(x, &shift_msa, &scale_msa, self.norm_eps, None)?;
        let x = gated_residual(x, &self.attn1.forward(&nx, perturbed_rows, lora)?, &gate_msa)?;
        // 3. Cross-attention, no pre-norm: x += attn2(x, ctx).
        let x = (&x + self.attn2.forward(&x, kv, bias, lora)?)?;
        // 4. Mix-FFN on the grid: x += gate_mlp · ff(norm2(x)·(1+scale)+shift).
        let nx = modulated_layer_norm(&x, &shift_mlp, &scale_mlp, self.norm_eps, self.norm2_affine.as_ref())?;
        gated_residual(&x, &self.ff.forward(&nx, h, w, lora)?, &gate_mlp)
    }
}

// ================================================================================================
// Model
// ================================================================================================

/// Inputs of one transformer call (diffusers' `forward` arguments).
#[derive(Clone)]
pub struct TransformerInput {
    /// Latents [B, in_channels, H, W]; H and W multiples of `patch_size`.
    pub hidden_states: Tensor,
    /// Caption embeddings [B, S, caption_channels].
    pub encoder_hidden_states: Tensor,
    /// [B] float timesteps as the pipeline passes them (0..999 for Sana, [0, 1] for Sprint).
    pub timestep: Tensor,
    /// [B, S], any int/float dtype: 1 keep, 0 drop. `None` attends to every caption token.
    pub encoder_attention_mask: Option<Tensor>,
    /// [B], required by guidance-embedding models (Sprint), already times `guidance_embeds_scale`.
    pub guidance: Option<Tensor>,
    /// ControlNet residuals [B, N, D]: sample j is added after block j + 1 (diffusers' indexing).
    pub controlnet_block_samples: Option<Vec<Tensor>>,
    /// Multiplies every active LoRA term for this call (diffusers' `attention_kwargs["scale"]`); 1.0 as
    /// diffusers' default. No effect while adapters are fused.
    pub lora_scale: f64,
    /// Perturbed-attention guidance for this call. `None`: every block runs normally.
    pub pag: Option<PagInput>,
    /// The generation's caption cache: the caption work is done once per key and reused (see
    /// [`CaptionCache`]). `None` computes it in this call.
    pub caption_cache: Option<Arc<CaptionCache>>,
}

/// Perturbed-attention guidance (diffusers' `SanaPAGPipeline`): in each listed block, `attn1` runs
/// normally on rows [0, B − perturbed_rows) and as identity attention `to_out(to_v(x))` on the last
/// `perturbed_rows` rows (the perturbed copies of the batch). diffusers' PAG processors skip
/// `norm_q`/`norm_k`, so in those blocks no row gets the qk RMSNorm (matters for Sana 1.5 / Sprint).
#[derive(Clone, Debug, PartialEq)]
pub struct PagInput {
    /// 0-based indices into `transformer_blocks`.
    pub layers: Vec<usize>,
    /// How many trailing batch rows are perturbed; 0 < perturbed_rows < B.
    pub perturbed_rows: usize,
}

pub struct SanaTransformer2DModel {
    patch_embed: PatchEmbed,
    time_embed: TimeEmbed,
    caption: CaptionProjection,
    transformer_blocks: Vec<SanaTransformerBlock>,
    scale_shift_table: Tensor, // [2, D]
    proj_out: Linear,          // [p·p·out, D]
    adapters: Adapters,
    cfg: SanaTransformerConfig,
    dtype: DType,
    /// Process-unique: a caption cache entry is keyed on it.
    id: u64,
}

/// Named captures of a forward pass (see [`SanaTransformer2DModel::forward_with_intermediates`]).
pub type Intermediates = Vec<(String, Tensor)>;

impl SanaTransformer2DModel {
    pub fn new(cfg: &SanaTransformerConfig, vb: Vb) -> Result<Self> {
        cfg.check().map_err(|msg| SanaError::InvalidConfig { path: "config.json".into(), msg })?;
        let (d, p) = (cfg.inner_dim(), cfg.patch_size);
        let transformer_blocks = (0..cfg.num_layers)
            .map(|i| SanaTransformerBlock::new(cfg, vb.pp("transformer_blocks").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let adapters = Adapters::new(lora_targets(&transformer_blocks)?, Self::lora_base(&transformer_blocks), vb.device(), vb.dtype());
        Ok(SanaTransformer2DModel {
            adapters,
            patch_embed: PatchEmbed::new(cfg, vb.pp("patch_embed"))?,
            time_embed: TimeEmbed::new(cfg, vb.pp("time_embed"))?,
            caption: CaptionProjection::new(cfg, &vb)?,
            transformer_blocks,
            scale_shift_table: vb.get((2, d), "scale_shift_table")?,
            proj_out: Linear::new(d, p * p * cfg.out_channels(), true, vb.pp("proj_out"))?,
            dtype: vb.dtype(),
            cfg: cfg.clone(),
            id: caption::next_model_id(),
        })
    }

    pub fn config(&self) -> &SanaTransformerConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The LoRA adapters: load, activate, fuse, unload (see [`Adapters`]).
    pub fn adapters(&self) -> &Adapters {
        &self.adapters
    }

    fn lora_base(blocks: &[SanaTransformerBlock]) -> std::collections::BTreeMap<String, Tensor> {
        blocks.iter().flat_map(|b| b.lora_targets()).map(|l| (l.path().to_string(), l.weight().clone())).collect()
    }

    /// Noise/velocity prediction [B, out_channels, H, W].
    pub fn forward(&self, input: &TransformerInput) -> Result<Tensor> {
        self.run(input, None)
    }

    /// The forward pass plus named intermediates: `patch_embed`, `time_embed`,
    /// `time_embed_embedded_timestep`, `caption_norm`, `block_{i}`, `norm_out` (diffusers' names).
    pub fn forward_with_intermediates(&self, input: &TransformerInput) -> Result<(Tensor, Intermediates)> {
        let mut caps = Vec::new();
        let out = self.run(input, Some(&mut caps))?;
        Ok((out, caps))
    }

    fn run(&self, input: &TransformerInput, mut caps: Option<&mut Intermediates>) -> Result<Tensor> {
        let mut capture = |name: &str, t: &Tensor| {
            if let Some(c) = caps.as_deref_mut() {
                c.push((name.to_string(), t.clone()));
            }
        };
        let (b, h, w) = self.check_input(input)?;
        let p = self.cfg.patch_size;
        let (hp, wp) = (h / p, w / p);
        let dev = self.scale_shift_table.device();
        let DeviceInputs { x, timestep } = DeviceInputs::new(&input.hidden_states, &input.timestep, dev, self.dtype)?;
        let guidance = input.guidance.as_ref().map(|g| g.to_device(dev)).transpose()?;

        // 1. Input: patch tokens, timestep (+guidance) modulation, caption tokens.
        let mut x = self.patch_embed.forward(&x)?; // [B, N, D]
        capture("patch_embed", &x);
        let (temb, embedded) = self.time_embed.forward(&timestep, guidance.as_ref(), self.dtype)?;
        capture("time_embed", &temb);
        capture("time_embed_embedded_timestep", &embedded);
        // The caption work (projection, norm, mask bias, every block's K/V), once per generation with a cache.
        let adapters = self.adapters.snapshot();
        let caption = CaptionModel { id: self.id, projection: &self.caption, blocks: &self.transformer_blocks, device: dev, dtype: self.dtype };
        let caption_input = CaptionInput {
            caption: &input.encoder_hidden_states,
            mask: input.encoder_attention_mask.as_ref(),
            adapters: Some(&adapters),
            lora_scale: input.lora_scale,
        };
        let caption = caption.state(&caption_input, input.caption_cache.as_deref())?;
        capture("caption_norm", &caption.ctx); // [B, S, D]

        // 2. Transformer blocks (+ ControlNet residuals after blocks 1..=len), with this call's LoRA snapshot.
        let lora = LoraCall::new(&adapters, input.lora_scale);
        let control = input.controlnet_block_samples.as_deref().unwrap_or(&[]);
        let shared = BlockShared { bias: caption.bias.as_ref(), temb: &temb, h: hp, w: wp, lora };
        for (i, block) in self.transformer_blocks.iter().enumerate() {
            let perturbed = match &input.pag {
                Some(pag) if pag.layers.contains(&i) => pag.perturbed_rows,
                _ => 0,
            };
            x = block.forward(&x, &caption.block_kv(i, block, lora)?, &shared, perturbed)?;
            if i > 0 && i <= control.len() {
                x = (x + control[i - 1].to_device(dev)?.to_dtype(self.dtype)?)?;
            }
            capture(&format!("block_{i}"), &x);
        }

        // 3. Output norm: shift, scale = scale_shift_table[None] + embedded[:, None].
        let m = embedded.unsqueeze(1)?.broadcast_add(&self.scale_shift_table)?; // [B, 2, D]
        let x = modulated_layer_norm(&x, &m.narrow(1, 0, 1)?, &m.narrow(1, 1, 1)?, NORM_OUT_EPS, None)?;
        capture("norm_out", &x);
        let x = self.proj_out.forward(&x)?; // [B, N, p·p·out]

        // 4. Unpatchify: [B, hp, wp, p, p, out] → [B, out, hp, p, wp, p] → [B, out, H, W].
        let out_c = self.cfg.out_channels();
        Ok(x.reshape((b, hp, wp, p, p, out_c))?.permute((0, 5, 1, 3, 2, 4))?.reshape((b, out_c, h, w))?)
    }

    /// Shape checks with the argument names of the JS API. Returns (B, H, W).
    fn check_input(&self, input: &TransformerInput) -> Result<(usize, usize, usize)> {
        let cfg = &self.cfg;
        let mask = input.encoder_attention_mask.as_ref();
        let (b, h, w) = check_dit_inputs(cfg, &input.hidden_states, &input.encoder_hidden_states, mask, &input.timestep)?;
        let p = cfg.patch_size;
        ensure_arg!(input.lora_scale.is_finite(), "loraScale", "expected a finite number, got {}", input.lora_scale);
        match (&input.guidance, cfg.guidance_embeds) {
            (Some(g), true) => ensure_arg!(g.dims() == [b], "guidance", "expected shape [{b}], got {:?}", g.dims()),
            (None, true) => return Err(SanaError::invalid_arg("guidance", "this model has guidance_embeds: a guidance tensor [batch] is required")),
            (Some(_), false) => return Err(SanaError::invalid_arg("guidance", "this model has no guidance embedding (guidance_embeds is false)")),
            (None, false) => {}
        }
        if let Some(samples) = &input.controlnet_block_samples {
            let want = [b, (h / p) * (w / p), cfg.inner_dim()];
            for (i, t) in samples.iter().enumerate() {
                ensure_arg!(t.dims() == want, "controlnetBlockSamples", "sample {i} has shape {:?}, expected {want:?}", t.dims());
            }
        }
        if let Some(pag) = &input.pag {
            let n = cfg.num_layers;
            ensure_arg!(!pag.layers.is_empty(), "pag", "expected at least one layer index");
            if let Some(bad) = pag.layers.iter().find(|&&l| l >= n) {
                return Err(SanaError::invalid_arg("pag", format!("layer {bad} out of range: the model has {n} blocks (0..{n})")));
            }
            ensure_arg!(pag.perturbed_rows > 0 && pag.perturbed_rows < b, "pag",
                "perturbedRows must be in 1..{b} (batch {b} minus at least one unperturbed row), got {}", pag.perturbed_rows);
        }
        Ok((b, h, w))
    }
}

/// Checks of the inputs every Sana DiT takes (the transformer and its ControlNet), with the argument
/// names of the JS API. Returns (B, H, W).
pub(crate) fn check_dit_inputs(
    cfg: &SanaTransformerConfig,
    x: &Tensor,
    e: &Tensor,
    mask: Option<&Tensor>,
    t: &Tensor,
) -> Result<(usize, usize, usize)> {
    ensure_arg!(x.rank() == 4, "hiddenStates", "expected [batch, {}, height, width], got shape {:?}", cfg.in_channels, x.dims());
    let (b, c, h, w) = x.dims4()?;
    ensure_arg!(c == cfg.in_channels, "hiddenStates", "expected {} channels, got {c} (shape {:?})", cfg.in_channels, x.dims());
    let p = cfg.patch_size;
    ensure_arg!(h % p == 0 && w % p == 0 && h > 0 && w > 0, "hiddenStates",
        "height and width must be positive multiples of the patch size {p}, got {h}×{w}");
    ensure_arg!(e.rank() == 3 && e.dim(0)? == b && e.dim(2)? == cfg.caption_channels, "encoderHiddenStates",
        "expected [{b}, seq_len, {}] (batch of hiddenStates, caption_channels), got shape {:?}", cfg.caption_channels, e.dims());
    let s = e.dim(1)?;
    if let Some(m) = mask {
        ensure_arg!(m.dims() == [b, s], "encoderAttentionMask", "expected shape [{b}, {s}], got {:?}", m.dims());
    }
    ensure_arg!(t.dims() == [b], "timestep", "expected one timestep per batch item, shape [{b}], got {:?}", t.dims());
    Ok((b, h, w))
}

/// Inputs moved to the weights' device (they come from JS on the CPU): latents in the model dtype, the
/// timestep as given. The caption and its mask go through [`CaptionModel`].
pub(crate) struct DeviceInputs {
    /// [B, C, H, W].
    pub x: Tensor,
    /// [B].
    pub timestep: Tensor,
}

impl DeviceInputs {
    pub(crate) fn new(x: &Tensor, timestep: &Tensor, dev: &Device, dtype: DType) -> Result<Self> {
        Ok(DeviceInputs { x: x.to_device(dev)?.to_dtype(dtype)?, timestep: timestep.to_device(dev)? })
    }
}

/// What [`SanaTransformerBlock::lora_targets`] offers adapters, by module path.
fn lora_targets(blocks: &[SanaTransformerBlock]) -> Result<AdapterTargets> {
    let mut layers = std::collections::BTreeMap::new();
    for l in blocks.iter().flat_map(|b| b.lora_targets()) {
        let (out_dim, in_dim) = l.weight().dims2()?;
        layers.insert(l.path().to_string(), AdapterTarget { out_dim, in_dim, conv: l.is_conv() });
    }
    let last = blocks.len().saturating_sub(1);
    let described = format!("to_q, to_k, to_v, to_out.0 of attn1 and attn2, ff.conv_inverted and ff.conv_point in transformer_blocks.0–{last}");
    Ok(AdapterTargets { prefix: "transformer", layers, described })
}

impl BuildModel<SanaTransformerConfig> for SanaTransformer2DModel {
    fn build(c: &Component<SanaTransformerConfig>) -> Result<Self> {
        let model = SanaTransformer2DModel::new(&c.config, c.vb())?;
        // The sin-cos PE is a non-persistent buffer in diffusers, so every checkpoint tensor is a weight.
        c.store.ensure_all_used(|_| false)?;
        Ok(model)
    }

    fn shared_weights(&self) -> Vec<(String, Tensor)> {
        self.transformer_blocks.iter().flat_map(|b| b.shared_weights()).collect()
    }
}
