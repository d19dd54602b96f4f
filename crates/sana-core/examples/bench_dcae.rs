//! DC-AE decode benchmark with random weights for the real dc-ae-f32c32-sana-1.0 structure.
//!
//! Run one size per process so that VmHWM (peak RSS) is per size:
//! ```text
//! cargo run --release -p sana-core --example bench_dcae -- decode 16    # 512² image
//! cargo run --release -p sana-core --example bench_dcae -- decode 32    # 1024²
//! cargo run --release -p sana-core --example bench_dcae -- tiled 128    # 4096², Auto tiling
//! cargo run --release -p sana-core --example bench_dcae -- tile 128     # one tile of the 4K plan only
//! ```


// As in the Node addon: freed activation blocks are reused instead of page-faulted in again.
#[global_allocator]
static ALLOC: sana_core::alloc_cache::LargeBlockCache = sana_core::alloc_cache::LargeBlockCache::new();

use sana_core::config::AutoencoderDCConfig;
use sana_core::models::autoencoder_dc::{decode_activation_bytes, AutoencoderDC, DecodeOptions};
use sana_core::weights::ParamStore;
use sana_core::{Device, SanaError, Tensor};
use sana_core::models::component::{BuildModel, Component, ComponentKind, LoadOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

fn config() -> AutoencoderDCConfig {
    let blocks = ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock", "EfficientViTBlock", "EfficientViTBlock"];
    serde_json::from_value(serde_json::json!({
        "in_channels": 3, "latent_channels": 32, "attention_head_dim": 32,
        "encoder_block_types": blocks, "decoder_block_types": blocks,
        "encoder_block_out_channels": [128, 256, 512, 512, 1024, 1024],
        "decoder_block_out_channels": [128, 256, 512, 512, 1024, 1024],
        "encoder_layers_per_block": [2, 2, 2, 3, 3, 3],
        "decoder_layers_per_block": [3, 3, 3, 3, 3, 3],
        "encoder_qkv_multiscales": [[], [], [], [5], [5], [5]],
        "decoder_qkv_multiscales": [[], [], [], [5], [5], [5]],
        "upsample_block_type": "interpolate", "downsample_block_type": "conv",
        "decoder_norm_types": "rms_norm", "decoder_act_fns": "silu", "decoder_conv_act_fn": "relu",
        "scaling_factor": 0.41407
    }))
    .expect("config")
}

/// Random weights with exactly the names and shapes the model asks for, discovered by building the model
/// against a growing store (a missing name gets a placeholder, whose shape error then names the shape).
/// (About a minute, so the result is saved as a diffusers-format folder and later runs load it.)
fn random_weights(cfg: &AutoencoderDCConfig) -> sana_core::Result<BTreeMap<String, Tensor>> {
    let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
    loop {
        let store = Arc::new(ParamStore::from_tensors(tensors.clone()));
        match AutoencoderDC::new(cfg, &store.root()) {
            Ok(_) => return Ok(tensors),
            Err(SanaError::WeightMissing { name, .. }) => {
                tensors.insert(name, Tensor::zeros(1, sana_core::DType::F32, &Device::Cpu)?);
            }
            Err(SanaError::ShapeMismatch { name, expected, .. }) => {
                let t = if expected.len() == 1 {
                    let v = if name.ends_with("weight") { 1.0 } else { 0.0 };
                    Tensor::full(v as f32, expected, &Device::Cpu)?
                } else {
                    // Kaiming-like scale keeps activations finite (no denormal/inf slow paths).
                    let fan_in: usize = expected[1..].iter().product();
                    Tensor::randn(0f32, (1.0 / fan_in as f64).sqrt() as f32, expected, &Device::Cpu)?
                };
                tensors.insert(name, t);
            }
            Err(e) => return Err(e),
        }
    }
}

/// `dir/config.json` + `dir/diffusion_pytorch_model.safetensors` with random weights, created once.
fn ensure_checkpoint(dir: &Path, cfg: &AutoencoderDCConfig) -> sana_core::Result<()> {
    let file = dir.join("diffusion_pytorch_model.safetensors");
    if file.is_file() {
        return Ok(());
    }
    let io = |e: std::io::Error| SanaError::Io { path: dir.to_path_buf(), source: e };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut json = serde_json::to_value(cfg).expect("config serializes");
    json["_class_name"] = "AutoencoderDC".into();
    std::fs::write(dir.join("config.json"), json.to_string()).map_err(io)?;
    let tensors = random_weights(cfg)?;
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.dims().to_vec(), t.flatten_all()?.to_vec1::<f32>()?.iter().flat_map(|v| v.to_le_bytes()).collect())))
        .collect::<sana_core::Result<_>>()?;
    drop(tensors);
    let views = bytes.iter().map(|(k, shape, b)| {
        (k.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b).expect("view"))
    });
    let tmp = dir.join("partial.safetensors");
    safetensors::tensor::serialize_to_file(views, None, &tmp)
        .map_err(|e| SanaError::CorruptWeights { path: tmp.clone(), msg: e.to_string() })?;
    std::fs::rename(&tmp, &file).map_err(io)
}

