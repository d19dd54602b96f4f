//! The AMX kernel (Intel Advanced Matrix Extensions, `amx-bf16`): bf16 rhs only, A rounded to bf16 while
//! packed, f32 accumulators. One `tdpbf16ps` multiplies a 16×32 bf16 tile by a 32×16 one into a 16×16
//! f32 tile: 16 384 flops per instruction, ≈ 16× the f32 FMA rate of AVX-512 on the same core (measured
//! on a 2-core Xeon: ≈ 3.8 TFLOP/s per thread against 232 GFLOP/s for zmm FMA).
//!
//! Tile `i`: tmm0–3 hold a 32×32 block of C (2×2 tiles), tmm4–5 two 16-row A tiles, tmm6–7 two 16-column
//! B tiles. Panels, per 32-deep k block:
//! - A (MR = 32 rows): row-major 32×32 bf16, so each 16-row half is one tile read with a 64-byte stride
//!   (`KG_A = 32` in the driver's group layout);
//! - B (NR = 32 columns): k-pairs, 16 pair-rows of 32 columns × 2 bf16 (the "VNNI" layout the B operand
//!   takes), so each 16-column half is one tile read with a 128-byte stride (`KG_B = 2`).
//!
//! Rust has no stable AMX intrinsics, so the instructions are written as inline assembly; nothing else in
//! the program touches the tile registers. Linux grants a process the tile state only on request
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), made once before the kernel is first offered; each thread loads
//! the tile configuration once, before its first tile.

use super::driver::{gemm, store_tile, Elem, MicroKernel, Side, Tile, View};
use super::{small, Strided};
use half::bf16;
use std::cell::Cell;

const MR: usize = 32;
const NR: usize = 32;
/// An AMX tile's depth: 16 pairs of bf16.
const KT: usize = 32;

/// True when this CPU has AMX-BF16 and the AVX-512 BF16 conversions the A packer uses (CPUID only: the
/// tile state is requested from the OS later, by [`Amx::new`], so a process that never multiplies bf16
/// weights never asks for it).
pub(super) fn cpu_supports_amx_bf16() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        use std::arch::x86_64::__cpuid_count;
        // CPUID leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE.
        let edx = __cpuid_count(7, 0).edx;
        edx & (1 << 22) != 0 && edx & (1 << 24) != 0 && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    false
}

/// [`cpu_supports_amx_bf16`], and the OS has granted this process the tile state (asked once, at the first
/// bf16 product: a process-wide change of the threads' extended state, kept out of f32-only processes).
pub(super) fn cpu_has_amx_bf16() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        static GRANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        cpu_supports_amx_bf16() && *GRANTED.get_or_init(request_tile_state)
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    false
}

/// arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA): true when the kernel grants the tile data state.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_state() -> bool {
    const SYS_ARCH_PRCTL: usize = 158;
    const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
    const XFEATURE_XTILEDATA: usize = 18;
    let ret: isize;
    // SAFETY: a plain Linux system call; it only changes which xsave features this process may use.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL as isize => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

/// The AMX kernel. Construct only where [`cpu_has_amx_bf16`] holds.
pub(super) struct Amx(());

impl Amx {
    /// The kernel, where this CPU (and OS) can run it.
    pub fn new() -> Option<Self> {
        cpu_has_amx_bf16().then_some(Amx(()))
    }
}

impl MicroKernel for Amx {
    type P = bf16;
    const MR: usize = MR;
    const NR: usize = NR;
    const KG: usize = KT;
    const KG_A: usize = KT;
    const KG_B: usize = 2;
    // A B panel of 512 × 32 bf16 is 32 KiB (in a 48 KiB L1d next to the streaming A panel), an A block of
    // 256 × 512 bf16 256 KiB (L2).
    const KC: usize = 512;
    const MC: usize = 256;
    const NC: usize = 3072;

    unsafe fn tile(&self, kc: usize, a: *const bf16, b: *const bf16, t: &Tile) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an Amx exists only where the CPU has AMX-BF16 and the OS granted the tile state.
        tile_amx(kc, a, b, t);
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("an Amx kernel exists only on x86_64 ({kc}, {a:?}, {b:?}, {:?})", t.c);
    }

    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    unsafe fn pack_contiguous<T: Elem>(&self, side: Side, src: *const T, stride: usize, kc: usize, out: &mut [bf16]) -> bool {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as the trait's; an Amx exists only where the CPU has avx512f and avx512bf16.
        match side {
            Side::A => pack_a_rows(src, stride, kc, out.as_mut_ptr()),
            Side::B => return pack_b_pairs(src, stride, kc, out),
        }
        cfg!(target_arch = "x86_64")
    }

    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    unsafe fn pack_across<T: Elem>(&self, side: Side, src: *const T, stride: usize, kc: usize, out: &mut [bf16]) -> bool {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as the trait's; an Amx exists only where the CPU has avx512f and avx512bf16.
        if side == Side::B {
            pack_b_rows(src, stride, kc, out.as_mut_ptr());
            return true;
        }
        false
    }
}

