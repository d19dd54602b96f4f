//! Config structs that mirror each component's `config.json` (serde names = JSON keys), validated at load.

use crate::{Result, SanaError};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Read a JSON file. Python's `json` writes `NaN`, `Infinity` and `-Infinity` (diffusers' scheduler
/// configs contain `-Infinity`); those bare tokens are accepted and read as `null`, which the typed
/// structs below never need. The TypeScript side parses scheduler configs itself with the real values.
pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SanaError::not_found("file", path),
        _ => SanaError::Io { path: path.to_path_buf(), source: e },
    })?;
    parse_json_str(&text, &path.display().to_string())
}

/// [`read_json`] for JSON text from elsewhere (`what` names it in errors).
pub fn parse_json_str(text: &str, what: &str) -> Result<serde_json::Value> {
    serde_json::from_str(&replace_nonfinite(text)).map_err(|e| SanaError::InvalidJson { path: what.into(), msg: e.to_string() })
}

/// Replace bare NaN / Infinity / -Infinity outside strings with `null`.
fn replace_nonfinite(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("NaN") && !text.contains("Infinity") {
        return text.into();
    }
    let mut out = String::with_capacity(text.len());
    let (mut in_str, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_str {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
        } else {
            let tok = ["-Infinity", "Infinity", "NaN"].into_iter().find(|t| rest.starts_with(t));
            if let Some(t) = tok {
                out.push_str("null");
                rest = &rest[t.len()..];
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out.into()
}

/// Checks and normalisation run once, right after a config is parsed.
pub trait ValidateConfig: Sized {
    fn validate(self, _path: &Path) -> Result<Self> {
        Ok(self)
    }
}

/// Parse `dir/config.json` into `T`, checking `_class_name` when the config has one.
pub fn load_config<T: for<'de> Deserialize<'de> + ValidateConfig>(dir: &Path, expected_classes: &[&str]) -> Result<T> {
    if !dir.is_dir() {
        return Err(SanaError::not_found("component folder", dir));
    }
    let path = dir.join("config.json");
    let json = read_json(&path)?;
    if let Some(class) = json.get("_class_name").and_then(|c| c.as_str()) {
        if !expected_classes.contains(&class) {
            return Err(SanaError::UnknownClass {
                path,
                class: class.to_string(),
                expected: expected_classes.join(" or "),
            });
        }
    }
    parse_config(json, &path)
}

/// A parsed config value → `T`, validated; `path` names the source in errors (a file, or e.g. `<vae config>`).
pub fn parse_config<T: for<'de> Deserialize<'de> + ValidateConfig>(json: serde_json::Value, path: &Path) -> Result<T> {
    // serde_path_to_error names the offending key ("decoder_block_out_channels: invalid type …").
    let cfg: T = serde_path_to_error::deserialize(json)
        .map_err(|e| SanaError::InvalidConfig { path: path.to_path_buf(), msg: format!("{}: {}", e.path(), e.inner()) })?;
    cfg.validate(path)
}

fn default_true() -> bool {
    true
}

/// `SanaTransformer2DModel` config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SanaTransformerConfig {
    #[serde(default = "d_in_channels")]
    pub in_channels: usize,
    #[serde(default)]
    pub out_channels: Option<usize>,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_head_dim")]
    pub attention_head_dim: usize,
    #[serde(default = "d_layers")]
    pub num_layers: usize,
    #[serde(default = "d_cross_heads")]
    pub num_cross_attention_heads: Option<usize>,
    #[serde(default = "d_cross_head_dim")]
    pub cross_attention_head_dim: Option<usize>,
    #[serde(default = "d_cross_dim")]
    pub cross_attention_dim: Option<usize>,
    #[serde(default = "d_caption")]
    pub caption_channels: usize,
    #[serde(default = "d_mlp_ratio")]
    pub mlp_ratio: f64,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default = "d_sample_size")]
    pub sample_size: usize,
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    #[serde(default)]
    pub norm_elementwise_affine: bool,
    #[serde(default = "d_norm_eps")]
    pub norm_eps: f64,
    /// `None` (absent or null) means no positional embedding (Sana 1.0 1024px).
    #[serde(default)]
    pub interpolation_scale: Option<f64>,
    #[serde(default)]
    pub guidance_embeds: bool,
    #[serde(default = "d_guidance_scale")]
    pub guidance_embeds_scale: f64,
    #[serde(default)]
    pub qk_norm: Option<String>,
    #[serde(default = "d_timestep_scale")]
    pub timestep_scale: f64,
}
fn d_in_channels() -> usize { 32 }
fn d_heads() -> usize { 70 }
fn d_head_dim() -> usize { 32 }
fn d_layers() -> usize { 20 }
fn d_cross_heads() -> Option<usize> { Some(20) }
fn d_cross_head_dim() -> Option<usize> { Some(112) }
fn d_cross_dim() -> Option<usize> { Some(2240) }
fn d_caption() -> usize { 2304 }
fn d_mlp_ratio() -> f64 { 2.5 }
fn d_sample_size() -> usize { 32 }
fn d_patch() -> usize { 1 }
fn d_norm_eps() -> f64 { 1e-6 }
fn d_guidance_scale() -> f64 { 0.1 }
fn d_timestep_scale() -> f64 { 1.0 }

