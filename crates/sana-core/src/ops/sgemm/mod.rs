//! Our own CPU GEMM: `dst[m×n] = (accumulate ? dst : 0) + lhs[m×k] · rhs[k×n]` on strided slices, f32 lhs,
//! and an f32, bf16 or f16 rhs. A half-precision rhs (the weights) stays half in memory: it is widened to
//! f32 while it is packed, panel by panel.
//!
//! BLIS layout (`driver.rs`): for each NC-column block of B and KC-deep slice of k, B is packed once into
//! NR-column panels (shared by all threads); each thread packs MC-row blocks of A into MR-row panels and
//! runs the MR×NR microkernel over them. The threads split M (or, when M has too few blocks, N), so both
//! threads of a 2-core machine work on every large shape — unlike the `gemm` crate (issue 13).
//!
//! Which microkernel runs ([`cpu_gemm_kernel`] names it):
//! - `amx-bf16` (`amx.rs`): only for a bf16 rhs (weights loaded with `dtype: 'bfloat16'`), when the CPU
//!   has AMX-BF16 and Linux grants the tile state. It rounds A to bf16 and multiplies 16×32 by 32×16
//!   tiles with `tdpbf16ps` into f32 accumulators, ≈ 16× the f32 FMA rate. An f32/f16 rhs takes `avx512f`.
//! - `avx512bf16` (`bf16dot.rs`): only for a bf16 rhs, when the CPU has avx512f + avx512bf16 but not
//!   AMX. It rounds A to bf16 and multiplies with `vdpbf16ps`, f32 accumulators. On by default on AMD
//!   CPUs, opt-in elsewhere (`SANA_CPU_BF16_DOT=1`; `=0` turns it off): on Zen 4 `vdpbf16ps` runs at
//!   twice the zmm FMA rate (220 against 115 GFLOP/s per thread, `bench_sgemm`'s ceilings), on the one
//!   Intel CPU measured (a Xeon with AMX) at half of it (116 against 232), slower than widening to f32.
//! - `avx512f` (`avx512.rs`): a 12×32 FMA kernel on zmm registers, picked at run time when the CPU has
//!   avx512f (every rhs type, and a bf16 rhs whenever the bf16 kernel is not opted into).
//! - `avx2-fma` (`f32k.rs`): a 6×16 FMA kernel, picked when the CPU has avx2 + fma but not avx512f.
//! - `scalar`: the portable 6×16 kernel for any other CPU (plain Rust, correct, slower).
//!
//! `SANA_CPU_GEMM=avx512`, `=avx2` or `=scalar` caps the choice at that f32 kernel (no bf16 arithmetic:
//! a bf16 rhs is then widened exactly), to compare kernels or to run a fallback path on a CPU that has
//! the faster one; other values are ignored. `avx2` and `scalar` also cap the elementwise loops of
//! `ops/fastmath.rs` (`fastmath::tier`).
//!
//! Up to 16 rows with contiguous lhs rows and rhs columns (a Linear on a few tokens), `small.rs` computes
//! dot products straight from the unpacked weights instead (AVX2 or plain Rust, as above; never bf16-dot).

mod amx;
mod attention;
mod avx512;
mod bf16dot;
mod driver;
mod f32k;
mod small;
mod stats;
pub use stats::sgemm_stats_report;
#[cfg(test)]
mod tests;

use super::gemm::Strided;
use driver::View;
pub use driver::Elem;
#[cfg(target_arch = "x86_64")]
pub(crate) use f32k::transpose8;
use half::{bf16, f16};
use std::sync::OnceLock;

/// The right-hand matrix's storage: f32, or half precision widened while packed.
#[derive(Clone, Copy)]
pub(crate) enum Rhs<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
    F16(&'a [f16]),
}

/// The microkernels this CPU can run, chosen once per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Scalar,
    Avx2,
    Avx512,
    Avx512Bf16,
    Amx,
}

/// The instruction-set cap `SANA_CPU_GEMM` sets, read once: "avx512", "avx2", "scalar", or "" for none.
/// Any other value (a typo, "amx") caps nothing, rather than quietly turning the fastest kernel off. The
/// elementwise loops (`fastmath::tier`) take the same cap.
pub(crate) fn cpu_cap() -> &'static str {
    static CAP: OnceLock<&'static str> = OnceLock::new();
    CAP.get_or_init(|| {
        let v = std::env::var("SANA_CPU_GEMM").unwrap_or_default();
        ["avx512", "avx2", "scalar"].into_iter().find(|&c| c == v).unwrap_or("")
    })
}

