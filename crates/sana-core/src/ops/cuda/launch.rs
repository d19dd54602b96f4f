//! The launch frame every kernel shares, written once: load the PTX function for the storage dtype,
//! check that each tensor argument is on this CUDA device with the expected dtype and layout, allocate
//! the output, push the arguments in the kernel's order (tensor inputs, output, scalars), launch.
//!
//! A kernel file then only states its PTX module, checks its shapes and picks a grid:
//! ```ignore
//! launch(&Launch {
//!     module: &MODULE, func: "my_kernel", dtype: x.dtype(),
//!     inputs: &[In::T(&x), In::F32(&w)], out: Out::T(x.shape().clone()),
//!     scalars: &[Scalar::I32(n as i32)], cfg: blocks_1d(n, 256),
//! })
//! ```

use crate::Result;
use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::op::BackpropOp;
use candle_core::{bail, CudaDevice, CudaStorage, DType, Layout, Shape, Storage, Tensor};

/// One `kernels/NAME.cu`, compiled by build.rs to PTX for compute_80 and compute_90.
pub(super) struct Module {
    pub name: &'static str,
    pub sm80: &'static str,
    pub sm90: &'static str,
}

/// `ptx_module!("softmax")`: the two PTX texts build.rs wrote for kernels/softmax.cu.
macro_rules! ptx_module {
    ($name:literal) => {
        $crate::ops::cuda::launch::Module {
            name: $name,
            sm80: include_str!(concat!(env!("OUT_DIR"), "/", $name, "_sm80.ptx")),
            sm90: include_str!(concat!(env!("OUT_DIR"), "/", $name, "_sm90.ptx")),
        }
    };
}
pub(super) use ptx_module;

/// A tensor argument, in the kernel's parameter order.
pub(super) enum In<'a> {
    /// Contiguous, in the launch's storage dtype (the kernel's `T*`).
    T(&'a Tensor),
    /// Contiguous f32 (a kernel's `float*`: per-channel weights, workspaces).
    F32(&'a Tensor),
    /// Storage dtype, any strides: the pointer is the view's first element, and the kernel indexes it
    /// with strides the caller passes as scalars (e.g. a `[B, 1, D]` chunk of the `[B, 6, D]` AdaLN
    /// modulation, read in place).
    Strided(&'a Tensor),
    /// A null pointer: an optional input left out (the kernel checks for it).
    Null,
}

/// A scalar argument, pushed after the output.
pub(super) enum Scalar {
    I32(i32),
    F32(f32),
}

/// The output: shape and whether it is in the storage dtype or f32.
pub(super) enum Out {
    T(Shape),
    F32(Shape),
}

/// One kernel launch.
pub(super) struct Launch<'a> {
    pub module: &'static Module,
    /// Kernel name without the dtype suffix (`softmax_rows` → `softmax_rows_bf16`).
    pub func: &'static str,
    /// Storage dtype: f32, f16 or bf16.
    pub dtype: DType,
    pub inputs: &'a [In<'a>],
    pub out: Out,
    pub scalars: &'a [Scalar],
    pub cfg: LaunchConfig,
}

