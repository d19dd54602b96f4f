//! The f32 microkernels: 6×16 with AVX2 + FMA (12 ymm accumulators, the classic Haswell/Zen shape), and
//! the same shape in plain Rust for CPUs without them. A half-precision rhs arrives here already widened.

use super::driver::{gemm, store_tile, Elem, MicroKernel, Side, Tile, View};
use super::{small, Strided};

const MR: usize = 6;
const NR: usize = 16;
// A B panel (KC × 16 f32 = 16 KiB) stays in a 32 KiB L1d, an A block (MC × KC = 144 KiB) in L2, a B block
// (KC × NC = 3 MiB) in L3.
const KC: usize = 256;
const MC: usize = 144;
const NC: usize = 3072;

/// The blocking the two f32 kernels share (items of their `MicroKernel` impls).
macro_rules! f32_blocking {
    () => {
        type P = f32;
        const MR: usize = MR;
        const NR: usize = NR;
        const KG: usize = 1;
        const KC: usize = KC;
        const MC: usize = MC;
        const NC: usize = NC;
    };
}

/// The portable kernel.
pub(super) struct Scalar;

impl MicroKernel for Scalar {
    f32_blocking!();

    unsafe fn tile(&self, kc: usize, a: *const f32, b: *const f32, t: &Tile) {
        let (a, b) = (std::slice::from_raw_parts(a, kc * MR), std::slice::from_raw_parts(b, kc * NR));
        let mut acc = [0f32; MR * NR];
        for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
            for (i, &ai) in ap.iter().enumerate() {
                for (c, &bj) in acc[i * NR..(i + 1) * NR].iter_mut().zip(bp) {
                    *c += ai * bj;
                }
            }
        }
        store_tile(&acc, NR, t);
    }
}

pub(super) fn sgemm_scalar<T: Elem>(mnk: [usize; 3], dst: &mut [f32], d: Strided, a: View<f32>, b: View<T>, accumulate: bool) {
    if small::applies(mnk[0], &a, &b) {
        small::gemm(false, mnk, dst, d, a, b, accumulate);
    } else {
        gemm(&Scalar, mnk, dst, d, a, b, accumulate);
    }
}

/// True when this CPU can run [`Avx2`] (and the small-m path's f16c widening, which every AVX2 CPU has).
pub(super) fn cpu_has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The AVX2 + FMA kernel. Construct only where [`cpu_has_avx2_fma`] holds.
pub(super) struct Avx2(());

impl Avx2 {
    /// The kernel, where this CPU can run it.
    pub fn new() -> Option<Self> {
        cpu_has_avx2_fma().then_some(Avx2(()))
    }
}

impl MicroKernel for Avx2 {
    f32_blocking!();

    unsafe fn tile(&self, kc: usize, a: *const f32, b: *const f32, t: &Tile) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an Avx2 exists only where the CPU has avx2 and fma.
        tile_avx2(kc, a, b, t);
        #[cfg(not(target_arch = "x86_64"))]
        Scalar.tile(kc, a, b, t);
    }

    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    unsafe fn pack_contiguous<T: Elem>(&self, side: Side, src: *const T, stride: usize, kc: usize, out: &mut [f32]) -> bool {
        // SAFETY: as the trait's; an Avx2 exists only where the CPU has avx2, fma and f16c.
        #[cfg(target_arch = "x86_64")]
        match side {
            Side::B => pack_b_cols_avx2::<T, NR>(src, stride, kc, out.as_mut_ptr()),
            Side::A => pack_a_rows_avx2(src, stride, kc, out.as_mut_ptr()),
        }
        cfg!(target_arch = "x86_64")
    }
}

