//! Adapter (LoRA) files → low-rank pairs keyed by the model's module paths, checked against the model
//! before anything is attached. Every key layout we accept is mapped here and nowhere else.
//!
//! Accepted: the diffusers/peft layout that `save_lora_weights` and diffusers' DreamBooth-LoRA scripts
//! write — `transformer.<module>.lora_A.weight` [r, in] (1×1 conv: [r, in, 1, 1]) and `.lora_B.weight`
//! [out, r] ([out, r, 1, 1]) — and the same keys without the `transformer.` prefix (a raw
//! `get_peft_model_state_dict`). peft's `LoraConfig` comes from the safetensors metadata entry
//! `lora_adapter_metadata` (`transformer.`-prefixed fields); without it, alpha = r, as in diffusers.
//! Scaling is peft's: alpha / r (alpha / √r with `use_rslora`), with `alpha_pattern` / `rank_pattern`
//! overrides per module.
//!
//! Rejected with an error naming the key, never skipped: any other key (kohya's `lora_unet_…` /
//! `lora_down` layout, which diffusers does not convert for Sana either; text-encoder keys; DoRA
//! magnitudes; LoRA biases), a layer the model has no targetable Linear for, and shapes or ranks that do
//! not fit.

use crate::weights::{decode_tensor, WeightFiles};
use crate::{Result, SanaError};
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The metadata entry diffusers' `save_lora_weights` writes the adapter's `LoraConfig` to.
const METADATA_KEY: &str = "lora_adapter_metadata";

/// What a model offers an adapter at one module path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdapterTarget {
    pub out_dim: usize,
    pub in_dim: usize,
    /// A 1×1 conv: its LoRA factors are 1×1 convs too.
    pub conv: bool,
}

/// The layers of a model an adapter may touch.
pub struct AdapterTargets {
    /// Key prefix of this component in adapter files (`transformer`).
    pub prefix: &'static str,
    pub layers: BTreeMap<String, AdapterTarget>,
    /// The targetable layers in words, for the error on a key naming any other layer.
    pub described: String,
}

/// One layer's low-rank factors, 1×1 convs reshaped to matrices.
#[derive(Clone)]
pub struct LoraPair {
    pub down: Tensor, // A [r, in]
    pub up: Tensor,   // B [out, r]
    /// peft's `scaling`: alpha / r (alpha / √r with rsLoRA).
    pub scaling: f64,
}

/// A LoRA file read and checked against a model.
pub struct LoraWeights {
    pub path: PathBuf,
    pub layers: BTreeMap<String, LoraPair>,
    /// The largest rank among the layers.
    pub rank: usize,
    /// `lora_alpha` from the metadata; `None` when the file has none (each layer then uses its rank).
    pub alpha: Option<f64>,
}

/// The half of a pair a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Factor {
    Down,
    Up,
}

/// Map one file key to (module path, factor), or say why it is not a LoRA weight we load.
fn map_key<'k>(key: &'k str, prefix: &str) -> std::result::Result<(&'k str, Factor), String> {
    let rest = key.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')).unwrap_or(key);
    if let Some(m) = rest.strip_suffix(".lora_A.weight") {
        return Ok((m, Factor::Down));
    }
    if let Some(m) = rest.strip_suffix(".lora_B.weight") {
        return Ok((m, Factor::Up));
    }
    Err(if key.contains("lora_unet_") || key.contains("lora_te") || key.contains("lora_down") || key.contains("lora_up") {
        "is in kohya's layout, which is not converted (diffusers' Sana loader does not convert it either); \
         expected diffusers' `transformer.<layer>.lora_A.weight` / `.lora_B.weight`"
            .into()
    } else if key.ends_with("lora_magnitude_vector") || key.ends_with("dora_scale") {
        "is a DoRA magnitude; DoRA adapters are not supported".into()
    } else if key.contains(".lora_B.") && key.ends_with(".bias") {
        "is a LoRA bias (lora_bias=True); LoRA biases are not supported".into()
    } else {
        format!("is not a LoRA weight of a {prefix}: expected `{prefix}.<layer>.lora_A.weight` / `.lora_B.weight`")
    })
}

/// The `LoraConfig` fields of one component, from the file's metadata.
#[derive(Debug, Default)]
struct LoraConfig {
    r: Option<usize>,
    alpha: Option<f64>,
    rslora: bool,
    rank_pattern: BTreeMap<String, usize>,
    alpha_pattern: BTreeMap<String, f64>,
}

