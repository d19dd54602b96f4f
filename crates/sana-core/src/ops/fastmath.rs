//! Vectorised `exp` (and `tanh` from it) for the elementwise hot loops (softmax rows, SiLU, softcapping),
//! and [`dispatch!`], which compiles such a loop for AVX-512, AVX2 and the baseline and picks one at run
//! time ([`tier`]).
//!
//! Why: glibc's `expf` is a scalar call; the DiT's Mix-FFN needs ≈ 18 M of them per block (SiLU of the
//! expanded activations and of the GLU gate) and its cross-attention softmax ≈ 10 M. PyTorch uses SLEEF's
//! vector exp. This is Cephes' `expf` (range reduction by ln 2 in two parts, degree-6 polynomial; within
//! 2 ulp of the exact value over the clamped range), written without branches so LLVM vectorises the loops,
//! its polynomial by Estrin's scheme ([`poly`]).
//! NaN stays NaN (the pipeline's non-finite check relies on it); inputs above 88 or below −87.3 give
//! exp(88) and exp(−87.3) (≈ 1.7e38, 1.2e−38): a softmax or SiLU never reaches them with finite results
//! that would differ.

#[inline(always)]
fn exp1(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4; // ln 2, high part (exact in few bits)
    const C2: f32 = -2.121_944_4e-4; // ln 2 − C1
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³: adding and subtracting it rounds to an integer
    // Comparisons, not min/max: a NaN fails both and passes through.
    let x = if x > 88.0 { 88.0 } else { x };
    let x = if x < -87.3 { -87.3 } else { x };
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * C1 - n * C2;
    let y = poly(r) * (r * r) + r + 1.0;
    // 2ⁿ from n's integer, which sits in t's low mantissa bits (t = 1.5·2²³ + n): integer lanes, where
    // `n as i32` (saturating) made LLVM convert lane by lane in scalar code, a third of SiLU's time.
    // A NaN x gives garbage bits here, and NaN from y anyway.
    let k = t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127);
    y * f32::from_bits(k << 23)
}

/// Cephes' degree-5 polynomial of `exp1`, (p0·r + p1)·r⁴ + (p2·r + p3)·r² + (p4·r + p5) (Estrin's
/// scheme): the same polynomial as Horner's nested form, in a dependency chain of 5 operations instead
/// of 10. The loops that call exp run at the chain's latency, not at their arithmetic's throughput
/// (the out-of-order window holds too few iterations of a 25-operation chain): Horner's took ≈ 1 ns a
/// value on Zen 3.
#[inline(always)]
fn poly(r: f32) -> f32 {
    let (r2, a, b, c) = (r * r, 1.987_569_1e-4 * r + 1.398_199_9e-3, 8.333_452e-3 * r + 4.166_579_6e-2, 1.666_666_5e-1 * r + 5.000_000_1e-1);
    a * (r2 * r2) + b * r2 + c
}

#[inline(always)]
fn silu1(x: f32) -> f32 {
    x / (1.0 + exp1(-x))
}

/// PyTorch's `gelu(x, approximate="tanh")`: 0.5·x·(1 + tanh(z)), z = √(2/π)·(x + 0.044715·x³), written as
/// x / (1 + exp(−2z)) (the same value; no cancellation for negative x).
#[inline(always)]
fn gelu_tanh1(x: f32) -> f32 {
    const K: f32 = 0.797_884_6; // √(2/π)
    let z = K * (x + 0.044_715 * x * x * x);
    x / (1.0 + exp1(-2.0 * z))
}

/// tanh(y) without a branch LLVM cannot vectorise: for |y| < 0.3 its odd Taylor series to y⁹ (the next
/// term is below 2e−8 · |y| there); beyond, 1 − 2 / (exp(2|y|) + 1) with the sign of y, where the
/// subtraction loses at most ~1.3 bits (at |y| = 0.3 the result is 0.29). exp's clamp at 88 gives
/// exactly ±1 for large |y|; a NaN fails the comparison and goes through exp, which keeps it NaN.
#[inline(always)]
fn tanh1(y: f32) -> f32 {
    let a = y.abs();
    let y2 = y * y;
    let series = y * (1.0 + y2 * (-1.0 / 3.0 + y2 * (2.0 / 15.0 + y2 * (-17.0 / 315.0 + y2 * (62.0 / 2835.0)))));
    let far = (1.0 - 2.0 / (exp1(2.0 * a) + 1.0)).copysign(y);
    if a < 0.3 { series } else { far }
}

