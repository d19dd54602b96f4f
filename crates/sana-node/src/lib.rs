//! napi-rs bindings for sana-core. Bindings only: option structs, async jobs, conversions and error
//! mapping. Tensor math lives in sana-core; orchestration (pipeline, schedulers, hub, CLI) in `src/*.ts`.

mod component;
mod job;
mod tensor;
mod text_encoder;
mod tokenizer;
mod transformer;
mod vae;

pub use component::*;
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

/// Whether this binary was compiled with CUDA support.
#[napi_derive::napi]
pub fn built_with_cuda() -> bool {
    cfg!(feature = "cuda")
}
