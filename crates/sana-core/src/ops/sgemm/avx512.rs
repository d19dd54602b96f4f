//! The AVX-512 f32 kernel: 12×32 with 24 zmm accumulators (of AVX-512's 32 registers; 2 more hold the B
//! row, 1 the broadcast A value). Per k step it loads 2 B vectors and 12 A values for 24 FMAs, each
//! 16 lanes wide: twice the multiply-adds per instruction of the 6×16 AVX2 kernel, with fewer loads per
//! FMA. A half-precision rhs arrives here already widened, as for the AVX2 kernel (whose packers this one
//! shares: every AVX-512 CPU has AVX2).

use super::driver::{gemm, store_tile, Elem, MicroKernel, Side, Tile, View};
use super::{f32k, small, Strided};

const MR: usize = 12;
const NR: usize = 32;

/// True when this CPU can run [`Avx512`] (and the AVX2 packers and small-m path it shares).
pub(super) fn cpu_has_avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avx512f") && f32k::cpu_has_avx2_fma();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The AVX-512 kernel. Construct only where [`cpu_has_avx512f`] holds.
pub(super) struct Avx512(());

impl Avx512 {
    /// The kernel, where this CPU can run it.
    pub fn new() -> Option<Self> {
        cpu_has_avx512f().then_some(Avx512(()))
    }
}

impl MicroKernel for Avx512 {
    type P = f32;
    const MR: usize = MR;
    const NR: usize = NR;
    const KG: usize = 1;
    // Deeper slices than the AVX2 kernel's (measured on the DiT's shapes, 2 threads: KC 256 → 576 took the
    // 2048×1152←2880 product from ≈ 300 to ≈ 350 GFLOP/s): each tile's dst load/store and each slice's
    // pack barrier are amortised over more FMAs, and the B panel (72 KiB) streams from L2 as fast as the
    // kernel needs it. An A block is 648 KiB, a B block 6.75 MiB. A block plus a B run (below) is ≈ 1 MiB,
    // all of a Zen 4 core's L2, so A panels may come from L3 between runs; blocks that fit (MC 144 or 192,
    // runs of 256 KiB) ran slower, not faster: bench_dit 600m at 32², 5 interleaved rounds on a quiet
    // machine (12-04), medians 12.23 s here against 12.89 s (MC 144) and 12.64 s (MC 192, 256 KiB runs).
    const KC: usize = 576;
    const MC: usize = 288;
    const NC: usize = 3072;
    // Each A panel (27 KiB) meets 5 B panels (72 KiB each) in a row, streamed from L2 (measured,
    // interleaved, best of 8, 2 threads: the DiT's 2048-row products 5–20 % faster than with each B panel
    // meeting every A panel). Measured, not derived: by an LRU count neither panel stays in L1 (32 KiB on
    // Zen 4, 48 KiB on recent Intel) from one tile to the next (99 KiB pass through per tile), and the
    // depth that would keep one there (KC 192–256: A + B ≤ 44 KiB, the B panel held while the A panels
    // stream) ran slower, 73–76 against 80–105 GFLOP/s on one thread (12-03, 5 interleaved rounds).
    const B_RUN_BYTES: usize = 384 << 10;

    unsafe fn tile(&self, kc: usize, a: *const f32, b: *const f32, t: &Tile) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an Avx512 exists only where the CPU has avx512f.
        tile_avx512(kc, a, b, t);
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("an Avx512 kernel exists only on x86_64 ({kc}, {a:?}, {b:?}, {:?})", t.c);
    }

    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    unsafe fn pack_contiguous<T: Elem>(&self, side: Side, src: *const T, stride: usize, kc: usize, out: &mut [f32]) -> bool {
        // SAFETY: as the trait's; an Avx512 exists only where the CPU has avx2, fma and f16c too.
        #[cfg(target_arch = "x86_64")]
        match side {
            Side::B => f32k::pack_b_cols_avx2::<T, NR>(src, stride, kc, out.as_mut_ptr()),
            Side::A => {
                const { assert!(MR == 12, "the A packer writes 12-row panels") };
                f32k::pack_a_rows12_avx2(src, stride, kc, out.as_mut_ptr())
            }
        }
        cfg!(target_arch = "x86_64")
    }
}