/// The instruction sets an elementwise loop of [`dispatch!`] is compiled for, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// The crate's baseline target (SSE2 on x86_64).
    Base,
    /// AVX2 + FMA: 8 f32 lanes.
    Avx2,
    /// AVX-512F: 16 lanes; the plain loops vectorise twice as wide (SiLU, the Mix-FFN's depthwise taps:
    /// ≈ 20 % faster than on AVX2, measured on the DiT's Mix-FFN middle).
    Avx512,
}

/// The widest tier this CPU runs, capped like the GEMM kernels by `SANA_CPU_GEMM=avx2` (AVX2) or
/// `=scalar` (the baseline); read once. Every tier computes the same IEEE operations in the same order
/// (Rust does not contract a·b + c into an FMA, and reductions keep explicit lanes), so the tiers agree
/// bit for bit (tested).
fn detected_tier() -> Tier {
    static TIER: std::sync::OnceLock<Tier> = std::sync::OnceLock::new();
    *TIER.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let cap = crate::ops::sgemm::cpu_cap();
            let fma = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
            if cap == "scalar" || !fma {
                return Tier::Base;
            }
            if cap != "avx2" && std::is_x86_feature_detected!("avx512f") {
                return Tier::Avx512;
            }
            Tier::Avx2
        }
        #[cfg(not(target_arch = "x86_64"))]
        Tier::Base
    })
}

/// A narrower tier forced by [`with_tier`] (tests of every tier on one CPU): 0 none, else Tier as u8 + 1.
/// Process-wide, so that the ops' rayon workers take it too; other tests running meanwhile compute the
/// same bits on it.
#[cfg(test)]
static FORCED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// The tier [`dispatch!`]'s functions run on now.
#[inline]
pub fn tier() -> Tier {
    #[cfg(test)]
    match FORCED.load(std::sync::atomic::Ordering::Relaxed) {
        1 => return Tier::Base,
        2 => return Tier::Avx2,
        3 => return Tier::Avx512,
        _ => {}
    }
    detected_tier()
}

/// Run `f` with every elementwise loop on `tier` (at most the detected one); one such run at a time.
#[cfg(test)]
pub(crate) fn with_tier<R>(tier: Tier, f: impl FnOnce() -> R) -> R {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    assert!(tier <= detected_tier(), "{tier:?} is wider than this CPU's {:?}", detected_tier());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    FORCED.store(tier as u8 + 1, std::sync::atomic::Ordering::Relaxed);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    FORCED.store(0, std::sync::atomic::Ordering::Relaxed);
    r.unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// The tiers this CPU runs, narrowest first (tests compare each with the baseline).
#[cfg(test)]
pub(crate) fn tiers_here() -> Vec<Tier> {
    [Tier::Base, Tier::Avx2, Tier::Avx512].into_iter().filter(|&t| t <= detected_tier()).collect()
}

/// Define `name` with `body` compiled once per [`Tier`] (on x86_64) and the call running the one
/// [`tier`] selects.
macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident, ($($arg:ident: $ty:ty),*), $body:block) => {
        $crate::ops::fastmath::dispatch!($(#[$doc])* $name, ($($arg: $ty),*) -> (), $body);
    };
    ($(#[$doc:meta])* $name:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty, $body:block) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) -> $ret $body
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) -> $ret $body
                match $crate::ops::fastmath::tier() {
                    // SAFETY: `tier` never exceeds what this CPU supports (detected_tier, with_tier).
                    $crate::ops::fastmath::Tier::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::ops::fastmath::Tier::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::ops::fastmath::Tier::Base => {}
                }
            }
            $body
        }
    };
}
pub(crate) use dispatch;

dispatch!(
    /// xs[i] = exp(xs[i]).
    exp_in_place, (xs: &mut [f32]), {
    xs.iter_mut().for_each(|v| *v = exp1(*v));
});

