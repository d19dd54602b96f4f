//! The per-generation caption cache and the merged q/k/v projections: a forward with the cache equals the
//! forward without it (batch 2 CFG with a mask, LoRA at scale ≠ 1, PAG, ControlNet), a changed caption, mask,
//! LoRA scale or adapter set recomputes, and the checkpoint store keeps views of the merged weights.

mod common;

use common::{case, case_tensor, fixtures};
use sana_core::config::{SanaControlNetConfig, SanaTransformerConfig};
use sana_core::models::component::{BuildModel, Component, ComponentKind, LoadOptions};
use sana_core::models::sana_controlnet::{ControlNetInput, SanaControlNetModel};
use sana_core::models::sana_transformer::{CaptionCache, PagInput, SanaTransformer2DModel, TransformerInput};
use sana_core::Tensor;
use std::path::PathBuf;
use std::sync::Arc;

const LORA: &str = "lora_transformer_scale_1";

fn wave2(rel: &str) -> PathBuf {
    fixtures().join("wave2").join(rel)
}

fn transformer() -> SanaTransformer2DModel {
    let c = Component::<SanaTransformerConfig>::load(ComponentKind::Transformer, &wave2(case(LORA)["model_dir"].as_str().unwrap()), &LoadOptions::default()).unwrap();
    SanaTransformer2DModel::build(&c).unwrap()
}

