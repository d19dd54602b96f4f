//! `Tensor`: a native tensor handle. Data stays on its device; JS sees shape, dtype and device, and
//! copies values out only when asked (`toFloat32Array`).

use crate::job::Job;
use crate::{candle_err, js_err};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use sana_core::device::{device_name, dtype_name, resolve_device};
use sana_core::{DType, SanaError, Tensor};

#[napi(js_name = "NativeTensor")]
pub struct JsTensor {
    pub(crate) inner: Tensor,
}

impl JsTensor {
    pub fn new(inner: Tensor) -> Self {
        JsTensor { inner }
    }
}

/// JS dimensions as usize. They arrive as i64 (not u32, which napi would wrap modulo 2³²: [2³² + 2, 2]
/// would become [2, 2]); each must fit, and so must their product, which must equal the data's length.
fn check_shape(len: usize, shape: &[i64]) -> Result<Vec<usize>> {
    let dims = shape.iter().map(|&d| usize::try_from(d).ok().filter(|&d| d <= u32::MAX as usize)).collect::<Option<Vec<_>>>();
    let Some(dims) = dims else {
        return Err(js_err(SanaError::invalid_arg("shape", format!("expected dimensions from 0 to 2³² − 1, got {shape:?}"))));
    };
    let numel = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if numel != Some(len) {
        let holds = numel.map_or("more elements than can be addressed".to_string(), |n| format!("{n} elements"));
        return Err(js_err(SanaError::invalid_arg("shape", format!("shape {dims:?} holds {holds} but the data has {len}"))));
    }
    Ok(dims)
}

#[napi]
impl JsTensor {
    /// A float32 tensor from JS data (copied once, then moved to `device`).
    #[napi(factory)]
    pub fn from_float32_array(data: &[f32], shape: Vec<i64>, device: Option<String>) -> Result<Self> {
        let dims = check_shape(data.len(), &shape)?;
        let dev = resolve_device(device.as_deref().unwrap_or("cpu")).map_err(js_err)?;
        let t = Tensor::from_slice(data, dims, &dev).map_err(candle_err)?;
        Ok(JsTensor::new(t))
    }

    /// An int64 tensor (token ids, masks) from int32 JS data.
    #[napi(factory)]
    pub fn from_int32_array(data: &[i32], shape: Vec<i64>, device: Option<String>) -> Result<Self> {
        let dims = check_shape(data.len(), &shape)?;
        let dev = resolve_device(device.as_deref().unwrap_or("cpu")).map_err(js_err)?;
        let v: Vec<i64> = data.iter().map(|&x| x as i64).collect();
        let t = Tensor::from_vec(v, dims, &dev).map_err(candle_err)?;
        Ok(JsTensor::new(t))
    }

    /// Σᵢ coeffs[i]·tensors[i], computed in f32 on the tensors' common device (the scheduler's update step).
    #[napi(factory)]
    pub fn linear_combination(tensors: Vec<&JsTensor>, coeffs: Vec<f64>) -> Result<Self> {
        // sana-core checks counts, shapes and devices.
        let out = sana_core::ops::linear_combination(
            &tensors.iter().map(|t| &t.inner).collect::<Vec<_>>(),
            &coeffs,
        )
        .map_err(js_err)?;
        Ok(JsTensor::new(out))
    }

    /// `(1 − mask)·keep + mask·repaint` in f32, mask [1|B, 1, H, W] broadcast (the inpainting blend).
    #[napi(factory)]
    pub fn masked_blend(keep: &JsTensor, repaint: &JsTensor, mask: &JsTensor) -> Result<Self> {
        let out = sana_core::ops::blend::masked_blend(&keep.inner, &repaint.inner, &mask.inner).map_err(js_err)?;
        Ok(JsTensor::new(out))
    }

    /// Concatenate along `dim` (e.g. the CFG batch: negative first, then positive), on the tensors'
    /// common device (the first accelerator among them, else the CPU).
    #[napi(factory)]
    pub fn cat(tensors: Vec<&JsTensor>, dim: u32) -> Result<Self> {
        if tensors.is_empty() {
            return Err(js_err(SanaError::invalid_arg("tensors", "expected at least one tensor")));
        }
        let ts: Vec<&Tensor> = tensors.iter().map(|t| &t.inner).collect();
        let dev = sana_core::ops::common_device(&ts);
        let ts = ts.iter().map(|t| t.to_device(&dev)).collect::<sana_core::candle_core::Result<Vec<_>>>().map_err(candle_err)?;
        Ok(JsTensor::new(Tensor::cat(&ts, dim as usize).map_err(candle_err)?))
    }

    /// Gather `indices` along `dim` (diffusers' `x[:, select_index]`, `repeat_interleave`, …).
    #[napi]
    pub fn index_select(&self, indices: Vec<u32>, dim: u32) -> Result<JsTensor> {
        let d = dim as usize;
        let rank = self.inner.rank();
        if d >= rank {
            return Err(js_err(SanaError::invalid_arg("dim", format!("dim {d} out of range for a rank-{rank} tensor"))));
        }
        let size = self.inner.dim(d).map_err(candle_err)?;
        if let Some(bad) = indices.iter().find(|&&i| i as usize >= size) {
            return Err(js_err(SanaError::invalid_arg("indices", format!("index {bad} out of range for size {size}"))));
        }
        let idx = Tensor::from_vec(indices.clone(), indices.len(), self.inner.device()).map_err(candle_err)?;
        Ok(JsTensor::new(self.inner.index_select(&idx, d).map_err(candle_err)?))
    }

    #[napi(getter)]
    pub fn shape(&self) -> Vec<u32> {
        self.inner.dims().iter().map(|&d| d as u32).collect()
    }

    #[napi(getter)]
    pub fn dtype(&self) -> String {
        dtype_name(self.inner.dtype()).to_string()
    }

    #[napi(getter)]
    pub fn device(&self) -> String {
        device_name(self.inner.device())
    }

    /// Copy the values to JS as float32 (ids/masks included), off the JS thread.
    #[napi]
    pub fn to_float32_array(&self) -> AsyncTask<Job<Vec<f32>, Float32Array>> {
        let t = self.inner.clone();
        AsyncTask::new(Job::new(
            move || Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
            |v| Ok(Float32Array::new(v)),
        ))
    }

    /// Resolves once every operation queued on this tensor's device has finished (CUDA kernels run
    /// asynchronously; without this, step timings measure only how long the launches took).
    #[napi]
    pub fn synchronize(&self) -> AsyncTask<Job<(), ()>> {
        let dev = self.inner.device().clone();
        AsyncTask::new(Job::new(move || Ok(dev.synchronize()?), |_| Ok(())))
    }

    /// Synchronous copy; for small tensors in tests and schedulers.
    #[napi]
    pub fn to_float32_array_sync(&self) -> Result<Float32Array> {
        let v = self.inner.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>());
        Ok(Float32Array::new(v.map_err(candle_err)?))
    }
}