dispatch!(
    /// xs[i] = cap · tanh(xs[i] · scale / cap): Gemma-2's logit softcapping, after the logit scale.
    softcap_in_place, (xs: &mut [f32], scale: f32, cap: f32), {
    let into = scale / cap;
    xs.iter_mut().for_each(|v| *v = cap * tanh1(*v * into));
});

dispatch!(
    /// dst[i] = silu(src[i]).
    silu_into, (src: &[f32], dst: &mut [f32]), {
    dst.iter_mut().zip(src).for_each(|(d, s)| *d = silu1(*s));
});

/// v[i] = silu(v[i]): [`silu_into`] a stack block at a time (so the op, and its bits, exist once).
pub fn silu_in_place(v: &mut [f32]) {
    let mut block = [0f32; 1024];
    for chunk in v.chunks_mut(block.len()) {
        let src = &mut block[..chunk.len()];
        src.copy_from_slice(chunk);
        silu_into(src, chunk);
    }
}

dispatch!(
    /// dst[i] = gelu_tanh(src[i]).
    gelu_tanh_into,
    (src: &[f32], dst: &mut [f32]),
    {
        dst.iter_mut().zip(src).for_each(|(d, s)| *d = gelu_tanh1(*s));
    }
);

dispatch!(
    /// xs[i] *= silu(gate[i]).
    mul_silu_in_place, (xs: &mut [f32], gate: &[f32]), {
    xs.iter_mut().zip(gate).for_each(|(x, g)| *x *= silu1(*g));
});

dispatch!(
    /// dst = exp(src · scale + bias − max) over one row (bias: additive, same length, or none); returns
    /// Σ dst. A softmax without its division, for callers that divide something smaller (the
    /// cross-attention divides each head's p·v row, hd values instead of S). Two passes, each 8 lanes
    /// wide: scale, bias and the running max; then exp and the running sum. A NaN anywhere makes the
    /// sum NaN.
    exp_row,
    (src: &[f32], dst: &mut [f32], scale: f32, bias: Option<&[f32]>) -> f32,
    {
        let n = src.len();
        let (dst, n8) = (&mut dst[..n], n / 8 * 8);
        // Pass 1 over whole chunks, so LLVM sees no bounds checks: z = src · scale (+ bias) and the lanes'
        // running max. The max compares (`v > m`, one vmaxps) instead of f32::max, whose NaN rule made
        // this pass scalar (a third of the DiT's cross-attention, perf); a NaN z is skipped here as there
        // and poisons the sum in pass 2.
        // Plain loops: written with a closure per chunk, LLVM kept the closure out of line (perf).
        let mut max = [f32::NEG_INFINITY; 8];
        let (src8, dst8) = (src[..n8].chunks_exact(8), dst[..n8].chunks_exact_mut(8));
        match bias {
            None => {
                for (s, d) in src8.zip(dst8) {
                    for l in 0..8 {
                        d[l] = s[l] * scale;
                        max[l] = if d[l] > max[l] { d[l] } else { max[l] };
                    }
                }
            }
            Some(b) => {
                for ((s, d), b) in src8.zip(dst8).zip(b[..n8].chunks_exact(8)) {
                    for l in 0..8 {
                        d[l] = s[l] * scale + b[l];
                        max[l] = if d[l] > max[l] { d[l] } else { max[l] };
                    }
                }
            }
        }
        let mut max = max.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for i in n8..n {
            dst[i] = src[i] * scale + bias.map_or(0.0, |b| b[i]);
            max = max.max(dst[i]);
        }
        // Pass 2: exp(z − max) in place and the lanes' running sum.
        let mut sum = [0f32; 8];
        for dc in dst[..n8].chunks_exact_mut(8) {
            for l in 0..8 {
                dc[l] = exp1(dc[l] - max);
                sum[l] += dc[l];
            }
        }
        let mut sum = sum.iter().sum::<f32>();
        for v in &mut dst[n8..] {
            *v = exp1(*v - max);
            sum += *v;
        }
        sum
    }
);

