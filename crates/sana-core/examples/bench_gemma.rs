//! Gemma-2 encoder CPU benchmark with gemma-2-2b's real shapes and random weights (f32):
//! 26 layers, hidden 2304, 8 heads / 4 kv heads × 256, intermediate 9216, vocab 256000.
//!
//! All 26 layers share ONE set of random layer weights (candle tensors are reference-counted), so the
//! compute is the real model's but resident memory holds one layer (~312 MB) instead of 26 (~8.1 GB).
//! The embedding table is full size (256000 × 2304 f32 ≈ 2.4 GB; `BENCH_VOCAB` overrides the vocab).
//!
//! `cargo run --release -p sana-core --example bench_gemma`


// As in the Node addon: freed activation blocks are reused instead of page-faulted in again.
#[global_allocator]
static ALLOC: sana_core::alloc_cache::LargeBlockCache = sana_core::alloc_cache::LargeBlockCache::new();

use sana_core::config::Gemma2Config;
use sana_core::models::gemma2::Gemma2Model;
use sana_core::weights::ParamStore;
use sana_core::{Device, Result, Tensor};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

fn vm_hwm_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn config(vocab: usize) -> Result<Gemma2Config> {
    let json = serde_json::json!({
        "vocab_size": vocab, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "query_pre_attn_scalar": 256,
        "sliding_window": 4096, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "hidden_activation": "gelu_pytorch_tanh"
    });
    let cfg: Gemma2Config = serde_json::from_value(json).map_err(|e| sana_core::SanaError::invalid_arg("config", e.to_string()))?;
    cfg.normalize(std::path::Path::new("<bench>"))
}

/// Random weights: one layer's tensors inserted under all 26 layer names.
fn random_store(cfg: &Gemma2Config) -> Result<ParamStore> {
    let dev = Device::Cpu;
    let (h, i, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
    let (nq, nkv) = (cfg.num_attention_heads * d, cfg.num_key_value_heads * d);
    let w = |shape: (usize, usize), std: f64| Tensor::randn(0f32, std as f32, shape, &dev);
    let norm = || Tensor::randn(0f32, 0.1, h, &dev);
    let layer: Vec<(&str, Tensor)> = vec![
        ("self_attn.q_proj.weight", w((nq, h), 0.02)?),
        ("self_attn.k_proj.weight", w((nkv, h), 0.02)?),
        ("self_attn.v_proj.weight", w((nkv, h), 0.02)?),
        ("self_attn.o_proj.weight", w((h, nq), 0.02)?),
        ("mlp.gate_proj.weight", w((i, h), 0.02)?),
        ("mlp.up_proj.weight", w((i, h), 0.02)?),
        ("mlp.down_proj.weight", w((h, i), 0.02)?),
        ("input_layernorm.weight", norm()?),
        ("post_attention_layernorm.weight", norm()?),
        ("pre_feedforward_layernorm.weight", norm()?),
        ("post_feedforward_layernorm.weight", norm()?),
    ];
    let mut tensors = BTreeMap::new();
    for l in 0..cfg.num_hidden_layers {
        for (name, t) in &layer {
            tensors.insert(format!("layers.{l}.{name}"), t.clone());
        }
    }
    tensors.insert("embed_tokens.weight".into(), w((cfg.vocab_size, h), 0.02)?);
    tensors.insert("norm.weight".into(), norm()?);
    Ok(ParamStore::from_tensors(tensors))
}

fn run(model: &Gemma2Model, vocab: usize, len: usize) -> Result<()> {
    // Token ids spread over the vocab; batch 1, all real tokens.
    let ids: Vec<i64> = (0..len).map(|t| if t == 0 { 2 } else { ((t * 7919) % vocab) as i64 }).collect();
    let ids = Tensor::from_vec(ids, (1, len), &Device::Cpu)?;
    let mask = Tensor::ones((1, len), sana_core::DType::I64, &Device::Cpu)?;
    let t0 = Instant::now();
    let out = model.forward(&ids, &mask)?;
    let secs = t0.elapsed().as_secs_f64();
    let finite = out.flatten_all()?.to_vec1::<f32>()?.iter().all(|v| v.is_finite());
    println!("{len:>4} tokens: {secs:7.2} s ({:6.1} tokens/s), output {:?}, finite {finite}, VmHWM {:.0} MB",
        len as f64 / secs, out.dims(), vm_hwm_mb());
    Ok(())
}

fn main() -> Result<()> {
    let vocab = std::env::var("BENCH_VOCAB").ok().and_then(|v| v.parse().ok()).unwrap_or(256000);
    let cfg = config(vocab)?;
    let t0 = Instant::now();
    let store = Arc::new(random_store(&cfg)?);
    let model = Gemma2Model::new(&cfg, store.root())?;
    println!("random weights (vocab {vocab}, 26 layers sharing one layer's tensors) in {:.1} s, VmHWM {:.0} MB",
        t0.elapsed().as_secs_f64(), vm_hwm_mb());
    run(&model, vocab, 16)?; // warm-up
    run(&model, vocab, 300)?;
    run(&model, vocab, 506)?;
    // Per-shape GEMM time, with SANA_GEMM_STATS=1 (empty otherwise).
    print!("{}", sana_core::ops::sgemm::sgemm_stats_report());
    Ok(())
}