/// The 8×8 transpose of `r` (row w of the result holds element w of each input row). Safety: only
/// inlined into functions that enable avx2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn transpose8(r: [std::arch::x86_64::__m256; 8]) -> [std::arch::x86_64::__m256; 8] {
    use std::arch::x86_64::*;
    let t0 = [_mm256_unpacklo_ps(r[0], r[1]), _mm256_unpackhi_ps(r[0], r[1]), _mm256_unpacklo_ps(r[2], r[3]), _mm256_unpackhi_ps(r[2], r[3])];
    let t1 = [_mm256_unpacklo_ps(r[4], r[5]), _mm256_unpackhi_ps(r[4], r[5]), _mm256_unpacklo_ps(r[6], r[7]), _mm256_unpackhi_ps(r[6], r[7])];
    let s = |t: [__m256; 4]| {
        [
            _mm256_shuffle_ps::<0x44>(t[0], t[2]),
            _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
            _mm256_shuffle_ps::<0x44>(t[1], t[3]),
            _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        ]
    };
    let (s0, s1) = (s(t0), s(t1));
    // Value q of each row: low lanes, then high lanes.
    std::array::from_fn(|q| if q < 4 { _mm256_permute2f128_ps::<0x20>(s0[q], s1[q]) } else { _mm256_permute2f128_ps::<0x31>(s0[q - 4], s1[q - 4]) })
}

/// A B panel from NR contiguous columns (NR a multiple of 8): 8×8 blocks transposed in registers (one
/// store per 8 values, where the generic loop stores each value to a different cache line), widened as
/// they are loaded. Shared with the AVX-512 kernel (NR = 32), whose CPUs all have AVX2.
/// Safety: NR columns of kc values readable at `src` (column stride `cs`), kc·NR writable at `out`;
/// only on CPUs with avx2 and f16c.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn pack_b_cols_avx2<T: Elem, const NR: usize>(src: *const T, cs: usize, kc: usize, out: *mut f32) {
    use std::arch::x86_64::*;
    let k8 = kc / 8 * 8;
    for p0 in (0..k8).step_by(8) {
        for group in 0..NR / 8 {
            let t = transpose8(std::array::from_fn(|w| T::load8(src.add((group * 8 + w) * cs + p0))));
            for (q, tq) in t.iter().enumerate() {
                _mm256_storeu_ps(out.add((p0 + q) * NR + group * 8), *tq);
            }
        }
    }
    for p in k8..kc {
        for w in 0..NR {
            *out.add(p * NR + w) = (*src.add(w * cs + p)).to_f32();
        }
    }
}

/// An A panel from 6 rows that are contiguous along k (the lhs of a Linear, or a weight when a
/// column-major product is computed transposed): 6 rows (and 2 of zeros) transposed 8 values at a time.
/// Each 8-lane store overlaps the next depth step's first 2 values, which a later store (or the scalar
/// tail) overwrites. Only the panel's very last step is stored as 4 + 2 lanes, so nothing past the panel
/// is touched, and without a masked store: microcoded on AMD. (A small gain: on Zen 3 the masked store
/// every 8th step was ≈ 3 % of this packer's samples, which mostly wait on the row loads.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_a_rows_avx2<T: Elem>(src: *const T, rs: usize, kc: usize, out: *mut f32) {
    use std::arch::x86_64::*;
    let k8 = kc / 8 * 8;
    for p0 in (0..k8).step_by(8) {
        let t = transpose8(std::array::from_fn(|w| if w < MR { T::load8(src.add(w * rs + p0)) } else { _mm256_setzero_ps() }));
        for (q, tq) in t.iter().enumerate() {
            let o = out.add((p0 + q) * MR);
            if p0 + q + 1 < kc {
                _mm256_storeu_ps(o, *tq);
            } else {
                _mm_storeu_ps(o, _mm256_castps256_ps128(*tq));
                _mm_storel_epi64(o.add(4).cast(), _mm_castps_si128(_mm256_extractf128_ps::<1>(*tq)));
            }
        }
    }
    for p in k8..kc {
        for w in 0..MR {
            *out.add(p * MR + w) = (*src.add(w * rs + p)).to_f32();
        }
    }
}

