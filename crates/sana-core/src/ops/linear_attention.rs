//! ReLU linear attention (Sana's self-attention and DC-AE's LiteMLA), without the N×N matrix.
//!
//! diffusers (`SanaLinearAttnProcessor2_0`), per head with q, k, v as [d, N]:
//! ```text
//! q, k = relu(q), relu(k)                    # in float32
//! v_pad = pad(v, one extra row of ones)      # [d+1, N]
//! o = (v_pad @ kᵀ) @ q                       # [d+1, N]
//! out = o[:d] / (o[d] + eps)
//! ```
//! Here: kv = Σₙ vₙ kₙᵀ (d×d), ksum = Σₙ kₙ, outₙ = kv qₙ / (ksum·qₙ + eps) — the same sums without the
//! padded copy of V.

use super::is_cpu_f32;
use crate::{ensure_arg, Result};
use candle_core::{DType, Tensor, D};
use rayon::prelude::*;

/// q, k, v: [B, N, heads·d] token-major (the layout of a Linear's output) → [B, N, heads·d].
/// ReLU is applied to q and k inside; math is f32 whatever the input dtype; output has q's dtype.
pub fn relu_linear_attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, eps: f64) -> Result<Tensor> {
    let (b, n, c) = q.dims3()?;
    ensure_arg!(k.dims() == q.dims() && v.dims() == q.dims(), "value",
        "q, k, v must have the same shape, got {:?}, {:?}, {:?}", q.dims(), k.dims(), v.dims());
    ensure_arg!(heads > 0 && c % heads == 0, "heads", "{c} channels do not split into {heads} heads");
    let d = c / heads;
    let out_dtype = q.dtype();
    #[cfg(feature = "cuda")]
    if super::is_cuda_kernel_dtype(&[q, k, v]) && d <= super::cuda::LINEAR_ATTENTION_MAX_HEAD_DIM {
        return super::cuda::relu_linear_attention(q, k, v, heads, eps);
    }
    if !(is_cpu_f32(q) && is_cpu_f32(k) && is_cpu_f32(v)) {
        return fallback(q, k, v, heads, eps)?.to_dtype(out_dtype).map_err(Into::into);
    }
    // Per (batch, head): kvᵀ as d rows of d + 1 values, row j = Σₙ relu(kₙ)ⱼ · [vₙ, 1] (V padded with a
    // one, as diffusers pads it: the last column is ksum). Both phases are then axpy loops over a
    // contiguous row (they vectorise; a dot product's sequential f32 sum would not). q, k and v are read
    // in place through their row stride: as narrow views of the merged q/k/v GEMM output they are not
    // contiguous, and copying them cost more than the attention itself.
    let w = d + 1;
    let (kr, vr, qr) = (TokenRows::of(k)?, TokenRows::of(v)?, TokenRows::of(q)?);
    let kv_all = kr.with(|ks, kb| {
        vr.with(|vs, vb| {
            (0..b * heads)
                .into_par_iter()
                .map(|bh| {
                    let (bi, h) = (bh / heads, bh % heads);
                    let mut kvt = vec![0f32; d * w];
                    kv_head(ks, kb.start(bi, h * d), kb.row, vs, vb.start(bi, h * d), vb.row, n, d, &mut kvt);
                    kvt
                })
                .collect::<Vec<_>>()
        })
    })??;
    let out = qr.with(|qs, qb| {
        let mut out = vec![0f32; b * n * c];
        out.par_chunks_mut(c).enumerate().for_each(|(bt, o)| {
            let (bi, t) = (bt / n, bt % n);
            let q0 = qb.start(bi, 0) + t * qb.row;
            apply_row(&kv_all[bi * heads..(bi + 1) * heads], &qs[q0..q0 + c], d, eps as f32, o);
        });
        out
    })?;
    Ok(Tensor::from_vec(out, (b, n, c), q.device())?.to_dtype(out_dtype)?)
}

/// A CPU f32 tensor [B, N, C] whose rows (tokens) are contiguous along C, wherever they lie: a narrow view
/// of a wider [B, N, C'] tensor qualifies. Anything else is made contiguous first.
struct TokenRows {
    t: Tensor,
}