/// dst = (accumulate ? dst : 0) + a · b on the AVX-512 kernel, where this CPU has it (else AVX2's).
pub(super) fn sgemm_avx512<T: Elem>(mnk: [usize; 3], dst: &mut [f32], d: Strided, a: View<f32>, b: View<T>, accumulate: bool) {
    match Avx512::new() {
        // A few rows: dot products from the unpacked weights (memory-bound, AVX2 is enough).
        Some(_) if small::applies(mnk[0], &a, &b) => small::gemm(true, mnk, dst, d, a, b, accumulate),
        Some(kern) => gemm(&kern, mnk, dst, d, a, b, accumulate),
        None => f32k::sgemm_avx2(mnk, dst, d, a, b, accumulate),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512(kc: usize, a: *const f32, b: *const f32, t: &Tile) {
    use std::arch::x86_64::*;
    prefetch_dst(t);
    let mut c = [[_mm512_setzero_ps(); 2]; MR];
    let step = |c: &mut [[__m512; 2]; MR], p: usize| {
        let (ap, bp) = (a.add(p * MR), b.add(p * NR));
        let (b0, b1) = (_mm512_loadu_ps(bp), _mm512_loadu_ps(bp.add(16)));
        for (i, ci) in c.iter_mut().enumerate() {
            let ai = _mm512_set1_ps(*ap.add(i));
            ci[0] = _mm512_fmadd_ps(ai, b0, ci[0]);
            ci[1] = _mm512_fmadd_ps(ai, b1, ci[1]);
        }
    };
    // Four k steps per trip; the B panel (4·NR bytes a step, streamed from L2, see
    // B_RUN_BYTES) is fetched 8 steps ahead, one line per 64 bytes this trip consumes. At 2048 ×
    // 5760 ← 1152 this runs at 215–221 of the 231 GFLOP/s FMA ceiling on 2 threads; fetching 16 steps
    // ahead, with the NTA hint, or not at all measured the same within noise (12-04, 3 rounds).
    let k4 = kc / 4 * 4;
    for p in (0..k4).step_by(4) {
        let ahead = b.wrapping_add((p + 8) * NR).cast::<i8>();
        for line in (0..4 * 4 * NR).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line));
        }
        step(&mut c, p);
        step(&mut c, p + 1);
        step(&mut c, p + 2);
        step(&mut c, p + 3);
    }
    for p in k4..kc {
        step(&mut c, p);
    }
    store_acc(&c, t);
}

/// Fetch tile `t`'s dst lines while the k loop runs (dst is revisited once per KC slice): a row of 32 f32
/// is two lines when contiguous. Inlined into the tile functions (which enable avx512f); shared by the
/// bf16-dot kernel's 12×32 tile. Safety: as [`MicroKernel::tile`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn prefetch_dst(t: &Tile) {
    use std::arch::x86_64::*;
    for i in 0..t.mr {
        let row = t.c.add(i * t.rs).cast::<i8>();
        _mm_prefetch::<_MM_HINT_T0>(row);
        _mm_prefetch::<_MM_HINT_T0>(row.add(124.min(4 * (t.nr - 1) * t.cs)));
    }
}

/// Write (or, with `t.load`, add) a 12×32 accumulator tile into `t`'s elements: contiguous rows straight
/// from the registers, other layouts through [`store_tile`]. Only ever inlined into functions that
/// enable avx512f. Safety: as [`MicroKernel::tile`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn store_acc(c: &[[std::arch::x86_64::__m512; 2]; MR], t: &Tile) {
    use std::arch::x86_64::*;
    if t.cs == 1 {
        // Contiguous rows: straight from the registers, the columns past t.nr masked off.
        let lanes = |from: usize| -> __mmask16 { if t.nr >= from + 16 { 0xFFFF } else { ((1u32 << t.nr.saturating_sub(from)) - 1) as u16 } };
        let (m0, m1) = (lanes(0), lanes(16));
        for (i, ci) in c.iter().enumerate().take(t.mr) {
            // Masked-off lanes are neither read nor written (nor fault), so `row + 16` may lie past dst.
            let (row, high) = (t.c.add(i * t.rs), t.c.add(i * t.rs).wrapping_add(16));
            let (mut v0, mut v1) = (ci[0], ci[1]);
            if t.load {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, row));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, high));
            }
            _mm512_mask_storeu_ps(row, m0, v0);
            _mm512_mask_storeu_ps(high, m1, v1);
        }
    } else {
        let mut acc = [0f32; MR * NR];
        for (i, ci) in c.iter().enumerate() {
            _mm512_storeu_ps(acc.as_mut_ptr().add(i * NR), ci[0]);
            _mm512_storeu_ps(acc.as_mut_ptr().add(i * NR + 16), ci[1]);
        }
        store_tile(&acc, NR, t);
    }
}
