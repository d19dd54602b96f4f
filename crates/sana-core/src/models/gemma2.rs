//! Gemma-2 text encoder: transformers' `Gemma2Model` (eager attention), returning the last hidden state
//! after the final norm. Sana feeds it to the DiT as caption features.
//!
//! ```text
//! h = embed_tokens(ids) · sqrt(hidden_size)                     # normalizer cast to the weight dtype
//! per layer:  h = h + post_attention_layernorm(attn(input_layernorm(h)))
//!             h = h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h)))
//! out = norm(h)
//! ```
//! Tensor names mirror the checkpoint (`embed_tokens.weight`, `layers.{i}.self_attn.q_proj.weight`, …);
//! checkpoints saved with a `model.` prefix are accepted by [`BuildModel`].

use crate::config::Gemma2Config;
use crate::models::component::{BuildModel, Component};
use crate::models::linear::Linear;
use crate::ops::{activation, apply_rope, causal_attention, rms_norm, rope_cos_sin, CausalAttention};
use crate::weights::{RowSource, Vb};
use crate::{ensure_arg, Result};
use candle_core::{DType, Tensor};

// ───────────────────────────────────────── helpers ─────────────────────────────────────────

/// `Gemma2RMSNorm`: x · rsqrt(mean(x²) + eps) · (1 + w), in f32.
struct GemmaRmsNorm {
    /// `1 + w`, precomputed in f32 (what torch computes as `1.0 + self.weight.float()`).
    scale: Tensor,
    eps: f64,
}

impl GemmaRmsNorm {
    fn new(dim: usize, eps: f64, vb: Vb) -> Result<Self> {
        let scale = (vb.get(dim, "weight")?.to_dtype(DType::F32)? + 1.0)?;
        Ok(GemmaRmsNorm { scale, eps })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        rms_norm(x, Some(&self.scale), None, self.eps)
    }
}

/// RoPE tables and the key-padding mask shared by every layer of one forward.
struct LayerInputs<'a> {
    cos: &'a Tensor,
    sin: &'a Tensor,
    /// [B·L], true for real tokens.
    key_mask: &'a [bool],
}

// ───────────────────────────────────────── blocks ──────────────────────────────────────────

/// `Gemma2Attention`: GQA self-attention with RoPE, softcapping and an optional sliding window.
struct Attention {
    q_proj: Linear, // [H·D, hidden]
    k_proj: Linear, // [Hkv·D, hidden]
    v_proj: Linear, // [Hkv·D, hidden]
    o_proj: Linear, // [hidden, H·D]
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    params: CausalAttention,
}

impl Attention {
    fn new(cfg: &Gemma2Config, layer: usize, vb: Vb) -> Result<Self> {
        let (hidden, d) = (cfg.hidden_size, cfg.head_dim);
        let (heads, kv_heads) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let window = if cfg.is_sliding(layer) { cfg.sliding_window } else { None };
        Ok(Attention {
            q_proj: Linear::new(hidden, heads * d, false, vb.pp("q_proj"))?,
            k_proj: Linear::new(hidden, kv_heads * d, false, vb.pp("k_proj"))?,
            v_proj: Linear::new(hidden, kv_heads * d, false, vb.pp("v_proj"))?,
            o_proj: Linear::new(heads * d, hidden, false, vb.pp("o_proj"))?,
            heads,
            kv_heads,
            head_dim: d,
            params: CausalAttention {
                scale: cfg.query_pre_attn_scalar.powf(-0.5),
                softcap: cfg.attn_logit_softcapping,
                window,
            },
        })
    }

