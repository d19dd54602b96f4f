//! The wave-2 references (`wave2/reference/reference.json` + `reference.safetensors`): cases, tensors and
//! tolerances, which may be one `{atol, rtol}` or one per output tensor.

use sana_core::weights::WeightFiles;
use sana_core::{DType, Device, Tensor};
use std::path::PathBuf;
use std::sync::OnceLock;

/// `<fixtures>/wave2`.
pub fn dir() -> PathBuf {
    super::fixtures().join("wave2")
}

fn manifest() -> &'static serde_json::Value {
    static M: OnceLock<serde_json::Value> = OnceLock::new();
    M.get_or_init(|| {
        let p = dir().join("reference/reference.json");
        serde_json::from_str(&std::fs::read_to_string(&p).expect("wave2 reference.json")).expect("valid JSON")
    })
}

fn files() -> &'static WeightFiles {
    static F: OnceLock<WeightFiles> = OnceLock::new();
    F.get_or_init(|| WeightFiles::open(&[dir().join("reference/reference.safetensors")]).expect("wave2 reference.safetensors"))
}

pub fn case(name: &str) -> &'static serde_json::Value {
    manifest()["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no wave2 case {name}"))
}

/// The tensor of `role` in case `name`, as f32 (int64 masks as i64).
pub fn case_tensor(name: &str, role: &str) -> Tensor {
    let key = case(name)["tensors"][role]["key"].as_str().unwrap_or_else(|| panic!("case {name} has no tensor {role}"));
    let f = files();
    let e = f.index.get(key).unwrap_or_else(|| panic!("no reference tensor {key}"));
    match e.dtype {
        safetensors::Dtype::I64 => {
            let v: Vec<i64> = f.bytes(e).chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
            Tensor::from_vec(v, e.shape.clone(), &Device::Cpu).unwrap()
        }
        _ => sana_core::weights::decode_tensor(&f.paths[0], key, e, f.bytes(e), &Device::Cpu, DType::F32, &|_| {}).unwrap(),
    }
}

/// (atol, rtol) of case `name` for output `role` (the case-wide pair when it has only one).
pub fn tolerance(name: &str, role: &str) -> (f64, f64) {
    let t = &case(name)["tolerance"];
    let t = if t.get("atol").is_some() { t } else { &t[role] };
    (t["atol"].as_f64().unwrap_or_else(|| panic!("{name}: no tolerance for {role}")), t["rtol"].as_f64().unwrap())
}
