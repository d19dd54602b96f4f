//! A model's LoRA adapters: loaded, active (each with a weight), fused or not — diffusers'
//! `load_lora_weights` / `set_adapters` / `fuse_lora` / `unfuse_lora` / `unload_lora_weights`.
//!
//! The state is immutable and swapped whole: every change builds the next [`State`] (including the
//! per-layer view that [`Linear::forward_lora`](super::linear::Linear::forward_lora) reads) and then
//! replaces the current one, so a forward pass holds one snapshot from start to end, a failed change
//! leaves everything as it was, and a running forward never sees half a change.
//!
//! Fusing does not touch the base weights: the merged weight W + Σ scale·weight·scaling·B·A is a new
//! tensor beside W (the checkpoint's, shared with the store). So unfusing and unloading give the base
//! model back exactly — also after a fuse, unlike diffusers, whose `unload_lora_weights()` after
//! `fuse_lora()` keeps the merged weights — at the cost of holding both while fused.

use super::linear::{AdapterLayers, LowRank};
use crate::weights::adapters::{read_lora, AdapterTargets, LoraWeights};
use crate::{Result, SanaError};
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

/// One loaded adapter, as listed by [`Adapters::list`].
#[derive(Debug, Clone)]
pub struct AdapterInfo {
    pub name: String,
    /// The file it was read from.
    pub path: String,
    /// Largest rank among its layers.
    pub rank: usize,
    /// `lora_alpha` from the file's metadata; `None` without metadata (alpha = r per layer).
    pub alpha: Option<f64>,
    /// Number of layers it adapts.
    pub layers: usize,
    /// Its weight when active; `None` when inactive.
    pub weight: Option<f64>,
}

#[derive(Clone, Default)]
struct State {
    /// In load order.
    loaded: Vec<(String, Arc<LoraWeights>)>,
    /// Active adapters and their weights (diffusers' `adapter_weights`).
    active: Vec<(String, f64)>,
    /// `Some(lora_scale)` while the active adapters are fused.
    fused: Option<f64>,
    /// What each layer runs with, derived from the three fields above.
    view: Arc<AdapterLayers>,
}

/// The adapters of one model. Shared by every thread running the model.
pub struct Adapters {
    targets: AdapterTargets,
    /// Base [out, in] weight of every target layer (shared with the model), for fusing.
    base: BTreeMap<String, Tensor>,
    device: Device,
    dtype: DType,
    state: RwLock<Arc<State>>,
    /// Serialises changes: each builds the next state from the current one.
    edit: Mutex<()>,
}

fn check_weight(name: &str, w: f64) -> Result<()> {
    crate::ensure_arg!(w.is_finite(), name, "expected a finite number, got {w}");
    Ok(())
}

impl Adapters {
    pub fn new(targets: AdapterTargets, base: BTreeMap<String, Tensor>, device: Device, dtype: DType) -> Self {
        Adapters { targets, base, device, dtype, state: RwLock::default(), edit: Mutex::new(()) }
    }

    /// The per-layer view a forward pass runs with (unchanged by later edits).
    pub fn snapshot(&self) -> Arc<AdapterLayers> {
        self.current().view.clone()
    }

    fn current(&self) -> Arc<State> {
        self.state.read().expect("poisoned").clone()
    }

    /// Apply `change` to a copy of the current state, rebuild its view, and swap it in (or leave all as it was).
    fn edit(&self, change: impl FnOnce(&mut State) -> Result<()>) -> Result<()> {
        let _serial = self.edit.lock().expect("poisoned");
        let mut next = (*self.current()).clone();
        change(&mut next)?;
        next.view = Arc::new(self.build_view(&next)?);
        *self.state.write().expect("poisoned") = Arc::new(next);
        Ok(())
    }

    /// Read the LoRA file at `path` and attach it as `name` (default `default_<n>`, as diffusers), active at
    /// weight 1 beside the adapters already active. Returns the name.
    pub fn load(&self, path: &Path, name: Option<&str>) -> Result<String> {
        if let Some(n) = name {
            crate::ensure_arg!(!n.is_empty(), "adapterName", "expected a non-empty name");
            self.check_free(&self.current(), n)?;
        }
        let weights = Arc::new(read_lora(path, &self.targets, &self.device, self.dtype)?);
        let mut chosen = String::new();
        self.edit(|s| {
            chosen = match name {
                Some(n) => n.to_string(),
                None => (s.loaded.len()..).map(|i| format!("default_{i}")).find(|n| self.check_free(s, n).is_ok()).unwrap_or_default(),
            };
            self.check_free(s, &chosen)?;
            s.loaded.push((chosen.clone(), weights));
            s.active.push((chosen.clone(), 1.0));
            Ok(())
        })?;
        Ok(chosen)
    }

