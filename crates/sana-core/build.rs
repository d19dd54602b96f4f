//! With the `cuda` feature: compile `kernels/*.cu` to PTX with nvcc, once per target architecture, into
//! OUT_DIR (`src/ops/cuda.rs` embeds them with `include_str!`). Without it: nothing.
//!
//! nvcc: `$CUDA_ROOT/bin/nvcc` (or CUDA_PATH / CUDA_HOME), else `nvcc` on PATH — `scripts/setup-cuda.sh`
//! installs CUDA 13.0 into `.cuda/`. PTX, not SASS: the driver JIT-compiles it for the GPU it runs on,
//! which requires nvcc to be no newer than the driver (13.0 for driver 580).

use std::path::{Path, PathBuf};
use std::process::Command;

/// PTX targets: compute_80 (A100; also the fallback for any newer GPU) and compute_90 (H100/H200).
const ARCHS: [u32; 2] = [80, 90];
const KERNELS: [&str; 3] = ["linear_attention", "depthwise_conv", "channel_norm"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    for var in ["CUDA_ROOT", "CUDA_PATH", "CUDA_HOME", "NVCC"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let nvcc = find_nvcc();
    for kernel in KERNELS {
        let src = Path::new("kernels").join(format!("{kernel}.cu"));
        for arch in ARCHS {
            let ptx = out_dir.join(format!("{kernel}_sm{arch}.ptx"));
            let output = Command::new(&nvcc)
                .args(["--ptx", "-O3", "-std=c++17", &format!("-arch=compute_{arch}"), "-o"])
                .arg(&ptx)
                .arg(&src)
                .output()
                .unwrap_or_else(|e| panic!("could not run {} ({e}); run scripts/setup-cuda.sh and `source .cuda/env.sh`", nvcc.display()));
            if !output.status.success() {
                panic!(
                    "nvcc failed on {} for compute_{arch}:\n{}{}",
                    src.display(),
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
    }
}

fn find_nvcc() -> PathBuf {
    if let Some(nvcc) = std::env::var_os("NVCC") {
        return nvcc.into();
    }
    for var in ["CUDA_ROOT", "CUDA_PATH", "CUDA_HOME"] {
        if let Some(root) = std::env::var_os(var) {
            let nvcc = Path::new(&root).join("bin").join("nvcc");
            if nvcc.is_file() {
                return nvcc;
            }
        }
    }
    "nvcc".into()
}
