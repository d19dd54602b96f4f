//! `NativeCaptionCache`: one generation's caption cache (sana-core `CaptionCache`), passed to every
//! `NativeTransformer.forward` / `NativeControlNet.forward` of that generation.

use napi_derive::napi;
use sana_core::models::sana_transformer::CaptionCache;
use std::sync::Arc;

#[napi(js_name = "NativeCaptionCache")]
pub struct JsCaptionCache {
    pub(crate) inner: Arc<CaptionCache>,
}

#[napi]
impl JsCaptionCache {
    /// An empty cache: the first forward that gets it fills its model's entry.
    #[napi(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        JsCaptionCache { inner: Arc::new(CaptionCache::new()) }
    }

    /// Drop every entry (a running forward keeps the one it uses until it finishes). Idempotent.
    #[napi]
    pub fn clear(&self) {
        self.inner.clear();
    }

    /// Device bytes the entries hold.
    #[napi(getter)]
    pub fn bytes(&self) -> f64 {
        self.inner.bytes() as f64
    }

    /// Number of models with an entry (the transformer, its ControlNet).
    #[napi(getter)]
    pub fn entries(&self) -> u32 {
        self.inner.len() as u32
    }
}