impl SanaTransformerConfig {
    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }
    pub fn out_channels(&self) -> usize {
        self.out_channels.unwrap_or(self.in_channels)
    }

    /// Structural checks the model relies on (run at load and again when a model is built).
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.patch_size == 0 || self.num_attention_heads == 0 || self.attention_head_dim == 0 {
            return Err("patch_size, num_attention_heads and attention_head_dim must be positive".into());
        }
        match (self.cross_attention_dim, self.num_cross_attention_heads, self.cross_attention_head_dim) {
            (Some(d), Some(h), Some(hd)) if d > 0 && h > 0 && hd > 0 => {}
            // diffusers' block would fail in forward without cross-attention (norm2 is never built).
            _ => return Err("cross_attention_dim, num_cross_attention_heads and cross_attention_head_dim must be set".into()),
        }
        match self.qk_norm.as_deref() {
            None | Some("rms_norm_across_heads") => {}
            Some(other) => return Err(format!("qk_norm \"{other}\" is not supported (expected null or \"rms_norm_across_heads\")")),
        }
        if self.interpolation_scale.is_some() && self.inner_dim() % 4 != 0 {
            return Err(format!("the sin-cos positional embedding needs inner dim divisible by 4, got {}", self.inner_dim()));
        }
        Ok(())
    }
}

/// `SanaControlNetModel` config: the transformer's keys without qk-norm, guidance embedding or
/// timestep scale (its blocks are Sana 1.0 blocks), and 7 layers by default.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SanaControlNetConfig {
    #[serde(default = "d_in_channels")]
    pub in_channels: usize,
    #[serde(default)]
    pub out_channels: Option<usize>,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_head_dim")]
    pub attention_head_dim: usize,
    #[serde(default = "d_controlnet_layers")]
    pub num_layers: usize,
    #[serde(default = "d_cross_heads")]
    pub num_cross_attention_heads: Option<usize>,
    #[serde(default = "d_cross_head_dim")]
    pub cross_attention_head_dim: Option<usize>,
    #[serde(default = "d_cross_dim")]
    pub cross_attention_dim: Option<usize>,
    #[serde(default = "d_caption")]
    pub caption_channels: usize,
    #[serde(default = "d_mlp_ratio")]
    pub mlp_ratio: f64,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default = "d_sample_size")]
    pub sample_size: usize,
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    #[serde(default)]
    pub norm_elementwise_affine: bool,
    #[serde(default = "d_norm_eps")]
    pub norm_eps: f64,
    /// `None` (absent or null) means no positional embedding.
    #[serde(default)]
    pub interpolation_scale: Option<f64>,
}
fn d_controlnet_layers() -> usize { 7 }

impl SanaControlNetConfig {
    /// The same widths as a transformer config, so the ControlNet is built from the transformer's
    /// blocks and embeddings.
    pub fn transformer_config(&self) -> SanaTransformerConfig {
        SanaTransformerConfig {
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            num_attention_heads: self.num_attention_heads,
            attention_head_dim: self.attention_head_dim,
            num_layers: self.num_layers,
            num_cross_attention_heads: self.num_cross_attention_heads,
            cross_attention_head_dim: self.cross_attention_head_dim,
            cross_attention_dim: self.cross_attention_dim,
            caption_channels: self.caption_channels,
            mlp_ratio: self.mlp_ratio,
            dropout: self.dropout,
            attention_bias: self.attention_bias,
            sample_size: self.sample_size,
            patch_size: self.patch_size,
            norm_elementwise_affine: self.norm_elementwise_affine,
            norm_eps: self.norm_eps,
            interpolation_scale: self.interpolation_scale,
            guidance_embeds: false,
            guidance_embeds_scale: d_guidance_scale(),
            qk_norm: None,
            timestep_scale: d_timestep_scale(),
        }
    }
}

