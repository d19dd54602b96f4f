//! Eager softmax attention for causal decoders (transformers' `eager_attention_forward`): grouped-query
//! heads, causal + optional sliding-window + key-padding mask, optional tanh logit softcapping (Gemma 2).
//!
//! ```text
//! w = (q @ kᵀ) · scale                      # per query head; kv head = head / (H / Hkv) (repeat_kv)
//! w = tanh(w / cap) · cap                   # softcapping, BEFORE the mask
//! w = w + mask                              # 0 where visible, finfo(f32).min elsewhere
//! out = softmax(w, f32) @ v
//! ```
//! Key j is visible from query i iff `key_mask[j] && j <= i && (no window || i - W < j)`.
//! A query row with no visible key (a padded query more than W tokens past the last real token) gets,
//! as in PyTorch with the finite min-float mask, a uniform average over all keys: finite, never NaN.
//!
//! Logits are materialised a part at a time, not for the whole batch: on the CPU in f32 one [G·L, L]
//! block per (batch element, kv head) and thread, its probabilities in place; elsewhere one batch
//! element at a time ([H, L, L]).

use super::{fastmath, is_cpu_f32, with_cpu_f32, Strided};
use crate::ops::sgemm::{sgemm_serial, Rhs};
use crate::{ensure_arg, Result};
use candle_core::{DType, Device, Tensor, D};
use rayon::prelude::*;

/// Scale, softcap and window of one attention layer.
#[derive(Debug, Clone, Copy)]
pub struct CausalAttention {
    /// Multiplies q·k (Gemma 2: `query_pre_attn_scalar ** -0.5`).
    pub scale: f64,
    /// `attn_logit_softcapping`; `None` disables it.
    pub softcap: Option<f64>,
    /// Sliding window W (query i sees keys i-W+1 ..= i); `None` for full causal attention.
    pub window: Option<usize>,
}

impl CausalAttention {
    /// The keys query `i` may see before the key mask: j ≤ i, and within the window (of `l` keys).
    fn visible_keys(&self, i: usize, l: usize) -> std::ops::Range<usize> {
        self.window.map_or(0, |w| (i + 1).saturating_sub(w))..(i + 1).min(l)
    }

    fn visible(&self, i: usize, j: usize) -> bool {
        self.visible_keys(i, usize::MAX).contains(&j)
    }
}

/// q [B, H, L, D], k and v [B, Hkv, L, D] (H a multiple of Hkv), `key_mask` [B·L] (true = real token)
/// → [B, H, L, D] in q's dtype.
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, key_mask: &[bool], p: &CausalAttention) -> Result<Tensor> {
    let (b, h, l, d) = q.dims4()?;
    let (_, hkv, _, _) = k.dims4()?;
    ensure_arg!(hkv > 0 && h % hkv == 0 && k.dims() == [b, hkv, l, d] && v.dims() == k.dims(), "key",
        "expected k and v [{b}, Hkv, {l}, {d}] with Hkv dividing {h}, got {:?} and {:?}", k.dims(), v.dims());
    ensure_arg!(key_mask.len() == b * l, "attentionMask", "expected {} mask entries, got {}", b * l, key_mask.len());
    let g = h / hkv;
    // Logits and probabilities, [Hkv, G·L, L] f32 each: quadratic in L, so checked before candle allocates.
    crate::alloc::ensure_allocatable("inputIds", "attention logits and probabilities [2, H, L, L]", &[2, h, l, l], 4)?;
    if is_cpu_f32(q) && is_cpu_f32(k) && is_cpu_f32(v) {
        let out = with_cpu_f32(q, |qs| with_cpu_f32(k, |ks| with_cpu_f32(v, |vs| cpu_f32(qs, ks, vs, [b, h, hkv, l, d], key_mask, p))))???;
        return Ok(Tensor::from_vec(out, (b, h, l, d), q.device())?);
    }
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let mut outs = Vec::with_capacity(b);
    for bi in 0..b {
        // Heads sharing a kv head are stacked along the query axis: [Hkv, G·L, D] @ [Hkv, D, L].
        let qb = q.narrow(0, bi, 1)?.reshape((hkv, g * l, d))?;
        let kb = k.narrow(0, bi, 1)?.reshape((hkv, l, d))?;
        let vb = v.narrow(0, bi, 1)?.reshape((hkv, l, d))?;
        let logits = qb.matmul(&kb.t()?)?; // [Hkv, G·L, L]
        let probs = masked_softmax_fallback(&logits, &key_mask[bi * l..(bi + 1) * l], p)?.to_dtype(q.dtype())?;
        outs.push(probs.matmul(&vb)?.reshape((1, h, l, d))?); // [1, H, L, D]
    }
    Ok(Tensor::cat(&outs, 0)?)
}

