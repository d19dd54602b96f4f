//! The three checkpoint components as JS classes: `load(dir, opts)` plus introspection.
//! The model forward passes are added to these classes by the model modules.

use napi_derive::napi;
use sana_core::device::dtype_name;
pub(crate) use sana_core::models::component::{Component, ComponentKind, LoadOptions};

/// Options shared by every component's `load`.
#[napi(object)]
#[derive(Default)]
pub struct NativeLoadOptions {
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    pub device: Option<String>,
    /// `float32`, `bfloat16`, `float16` or `auto`.
    pub dtype: Option<String>,
    /// Preferred weights variant, e.g. `fp16`.
    pub variant: Option<String>,
}

pub(crate) fn load_options(o: Option<NativeLoadOptions>) -> LoadOptions {
    let o = o.unwrap_or_default();
    let d = LoadOptions::default();
    LoadOptions { device: o.device.unwrap_or(d.device), dtype: o.dtype.unwrap_or(d.dtype), variant: o.variant }
}

/// One checkpoint tensor as stored and as loaded.
#[napi(object)]
pub struct NativeTensorInfo {
    pub name: String,
    pub shape: Vec<u32>,
    /// Dtype in the safetensors file (`F32`, `BF16`, …).
    pub stored_dtype: String,
    /// Dtype after load-time conversion (`float32`, …).
    pub dtype: String,
    pub file: String,
}

pub(crate) fn tensor_infos<C>(c: &Component<C>) -> Vec<NativeTensorInfo> {
    c.store
        .infos()
        .into_iter()
        .map(|(name, shape, dtype)| {
            let (file, stored) = &c.store.sources[&name];
            NativeTensorInfo {
                shape: shape.iter().map(|&d| d as u32).collect(),
                stored_dtype: format!("{stored:?}"),
                dtype: dtype_name(dtype).into(),
                file: file.display().to_string(),
                name,
            }
        })
        .collect()
}

/// Declares a JS class around `Component<Config>` with `load`, `configJson`, `device`, `dtype`,
/// `tensorInfo()` and `getWeight(name)`.
/// `$model` is the sana-core model built from the loaded component (`BuildModel`), so config/weight
/// mismatches (missing tensor, wrong shape) reject the `load` promise.
#[macro_export]
macro_rules! component_class {
    ($rust:ident, $js:literal, $cfg:ty, $kind:expr, $model:ty) => {
        #[::napi_derive::napi(js_name = $js)]
        pub struct $rust {
            /// `None` after `dispose()`: the weights are freed once running jobs finish.
            state: ::std::sync::RwLock<Option<(
                ::std::sync::Arc<sana_core::models::component::Component<$cfg>>,
                ::std::sync::Arc<$model>,
            )>>,
        }

        #[allow(dead_code)]
        impl $rust {
            /// The loaded component and model, or a SANA_DISPOSED error.
            pub(crate) fn loaded(&self) -> ::napi::Result<(
                ::std::sync::Arc<sana_core::models::component::Component<$cfg>>,
                ::std::sync::Arc<$model>,
            )> {
                self.state.read().expect("poisoned").clone().ok_or_else(|| {
                    ::napi::Error::from_reason(format!("[SANA_DISPOSED] {} was disposed; load it again", $js))
                })
            }
        }

        #[::napi_derive::napi]
        impl $rust {
            /// Load the component folder `dir` (config.json + weights).
            #[::napi_derive::napi]
            pub fn load(dir: String, options: Option<$crate::component::NativeLoadOptions>) -> ::napi::bindgen_prelude::AsyncTask<$crate::job::Job<(sana_core::models::component::Component<$cfg>, $model), $rust>> {
                let opts = $crate::component::load_options(options);
                ::napi::bindgen_prelude::AsyncTask::new($crate::job::Job::new(
                    move || {
                        let mut c = sana_core::models::component::Component::<$cfg>::load($kind, &::std::path::PathBuf::from(dir), &opts)?;
                        let m = c.build::<$model>()?;
                        Ok((c, m))
                    },
                    |(c, m)| Ok($rust { state: ::std::sync::RwLock::new(Some((::std::sync::Arc::new(c), ::std::sync::Arc::new(m)))) }),
                ))
            }

            /// config.json as written, serialized (non-finite numbers as null).
            #[::napi_derive::napi(getter)]
            pub fn config_json(&self) -> ::napi::Result<String> {
                Ok(self.loaded()?.0.config_json.to_string())
            }

            #[::napi_derive::napi(getter)]
            pub fn device(&self) -> ::napi::Result<String> {
                Ok(sana_core::device::device_name(&self.loaded()?.0.device))
            }

            #[::napi_derive::napi(getter)]
            pub fn dtype(&self) -> ::napi::Result<String> {
                Ok(sana_core::device::dtype_name(self.loaded()?.0.dtype).into())
            }

            #[::napi_derive::napi(getter)]
            pub fn dir(&self) -> ::napi::Result<String> {
                Ok(self.loaded()?.0.dir.display().to_string())
            }

            /// Free the weights (running jobs keep theirs until they finish). Idempotent.
            #[::napi_derive::napi]
            pub fn dispose(&self) {
                self.state.write().expect("poisoned").take();
            }

            #[::napi_derive::napi(getter)]
            pub fn disposed(&self) -> bool {
                self.state.read().expect("poisoned").is_none()
            }

            /// Every loaded tensor: checkpoint name, shape, stored and loaded dtype.
            #[::napi_derive::napi]
            pub fn tensor_info(&self) -> ::napi::Result<Vec<$crate::component::NativeTensorInfo>> {
                Ok($crate::component::tensor_infos(&self.loaded()?.0))
            }

            /// One loaded tensor by checkpoint name (shares memory with the model).
            #[::napi_derive::napi]
            pub fn get_weight(&self, name: String) -> ::napi::Result<$crate::tensor::JsTensor> {
                let (c, _) = self.loaded()?;
                match c.store.tensor(&name).map_err($crate::js_err)? {
                    Some(t) => Ok($crate::tensor::JsTensor::new(t)),
                    None => Err($crate::js_err(sana_core::SanaError::WeightMissing { path: c.dir.clone(), name })),
                }
            }
        }
    };
}