/// A string-or-list config value (diffusers lets per-block options be a single value or a tuple).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    /// The value for block `i` of `n`.
    pub fn get(&self, i: usize) -> T {
        match self {
            OneOrMany::One(v) => v.clone(),
            OneOrMany::Many(v) => v[i.min(v.len() - 1)].clone(),
        }
    }
}

/// `AutoencoderDC` config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AutoencoderDCConfig {
    #[serde(default = "d_vae_in")]
    pub in_channels: usize,
    #[serde(default = "d_latent")]
    pub latent_channels: usize,
    #[serde(default = "d_vae_head_dim")]
    pub attention_head_dim: usize,
    pub encoder_block_types: OneOrMany<String>,
    pub decoder_block_types: OneOrMany<String>,
    pub encoder_block_out_channels: Vec<usize>,
    pub decoder_block_out_channels: Vec<usize>,
    pub encoder_layers_per_block: Vec<usize>,
    pub decoder_layers_per_block: Vec<usize>,
    pub encoder_qkv_multiscales: Vec<Vec<usize>>,
    pub decoder_qkv_multiscales: Vec<Vec<usize>>,
    #[serde(default = "d_upsample")]
    pub upsample_block_type: String,
    #[serde(default = "d_downsample")]
    pub downsample_block_type: String,
    #[serde(default = "d_rms")]
    pub decoder_norm_types: OneOrMany<String>,
    #[serde(default = "d_silu")]
    pub decoder_act_fns: OneOrMany<String>,
    #[serde(default = "d_relu")]
    pub decoder_conv_act_fn: String,
    #[serde(default = "default_true")]
    pub encoder_out_shortcut: bool,
    #[serde(default = "default_true")]
    pub decoder_in_shortcut: bool,
    #[serde(default = "d_scaling")]
    pub scaling_factor: f64,
}

/// Values `AutoencoderDC` implements for each string key (diffusers' `get_block`, `get_normalization`,
/// `get_activation`, `DCUpBlock2d`/`DCDownBlock2d`).
pub const VAE_BLOCK_TYPES: [&str; 2] = ["ResBlock", "EfficientViTBlock"];
pub const VAE_NORM_TYPES: [&str; 2] = ["rms_norm", "batch_norm"];
pub const VAE_ACTIVATIONS: [&str; 4] = ["silu", "swish", "relu", "gelu"];

