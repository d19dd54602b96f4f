//! CPU benchmark of SanaTransformer2DModel with random weights at the released sizes.
//!
//! `cargo run --release -p sana-core --example bench_dit [-- 600m|1600m [latent size]]`
//! Without an argument it runs each model in its own child process, so that each peak RSS
//! (VmHWM) is that model's alone. Weights are random (names and shapes as in the checkpoints).
//! The 1.6B model's 20 blocks share one block's weight tensors (6.2 GB of distinct f32 weights would
//! not fit the 6 GB budget of this machine); its timing is unaffected (every block still streams its
//! ~311 MB of weights from memory), its RSS is reported together with the distinct-weights estimate.


// As in the Node addon: freed activation blocks are reused instead of page-faulted in again.
#[global_allocator]
static ALLOC: sana_core::alloc_cache::LargeBlockCache = sana_core::alloc_cache::LargeBlockCache::new();

use sana_core::config::SanaTransformerConfig;
use sana_core::models::sana_transformer::{SanaTransformer2DModel, TransformerInput};
use sana_core::weights::ParamStore;
use sana_core::{Device, Result, Tensor};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

fn config(layers: usize, heads: usize, cross_heads: usize, cross_head_dim: usize) -> SanaTransformerConfig {
    let inner = heads * 32;
    serde_json::from_value(serde_json::json!({
        "in_channels": 32, "out_channels": 32, "num_attention_heads": heads, "attention_head_dim": 32,
        "num_layers": layers, "num_cross_attention_heads": cross_heads, "cross_attention_head_dim": cross_head_dim,
        "cross_attention_dim": inner, "caption_channels": 2304, "mlp_ratio": 2.5, "patch_size": 1, "sample_size": 32
    }))
    .expect("valid config")
}

/// Checkpoint tensor names and shapes of one model (diffusers names).
fn shapes(cfg: &SanaTransformerConfig, block: Option<usize>) -> Vec<(String, Vec<usize>)> {
    let d = cfg.inner_dim();
    let ci = cfg.num_cross_attention_heads.unwrap_or(0) * cfg.cross_attention_head_dim.unwrap_or(0);
    let hid = (cfg.mlp_ratio * d as f64) as usize;
    let mut v: Vec<(String, Vec<usize>)> = Vec::new();
    let mut add = |n: &str, s: &[usize]| v.push((n.to_string(), s.to_vec()));
    match block {
        None => {
            add("patch_embed.proj.weight", &[d, cfg.in_channels, 1, 1]);
            add("patch_embed.proj.bias", &[d]);
            add("time_embed.emb.timestep_embedder.linear_1.weight", &[d, 256]);
            add("time_embed.emb.timestep_embedder.linear_1.bias", &[d]);
            add("time_embed.emb.timestep_embedder.linear_2.weight", &[d, d]);
            add("time_embed.emb.timestep_embedder.linear_2.bias", &[d]);
            add("time_embed.linear.weight", &[6 * d, d]);
            add("time_embed.linear.bias", &[6 * d]);
            add("caption_projection.linear_1.weight", &[d, cfg.caption_channels]);
            add("caption_projection.linear_1.bias", &[d]);
            add("caption_projection.linear_2.weight", &[d, d]);
            add("caption_projection.linear_2.bias", &[d]);
            add("caption_norm.weight", &[d]);
            add("scale_shift_table", &[2, d]);
            add("proj_out.weight", &[cfg.out_channels(), d]);
            add("proj_out.bias", &[cfg.out_channels()]);
        }
        Some(i) => {
            let p = format!("transformer_blocks.{i}");
            add(&format!("{p}.scale_shift_table"), &[6, d]);
            for n in ["to_q", "to_k", "to_v"] {
                add(&format!("{p}.attn1.{n}.weight"), &[d, d]);
            }
            add(&format!("{p}.attn1.to_out.0.weight"), &[d, d]);
            add(&format!("{p}.attn1.to_out.0.bias"), &[d]);
            for n in ["to_q", "to_k", "to_v"] {
                add(&format!("{p}.attn2.{n}.weight"), &[ci, d]);
                add(&format!("{p}.attn2.{n}.bias"), &[ci]);
            }
            add(&format!("{p}.attn2.to_out.0.weight"), &[d, ci]);
            add(&format!("{p}.attn2.to_out.0.bias"), &[d]);
            add(&format!("{p}.ff.conv_inverted.weight"), &[2 * hid, d, 1, 1]);
            add(&format!("{p}.ff.conv_inverted.bias"), &[2 * hid]);
            add(&format!("{p}.ff.conv_depth.weight"), &[2 * hid, 1, 3, 3]);
            add(&format!("{p}.ff.conv_depth.bias"), &[2 * hid]);
            add(&format!("{p}.ff.conv_point.weight"), &[d, hid, 1, 1]);
        }
    }
    v
}

