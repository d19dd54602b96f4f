//! Ops that candle lacks or does slowly. Each op has a CPU implementation over contiguous f32 slices
//! (checked against a naive reference in its tests), a CUDA kernel (`cuda/`, with the `cuda` feature)
//! and a candle-op fallback for anything else.

pub mod activation;
pub mod attention;
pub mod blend;
pub mod channel_ops;
pub mod conv2d;
pub mod cross_attention;
#[cfg(feature = "cuda")]
mod cuda;
pub mod depthwise_conv;
pub mod embeddings;
pub mod fastmath;
mod gemm;
pub mod sgemm;
pub(crate) use gemm::Strided;
pub mod grouped_conv;
pub mod linear_attention;
pub mod modulation;
pub mod norm;
pub mod rope;
pub mod softmax;
mod winograd;

pub use depthwise_conv::{depthwise_conv2d, depthwise_conv2d_glu, silu_depthwise_conv2d_glu, silu_depthwise_conv2d_glu_nhwc, silu_depthwise_conv2d_glu_with_input_bias};
pub use modulation::{gated_residual, gated_residual_with_bias, modulated_layer_norm};
pub use linear_attention::relu_linear_attention;
pub use norm::rms_norm;
pub use attention::{causal_attention, CausalAttention};
pub use rope::{apply_rope, rope_cos_sin};

use crate::Result;
use candle_core::{Storage, Tensor};
use rayon::prelude::*;

/// Run `f` over the contiguous f32 data of a CPU tensor (copying only if it is not contiguous).
pub(crate) fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => {
            let data = cpu.as_slice::<f32>()?;
            let start = layout.start_offset();
            Ok(f(&data[start..start + layout.shape().elem_count()]))
        }
        _ => Err(candle_core::Error::Msg("with_cpu_f32 called on a non-CPU tensor".into()).into()),
    }
}

/// A weight as the f32 CPU kernels read it: a half-precision weight on the CPU (kept bf16/f16 in memory, half
/// the RSS) widened into a transient f32 copy, any other tensor as is. Widening is a shift (bf16) or F16C
/// (f16) per element, split over rayon's threads: about 1 % of the GEMM the weight then feeds.
pub(crate) fn cpu_weight(w: &Tensor) -> Result<Tensor> {
    use candle_core::DType;
    if !w.device().is_cpu() || !matches!(w.dtype(), DType::BF16 | DType::F16) {
        return Ok(w.clone());
    }
    let w = w.contiguous()?;
    let (storage, layout) = w.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else { unreachable!("checked: CPU tensor") };
    let (start, n) = (layout.start_offset(), layout.shape().elem_count());
    let mut out = vec![0f32; n];
    const CHUNK: usize = 1 << 16;
    match w.dtype() {
        DType::BF16 => {
            let src = &cpu.as_slice::<half::bf16>()?[start..start + n];
            out.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(d, s)| {
                // bf16 is the top half of an f32: exact, and a plain loop the compiler vectorises.
                d.iter_mut().zip(s).for_each(|(d, s)| *d = f32::from_bits((s.to_bits() as u32) << 16));
            });
        }
        _ => {
            use half::slice::HalfFloatSliceExt;
            let src = &cpu.as_slice::<half::f16>()?[start..start + n];
            out.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(d, s)| s.convert_to_f32_slice(d));
        }
    }
    drop(storage);
    Ok(Tensor::from_vec(out, w.shape(), &candle_core::Device::Cpu)?)
}

/// A per-channel bias as f32 values, or `n` zeros without one (the CPU conv paths add it to every pixel).
pub(crate) fn bias_or_zeros(bias: Option<&Tensor>, n: usize) -> Result<Vec<f32>> {
    Ok(match bias {
        Some(t) => t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?,
        None => vec![0.0; n],
    })
}

/// An output buffer shared by parallel tasks that each write their own disjoint elements (GEMM tiles, a
/// conv's channel blocks); whoever writes through it states which part is theirs.
#[derive(Clone, Copy)]
pub(crate) struct DstPtr(pub *mut f32);
// SAFETY: only a pointer; every write through it is to elements no other task touches meanwhile.
unsafe impl Send for DstPtr {}
unsafe impl Sync for DstPtr {}
impl DstPtr {
    /// The pointer (a method, so that closures capture the Sync wrapper, not the raw field).
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

/// `len` f32 values written by `fill(part index, part)` on rayon's threads, `chunk` values per part (the
/// last part may be shorter), without zeroing them first (a memset of the whole output on one thread).
/// Safety: `fill` writes every value of every part it is given.
pub(crate) unsafe fn par_filled(len: usize, chunk: usize, fill: impl Fn(usize, &mut [std::mem::MaybeUninit<f32>]) + Sync) -> Vec<f32> {
    use rayon::prelude::*;
    let mut v: Vec<f32> = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len].par_chunks_mut(chunk.max(1)).enumerate().for_each(|(i, part)| fill(i, part));
    // SAFETY: the parts cover all len values and the caller's `fill` wrote each one.
    unsafe { v.set_len(len) };
    v
}

