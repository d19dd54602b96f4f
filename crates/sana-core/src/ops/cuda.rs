//! Our CUDA kernels (`crates/sana-core/kernels/*.cu`, compiled to PTX by build.rs for compute_80 and
//! compute_90) as candle custom ops. Only the CUDA device reaches here: each op module dispatches
//! (`is_cuda()` → these, CPU f32 → its Rust loop, anything else → candle ops).
//!
//! Storage f32, f16 or bf16 (one kernel per type, `NAME_f32/_f16/_bf16`); math in f32. Inputs must be
//! contiguous (the wrappers below make them so).

use crate::{Result, SanaError};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{bail, CpuStorage, CudaDevice, CudaStorage, CustomOp3, DType, Layout, Shape, Tensor};

// ================================================================================================
// PTX modules
// ================================================================================================

struct Module {
    name: &'static str,
    sm80: &'static str,
    sm90: &'static str,
}

macro_rules! ptx_module {
    ($name:literal) => {
        Module {
            name: $name,
            sm80: include_str!(concat!(env!("OUT_DIR"), "/", $name, "_sm80.ptx")),
            sm90: include_str!(concat!(env!("OUT_DIR"), "/", $name, "_sm90.ptx")),
        }
    };
}

const LINEAR_ATTENTION: Module = ptx_module!("linear_attention");
const DEPTHWISE_CONV: Module = ptx_module!("depthwise_conv");
const CHANNEL_NORM: Module = ptx_module!("channel_norm");

/// `func` for `dtype` (`linear_attn_kv` → `linear_attn_kv_bf16`), from the PTX for this GPU's
/// architecture: compute_90 on Hopper and newer, compute_80 on Ampere (the driver JIT-compiles it).
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
fn contiguous<'a, T>(
    slice: &'a CudaSlice<T>,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<CudaView<'a, T>> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(slice.slice(start..end)),
        None => bail!("{what} must be contiguous"),
    }
}

/// Grid size for a grid-stride loop over `n` elements in blocks of `threads`.
fn grid_for(n: usize, threads: u32) -> u32 {
    n.div_ceil(threads as usize).clamp(1, 1 << 20) as u32
}

/// Run `$body` with `$t` bound to the element type of three same-dtype storages (f32, f16, bf16);
/// `$a`, `$b`, `$c` become the typed slices.
macro_rules! match_3 {
    ($op:expr, $s1:expr, $s2:expr, $s3:expr, |$a:ident, $b:ident, $c:ident| $body:expr) => {
        match (&$s1.slice, &$s2.slice, &$s3.slice) {
            (CudaStorageSlice::F32($a), CudaStorageSlice::F32($b), CudaStorageSlice::F32($c)) => {
                CudaStorage::wrap_cuda_slice($body?, $s1.device().clone())
            }
            (CudaStorageSlice::F16($a), CudaStorageSlice::F16($b), CudaStorageSlice::F16($c)) => {
                CudaStorage::wrap_cuda_slice($body?, $s1.device().clone())
            }
            (CudaStorageSlice::BF16($a), CudaStorageSlice::BF16($b), CudaStorageSlice::BF16($c)) => {
                CudaStorage::wrap_cuda_slice($body?, $s1.device().clone())
            }
            _ => bail!("{}: inputs must share one of f32, f16, bf16 ({:?}, {:?}, {:?})", $op, $s1.dtype(), $s2.dtype(), $s3.dtype()),
        }
    };
}

fn cpu_unsupported(op: &str) -> candle_core::Result<(CpuStorage, Shape)> {
    bail!("{op} is a CUDA-only custom op (the CPU path lives in sana_core::ops)")
}

// ================================================================================================
// ReLU linear attention
// ================================================================================================

/// Largest head dim the kernel handles (`LA_MAX_D` in linear_attention.cu).
pub(crate) const LINEAR_ATTENTION_MAX_HEAD_DIM: usize = 64;
const LA_THREADS: u32 = 256;
const LA_TILE_N: usize = 32;
const LA_TILE_Q: usize = 64;

struct LinearAttention {
    heads: usize,
    eps: f32,
}

