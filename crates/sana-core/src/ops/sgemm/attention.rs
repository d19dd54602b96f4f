//! Multi-head softmax attention built on a microkernel: `o[r, i] = Σ_j e[r, j] · v[j, i] / Σ_j e[r, j]`,
//! `e[r, j] = exp(z[r, j] − max_j z[r, j])`, `z[r, j] = q[r] · k[j] · scale + bias[j]`, per head. The
//! DiT's cross-attention (`ops/cross_attention.rs`) runs all its heads through [`attend_all`]: each
//! head's K and V are packed once, then one rayon task per (batch item, block of query rows) runs
//! [`attend_packed`] head by head.
//!
//! Why not two GEMM calls around a softmax: at Sana's shapes (256 rows, 300 keys, head dim 72) those
//! ran at about half the kernel's rate: operands re-packed per call, the exponentials re-read from an
//! L2 buffer to be packed, the 300-deep p·v split into KC slices that reloaded every output tile.
//!
//! Why transposed: both products run with the queries as the B (NR-wide) operand. zᵀ = K·qᵀ has K's
//! 300 keys as A rows (25 full 12-row panels) and p·v becomes oᵀ = Vᵀ·eᵀ, whose 72 head dims are 6
//! full A panels: every tile is full, where head dim 72 as the NR side filled 3 panels of 32 at 75 %.
//! The logits of NR queries are then a keys × NR row-major block, which is exactly a B panel: on the
//! f32 kernels the first product writes it in place, the exponentials go down its columns
//! (`fastmath::exp_cols`, 16 queries a vector) and the second product reads it as packed, with no copy;
//! oᵀ is transposed into the output by 8×8 register transposes, each row scaled by 1/Σ e.
//! Measured on the whole op at 1024² CFG (`bench_cross_attention`, Zen 4, 2 threads, 3 interleaved
//! rounds, best of 20): 16.6–16.8 ms against 23.4–23.5 ms for the untransposed loop this replaces
//! (itself 19.4–19.8 with only the transposition, K/V still packed per task and the exponentials
//! copied into panels: that copy was 11 % of the op, a scalar transposing store 4.5 %).

use super::driver::{pack, run_block, split_parts, with_buf, Block, DstPtr, Line, MicroKernel, Packed, Side, Tile, View};
use super::{Elem, Strided};
use crate::ops::fastmath;
use rayon::prelude::*;
use std::cell::Cell;

thread_local! {
    // Every head's packed K and V (the kernel's type), q and the exponentials packed, and the f32
    // scratch: reused across calls, as the GEMM's own packing buffers are.
    static KV: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
    static PACKED: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
    static SCRATCH: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
}

/// Multi-head attention's operands (`sgemm::attention_heads`): `dims` = [B, N, H, S, hd]; q and the
/// output [B, N, H·hd] (heads merged), k and v [B, H, S, hd], all contiguous; bias [B, S] additive or
/// none; item b attends to its first `keys[b]` keys (1..=S).
pub(super) struct Heads<'a, T> {
    pub dims: [usize; 5],
    pub q: &'a [f32],
    pub k: &'a [T],
    pub v: &'a [T],
    pub bias: Option<&'a [f32]>,
    pub keys: &'a [usize],
    pub scale: f32,
}

/// Values one head's packed K and V take: K as A panels (keys × hd), then Vᵀ (hd × keys).
fn kv_len<K: MicroKernel>(keys: usize, hd: usize) -> usize {
    keys.div_ceil(K::MR) * hd.next_multiple_of(K::KG) * K::MR + hd.div_ceil(K::MR) * keys.next_multiple_of(K::KG) * K::MR
}

/// Pack one head's K (`kt` hd × keys: K transposed) and V (keys × hd) into `out` ([`kv_len`] values).
fn pack_kv<K: MicroKernel, T: Elem>(kern: &K, [keys, hd]: [usize; 2], kt: View<T>, v: View<T>, out: &mut [K::P]) {
    let (ka, va) = out.split_at_mut(keys.div_ceil(K::MR) * hd.next_multiple_of(K::KG) * K::MR);
    pack(kern, Side::A, kt.t(), keys, hd, ka, false);
    pack(kern, Side::A, v.t(), hd, keys, va, false);
}