    fn forward(&self, x: &Tensor, inp: &LayerInputs) -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        let d = self.head_dim;
        // 1. Projections, split into heads: [B, L, H·D] → [B, H, L, D]; RoPE on q and k.
        let q = self.q_proj.forward(x)?.reshape((b, l, self.heads, d))?.transpose(1, 2)?;
        let k = self.k_proj.forward(x)?.reshape((b, l, self.kv_heads, d))?.transpose(1, 2)?;
        let v = self.v_proj.forward(x)?.reshape((b, l, self.kv_heads, d))?.transpose(1, 2)?;
        let q = apply_rope(&q, inp.cos, inp.sin)?;
        let k = apply_rope(&k, inp.cos, inp.sin)?;
        // 2. softmax(softcap(q kᵀ · scale) + mask) v → [B, H, L, D]
        let o = causal_attention(&q, &k, &v.contiguous()?, inp.key_mask, &self.params)?;
        // 3. Merge heads [B, L, H·D] and project back to hidden.
        self.o_proj.forward(&o.transpose(1, 2)?.reshape((b, l, self.heads * d))?)
    }
}

/// `Gemma2MLP`: down(gelu_tanh(gate(x)) · up(x)).
struct Mlp {
    gate_proj: Linear, // [intermediate, hidden]
    up_proj: Linear,   // [intermediate, hidden]
    down_proj: Linear, // [hidden, intermediate]
    gelu_tanh: bool,
}

impl Mlp {
    fn new(cfg: &Gemma2Config, vb: Vb) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Mlp {
            gate_proj: Linear::new(h, i, false, vb.pp("gate_proj"))?,
            up_proj: Linear::new(h, i, false, vb.pp("up_proj"))?,
            down_proj: Linear::new(i, h, false, vb.pp("down_proj"))?,
            // Validated at config load; erf GELU only for configs that ask for plain "gelu".
            gelu_tanh: cfg.gelu_approximate_tanh().unwrap_or(true),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = self.gate_proj.forward(x)?;
        // candle's `gelu` is the tanh approximation (PyTorch `gelu(approximate="tanh")`).
        let act = if self.gelu_tanh { activation::gelu_tanh(&gate)? } else { gate.gelu_erf()? };
        self.down_proj.forward(&(act * self.up_proj.forward(x)?)?)
    }
}

/// `Gemma2DecoderLayer`: pre- and post-norms around attention and around the MLP.
struct DecoderLayer {
    input_layernorm: GemmaRmsNorm,
    self_attn: Attention,
    post_attention_layernorm: GemmaRmsNorm,
    pre_feedforward_layernorm: GemmaRmsNorm,
    mlp: Mlp,
    post_feedforward_layernorm: GemmaRmsNorm,
}

impl DecoderLayer {
    fn new(cfg: &Gemma2Config, layer: usize, vb: Vb) -> Result<Self> {
        let norm = |name: &str| GemmaRmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, vb.pp(name));
        Ok(DecoderLayer {
            input_layernorm: norm("input_layernorm")?,
            self_attn: Attention::new(cfg, layer, vb.pp("self_attn"))?,
            post_attention_layernorm: norm("post_attention_layernorm")?,
            pre_feedforward_layernorm: norm("pre_feedforward_layernorm")?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
            post_feedforward_layernorm: norm("post_feedforward_layernorm")?,
        })
    }

    fn forward(&self, h: &Tensor, inp: &LayerInputs) -> Result<Tensor> {
        // 1. Attention: h + post_norm(attn(pre_norm(h)))
        let a = self.self_attn.forward(&self.input_layernorm.forward(h)?, inp)?;
        let h = (h + self.post_attention_layernorm.forward(&a)?)?;
        // 2. Feed-forward: h + post_norm(mlp(pre_norm(h)))
        let m = self.mlp.forward(&self.pre_feedforward_layernorm.forward(&h)?)?;
        Ok((&h + self.post_feedforward_layernorm.forward(&m)?)?)
    }
}

// ───────────────────────────────────────── model ───────────────────────────────────────────

/// transformers' `Gemma2Model` without KV cache: the full sequence in, last hidden state out.
pub struct Gemma2Model {
    embed_tokens: RowSource, // [vocab, hidden], left in the file mapping on CPU
    layers: Vec<DecoderLayer>,
    norm: GemmaRmsNorm,
    hidden_size: usize,
    head_dim: usize,
    rope_theta: f64,
}

