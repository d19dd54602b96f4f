//! Shared helpers for the fixture tests: locate ../shared/fixtures, read reference tensors and the
//! manifest, and compare with each case's tolerance (`|got − ref| ≤ atol + rtol·|ref|`, numpy allclose).
#![allow(dead_code)]

pub mod wave2;

use sana_core::weights::WeightFiles;
use sana_core::{DType, Device, Tensor};
use std::path::PathBuf;
use std::sync::OnceLock;

/// `$SANA_FIXTURES`, else `../shared/fixtures` beside the repository.
pub fn fixtures() -> PathBuf {
    if let Ok(p) = std::env::var("SANA_FIXTURES") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
}

pub fn manifest() -> &'static serde_json::Value {
    static M: OnceLock<serde_json::Value> = OnceLock::new();
    M.get_or_init(|| {
        let p = fixtures().join("sana-tiny/reference/reference.json");
        serde_json::from_str(&std::fs::read_to_string(&p).expect("reference.json")).expect("valid JSON")
    })
}

fn reference_files() -> &'static WeightFiles {
    static F: OnceLock<WeightFiles> = OnceLock::new();
    F.get_or_init(|| WeightFiles::open(&[fixtures().join("sana-tiny/reference/reference.safetensors")]).expect("reference.safetensors"))
}

/// The manifest entry of case `name`.
pub fn case(name: &str) -> &'static serde_json::Value {
    manifest()["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no case {name}"))
}

/// A reference tensor by its key in reference.safetensors, as f32 (ids/masks as i64 tensors).
pub fn tensor(key: &str) -> Tensor {
    let files = reference_files();
    let e = files.index.get(key).unwrap_or_else(|| panic!("no reference tensor {key}"));
    let bytes = files.bytes(e);
    let shape = e.shape.clone();
    match e.dtype {
        safetensors::Dtype::I64 => {
            let v: Vec<i64> = bytes.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
            Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
        }
        _ => sana_core::weights::decode_tensor(&files.paths[0], key, e, bytes, &Device::Cpu, DType::F32, &|_| {}).unwrap(),
    }
}

/// The reference tensor of `role` in a case's `tensors` (or `intermediates`) map.
pub fn case_tensor(case_name: &str, role: &str) -> Tensor {
    let c = case(case_name);
    let entry = c["tensors"].get(role).or_else(|| c.get("intermediates").and_then(|i| i.get(role)));
    tensor(entry.unwrap_or_else(|| panic!("case {case_name} has no tensor {role}"))["key"].as_str().unwrap())
}

pub fn tolerance(case_name: &str) -> (f64, f64) {
    let t = &case(case_name)["tolerance"];
    (t["atol"].as_f64().unwrap(), t["rtol"].as_f64().unwrap())
}

/// Assert allclose; on failure report the worst element. Returns the max abs error.
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, atol: f64, rtol: f64) -> f64 {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let g: Vec<f32> = got.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let w: Vec<f32> = want.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let mut worst = (0usize, 0f64, f64::NEG_INFINITY);
    let mut max_abs = 0f64;
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let err = (*a as f64 - *b as f64).abs();
        assert!(a.is_finite(), "{what}: non-finite value at {i}");
        max_abs = max_abs.max(err);
        let excess = err - (atol + rtol * (*b as f64).abs());
        if excess > worst.2 {
            worst = (i, err, excess);
        }
    }
    assert!(worst.2 <= 0.0, "{what}: max abs err {max_abs:.3e}; worst at {} (err {:.3e}, got {}, want {}), atol {atol:e} rtol {rtol:e}",
        worst.0, worst.1, g[worst.0], w[worst.0]);
    max_abs
}