fn random(shape: &[usize]) -> Result<Tensor> {
    // Small weights keep the activations in a normal range through 20-28 random blocks.
    let fan_in = if shape.len() > 1 { shape[1..].iter().product::<usize>() } else { 1 };
    let std = if shape.len() > 1 { (1.0 / fan_in as f64).sqrt() } else { 0.02 };
    let t = Tensor::randn(0f32, std as f32, shape, &Device::Cpu)?;
    // BENCH_DTYPE=bf16: weight matrices held in bf16, as `dtype: 'bfloat16'` loads them (the GEMMs then run
    // on the CPU's bf16 kernel where it has one: AMX); vectors stay f32 as the store hands them out.
    Ok(if shape.len() > 1 && half_weights() { t.to_dtype(candle_core::DType::BF16)? } else { t })
}

fn half_weights() -> bool {
    std::env::var("BENCH_DTYPE").is_ok_and(|v| v == "bf16")
}

/// Random store; `share_blocks` makes every block reuse block 0's tensors (same names, shared memory).
fn random_store(cfg: &SanaTransformerConfig, share_blocks: bool) -> Result<ParamStore> {
    let mut tensors = BTreeMap::new();
    for (n, s) in shapes(cfg, None) {
        tensors.insert(n, random(&s)?);
    }
    let block0: Vec<Tensor> = shapes(cfg, Some(0)).iter().map(|(_, s)| random(s)).collect::<Result<_>>()?;
    for i in 0..cfg.num_layers {
        for ((n, s), t0) in shapes(cfg, Some(i)).into_iter().zip(&block0) {
            let t = if share_blocks || i == 0 { t0.clone() } else { random(&s)? };
            tensors.insert(n, t);
        }
    }
    Ok(ParamStore::from_tensors(tensors))
}

fn input(cfg: &SanaTransformerConfig, size: usize) -> Result<TransformerInput> {
    let dev = Device::Cpu;
    let (b, s) = (2, 300);
    let mask: Vec<f32> = (0..b * s).map(|i| if i % s < [40, 300][i / s] { 1.0 } else { 0.0 }).collect();
    Ok(TransformerInput {
        hidden_states: Tensor::randn(0f32, 1.0, (b, cfg.in_channels, size, size), &dev)?,
        encoder_hidden_states: Tensor::randn(0f32, 1.0, (b, s, cfg.caption_channels), &dev)?,
        timestep: Tensor::new(&[999f32, 500.0], &dev)?,
        encoder_attention_mask: Some(Tensor::from_vec(mask, (b, s), &dev)?),
        guidance: None,
        controlnet_block_samples: None,
        lora_scale: 1.0,
        pag: None,
        caption_cache: None,
    })
}

fn vm_hwm_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kb.unwrap_or(0.0) / 1024.0
}

/// User + system CPU seconds of this process (/proc/self/stat, 10 ms ticks). On a shared machine CPU time per
/// forward is a steadier measure of work than wall time.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn time_forward(model: &SanaTransformer2DModel, inp: &TransformerInput, reps: usize) -> Result<Vec<f64>> {
    let mut times = Vec::new();
    for _ in 0..reps {
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let out = model.forward(inp)?;
        let _ = out.sum_all()?.to_scalar::<f32>()?; // force completion
        times.push(t0.elapsed().as_secs_f64());
        println!("    run: wall {:.2}s, CPU {:.2}s", times[times.len() - 1], cpu_seconds() - c0);
    }
    Ok(times)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// `only`: one latent size, a single run without warm-up (a peak-RSS measurement, see benches/RESULTS.md).