impl Gemma2Model {
    pub fn new(cfg: &Gemma2Config, vb: Vb) -> Result<Self> {
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(cfg, i, vb.pp("layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Gemma2Model {
            embed_tokens: vb.pp("embed_tokens").get_rows((cfg.vocab_size, cfg.hidden_size), "weight")?,
            layers,
            norm: GemmaRmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("norm"))?,
            hidden_size: cfg.hidden_size,
            head_dim: cfg.head_dim,
            rope_theta: cfg.rope_theta.unwrap_or(10000.0),
        })
    }

    /// input_ids [B, L] (integer), attention_mask [B, L] (nonzero = real token) → [B, L, hidden].
    /// Padded positions get finite, implementation-defined values (compare only where mask = 1).
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let (b, l, key_mask) = self.check_inputs(input_ids, attention_mask)?;
        // 1. Embed and scale by sqrt(hidden), the normalizer rounded to the weight dtype first.
        let dtype = self.embed_tokens.dtype();
        let normalizer = Tensor::new((self.hidden_size as f64).sqrt(), input_ids.device())?.to_dtype(dtype)?;
        let mut h = self.embed_tokens.gather(&input_ids.flatten_all()?)?.reshape((b, l, self.hidden_size))?;
        h = h.broadcast_mul(&normalizer.to_device(h.device())?)?;
        // 2. RoPE tables for positions 0..L (f32), shared by every layer.
        let (cos, sin) = rope_cos_sin(self.head_dim, self.rope_theta, l, h.device())?;
        let inp = LayerInputs { cos: &cos, sin: &sin, key_mask: &key_mask };
        // 3. Decoder layers, then the final norm.
        for layer in &self.layers {
            h = layer.forward(&h, &inp)?;
        }
        self.norm.forward(&h)
    }

    /// Validate shapes, dtypes and id range; return (B, L, key mask as bools).
    fn check_inputs(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<(usize, usize, Vec<bool>)> {
        let dims = input_ids.dims();
        ensure_arg!(dims.len() == 2 && dims[0] > 0 && dims[1] > 0, "inputIds",
            "expected shape [batch, seqLen] with both > 0, got {dims:?}");
        ensure_arg!(matches!(input_ids.dtype(), DType::I64 | DType::U32 | DType::U8), "inputIds",
            "expected an integer tensor, got {:?}", input_ids.dtype());
        ensure_arg!(attention_mask.dims() == dims, "attentionMask",
            "expected shape {dims:?} (the shape of inputIds), got {:?}", attention_mask.dims());
        let ids = input_ids.to_dtype(DType::I64)?.flatten_all()?.to_vec1::<i64>()?;
        let vocab = self.embed_tokens.dims()[0];
        if let Some(bad) = ids.iter().find(|&&i| i < 0 || i as usize >= vocab) {
            return Err(crate::SanaError::invalid_arg("inputIds", format!("token id {bad} is outside [0, {vocab})")));
        }
        let mask = attention_mask.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok((dims[0], dims[1], mask.iter().map(|&m| m != 0.0).collect()))
    }
}

impl BuildModel<Gemma2Config> for Gemma2Model {
    /// Builds from `embed_tokens.weight`, … or, for checkpoints saved from a causal-LM wrapper,
    /// `model.embed_tokens.weight`, … (whose tied `lm_head.weight`, if stored, is not needed).
    fn build(c: &Component<Gemma2Config>) -> Result<Self> {
        let root = c.vb();
        let prefixed = root.contains("model.embed_tokens.weight");
        let model = Gemma2Model::new(&c.config, if prefixed { root.pp("model") } else { root })?;
        c.store.ensure_all_used(|name| prefixed && name == "lm_head.weight")?;
        Ok(model)
    }
}
