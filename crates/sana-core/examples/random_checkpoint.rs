//! Write a random-weight checkpoint folder for a `config.json`, in the checkpoint's own format, so that both
//! our loaders and diffusers/transformers' `from_pretrained(dir)` load the very same weights.
//!
//! ```text
//! cargo run --release -p sana-core --example random_checkpoint -- transformer  DIR   # DIR/config.json → DIR/diffusion_pytorch_model.safetensors
//! cargo run --release -p sana-core --example random_checkpoint -- vae          DIR
//! cargo run --release -p sana-core --example random_checkpoint -- text_encoder DIR   # → DIR/model.safetensors
//! cargo run --release -p sana-core --example random_checkpoint -- transformer  DIR bf16  # BF16 values (as Sana 1.5 4.8B ships)
//! ```
//!
//! The tensor names and shapes are the ones our model constructors ask for (the same discovery as
//! `bench_dcae.rs`, with zero placeholders whose untouched pages cost no memory);
//! diffusers/transformers must then find every weight they expect in the file (the bench's PyTorch worker
//! checks for missing keys). Values (f32, or bf16 rounded to nearest even with `bf16`; little-endian), written one
//! tensor at a time:
//! - ≥ 2-D: uniform with std 1/√fan_in (fan_in = product of all dims but the first), so activations stay
//!   finite and O(1) through deep stacks (no denormal or inf slow paths);
//! - 1-D `*.weight`: 1.0 (norm scales), or 0.0 for Gemma, whose RMSNorm multiplies by (1 + w);
//! - 1-D others (biases): 0.0.
//! The RNG is seeded from the tensor name, so a folder is reproducible.

use sana_core::config::{load_config, AutoencoderDCConfig, Gemma2Config, SanaTransformerConfig};
use sana_core::models::autoencoder_dc::AutoencoderDC;
use sana_core::models::component::ComponentKind;
use sana_core::models::gemma2::Gemma2Model;
use sana_core::models::sana_transformer::SanaTransformer2DModel;
use sana_core::weights::{ParamStore, Vb};
use sana_core::{DType, Device, Result, SanaError, Tensor};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Names and shapes the model built by `build` asks for: each missing name gets a placeholder, whose
/// shape error then names the expected shape.
fn discover(build: impl Fn(Vb) -> Result<()>) -> Result<BTreeMap<String, Vec<usize>>> {
    let zero = Tensor::zeros(1, DType::F32, &Device::Cpu)?;
    let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut shapes = BTreeMap::new();
    loop {
        let store = Arc::new(ParamStore::from_tensors(tensors.clone()));
        match build(store.root()) {
            Ok(()) => return Ok(shapes),
            Err(SanaError::WeightMissing { name, .. }) => {
                tensors.insert(name, zero.clone());
            }
            Err(SanaError::ShapeMismatch { name, expected, .. }) => {
                // Zeros from calloc: pages never touched cost no memory, and reshapes of a contiguous
                // tensor are free (a broadcast placeholder would be copied by every reshape, every round).
                tensors.insert(name.clone(), Tensor::zeros(expected.clone(), DType::F32, &Device::Cpu)?);
                shapes.insert(name, expected);
            }
            Err(e) => return Err(e),
        }
    }
}

/// splitmix64: tiny, fast, good enough for weights.
struct Rng(u64);
impl Rng {
    fn from_name(name: &str) -> Self {
        Rng(name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3)))
    }
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 // [0, 1)
    }
}

