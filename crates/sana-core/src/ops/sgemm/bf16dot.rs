//! The opt-in avx512_bf16 kernel (`SANA_CPU_BF16_DOT=1`, bf16 rhs only): A rounded to bf16 while packed,
//! both operands packed as k-pairs, and `vdpbf16ps` (`_mm512_dpbf16_ps`) adding each pair's two products
//! into f32 accumulators. 12×32 tile: 24 zmm accumulators + 2 B vectors + 1 broadcast A pair.
//!
//! The kernel body is generic over the instruction ([`Bf16Dot`]): [`Avx512`] is the intrinsic, and
//! [`Emulated`] does exactly what the instruction does to each lane in scalar code, so the packing,
//! blocking and edge handling of this kernel are tested on any CPU (only `Avx512` needs the hardware);
//! `Emulated` exists in test builds only.

use super::driver::{gemm, store_tile, Elem, MicroKernel, Tile, View};
use super::Strided;
use half::bf16;

const MR: usize = 12;
const NR: usize = 32;
/// bf16 values per f32 lane: vdpbf16ps multiplies k-pairs.
const KG: usize = 2;

/// One vdpbf16ps and the loads around it, on 16 f32 lanes.
pub(super) trait Bf16Dot: Sync {
    /// 16 f32 accumulators.
    type Acc: Copy;
    /// 16 bf16 pairs.
    type Pairs: Copy;
    fn zero() -> Self::Acc;
    /// 16 consecutive pairs (32 bf16) from `p`. Safety: 32 values readable at p.
    unsafe fn load(p: *const bf16) -> Self::Pairs;
    /// The pair at `p` in all 16 lanes. Safety: 2 values readable at p.
    unsafe fn splat(p: *const bf16) -> Self::Pairs;
    /// Lane j: acc[j] + a[2j+1]·b[2j+1] + a[2j]·b[2j], as vdpbf16ps computes it.
    unsafe fn dot(acc: Self::Acc, a: Self::Pairs, b: Self::Pairs) -> Self::Acc;
    /// Safety: 16 values writable at p.
    unsafe fn store(acc: Self::Acc, p: *mut f32);
    /// [`tile_body`] on this instruction, compiled with the CPU features it needs.
    /// Safety: as [`MicroKernel::tile`].
    unsafe fn tile(kc: usize, a: *const bf16, b: *const bf16, t: &Tile);
}

/// vdpbf16ps in scalar code. Per lane the instruction adds the odd pair's product, then the even one's,
/// each a fused multiply-add rounded to nearest even, with bf16 denormal inputs read as zero and denormal
/// results flushed to zero (Intel SDM, VDPBF16PS; MXCSR is not consulted).
#[cfg(test)]
pub(super) struct Emulated;

#[cfg(test)]
fn daz(x: bf16) -> f32 {
    let v = x.to_f32();
    if v.is_subnormal() { 0.0f32.copysign(v) } else { v }
}

#[cfg(test)]
fn ftz(x: f32) -> f32 {
    if x.is_subnormal() { 0.0f32.copysign(x) } else { x }
}

#[cfg(test)]
impl Bf16Dot for Emulated {
    type Acc = [f32; 16];
    type Pairs = [bf16; 32];

    fn zero() -> Self::Acc {
        [0.0; 16]
    }

    unsafe fn load(p: *const bf16) -> Self::Pairs {
        *p.cast::<[bf16; 32]>()
    }

    unsafe fn splat(p: *const bf16) -> Self::Pairs {
        let (lo, hi) = (*p, *p.add(1));
        std::array::from_fn(|i| if i % 2 == 0 { lo } else { hi })
    }

    unsafe fn dot(acc: Self::Acc, a: Self::Pairs, b: Self::Pairs) -> Self::Acc {
        std::array::from_fn(|j| {
            let odd = ftz(daz(a[2 * j + 1]).mul_add(daz(b[2 * j + 1]), acc[j]));
            ftz(daz(a[2 * j]).mul_add(daz(b[2 * j]), odd))
        })
    }

    unsafe fn store(acc: Self::Acc, p: *mut f32) {
        p.cast::<[f32; 16]>().write_unaligned(acc);
    }

    unsafe fn tile(kc: usize, a: *const bf16, b: *const bf16, t: &Tile) {
        tile_body::<Emulated>(kc, a, b, t)
    }
}

/// The instruction itself. Its methods are only ever inlined into [`tile_avx512`], which enables the
/// CPU features; construct only where [`cpu_has_avx512_bf16`] holds.
#[cfg(target_arch = "x86_64")]
pub(super) struct Avx512(());