dispatch!(
    /// [`exp_row`] down the columns of a row-major block `z` of `width` columns, in place: for each
    /// column c, z[j, c] = exp(z[j, c] · scale + bias[j] − max_j(z[j, c] · scale + bias[j])), and
    /// `sums[c]` = Σ_j of them. For the transposed logits of `sgemm/attention.rs` (a row per key, a
    /// column per query), where a row is contiguous across queries: 16 columns at a time go down the
    /// rows with their max and sum in registers, instead of one horizontal reduction per query. NaN as
    /// in [`exp_row`]: a NaN makes its column's sum NaN.
    exp_cols,
    (z: &mut [f32], width: usize, scale: f32, bias: Option<&[f32]>, sums: &mut [f32]),
    {
        const L: usize = 16;
        let rows = z.len().checked_div(width).unwrap_or(0);
        let bias_of = |j: usize| bias.map_or(0.0, |b| b[j]);
        let mut c0 = 0;
        while c0 + L <= width {
            let mut max = [f32::NEG_INFINITY; L];
            for j in 0..rows {
                let (b, row): (f32, &mut [f32; L]) = (bias_of(j), (&mut z[j * width + c0..][..L]).try_into().unwrap());
                for l in 0..L {
                    row[l] = row[l] * scale + b;
                    max[l] = if row[l] > max[l] { row[l] } else { max[l] };
                }
            }
            let mut sum = [0f32; L];
            for j in 0..rows {
                let row: &mut [f32; L] = (&mut z[j * width + c0..][..L]).try_into().unwrap();
                for l in 0..L {
                    row[l] = exp1(row[l] - max[l]);
                    sum[l] += row[l];
                }
            }
            sums[c0..c0 + L].copy_from_slice(&sum);
            c0 += L;
        }
        for c in c0..width {
            let mut max = f32::NEG_INFINITY;
            for j in 0..rows {
                let v = &mut z[j * width + c];
                *v = *v * scale + bias_of(j);
                max = if *v > max { *v } else { max };
            }
            let mut sum = 0f32;
            for j in 0..rows {
                let v = &mut z[j * width + c];
                *v = exp1(*v - max);
                sum += *v;
            }
            sums[c] = sum;
        }
    }
);

/// Σ f(x) over xs in 16 interleaved partial sums, then the tail: it vectorises (a sequential f32 sum
/// cannot be reordered by the compiler, and ran at one add per 4 cycles). Within f32 rounding of any
/// other order. Inlined into the [`dispatch!`] bodies below, so it is compiled for their tier.
#[inline(always)]
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let n16 = xs.len() / 16 * 16;
    let mut acc = [0f32; 16];
    for c in xs[..n16].chunks_exact(16) {
        for l in 0..16 {
            acc[l] += f(c[l]);
        }
    }
    acc.iter().sum::<f32>() + xs[n16..].iter().map(|&x| f(x)).sum::<f32>()
}

dispatch!(
    /// Σ xs (see [`lane_sum`]).
    sum, (xs: &[f32]) -> f32, {
    lane_sum(xs, |x| x)
});

dispatch!(
    /// Σ (xs − mean)²: the second pass of a two-pass variance (see [`lane_sum`]).
    sum_sq_dev, (xs: &[f32], mean: f32) -> f32, {
    lane_sum(xs, |x| (x - mean) * (x - mean))
});

/// dst = softmax(src · scale + bias) over one row (bias: additive, same length, or none).
/// A NaN anywhere makes the whole row NaN, as in PyTorch.
pub fn softmax_row(src: &[f32], dst: &mut [f32], scale: f32, bias: Option<&[f32]>) {
    let inv = 1.0 / exp_row(src, dst, scale, bias);
    scale_in_place(dst, inv);
}