fn kernel() -> Kernel {
    static KERNEL: OnceLock<Kernel> = OnceLock::new();
    *KERNEL.get_or_init(|| {
        let cap = cpu_cap();
        let bf16_dot = match std::env::var("SANA_CPU_BF16_DOT").as_deref() {
            Ok("1") => true,
            Ok("0") => false,
            _ => bf16dot::fast_on_this_vendor(),
        };
        let bf16_allowed = cap.is_empty();
        if cap == "scalar" {
            Kernel::Scalar
        } else if bf16_allowed && amx::cpu_supports_amx_bf16() {
            // The tile state is requested at the first bf16 product (Amx::new), not here: every process
            // picks a kernel, most never multiply bf16.
            Kernel::Amx
        } else if bf16_allowed && bf16_dot && bf16dot::cpu_has_avx512_bf16() && avx512::cpu_has_avx512f() {
            Kernel::Avx512Bf16
        } else if cap != "avx2" && avx512::cpu_has_avx512f() {
            Kernel::Avx512
        } else if f32k::cpu_has_avx2_fma() {
            Kernel::Avx2
        } else {
            Kernel::Scalar
        }
    })
}

/// `$body` with `$kern` bound to this CPU's f32 kernel: AVX-512, AVX2 or the portable one (what a
/// product runs on where no bf16 kernel applies).
macro_rules! with_f32_kernel {
    ($kern:ident => $body:expr) => {
        match kernel() {
            Kernel::Avx512 | Kernel::Avx512Bf16 | Kernel::Amx => match avx512::Avx512::new() {
                Some($kern) => $body,
                None => unreachable!("the avx512f kernel was picked on a CPU without it"),
            },
            Kernel::Avx2 => match f32k::Avx2::new() {
                Some($kern) => $body,
                None => unreachable!("the avx2 kernel was picked on a CPU without it"),
            },
            Kernel::Scalar => {
                let $kern = f32k::Scalar;
                $body
            }
        }
    };
}

/// The CPU GEMM microkernel in use: `"amx-bf16"` or `"avx512bf16"` (bf16 rhs only, in bf16 arithmetic;
/// f32/f16 rhs use `avx512f`), `"avx512f"`, `"avx2-fma"` or `"scalar"`. See the module doc for what
/// picks which.
pub fn cpu_gemm_kernel() -> &'static str {
    match kernel() {
        Kernel::Scalar => "scalar",
        Kernel::Avx2 => "avx2-fma",
        Kernel::Avx512 => "avx512f",
        Kernel::Avx512Bf16 => "avx512bf16",
        Kernel::Amx => "amx-bf16",
    }
}

/// True when bf16 products run on AMX tiles (where DC-AE's 3×3 convs take the direct tap sum).
pub(crate) fn bf16_on_amx() -> bool {
    kernel() == Kernel::Amx
}

/// True when products with a bf16 rhs run in bf16 arithmetic here (the lhs rounded to bf16 as it is
/// packed): the `amx-bf16` and `avx512bf16` kernels. Otherwise a bf16 rhs is widened exactly to f32.
pub fn bf16_rhs_rounds_lhs() -> bool {
    match kernel() {
        // Asks for the tile state if no product has yet: where the OS refuses it, bf16 is widened.
        Kernel::Amx => amx::cpu_has_amx_bf16(),
        Kernel::Avx512Bf16 => true,
        _ => false,
    }
}

/// Index of element (rows − 1, cols − 1) of a view, the furthest one for non-negative strides.
fn last(s: &Strided, rows: usize, cols: usize) -> usize {
    s.offset + (rows - 1) * s.rs + (cols - 1) * s.cs
}