#[cfg(target_arch = "x86_64")]
impl Bf16Dot for Avx512 {
    type Acc = std::arch::x86_64::__m512;
    type Pairs = std::arch::x86_64::__m512bh;

    #[inline(always)]
    fn zero() -> Self::Acc {
        // SAFETY: setzero needs only avx512f, which the enclosing tile_avx512 enables.
        unsafe { std::arch::x86_64::_mm512_setzero_ps() }
    }

    #[inline(always)]
    unsafe fn load(p: *const bf16) -> Self::Pairs {
        std::mem::transmute(std::arch::x86_64::_mm512_loadu_ps(p.cast::<f32>()))
    }

    #[inline(always)]
    unsafe fn splat(p: *const bf16) -> Self::Pairs {
        std::mem::transmute(std::arch::x86_64::_mm512_set1_epi32(p.cast::<i32>().read_unaligned()))
    }

    #[inline(always)]
    unsafe fn dot(acc: Self::Acc, a: Self::Pairs, b: Self::Pairs) -> Self::Acc {
        std::arch::x86_64::_mm512_dpbf16_ps(acc, a, b)
    }

    #[inline(always)]
    unsafe fn store(acc: Self::Acc, p: *mut f32) {
        std::arch::x86_64::_mm512_storeu_ps(p, acc)
    }

    unsafe fn tile(kc: usize, a: *const bf16, b: *const bf16, t: &Tile) {
        // SAFETY: an Avx512 exists only where the CPU has avx512f and avx512bf16.
        tile_avx512(kc, a, b, t)
    }
}

/// True when this CPU can run [`Avx512`].
pub(super) fn cpu_has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The 12×32 tile over `kc / 2` pairs, for any implementation of the instruction.
#[inline(always)]
unsafe fn tile_body<D: Bf16Dot>(kc: usize, a: *const bf16, b: *const bf16, t: &Tile) {
    let mut c = [[D::zero(); 2]; MR];
    for g in 0..kc / KG {
        let (ag, bg) = (a.add(g * MR * KG), b.add(g * NR * KG));
        let (b0, b1) = (D::load(bg), D::load(bg.add(32)));
        for (i, ci) in c.iter_mut().enumerate() {
            let ai = D::splat(ag.add(i * KG));
            ci[0] = D::dot(ci[0], ai, b0);
            ci[1] = D::dot(ci[1], ai, b1);
        }
    }
    let mut acc = [0f32; MR * NR];
    for (i, ci) in c.iter().enumerate() {
        D::store(ci[0], acc.as_mut_ptr().add(i * NR));
        D::store(ci[1], acc.as_mut_ptr().add(i * NR + 16));
    }
    store_tile(&acc, NR, t);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile_avx512(kc: usize, a: *const bf16, b: *const bf16, t: &Tile) {
    tile_body::<Avx512>(kc, a, b, t)
}

/// The bf16-dot kernel on instruction `D`.
pub(super) struct DotKernel<D>(D);

impl<D: Bf16Dot> MicroKernel for DotKernel<D> {
    type P = bf16;
    const MR: usize = MR;
    const NR: usize = NR;
    const KG: usize = KG;
    // A B panel of 256 × 32 bf16 is 16 KiB; an A block of 144 × 256 bf16 72 KiB.
    const KC: usize = 256;
    const MC: usize = 144;
    const NC: usize = 3072;

    unsafe fn tile(&self, kc: usize, a: *const bf16, b: *const bf16, t: &Tile) {
        D::tile(kc, a, b, t)
    }
}

/// The kernel on the real instruction, where this CPU has it.
#[cfg(target_arch = "x86_64")]
pub(super) fn avx512() -> Option<DotKernel<Avx512>> {
    cpu_has_avx512_bf16().then_some(DotKernel(Avx512(())))
}

/// The kernel on the emulation (tests).
#[cfg(test)]
pub(super) fn emulated() -> DotKernel<Emulated> {
    DotKernel(Emulated)
}

/// dst = (accumulate ? dst : 0) + bf16(a) · b with vdpbf16ps (the caller checked that the CPU has it).
pub(super) fn sgemm_avx512<T: Elem>(mnk: [usize; 3], dst: &mut [f32], d: Strided, a: View<f32>, b: View<T>, accumulate: bool) {
    #[cfg(target_arch = "x86_64")]
    if let Some(kern) = avx512() {
        // A few rows stay on the dot-product path (in f32): packing costs more than the product there.
        if !super::small::applies(mnk[0], &a, &b) {
            return gemm(&kern, mnk, dst, d, a, b, accumulate);
        }
    }
    super::avx512::sgemm_avx512(mnk, dst, d, a, b, accumulate);
}
