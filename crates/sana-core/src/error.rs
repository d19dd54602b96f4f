//! One error type for the whole crate. Every variant has a stable code that the
//! Node binding turns into `err.code` (see `SanaError::code`).

use std::path::{Path, PathBuf};

pub type Result<T> = std::result::Result<T, SanaError>;

#[derive(Debug, thiserror::Error)]
pub enum SanaError {
    /// A folder, component or file that should exist does not.
    #[error("{what} not found: {}", path.display())]
    NotFound { what: String, path: PathBuf },

    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error("malformed JSON in {}: {msg}", path.display())]
    InvalidJson { path: PathBuf, msg: String },

    #[error("invalid config {}: {msg}", path.display())]
    InvalidConfig { path: PathBuf, msg: String },

    #[error("unknown _class_name \"{class}\" in {} (expected {expected})", path.display())]
    UnknownClass { path: PathBuf, class: String, expected: String },

    /// Truncated or corrupt safetensors header or data.
    #[error("corrupt safetensors file {}: {msg}", path.display())]
    CorruptWeights { path: PathBuf, msg: String },

    #[error("tensor \"{name}\" missing from {}", path.display())]
    WeightMissing { path: PathBuf, name: String },

    /// `hint` (empty, or starting with a space) says what may explain it, e.g. config keys that were defaulted.
    #[error("tensor \"{name}\" in {} has shape {got:?}, expected {expected:?}{hint}", path.display())]
    ShapeMismatch { path: PathBuf, name: String, expected: Vec<usize>, got: Vec<usize>, hint: String },

    #[error("tensor \"{name}\" in {} has unsupported dtype {dtype}", path.display())]
    UnsupportedDtype { path: PathBuf, name: String, dtype: String },

    /// An adapter (LoRA) file whose tensor `key` does not fit the model it is loaded into.
    #[error("adapter {} does not fit the model: tensor \"{key}\" {msg}", path.display())]
    AdapterMismatch { path: PathBuf, key: String, msg: String },

    #[error("device unavailable: {0}")]
    DeviceUnavailable(String),

    /// A caller-supplied argument is wrong; `name` is the argument's name.
    #[error("invalid argument {name}: {msg}")]
    InvalidArgument { name: String, msg: String },

    #[error("tokenizer error: {0}")]
    Tokenizer(String),

    #[error("compute error: {0}")]
    Compute(#[from] candle_core::Error),
}

impl SanaError {
    /// Stable machine-readable code, surfaced to JS as `err.code`.
    pub fn code(&self) -> &'static str {
        match self {
            SanaError::NotFound { .. } => "SANA_NOT_FOUND",
            SanaError::Io { .. } => "SANA_IO_ERROR",
            SanaError::InvalidJson { .. } => "SANA_INVALID_JSON",
            SanaError::InvalidConfig { .. } => "SANA_INVALID_CONFIG",
            SanaError::UnknownClass { .. } => "SANA_UNKNOWN_CLASS",
            SanaError::CorruptWeights { .. } => "SANA_CORRUPT_WEIGHTS",
            SanaError::WeightMissing { .. } => "SANA_WEIGHT_MISSING",
            SanaError::ShapeMismatch { .. } => "SANA_SHAPE_MISMATCH",
            SanaError::UnsupportedDtype { .. } => "SANA_UNSUPPORTED_DTYPE",
            SanaError::AdapterMismatch { .. } => "SANA_ADAPTER_MISMATCH",
            SanaError::DeviceUnavailable(_) => "SANA_DEVICE_UNAVAILABLE",
            SanaError::InvalidArgument { .. } => "SANA_INVALID_ARGUMENT",
            SanaError::Tokenizer(_) => "SANA_TOKENIZER_ERROR",
            SanaError::Compute(_) => "SANA_COMPUTE_ERROR",
        }
    }

    pub fn not_found(what: impl Into<String>, path: impl AsRef<Path>) -> Self {
        SanaError::NotFound { what: what.into(), path: path.as_ref().to_path_buf() }
    }

    pub fn invalid_arg(name: impl Into<String>, msg: impl Into<String>) -> Self {
        SanaError::InvalidArgument { name: name.into(), msg: msg.into() }
    }
}

/// Shorthand for argument checks in forward passes: `ensure_arg!(cond, "hiddenStates", "...")`.
#[macro_export]
macro_rules! ensure_arg {
    ($cond:expr, $name:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::SanaError::invalid_arg($name, format!($($fmt)+)));
        }
    };
}