impl AutoencoderDCConfig {
    /// Structural checks, each message starting with the offending key (run at load and when a model is
    /// built), so that an unsupported variant fails here instead of as a confusing shape error.
    pub fn check(&self) -> std::result::Result<(), String> {
        fn ensure(cond: bool, msg: impl FnOnce() -> String) -> std::result::Result<(), String> {
            if cond { Ok(()) } else { Err(msg()) }
        }
        // `fold_case`: diffusers' `get_activation` lower-cases its name; the other keys are matched exactly.
        fn one_of(key: &str, v: &OneOrMany<String>, n: usize, allowed: &[&str], fold_case: bool) -> std::result::Result<(), String> {
            let values = match v {
                OneOrMany::One(x) => std::slice::from_ref(x),
                OneOrMany::Many(xs) => xs.as_slice(),
            };
            ensure(matches!(v, OneOrMany::One(_)) || values.len() == n, || format!("{key}: expected one value or {n} (one per block), got {}", values.len()))?;
            let ok = |x: &String| allowed.contains(&if fold_case { x.to_ascii_lowercase() } else { x.clone() }.as_str());
            match values.iter().find(|x| !ok(x)) {
                Some(bad) => Err(format!("{key}: unsupported value \"{bad}\" (expected {})", allowed.join(", "))),
                None => Ok(()),
            }
        }
        for (side, ch, layers, scales) in [
            ("encoder", &self.encoder_block_out_channels, &self.encoder_layers_per_block, &self.encoder_qkv_multiscales),
            ("decoder", &self.decoder_block_out_channels, &self.decoder_layers_per_block, &self.decoder_qkv_multiscales),
        ] {
            let n = ch.len();
            ensure(n >= 2, || format!("{side}_block_out_channels: expected at least 2 stages, got {n}"))?;
            ensure(layers.len() == n, || format!("{side}_layers_per_block: expected {n} entries (one per stage), got {}", layers.len()))?;
            ensure(scales.len() == n, || format!("{side}_qkv_multiscales: expected {n} entries (one per stage), got {}", scales.len()))?;
            ensure(ch.iter().all(|&c| c > 0), || format!("{side}_block_out_channels: every width must be > 0"))?;
            ensure(ch[n - 1] % self.latent_channels.max(1) == 0,
                || format!("{side}_block_out_channels: last width {} is not a multiple of latent_channels {}", ch[n - 1], self.latent_channels))?;
            ensure(scales.iter().flatten().all(|k| k % 2 == 1), || format!("{side}_qkv_multiscales: kernels must be odd"))?;
            ensure(layers[0] > 0 || layers[1] > 0, || format!("{side}_layers_per_block: the first two stages cannot both be empty"))?;
        }
        let n = self.decoder_block_out_channels.len();
        one_of("encoder_block_types", &self.encoder_block_types, self.encoder_block_out_channels.len(), &VAE_BLOCK_TYPES, false)?;
        one_of("decoder_block_types", &self.decoder_block_types, n, &VAE_BLOCK_TYPES, false)?;
        one_of("decoder_norm_types", &self.decoder_norm_types, n, &VAE_NORM_TYPES, false)?;
        one_of("decoder_act_fns", &self.decoder_act_fns, n, &VAE_ACTIVATIONS, true)?;
        one_of("decoder_conv_act_fn", &OneOrMany::One(self.decoder_conv_act_fn.clone()), 1, &VAE_ACTIVATIONS, true)?;
        one_of("upsample_block_type", &OneOrMany::One(self.upsample_block_type.clone()), 1, &["interpolate", "pixel_shuffle"], false)?;
        one_of("downsample_block_type", &OneOrMany::One(self.downsample_block_type.clone()), 1, &["conv", "pixel_unshuffle"], false)?;
        ensure(self.in_channels > 0 && self.latent_channels > 0, || "in_channels and latent_channels must be > 0".into())?;
        ensure(self.attention_head_dim > 0, || "attention_head_dim must be > 0".into())
    }
}

fn d_vae_in() -> usize { 3 }
fn d_latent() -> usize { 32 }
fn d_vae_head_dim() -> usize { 32 }
fn d_upsample() -> String { "pixel_shuffle".into() }
fn d_downsample() -> String { "pixel_unshuffle".into() }
fn d_rms() -> OneOrMany<String> { OneOrMany::One("rms_norm".into()) }
fn d_silu() -> OneOrMany<String> { OneOrMany::One("silu".into()) }
fn d_relu() -> String { "relu".into() }
fn d_scaling() -> f64 { 1.0 }

/// `Gemma2Model` config; accepts transformers 4.x and 5.x key styles.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Gemma2Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    #[serde(default = "d_rms_eps")]
    pub rms_norm_eps: f64,
    /// 4.x: top-level `rope_theta`; 5.x: `rope_parameters.rope_theta` (folded in by `normalize`).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    pub query_pre_attn_scalar: f64,
    #[serde(default)]
    pub attn_logit_softcapping: Option<f64>,
    #[serde(default)]
    pub final_logit_softcapping: Option<f64>,
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// 5.x: explicit per-layer `sliding_attention` / `full_attention`; 4.x: absent, even layers slide.
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    #[serde(default = "d_act")]
    pub hidden_activation: String,
    #[serde(default)]
    pub pad_token_id: Option<i64>,
    #[serde(default)]
    pub bos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    /// 5.x `dtype`, 4.x `torch_dtype`.
    #[serde(default, alias = "torch_dtype")]
    pub dtype: Option<String>,
}
fn d_rms_eps() -> f64 { 1e-6 }
fn d_act() -> String { "gelu_pytorch_tanh".into() }

