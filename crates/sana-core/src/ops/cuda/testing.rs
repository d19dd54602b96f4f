//! What the kernel tests share: the GPU (or a visible skip), inputs rounded to each storage dtype, and
//! the error measure and tolerances against the CPU twin.

use crate::Result;
use candle_core::{DType, Device, Tensor};
use std::io::Write;

pub(super) const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// CUDA device 0, or None after saying so on the terminal (libtest captures `println!`, not raw
/// stderr writes, so the skip stays visible in a normal `cargo test` run).
pub(super) fn gpu(test: &str) -> Option<Device> {
    match crate::device::resolve_device("cuda:0") {
        Ok(dev) => Some(dev),
        Err(e) => {
            let msg = format!("SKIPPED {test}: no usable CUDA device ({e})\n");
            let _ = std::io::stderr().write_all(msg.as_bytes());
            None
        }
    }
}

/// Random [dims] tensor rounded to `dtype`: (the CUDA input, the same values as a CPU f32 tensor).
pub(super) fn pair(dims: &[usize], dtype: DType, gpu: &Device) -> Result<(Tensor, Tensor)> {
    let cpu = Tensor::randn(0f32, 1.0, dims, &Device::Cpu)?.to_dtype(dtype)?.to_dtype(DType::F32)?;
    Ok((cpu.to_dtype(dtype)?.to_device(gpu)?, cpu))
}

/// max |got − want| / max(1, max |want|), with `got` read back as f32 on the CPU.
pub(super) fn rel_err(got: &Tensor, want: &Tensor) -> Result<f32> {
    assert_eq!(got.dims(), want.dims());
    let got = got.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    let want = want.to_dtype(DType::F32)?;
    let diff = (got - &want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    let scale = want.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    Ok(diff / scale.max(1.0))
}

/// Output rounding of each storage type (plus f32 accumulation-order noise).
pub(super) fn tol(dtype: DType) -> f32 {
    match dtype {
        DType::F32 => 1e-5,
        DType::F16 => 2e-3,
        _ => 1.6e-2,
    }
}
