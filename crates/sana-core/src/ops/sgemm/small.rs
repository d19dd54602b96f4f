//! Few rows with contiguous dot products (lhs rows and rhs columns contiguous: the Linear layout
//! y = x·Wᵀ with W [n, k] row-major), without packing. Packing B reads and writes every weight, which for
//! a handful of rows costs more than the product; here each weight is read once per 4 rows (once for
//! m ≤ 2), widened in registers. Modulation/timestep Linears (m = batch) and gemv-like products take this path.

use super::driver::{threads_for, DstPtr, Elem, View};
use super::Strided;
use rayon::prelude::*;

/// Up to this many rows the dot-product path beats packing (it re-reads B once per 4 rows).
pub(super) const SMALL_M: usize = 16;


/// True when [`gemm`] handles this product.
pub(super) fn applies<T: Copy>(m: usize, a: &View<f32>, b: &View<T>) -> bool {
    m <= SMALL_M && a.strides().1 == 1 && b.strides().0 == 1
}

/// dst = (accumulate ? dst : 0) + a · b by dot products; `simd` selects the AVX2 loop (the caller
/// checked that this CPU has avx2, fma and f16c). Views bounds-checked by the caller.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm<T: Elem>(simd: bool, mnk: [usize; 3], dst: &mut [f32], d: Strided, a: View<f32>, b: View<T>, accumulate: bool) {
    // Register blocks of R rows × C columns, 8 accumulators: a block never computes more than m rows.
    match mnk[0] {
        1 => blocks::<T, 1, 8>(simd, mnk, dst, d, a, b, accumulate),
        2 => blocks::<T, 2, 4>(simd, mnk, dst, d, a, b, accumulate),
        _ => blocks::<T, 4, 2>(simd, mnk, dst, d, a, b, accumulate),
    }
}

/// [`gemm`] in R × C blocks of dot products, column chunks split among rayon's threads.
#[allow(clippy::too_many_arguments)]
fn blocks<T: Elem, const R: usize, const C: usize>(simd: bool, [m, n, k]: [usize; 3], dst: &mut [f32], d: Strided, a: View<f32>, b: View<T>, accumulate: bool) {
    let c = DstPtr(dst.as_mut_ptr());
    let threads = threads_for(2 * m * n * k);
    let chunk = n.div_ceil(4 * threads).next_multiple_of(C);
    let task = |j0: usize| {
        for j in (j0..n.min(j0 + chunk)).step_by(C) {
            for i in (0..m).step_by(R) {
                // SAFETY: rows i.. and columns j.. are clamped into the m × n × k shape the caller checked;
                // a short block repeats its last row/column and drops those results.
                unsafe {
                    let rows: [*const f32; R] = std::array::from_fn(|r| a.ptr((i + r).min(m - 1), 0));
                    let cols: [*const T; C] = std::array::from_fn(|q| b.ptr(0, (j + q).min(n - 1)));
                    let v = dots(simd, rows, cols, k);
                    for (r, vr) in v.iter().enumerate().take(m - i) {
                        for (q, &x) in vr.iter().enumerate().take(n - j) {
                            let o = c.get().add(d.offset + (i + r) * d.rs + (j + q) * d.cs);
                            *o = if accumulate { *o + x } else { x };
                        }
                    }
                }
            }
        }
    };
    if threads == 1 {
        (0..n).step_by(chunk).for_each(task);
    } else {
        (0..n).into_par_iter().step_by(chunk).for_each(task);
    }
}

/// The R × C dot products of `rows` with `cols` over k contiguous values. Safety: k values readable at
/// each pointer; with `simd`, the CPU has avx2, fma and f16c.
unsafe fn dots<T: Elem, const R: usize, const C: usize>(simd: bool, rows: [*const f32; R], cols: [*const T; C], k: usize) -> [[f32; C]; R] {
    #[cfg(target_arch = "x86_64")]
    if simd {
        return dots_avx2(rows, cols, k);
    }
    let _ = simd;
    dots_tail(rows, cols, 0, k, [[0.0; C]; R])
}

/// `acc` plus the dot products over p in p0..k, in plain Rust.
unsafe fn dots_tail<T: Elem, const R: usize, const C: usize>(rows: [*const f32; R], cols: [*const T; C], p0: usize, k: usize, mut acc: [[f32; C]; R]) -> [[f32; C]; R] {
    for p in p0..k {
        let bv: [f32; C] = std::array::from_fn(|q| (*cols[q].add(p)).to_f32());
        for (r, ar) in acc.iter_mut().enumerate() {
            let x = *rows[r].add(p);
            for (q, v) in ar.iter_mut().enumerate() {
                *v += x * bv[q];
            }
        }
    }
    acc
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dots_avx2<T: Elem, const R: usize, const C: usize>(rows: [*const f32; R], cols: [*const T; C], k: usize) -> [[f32; C]; R] {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let k8 = k / 8 * 8;
    for p in (0..k8).step_by(8) {
        let bv: [__m256; C] = std::array::from_fn(|q| T::load8(cols[q].add(p)));
        for (r, ar) in acc.iter_mut().enumerate() {
            let av = _mm256_loadu_ps(rows[r].add(p));
            for (q, v) in ar.iter_mut().enumerate() {
                *v = _mm256_fmadd_ps(av, bv[q], *v);
            }
        }
    }
    let sums = acc.map(|ar| {
        ar.map(|v| {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
        })
    });
    dots_tail(rows, cols, k8, k, sums)
}