impl ValidateConfig for SanaTransformerConfig {
    fn validate(self, path: &Path) -> Result<Self> {
        self.check().map_err(|msg| SanaError::InvalidConfig { path: path.to_path_buf(), msg })?;
        Ok(self)
    }
}
impl ValidateConfig for SanaControlNetConfig {
    fn validate(self, path: &Path) -> Result<Self> {
        self.transformer_config().check().map_err(|msg| SanaError::InvalidConfig { path: path.to_path_buf(), msg })?;
        Ok(self)
    }
}
impl ValidateConfig for AutoencoderDCConfig {
    fn validate(self, path: &Path) -> Result<Self> {
        self.check().map_err(|msg| SanaError::InvalidConfig { path: path.to_path_buf(), msg })?;
        Ok(self)
    }
}
impl ValidateConfig for Gemma2Config {
    fn validate(self, path: &Path) -> Result<Self> {
        self.normalize(path)
    }
}

impl Gemma2Config {
    /// Fold the two key styles into one: `rope_theta` always set, `layer_types` always explicit.
    pub fn normalize(mut self, path: &Path) -> Result<Self> {
        if self.rope_theta.is_none() {
            self.rope_theta = self
                .rope_parameters
                .as_ref()
                .and_then(|p| p.get("rope_theta"))
                .and_then(|v| v.as_f64())
                .or(Some(10000.0));
        }
        let n = self.num_hidden_layers;
        let types = self.layer_types.take().unwrap_or_else(|| {
            (0..n).map(|i| if i % 2 == 0 { "sliding_attention" } else { "full_attention" }.to_string()).collect()
        });
        if types.len() != n {
            return Err(SanaError::InvalidConfig {
                path: path.to_path_buf(),
                msg: format!("layer_types has {} entries for {n} layers", types.len()),
            });
        }
        if let Some(bad) = types.iter().find(|t| *t != "sliding_attention" && *t != "full_attention") {
            return Err(SanaError::InvalidConfig { path: path.to_path_buf(), msg: format!("unknown layer type \"{bad}\"") });
        }
        self.layer_types = Some(types);
        let bad = |msg: String| Err(SanaError::InvalidConfig { path: path.to_path_buf(), msg });
        if self.gelu_approximate_tanh().is_none() {
            return bad(format!("unsupported hidden_activation \"{}\"", self.hidden_activation));
        }
        if self.num_key_value_heads == 0 || !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return bad(format!("num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim must be even for RoPE, got {}", self.head_dim));
        }
        if self.query_pre_attn_scalar <= 0.0 {
            return bad(format!("query_pre_attn_scalar must be positive, got {}", self.query_pre_attn_scalar));
        }
        Ok(self)
    }

    /// `Some(true)` for the tanh-approximated GELU (`gelu_pytorch_tanh`, `gelu_new`), `Some(false)` for
    /// the exact erf GELU (`gelu`), `None` for anything else.
    pub fn gelu_approximate_tanh(&self) -> Option<bool> {
        match self.hidden_activation.as_str() {
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Some(true),
            "gelu" => Some(false),
            _ => None,
        }
    }

    pub fn is_sliding(&self, layer: usize) -> bool {
        self.layer_types.as_ref().map(|t| t[layer] == "sliding_attention").unwrap_or(layer % 2 == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonfinite_tokens_outside_strings_become_null() {
        let s = r#"{"a": -Infinity, "b": "NaN -Infinity", "c": [NaN, Infinity], "d": "\"Infinity"}"#;
        let v: serde_json::Value = serde_json::from_str(&replace_nonfinite(s)).unwrap();
        assert!(v["a"].is_null());
        assert_eq!(v["b"], "NaN -Infinity");
        assert!(v["c"][0].is_null() && v["c"][1].is_null());
        assert_eq!(v["d"], "\"Infinity");
    }

    #[test]
    fn gemma_4x_config_defaults_to_even_sliding_layers() {
        let json = serde_json::json!({
            "vocab_size": 10, "hidden_size": 4, "intermediate_size": 8, "num_hidden_layers": 3,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 2,
            "query_pre_attn_scalar": 2, "rope_theta": 500.0, "torch_dtype": "bfloat16"
        });
        let c: Gemma2Config = serde_json::from_value(json).unwrap();
        let c = c.normalize(Path::new("x")).unwrap();
        assert_eq!(c.rope_theta, Some(500.0));
        assert_eq!(c.dtype.as_deref(), Some("bfloat16"));
        assert!(c.is_sliding(0) && !c.is_sliding(1) && c.is_sliding(2));
    }
}