fn proc_status(key: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(key)).map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")))
        .unwrap_or_else(|| "?".into())
}

fn main() -> sana_core::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("decode");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(16);
    let cfg = config();
    let dir = PathBuf::from(std::env::var("DCAE_BENCH_DIR").unwrap_or_else(|_| "/tmp/dcae-f32c32-random".into()));
    ensure_checkpoint(&dir, &cfg)?;
    let t0 = Instant::now();
    // DCAE_BENCH_DTYPE=bfloat16: weights held bf16 (compute stays f32).
    let opts = LoadOptions { dtype: std::env::var("DCAE_BENCH_DTYPE").unwrap_or_else(|_| "auto".into()), ..LoadOptions::default() };
    let component = Component::<AutoencoderDCConfig>::load(ComponentKind::Vae, &dir, &opts)?;
    let model = AutoencoderDC::build(&component)?;
    drop(component); // the model holds its own references to the weights
    println!("loaded random dc-ae-f32c32 from {} in {:.1}s; RSS after load {}", dir.display(), t0.elapsed().as_secs_f64(), proc_status("VmRSS:"));
    let est = decode_activation_bytes(&cfg, sana_core::DType::F32, 1, n, n);
    println!("latent {n}×{n} → image {}², activation estimate {:.2} GB", n * 32, est as f64 / 1e9);
    let z = Tensor::randn(0f32, 1.0, (1, 32, n, n), &Device::Cpu)?;
    let opts = match mode {
        "decode" => DecodeOptions { tiling: sana_core::models::autoencoder_dc::Tiling::Off, ..Default::default() },
        _ => DecodeOptions::default(),
    };
    let t1 = Instant::now();
    let out = if mode == "tile" {
        // The Auto plan's tile size for this latent (largest within the default budget), decoded once.
        let mut t = n;
        while t > 8 && decode_activation_bytes(&cfg, sana_core::DType::F32, 1, t, t) > sana_core::models::autoencoder_dc::DEFAULT_MEMORY_BUDGET {
            t -= 1;
        }
        println!("one Auto tile: {t}×{t} latent (estimate {:.2} GB)", decode_activation_bytes(&cfg, sana_core::DType::F32, 1, t, t) as f64 / 1e9);
        model.decode(&z.narrow(2, 0, t)?.narrow(3, 0, t)?, &DecodeOptions { tiling: sana_core::models::autoencoder_dc::Tiling::Off, ..Default::default() })?
    } else {
        model.decode(&z, &opts)?
    };
    let secs = t1.elapsed().as_secs_f64();
    let finite = out.flatten_all()?.to_vec1::<f32>()?.iter().all(|v| v.is_finite());
    println!("{mode} {n}: output {:?} in {secs:.1}s (finite: {finite}); peak RSS (VmHWM) {}", out.dims(), proc_status("VmHWM:"));
    // Per-shape GEMM time, with SANA_GEMM_STATS=1 (empty otherwise).
    print!("{}", sana_core::ops::sgemm::sgemm_stats_report());
    Ok(())
}
