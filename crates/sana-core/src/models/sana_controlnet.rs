//! diffusers `SanaControlNetModel`: a copy of the transformer's first `num_layers` blocks whose outputs,
//! projected by zero-initialised linears, are added to the transformer after blocks 1…N
//! ([`TransformerInput::controlnet_block_samples`](crate::models::sana_transformer::TransformerInput)).
//!
//! ```text
//! x, cond [B,C,H,W] ─ patch_embed (shared) ─► x + input_block(cond)  [B,N,D]
//! t ─ time_embed ─► temb      text ─ caption_projection ─ caption_norm ─► ctx
//! for k in 0..num_layers:  x = block_k(x)   sample_k = controlnet_blocks[k](x) · conditioning_scale
//! ```

use crate::config::SanaControlNetConfig;
use crate::models::component::{BuildModel, Component};
use crate::models::linear::{Linear, LoraCall};
use crate::models::sana_transformer::layers::{CaptionProjection, PatchEmbed, TimeEmbed};
use crate::models::sana_transformer::caption::{next_model_id, CaptionCache, CaptionInput, CaptionModel};
use crate::models::sana_transformer::{check_dit_inputs, BlockShared, DeviceInputs, SanaTransformerBlock};
use crate::weights::Vb;
use crate::{ensure_arg, Result, SanaError};
use candle_core::{DType, Tensor};
use std::sync::Arc;

/// Inputs of one ControlNet call (diffusers' `forward` arguments).
#[derive(Clone)]
pub struct ControlNetInput {
    /// Latents [B, in_channels, H, W], as given to the transformer.
    pub hidden_states: Tensor,
    /// Caption embeddings [B, S, caption_channels].
    pub encoder_hidden_states: Tensor,
    /// [B] float timesteps, as given to the transformer.
    pub timestep: Tensor,
    /// [B, S]: 1 keep, 0 drop. `None` attends to every caption token.
    pub encoder_attention_mask: Option<Tensor>,
    /// The control image's VAE latent × scaling_factor, same shape as `hidden_states`.
    pub controlnet_cond: Tensor,
    /// Multiplies every returned sample (diffusers' `conditioning_scale`, default 1.0).
    pub conditioning_scale: f64,
    /// The generation's caption cache (the transformer's may be shared: entries are per model). `None`
    /// computes the caption work in this call.
    pub caption_cache: Option<Arc<CaptionCache>>,
}

pub struct SanaControlNetModel {
    patch_embed: PatchEmbed,
    time_embed: TimeEmbed,
    caption: CaptionProjection,
    transformer_blocks: Vec<SanaTransformerBlock>,
    input_block: Linear,            // [D, D]
    controlnet_blocks: Vec<Linear>, // num_layers × [D, D]
    cfg: SanaControlNetConfig,
    dtype: DType,
    /// Process-unique: a caption cache entry is keyed on it.
    id: u64,
}

impl SanaControlNetModel {
    pub fn new(cfg: &SanaControlNetConfig, vb: Vb) -> Result<Self> {
        let tcfg = cfg.transformer_config();
        tcfg.check().map_err(|msg| SanaError::InvalidConfig { path: "config.json".into(), msg })?;
        let d = tcfg.inner_dim();
        let n = cfg.num_layers;
        Ok(SanaControlNetModel {
            patch_embed: PatchEmbed::new(&tcfg, vb.pp("patch_embed"))?,
            time_embed: TimeEmbed::new(&tcfg, vb.pp("time_embed"))?,
            caption: CaptionProjection::new(&tcfg, &vb)?,
            transformer_blocks: (0..n).map(|i| SanaTransformerBlock::new(&tcfg, vb.pp("transformer_blocks").pp(i))).collect::<Result<_>>()?,
            input_block: Linear::new(d, d, true, vb.pp("input_block"))?,
            controlnet_blocks: (0..n).map(|i| Linear::new(d, d, true, vb.pp("controlnet_blocks").pp(i))).collect::<Result<_>>()?,
            dtype: vb.dtype(),
            cfg: cfg.clone(),
            id: next_model_id(),
        })
    }

    pub fn config(&self) -> &SanaControlNetConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The block samples: `num_layers` tensors [B, N, D] (N = H·W / patch²), already × conditioning_scale,
    /// in the model dtype.
    pub fn forward(&self, input: &ControlNetInput) -> Result<Vec<Tensor>> {
        let tcfg = self.cfg.transformer_config();
        let mask = input.encoder_attention_mask.as_ref();
        let (_, h, w) = check_dit_inputs(&tcfg, &input.hidden_states, &input.encoder_hidden_states, mask, &input.timestep)?;
        let cond = &input.controlnet_cond;
        ensure_arg!(cond.dims() == input.hidden_states.dims(), "controlnetCond",
            "expected the shape of hiddenStates {:?}, got {:?}", input.hidden_states.dims(), cond.dims());
        let scale = input.conditioning_scale;
        ensure_arg!(scale.is_finite(), "conditioningScale", "expected a finite number, got {scale}");
        let dev = self.input_block.weight().device();
        let DeviceInputs { x, timestep } = DeviceInputs::new(&input.hidden_states, &input.timestep, dev, self.dtype)?;
        let cond = cond.to_device(dev)?.to_dtype(self.dtype)?;

        // 1. Input: x and the condition through the same patch_embed, the condition via input_block.
        let x = self.patch_embed.forward(&x)?; // [B, N, D]
        let mut x = (x + self.input_block.forward(&self.patch_embed.forward(&cond)?)?)?;
        let (temb, _) = self.time_embed.forward(&timestep, None, self.dtype)?;
        // The caption work (projection, norm, mask bias, every block's K/V), once per generation with a cache.
        // The ControlNet has no LoRA targets: its blocks run their base weights.
        let caption = CaptionModel { id: self.id, projection: &self.caption, blocks: &self.transformer_blocks, device: dev, dtype: self.dtype };
        let caption_input = CaptionInput { caption: &input.encoder_hidden_states, mask, adapters: None, lora_scale: 1.0 };
        let caption = caption.state(&caption_input, input.caption_cache.as_deref())?;

        // 2. Blocks; each output → controlnet_blocks[k] → × conditioning_scale.
        let p = tcfg.patch_size;
        let shared = BlockShared { bias: caption.bias.as_ref(), temb: &temb, h: h / p, w: w / p, lora: LoraCall::NONE };
        let mut samples = Vec::with_capacity(self.transformer_blocks.len());
        for (i, (block, head)) in self.transformer_blocks.iter().zip(&self.controlnet_blocks).enumerate() {
            x = block.forward(&x, &caption.block_kv(i, block, LoraCall::NONE)?, &shared, 0)?;
            samples.push(head.forward(&x)?.affine(scale, 0.0)?);
        }
        Ok(samples)
    }
}

impl BuildModel<SanaControlNetConfig> for SanaControlNetModel {
    fn build(c: &Component<SanaControlNetConfig>) -> Result<Self> {
        let model = SanaControlNetModel::new(&c.config, c.vb())?;
        c.store.ensure_all_used(|_| false)?;
        Ok(model)
    }

    fn shared_weights(&self) -> Vec<(String, Tensor)> {
        self.transformer_blocks.iter().flat_map(|b| b.shared_weights()).collect()
    }
}