impl LinearAttention {
    fn run<T: DeviceRepr>(
        &self,
        dev: &CudaDevice,
        dtype: DType,
        (q, k, v): (&CudaSlice<T>, &CudaSlice<T>, &CudaSlice<T>),
        (lq, lk, lv): (&Layout, &Layout, &Layout),
    ) -> candle_core::Result<CudaSlice<T>> {
        let (b, n, c) = lq.shape().dims3()?;
        let (heads, d) = (self.heads, c / self.heads);
        let (q, k, v) = (contiguous(q, lq, "q")?, contiguous(k, lk, "k")?, contiguous(v, lv, "v")?);
        let bh = b * heads;
        // Enough blocks to fill the GPU even for one image: split the tokens of each head.
        let splits = (512 / bh.max(1)).clamp(1, 32).min(n.div_ceil(LA_TILE_N)).max(1);
        let total = d * d + d;
        // SAFETY: pass 1 writes every element of ws before pass 2 reads it.
        let ws = unsafe { dev.alloc::<f32>(bh * splits * total)? };
        let (n_i, c_i, h_i, d_i, s_i) = (n as i32, c as i32, heads as i32, d as i32, splits as i32);

        // 1. Partial kv and ksum per (batch·head, split).
        let func = load(dev, &LINEAR_ATTENTION, "linear_attn_kv", dtype)?;
        let cfg = LaunchConfig { grid_dim: (bh as u32, splits as u32, 1), block_dim: (LA_THREADS, 1, 1), shared_mem_bytes: 0 };
        let stream = dev.cuda_stream();
        let mut builder = stream.launch_builder(&func);
        builder.arg(&k).arg(&v).arg(&ws).arg(&n_i).arg(&c_i).arg(&h_i).arg(&d_i).arg(&s_i);
        // SAFETY: argument list matches linear_attn_kv_* (k, v, ws, n_tok, channels, heads, d, splits).
        unsafe { builder.launch(cfg) }.w()?;

        // 2. out = (kv · relu(q)) / (ksum · relu(q) + eps), LA_TILE_Q tokens per block.
        // SAFETY: pass 2 writes every output element.
        let out = unsafe { dev.alloc::<T>(b * n * c)? };
        let func = load(dev, &LINEAR_ATTENTION, "linear_attn_out", dtype)?;
        let cfg = LaunchConfig {
            grid_dim: (bh as u32, n.div_ceil(LA_TILE_Q) as u32, 1),
            block_dim: (LA_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let stream = dev.cuda_stream();
        let mut builder = stream.launch_builder(&func);
        builder.arg(&q).arg(&ws).arg(&out).arg(&n_i).arg(&c_i).arg(&h_i).arg(&d_i).arg(&s_i).arg(&self.eps);
        // SAFETY: argument list matches linear_attn_out_* (q, ws, out, n_tok, channels, heads, d, splits, eps).
        unsafe { builder.launch(cfg) }.w()?;
        Ok(out)
    }
}

impl CustomOp3 for LinearAttention {
    fn name(&self) -> &'static str {
        "sana-relu-linear-attention"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        cpu_unsupported(self.name())
    }

    fn cuda_fwd(
        &self,
        sq: &CudaStorage,
        lq: &Layout,
        sk: &CudaStorage,
        lk: &Layout,
        sv: &CudaStorage,
        lv: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = sq.device();
        let dtype = sq.dtype();
        let out = match_3!(self.name(), sq, sk, sv, |q, k, v| self.run(dev, dtype, (q, k, v), (lq, lk, lv)));
        Ok((out, lq.shape().clone()))
    }
}

/// q, k, v: [B, N, heads·d] on a CUDA device, one dtype (f32/f16/bf16), d ≤ 64 → [B, N, heads·d] in
/// q's dtype (f16 saturated to ±65504, NaN kept).
pub(crate) fn relu_linear_attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, eps: f64) -> Result<Tensor> {
    let op = LinearAttention { heads, eps: eps as f32 };
    Ok(q.contiguous()?.apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)?)
}

// ================================================================================================
// Depthwise convolution (+ GLU)
// ================================================================================================

struct DepthwiseConv {
    glu: bool,
}

