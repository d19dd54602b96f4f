//! LoRA on SanaTransformer2DModel against the wave-2 diffusers/peft references (fp32, CPU), and the
//! errors a LoRA that does not fit must give.

mod common;

use common::{assert_close, case, case_tensor, fixtures, tolerance_of};
use sana_core::config::SanaTransformerConfig;
use sana_core::models::component::{BuildModel, Component, ComponentKind, LoadOptions};
use sana_core::models::sana_transformer::{SanaTransformer2DModel, TransformerInput};
use sana_core::weights::WeightFiles;
use sana_core::{SanaError, Tensor};
use std::path::{Path, PathBuf};

const CASE: &str = "lora_transformer_scale_1";

fn lora_file() -> PathBuf {
    fixtures().join("wave2").join(case(CASE)["lora"].as_str().unwrap())
}

fn load() -> SanaTransformer2DModel {
    let dir = fixtures().join("wave2").join(case(CASE)["model_dir"].as_str().unwrap());
    let c = Component::<SanaTransformerConfig>::load(ComponentKind::Transformer, &dir, &LoadOptions::default()).expect("load");
    SanaTransformer2DModel::build(&c).expect("build")
}

fn input(lora_scale: f64) -> TransformerInput {
    TransformerInput {
        hidden_states: case_tensor(CASE, "hidden_states"),
        encoder_hidden_states: case_tensor(CASE, "encoder_hidden_states"),
        timestep: case_tensor(CASE, "timestep"),
        encoder_attention_mask: Some(case_tensor(CASE, "encoder_attention_mask")),
        guidance: None,
        controlnet_block_samples: None,
        lora_scale,
        pag: None,
        caption_cache: None,
    }
}

/// Compare with `case`'s tensor `role` at the tolerance the case gives `tol_role`.
fn check(got: &Tensor, name: &str, role: &str, tol_role: &str) {
    let (atol, rtol) = tolerance_of(name, tol_role);
    let err = assert_close(&format!("{name}/{role}"), got, &case_tensor(name, role), atol, rtol);
    eprintln!("{name}/{role}: max abs err {err:.3e} (atol {atol:e}, rtol {rtol:e})");
}

#[test]
fn lora_scale_1_and_scaled_match_diffusers() {
    let model = load();
    check(&model.forward(&input(1.0)).unwrap(), CASE, "output_base", "output");
    assert_eq!(model.adapters().load(&lora_file(), None).unwrap(), "default_0");
    check(&model.forward(&input(1.0)).unwrap(), CASE, "output", "output");
    check(&model.forward(&input(0.5)).unwrap(), "lora_transformer_scaled", "output", "output");
    let info = &model.adapters().list()[0];
    assert_eq!((info.rank, info.alpha, info.layers, info.weight), (4, Some(8.0), 20, Some(1.0)));
}

/// Fused at 0.8 matches diffusers' fused output (the call's scale has no effect while fused); unfusing
/// gives the unfused LoRA back, and unloading after a fuse gives the base model (not diffusers' merged one).
#[test]
fn fuse_then_unload_gives_the_base_model_back() {
    let fused = "lora_fuse_unload";
    let model = load();
    model.adapters().load(&lora_file(), Some("tiny")).unwrap();
    model.adapters().fuse(case(fused)["fuse_lora_scale"].as_f64().unwrap()).unwrap();
    check(&model.forward(&input(1.0)).unwrap(), fused, "output_fused", "output_fused");
    check(&model.forward(&input(0.3)).unwrap(), fused, "output_fused", "output_fused");
    model.adapters().unfuse().unwrap();
    check(&model.forward(&input(1.0)).unwrap(), CASE, "output", "output");
    model.adapters().fuse(0.8).unwrap();
    model.adapters().unload().unwrap();
    assert!(model.adapters().list().is_empty() && model.adapters().fused().is_none());
    check(&model.forward(&input(1.0)).unwrap(), fused, "output_base", "output_after_unload");
}