/// Where batch item `bi`'s rows are: element (bi, t, ch) at `offset + bi·batch + t·row + ch`.
#[derive(Clone, Copy)]
struct RowLayout {
    offset: usize,
    batch: usize,
    row: usize,
}

impl RowLayout {
    /// Offset of element (bi, 0, ch).
    fn start(&self, bi: usize, ch: usize) -> usize {
        self.offset + bi * self.batch + ch
    }
}

impl TokenRows {
    fn of(x: &Tensor) -> Result<Self> {
        let st = x.stride();
        Ok(TokenRows { t: if st[2] == 1 { x.clone() } else { x.contiguous()? } })
    }

    fn with<R>(&self, f: impl FnOnce(&[f32], RowLayout) -> R) -> Result<R> {
        let (storage, layout) = self.t.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            return Err(candle_core::Error::Msg("linear attention: checked CPU tensor".into()).into());
        };
        let st = layout.stride();
        Ok(f(cpu.as_slice::<f32>()?, RowLayout { offset: layout.start_offset(), batch: st[0], row: st[1] }))
    }
}

super::fastmath::dispatch!(
    /// kvt (d rows of d + 1) = Σₜ relu(k[t]) ⊗ [v[t], 1] for one head: k[t] at `k0 + t·krs`, v likewise.
    kv_head, (ks: &[f32], k0: usize, krs: usize, vs: &[f32], v0: usize, vrs: usize, n: usize, d: usize, kvt: &mut [f32]), {
    let w = d + 1;
    let mut vpad = vec![1f32; w];
    for t in 0..n {
        vpad[..d].copy_from_slice(&vs[v0 + t * vrs..v0 + t * vrs + d]);
        for (row, &kj) in kvt.chunks_exact_mut(w).zip(&ks[k0 + t * krs..k0 + t * krs + d]) {
            let kj = kj.max(0.0);
            if kj != 0.0 {
                row.iter_mut().zip(&vpad).for_each(|(a, v)| *a += kj * v);
            }
        }
    }
});

super::fastmath::dispatch!(
    /// One token's output over every head: `kv` the heads' kvᵀ, `q` the token's row.
    apply_row, (kv: &[Vec<f32>], q: &[f32], d: usize, eps: f32, out: &mut [f32]), {
    for (h, kvt) in kv.iter().enumerate() {
        let (qh, oh) = (&q[h * d..(h + 1) * d], &mut out[h * d..(h + 1) * d]);
        match d + 1 {
            33 => apply_head::<33>(kvt, qh, eps, oh), // d = 32: Sana's DiT and DC-AE
            _ => apply_head_any(kvt, qh, eps, oh),
        }
    }
});

/// One token, one head: acc = Σⱼ relu(q)ⱼ · kvᵀ[j] = [kv·q, ksum·q]; out = acc[..d] / (acc[d] + eps).
/// With the row width a constant, `acc` lives in registers across the j loop.
#[inline(always)]
fn apply_head<const W: usize>(kvt: &[f32], q: &[f32], eps: f32, out: &mut [f32]) {
    let mut acc = [0f32; W];
    for (row, &qj) in kvt.chunks_exact(W).zip(q) {
        let qj = qj.max(0.0);
        for i in 0..W {
            acc[i] += qj * row[i];
        }
    }
    let den = acc[W - 1] + eps;
    out.iter_mut().zip(&acc[..W - 1]).for_each(|(o, a)| *o = a / den);
}

/// [`apply_head`] for any head dim.
#[inline(always)]
fn apply_head_any(kvt: &[f32], q: &[f32], eps: f32, out: &mut [f32]) {
    let w = q.len() + 1;
    let mut acc = vec![0f32; w];
    for (row, &qj) in kvt.chunks_exact(w).zip(q) {
        let qj = qj.max(0.0);
        acc.iter_mut().zip(row).for_each(|(a, r)| *a += qj * r);
    }
    let den = acc[w - 1] + eps;
    out.iter_mut().zip(&acc[..w - 1]).for_each(|(o, a)| *o = a / den);
}

