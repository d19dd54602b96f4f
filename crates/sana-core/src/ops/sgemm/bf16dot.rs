//! The avx512_bf16 kernel (bf16 rhs only; the default on AMD, else `SANA_CPU_BF16_DOT=1`): A rounded to
//! bf16 while packed, both operands packed as k-pairs, and `vdpbf16ps` (`_mm512_dpbf16_ps`) adding each
//! pair's two products into f32 accumulators. 12×32 tile: 24 zmm accumulators + 2 B vectors + 1 broadcast A pair.
//!
//! The kernel body is generic over the instruction ([`Bf16Dot`]): [`Avx512`] is the intrinsic, and
//! [`Emulated`] does exactly what the instruction does to each lane in scalar code, so the packing,
//! blocking and edge handling of this kernel are tested on any CPU (only `Avx512` needs the hardware);
//! `Emulated` exists in test builds only.

use super::driver::{gemm, store_tile, Elem, MicroKernel, Side, Tile, View};
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
    /// Start fetching the cache line at `p` (a hint; none by default). Any address is safe.
    #[inline(always)]
    fn prefetch(_p: *const bf16) {}
    /// Start fetching the tile's dst lines (a hint; none by default). Safety: as [`MicroKernel::tile`].
    #[inline(always)]
    unsafe fn prefetch_dst(_t: &Tile) {}
    /// Write (or, with `t.load`, add) the accumulators into `t`: through a stack copy and
    /// [`store_tile`] by default. Safety: as [`MicroKernel::tile`].
    #[inline(always)]
    unsafe fn finish(c: &[[Self::Acc; 2]; MR], t: &Tile) {
        let mut acc = [0f32; MR * NR];
        for (i, ci) in c.iter().enumerate() {
            Self::store(ci[0], acc.as_mut_ptr().add(i * NR));
            Self::store(ci[1], acc.as_mut_ptr().add(i * NR + 16));
        }
        store_tile(&acc, NR, t);
    }
    /// As [`MicroKernel::pack_contiguous`]: false (the generic loop) by default.
    #[inline(always)]
    unsafe fn pack_contiguous<T: Elem>(_side: Side, _src: *const T, _stride: usize, _kc: usize, _out: &mut [bf16]) -> bool {
        false
    }
    /// As [`MicroKernel::pack_across`]: false (the generic loop) by default.
    #[inline(always)]
    unsafe fn pack_across<T: Elem>(_side: Side, _src: *const T, _stride: usize, _kc: usize, _out: &mut [bf16]) -> bool {
        false
    }
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

    #[inline(always)]
    fn prefetch(p: *const bf16) {
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>()) }
    }

    #[inline(always)]
    unsafe fn prefetch_dst(t: &Tile) {
        super::avx512::prefetch_dst(t)
    }

    #[inline(always)]
    unsafe fn finish(c: &[[Self::Acc; 2]; MR], t: &Tile) {
        // Masked stores straight from the registers, as the f32 kernel's: the scalar store_tile loop
        // cost about as much as a 256-deep slice's products on this tile.
        super::avx512::store_acc(c, t)
    }

    unsafe fn tile(kc: usize, a: *const bf16, b: *const bf16, t: &Tile) {
        // SAFETY: an Avx512 exists only where the CPU has avx512f and avx512bf16.
        tile_avx512(kc, a, b, t)
    }

    unsafe fn pack_contiguous<T: Elem>(side: Side, src: *const T, stride: usize, kc: usize, out: &mut [bf16]) -> bool {
        // SAFETY: as the trait's; an Avx512 exists only where the CPU has avx512f, and every such CPU
        // also has avx2, fma and f16c (checked in cpu_has_avx512_bf16).
        match side {
            Side::A => pack_pairs::<T, MR>(src, stride, kc, out.as_mut_ptr()),
            Side::B => pack_pairs::<T, NR>(src, stride, kc, out.as_mut_ptr()),
        }
        true
    }

    unsafe fn pack_across<T: Elem>(side: Side, src: *const T, stride: usize, kc: usize, out: &mut [bf16]) -> bool {
        // SAFETY: as pack_contiguous. A column-major A panel (12 lanes) keeps the generic loop: a 16-wide
        // load would read past its lanes.
        if side == Side::B {
            pack_pairs_across::<T>(src, stride, kc, out.as_mut_ptr());
        }
        side == Side::B
    }
}

