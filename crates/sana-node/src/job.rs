//! One generic libuv job: run a closure off the JS thread, then convert its result on it.

use napi::bindgen_prelude::{ToNapiValue, TypeName};
use napi::{Env, Task};

pub struct Job<T: Send + 'static, J> {
    work: Option<Box<dyn FnOnce() -> sana_core::Result<T> + Send>>,
    finish: fn(T) -> napi::Result<J>,
}

impl<T: Send + 'static, J> Job<T, J> {
    pub fn new(work: impl FnOnce() -> sana_core::Result<T> + Send + 'static, finish: fn(T) -> napi::Result<J>) -> Self {
        Job { work: Some(Box::new(work)), finish }
    }
}

impl<T: Send + 'static, J: ToNapiValue + TypeName> Task for Job<T, J> {
    type Output = T;
    type JsValue = J;

    fn compute(&mut self) -> napi::Result<T> {
        let work = self.work.take().ok_or_else(|| napi::Error::from_reason("job already ran"))?;
        // A panic in native code must not take the Node process down with it.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
            Ok(r) => r.map_err(crate::js_err),
            Err(p) => {
                let msg = p.downcast_ref::<&str>().map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(napi::Error::from_reason(format!("[SANA_INTERNAL_ERROR] native panic: {msg}")))
            }
        }
    }

    fn resolve(&mut self, _env: Env, output: T) -> napi::Result<J> {
        (self.finish)(output)
    }
}