/// dst = (accumulate ? dst : 0) + bf16(a) · b on AMX (few-row products stay on the f32 dot-product path,
/// where packing would cost more than the product).
pub(super) fn sgemm_amx<T: Elem>(mnk: [usize; 3], dst: &mut [f32], d: Strided, a: View<f32>, b: View<T>, accumulate: bool) {
    match Amx::new() {
        Some(_) if small::applies(mnk[0], &a, &b) => small::gemm(true, mnk, dst, d, a, b, accumulate),
        Some(kern) => gemm(&kern, mnk, dst, d, a, b, accumulate),
        None => super::avx512::sgemm_avx512(mnk, dst, d, a, b, accumulate),
    }
}

/// An A panel from 32 rows contiguous along k: per 32-deep block, each row's 32 values rounded to bf16
/// (nearest even, `vcvtne2ps2bf16`) into one 64-byte row; the depth past kc is zeros.
/// Safety: 32 rows of kc values readable at `src` (row stride `rs`), kc rounded up to 32 rows × 32
/// writable at `out`; only on CPUs with avx512f and avx512bf16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx2,f16c")]
unsafe fn pack_a_rows<T: Elem>(src: *const T, rs: usize, kc: usize, out: *mut bf16) {
    use std::arch::x86_64::*;
    for kb in 0..kc.div_ceil(KT) {
        let (k0, n) = (kb * KT, KT.min(kc - kb * KT));
        for i in 0..MR {
            let row = src.add(i * rs + k0);
            let (lo, hi) = if n == KT {
                (load16(row), load16(row.add(16)))
            } else {
                let mut buf = [0f32; KT];
                (0..n).for_each(|q| buf[q] = (*row.add(q)).to_f32());
                (_mm512_loadu_ps(buf.as_ptr()), _mm512_loadu_ps(buf.as_ptr().add(16)))
            };
            let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(out.add((kb * MR + i) * KT).cast(), packed);
        }
    }
}

/// 16 consecutive values at `p`, widened. Safety: only inlined into functions enabling avx512f + avx2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn load16<T: Elem>(p: *const T) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    if size_of::<T>() == 4 {
        return _mm512_loadu_ps(p.cast()); // f32, the one 4-byte Elem
    }
    // Two halves joined with an avx512f insert: avx512dq's insertf32x8 is not enabled in the packers, so
    // it was called, not inlined (3 % of a bf16 DC-AE decode, perf).
    let (lo, hi) = (T::load8(p), T::load8(p.add(8)));
    _mm512_castpd_ps(_mm512_insertf64x4::<1>(_mm512_castpd256_pd512(_mm256_castps_pd(lo)), _mm256_castps_pd(hi)))
}

/// A B panel from 32 columns contiguous along k, already bf16 (the weights): pair g of column w is the
/// 4 bytes at column w's values 2g, 2g+1, stored at (g·32 + w). That is a transpose of 32-bit pairs; the
/// last pair of an odd depth and the pairs past it are zeros. Other rhs types take the generic packer.
/// Safety: as [`MicroKernel::pack_contiguous`].
#[cfg(target_arch = "x86_64")]
unsafe fn pack_b_pairs<T: Elem>(src: *const T, cs: usize, kc: usize, out: &mut [bf16]) -> bool {
    if !T::IS_BF16 {
        return false;
    }
    let (src, out) = (src.cast::<u16>(), out.as_mut_ptr().cast::<u32>());
    let (pairs, kpad) = (kc / 2, kc.next_multiple_of(KT));
    for g in 0..pairs {
        let o = out.add(g * NR);
        for w in 0..NR {
            *o.add(w) = src.add(w * cs + 2 * g).cast::<u32>().read_unaligned();
        }
    }
    let mut g = pairs;
    if kc % 2 == 1 {
        for w in 0..NR {
            *out.add(g * NR + w) = *src.add(w * cs + kc - 1) as u32;
        }
        g += 1;
    }
    std::ptr::write_bytes(out.add(g * NR), 0, (kpad / 2 - g) * NR);
    true
}