impl LoraConfig {
    fn read(path: &Path, files: &WeightFiles, prefix: &str) -> Result<Self> {
        let bad = |msg: String| SanaError::InvalidConfig { path: path.to_path_buf(), msg: format!("{METADATA_KEY}: {msg}") };
        let Some(text) = files.metadata.iter().find_map(|m| m.get(METADATA_KEY)) else { return Ok(Self::default()) };
        let json: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let obj = json.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
        let field = |name: &str| obj.get(&format!("{prefix}.{name}")).filter(|v| !v.is_null());
        let number = |name: &str| -> Result<Option<f64>> {
            field(name).map(|v| v.as_f64().ok_or_else(|| bad(format!("{prefix}.{name} is not a number")))).transpose()
        };
        if field("use_dora").and_then(|v| v.as_bool()) == Some(true) {
            return Err(bad("use_dora is true; DoRA adapters are not supported".into()));
        }
        if field("lora_bias").and_then(|v| v.as_bool()) == Some(true) {
            return Err(bad("lora_bias is true; LoRA biases are not supported".into()));
        }
        let pattern = |name: &str| -> Result<BTreeMap<String, f64>> {
            let Some(v) = field(name) else { return Ok(BTreeMap::new()) };
            let map = v.as_object().ok_or_else(|| bad(format!("{prefix}.{name} is not an object")))?;
            map.iter()
                .map(|(k, v)| {
                    // peft matches patterns as regexes; plain module names are all we match (literally).
                    if k.contains(|c: char| "*+?[](){}|^$\\".contains(c)) {
                        return Err(bad(format!("{prefix}.{name} key \"{k}\" is a regex; only module names are supported")));
                    }
                    Ok((k.clone(), v.as_f64().ok_or_else(|| bad(format!("{prefix}.{name}[\"{k}\"] is not a number")))?))
                })
                .collect()
        };
        Ok(LoraConfig {
            r: number("r")?.map(|r| r as usize),
            alpha: number("lora_alpha")?,
            rslora: field("use_rslora").and_then(|v| v.as_bool()) == Some(true),
            rank_pattern: pattern("rank_pattern")?.into_iter().map(|(k, v)| (k, v as usize)).collect(),
            alpha_pattern: pattern("alpha_pattern")?,
        })
    }

    /// peft's `get_pattern_key`: the pattern naming `module` itself or its last dotted components.
    fn lookup<T: Copy>(patterns: &BTreeMap<String, T>, module: &str) -> Option<T> {
        patterns.iter().find(|(p, _)| module == p.as_str() || module.ends_with(&format!(".{p}"))).map(|(_, v)| *v)
    }

    /// (expected rank if the config says, scaling) for `module` of actual rank `r`.
    fn for_module(&self, module: &str, r: usize) -> (Option<usize>, f64) {
        let expected = Self::lookup(&self.rank_pattern, module).or(self.r);
        let alpha = Self::lookup(&self.alpha_pattern, module).or(self.alpha).unwrap_or(r as f64);
        (expected, if self.rslora { alpha / (r as f64).sqrt() } else { alpha / r as f64 })
    }
}

