//! sana-core: the Sana text-to-image models (NVlabs, arXiv 2410.10629) on candle.
//!
//! - [`weights`]: diffusers/transformers checkpoint loading (safetensors, sharded, variants).
//! - [`config`]: typed configs mirroring each component's `config.json`.
//! - [`ops`]: our own ops (depthwise conv, ReLU linear attention, …), each tested against a reference.
//! - [`models`]: one file per checkpoint component.
//! - [`tokenizer`]: the Gemma tokenizer (tokenizer.json + tokenizer_config.json) as the pipeline calls it.

pub mod alloc;
pub mod alloc_cache;
pub mod config;
pub mod device;
pub mod error;
pub mod models;
pub mod ops;
pub mod tokenizer;
pub mod weights;

pub use candle_core;
pub use candle_core::{DType, Device, Tensor};
pub use error::{Result, SanaError};