/// The CPU f32 path: one rayon task per (batch element, kv head), each on its own thread through our
/// GEMM: for each of the G query heads sharing the kv head and each block of [`QUERY_BLOCK`] query
/// positions, q·kᵀ over the keys that block can see into [rows, L] logits, the masked softmax row by
/// row, then the probabilities times v straight into the output rows (contiguous in out). Causality
/// halves the work: a block's keys end at its last query (and start at its first query's window), and
/// the other keys' probabilities are exactly 0, so skipping them changes no bit of the sums. A row with
/// no visible key is uniform over all L keys (see the module doc): its block then multiplies all of v.
/// Candle's batched matmul (the `gemm` crate's AVX2 kernel) took ≈ 4 % of a 300-token Gemma-2 forward
/// for these products.
fn cpu_f32(qs: &[f32], ks: &[f32], vs: &[f32], [b, h, hkv, l, d]: [usize; 5], key_mask: &[bool], p: &CausalAttention) -> Vec<f32> {
    let g = h / hkv;
    let mut out = vec![0f32; b * h * l * d];
    out.par_chunks_mut(g * l * d).enumerate().for_each(|(t, o)| {
        let (bi, kh) = (t / hkv, t % hkv);
        let kv_off = (bi * hkv + kh) * l * d;
        let mask = &key_mask[bi * l..(bi + 1) * l];
        let mut logits = vec![0f32; QUERY_BLOCK.min(l) * l];
        for (r0, i0) in (0..g).flat_map(|gi| (0..l).step_by(QUERY_BLOCK).map(move |i0| (gi * l + i0, i0))) {
            let rows = QUERY_BLOCK.min(l - i0);
            // Keys any query i0..i0 + rows may see: from the first one's window start to the last one.
            let (k0, k1) = (p.visible_keys(i0, l).start, p.visible_keys(i0 + rows - 1, l).end);
            let block = &mut logits[..rows * l];
            // logits[r, j] = q[r0 + r] · k[j] for j in k0..k1 (the rest of each row is written by the softmax)
            let q = Strided::rows(t * g * l * d + r0 * d, d);
            let kt = Strided { offset: kv_off + k0 * d, rs: 1, cs: d };
            sgemm_serial([rows, k1 - k0, d], (block, Strided::rows(k0, l)), (qs, q), (Rhs::F32(ks), kt), false);
            let mut uniform = false;
            for (r, row) in block.chunks_exact_mut(l).enumerate() {
                uniform |= masked_softmax_row(row, i0 + r, mask, p);
            }
            let (k0, k1) = if uniform { (0, l) } else { (k0, k1) };
            let dst = Strided::rows(r0 * d, d);
            sgemm_serial([rows, d, k1 - k0], (o, dst), (block, Strided::rows(k0, l)), (Rhs::F32(vs), Strided::rows(kv_off + k0 * d, d)), false);
        }
    });
    out
}

/// Query positions per block of [`cpu_f32`]: small enough that the causal triangle is mostly skipped
/// (48 of 300 tokens: 62 % of the full products), a multiple of the GEMM's 12-row panels.
const QUERY_BLOCK: usize = 48;