/// True when the fast CPU path applies (CPU device, f32).
/// `f` on a CPU tensor's values (contiguous: copied if not) as a GEMM rhs: f32, or bf16 as stored.
pub(crate) fn with_cpu_rhs<R>(t: &Tensor, f: impl FnOnce(sgemm::Rhs<'_>) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Err(candle_core::Error::Msg("with_cpu_rhs called on a non-CPU tensor".into()).into());
    };
    let range = layout.start_offset()..layout.start_offset() + layout.shape().elem_count();
    Ok(match t.dtype() {
        candle_core::DType::BF16 => f(sgemm::Rhs::Bf16(&cpu.as_slice::<half::bf16>()?[range])),
        _ => f(sgemm::Rhs::F32(&cpu.as_slice::<f32>()?[range])),
    })
}

pub(crate) fn is_cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == candle_core::DType::F32
}

/// True when our CUDA kernels apply: every tensor on a CUDA device, all of one dtype among f32, f16, bf16.
#[cfg(feature = "cuda")]
pub(crate) fn is_cuda_kernel_dtype(ts: &[&Tensor]) -> bool {
    use candle_core::DType;
    let dtype = ts[0].dtype();
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16) && ts.iter().all(|t| t.device().is_cuda() && t.dtype() == dtype)
}

/// Where an op over tensors from different places runs: the first accelerator among them, else the CPU.
/// (JS builds latents and noise on the CPU; the models return tensors on their device.)
pub fn common_device(tensors: &[&Tensor]) -> candle_core::Device {
    tensors.iter().map(|t| t.device()).find(|d| !d.is_cpu()).unwrap_or(&candle_core::Device::Cpu).clone()
}

/// Σᵢ cᵢ·tᵢ in f32 (schedulers' update rules), on [`common_device`]. All tensors must share a shape.
pub fn linear_combination(tensors: &[&Tensor], coeffs: &[f64]) -> Result<Tensor> {
    crate::ensure_arg!(!tensors.is_empty() && tensors.len() == coeffs.len(), "coeffs",
        "expected one coefficient per tensor ({} tensors, {} coefficients)", tensors.len(), coeffs.len());
    let shape = tensors[0].dims();
    for (i, t) in tensors.iter().enumerate() {
        crate::ensure_arg!(t.dims() == shape, "tensors",
            "tensor {i} has shape {:?}, expected {:?}", t.dims(), shape);
    }
    let dev = common_device(tensors);
    let mut acc = tensors[0].to_device(&dev)?.to_dtype(candle_core::DType::F32)?.affine(coeffs[0], 0.0)?;
    for (t, &c) in tensors.iter().zip(coeffs).skip(1) {
        if c != 0.0 {
            acc = (acc + t.to_device(&dev)?.to_dtype(candle_core::DType::F32)?.affine(c, 0.0)?)?;
        }
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// Widening is exact for both half formats, for any layout, and leaves other tensors alone.
    #[test]
    fn cpu_weight_widens_half_tensors_exactly() -> Result<()> {
        let w = (Tensor::randn(0f32, 1.0, (70_001, 3), &Device::Cpu)? * 3.0)?; // several rayon chunks, odd length
        for dtype in [DType::BF16, DType::F16] {
            let half = w.to_dtype(dtype)?;
            let want = half.to_dtype(DType::F32)?;
            for t in [half.clone(), half.t()?] {
                let got = cpu_weight(&t)?;
                assert_eq!(got.dtype(), DType::F32);
                assert_eq!(got.dims(), t.dims());
                let want = if t.is_contiguous() { want.clone() } else { want.t()? };
                assert_eq!(got.flatten_all()?.to_vec1::<f32>()?, want.contiguous()?.flatten_all()?.to_vec1::<f32>()?, "{dtype:?}");
            }
        }
        assert_eq!(cpu_weight(&w)?.id(), w.id(), "an f32 tensor is passed through, not copied");
        Ok(())
    }
}
