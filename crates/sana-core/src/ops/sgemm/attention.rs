//! One head of softmax attention over a block of query rows, on the calling thread, built on a
//! microkernel: `o[r, i] = Σ_j e[r, j] · v[j, i] / Σ_j e[r, j]`, `e[r, j] = exp(z[r, j] − max_j z[r, j])`,
//! `z[r, j] = q[r] · k[j] · scale + bias[j]`. The DiT's cross-attention (`ops/cross_attention.rs`) runs
//! one call per (batch item, row block, head).
//!
//! Why not two GEMM calls around a softmax, as before: at Sana's shapes (256 rows, 300 keys, head dim
//! 72) those products ran at about half the kernel's rate (45–51 GFLOP/s per thread against the AVX2
//! FMA ceiling of 93, Zen 3, `SANA_GEMM_STATS`). Each call packed its operands anew through the
//! general driver; the exponentials went through an L2-sized buffer and were re-read from it to be
//! packed; and the 300-deep p·v split into a 256- and a 44-deep slice (AVX2's KC) whose second pass
//! reloaded every output tile. Here K, V and q are packed once per call, and then for each group of
//! query rows: q·kᵀ into the group's logits, the exponentials (`fastmath::exp_row`) packed straight from
//! there into A panels, and p·v over the whole depth into the output, both products through the
//! driver's own tile loop (`run_block`, so each kernel keeps its tile order). Measured on the whole
//! op at 1024² CFG (`bench_cross_attention`, Zen 3, six interleaved rounds on a noisy machine): best of
//! 20 runs 30.1–36.5 ms against 35.4–41.4 ms, medians 35.5–45.7 against 38.1–46.5.

use super::driver::{pack, run_block, with_buf, Block, DstPtr, Line, MicroKernel, Side, View};
use super::{Elem, Strided};
use crate::ops::fastmath;
use std::cell::Cell;

thread_local! {
    // K, V and q packed (the kernel's type), and the f32 scratch (logits and exponentials): reused
    // across calls, as the GEMM's own packing buffers are.
    static PACKED: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
    static SCRATCH: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
}

/// The operands of [`attend`]: `q` rows × hd, `kt` hd × keys (K transposed: element (i, j) = k[j, i]),
/// `v` keys × hd, `o` rows × hd (written, not read), `bias` keys additive values or none.
pub(super) struct Head<'a, T> {
    pub q: View<'a, f32>,
    pub kt: View<'a, T>,
    pub v: View<'a, T>,
    pub o: *mut f32,
    pub os: Strided,
    pub bias: Option<&'a [f32]>,
}

/// Bytes of logits and exponentials one group of query rows holds (in L2 beside the packed K and V).
const GROUP_BYTES: usize = 128 << 10;

/// See the module doc. Safety: every view was bounds-checked for `[rows, keys, hd]`, `o` with `os` holds
/// rows × hd elements, and nothing else reads or writes them while this runs.
pub(super) unsafe fn attend<K: MicroKernel, T: Elem>(kern: &K, [rows, keys, hd]: [usize; 3], h: &Head<T>, scale: f32) {
    let (mr, nr) = (K::MR, K::NR);
    let (kp_hd, kp_keys) = (hd.next_multiple_of(K::KG), keys.next_multiple_of(K::KG));
    let (k_panels, v_panels, q_panels) = (keys.div_ceil(nr), hd.div_ceil(nr), rows.div_ceil(mr));
    let (k_len, v_len, q_len, p_len) = (k_panels * kp_hd * nr, v_panels * kp_keys * nr, q_panels * kp_hd * mr, kp_keys * mr);
    // Query panels per group: the group's logits and exponentials stay in L2 beside K and V, and each
    // product over the group runs in its kernel's tile order (`run_block`).
    let group = (GROUP_BYTES / (4 * mr * 2 * keys)).clamp(1, q_panels);
    let grows = group * mr;
    with_buf(&PACKED, k_len + v_len + q_len + group * p_len, |buf: &mut [K::P]| {
        let (kb, rest) = buf.split_at_mut(k_len);
        let (vb, rest) = rest.split_at_mut(v_len);
        let (qa, pa) = rest.split_at_mut(q_len);
        pack(kern, Side::B, h.kt.t(), keys, hd, kb, false);
        pack(kern, Side::B, h.v.t(), hd, keys, vb, false);
        pack(kern, Side::A, h.q, rows, hd, qa, false);
        with_buf(&SCRATCH, 2 * grows * keys + grows, |s: &mut [f32]| {
            let (logits, rest) = s.split_at_mut(grows * keys);
            let (e, sums) = rest.split_at_mut(grows * keys);
            let lp = DstPtr(logits.as_mut_ptr());
            for g0 in (0..q_panels).step_by(group) {
                let i0 = g0 * mr;
                let gr = (rows - i0).min(grows);
                // logits[r, j] = q[i0 + r] · k[j] for the group's rows.
                let blk = Block { rows: [0, gr], cols: [0, keys], panels: [0, k_panels] };
                run_block(kern, kp_hd, &qa[g0 * kp_hd * mr..], kb, lp, Strided::rows(0, keys), &blk, false);
                for r in 0..gr {
                    sums[r] = fastmath::exp_row(&logits[r * keys..(r + 1) * keys], &mut e[r * keys..(r + 1) * keys], scale, h.bias);
                }
                let gp = gr.div_ceil(mr);
                pack(kern, Side::A, View::new(e, Strided::rows(0, keys)), gr, keys, &mut pa[..gp * p_len], false);
                // o[i0 + r, ..] = e[r] · v, over the whole depth at once.
                let blk = Block { rows: [i0, i0 + gr], cols: [0, hd], panels: [0, v_panels] };
                run_block(kern, kp_keys, pa, vb, DstPtr(h.o), h.os, &blk, false);
                // Unnormalised exponentials: each row's sum divides its hd outputs, not its keys.
                for (r, sum) in sums[..gr].iter().enumerate() {
                    let (row, inv) = (h.o.add(h.os.offset + (i0 + r) * h.os.rs), 1.0 / sum);
                    if h.os.cs == 1 {
                        fastmath::scale_in_place(std::slice::from_raw_parts_mut(row, hd), inv);
                    } else {
                        (0..hd).for_each(|c| *row.add(c * h.os.cs) *= inv);
                    }
                }
            }
        });
    });
}

#[cfg(test)]
#[path = "attention_tests.rs"]
mod tests;