impl DepthwiseConv {
    fn run<T: DeviceRepr>(
        &self,
        dev: &CudaDevice,
        dtype: DType,
        (x, w, bias): (&CudaSlice<T>, &CudaSlice<T>, &CudaSlice<T>),
        (lx, lw, lb): (&Layout, &Layout, &Layout),
    ) -> candle_core::Result<CudaSlice<T>> {
        let (b, cx, h, wd) = lx.shape().dims4()?;
        let ks = lw.shape().dims()[2];
        let c_out = if self.glu { cx / 2 } else { cx };
        let (x, w, bias) = (contiguous(x, lx, "x")?, contiguous(w, lw, "weight")?, contiguous(bias, lb, "bias")?);
        let n_out = b * c_out * h * wd;
        // SAFETY: the kernel writes every output element.
        let out = unsafe { dev.alloc::<T>(n_out)? };
        let func = load(dev, &DEPTHWISE_CONV, "depthwise_conv", dtype)?;
        let cfg = LaunchConfig { grid_dim: (grid_for(n_out, 256), 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let (b_i, c_i, h_i, w_i, k_i, g_i) = (b as i32, c_out as i32, h as i32, wd as i32, ks as i32, self.glu as i32);
        let stream = dev.cuda_stream();
        let mut builder = stream.launch_builder(&func);
        builder.arg(&x).arg(&w).arg(&bias).arg(&out).arg(&b_i).arg(&c_i).arg(&h_i).arg(&w_i).arg(&k_i).arg(&g_i);
        // SAFETY: argument list matches depthwise_conv_* (x, weight, bias, out, batch, c_out, h, w, ks, glu).
        unsafe { builder.launch(cfg) }.w()?;
        Ok(out)
    }
}

impl CustomOp3 for DepthwiseConv {
    fn name(&self) -> &'static str {
        if self.glu {
            "sana-depthwise-conv-glu"
        } else {
            "sana-depthwise-conv"
        }
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        cpu_unsupported(self.name())
    }

    fn cuda_fwd(
        &self,
        sx: &CudaStorage,
        lx: &Layout,
        sw: &CudaStorage,
        lw: &Layout,
        sb: &CudaStorage,
        lb: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let (b, cx, h, w) = lx.shape().dims4()?;
        let shape = Shape::from((b, if self.glu { cx / 2 } else { cx }, h, w));
        let (dev, dtype) = (sx.device(), sx.dtype());
        let out = match_3!(self.name(), sx, sw, sb, |x, wt, bias| self.run(dev, dtype, (x, wt, bias), (lx, lw, lb)));
        Ok((out, shape))
    }
}

/// x: [B, C, H, W] (C even when `glu`), weight: [C, 1, k, k], bias: [C] or none, one dtype, on CUDA.
/// `glu` → [B, C/2, H, W] = conv[:C/2] · silu(conv[C/2:]); else [B, C, H, W] = conv.
pub(crate) fn depthwise_conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, glu: bool) -> Result<Tensor> {
    let c = x.dim(1)?;
    let zeros;
    let bias = match bias {
        Some(b) => b.to_dtype(x.dtype())?,
        None => {
            zeros = Tensor::zeros(c, x.dtype(), x.device())?;
            zeros
        }
    };
    let weight = weight.to_dtype(x.dtype())?.contiguous()?;
    Ok(x.contiguous()?.apply_op3_no_bwd(&weight, &bias.contiguous()?, &DepthwiseConv { glu })?)
}

// ================================================================================================
// Channel RMSNorm (RMSNorm2d)
// ================================================================================================

struct RmsNormChannels {
    eps: f32,
}