/// Grid-stride launch over `n` items in blocks of `threads`.
pub(super) fn blocks_1d(n: usize, threads: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (n.div_ceil(threads as usize).clamp(1, 1 << 20) as u32, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

/// Run `l`; returns the new output tensor (contiguous).
pub(super) fn launch(l: &Launch) -> Result<Tensor> {
    let out = match (l.dtype, &l.out) {
        (DType::F32, Out::T(_) | Out::F32(_)) => run::<f32, f32>(l),
        (DType::F16, Out::T(_)) => run::<half::f16, half::f16>(l),
        (DType::F16, Out::F32(_)) => run::<half::f16, f32>(l),
        (DType::BF16, Out::T(_)) => run::<half::bf16, half::bf16>(l),
        (DType::BF16, Out::F32(_)) => run::<half::bf16, f32>(l),
        (other, _) => Err(candle_core::Error::Msg(format!("{}: unsupported dtype {other:?} (expected f32, f16 or bf16)", l.func))),
    };
    Ok(out?)
}

/// A locked input's device view, or a null pointer.
enum View<'g, T> {
    T(CudaView<'g, T>),
    F32(CudaView<'g, f32>),
    Null,
}

static NULL_PTR: u64 = 0;

fn run<T: CudaDType + DeviceRepr, O: CudaDType + DeviceRepr>(l: &Launch) -> candle_core::Result<Tensor> {
    let Some(first) = l.inputs.iter().find_map(|i| i.tensor()) else { bail!("{}: no tensor input", l.func) };
    let device = first.device().clone();
    let dev = device.as_cuda_device()?;
    let func = load(dev, l.module, l.func, l.dtype)?;
    // 1. Read-lock every input's storage (candle's own binary ops do the same, also for `a + a`).
    let guards: Vec<_> = l.inputs.iter().map(|i| i.tensor().map(|t| t.storage_and_layout())).collect();
    // 2. Check each one and take its view.
    let mut views: Vec<View<T>> = Vec::with_capacity(guards.len());
    for (k, (input, guard)) in l.inputs.iter().zip(&guards).enumerate() {
        let Some((storage, layout)) = guard else {
            views.push(View::Null);
            continue;
        };
        let Storage::Cuda(cs) = &**storage else { bail!("{}: input {k} is not on a CUDA device", l.func) };
        if !input.tensor().is_some_and(|t| t.device().same_device(&device)) {
            bail!("{}: input {k} is on another CUDA device", l.func)
        }
        views.push(match input {
            In::T(_) => View::T(contiguous(cs.as_cuda_slice::<T>()?, layout, l.func, k)?),
            In::F32(_) => View::F32(contiguous(cs.as_cuda_slice::<f32>()?, layout, l.func, k)?),
            In::Strided(_) => View::T(cs.as_cuda_slice::<T>()?.slice(layout.start_offset()..)),
            In::Null => View::Null,
        });
    }
    // 3. Output, then the arguments in order: inputs, output, scalars.
    let shape = match &l.out {
        Out::T(s) | Out::F32(s) => s.clone(),
    };
    // SAFETY: every kernel launched through here writes each element of its output.
    let mut out: CudaSlice<O> = unsafe { dev.alloc::<O>(shape.elem_count())? };
    let stream = dev.cuda_stream();
    let mut builder = stream.launch_builder(&func);
    for v in &views {
        match v {
            View::T(v) => builder.arg(v),
            View::F32(v) => builder.arg(v),
            View::Null => builder.arg(&NULL_PTR),
        };
    }
    builder.arg(&mut out);
    for s in l.scalars {
        match s {
            Scalar::I32(v) => builder.arg(v),
            Scalar::F32(v) => builder.arg(v),
        };
    }
    // SAFETY: each kernel file passes the parameter list its `.cu` declares (pointers, then scalars).
    unsafe { builder.launch(l.cfg) }.w()?;
    drop(builder);
    let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(out, dev.clone()));
    Ok(Tensor::from_storage(storage, shape, BackpropOp::none(), false))
}

impl In<'_> {
    fn tensor(&self) -> Option<&Tensor> {
        match self {
            In::T(t) | In::F32(t) | In::Strided(t) => Some(t),
            In::Null => None,
        }
    }
}

/// `func` for `dtype` (`softmax_rows` → `softmax_rows_bf16`), from the PTX for this GPU's architecture:
/// compute_90 on Hopper and newer, compute_80 on Ampere (the driver JIT-compiles it).
fn load(dev: &CudaDevice, module: &Module, func: &str, dtype: DType) -> candle_core::Result<CudaFunction> {
    let (major, minor) = dev.cuda_stream().context().compute_capability().w()?;
    if major < 8 {
        bail!("sana-node's CUDA kernels need compute capability 8.0 or newer (Ampere); this GPU is {major}.{minor}");
    }
    let (arch, ptx) = if major >= 9 { ("sm90", module.sm90) } else { ("sm80", module.sm80) };
    let suffix = match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        other => bail!("{func}: unsupported dtype {other:?} (expected f32, f16 or bf16)"),
    };
    let f = dev.get_or_load_custom_func(&format!("{func}_{suffix}"), &format!("sana_{}_{arch}", module.name), ptx)?;
    Ok(f.into_cuda_function())
}

/// The contiguous part of `slice` that `layout` describes.
fn contiguous<'a, T>(slice: &'a CudaSlice<T>, layout: &Layout, func: &str, k: usize) -> candle_core::Result<CudaView<'a, T>> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(slice.slice(start..end)),
        None => bail!("{func}: input {k} must be contiguous"),
    }
}