    fn check_free(&self, s: &State, name: &str) -> Result<()> {
        crate::ensure_arg!(s.loaded.iter().all(|(n, _)| n != name), "adapterName",
            "an adapter named \"{name}\" is already loaded; pick another name or unload it first");
        Ok(())
    }

    fn check_loaded(s: &State, names: &[String], what: &str) -> Result<()> {
        for (i, n) in names.iter().enumerate() {
            crate::ensure_arg!(s.loaded.iter().any(|(l, _)| l == n), what,
                "no adapter named \"{n}\" is loaded (loaded: {})", s.loaded.iter().map(|(l, _)| format!("\"{l}\"")).collect::<Vec<_>>().join(", "));
            crate::ensure_arg!(!names[..i].contains(n), what, "adapter \"{n}\" is named twice");
        }
        Ok(())
    }

    /// Make exactly these adapters active with these weights (empty: none active). While fused, the fused
    /// weights are rebuilt from the new set.
    pub fn set_active(&self, adapters: &[(String, f64)]) -> Result<()> {
        for (_, w) in adapters {
            check_weight("adapterWeights", *w)?;
        }
        let names: Vec<String> = adapters.iter().map(|(n, _)| n.clone()).collect();
        self.edit(|s| {
            Self::check_loaded(s, &names, "adapterNames")?;
            s.active = adapters.to_vec();
            Ok(())
        })
    }

    /// Remove these adapters (active or not).
    pub fn delete(&self, names: &[String]) -> Result<()> {
        self.edit(|s| {
            Self::check_loaded(s, names, "adapterNames")?;
            s.loaded.retain(|(n, _)| !names.contains(n));
            s.active.retain(|(n, _)| !names.contains(n));
            Ok(())
        })
    }

    /// Merge the active adapters at `lora_scale` into (copies of) the weights; the per-call scale then has no
    /// effect until [`Adapters::unfuse`]. Fusing again re-merges from the base weights at the new scale.
    pub fn fuse(&self, lora_scale: f64) -> Result<()> {
        check_weight("loraScale", lora_scale)?;
        self.edit(|s| {
            crate::ensure_arg!(!s.active.is_empty(), "fuseLora", "no active adapter to fuse (load one with loadLoraWeights)");
            s.fused = Some(lora_scale);
            Ok(())
        })
    }

    /// Back to unfused adapters (the base weights with run-time low-rank terms, at the adapters' weights).
    pub fn unfuse(&self) -> Result<()> {
        self.edit(|s| {
            s.fused = None;
            Ok(())
        })
    }

    /// Remove every adapter: the base model, exactly, fused or not.
    pub fn unload(&self) -> Result<()> {
        self.edit(|s| {
            *s = State::default();
            Ok(())
        })
    }

    /// The loaded adapters in load order.
    pub fn list(&self) -> Vec<AdapterInfo> {
        let s = self.current();
        s.loaded
            .iter()
            .map(|(name, w)| AdapterInfo {
                name: name.clone(),
                path: w.path.display().to_string(),
                rank: w.rank,
                alpha: w.alpha,
                layers: w.layers.len(),
                weight: s.active.iter().find(|(n, _)| n == name).map(|(_, w)| *w),
            })
            .collect()
    }

    /// The fuse scale while fused.
    pub fn fused(&self) -> Option<f64> {
        self.current().fused
    }

    /// Per layer: the active adapters' low-rank terms, or (fused) the merged weight.
    fn build_view(&self, s: &State) -> Result<AdapterLayers> {
        let mut layers = AdapterLayers::new();
        for (name, weight) in &s.active {
            let Some((_, w)) = s.loaded.iter().find(|(n, _)| n == name) else { continue };
            for (path, pair) in &w.layers {
                let term = LowRank { down: pair.down.clone(), up: pair.up.clone(), scale: weight * pair.scaling };
                layers.entry(path.clone()).or_default().terms.push(term);
            }
        }
        let Some(scale) = s.fused else { return Ok(layers) };
        for (path, layer) in layers.iter_mut() {
            let base = self.base.get(path).ok_or_else(|| SanaError::invalid_arg("fuseLora", format!("no base weight for {path}")))?;
            // W' = W + Σ scale·weight·scaling·(B A), accumulated in f32.
            let mut merged = base.to_dtype(DType::F32)?;
            for t in layer.terms.drain(..) {
                let delta = t.up.to_dtype(DType::F32)?.matmul(&t.down.to_dtype(DType::F32)?)?;
                merged = (merged + delta.affine(t.scale * scale, 0.0)?)?;
            }
            layer.merged = Some(merged.to_dtype(base.dtype())?);
        }
        Ok(layers)
    }
}