/// The inputs of fixture case `name`, with no cache.
fn input(name: &str) -> TransformerInput {
    TransformerInput {
        hidden_states: case_tensor(name, "hidden_states"),
        encoder_hidden_states: case_tensor(name, "encoder_hidden_states"),
        timestep: case_tensor(name, "timestep"),
        encoder_attention_mask: Some(case_tensor(name, "encoder_attention_mask")),
        guidance: None,
        controlnet_block_samples: None,
        lora_scale: 1.0,
        pag: None,
        caption_cache: None,
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// Two "steps" (different latents and timesteps, same caption) with the cache equal the uncached forwards.
fn assert_cached_equals_uncached(model: &SanaTransformer2DModel, uncached: &TransformerInput, cache: &Arc<CaptionCache>) {
    let mut step = uncached.clone();
    for k in 0..2 {
        if k == 1 {
            step.hidden_states = (&step.hidden_states * 0.5).unwrap();
            step.timestep = (&step.timestep * 0.9).unwrap();
        }
        let want = model.forward(&TransformerInput { caption_cache: None, ..step.clone() }).unwrap();
        let got = model.forward(&TransformerInput { caption_cache: Some(cache.clone()), ..step.clone() }).unwrap();
        assert!(max_diff(&got, &want) <= 1e-6, "step {k}: {}", max_diff(&got, &want));
    }
}

#[test]
fn cached_forward_equals_uncached_for_cfg_with_mask_and_pag() {
    let model = transformer();
    let cfg = model.config().clone();
    // Batch 2 [uncond; cond] with a mask: one entry, of the size the planner counts.
    let cache = Arc::new(CaptionCache::new());
    let inp = input(LORA);
    assert_cached_equals_uncached(&model, &inp, &cache);
    assert_eq!(cache.len(), 1);
    let (b, s) = (2, 300);
    let inner = cfg.num_cross_attention_heads.unwrap() * cfg.cross_attention_head_dim.unwrap();
    let kv = 2 * cfg.num_layers * b * s * inner * 4;
    assert_eq!(cache.bytes(), kv + b * s * cfg.inner_dim() * 4 + b * s * 4);
    // PAG [uncond, text, perturbed] on block 1: PAG only changes attn1, the caption entry is the same kind.
    let pag = TransformerInput { pag: Some(PagInput { layers: vec![1], perturbed_rows: 1 }), ..input("pag_transformer_forward_cfg") };
    assert_cached_equals_uncached(&model, &pag, &Arc::new(CaptionCache::new()));
    // Without a mask.
    assert_cached_equals_uncached(&model, &TransformerInput { encoder_attention_mask: None, ..input(LORA) }, &cache);
}

/// The key: a new caption or mask tensor, another LoRA scale, another adapter set, fusing — each recomputes
/// (the cached forward keeps equal to the uncached one) and replaces the model's single entry.
#[test]
fn a_changed_caption_mask_lora_scale_or_adapter_set_recomputes() {
    let model = transformer();
    let cache = Arc::new(CaptionCache::new());
    let base = input(LORA);
    assert_cached_equals_uncached(&model, &base, &cache);
    // Same values in a new tensor and another caption.
    let caption = (&base.encoder_hidden_states * 1.5).unwrap();
    assert_cached_equals_uncached(&model, &TransformerInput { encoder_hidden_states: caption, ..base.clone() }, &cache);
    let mask = base.encoder_attention_mask.as_ref().unwrap().ones_like().unwrap();
    assert_cached_equals_uncached(&model, &TransformerInput { encoder_attention_mask: Some(mask), ..base.clone() }, &cache);
    // LoRA (targets caption-side layers attn2.to_k/to_v too) at scale 0.7, then 0.3 through the same cache.
    model.adapters().load(&wave2(case(LORA)["lora"].as_str().unwrap()), Some("tiny")).unwrap();
    for scale in [0.7, 0.3] {
        assert_cached_equals_uncached(&model, &TransformerInput { lora_scale: scale, ..base.clone() }, &cache);
    }
    // Another adapter weight, fused, unloaded.
    model.adapters().set_active(&[("tiny".into(), 0.5)]).unwrap();
    assert_cached_equals_uncached(&model, &TransformerInput { lora_scale: 0.3, ..base.clone() }, &cache);
    model.adapters().fuse(0.8).unwrap();
    assert_cached_equals_uncached(&model, &TransformerInput { lora_scale: 0.3, ..base.clone() }, &cache);
    model.adapters().unload().unwrap();
    assert_cached_equals_uncached(&model, &TransformerInput { lora_scale: 0.3, ..base.clone() }, &cache);
    assert_eq!(cache.len(), 1);
    cache.clear();
    assert_eq!((cache.len(), cache.bytes()), (0, 0));
}

/// The LoRA makes the cached caption work differ from the base one: a stale entry would be visible.
#[test]
fn a_stale_entry_would_be_visible() {
    let model = transformer();
    let base = input(LORA);
    let plain = model.forward(&base).unwrap();
    model.adapters().load(&wave2(case(LORA)["lora"].as_str().unwrap()), None).unwrap();
    assert!(max_diff(&model.forward(&base).unwrap(), &plain) > 1e-4);
}

#[test]
fn controlnet_and_transformer_share_one_cache() {
    let name = "controlnet_forward";
    let c = Component::<SanaControlNetConfig>::load(ComponentKind::ControlNet, &wave2(case(name)["model_dir"].as_str().unwrap()), &LoadOptions::default()).unwrap();
    let controlnet = SanaControlNetModel::build(&c).unwrap();
    let model = transformer();
    let cache = Arc::new(CaptionCache::new());
    let cn = |cache: Option<Arc<CaptionCache>>| ControlNetInput {
        hidden_states: case_tensor(name, "hidden_states"),
        encoder_hidden_states: case_tensor(name, "encoder_hidden_states"),
        timestep: case_tensor(name, "timestep"),
        encoder_attention_mask: Some(case_tensor(name, "encoder_attention_mask")),
        controlnet_cond: case_tensor(name, "controlnet_cond"),
        conditioning_scale: 0.7,
        caption_cache: cache,
    };
    let mut want = controlnet.forward(&cn(None)).unwrap();
    let got = controlnet.forward(&cn(Some(cache.clone()))).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!(max_diff(g, w) <= 1e-6);
    }
    // The transformer's entry beside the ControlNet's, both reused.
    let inp = cn(None);
    let dit = TransformerInput {
        controlnet_block_samples: Some(std::mem::take(&mut want)),
        ..TransformerInput { hidden_states: inp.hidden_states, encoder_hidden_states: inp.encoder_hidden_states, timestep: inp.timestep, encoder_attention_mask: inp.encoder_attention_mask, ..input(LORA) }
    };
    assert_cached_equals_uncached(&model, &dit, &cache);
    assert_eq!(controlnet.forward(&cn(Some(cache.clone()))).unwrap().len(), got.len());
    assert_eq!(cache.len(), 2);
}

/// Component::build swaps the checkpoint's q/k/v tensors for views of the merged weights: same values, no
/// second copy (to_k's view starts after to_q's rows).
#[test]
fn the_store_keeps_views_of_the_merged_weights() {
    let dir = wave2(case(LORA)["model_dir"].as_str().unwrap());
    let load = || Component::<SanaTransformerConfig>::load(ComponentKind::Transformer, &dir, &LoadOptions::default()).unwrap();
    let mut merged = load();
    let _model: SanaTransformer2DModel = merged.build().unwrap();
    let plain = load();
    let d = merged.config.inner_dim();
    for name in ["attn1.to_q.weight", "attn1.to_k.weight", "attn1.to_v.weight", "attn2.to_k.weight", "attn2.to_v.bias"] {
        let name = format!("transformer_blocks.1.{name}");
        let (a, b) = (merged.store.tensor(&name).unwrap().unwrap(), plain.store.tensor(&name).unwrap().unwrap());
        assert_eq!((a.dims(), max_diff(&a, &b)), (b.dims(), 0.0), "{name}");
    }
    let k = merged.store.tensor("transformer_blocks.0.attn1.to_k.weight").unwrap().unwrap();
    assert_eq!(k.storage_and_layout().1.start_offset(), d * d);
}