/// dst[m×n] = (accumulate ? dst : 0) + lhs[m×k] · rhs[k×n], multithreaded on rayon's current pool (safe to
/// call from inside a rayon task). With `accumulate` false, dst's old contents are never read.
/// Panics if a view reaches past its slice.
pub(crate) fn sgemm(
    [m, n, k]: [usize; 3],
    (dst, d): (&mut [f32], Strided),
    (lhs, l): (&[f32], Strided),
    (rhs, r): (Rhs<'_>, Strided),
    accumulate: bool,
) {
    match rhs {
        Rhs::F32(s) => sgemm_typed([m, n, k], (dst, d), (lhs, l), (s, r), accumulate),
        Rhs::Bf16(s) => sgemm_typed([m, n, k], (dst, d), (lhs, l), (s, r), accumulate),
        Rhs::F16(s) => sgemm_typed([m, n, k], (dst, d), (lhs, l), (s, r), accumulate),
    }
}

/// [`sgemm`] with an f32 rhs where the caller accepts bf16 products (`bf16`, as for [`sgemm_sum`]): on
/// the `amx-bf16` and `avx512bf16` kernels both operands are rounded to bf16 as they are packed;
/// otherwise exact f32.
pub(crate) fn sgemm_f32(
    [m, n, k]: [usize; 3],
    (dst, d): (&mut [f32], Strided),
    (lhs, l): (&[f32], Strided),
    (rhs, r): (&[f32], Strided),
    accumulate: bool,
    bf16: bool,
) {
    if bf16 && kernel() == Kernel::Avx512Bf16 {
        // The bf16-dot path takes any rhs type: an f32 rhs is rounded to bf16 as it is packed.
        return sgemm_typed_on([m, n, k], (dst, d), (lhs, l), (rhs, r), accumulate, Kernel::Avx512Bf16);
    }
    match (bf16 && m > 0 && n > 0 && k > 0 && kernel() == Kernel::Amx).then(amx::Amx::new).flatten() {
        Some(_) => {
            assert!(
                last(&d, m, n) < dst.len() && last(&l, m, k) < lhs.len() && last(&r, k, n) < rhs.len(),
                "sgemm: a {m}×{n}×{k} product reaches past its buffers ({d:?}, {l:?}, {r:?})"
            );
            let _timer = stats::Timer::start([m, n, k], [l.rs, l.cs, r.rs, r.cs, d.rs, d.cs], 2);
            amx::sgemm_amx([m, n, k], dst, d, View::new(lhs, l), View::new(rhs, r), accumulate);
        }
        None => sgemm([m, n, k], (dst, d), (lhs, l), (Rhs::F32(rhs), r), accumulate),
    }
}

/// Run `f` with every product it starts kept on the calling thread (see [`sgemm_serial`]).
pub(crate) fn serial<R>(f: impl FnOnce() -> R) -> R {
    driver::serial(f)
}

/// [`sgemm`] on the calling thread alone, whatever its size: for callers whose rayon tasks are already
/// the parallelism (one product per attention head and row block), where a nested split only adds forks.
pub(crate) fn sgemm_serial(
    mnk: [usize; 3],
    dst: (&mut [f32], Strided),
    lhs: (&[f32], Strided),
    rhs: (Rhs<'_>, Strided),
    accumulate: bool,
) {
    driver::serial(|| sgemm(mnk, dst, lhs, rhs, accumulate));
}

/// Softmax attention of every head of every batch item on the CPU (`attention.rs`), in parallel:
/// `out[b, r, h·hd + i] = Σ_j softmax_j(q[b, r, h·hd..] · k[b, h, j] · scale + bias[b, j]) · v[b, h, j, i]`
/// over item b's first `keys[b]` keys, `dims` = [B, N, H, S, hd]. q and out [B, N, H·hd] (heads merged),
/// k and v [B, H, S, hd] of one type, all contiguous; bias [B, S] additive or none; `per` query rows a
/// task. A bf16 K/V runs where [`bf16_rhs_rounds_lhs`] holds on that bf16 kernel (q and the
/// exponentials rounded to bf16 as they enter the products), else widened exactly; f32 K/V in f32.
/// Panics if a slice is short for its shape, a key count is 0 or past S, or K and V differ in type.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_heads(
    dims: [usize; 5],
    out: &mut [f32],
    q: &[f32],
    (k, v): (Rhs<'_>, Rhs<'_>),
    scale: f32,
    bias: Option<&[f32]>,
    keys: &[usize],
    per: usize,
) {
    match (k, v) {
        (Rhs::F32(k), Rhs::F32(v)) => attention_typed(dims, out, q, (k, v), scale, bias, keys, per),
        (Rhs::Bf16(k), Rhs::Bf16(v)) => attention_typed(dims, out, q, (k, v), scale, bias, keys, per),
        (Rhs::F16(k), Rhs::F16(v)) => attention_typed(dims, out, q, (k, v), scale, bias, keys, per),
        _ => panic!("attention_heads: K and V must share a type"),
    }
}

/// [`attention_heads`] for one K/V element type: the checks, then the kernel [`sgemm_typed`] would
/// pick for a rhs of that type.
#[allow(clippy::too_many_arguments)]
fn attention_typed<T: Elem>(
    dims @ [b, n, h, s, hd]: [usize; 5],
    out: &mut [f32],
    q: &[f32],
    (k, v): (&[T], &[T]),
    scale: f32,
    bias: Option<&[f32]>,
    keys: &[usize],
    per: usize,
) {
    if b * n * h * hd == 0 {
        return;
    }
    assert!(
        out.len() == b * n * h * hd
            && q.len() >= out.len()
            && k.len() >= b * h * s * hd
            && v.len() >= b * h * s * hd
            && keys.len() == b
            && keys.iter().all(|&sk| (1..=s).contains(&sk))
            && bias.is_none_or(|v| v.len() >= b * s)
            && per > 0,
        "attention_heads: {dims:?} does not fit its buffers (out {}, q {}, k {}, v {}, keys {keys:?})",
        out.len(),
        q.len(),
        k.len(),
        v.len()
    );
    let heads = attention::Heads { dims, q, k, v, bias, keys, scale };
    // SAFETY: every slice was checked above for its shape.
    unsafe {
        match kernel() {
            Kernel::Amx if T::IS_BF16 => match amx::Amx::new() {
                Some(kern) => attention::attend_all(&kern, &heads, out, per),
                None => with_f32_kernel!(kern => attention::attend_all(&kern, &heads, out, per)),
            },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Bf16 if T::IS_BF16 => match bf16dot::avx512() {
                Some(kern) => attention::attend_all(&kern, &heads, out, per),
                None => with_f32_kernel!(kern => attention::attend_all(&kern, &heads, out, per)),
            },
            _ => with_f32_kernel!(kern => attention::attend_all(&kern, &heads, out, per)),
        }
    }
}

/// [`sgemm`] for one rhs element type: the bounds check, then the kernel picked for this CPU.
fn sgemm_typed<T: Elem>(mnk: [usize; 3], dst: (&mut [f32], Strided), lhs: (&[f32], Strided), rhs: (&[T], Strided), accumulate: bool) {
    let kern = match kernel() {
        // The bf16 kernels multiply a bf16 rhs only (an f32 one only where the caller accepts bf16
        // products, `sgemm_f32`); f32 and f16 take the AVX-512 f32 kernel there.
        Kernel::Avx512Bf16 | Kernel::Amx if !T::IS_BF16 => Kernel::Avx512,
        kern => kern,
    };
    sgemm_typed_on(mnk, dst, lhs, rhs, accumulate, kern)
}

/// [`sgemm_typed`] on a given kernel (`Avx512Bf16` rounds any rhs type to bf16 as it packs it).
fn sgemm_typed_on<T: Elem>(
    [m, n, k]: [usize; 3],
    (dst, d): (&mut [f32], Strided),
    (lhs, l): (&[f32], Strided),
    (rhs, r): (&[T], Strided),
    accumulate: bool,
    kern: Kernel,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        last(&d, m, n) < dst.len() && (k == 0 || (last(&l, m, k) < lhs.len() && last(&r, k, n) < rhs.len())),
        "sgemm: a {m}×{n}×{k} product reaches past its buffers ({d:?}, {l:?}, {r:?})"
    );
    let (a, b) = (View::new(lhs, l), View::new(rhs, r));
    let bytes = if kern == Kernel::Avx512Bf16 { 2 } else { std::mem::size_of::<T>() };
    let _timer = stats::Timer::start([m, n, k], [l.rs, l.cs, r.rs, r.cs, d.rs, d.cs], bytes);
    match kern {
        Kernel::Avx512Bf16 => bf16dot::sgemm_avx512([m, n, k], dst, d, a, b, accumulate),
        Kernel::Amx => amx::sgemm_amx([m, n, k], dst, d, a, b, accumulate),
        Kernel::Avx512 => avx512::sgemm_avx512([m, n, k], dst, d, a, b, accumulate),
        Kernel::Avx2 => f32k::sgemm_avx2([m, n, k], dst, d, a, b, accumulate),
        Kernel::Scalar => f32k::sgemm_scalar([m, n, k], dst, d, a, b, accumulate),
    }
}

