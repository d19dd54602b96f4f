//! Device and dtype choice, resolved once at load time.

use crate::{Result, SanaError};
use candle_core::{DType, Device};

/// What the caller asked for: `cpu`, `cuda` (optionally `cuda:N`) or `auto`.
pub fn resolve_device(request: &str) -> Result<Device> {
    let req = request.trim().to_ascii_lowercase();
    match req.as_str() {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(cuda_device(0).unwrap_or(Device::Cpu)),
        _ if req == "cuda" || req.starts_with("cuda:") => {
            let ordinal = match req.strip_prefix("cuda:") {
                Some(n) => n.parse::<usize>().map_err(|_| {
                    SanaError::invalid_arg("device", format!("expected cuda:N, received \"{request}\""))
                })?,
                None => 0,
            };
            cuda_device(ordinal)
        }
        _ => Err(SanaError::invalid_arg(
            "device",
            format!("expected 'cpu', 'cuda', 'cuda:N' or 'auto', received \"{request}\""),
        )),
    }
}

/// One `Device` per GPU for the whole process, on one explicit CUDA stream.
///
/// Why: candle's `Device::new_cuda` makes a new device (a new id) on CUDA's *per-thread* default stream.
/// Our work runs on libuv's worker threads, a different one per call, and JS finalizers free tensors on
/// the main thread: on per-thread streams those launches, copies and frees are not ordered with each
/// other, so a step could read a buffer before the previous step had written it, or after it was freed
/// and reused (seen on an H200 as run-to-run differences and NaN in bf16 generations). One shared
/// stream orders everything in submission order; one device also keeps tensors from separate calls
/// on the "same device" for candle, instead of copying between two handles through the CPU.
#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize) -> Result<Device> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static DEVICES: OnceLock<Mutex<HashMap<usize, Device>>> = OnceLock::new();
    let mut devices = DEVICES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dev) = devices.get(&ordinal) {
        return Ok(dev.clone());
    }
    let dev = Device::new_cuda_with_stream(ordinal)
        .map_err(|e| SanaError::DeviceUnavailable(format!("CUDA device {ordinal}: {e}")))?;
    tune_cuda_device(&dev).map_err(|e| SanaError::DeviceUnavailable(format!("CUDA device {ordinal}: {e}")))?;
    devices.insert(ordinal, dev.clone());
    Ok(dev)
}

/// Opt-in driver settings for the one-stream device, each behind an environment variable because no GPU
/// has measured them yet (the next GPU session times them with scripts/device-check.sh and flips the
/// defaults if they hold):
///
/// - `SANA_CUDA_EVENT_TRACKING=0`: no cudarc event tracking. `new_cuda_with_stream` creates a second
///   stream, which puts cudarc in multi-stream mode: every allocation then creates two CUDA events and
///   every kernel argument records or waits on one (≈ 25 driver calls per op, ≈ 2,000 ops per step). The
///   events order work *between* streams; all our work is on this one stream, where CUDA already orders
///   launches, copies and stream-ordered frees (`cuMemFreeAsync`) in submission order, so they buy
///   nothing. Only buffers allocated after this call go untracked (cuBLAS's and cuRAND's, made with the
///   device, keep theirs — harmless). To check on a GPU: the op tests (especially
///   `work_from_several_threads_is_ordered_on_one_stream`), scripts/cuda-repeatability.mjs (bit-identical
///   runs, no NaN) and __test__/cuda.spec.mjs with the variable set, and the step time without it.
/// - `SANA_CUDA_POOL_KEEP=1`: keep freed memory in the driver's pool across synchronisations. The
///   default pool's release threshold is 0, so every sync (each read back to the host) hands all unused
///   pool memory back to the driver and the next step allocates it again. With the threshold at the
///   maximum the pool keeps it (the process then holds its peak until exit). To check on a GPU: step time
///   and peak memory (`nvidia-smi`) with and without.
#[cfg(feature = "cuda")]
fn tune_cuda_device(dev: &Device) -> candle_core::Result<()> {
    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    use candle_core::cuda_backend::WrapErr;
    let cuda = dev.as_cuda_device()?;
    if std::env::var("SANA_CUDA_EVENT_TRACKING").is_ok_and(|v| v.trim() == "0") {
        // SAFETY: every CudaSlice of this device lives on its one stream (see `cuda_device`), so no
        // buffer is used by a second stream, which is what the events would order.
        unsafe { cuda.disable_event_tracking() };
    }
    if std::env::var("SANA_CUDA_POOL_KEEP").is_ok_and(|v| v.trim() == "1") {
        let ctx = cuda.cuda_stream().context().clone();
        ctx.bind_to_thread().w()?;
        let mut threshold = u64::MAX;
        // SAFETY: cu_device() is this context's device; the release threshold attribute is a u64.
        unsafe {
            let pool = result::device::get_default_mem_pool(ctx.cu_device()).w()?;
            let attr = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD;
            result::mem_pool::set_attribute(pool, attr, (&mut threshold as *mut u64).cast()).w()?;
        }
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_ordinal: usize) -> Result<Device> {
    Err(SanaError::DeviceUnavailable(
        "this sana-node binary was built without CUDA support (CPU-only build); \
         install the CUDA variant or use device: 'cpu' / 'auto'"
            .into(),
    ))
}

/// Number of CUDA devices the driver reports; an error says why none is usable (no driver, the stub
/// library, a driver older than the toolkit, …) or that this is a CPU-only build.
#[cfg(feature = "cuda")]
pub fn cuda_device_count() -> Result<usize> {
    use candle_core::cuda_backend::cudarc::driver::CudaContext;
    match CudaContext::device_count() {
        Ok(n) if n > 0 => Ok(n as usize),
        Ok(_) => Err(SanaError::DeviceUnavailable("the CUDA driver reports no GPU".into())),
        Err(e) => Err(SanaError::DeviceUnavailable(format!("CUDA driver: {e}"))),
    }
}

#[cfg(not(feature = "cuda"))]
pub fn cuda_device_count() -> Result<usize> {
    cuda_device(0).map(|_| 0)
}

/// Human/JS name of a device: `cpu` or `cuda:N`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// The dtype a component's weights are stored in, for a request (`float32`, `bfloat16`, `float16` or `auto`).
/// On CUDA the model computes in it too. On the CPU the model computes in f32 whatever the request
/// ([`crate::weights::compute_dtype`]): a half request keeps the weights half in memory (half the RSS) and
/// widens them as they are used; `auto` is f32 there, so that images match diffusers' float32 ones.
pub fn resolve_dtype(request: &str, device: &Device) -> Result<DType> {
    let dtype = match request {
        "auto" => {
            if device.is_cpu() {
                DType::F32
            } else {
                DType::BF16
            }
        }
        "float32" | "fp32" | "f32" => DType::F32,
        "bfloat16" | "bf16" => DType::BF16,
        "float16" | "fp16" | "f16" => DType::F16,
        other => {
            return Err(SanaError::invalid_arg(
                "dtype",
                format!("expected 'float32', 'bfloat16', 'float16' or 'auto', received \"{other}\""),
            ))
        }
    };
    Ok(dtype)
}

pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "float32",
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        DType::F64 => "float64",
        DType::I64 => "int64",
        DType::U32 => "uint32",
        DType::U8 => "uint8",
        _ => "other",
    }
}