impl RmsNormChannels {
    fn run<T: DeviceRepr>(
        &self,
        dev: &CudaDevice,
        dtype: DType,
        x: &CudaSlice<T>,
        lx: &Layout,
        (w, lw): (&CudaSlice<f32>, &Layout),
        (bias, lb): (&CudaSlice<f32>, &Layout),
    ) -> candle_core::Result<CudaSlice<T>> {
        let (b, c, h, wd) = lx.shape().dims4()?;
        let (x, w, bias) = (contiguous(x, lx, "x")?, contiguous(w, lw, "weight")?, contiguous(bias, lb, "bias")?);
        // SAFETY: the kernel writes every output element.
        let out = unsafe { dev.alloc::<T>(b * c * h * wd)? };
        let func = load(dev, &CHANNEL_NORM, "rms_norm_channels", dtype)?;
        let cfg = LaunchConfig { grid_dim: (grid_for(b * h * wd, 256), 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let (b_i, c_i, hw_i) = (b as i32, c as i32, (h * wd) as i32);
        let stream = dev.cuda_stream();
        let mut builder = stream.launch_builder(&func);
        builder.arg(&x).arg(&w).arg(&bias).arg(&out).arg(&b_i).arg(&c_i).arg(&hw_i).arg(&self.eps);
        // SAFETY: argument list matches rms_norm_channels_* (x, weight, bias, out, batch, c, hw, eps).
        unsafe { builder.launch(cfg) }.w()?;
        Ok(out)
    }
}

impl CustomOp3 for RmsNormChannels {
    fn name(&self) -> &'static str {
        "sana-rms-norm-channels"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        cpu_unsupported(self.name())
    }

    fn cuda_fwd(
        &self,
        sx: &CudaStorage,
        lx: &Layout,
        sw: &CudaStorage,
        lw: &Layout,
        sb: &CudaStorage,
        lb: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let (dev, dtype) = (sx.device(), sx.dtype());
        let (w, bias) = (sw.as_cuda_slice::<f32>()?, sb.as_cuda_slice::<f32>()?);
        let out = match &sx.slice {
            CudaStorageSlice::F32(x) => CudaStorage::wrap_cuda_slice(self.run(dev, dtype, x, lx, (w, lw), (bias, lb))?, dev.clone()),
            CudaStorageSlice::F16(x) => CudaStorage::wrap_cuda_slice(self.run(dev, dtype, x, lx, (w, lw), (bias, lb))?, dev.clone()),
            CudaStorageSlice::BF16(x) => CudaStorage::wrap_cuda_slice(self.run(dev, dtype, x, lx, (w, lw), (bias, lb))?, dev.clone()),
            _ => bail!("{}: unsupported dtype {dtype:?} (expected f32, f16 or bf16)", self.name()),
        };
        Ok((out, lx.shape().clone()))
    }
}

/// x: [B, C, H, W] on CUDA (f32/f16/bf16), weight/bias: [C] (any float dtype, used as f32) → x's shape
/// and dtype.
pub(crate) fn rms_norm_channels(x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let c = x.dim(1)?;
    let per_channel = |t: Option<&Tensor>, fill: f64, name: &str| -> Result<Tensor> {
        let t = match t {
            Some(t) => t.to_dtype(DType::F32)?.contiguous()?,
            None => Tensor::full(fill as f32, c, x.device())?,
        };
        crate::ensure_arg!(t.dims() == [c], name, "norm {name} must have shape [{c}], got {:?}", t.dims());
        Ok(t)
    };
    let (w, b) = (per_channel(weight, 1.0, "weight")?, per_channel(bias, 0.0, "bias")?);
    x.contiguous()?
        .apply_op3_no_bwd(&w, &b, &RmsNormChannels { eps: eps as f32 })
        .map_err(SanaError::from)
}

// ================================================================================================
// Tests: each kernel against the op's CPU implementation, per storage dtype
// ================================================================================================

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use std::io::Write;

    /// CUDA device 0, or None after saying so on the terminal (libtest captures `println!`, not raw
    /// stderr writes, so the skip stays visible in a normal `cargo test` run).
    fn gpu(test: &str) -> Option<Device> {
        match crate::device::resolve_device("cuda:0") {
            Ok(dev) => Some(dev),
            Err(e) => {
                let msg = format!("SKIPPED {test}: no usable CUDA device ({e})\n");
                let _ = std::io::stderr().write_all(msg.as_bytes());
                None
            }
        }
    }

    /// Random [dims] tensor rounded to `dtype`: (the CUDA input, the same values as a CPU f32 tensor).
    fn pair(dims: &[usize], dtype: DType, gpu: &Device) -> Result<(Tensor, Tensor)> {
        let cpu = Tensor::randn(0f32, 1.0, dims, &Device::Cpu)?.to_dtype(dtype)?.to_dtype(DType::F32)?;
        Ok((cpu.to_dtype(dtype)?.to_device(gpu)?, cpu))
    }

