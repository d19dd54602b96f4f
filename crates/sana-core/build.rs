//! With the `cuda` feature: compile `kernels/*.cu` to PTX with nvcc, once per target architecture, into
//! OUT_DIR as `NAME_sm80.ptx` / `NAME_sm90.ptx` (`src/ops/cuda/NAME.rs` embeds them with `ptx_module!`).
//! Every `kernels/*.cu` is compiled: a new kernel is a `.cu` file plus its Rust file. Without the
//! feature: nothing.
//!
//! `SANA_PTXAS_VERBOSE=1`: also assemble each kernel for sm_90 with `-Xptxas -v` and print its register
//! and spill counts as cargo warnings (a check for register pressure without a GPU).
//!
//! nvcc: `$CUDA_ROOT/bin/nvcc` (or CUDA_PATH / CUDA_HOME), else `nvcc` on PATH — `scripts/setup-cuda.sh`
//! installs CUDA 13.0 into `.cuda/`. PTX, not SASS: the driver JIT-compiles it for the GPU it runs on,
//! which requires nvcc to be no newer than the driver (13.0 for driver 580).

use std::path::{Path, PathBuf};
use std::process::Command;

/// PTX targets: compute_80 (A100; also the fallback for any newer GPU) and compute_90 (H100/H200).
const ARCHS: [u32; 2] = [80, 90];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    for var in ["CUDA_ROOT", "CUDA_PATH", "CUDA_HOME", "NVCC", "SANA_PTXAS_VERBOSE"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let nvcc = find_nvcc();
    let verbose = std::env::var_os("SANA_PTXAS_VERBOSE").is_some_and(|v| v == "1");
    let mut kernels: Vec<PathBuf> = std::fs::read_dir("kernels")
        .expect("kernels/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    kernels.sort();
    for src in &kernels {
        let kernel = src.file_stem().and_then(|s| s.to_str()).expect("kernel file name");
        if verbose {
            report_registers(&nvcc, src, &out_dir);
        }
        for arch in ARCHS {
            let ptx = out_dir.join(format!("{kernel}_sm{arch}.ptx"));
            let output = Command::new(&nvcc)
                .args(["--ptx", "-O3", "-std=c++17", &format!("-arch=compute_{arch}"), "-o"])
                .arg(&ptx)
                .arg(src)
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

/// `-Xptxas -v` for sm_90: registers, stack and spills per kernel, as cargo warnings.
fn report_registers(nvcc: &Path, src: &Path, out_dir: &Path) {
    let cubin = out_dir.join("ptxas-report.cubin");
    let output = Command::new(nvcc)
        .args(["-cubin", "-O3", "-std=c++17", "-arch=sm_90", "-Xptxas", "-v", "-o"])
        .arg(&cubin)
        .arg(src)
        .output();
    if let Ok(output) = output {
        for line in String::from_utf8_lossy(&output.stderr).lines().filter(|l| l.contains("Compiling entry") || l.contains("registers") || l.contains("spill")) {
            println!("cargo:warning={}: {}", src.display(), line.trim());
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