dispatch!(
    /// xs[i] *= by.
    scale_in_place, (xs: &mut [f32], by: f32), {
    xs.iter_mut().for_each(|v| *v *= by);
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tier_agrees_bit_for_bit() {
        // Inputs across exp's range, SiLU's and tanh's switch points, specials; lengths with tails.
        let mut xs: Vec<f32> = (0..4099).map(|i| -90.0 + 180.0 * ((i * 7919) % 4099) as f32 / 4099.0).collect();
        xs.extend([0.0, -0.0, 0.3, -0.3, 1e-8, f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
        let bias: Vec<f32> = (0..xs.len()).map(|i| if i % 7 == 3 { -10000.0 } else { 0.01 * i as f32 }).collect();
        let run = || {
            let mut out: Vec<Vec<f32>> = Vec::new();
            let mut v = xs.clone();
            exp_in_place(&mut v);
            out.push(v);
            let mut v = xs.clone();
            softcap_in_place(&mut v, 0.5, 50.0);
            out.push(v);
            let mut d = vec![0f32; xs.len()];
            silu_into(&xs, &mut d);
            out.push(d.clone());
            gelu_tanh_into(&xs, &mut d);
            out.push(d.clone());
            let mut v = vec![1.5f32; xs.len()];
            mul_silu_in_place(&mut v, &xs);
            out.push(v);
            let finite: Vec<f32> = xs.iter().map(|v| if v.is_finite() { *v } else { 1.0 }).collect();
            let s = exp_row(&finite[..1000], &mut d[..1000], 0.3, Some(&bias[..1000]));
            out.push(d[..1000].to_vec());
            softmax_row(&finite[..303], &mut d[..303], 1.0, None);
            out.push(d[..303].iter().copied().chain([s, sum(&finite), sum_sq_dev(&finite, 0.5)]).collect());
            let mut v = finite.clone();
            scale_in_place(&mut v, 0.7);
            out.push(v);
            // 37 rows of 35 columns: two 16-column chunks and a tail of 3.
            let mut z = finite[..37 * 35].to_vec();
            let mut sums = vec![0f32; 35];
            exp_cols(&mut z, 35, 0.3, Some(&bias[..37]), &mut sums);
            out.push(z.into_iter().chain(sums).collect());
            out
        };
        let base = with_tier(Tier::Base, run);
        for tier in tiers_here() {
            let got = with_tier(tier, run);
            for (i, (g, b)) in got.iter().zip(&base).enumerate() {
                let same = g.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()));
                assert!(same && g.len() == b.len(), "{tier:?}: output {i} differs from the baseline");
            }
        }
    }

    /// Each column of [`exp_cols`] is [`exp_row`] of that column: the same exponentials bit for bit (the
    /// same operations per value), the sum within f32 rounding (another order), NaN kept per column.
    #[test]
    fn exp_cols_is_exp_row_down_each_column() {
        for (rows, width) in [(1, 1), (300, 96), (37, 35), (5, 16), (2, 17)] {
            let mut z: Vec<f32> = (0..rows * width).map(|i| ((i * 7919) % 101) as f32 * 0.37 - 18.0).collect();
            if rows * width > 40 {
                z[40] = f32::NAN; // column 40 % width
            }
            let bias: Vec<f32> = (0..rows).map(|j| if j % 4 == 1 { -10000.0 } else { 0.05 * j as f32 }).collect();
            for b in [None, Some(&bias[..])] {
                let mut got = z.clone();
                let mut sums = vec![0f32; width];
                exp_cols(&mut got, width, 0.3, b, &mut sums);
                for c in 0..width {
                    let col: Vec<f32> = (0..rows).map(|j| z[j * width + c]).collect();
                    let mut want = vec![0f32; rows];
                    let sum = exp_row(&col, &mut want, 0.3, b);
                    for j in 0..rows {
                        let g = got[j * width + c];
                        assert!(g.to_bits() == want[j].to_bits() || (g.is_nan() && want[j].is_nan()), "{rows}×{width} [{j}, {c}]: {g} vs {}", want[j]);
                    }
                    assert!(sums[c].is_nan() == sum.is_nan() && (sum.is_nan() || (sums[c] - sum).abs() <= 1e-6 * sum), "{rows}×{width} sum {c}");
                }
            }
        }
    }

    #[test]
    fn sums_match_f64_and_keep_nan() {
        // Lengths below, at and past whole 16-lane chunks; values with a large common offset, where
        // the summation order shows.
        for n in [0usize, 1, 15, 16, 17, 1152, 2307] {
            let xs: Vec<f32> = (0..n).map(|i| 100.0 + ((i * 7919) % 1000) as f32 * 1e-3).collect();
            let want = xs.iter().map(|&v| v as f64).sum::<f64>();
            assert!((sum(&xs) as f64 - want).abs() <= 1e-6 * want.abs().max(1.0), "sum of {n}: {} vs {want}", sum(&xs));
            let mean = (want / n.max(1) as f64) as f32;
            let want_sq = xs.iter().map(|&v| (v as f64 - mean as f64).powi(2)).sum::<f64>();
            assert!((sum_sq_dev(&xs, mean) as f64 - want_sq).abs() <= 1e-5 * want_sq.max(1e-3), "sum_sq_dev of {n}");
        }
        let mut xs = vec![1f32; 40];
        xs[33] = f32::NAN;
        assert!(sum(&xs).is_nan() && sum_sq_dev(&xs, 1.0).is_nan());
        xs[33] = 1.0;
        xs[3] = f32::NAN;
        assert!(sum(&xs).is_nan() && sum_sq_dev(&xs, 1.0).is_nan());
    }

    #[test]
    fn exp_is_within_2_ulp_of_libm_and_keeps_nan() {
        let mut worst = 0f64;
        let mut xs: Vec<f32> = (0..200_001).map(|i| -87.0 + 175.0 * i as f32 / 200_000.0).collect();
        xs.extend([0.0, -0.0, 1e-8, -1e-8, 0.5, -0.5]);
        let mut got = xs.clone();
        exp_in_place(&mut got);
        for (x, g) in xs.iter().zip(&got) {
            let want = (*x as f64).exp();
            let ulp = (want as f32).abs() * f32::EPSILON;
            worst = worst.max(((*g as f64 - want) / ulp as f64).abs());
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        let mut special = [f32::NAN, 1000.0, -1000.0, f32::INFINITY, f32::NEG_INFINITY];
        exp_in_place(&mut special);
        assert!(special[0].is_nan());
        assert!(special[1] > 1e38 && special[1].is_finite());
        assert!(special[2] >= 0.0 && special[2] < 1e-37);
        assert!(special[3] > 1e38 && special[4] < 1e-37);
    }

    #[test]
    fn exp_scale_from_integer_lanes_equals_the_scalar_conversion() {
        // exp1 against its earlier form, which built 2ⁿ with `n as i32`: equal bit for bit over the
        // clamped range, past both clamps and at the infinities.
        let before = |x: f32| {
            let x = if x > 88.0 { 88.0 } else { x };
            let x = if x < -87.3 { -87.3 } else { x };
            let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
            let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
            (poly(r) * (r * r) + r + 1.0) * f32::from_bits(((n as i32 + 127) as u32) << 23)
        };
        let xs = (0..400_001).map(|i| -90.0 + 180.0 * i as f32 / 400_000.0).chain([f32::INFINITY, f32::NEG_INFINITY, -1e30, 1e30]);
        for x in xs {
            assert_eq!(exp1(x).to_bits(), before(x).to_bits(), "x = {x}");
        }
    }

    #[test]
    fn softcap_is_within_3_ulp_of_f64_tanh_and_keeps_nan() {
        // Across the series/exp switch at 0.3, small and saturating values, both signs.
        let mut xs: Vec<f32> = (0..200_001).map(|i| -12.0 + 24.0 * i as f32 / 200_000.0).collect();
        xs.extend([0.0, -0.0, 1e-30, -1e-8, 0.299_999_98, 0.3, 0.300_000_02, -0.3, 50.0, -1e4, f32::INFINITY, f32::NEG_INFINITY]);
        let (scale, cap) = (0.7f32, 5.0f32);
        let mut got: Vec<f32> = xs.iter().map(|x| x * cap / scale).collect();
        let inputs = got.clone();
        softcap_in_place(&mut got, scale, cap);
        let mut worst = 0f64;
        for (x, g) in inputs.iter().zip(&got) {
            let y = (*x * (scale / cap)) as f64; // the argument as the f32 code forms it
            let want = cap as f64 * y.tanh();
            let ulp = ((want as f32).abs() * f32::EPSILON).max(f32::MIN_POSITIVE) as f64;
            worst = worst.max((*g as f64 - want).abs() / ulp);
            assert!(g.signum() == x.signum() || *g == 0.0, "sign of softcap({x}) = {g}");
        }
        assert!(worst <= 3.0, "worst error {worst} ulp");
        let mut nan = [f32::NAN];
        softcap_in_place(&mut nan, 1.0, 50.0);
        assert!(nan[0].is_nan());
    }

    #[test]
    fn gelu_tanh_matches_the_definition() {
        let xs: Vec<f32> = (0..2001).map(|i| (i as f32 - 1000.0) / 50.0).chain([f32::NAN]).collect();
        let mut got = vec![0f32; xs.len()];
        gelu_tanh_into(&xs, &mut got);
        for (x, g) in xs.iter().zip(&got).take(2001) {
            let x = *x as f64;
            let want = 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh());
            assert!((*g as f64 - want).abs() <= 2e-7 * want.abs().max(1.0), "gelu({x}) = {g}, want {want}");
        }
        assert!(got[2001].is_nan());
    }

    #[test]
    fn silu_softmax_and_gated_product() {
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) / 37.0).collect();
        let mut s = vec![0f32; xs.len()];
        silu_into(&xs, &mut s);
        for (x, y) in xs.iter().zip(&s) {
            let want = *x as f64 / (1.0 + (-*x as f64).exp());
            assert!((*y as f64 - want).abs() <= 1e-6 * want.abs().max(1.0), "silu({x}) = {y}, want {want}");
        }
        // In place: the same bits, across the stack block's edge.
        let mut v: Vec<f32> = (0..2500).map(|i| (i as f32 - 1250.0) / 91.0).collect();
        let mut want = vec![0f32; v.len()];
        silu_into(&v, &mut want);
        silu_in_place(&mut v);
        assert!(v.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()));
        let mut p = vec![2f32; xs.len()];
        mul_silu_in_place(&mut p, &xs);
        assert!(p.iter().zip(&s).all(|(a, b)| (a - 2.0 * b).abs() <= 1e-6 * b.abs().max(1.0)));
        let mut nan = [1f32, 2.0];
        mul_silu_in_place(&mut nan, &[f32::NAN, 0.0]);
        assert!(nan[0].is_nan() && nan[1] == 0.0);

        // Softmax with scale and an additive -10000 mask bias (diffusers' form), against f64.
        let n = 37;
        let row: Vec<f32> = (0..n).map(|i| ((i * 7919) % 23) as f32 - 11.0).collect();
        let bias: Vec<f32> = (0..n).map(|i| if i % 5 == 0 { -10000.0 } else { 0.0 }).collect();
        let mut got = vec![0f32; n];
        softmax_row(&row, &mut got, 0.3, Some(&bias));
        let z: Vec<f64> = row.iter().zip(&bias).map(|(v, b)| *v as f64 * 0.3 + *b as f64).collect();
        let m = z.iter().cloned().fold(f64::MIN, f64::max);
        let sum: f64 = z.iter().map(|v| (v - m).exp()).sum();
        for (g, v) in got.iter().zip(&z) {
            assert!((*g as f64 - (v - m).exp() / sum).abs() < 1e-7);
        }
        // Its unnormalised half: exp(z − max) and their sum (the max is a logit, so the sum is ≥ 1).
        let got_sum = exp_row(&row, &mut got, 0.3, Some(&bias)) as f64;
        assert!((got_sum - sum).abs() < 1e-6 * sum, "sum {got_sum}, want {sum}");
        for (g, v) in got.iter().zip(&z) {
            // Relative: these reach 1 (f32's ulp there is 1.2e-7), and z itself was rounded to f32; a
            // masked key gives exp's floor (≈ 1.2e-38, see the module doc) instead of 0.
            let want = (v - m).exp();
            assert!((*g as f64 - want).abs() <= 1e-6 * want + 2e-38, "{g} vs {want}");
        }
        let mut nan_row = row.clone();
        nan_row[3] = f32::NAN;
        softmax_row(&nan_row, &mut got, 1.0, None);
        assert!(got.iter().all(|v| v.is_nan()), "a NaN logit must poison its row");
        assert!(exp_row(&nan_row, &mut got, 1.0, None).is_nan(), "and its sum");
        // In the scalar tail (37 = 4 chunks of 8 + 5), with a bias: the same.
        let mut tail_nan = row.clone();
        tail_nan[35] = f32::NAN;
        assert!(exp_row(&tail_nan, &mut got, 0.3, Some(&bias)).is_nan() && got[35].is_nan(), "a NaN in the tail");
    }
}
