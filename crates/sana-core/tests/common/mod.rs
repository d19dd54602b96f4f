//! Shared helpers for the fixture tests: locate ../shared/fixtures, read reference tensors and the
//! manifest, and compare with each case's tolerance (`|got − ref| ≤ atol + rtol·|ref|`, numpy allclose).
#![allow(dead_code)]

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

/// The two reference sets: wave 1 (`sana-tiny/reference`) and wave 2 (`wave2/reference`).
const REFERENCES: [&str; 2] = ["sana-tiny/reference", "wave2/reference"];

struct Reference {
    manifest: serde_json::Value,
    files: WeightFiles,
}

fn reference(i: usize) -> &'static Reference {
    static R: [OnceLock<Reference>; 2] = [OnceLock::new(), OnceLock::new()];
    R[i].get_or_init(|| {
        let dir = fixtures().join(REFERENCES[i]);
        let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
        Reference {
            manifest: serde_json::from_str(&text).expect("valid JSON"),
            files: WeightFiles::open(&[dir.join("reference.safetensors")]).expect("reference.safetensors"),
        }
    })
}

/// The wave-1 manifest.
pub fn manifest() -> &'static serde_json::Value {
    &reference(0).manifest
}

/// Which reference set holds case `name`, and its manifest entry.
fn find_case(name: &str) -> (usize, &'static serde_json::Value) {
    (0..REFERENCES.len())
        .find_map(|i| reference(i).manifest["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).map(|c| (i, c)))
        .unwrap_or_else(|| panic!("no case {name}"))
}

/// The manifest entry of case `name` (wave 1 or wave 2).
pub fn case(name: &str) -> &'static serde_json::Value {
    find_case(name).1
}

/// A wave-1 reference tensor by its key in reference.safetensors, as f32 (ids/masks as i64 tensors).
pub fn tensor(key: &str) -> Tensor {
    tensor_in(0, key)
}

fn tensor_in(set: usize, key: &str) -> Tensor {
    let files = &reference(set).files;
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
    let (set, c) = find_case(case_name);
    let entry = c["tensors"].get(role).or_else(|| c.get("intermediates").and_then(|i| i.get(role)));
    tensor_in(set, entry.unwrap_or_else(|| panic!("case {case_name} has no tensor {role}"))["key"].as_str().unwrap())
}

pub fn tolerance(case_name: &str) -> (f64, f64) {
    let t = &case(case_name)["tolerance"];
    (t["atol"].as_f64().unwrap(), t["rtol"].as_f64().unwrap())
}

/// The tolerance of output `role` when a case gives one per output (`{"output_fused": {atol, rtol}, …}`),
/// else the case-wide one.
pub fn tolerance_of(case_name: &str, role: &str) -> (f64, f64) {
    let t = &case(case_name)["tolerance"];
    let t = if t.get("atol").is_some() { t } else { &t[role] };
    (t["atol"].as_f64().unwrap_or_else(|| panic!("{case_name}: no tolerance for {role}")), t["rtol"].as_f64().unwrap())
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
