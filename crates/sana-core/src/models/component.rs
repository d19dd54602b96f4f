//! A loaded checkpoint component: its folder, typed config, raw config JSON and every tensor.
//! Model constructors (`SanaTransformer2DModel::new(cfg, vb)`, …) build on top of this.

use crate::config::{load_config, ValidateConfig};
use crate::device::{resolve_device, resolve_dtype};
use crate::weights::{ParamStore, Placement, Vb, WeightFiles};
use crate::{Result, SanaError};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How to load a component.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    pub device: String,
    /// `float32`, `bfloat16`, `float16` or `auto` (f32 on CPU, bf16 on CUDA).
    pub dtype: String,
    /// Weights variant to prefer (`fp16`, `bf16`): `diffusion_pytorch_model.fp16.safetensors`.
    pub variant: Option<String>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { device: "cpu".into(), dtype: "auto".into(), variant: None }
    }
}

/// What kind of checkpoint a component folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentKind {
    Transformer,
    ControlNet,
    Vae,
    TextEncoder,
}

impl ComponentKind {
    /// Checkpoint tensors this kind's model concatenates while it builds (the DiT blocks' attn1 q/k/v and
    /// attn2 k/v, see `MergedLinear`): decoded when the build asks for them ([`Placement::Defer`]).
    pub fn merged_at_build(self, name: &str) -> bool {
        const MERGED: [&str; 5] = [".attn1.to_q.", ".attn1.to_k.", ".attn1.to_v.", ".attn2.to_k.", ".attn2.to_v."];
        matches!(self, ComponentKind::Transformer | ComponentKind::ControlNet)
            && name.starts_with("transformer_blocks.")
            && MERGED.iter().any(|m| name.contains(m))
    }

    /// `_class_name` values accepted in `config.json`.
    pub fn classes(self) -> &'static [&'static str] {
        match self {
            ComponentKind::Transformer => &["SanaTransformer2DModel"],
            ComponentKind::ControlNet => &["SanaControlNetModel"],
            ComponentKind::Vae => &["AutoencoderDC"],
            // transformers configs carry `architectures` instead of `_class_name`.
            ComponentKind::TextEncoder => &["Gemma2Model", "Gemma2ForCausalLM"],
        }
    }
    fn weight_bases(self) -> &'static [&'static str] {
        match self {
            ComponentKind::Transformer | ComponentKind::ControlNet | ComponentKind::Vae => &["diffusion_pytorch_model"],
            ComponentKind::TextEncoder => &["model"],
        }
    }
}

pub struct Component<C> {
    pub kind: ComponentKind,
    pub dir: PathBuf,
    pub config: C,
    /// config.json as written (non-finite numbers read as null).
    pub config_json: serde_json::Value,
    pub store: Arc<ParamStore>,
    pub device: Device,
    pub dtype: DType,
}

impl<C: for<'de> Deserialize<'de> + ValidateConfig> Component<C> {
    /// Parse the config, resolve device/dtype, then open and load every tensor.
    /// Config errors surface before any weight is read.
    pub fn load(kind: ComponentKind, dir: &Path, opts: &LoadOptions) -> Result<Self> {
        let config: C = load_config(dir, kind.classes())?;
        let config_json = crate::config::read_json(&dir.join("config.json"))?;
        if kind == ComponentKind::TextEncoder {
            check_architectures(dir, &config_json)?;
        }
        let device = resolve_device(&opts.device)?;
        let dtype = resolve_dtype(&opts.dtype, &device)?;
        let files = Arc::new(WeightFiles::open_component(dir, kind.weight_bases(), opts.variant.as_deref())?);
        // On CPU the text encoder's embedding table stays in the file mapping: a prompt reads a few hundred of its
        // 256,000 rows, so the other 2.4 GB (f32) never become resident.
        let place = |name: &str| {
            if kind == ComponentKind::TextEncoder && device.is_cpu() && name.ends_with("embed_tokens.weight") {
                Placement::KeepMapped
            } else if kind.merged_at_build(name) {
                Placement::Defer
            } else {
                Placement::Load
            }
        };
        let store = Arc::new(files.load_all(&device, dtype, &place)?);
        Ok(Component { kind, dir: dir.to_path_buf(), config, config_json, store, device, dtype })
    }

    pub fn vb(&self) -> Vb {
        self.store.root()
    }
}

impl<C: Serialize> Component<C> {
    /// Numeric config keys that config.json lacks, with the defaults used for them (`num_attention_heads = 70`):
    /// the usual cause when a checkpoint's shapes disagree with its config.
    pub fn defaulted_keys(&self) -> Vec<String> {
        let (Ok(serde_json::Value::Object(used)), Some(given)) = (serde_json::to_value(&self.config), self.config_json.as_object()) else {
            return Vec::new();
        };
        used.iter().filter(|(k, v)| v.is_number() && !given.contains_key(*k)).map(|(k, v)| format!("{k} = {v}")).collect()
    }

    /// Build the model `M` on this component; a shape mismatch then names the config keys that were defaulted.
    /// The checkpoint tensors the model re-laid out ([`BuildModel::shared_weights`]) are then replaced in the
    /// store by the model's views of them, so the originals are freed (unless the store is shared elsewhere).
    pub fn build<M: BuildModel<C>>(&mut self) -> Result<M> {
        let model = self.build_model::<M>()?;
        if let Some(store) = Arc::get_mut(&mut self.store) {
            for (name, view) in model.shared_weights() {
                store.deferred.remove(&name);
                store.tensors.insert(name, view);
            }
        }
        Ok(model)
    }

    fn build_model<M: BuildModel<C>>(&self) -> Result<M> {
        M::build(self).map_err(|e| match e {
            SanaError::ShapeMismatch { path, name, expected, got, hint } if hint.is_empty() => {
                let defaulted = self.defaulted_keys();
                let hint = if defaulted.is_empty() {
                    hint
                } else {
                    format!(" ({} lacks {}: defaults were used, and a wrong one explains a shape mismatch)", self.dir.join("config.json").display(), defaulted.join(", "))
                };
                SanaError::ShapeMismatch { path, name, expected, got, hint }
            }
            e => e,
        })
    }
}

fn check_architectures(dir: &Path, json: &serde_json::Value) -> Result<()> {
    let Some(archs) = json.get("architectures").and_then(|a| a.as_array()) else { return Ok(()) };
    let accepted = ComponentKind::TextEncoder.classes();
    match archs.iter().filter_map(|a| a.as_str()).find(|a| !accepted.contains(a)) {
        Some(bad) => Err(SanaError::UnknownClass {
            path: dir.join("config.json"),
            class: bad.to_string(),
            expected: accepted.join(" or "),
        }),
        None => Ok(()),
    }
}

/// A model built from a loaded component (checks every tensor name and shape the config implies).
pub trait BuildModel<C>: Sized {
    fn build(c: &Component<C>) -> Result<Self>;

    /// Checkpoint tensors the model holds in another layout (merged q/k/v weights), as views of its own
    /// tensors with the same shape and values, by checkpoint name. Defaults to none.
    fn shared_weights(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// "No model": the component is loaded and its checkpoint validated, nothing more is built.
impl<C> BuildModel<C> for () {
    fn build(_c: &Component<C>) -> Result<Self> {
        Ok(())
    }
}