/// Stream a safetensors file (header, then each tensor's values) without holding more than a chunk.
fn write_safetensors(path: &Path, shapes: &BTreeMap<String, Vec<usize>>, one_d_weight: f32, bf16: bool) -> std::io::Result<()> {
    let (elem, dtype) = if bf16 { (2, "BF16") } else { (4, "F32") };
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in shapes {
        let bytes = shape.iter().product::<usize>() * elem;
        header.insert(name.clone(), serde_json::json!({ "dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes] }));
        offset += bytes;
    }
    header.insert("__metadata__".into(), serde_json::json!({ "format": "pt" }));
    let mut json = serde_json::Value::Object(header).to_string();
    while json.len() % 8 != 0 {
        json.push(' ');
    }
    let tmp = path.with_extension("partial");
    let mut out = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(&tmp)?);
    out.write_all(&(json.len() as u64).to_le_bytes())?;
    out.write_all(json.as_bytes())?;
    let mut buf: Vec<u8> = Vec::with_capacity(8 << 20);
    for (name, shape) in shapes {
        let numel: usize = shape.iter().product();
        let mut rng = Rng::from_name(name);
        // Uniform on [-a, a] has std a/√3.
        let a = if shape.len() >= 2 { (3.0 / shape[1..].iter().product::<usize>() as f64).sqrt() as f32 } else { 0.0 };
        let constant = if name.ends_with("weight") { one_d_weight } else { 0.0 };
        for i in 0..numel {
            let v = if shape.len() >= 2 { (2.0 * rng.next_f32() - 1.0) * a } else { constant };
            if bf16 {
                buf.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes());
            } else {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            if buf.len() >= 8 << 20 || i + 1 == numel {
                out.write_all(&buf)?;
                buf.clear();
            }
        }
    }
    out.flush()?;
    drop(out);
    std::fs::rename(&tmp, path)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(kind), Some(dir)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: random_checkpoint <transformer|vae|text_encoder> DIR [bf16]   (DIR/config.json must exist)");
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    let bf16 = args.get(3).map(String::as_str) == Some("bf16");
    let t0 = std::time::Instant::now();
    let (shapes, file, one_d_weight) = match kind.as_str() {
        "transformer" => {
            let cfg: SanaTransformerConfig = load_config(&dir, ComponentKind::Transformer.classes())?;
            // Discovery rebuilds the model once per tensor it adds, so its cost grows with the square of the
            // tensor count (the 60-layer 4.8B model took most of an hour). Every block has the same tensors:
            // discover one block, then name the others after it.
            let one = SanaTransformerConfig { num_layers: cfg.num_layers.min(1), ..cfg.clone() };
            let mut shapes = discover(|vb| SanaTransformer2DModel::new(&one, vb).map(drop))?;
            let block0: Vec<(String, Vec<usize>)> = shapes.iter().filter_map(|(n, s)| n.strip_prefix("transformer_blocks.0.").map(|r| (r.to_string(), s.clone()))).collect();
            for i in 1..cfg.num_layers {
                shapes.extend(block0.iter().map(|(r, s)| (format!("transformer_blocks.{i}.{r}"), s.clone())));
            }
            (shapes, "diffusion_pytorch_model.safetensors", 1.0)
        }
        "vae" => {
            let cfg: AutoencoderDCConfig = load_config(&dir, ComponentKind::Vae.classes())?;
            (discover(|vb| AutoencoderDC::new(&cfg, &vb).map(drop))?, "diffusion_pytorch_model.safetensors", 1.0)
        }
        "text_encoder" => {
            let cfg: Gemma2Config = load_config(&dir, ComponentKind::TextEncoder.classes())?;
            (discover(|vb| Gemma2Model::new(&cfg, vb).map(drop))?, "model.safetensors", 0.0)
        }
        other => return Err(SanaError::invalid_arg("kind", format!("transformer, vae or text_encoder, not {other}"))),
    };
    let params: usize = shapes.values().map(|s| s.iter().product::<usize>()).sum();
    let path = dir.join(file);
    write_safetensors(&path, &shapes, one_d_weight, bf16).map_err(|e| SanaError::Io { path: path.clone(), source: e })?;
    let (bytes, name) = if bf16 { (2.0, "bf16") } else { (4.0, "f32") };
    println!("{}: {} tensors, {:.1} M parameters, {:.2} GB {name}, in {:.1}s",
        path.display(), shapes.len(), params as f64 / 1e6, params as f64 * bytes / 1e9, t0.elapsed().as_secs_f64());
    Ok(())
}