/// A B panel from 32 columns contiguous along the width (a row-major rhs: conv taps' weights, Winograd's
/// transformed input, im2col columns): per pair of depth rows, both rows' 32 values rounded to bf16
/// (`vcvtne2ps2bf16`) and interleaved into the k-pair layout (`vpermw`); an odd last row pairs with
/// zeros, and the depth past kc is zeros.
/// Safety: 32 values readable at each of the kc rows `rs` apart from `src`; the panel (kc rounded up to
/// 32, × 32) writable at `out`; only on CPUs with avx512f, avx512bw and avx512bf16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,f16c")]
unsafe fn pack_b_rows<T: Elem>(src: *const T, rs: usize, kc: usize, out: *mut bf16) {
    use std::arch::x86_64::*;
    // Word j of the result: word j / 2 of the first row (j even) or the second (j odd, 16 words later).
    let interleave = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
        23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0,
    );
    let kpad = kc.next_multiple_of(KT);
    for g in 0..kc.div_ceil(2) {
        let r0 = src.add(2 * g * rs);
        let second = 2 * g + 1 < kc;
        for half in 0..2 {
            let lo = load16(r0.add(16 * half));
            let hi = if second { load16(r0.add(rs + 16 * half)) } else { _mm512_setzero_ps() };
            // Words 0..16: the first row's 16 values; 16..32: the second's.
            let both: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(out.add(g * 2 * NR + 32 * half).cast(), _mm512_permutexvar_epi16(interleave, both));
        }
    }
    std::ptr::write_bytes(out.add(kc.div_ceil(2) * 2 * NR), 0, (kpad - 2 * kc.div_ceil(2)) * NR);
}

thread_local! {
    /// Whether this thread has loaded the tile configuration (it stays loaded: nothing else uses AMX).
    static CONFIGURED: Cell<bool> = const { Cell::new(false) };
}

/// Every tile 16 rows × 64 bytes (palette 1), loaded on this thread unless it already is.
/// Safety: the CPU has AMX and the process holds the tile state.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn configure_tiles() {
    if CONFIGURED.get() {
        return;
    }
    #[repr(C, align(64))]
    struct Config([u8; 64]);
    let mut cfg = Config([0; 64]);
    cfg.0[0] = 1; // palette
    for t in 0..8 {
        cfg.0[16 + 2 * t] = 64; // bytes per row (u16, little endian)
        cfg.0[48 + t] = 16; // rows
    }
    std::arch::asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
    CONFIGURED.set(true);
}

/// t (=, or += with t.load) a · b over `kc` (a multiple of 32): `a` a packed A panel, `b` a packed B panel.
/// Safety: as [`MicroKernel::tile`], on a CPU with AMX-BF16 whose OS granted this process the tile state.
#[cfg(target_arch = "x86_64")]
unsafe fn tile_amx(kc: usize, a: *const bf16, b: *const bf16, t: &Tile) {
    use std::arch::asm;
    configure_tiles();
    // A full tile with contiguous rows is loaded from and stored to dst by the tile instructions (a
    // variant that prefetched dst and added it with vector code after the k loop measured the same);
    // others go through `acc`, which tilestored writes whole (no zeroing: that memset was 2 % of a bf16
    // DiT forward).
    let full = t.mr == MR && t.nr == NR && t.cs == 1;
    let mut acc = std::mem::MaybeUninit::<[f32; MR * NR]>::uninit();
    let (c, c_stride) = if full { (t.c, t.rs * 4) } else { (acc.as_mut_ptr().cast::<f32>(), NR * 4) };
    let (c0, c1, c2, c3) = (c, c.add(16), c.add(16 * c_stride / 4), c.add(16 * c_stride / 4 + 16));
    if full && t.load {
        asm!(
            "tileloadd tmm0, [{c0} + {s}*1]",
            "tileloadd tmm1, [{c1} + {s}*1]",
            "tileloadd tmm2, [{c2} + {s}*1]",
            "tileloadd tmm3, [{c3} + {s}*1]",
            c0 = in(reg) c0, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3, s = in(reg) c_stride,
            options(nostack, readonly),
        );
    } else {
        asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
    }
    for kb in 0..kc / KT {
        // A: two 16-row halves of a 32×32 block, 64-byte rows. B: 16 pair-rows of 128 bytes, two 64-byte halves.
        let (a0, b0) = (a.add(kb * MR * KT), b.add(kb * KT * NR));
        // Each load comes right before the first product that needs it: the tile registers are not
        // renamed, so a load waits for the last product reading its register; in this order the next
        // block's A0/B0 loads overlap this block's last two products.
        asm!(
            "tileloadd tmm4, [{a0} + {sa}*1]",
            "tileloadd tmm6, [{b0} + {sb}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{b1} + {sb}*1]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a1} + {sa}*1]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            a0 = in(reg) a0, a1 = in(reg) a0.add(16 * KT), sa = in(reg) KT * 2,
            b0 = in(reg) b0, b1 = in(reg) b0.add(16 * 2), sb = in(reg) NR * 4,
            options(nostack, readonly),
        );
    }
    asm!(
        "tilestored [{c0} + {s}*1], tmm0",
        "tilestored [{c1} + {s}*1], tmm1",
        "tilestored [{c2} + {s}*1], tmm2",
        "tilestored [{c3} + {s}*1], tmm3",
        c0 = in(reg) c0, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3, s = in(reg) c_stride,
        options(nostack),
    );
    if !full {
        store_tile(acc.assume_init_ref(), NR, t);
    }
}