/// One row of raw logits (query position `i`) → its probabilities, in place: scale, softcap, the causal
/// window and key mask (masked keys get exactly 0), softmax. A row with no visible key becomes uniform
/// over all L keys, as PyTorch's softmax of an all-min-float row; true is returned for such a row.
fn masked_softmax_row(row: &mut [f32], i: usize, key_mask: &[bool], p: &CausalAttention) -> bool {
    let l = row.len();
    let std::ops::Range { start: lo, end: hi } = p.visible_keys(i, l);
    let (scale, cap) = (p.scale as f32, p.softcap.map(|c| c as f32));
    match cap {
        Some(c) => fastmath::softcap_in_place(&mut row[lo..hi], scale, c),
        None => fastmath::scale_in_place(&mut row[lo..hi], scale),
    }
    let mut max = f32::NEG_INFINITY;
    for (&w, &keep) in row[lo..hi].iter().zip(&key_mask[lo..hi]) {
        if keep {
            max = max.max(w);
        }
    }
    if max == f32::NEG_INFINITY {
        row.fill(1.0 / l as f32);
        return true;
    }
    let visible = &mut row[lo..hi];
    visible.iter_mut().for_each(|w| *w -= max);
    fastmath::exp_in_place(visible);
    let mut sum = 0f32;
    for (w, &keep) in visible.iter_mut().zip(&key_mask[lo..hi]) {
        if !keep {
            *w = 0.0;
        }
        sum += *w;
    }
    fastmath::scale_in_place(visible, 1.0 / sum);
    row[..lo].fill(0.0);
    row[hi..].fill(0.0);
    false
}