fn bench(name: &str, only: Option<usize>) -> Result<()> {
    // (latent size, warm-up run first, timed runs): the shared 2-core machine makes a run take minutes.
    let (cfg, share, sizes): (SanaTransformerConfig, bool, &[(usize, bool, usize)]) = match name {
        "600m" => (config(28, 36, 16, 72), false, &[(32, true, 3), (64, false, 1)]),
        "1600m" => (config(20, 70, 20, 112), true, &[(32, true, 1)]),
        other => return Err(sana_core::SanaError::invalid_arg("model", format!("expected 600m or 1600m, received {other}"))),
    };
    let t0 = Instant::now();
    let store = Arc::new(random_store(&cfg, share)?);
    let model = SanaTransformer2DModel::new(&cfg, store.root())?;
    assert!(store.unused().is_empty());
    let params: usize = shapes(&cfg, None).iter().chain((0..cfg.num_layers).flat_map(|i| shapes(&cfg, Some(i))).collect::<Vec<_>>().iter())
        .map(|(_, s)| s.iter().product::<usize>()).sum();
    println!("== Sana {name}{}: {} layers, inner {}, {:.2}B params ({:.2} GB f32){}; random weights built in {:.1}s, RSS {:.0} MB",
        if half_weights() { format!(" (bf16 weights, GEMM kernel {})", sana_core::ops::sgemm::cpu_gemm_kernel()) } else { String::new() },
        cfg.num_layers, cfg.inner_dim(), params as f64 / 1e9, params as f64 * 4.0 / 1e9,
        if share { ", blocks share one set of weights" } else { "" }, t0.elapsed().as_secs_f64(), vm_hwm_mb());
    let single = only.map(|n| [(n, false, 1)]);
    for &(size, warm_up, reps) in single.as_ref().map(|s| &s[..]).unwrap_or(sizes) {
        let inp = input(&cfg, size)?;
        let warm = if warm_up { time_forward(&model, &inp, 1)?[0] } else { f64::NAN };
        let times = time_forward(&model, &inp, reps)?;
        println!("  {size}×{size} latents, batch 2, 300 text tokens: {} {:.2}s (runs {:?}, warm-up {:.2}s, NaN = none); peak RSS (VmHWM) {:.0} MB",
            if reps > 1 { "median" } else { "single run" }, median(times.clone()),
            times.iter().map(|t| format!("{t:.2}")).collect::<Vec<_>>(), warm, vm_hwm_mb());
    }
    // Per-shape GEMM time, with SANA_GEMM_STATS=1 (empty otherwise).
    print!("{}", sana_core::ops::sgemm::sgemm_stats_report());
    if share {
        let block_params: usize = shapes(&cfg, Some(0)).iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        let extra = (cfg.num_layers - 1) * block_params * 4;
        println!("  distinct weights would add {:.0} MB: estimated real peak RSS {:.0} MB", extra as f64 / 1048576.0,
            vm_hwm_mb() + extra as f64 / 1048576.0);
    }
    Ok(())
}

fn main() -> Result<()> {
    match std::env::args().nth(1) {
        Some(name) => bench(&name, std::env::args().nth(2).and_then(|s| s.parse().ok())),
        None => {
            println!("CPU threads: {}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
            let exe = std::env::current_exe().map_err(|e| sana_core::SanaError::Io { path: "current_exe".into(), source: e })?;
            for name in ["600m", "1600m"] {
                let status = std::process::Command::new(&exe).arg(name).status();
                if !status.map(|s| s.success()).unwrap_or(false) {
                    eprintln!("bench {name} failed");
                }
            }
            Ok(())
        }
    }
}