    /// max |got − want| / max(1, max |want|), with `got` read back as f32 on the CPU.
    fn rel_err(got: &Tensor, want: &Tensor) -> Result<f32> {
        assert_eq!(got.dims(), want.dims());
        let got = got.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
        let diff = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        let scale = want.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        Ok(diff / scale.max(1.0))
    }

    /// Output rounding of each storage type (plus f32 accumulation-order noise).
    fn tol(dtype: DType) -> f32 {
        match dtype {
            DType::F32 => 1e-5,
            DType::F16 => 2e-3,
            _ => 1.6e-2,
        }
    }

    const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

    #[test]
    fn linear_attention_matches_cpu() -> Result<()> {
        let Some(dev) = gpu("linear_attention_matches_cpu") else { return Ok(()) };
        // (B, N, heads, d): Sana's d = 32; several token splits; a ragged last tile; d = 64 (the limit).
        for &(b, n, heads, d) in &[(2, 17, 3, 8), (1, 1, 1, 4), (2, 1024, 4, 32), (1, 333, 2, 64), (1, 4096, 1, 32)] {
            for dtype in DTYPES {
                let c = heads * d;
                let (q, qc) = pair(&[b, n, c], dtype, &dev)?;
                let (k, kc) = pair(&[b, n, c], dtype, &dev)?;
                let (v, vc) = pair(&[b, n, c], dtype, &dev)?;
                let got = super::super::relu_linear_attention(&q, &k, &v, heads, 1e-15)?;
                assert_eq!(got.dtype(), dtype);
                let want = super::super::relu_linear_attention(&qc, &kc, &vc, heads, 1e-15)?;
                let err = rel_err(&got, &want)?;
                assert!(err <= tol(dtype), "{:?} {dtype:?}: rel err {err}", (b, n, heads, d));
            }
        }
        Ok(())
    }

    #[test]
    fn linear_attention_f16_keeps_nan_and_stays_finite_at_the_range_limit() -> Result<()> {
        let Some(dev) = gpu("linear_attention_f16_keeps_nan_and_stays_finite_at_the_range_limit") else { return Ok(()) };
        let (b, n, c) = (1, 64, 32);
        let q = Tensor::ones((b, n, c), DType::F16, &dev)?;
        let k = Tensor::ones((b, n, c), DType::F16, &dev)?;
        // Every value at the f16 maximum: the exact result is 65504; f32 rounding must not make it Inf.
        let v = Tensor::full(half::f16::MAX, (b, n, c), &dev)?;
        let out = relu_linear_attention(&q, &k, &v, 1, 1e-15)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        assert!(out.iter().all(|x| x.is_finite() && (*x - 65504.0).abs() < 64.0), "{:?}", &out[..4]);
        // A NaN in v reaches every output of its channel in every token (no clamp turns it finite).
        let mut vals = vec![half::f16::ONE; b * n * c];
        vals[5 * c + 3] = half::f16::NAN;
        let v = Tensor::from_vec(vals, (b, n, c), &dev)?;
        let out = relu_linear_attention(&q, &k, &v, 1, 1e-15)?.to_dtype(DType::F32)?.to_vec3::<f32>()?;
        assert!(out[0].iter().all(|row| row[3].is_nan()), "NaN was lost");
        assert!(out[0][0][2].is_finite());
        Ok(())
    }

