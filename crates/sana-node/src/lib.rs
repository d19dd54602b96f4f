//! napi-rs bindings for sana-core. Bindings only: option structs, async jobs, conversions and error
//! mapping. Tensor math lives in sana-core; orchestration (pipeline, schedulers, hub, CLI) in `src/*.ts`.

mod caption_cache;
mod component;
mod controlnet;
mod job;
mod tensor;
mod text_encoder;
mod tokenizer;
mod transformer;
mod vae;

/// Freed large blocks (activations) are kept for the next request of the same size instead of being
/// unmapped and page-faulted in again (sana_core::alloc_cache; `SANA_ALLOC_CACHE_MB=0` turns it off).
#[global_allocator]
static ALLOC: sana_core::alloc_cache::LargeBlockCache = sana_core::alloc_cache::LargeBlockCache::new();

pub use caption_cache::*;
pub use component::*;
pub use controlnet::*;
pub use text_encoder::*;
pub use tokenizer::*;
pub use transformer::*;
pub use vae::*;
pub use tensor::JsTensor;

/// Errors cross into JS as `[SANA_CODE] message`; the TypeScript facade turns the prefix into
/// `SanaError.code` (the prefix survives every napi error path, sync and async alike).
pub(crate) fn js_err(e: sana_core::SanaError) -> napi::Error {
    napi::Error::new(napi::Status::GenericFailure, format!("[{}] {e}", e.code()))
}

pub(crate) fn candle_err(e: sana_core::candle_core::Error) -> napi::Error {
    js_err(sana_core::SanaError::from(e))
}

/// Number of usable CUDA GPUs; rejects with SANA_DEVICE_UNAVAILABLE saying why there is none (the JS
/// loader uses it to decide between the CUDA and the CPU binary).
#[napi_derive::napi]
pub fn cuda_device_count() -> napi::Result<u32> {
    sana_core::device::cuda_device_count().map(|n| n as u32).map_err(js_err)
}

/// Whether this binary was compiled with CUDA support.
#[napi_derive::napi]
pub fn built_with_cuda() -> bool {
    cfg!(feature = "cuda")
}

/// The CPU GEMM microkernel this process uses, picked once from the CPU's features and the
/// `SANA_CPU_GEMM` / `SANA_CPU_BF16_DOT` variables: "amx-bf16", "avx512bf16", "avx512f", "avx2-fma" or
/// "scalar" (the first two multiply bfloat16 weights in bf16; f32 weights take the best f32 kernel).
#[napi_derive::napi]
pub fn cpu_gemm_kernel() -> String {
    sana_core::ops::sgemm::cpu_gemm_kernel().to_string()
}