/// True when this CPU can run [`Avx512`].
pub(super) fn cpu_has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16") && super::f32k::cpu_has_avx2_fma();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// True on AMD CPUs, where this kernel is the default for a bf16 rhs: Zen 4 runs `vdpbf16ps` on zmm at
/// one per cycle, twice the f32 multiply-adds of an FMA. Intel's (Sapphire Rapids: two µops, half the
/// rate) is left opt-in; there AMX is the bf16 kernel anyway.
pub(super) fn fast_on_this_vendor() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: cpuid leaf 0 exists on every x86_64 CPU.
        #[allow(unused_unsafe)]
        let id = unsafe { std::arch::x86_64::__cpuid(0) };
        // The vendor string "AuthenticAMD" lies in ebx, edx, ecx.
        return [id.ebx, id.edx, id.ecx] == [0x6874_7541, 0x6974_6e65, 0x444d_4163];
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The 12×32 tile over `kc / 2` pairs, for any implementation of the instruction.
#[inline(always)]
unsafe fn tile_body<D: Bf16Dot>(kc: usize, a: *const bf16, b: *const bf16, t: &Tile) {
    D::prefetch_dst(t);
    let mut c = [[D::zero(); 2]; MR];
    for g in 0..kc / KG {
        let (ag, bg) = (a.add(g * MR * KG), b.add(g * NR * KG));
        // The B panel is fetched 8 pairs ahead: the two lines the step 8 later reads.
        let ahead = bg.wrapping_add(8 * NR * KG);
        D::prefetch(ahead);
        D::prefetch(ahead.wrapping_add(32));
        let (b0, b1) = (D::load(bg), D::load(bg.add(32)));
        for (i, ci) in c.iter_mut().enumerate() {
            let ai = D::splat(ag.add(i * KG));
            ci[0] = D::dot(ci[0], ai, b0);
            ci[1] = D::dot(ci[1], ai, b1);
        }
    }
    D::finish(&c, t);
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
    // The f32 kernel's blocking in bytes (a bf16 value is half an f32, so twice its depth): a 27 KiB A
    // panel stays in L1 while it meets 384 KiB of 72 KiB B panels, streamed from L2 and prefetched 8
    // pairs ahead. Measured on Zen 4 (2026-12-03, DiT shapes, best of 5, two interleaved rounds),
    // GFLOP/s on 1 / 2 threads: KC 256 with one B panel per run 120–150 / 210–270, KC 512 140–150 /
    // 250–300, KC 768 150–160 / 280–325, this 150–190 / 310–345 (the instruction's ceiling: 220 / 434).
    const KC: usize = 1152;
    const MC: usize = 288;
    const NC: usize = 3072;
    const B_RUN_BYTES: usize = 384 << 10;

    unsafe fn tile(&self, kc: usize, a: *const bf16, b: *const bf16, t: &Tile) {
        D::tile(kc, a, b, t)
    }

    unsafe fn pack_contiguous<T: Elem>(&self, side: Side, src: *const T, stride: usize, kc: usize, out: &mut [bf16]) -> bool {
        D::pack_contiguous(side, src, stride, kc, out)
    }

    unsafe fn pack_across<T: Elem>(&self, side: Side, src: *const T, stride: usize, kc: usize, out: &mut [bf16]) -> bool {
        D::pack_across(side, src, stride, kc, out)
    }
}