    #[test]
    fn depthwise_conv_and_glu_match_cpu() -> Result<()> {
        let Some(dev) = gpu("depthwise_conv_and_glu_match_cpu") else { return Ok(()) };
        for &(b, c, h, w, k) in &[(2, 6, 5, 7, 3), (1, 4, 1, 1, 3), (1, 8, 32, 32, 3), (1, 2, 6, 4, 5)] {
            for dtype in DTYPES {
                let (x, xc) = pair(&[b, c, h, w], dtype, &dev)?;
                let (wt, wc) = pair(&[c, 1, k, k], dtype, &dev)?;
                let (bias, bc) = pair(&[c], dtype, &dev)?;
                let got = super::super::depthwise_conv2d(&x, &wt, Some(&bias))?;
                let want = super::super::depthwise_conv2d(&xc, &wc, Some(&bc))?;
                let err = rel_err(&got, &want)?;
                assert!(err <= tol(dtype), "conv {:?} {dtype:?}: rel err {err}", (b, c, h, w, k));
                let got = super::super::depthwise_conv2d_glu(&x, &wt, Some(&bias))?;
                let want = super::super::depthwise_conv2d_glu(&xc, &wc, Some(&bc))?;
                assert_eq!(got.dims(), &[b, c / 2, h, w]);
                let err = rel_err(&got, &want)?;
                assert!(err <= tol(dtype), "glu {:?} {dtype:?}: rel err {err}", (b, c, h, w, k));
            }
        }
        // No bias (DC-AE's multi-scale aggregation).
        let (x, xc) = pair(&[1, 4, 9, 9], DType::F32, &dev)?;
        let (wt, wc) = pair(&[4, 1, 5, 5], DType::F32, &dev)?;
        let err = rel_err(&super::super::depthwise_conv2d(&x, &wt, None)?, &super::super::depthwise_conv2d(&xc, &wc, None)?)?;
        assert!(err <= 1e-5, "no bias: rel err {err}");
        Ok(())
    }

    /// As the Node binding runs work: each call on whichever worker thread is free, results read back on
    /// another. Every thread must see one device on one stream, so a read is ordered after the kernels
    /// that produced it (CUDA's per-thread default streams would race here).
    #[test]
    fn work_from_several_threads_is_ordered_on_one_stream() -> Result<()> {
        let Some(dev) = gpu("work_from_several_threads_is_ordered_on_one_stream") else { return Ok(()) };
        let other = std::thread::spawn(|| crate::device::resolve_device("cuda:0")).join().unwrap()?;
        assert!(dev.same_device(&other), "a second thread got another CUDA device");
        let (b, n, heads, d) = (2, 4096, 16, 32);
        let c = heads * d;
        let (q, k, v) = (pair(&[b, n, c], DType::BF16, &dev)?.0, pair(&[b, n, c], DType::BF16, &dev)?.0, pair(&[b, n, c], DType::BF16, &dev)?.0);
        let want = relu_linear_attention(&q, &k, &v, heads, 1e-15)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        for round in 0..8 {
            // Launch on one thread (no wait), scale on a second, read back on a third.
            let (q2, k2, v2) = (q.clone(), k.clone(), v.clone());
            let y = std::thread::spawn(move || relu_linear_attention(&q2, &k2, &v2, heads, 1e-15)).join().unwrap()?;
            let z = std::thread::spawn(move || y.affine(2.0, 0.0)).join().unwrap()?;
            let got = std::thread::spawn(move || z.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()).join().unwrap()?;
            let bad = got.iter().zip(&want).filter(|(g, w)| **g != 2.0 * **w).count();
            assert_eq!(bad, 0, "round {round}: {bad} of {} values differ from the single-thread result", want.len());
        }
        Ok(())
    }

    #[test]
    fn rms_norm_channels_matches_cpu() -> Result<()> {
        let Some(dev) = gpu("rms_norm_channels_matches_cpu") else { return Ok(()) };
        for &(b, c, h, w) in &[(2, 5, 3, 70), (1, 512, 8, 8), (1, 1, 1, 1)] {
            for dtype in DTYPES {
                let (x, xc) = pair(&[b, c, h, w], dtype, &dev)?;
                let (wt, wc) = pair(&[c], dtype, &dev)?;
                let (bias, bc) = pair(&[c], dtype, &dev)?;
                let got = super::super::channel_ops::rms_norm_channels(&x, Some(&wt), Some(&bias), 1e-5)?;
                assert_eq!(got.dtype(), dtype);
                let want = super::super::channel_ops::rms_norm_channels(&xc, Some(&wc), Some(&bc), 1e-5)?;
                let err = rel_err(&got, &want)?;
                assert!(err <= tol(dtype), "{:?} {dtype:?}: rel err {err}", (b, c, h, w));
            }
        }
        Ok(())
    }
}