/// Two adapters at weight 0.25 each add up to one at 0.5; with no metadata alpha = r (scaling 1, half of 2).
#[test]
fn several_adapters_and_missing_metadata() {
    let model = load();
    model.adapters().load(&lora_file(), Some("a")).unwrap();
    model.adapters().load(&lora_file(), Some("b")).unwrap();
    model.adapters().set_active(&[("a".into(), 0.25), ("b".into(), 0.25)]).unwrap();
    check(&model.forward(&input(1.0)).unwrap(), "lora_transformer_scaled", "output", "output");
    model.adapters().set_active(&[]).unwrap();
    check(&model.forward(&input(1.0)).unwrap(), CASE, "output_base", "output");
    model.adapters().delete(&["a".into(), "b".into()]).unwrap();

    let tmp = TempDir::new("no-metadata");
    let plain = tmp.path("plain.safetensors");
    let files = WeightFiles::open(&[lora_file()]).unwrap();
    let tensors: Vec<_> = files.index.iter().map(|(k, e)| (k.clone(), e.shape.clone(), files.bytes(e).to_vec())).collect();
    write_safetensors(&plain, &tensors, None);
    assert_eq!(model.adapters().load(&plain, None).unwrap(), "default_0");
    assert_eq!(model.adapters().list()[0].alpha, None);
    check(&model.forward(&input(1.0)).unwrap(), "lora_transformer_scaled", "output", "output");
}

// ─── Errors ─────────────────────────────────────────────────────────────────────────────────────

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("sana-lora-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// F32 tensors (name, shape, little-endian bytes) as a safetensors file.
fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<u8>)], metadata: Option<&str>) {
    let mut header = serde_json::Map::new();
    if let Some(m) = metadata {
        header.insert("__metadata__".into(), serde_json::json!({ "lora_adapter_metadata": m }));
    }
    let mut offset = 0;
    for (name, shape, bytes) in tensors {
        header.insert(name.clone(), serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes.len()] }));
        offset += bytes.len();
    }
    let header = serde_json::Value::Object(header).to_string();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    for (_, _, bytes) in tensors {
        out.extend(bytes);
    }
    std::fs::write(path, out).unwrap();
}

fn zeros(shape: &[usize]) -> Vec<u8> {
    vec![0; shape.iter().product::<usize>() * 4]
}

fn pair(module: &str, r: usize, inp: usize, out: usize) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    vec![
        (format!("transformer.{module}.lora_A.weight"), vec![r, inp], zeros(&[r, inp])),
        (format!("transformer.{module}.lora_B.weight"), vec![out, r], zeros(&[out, r])),
    ]
}

/// Loading `tensors` fails with `code`, the message names `what`, and the model is left as it was.
fn rejects(model: &SanaTransformer2DModel, tmp: &TempDir, tensors: Vec<(String, Vec<usize>, Vec<u8>)>, metadata: Option<&str>, code: &str, what: &str) {
    let path = tmp.path(&format!("{}.safetensors", code.to_lowercase()));
    write_safetensors(&path, &tensors, metadata);
    let before = model.adapters().list().len();
    let err = model.adapters().load(&path, None).expect_err("should be rejected");
    assert_eq!(err.code(), code, "{err}");
    assert!(err.to_string().contains(what), "message does not name {what}: {err}");
    assert_eq!(model.adapters().list().len(), before);
}