/// 16 consecutive values at `p`, widened to f32 and rounded to bf16 exactly as `bf16::from_f32` rounds
/// (to nearest even; a NaN keeps its sign and top mantissa bits and is made quiet): 8 k-pairs, the even
/// value of each in the low half. Only inlined into functions that enable avx512f, avx2 and f16c.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pairs8<T: Elem>(p: *const T) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    _mm256_castsi256_ps(_mm512_cvtepi32_epi16(round16(p)))
}

/// 16 consecutive values at `p` rounded to bf16 as in [`pairs8`], each in the low half of a 32-bit lane
/// (the high half zero). Only inlined into functions that enable avx512f, avx2 and f16c.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn round16<T: Elem>(p: *const T) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    let (lo, hi) = (_mm256_castps_si256(T::load8(p)), _mm256_castps_si256(T::load8(p.add(8))));
    let x = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
    let top = _mm512_srli_epi32::<16>(x);
    let odd = _mm512_and_si512(top, _mm512_set1_epi32(1));
    let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(x, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF))));
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(_mm512_castsi512_ps(x), _mm512_castsi512_ps(x));
    _mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(top, _mm512_set1_epi32(0x40)))
}

/// One full B panel (NR = 32 lanes) of a row-major B: lanes contiguous, depth steps `stride` apart. Pair g
/// of 16 lanes is two rows' 16 values, rounded, the odd row's shifted into the high halves: one 64-byte
/// store per 16 pairs, no shuffle. An odd depth's last pair has a zero partner. Safety: as
/// [`pack_pairs`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn pack_pairs_across<T: Elem>(src: *const T, stride: usize, kc: usize, out: *mut bf16) {
    use std::arch::x86_64::*;
    let out32 = out.cast::<i32>();
    for g in 0..kc.div_ceil(KG) {
        let even = src.add(2 * g * stride);
        for w0 in [0, 16] {
            let lo = round16(even.add(w0));
            let hi = if 2 * g + 1 < kc { _mm512_slli_epi32::<16>(round16(even.add(stride + w0))) } else { _mm512_setzero_si512() };
            _mm512_storeu_si512(out32.add(g * NR + w0).cast(), _mm512_or_si512(lo, hi));
        }
    }
}

/// One full panel of `LANES` lanes (12 rows of A or 32 columns of B), each contiguous along k (`src` is
/// lane 0's first value, lanes `stride` apart), `kc` deep, as k-pairs: pair g of lane w at 32-bit slot
/// g·LANES + w, an odd depth's last pair with a zero partner. 16 values of 8 lanes at a time: rounded
/// to 8 pairs per lane, then an 8×8 transpose of the 32-bit pairs (one store per 8 pairs, where the
/// generic loop stores each value alone). A 12-lane panel takes lanes 0–7, then 4–11 (lanes 4–7 twice,
/// with the same values). Safety: the panel readable at src, kc rounded up to even × LANES writable at
/// out; only on CPUs with avx512f, avx2 and f16c.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn pack_pairs<T: Elem, const LANES: usize>(src: *const T, stride: usize, kc: usize, out: *mut bf16) {
    const { assert!(LANES >= 8) };
    let out32 = out.cast::<f32>();
    let full = kc / 16 * 16;
    for p0 in (0..full).step_by(16) {
        let g0 = p0 / KG;
        for w0 in (0..LANES).step_by(8).map(|w| w.min(LANES - 8)) {
            let rows: [_; 8] = std::array::from_fn(|i| pairs8(src.add((w0 + i) * stride + p0)));
            for (i, pairs) in super::f32k::transpose8(rows).into_iter().enumerate() {
                std::arch::x86_64::_mm256_storeu_ps(out32.add((g0 + i) * LANES + w0), pairs);
            }
        }
    }
    for p in full..kc.next_multiple_of(KG) {
        for w in 0..LANES {
            let v = if p < kc { bf16::from_f32((*src.add(w * stride + p)).to_f32()) } else { bf16::ZERO };
            *out.add((p / KG) * LANES * KG + w * KG + p % KG) = v;
        }
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