/// Every head of every batch item: each (item, head)'s K and V packed once, the pairs in parallel;
/// then one rayon task per (item, block of `per` query rows) runs [`attend_packed`] head by head.
/// Safety: `a`'s slices hold their shapes and `out` holds B·N·H·hd values.
pub(super) unsafe fn attend_all<K: MicroKernel, T: Elem>(kern: &K, a: &Heads<T>, out: &mut [f32], per: usize) {
    let [b, n, h, s, hd] = a.dims;
    let c = h * hd;
    let lens: Vec<usize> = (0..b * h).map(|bh| kv_len::<K>(a.keys[bh / h], hd)).collect();
    with_buf(&KV, lens.iter().sum(), |kv: &mut [K::P]| {
        let (parts, offs) = split_parts(kv, &lens);
        parts.into_par_iter().enumerate().for_each(|(bh, part)| {
            let at = bh * s * hd;
            let (kt, v) = (View::new(a.k, Strided { offset: at, rs: 1, cs: hd }), View::new(a.v, Strided::rows(at, hd)));
            pack_kv(kern, [a.keys[bh / h], hd], kt, v, part);
        });
        let kv = &*kv;
        let blocks = out.par_chunks_mut(n * c).enumerate().flat_map(|(bi, ob)| ob.par_chunks_mut(per * c).enumerate().map(move |(blk, o)| (bi, blk, o)));
        blocks.for_each(|(bi, blk, o)| {
            let (r0, rows, keys) = (blk * per, o.len() / c, a.keys[bi]);
            let bias = a.bias.map(|v| &v[bi * s..bi * s + keys]);
            for hi in 0..h {
                let bh = bi * h + hi;
                // This head's columns of the block's q rows and output rows.
                let q = View::new(a.q, Strided { offset: (bi * n + r0) * c + hi * hd, rs: c, cs: 1 });
                let os = Strided { offset: hi * hd, rs: c, cs: 1 };
                // SAFETY: the views lie in q and o (checked by the caller); the task owns its rows of o.
                unsafe { attend_packed(kern, [rows, keys, hd], &kv[offs[bh]..offs[bh] + lens[bh]], q, (o.as_mut_ptr(), os), bias, a.scale) };
            }
        });
    });
}

/// Bytes of one group's scratch (the transposed logits, then exponentials, as packed B panels, and
/// the transposed output): in L2 beside the packed K and V.
const GROUP_BYTES: usize = 256 << 10;

/// See the module doc: `kv` one head's K and V packed by [`pack_kv`], `q` rows × hd, output rows × hd
/// through `o`'s strides (written, not read). Safety: the views were bounds-checked for
/// `[rows, keys, hd]`, `o` holds rows × hd elements through its strides, and nothing else reads or
/// writes them while this runs.
unsafe fn attend_packed<K: MicroKernel>(
    kern: &K,
    [rows, keys, hd]: [usize; 3],
    kv: &[K::P],
    q: View<f32>,
    (o, os): (*mut f32, Strided),
    bias: Option<&[f32]>,
    scale: f32,
) {
    let (mr, nr) = (K::MR, K::NR);
    let (kp_hd, kp_keys) = (hd.next_multiple_of(K::KG), keys.next_multiple_of(K::KG));
    let (ka, va) = kv.split_at(keys.div_ceil(mr) * kp_hd * mr);
    let q_panels = rows.div_ceil(nr);
    let q_len = q_panels * kp_hd * nr;
    let group = (GROUP_BYTES / (4 * nr * (2 * kp_keys + hd))).clamp(1, q_panels);
    let gw = group * nr;
    // f32 panels without depth padding take the logits in place (below); only the others need z.
    let in_place = K::KG == 1 && K::P::as_f32s(&mut []).is_some();
    let z_len = if in_place { 0 } else { keys * gw };
    with_buf(&PACKED, q_len + kp_keys * gw, |buf: &mut [K::P]| {
        let (qb, eb) = buf.split_at_mut(q_len);
        pack(kern, Side::B, q, rows, hd, qb, false);
        with_buf(&SCRATCH, z_len + hd * gw + gw, |s: &mut [f32]| {
            let (z, rest) = s.split_at_mut(z_len);
            let (ot, sums) = rest.split_at_mut(hd * gw);
            for g0 in (0..q_panels).step_by(group) {
                let (i0, gp) = (g0 * nr, group.min(q_panels - g0));
                let (gr, w) = ((rows - i0).min(gw), gp * nr);
                let qg = &qb[g0 * kp_hd * nr..];
                let eg = &mut eb[..gp * kp_keys * nr];
                // zᵀ[j, r] = k[j] · q[i0 + r] for the group's queries (a padded query column is 0), then
                // the exponentials down each column, packed as the next product's B panels.
                match K::P::as_f32s(eg).filter(|_| in_place) {
                    // f32 panels without depth padding: panel p (NR queries) is a keys × NR row-major
                    // block, so the product writes it in place (no scratch and copy: 11 % of the op).
                    Some(panels) => {
                        for (p, panel) in panels.chunks_exact_mut(keys * nr).enumerate() {
                            for (ip, j) in (0..keys).step_by(mr).enumerate() {
                                let t = Tile { c: panel.as_mut_ptr().add(j * nr), rs: nr, cs: 1, mr: mr.min(keys - j), nr, load: false };
                                kern.tile(kp_hd, ka.as_ptr().add(ip * kp_hd * mr), qg.as_ptr().add(p * kp_hd * nr), &t);
                            }
                            fastmath::exp_cols(panel, nr, scale, bias, &mut sums[p * nr..(p + 1) * nr]);
                        }
                    }
                    None => {
                        let blk = Block { rows: [0, keys], cols: [0, w], panels: [0, gp] };
                        run_block(kern, kp_hd, ka, qg, DstPtr(z.as_mut_ptr()), Strided::rows(0, w), &blk, false);
                        let z = &mut z[..keys * w];
                        fastmath::exp_cols(z, w, scale, bias, &mut sums[..w]);
                        pack(kern, Side::B, View::new(z, Strided { offset: 0, rs: 1, cs: w }), w, keys, eg, false);
                    }
                }
                // oᵀ[i, r] = Σ_j v[j, i] · e[j, r] over the whole depth: every tile full, where hd (72)
                // fills no NR-wide panel but 6 MR-high ones.
                let blk = Block { rows: [0, hd], cols: [0, w], panels: [0, gp] };
                run_block(kern, kp_keys, va, eb, DstPtr(ot.as_mut_ptr()), Strided::rows(0, w), &blk, false);
                store_scaled_t(&ot[..hd * w], w, [gr, hd], &mut sums[..gr], o.add(os.offset + i0 * os.rs), os);
            }
        });
    });
}