/// Read the LoRA file at `path` for the model whose layers are `targets`, converting its factors to
/// `dtype` on `device`. Nothing is attached: a file that does not fit fails here, naming the key.
pub fn read_lora(path: &Path, targets: &AdapterTargets, device: &Device, dtype: DType) -> Result<LoraWeights> {
    if !path.is_file() {
        return Err(SanaError::not_found("LoRA weights file", path));
    }
    let files = WeightFiles::open(&[path.to_path_buf()])?;
    let config = LoraConfig::read(path, &files, targets.prefix)?;
    let mismatch = |key: &str, msg: String| SanaError::AdapterMismatch { path: path.to_path_buf(), key: key.to_string(), msg };

    // 1. Every key maps onto a factor of a targetable layer.
    let mut keys: BTreeMap<&str, [Option<&str>; 2]> = BTreeMap::new();
    for key in files.index.keys() {
        let (module, factor) = map_key(key, targets.prefix).map_err(|msg| mismatch(key, msg))?;
        if !targets.layers.contains_key(module) {
            return Err(mismatch(key, format!("names layer \"{module}\", which this model has no LoRA-targetable layer for ({})", targets.described)));
        }
        keys.entry(module).or_default()[factor as usize] = Some(key);
    }
    if keys.is_empty() {
        return Err(SanaError::InvalidConfig { path: path.to_path_buf(), msg: "the file holds no LoRA weights".into() });
    }

    // 2. Pairs complete, shapes and ranks fitting the layer, factors decoded.
    let mut layers = BTreeMap::new();
    let mut rank = 0;
    for (module, [down_key, up_key]) in keys {
        let t = targets.layers[module];
        let partner = |have: &str, from: &str, to: &str| SanaError::WeightMissing { path: path.to_path_buf(), name: have.replace(from, to) };
        let down_key = down_key.ok_or_else(|| partner(up_key.unwrap_or_default(), "lora_B", "lora_A"))?;
        let up_key = up_key.ok_or_else(|| partner(down_key, "lora_A", "lora_B"))?;
        let (down_e, up_e) = (&files.index[down_key], &files.index[up_key]);
        let r = down_e.shape.first().copied().unwrap_or(0);
        let (expected_rank, scaling) = config.for_module(module, r);
        let shape = |a: usize, b: usize| if t.conv { vec![a, b, 1, 1] } else { vec![a, b] };
        let check = |key: &str, got: &[usize], want: Vec<usize>| {
            if got == want.as_slice() {
                Ok(())
            } else {
                Err(SanaError::ShapeMismatch { path: path.to_path_buf(), name: key.to_string(), expected: want, got: got.to_vec(), hint: String::new() })
            }
        };
        check(down_key, &down_e.shape, shape(expected_rank.unwrap_or(r), t.in_dim))?;
        check(up_key, &up_e.shape, shape(t.out_dim, r))?;
        let load = |key: &str, e, rows, cols| -> Result<Tensor> {
            Ok(decode_tensor(path, key, e, files.bytes(e), device, dtype, &|_| {})?.reshape((rows, cols))?)
        };
        let down = load(down_key, down_e, r, t.in_dim)?;
        let up = load(up_key, up_e, t.out_dim, r)?;
        rank = rank.max(r);
        layers.insert(module.to_string(), LoraPair { down, up, scaling });
    }
    Ok(LoraWeights { path: path.to_path_buf(), layers, rank, alpha: config.alpha })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_onto_module_paths_or_are_rejected_with_a_reason() {
        let p = "transformer";
        assert_eq!(map_key("transformer.transformer_blocks.0.attn1.to_q.lora_A.weight", p), Ok(("transformer_blocks.0.attn1.to_q", Factor::Down)));
        assert_eq!(map_key("transformer_blocks.1.ff.conv_point.lora_B.weight", p), Ok(("transformer_blocks.1.ff.conv_point", Factor::Up)));
        assert!(map_key("lora_unet_transformer_blocks_0_attn1_to_q.lora_down.weight", p).unwrap_err().contains("kohya"));
        assert!(map_key("transformer.transformer_blocks.0.attn1.to_q.lora_magnitude_vector", p).unwrap_err().contains("DoRA"));
        assert!(map_key("transformer.transformer_blocks.0.attn1.to_q.lora_B.bias", p).unwrap_err().contains("bias"));
        assert!(map_key("text_encoder.layers.0.q_proj.weight", p).unwrap_err().contains("not a LoRA weight"));
    }

    #[test]
    fn scaling_follows_peft() {
        let mut c = LoraConfig { r: Some(4), alpha: Some(8.0), ..Default::default() };
        assert_eq!(c.for_module("transformer_blocks.0.attn1.to_q", 4), (Some(4), 2.0));
        c.alpha_pattern.insert("attn1.to_q".into(), 2.0);
        c.rank_pattern.insert("to_k".into(), 8);
        assert_eq!(c.for_module("transformer_blocks.0.attn1.to_q", 4), (Some(4), 0.5));
        assert_eq!(c.for_module("transformer_blocks.0.attn2.to_q", 4), (Some(4), 2.0));
        assert_eq!(c.for_module("transformer_blocks.0.attn1.to_k", 8), (Some(8), 1.0));
        c.rslora = true;
        assert_eq!(c.for_module("transformer_blocks.0.attn2.to_v", 4), (Some(4), 4.0));
        // No metadata: alpha = r, scaling 1.
        assert_eq!(LoraConfig::default().for_module("x", 16), (None, 1.0));
    }
}