#[test]
fn a_lora_that_does_not_fit_is_rejected_naming_the_key() {
    let model = load();
    let tmp = TempDir::new("errors");
    let q = "transformer_blocks.0.attn1.to_q";
    // Missing file.
    let err = model.adapters().load(&tmp.path("absent.safetensors"), None).unwrap_err();
    assert!(matches!(err, SanaError::NotFound { .. }) && err.to_string().contains("absent.safetensors"), "{err}");
    // kohya layout: the first unknown key is named.
    let kohya = "lora_unet_transformer_blocks_0_attn1_to_q.lora_down.weight";
    rejects(&model, &tmp, vec![(kohya.into(), vec![4, 64], zeros(&[4, 64]))], None, "SANA_ADAPTER_MISMATCH", kohya);
    // A layer LoRA cannot target here (the depthwise conv), and one the model lacks (block 7 of 2).
    rejects(&model, &tmp, pair("transformer_blocks.0.ff.conv_depth", 4, 9, 320), None, "SANA_ADAPTER_MISMATCH", "ff.conv_depth");
    rejects(&model, &tmp, pair("transformer_blocks.7.attn1.to_q", 4, 64, 64), None, "SANA_ADAPTER_MISMATCH", "transformer_blocks.7");
    // A LoRA for a wider model (inner dim 128), and A/B ranks that disagree.
    rejects(&model, &tmp, pair(q, 4, 128, 128), None, "SANA_SHAPE_MISMATCH", &format!("{q}.lora_A.weight"));
    let mut ranks = pair(q, 4, 64, 64);
    ranks[1] = (format!("transformer.{q}.lora_B.weight"), vec![64, 8], zeros(&[64, 8]));
    rejects(&model, &tmp, ranks, None, "SANA_SHAPE_MISMATCH", &format!("{q}.lora_B.weight"));
    // Rank 4 in the file, r = 8 in its metadata.
    rejects(&model, &tmp, pair(q, 4, 64, 64), Some(r#"{"transformer.r": 8, "transformer.lora_alpha": 8}"#), "SANA_SHAPE_MISMATCH", q);
    // A 1×1 conv layer given Linear-shaped factors.
    let conv = "transformer_blocks.0.ff.conv_point";
    rejects(&model, &tmp, pair(conv, 4, 160, 64), None, "SANA_SHAPE_MISMATCH", conv);
    // Half a pair.
    rejects(&model, &tmp, pair(q, 4, 64, 64)[..1].to_vec(), None, "SANA_WEIGHT_MISSING", &format!("{q}.lora_B.weight"));
    // DoRA.
    rejects(&model, &tmp, pair(q, 4, 64, 64), Some(r#"{"transformer.use_dora": true}"#), "SANA_INVALID_CONFIG", "DoRA");
    // Nothing was attached by any of these: the model is the base model.
    check(&model.forward(&input(1.0)).unwrap(), CASE, "output_base", "output");
    // Names: duplicates and unknown ones are argument errors.
    model.adapters().load(&lora_file(), Some("x")).unwrap();
    assert_eq!(model.adapters().load(&lora_file(), Some("x")).unwrap_err().code(), "SANA_INVALID_ARGUMENT");
    assert_eq!(model.adapters().set_active(&[("y".into(), 1.0)]).unwrap_err().code(), "SANA_INVALID_ARGUMENT");
    assert_eq!(model.adapters().set_active(&[("x".into(), f64::NAN)]).unwrap_err().code(), "SANA_INVALID_ARGUMENT");
    assert_eq!(model.forward(&input(f64::INFINITY)).unwrap_err().code(), "SANA_INVALID_ARGUMENT");
}

/// Adapters changed while forwards run on other threads: every pass sees either the whole old or the
/// whole new state, never a mix (each output equals one of the two references).
#[test]
fn forwards_running_while_adapters_change_see_one_state() {
    let model = std::sync::Arc::new(load());
    let (base, lora) = (case_tensor(CASE, "output_base"), case_tensor(CASE, "output"));
    let (atol, rtol) = tolerance_of(CASE, "output");
    let close = |a: &Tensor, b: &Tensor| {
        let d = (a - b).unwrap().abs().unwrap();
        let lim = (b.abs().unwrap() * rtol).unwrap().affine(1.0, atol).unwrap();
        d.le(&lim).unwrap().to_dtype(sana_core::DType::F32).unwrap().min_all().unwrap().to_scalar::<f32>().unwrap() == 1.0
    };
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let m = model.clone();
                s.spawn(move || (0..3).map(|_| m.forward(&input(1.0)).unwrap()).collect::<Vec<_>>())
            })
            .collect();
        for _ in 0..3 {
            model.adapters().load(&lora_file(), Some("t")).unwrap();
            model.adapters().unload().unwrap();
        }
        for w in workers {
            for out in w.join().unwrap() {
                assert!(close(&out, &base) || close(&out, &lora), "a forward saw a mix of adapter states");
            }
        }
    });
}