/// o[r, i] = ot[i, r] / sums[r] for r < rows, i < hd (`ot` row-major hd × w; o through `os`'s strides
/// from `o`): unnormalised exponentials, so each query's sum divides its hd outputs, not its keys.
/// Contiguous output rows take 8×8 transposes in registers (a scalar loop here was 4.5 % of the op).
/// `sums` is turned into the reciprocals. Safety: o holds rows × hd elements through os.
unsafe fn store_scaled_t(ot: &[f32], w: usize, [rows, hd]: [usize; 2], sums: &mut [f32], o: *mut f32, os: Strided) {
    sums.iter_mut().for_each(|s| *s = 1.0 / *s);
    let inv = &*sums;
    let (mut r8, mut i8) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if os.cs == 1 && super::f32k::cpu_has_avx2_fma() {
        (r8, i8) = (rows / 8 * 8, hd / 8 * 8);
        store_scaled_t_avx2(ot, w, [r8, i8], inv, o, os.rs);
    }
    // What the blocks of 8 left: the last rows (all columns), then the last columns of the others.
    for r in 0..rows {
        let from = if r < r8 { i8 } else { 0 };
        (from..hd).for_each(|i| *o.add(r * os.rs + i * os.cs) = ot[i * w + r] * inv[r]);
    }
}

/// [`store_scaled_t`]'s 8×8 blocks over `rows` × `hd` (multiples of 8), rows of o `rs` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn store_scaled_t_avx2(ot: &[f32], w: usize, [rows, hd]: [usize; 2], inv: &[f32], o: *mut f32, rs: usize) {
    use std::arch::x86_64::*;
    assert!(ot.len() >= hd * w && rows <= w && inv.len() >= rows);
    for r0 in (0..rows).step_by(8) {
        for i0 in (0..hd).step_by(8) {
            let t = super::f32k::transpose8(std::array::from_fn(|a| _mm256_loadu_ps(ot.as_ptr().add((i0 + a) * w + r0))));
            for (b, v) in t.iter().enumerate() {
                _mm256_storeu_ps(o.add((r0 + b) * rs + i0), _mm256_mul_ps(*v, _mm256_set1_ps(inv[r0 + b])));
            }
        }
    }
}

#[cfg(test)]
#[path = "attention_tests.rs"]
mod tests;
