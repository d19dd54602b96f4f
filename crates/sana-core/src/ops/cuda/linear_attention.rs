//! ReLU linear attention (kernels/linear_attention.cu): two launches, partial kv sums per token split,
//! then the output.

use super::launch::{launch, ptx_module, In, Launch, Module, Out, Scalar};
use crate::Result;
use candle_core::cuda_backend::cudarc::driver::LaunchConfig;
use candle_core::Tensor;

const MODULE: Module = ptx_module!("linear_attention");
/// Largest head dim the kernel handles (`LA_MAX_D` in linear_attention.cu).
pub(crate) const LINEAR_ATTENTION_MAX_HEAD_DIM: usize = 64;
const LA_THREADS: u32 = 256;
const LA_TILE_N: usize = 32;
const LA_TILE_Q: usize = 64;

/// q, k, v: [B, N, heads·d] on a CUDA device, one dtype (f32/f16/bf16), d ≤ 64 → [B, N, heads·d] in
/// q's dtype (f16 saturated to ±65504, NaN kept).
pub(crate) fn relu_linear_attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, eps: f64) -> Result<Tensor> {
    let (b, n, c) = q.dims3()?;
    let d = c / heads;
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let bh = b * heads;
    // Enough blocks to fill the GPU even for one image: split the tokens of each head.
    let splits = (512 / bh.max(1)).clamp(1, 32).min(n.div_ceil(LA_TILE_N)).max(1);
    let dims = [Scalar::I32(n as i32), Scalar::I32(c as i32), Scalar::I32(heads as i32), Scalar::I32(d as i32), Scalar::I32(splits as i32)];
    let block = |grid_y: usize| LaunchConfig { grid_dim: (bh as u32, grid_y as u32, 1), block_dim: (LA_THREADS, 1, 1), shared_mem_bytes: 0 };
    // 1. Partial kv and ksum per (batch·head, split): linear_attn_kv(k, v, ws, n, c, heads, d, splits).
    let ws = launch(&Launch {
        module: &MODULE,
        func: "linear_attn_kv",
        dtype: q.dtype(),
        inputs: &[In::T(&k), In::T(&v)],
        out: Out::F32((bh * splits * (d * d + d),).into()),
        scalars: &dims,
        cfg: block(splits),
    })?;
    // 2. out = (kv · relu(q)) / (ksum · relu(q) + eps), LA_TILE_Q tokens per block:
    //    linear_attn_out(q, ws, out, n, c, heads, d, splits, eps).
    let [s0, s1, s2, s3, s4] = dims;
    launch(&Launch {
        module: &MODULE,
        func: "linear_attn_out",
        dtype: q.dtype(),
        inputs: &[In::T(&q), In::F32(&ws)],
        out: Out::T(q.shape().clone()),
        scalars: &[s0, s1, s2, s3, s4, Scalar::F32(eps as f32)],
        cfg: block(n.div_ceil(LA_TILE_Q)),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{gpu, pair, rel_err, tol, DTYPES};
    use super::*;
    use candle_core::DType;

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
                let got = crate::ops::relu_linear_attention(&q, &k, &v, heads, 1e-15)?;
                assert_eq!(got.dtype(), dtype);
                let want = crate::ops::relu_linear_attention(&qc, &kc, &vc, heads, 1e-15)?;
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
}
