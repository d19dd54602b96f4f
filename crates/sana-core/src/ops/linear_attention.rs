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

use super::{is_cpu_f32, Strided};
use crate::ops::sgemm::{sgemm_serial, Rhs};
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
    // Per (batch, head): kv[j][i] = Σₙ relu(kₙ)ⱼ · vₙᵢ and ksum = Σₙ relu(kₙ) (the row diffusers gets
    // by padding V with ones). kv is one GEMM, relu(K)ᵀ · V, of our own: a per-token axpy loop here
    // spent 3× the GEMM's time on a branch per ReLU'd zero and on scalar loads of each strided k row
    // (perf). q, k and v are read in place through their row stride: as narrow views of the merged
    // q/k/v GEMM output they are not contiguous, and copying them whole cost more than the attention
    // itself; only one head's rows at a time are copied, to compact n × d buffers.
    let (kr, vr, qr) = (TokenRows::of(k)?, TokenRows::of(v)?, TokenRows::of(q)?);
    // Every (batch item, head)'s sums in order: kv [B·heads][d][d] and ksum [B·heads][d].
    let (mut kv, mut ksum) = (vec![0f32; b * heads * d * d], vec![0f32; b * c]);
    kr.with(|ks, kb| {
        vr.with(|vs, vb| {
            kv.par_chunks_mut(d * d).zip(ksum.par_chunks_mut(d)).enumerate().for_each(|(bh, (kvh, ksh))| {
                let (bi, h) = (bh / heads, bh % heads);
                let krelu = head_rows(ks, kb.start(bi, h * d), kb.row, d, true, n);
                let vh = head_rows(vs, vb.start(bi, h * d), vb.row, d, false, n);
                // lhs: krelu [n × d] viewed transposed.
                let lhs = Strided { offset: 0, rs: 1, cs: d };
                sgemm_serial([d, d, n], (kvh, Strided::rows(0, d)), (&krelu, lhs), (Rhs::F32(&vh), Strided::rows(0, d)), false);
                column_sums(&krelu, ksh);
            })
        })
    })??;
    let out = qr.with(|qs, qb| {
        let mut out = vec![0f32; b * n * c];
        out.par_chunks_mut(c).enumerate().for_each(|(bt, o)| {
            let (bi, t) = (bt / n, bt % n);
            let q0 = qb.start(bi, 0) + t * qb.row;
            let (kv, ksum) = (&kv[bi * heads * d * d..][..heads * d * d], &ksum[bi * c..][..c]);
            apply_row(kv, ksum, &qs[q0..q0 + c], d, eps as f32, o);
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

/// Rows ahead that [`head_rows`] prefetches.
const PREFETCH_ROWS: usize = 16;

crate::ops::fastmath::dispatch!(
    /// The n rows (tokens) of one head, contiguous: out[t·d + j] = f(src[s0 + t·rs + j]), f = ReLU or
    /// identity. The rows lie a whole token (3 · 1152 floats in the DiT) apart, so every one is on a new
    /// page, where the hardware prefetcher stops: they are prefetched here instead. Reading them as they
    /// came cost 3× the head's GEMM (perf).
    head_rows, (src: &[f32], s0: usize, rs: usize, d: usize, relu: bool, n: usize) -> Vec<f32>, {
    let mut out = Vec::with_capacity(n * d);
    for t in 0..n {
        #[cfg(target_arch = "x86_64")]
        if t + PREFETCH_ROWS < n {
            let ahead = s0 + (t + PREFETCH_ROWS) * rs;
            for line in (0..d).step_by(16) {
                // SAFETY: a prefetch never faults; the address is inside `src` (row t + 16 < n exists).
                unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(src.as_ptr().add(ahead + line).cast()) };
            }
        }
        let row = &src[s0 + t * rs..s0 + t * rs + d];
        if relu {
            out.extend(row.iter().map(|&x| x.max(0.0)));
        } else {
            out.extend_from_slice(row);
        }
    }
    out
});

/// sum[j] = Σₜ rows[t·d + j], d = sum.len().
fn column_sums(rows: &[f32], sum: &mut [f32]) {
    for r in rows.chunks_exact(sum.len()) {
        sum.iter_mut().zip(r).for_each(|(s, x)| *s += x);
    }
}

crate::ops::fastmath::dispatch!(
    /// One token's output over every head: `kv` the heads' d × d sums and `ksum` their d sums, one
    /// after the other; `q` the token's row.
    apply_row, (kv: &[f32], ksum: &[f32], q: &[f32], d: usize, eps: f32, out: &mut [f32]), {
    for (h, (kvh, ksh)) in kv.chunks_exact(d * d).zip(ksum.chunks_exact(d)).enumerate() {
        let (qh, oh) = (&q[h * d..(h + 1) * d], &mut out[h * d..(h + 1) * d]);
        match d {
            32 => apply_head::<32>(kvh, ksh, qh.try_into().expect("d = 32"), eps, oh), // Sana's DiT and DC-AE
            _ => apply_head_any(kvh, ksh, qh, eps, oh),
        }
    }
});

/// One token, one head: out = (Σⱼ relu(q)ⱼ · kv[j]) / (relu(q) · ksum + eps). With d a constant the
/// accumulators live in registers: two sets (even and odd j), so that each add waits on half as many
/// before it, and the denominator in 8 lanes. (A single chain, with the denominator kept in memory,
/// was latency-bound at 4× this; the terms' order is not diffusers' either way, f32 rounding only.)
#[inline(always)]
fn apply_head<const D: usize>(kv: &[f32], ksum: &[f32], q: &[f32; D], eps: f32, out: &mut [f32]) {
    const { assert!(D.is_multiple_of(8), "rows are taken in pairs, the denominator in 8 lanes") };
    let qr: [f32; D] = std::array::from_fn(|j| q[j].max(0.0));
    let (mut even, mut odd) = ([0f32; D], [0f32; D]);
    for (j, pair) in kv.chunks_exact(2 * D).enumerate() {
        let (q0, q1) = (qr[2 * j], qr[2 * j + 1]);
        for i in 0..D {
            even[i] += q0 * pair[i];
            odd[i] += q1 * pair[D + i];
        }
    }
    let mut den = [0f32; 8];
    for (qc, kc) in qr.chunks_exact(8).zip(ksum.chunks_exact(8)) {
        for l in 0..8 {
            den[l] += qc[l] * kc[l];
        }
    }
    let den = den.iter().sum::<f32>() + eps;
    out.iter_mut().zip(even.iter().zip(&odd)).for_each(|(o, (a, b))| *o = (a + b) / den);
}

/// [`apply_head`] for any head dim.
#[inline(always)]
fn apply_head_any(kv: &[f32], ksum: &[f32], q: &[f32], eps: f32, out: &mut [f32]) {
    let mut acc = vec![0f32; q.len()];
    let mut den = 0f32;
    for ((row, &qj), &ks) in kv.chunks_exact(q.len()).zip(q).zip(ksum) {
        let qj = qj.max(0.0);
        acc.iter_mut().zip(row).for_each(|(a, r)| *a += qj * r);
        den += qj * ks;
    }
    let den = den + eps;
    out.iter_mut().zip(&acc).for_each(|(o, a)| *o = a / den);
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
        // n = 600: several of the GEMM's k slices.
        for &(b, n, heads, d) in &[(2, 17, 3, 8), (1, 1, 1, 4), (1, 64, 2, 32), (2, 600, 2, 32)] {
            let c = heads * d;
            let q = Tensor::randn(0f32, 1.0, (b, n, c), &dev)?;
            let k = Tensor::randn(0f32, 1.0, (b, n, c), &dev)?;
            let v = Tensor::randn(0f32, 1.0, (b, n, c), &dev)?;
            let want = reference(&q, &k, &v, heads, 1e-15)?;
            // Every vector tier of the row loops gives the baseline's bits.
            let base = crate::ops::fastmath::with_tier(crate::ops::fastmath::Tier::Base, || relu_linear_attention(&q, &k, &v, heads, 1e-15))?.flatten_all()?.to_vec1::<f32>()?;
            for tier in crate::ops::fastmath::tiers_here() {
                let got = crate::ops::fastmath::with_tier(tier, || relu_linear_attention(&q, &k, &v, heads, 1e-15))?.flatten_all()?.to_vec1::<f32>()?;
                assert!(got.iter().zip(&base).all(|(g, b)| g.to_bits() == b.to_bits()), "{tier:?} {:?}", (b, n, heads, d));
            }
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