/// Device-agnostic candle version (off-CPU when the CUDA kernel does not apply).
fn fallback(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, eps: f64) -> candle_core::Result<Tensor> {
    let (b, n, c) = q.dims3()?;
    let d = c / heads;
    // [B, N, C] → [B, H, N, d]
    let split = |t: &Tensor| t.to_dtype(DType::F32)?.reshape((b, n, heads, d))?.transpose(1, 2)?.contiguous();
    let q = split(q)?.relu()?;
    let k = split(k)?.relu()?;
    let v = split(v)?;
    let kv = k.transpose(2, 3)?.contiguous()?.matmul(&v)?; // [B,H,d,d]: kv[j,i] = Σ k_j v_i
    let num = q.matmul(&kv)?; // [B,H,N,d]
    let ksum = k.sum_keepdim(2)?; // [B,H,1,d]
    let den = q.broadcast_mul(&ksum)?.sum_keepdim(D::Minus1)?.affine(1.0, eps)?; // [B,H,N,1]
    num.broadcast_div(&den)?.transpose(1, 2)?.reshape((b, n, c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The diffusers formulation, literally: pad V with ones, (V_pad Kᵀ) Q, divide by the last row.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, eps: f64) -> candle_core::Result<Tensor> {
        let (b, n, c) = q.dims3()?;
        let d = c / heads;
        let hd = |t: &Tensor| t.transpose(1, 2)?.reshape((b, heads, d, n)); // [B,H,d,N]
        let q = hd(q)?.relu()?;
        let k = hd(k)?.relu()?.transpose(2, 3)?; // [B,H,N,d]
        let v = hd(v)?;
        let ones = Tensor::ones((b, heads, 1, n), DType::F32, q.device())?;
        let v = Tensor::cat(&[&v, &ones], 2)?; // [B,H,d+1,N]
        let o = v.matmul(&k.contiguous()?)?.matmul(&q.contiguous()?)?; // [B,H,d+1,N]
        let num = o.narrow(2, 0, d)?;
        let den = o.narrow(2, d, 1)?.affine(1.0, eps)?;
        num.broadcast_div(&den)?.reshape((b, c, n))?.transpose(1, 2)
    }

    #[test]
    fn matches_padded_value_formulation() -> Result<()> {
        let dev = Device::Cpu;
        for &(b, n, heads, d) in &[(2, 17, 3, 8), (1, 1, 1, 4), (1, 64, 2, 32)] {
            let c = heads * d;
            let q = Tensor::randn(0f32, 1.0, (b, n, c), &dev)?;
            let k = Tensor::randn(0f32, 1.0, (b, n, c), &dev)?;
            let v = Tensor::randn(0f32, 1.0, (b, n, c), &dev)?;
            let want = reference(&q, &k, &v, heads, 1e-15)?;
            for got in [relu_linear_attention(&q, &k, &v, heads, 1e-15)?, fallback(&q, &k, &v, heads, 1e-15)?] {
                let diff = (got - &want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                let scale = want.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                assert!(diff <= 1e-4 * scale.max(1.0), "{:?}: diff {diff}", (b, n, heads, d));
            }
        }
        Ok(())
    }

    #[test]
    fn reads_narrow_views_of_a_merged_projection_in_place() -> Result<()> {
        // q, k, v as the DiT produces them: narrow views of one [B, N, 3C] GEMM output (row stride 3C), and
        // a transposed (channel-strided) one that has to be copied; both equal the contiguous result.
        let dev = Device::Cpu;
        let (b, n, heads, d) = (2, 37, 3, 32);
        let c = heads * d;
        let qkv = Tensor::randn(0f32, 1.0, (b, n, 3 * c), &dev)?;
        let (q, k, v) = (qkv.narrow(2, 0, c)?, qkv.narrow(2, c, c)?, qkv.narrow(2, 2 * c, c)?);
        assert!(!q.is_contiguous());
        let want = relu_linear_attention(&q.contiguous()?, &k.contiguous()?, &v.contiguous()?, heads, 1e-15)?;
        let vt = v.contiguous()?.transpose(1, 2)?.contiguous()?.transpose(1, 2)?;
        for got in [relu_linear_attention(&q, &k, &v, heads, 1e-15)?, relu_linear_attention(&q, &k, &vt, heads, 1e-15)?] {
            let diff = (got - &want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0);
        }
        Ok(())
    }
}