/// Softmax over the last axis of raw logits [.., L_q, L] after scale, softcap and mask (f32 out), in
/// candle ops (the path for other devices and dtypes): additive f32::MIN bias, as transformers builds it.
fn masked_softmax_fallback(logits: &Tensor, key_mask: &[bool], p: &CausalAttention) -> Result<Tensor> {
    let l = key_mask.len();
    let dims = logits.dims().to_vec();
    let rows = logits.elem_count() / (l * l);
    let bias: Vec<f32> = (0..l * l)
        .map(|ij| if key_mask[ij % l] && p.visible(ij / l, ij % l) { 0.0 } else { f32::MIN })
        .collect();
    let bias = Tensor::from_vec(bias, (l, l), &Device::Cpu)?.to_device(logits.device())?;
    let mut w = (logits.to_dtype(DType::F32)? * p.scale)?;
    if let Some(c) = p.softcap {
        w = ((w / c)?.tanh()? * c)?;
    }
    let w = w.reshape((rows, l, l))?.broadcast_add(&bias)?;
    let e = w.broadcast_sub(&w.max_keepdim(D::Minus1)?)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?.reshape(dims)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequence_too_long_for_its_logits_is_an_error_not_an_abort() -> Result<()> {
        // L = 2²⁰: q, k, v are 4 MiB each, but the [2, H, L, L] f32 logits would be 8 TiB.
        let l = 1 << 20;
        let q = Tensor::zeros((1, 1, l, 1), DType::F32, &Device::Cpu)?;
        let p = CausalAttention { scale: 1.0, softcap: None, window: None };
        let e = causal_attention(&q, &q, &q, &vec![true; l], &p).unwrap_err();
        assert_eq!(e.code(), "SANA_INVALID_ARGUMENT");
        assert!(e.to_string().contains("attention logits"), "{e}");
        Ok(())
    }

    /// Naive f64 reference with repeat_kv and an explicit additive min-float mask.
    fn naive(q: &[f32], k: &[f32], v: &[f32], dims: (usize, usize, usize, usize, usize), mask: &[bool], p: &CausalAttention) -> Vec<f64> {
        let (b, h, hkv, l, d) = dims;
        let mut out = vec![0f64; b * h * l * d];
        for bi in 0..b {
            for hi in 0..h {
                let kh = hi / (h / hkv);
                for i in 0..l {
                    let qrow = &q[((bi * h + hi) * l + i) * d..][..d];
                    let w: Vec<f64> = (0..l)
                        .map(|j| {
                            let krow = &k[((bi * hkv + kh) * l + j) * d..][..d];
                            let mut s = qrow.iter().zip(krow).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * p.scale;
                            if let Some(c) = p.softcap {
                                s = (s / c).tanh() * c;
                            }
                            let ok = mask[bi * l + j] && j <= i && p.window.is_none_or(|wd| i < j + wd);
                            if ok { s } else { f32::MIN as f64 }
                        })
                        .collect();
                    let m = w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = w.iter().map(|x| if m == f32::MIN as f64 { 1.0 } else { (x - m).exp() }).collect();
                    let s: f64 = e.iter().sum();
                    for j in 0..l {
                        let vrow = &v[((bi * hkv + kh) * l + j) * d..][..d];
                        for c in 0..d {
                            out[((bi * h + hi) * l + i) * d + c] += e[j] / s * vrow[c] as f64;
                        }
                    }
                }
            }
        }
        out
    }

    fn data(n: usize, seed: usize, amp: f32) -> Vec<f32> {
        (0..n).map(|i| (((i * 7919 + seed * 104729) % 2003) as f32 / 1001.5 - 1.0) * amp).collect()
    }

    #[test]
    fn matches_naive_reference_with_window_softcap_gqa_and_padding() -> Result<()> {
        // l = 11: one query block; l = 100: three (48, 48, 4), the later ones past the window's start.
        for l in [11, 100] {
            matches_naive_reference_at(l)?;
        }
        Ok(())
    }

    fn matches_naive_reference_at(l: usize) -> Result<()> {
        let (b, h, hkv, d) = (2, 4, 2, 4);
        let (qd, kd, vd) = (data(b * h * l * d, 1, 3.0), data(b * hkv * l * d, 2, 3.0), data(b * hkv * l * d, 3, 1.0));
        // Batch 1 has 4 real tokens: with window 3, queries 7.. see no real key (uniform rows), with
        // window 30 queries 34..
        let mask: Vec<bool> = (0..b * l).map(|i| i < l || i - l < 4).collect();
        let dev = Device::Cpu;
        let q = Tensor::from_vec(qd.clone(), (b, h, l, d), &dev)?;
        let k = Tensor::from_vec(kd.clone(), (b, hkv, l, d), &dev)?;
        let v = Tensor::from_vec(vd.clone(), (b, hkv, l, d), &dev)?;
        for p in [
            CausalAttention { scale: 0.7, softcap: Some(5.0), window: Some(3) },
            CausalAttention { scale: 0.5, softcap: None, window: None },
            CausalAttention { scale: 0.6, softcap: Some(8.0), window: Some(30) },
        ] {
            let want = naive(&qd, &kd, &vd, (b, h, hkv, l, d), &mask, &p);
            let got = causal_attention(&q, &k, &v, &mask, &p)?.flatten_all()?.to_vec1::<f32>()?;
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(g.is_finite() && (*g as f64 - w).abs() < 1e-5, "{p:?} at {i}: {g} vs {w}");
            }
            // The candle-op fallback agrees with the CPU path's row softmax.
            let raw = data(3 * l * l, 4, 20.0);
            let mut a = raw.clone();
            a.chunks_exact_mut(l).enumerate().for_each(|(r, row)| {
                masked_softmax_row(row, r % l, &mask[l..], &p);
            });
            let logits = Tensor::from_vec(raw, (3, l, l), &dev)?;
            let f = masked_softmax_fallback(&logits, &mask[l..], &p)?.flatten_all()?.to_vec1::<f32>()?;
            for (x, y) in a.iter().zip(&f) {
                assert!((x - y).abs() < 1e-6, "{x} vs {y}");
            }
        }
        Ok(())
    }
}