/// An A panel from 12 rows contiguous along k (the AVX-512 kernel's MR): rows 0–7 and rows 8–11 (with
/// 4 zero rows) transposed 8 values at a time; the second block's 4 real lanes go out as one 16-byte
/// store (not a masked one: microcoded on AMD). Safety: 12 rows of kc values readable at `src` (row
/// stride `rs`), kc·12 writable at `out`; only on CPUs with avx2 and f16c.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn pack_a_rows12_avx2<T: Elem>(src: *const T, rs: usize, kc: usize, out: *mut f32) {
    use std::arch::x86_64::*;
    const R: usize = 12;
    let k8 = kc / 8 * 8;
    for p0 in (0..k8).step_by(8) {
        let lo = transpose8(std::array::from_fn(|w| T::load8(src.add(w * rs + p0))));
        let hi = transpose8(std::array::from_fn(|w| if w < R - 8 { T::load8(src.add((8 + w) * rs + p0)) } else { _mm256_setzero_ps() }));
        for q in 0..8 {
            let o = out.add((p0 + q) * R);
            _mm256_storeu_ps(o, lo[q]);
            _mm_storeu_ps(o.add(8), _mm256_castps256_ps128(hi[q]));
        }
    }
    for p in k8..kc {
        for w in 0..R {
            *out.add(p * R + w) = (*src.add(w * rs + p)).to_f32();
        }
    }
}

/// dst = (accumulate ? dst : 0) + a · b on the AVX2 kernel (the caller checked that the CPU has it).
pub(super) fn sgemm_avx2<T: Elem>(mnk: [usize; 3], dst: &mut [f32], d: Strided, a: View<f32>, b: View<T>, accumulate: bool) {
    match Avx2::new() {
        Some(_) if small::applies(mnk[0], &a, &b) => small::gemm(true, mnk, dst, d, a, b, accumulate),
        Some(kern) => gemm(&kern, mnk, dst, d, a, b, accumulate),
        None => sgemm_scalar(mnk, dst, d, a, b, accumulate),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(kc: usize, a: *const f32, b: *const f32, t: &Tile) {
    use std::arch::x86_64::*;
    // dst is far larger than L2 and revisited once per KC slice: fetch the tile's lines now, so they
    // arrive while the k loop runs instead of stalling the final load-add-store.
    for i in 0..t.mr {
        let row = t.c.add(i * t.rs).cast::<i8>();
        _mm_prefetch::<_MM_HINT_T0>(row);
        // The row's last element or 60 bytes on, whichever is nearer: inside the tile row's span.
        _mm_prefetch::<_MM_HINT_T0>(row.add(60.min(4 * (t.nr - 1) * t.cs)));
    }
    let mut c = [[_mm256_setzero_ps(); 2]; MR];
    let step = |c: &mut [[__m256; 2]; MR], p: usize| {
        let (ap, bp) = (a.add(p * MR), b.add(p * NR));
        let (b0, b1) = (_mm256_loadu_ps(bp), _mm256_loadu_ps(bp.add(8)));
        for (i, ci) in c.iter_mut().enumerate() {
            let ai = _mm256_set1_ps(*ap.add(i));
            ci[0] = _mm256_fmadd_ps(ai, b0, ci[0]);
            ci[1] = _mm256_fmadd_ps(ai, b1, ci[1]);
        }
    };
    // Four k steps per loop trip (fewer loop-counter uops per FMA), with the A panel fetched 8 steps
    // ahead (it streams from L2; the B panel stays in L1).
    let k4 = kc / 4 * 4;
    for p in (0..k4).step_by(4) {
        _mm_prefetch::<_MM_HINT_T0>(a.add((p + 8) * MR).cast::<i8>());
        step(&mut c, p);
        step(&mut c, p + 1);
        step(&mut c, p + 2);
        step(&mut c, p + 3);
    }
    for p in k4..kc {
        step(&mut c, p);
    }
    if t.mr == MR && t.nr == NR && t.cs == 1 {
        // A full tile with contiguous rows: straight from the registers.
        for (i, ci) in c.iter().enumerate() {
            let row = t.c.add(i * t.rs);
            let (mut v0, mut v1) = (ci[0], ci[1]);
            if t.load {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(row));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(row.add(8)));
            }
            _mm256_storeu_ps(row, v0);
            _mm256_storeu_ps(row.add(8), v1);
        }
    } else {
        let mut acc = [0f32; MR * NR];
        for (i, ci) in c.iter().enumerate() {
            _mm256_storeu_ps(acc.as_mut_ptr().add(i * NR), ci[0]);
            _mm256_storeu_ps(acc.as_mut_ptr().add(i * NR + 8), ci[1]);
        }
        store_tile(&acc, NR, t);
    }
}