/// Benchmark entry (`examples/bench_sgemm.rs`): dense row-major dst [m, n] and lhs [m, k]; rhs is [k, n]
/// row-major, or with `rhs_nk` the Linear weight layout [n, k] row-major (used transposed).
#[doc(hidden)]
pub fn bench_sgemm<T: Elem>([m, n, k]: [usize; 3], dst: &mut [f32], lhs: &[f32], rhs: &[T], rhs_nk: bool) {
    let r = if rhs_nk { Strided { offset: 0, rs: 1, cs: k } } else { Strided::rows(0, n) };
    sgemm_typed([m, n, k], (dst, Strided::rows(0, n)), (lhs, Strided::rows(0, k)), (rhs, r), false);
}

/// Most rhs values (all terms) that [`sgemm_sum`] holds packed at once; past it, one product per term.
const SUM_B_VALUES: usize = 1 << 22;

/// dst[m×n] = (accumulate ? dst : 0) + Σ_t lhs(t) · rhs(t), each term's lhs [m×k] and rhs [k×n] a
/// strided view of the shared `lhs` / `rhs` slices (a convolution's taps: shifted views of one input,
/// one weight slice each). Dst stays in cache across the terms (`driver::gemm_sum`).
///
/// `bf16`: the caller accepts bf16 products (a model loaded in bf16): where the `amx-bf16` or
/// `avx512bf16` kernel runs ([`bf16_rhs_rounds_lhs`]), both operands are rounded to bf16 as they are packed and accumulated in
/// f32; elsewhere, and with `bf16` false, the products are exact f32.
/// Panics if a view reaches past its slice.
pub(crate) fn sgemm_sum(
    [m, n, k]: [usize; 3],
    (dst, d): (&mut [f32], Strided),
    lhs: &[f32],
    rhs: &[f32],
    terms: &[(Strided, Strided)],
    accumulate: bool,
    bf16: bool,
) {
    assert!(!terms.is_empty(), "sgemm_sum: no terms");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        last(&d, m, n) < dst.len() && (k == 0 || terms.iter().all(|(l, r)| last(l, m, k) < lhs.len() && last(r, k, n) < rhs.len())),
        "sgemm_sum: a {m}×{n}×{k} term reaches past its buffers"
    );
    let amx = if bf16 && k > 0 && kernel() == Kernel::Amx { amx::Amx::new() } else { None };
    #[cfg(target_arch = "x86_64")]
    let dot = if bf16 && k > 0 && kernel() == Kernel::Avx512Bf16 { bf16dot::avx512() } else { None };
    #[cfg(not(target_arch = "x86_64"))]
    let dot: Option<()> = None;
    if k == 0 || terms.len() * k * n > SUM_B_VALUES {
        for (t, &(l, r)) in terms.iter().enumerate() {
            let acc = accumulate || t > 0;
            match &amx {
                Some(_) => amx::sgemm_amx([m, n, k], dst, d, View::new(lhs, l), View::new(rhs, r), acc),
                None => sgemm_f32([m, n, k], (&mut *dst, d), (lhs, l), (rhs, r), acc, dot.is_some()),
            }
        }
        return;
    }
    let views: Vec<_> = terms.iter().map(|&(l, r)| (View::new(lhs, l), View::new(rhs, r))).collect();
    // In the stats table a sum shows as one product of depth terms·k, with operand strides 0 (several
    // views); one in bf16 products as a 2-byte rhs.
    let bytes = if amx.is_some() || dot.is_some() { 2 } else { 4 };
    let _timer = stats::Timer::start([m, n, k * terms.len()], [0, 0, 0, 0, d.rs, d.cs], bytes);
    if let Some(kern) = &amx {
        return driver::gemm_sum(kern, [m, n, k], dst, d, &views, accumulate);
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(kern) = &dot {
        return driver::gemm_sum(kern, [m, n, k], dst, d, &views, accumulate);
    }
    with_f32_kernel!(kern => driver::gemm_sum(&kern, [m, n, k], dst, d, &views, accumulate))
}
