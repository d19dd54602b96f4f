//! GFLOP/s of our CPU GEMM (`ops/sgemm`) against the `gemm` crate and candle's matmul (which calls it) at
//! Sana shapes, on 1 and 2 rayon threads, with an f32 and a bf16 rhs (weights). Best-of-N wall time; the
//! load average is printed because the numbers mean little on a busy machine.
//! cargo run --release -p sana-core --target x86_64-unknown-linux-gnu --example bench_sgemm [-- RUNS [SHAPE]]
//! (SHAPE: run only the shapes whose name contains it, e.g. `ff-in`)
use candle_core::{Device, Tensor};
use half::bf16;
use sana_core::ops::sgemm::{bench_sgemm, cpu_gemm_kernel};
use std::time::Instant;

/// A product dst[m, n] = lhs[m, k] · rhs: `nk` = rhs stored [n, k] (a Linear weight, used transposed),
/// else [k, n] row-major (conv's im2col columns, with the conv weight [cout, k] as lhs).
struct Shape {
    name: &'static str,
    mnk: [usize; 3],
    nk: bool,
}

const SHAPES: [Shape; 15] = [
    Shape { name: "DiT qkv/out 2048×1152←1152", mnk: [2048, 1152, 1152], nk: true },
    Shape { name: "DiT ff-in 2048×5760←1152", mnk: [2048, 5760, 1152], nk: true },
    Shape { name: "DiT ff-out 2048×1152←2880", mnk: [2048, 1152, 2880], nk: true },
    Shape { name: "DiT cross kv 600×1152←1152", mnk: [600, 1152, 1152], nk: true },
    Shape { name: "DiT caption kv 600×2304←1152", mnk: [600, 2304, 1152], nk: true },
    Shape { name: "DC-AE conv 512×4096←4608", mnk: [512, 4096, 512 * 9], nk: false },
    Shape { name: "DC-AE winograd 128×2048←128", mnk: [128, 2048, 128], nk: false },
    Shape { name: "DC-AE winograd 256×1024←256", mnk: [256, 1024, 256], nk: false },
    Shape { name: "DC-AE winograd 512×512←512", mnk: [512, 512, 512], nk: false },
    Shape { name: "Gemma mlp 300×9216←2304", mnk: [300, 9216, 2304], nk: true },
    Shape { name: "gemv 1×1152←1152", mnk: [1, 1152, 1152], nk: true },
    Shape { name: "adaLN 2×6912←1152", mnk: [2, 6912, 1152], nk: true },
    Shape { name: "few rows 16×1152←1152", mnk: [16, 1152, 1152], nk: true },
    Shape { name: "few rows 17×1152←1152", mnk: [17, 1152, 1152], nk: true },
    Shape { name: "few rows 64×1152←1152", mnk: [64, 1152, 1152], nk: true },
];

/// Best wall time of `runs` calls of `f` and the CPU seconds (all threads) per call.
fn best_of(runs: usize, mut f: impl FnMut()) -> [f64; 2] {
    f(); // warm-up: page in the buffers, pack once
    let cpu0 = cpu_seconds();
    let best = (0..runs).map(|_| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64()
    }).fold(f64::MAX, f64::min);
    [best, (cpu_seconds() - cpu0) / runs as f64]
}

/// CPU time of all this process's threads, in seconds (/proc/self/task/*/schedstat, nanoseconds).
/// On a shared machine it varies far less than wall time.
fn cpu_seconds() -> f64 {
    let tasks = std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten();
    let ns = tasks.filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()));
    ns.sum::<f64>() / 1e9
}

/// dst = lhs · rhs with the `gemm` crate, the way ops/gemm.rs and candle call it.
fn gemm_crate([m, n, k]: [usize; 3], nk: bool, dst: &mut [f32], lhs: &[f32], rhs: &[f32], threads: usize) {
    let (rhs_cs, rhs_rs) = if nk { (k as isize, 1) } else { (1, n as isize) };
    // SAFETY: dense buffers of exactly m·n, m·k and k·n values for these strides.
    unsafe {
        gemm::gemm(
            m, n, k,
            dst.as_mut_ptr(), 1, n as isize, false,
            lhs.as_ptr(), 1, k as isize,
            rhs.as_ptr(), rhs_cs, rhs_rs,
            0.0, 1.0, false, false, false,
            gemm::Parallelism::Rayon(threads),
        );
    }
}

/// `iters` rounds of `step` on each of N independent accumulator chains, nothing loaded or stored:
/// GFLOP/s on the calling thread for `flops` per step, and the chains (which the caller sinks, so the
/// loop is not optimised away). Inlined into each ceiling below, compiled for its vector width.
#[inline(always)]
fn time_chains<V: Copy, const N: usize>(iters: usize, init: V, flops: usize, step: impl Fn(V) -> V) -> (f64, [V; N]) {
    let mut acc = [init; N];
    let t = Instant::now();
    for _ in 0..iters {
        for c in acc.iter_mut() {
            *c = step(*c);
        }
    }
    ((iters * N * flops) as f64 / t.elapsed().as_secs_f64() / 1e9, acc)
}

/// The machine's multiply-add ceiling: 12 independent 8-wide FMA chains (as many accumulators as the 6×16
/// kernel). GFLOP/s on the calling thread.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_peak(iters: usize) -> f64 {
    use std::arch::x86_64::*;
    let (a, b) = (_mm256_set1_ps(0.999_9), _mm256_set1_ps(1e-7));
    let (gflops, acc) = time_chains::<_, 12>(iters, _mm256_set1_ps(1.0), 16, |c| _mm256_fmadd_ps(c, a, b));
    std::hint::black_box(acc);
    gflops
}

/// The same ceiling on 16-lane zmm registers (24 chains, as many accumulators as the 12×32 kernel).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_peak_512(iters: usize) -> f64 {
    use std::arch::x86_64::*;
    let (a, b) = (_mm512_set1_ps(0.999_9), _mm512_set1_ps(1e-7));
    let (gflops, acc) = time_chains::<_, 24>(iters, _mm512_set1_ps(1.0), 32, |c| _mm512_fmadd_ps(c, a, b));
    std::hint::black_box(acc);
    gflops
}

/// The vdpbf16ps ceiling: 24 chains of 16 lanes, each instruction 32 bf16 products (64 flops).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn dpbf16_peak(iters: usize) -> f64 {
    use std::arch::x86_64::*;
    let (a, b): (__m512bh, __m512bh) = (std::mem::transmute(_mm512_set1_epi32(0x3f80_3f80)), std::mem::transmute(_mm512_set1_epi32(0x3380_3380)));
    let (gflops, acc) = time_chains::<_, 24>(iters, _mm512_set1_ps(1.0), 64, |c| _mm512_dpbf16_ps(c, a, b));
    std::hint::black_box(acc);
    gflops
}

/// One ceiling on 1 and on 2 threads at once (best of `runs`).
fn peak_pair(runs: usize, f: fn() -> f64) -> (f64, f64) {
    let one = (0..runs).map(|_| f()).fold(0f64, f64::max);
    let two = (0..runs)
        .map(|_| std::thread::scope(|s| [s.spawn(f), s.spawn(f)].map(|h| h.join().unwrap_or(0.0)).iter().sum::<f64>()))
        .fold(0f64, f64::max);
    (one, two)
}

/// FMA ceilings on 1 and on 2 threads at once, for the vector widths this CPU has.
fn print_fma_peak(runs: usize) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features fma_peak is compiled for.
        let (one, two) = peak_pair(runs, || unsafe { fma_peak(200_000_000) });
        println!("FMA ceiling (no memory traffic), ymm: {one:.1} GFLOP/s on 1 thread, {two:.1} on 2");
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: as above, avx512f.
            let (one, two) = peak_pair(runs, || unsafe { fma_peak_512(100_000_000) });
            println!("FMA ceiling (no memory traffic), zmm: {one:.1} GFLOP/s on 1 thread, {two:.1} on 2");
        }
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16") {
            // SAFETY: as above, avx512f + avx512bf16.
            let (one, two) = peak_pair(runs, || unsafe { dpbf16_peak(50_000_000) });
            println!("vdpbf16ps ceiling (no memory traffic): {one:.1} GFLOP/s on 1 thread, {two:.1} on 2");
        }
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn main() -> candle_core::Result<()> {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    println!("kernel {}, best of {runs}, load average {}", cpu_gemm_kernel(), load_average());
    print_fma_peak(runs);
    println!("GFLOP/s from the best wall time / GFLOP per CPU-second (all threads)");
    println!("{:<30} {:>3} {:>13} {:>13} {:>13} {:>13}", "shape (m×n←k)", "thr", "ours f32", "ours bf16", "gemm f32", "candle f32");
    let only = std::env::args().nth(2).unwrap_or_default();
    // Both pools live for the whole run: the CPU time of a pool's exited threads would vanish from
    // /proc/self/task.
    let pools = [1, 2].map(|threads| rayon::ThreadPoolBuilder::new().num_threads(threads).build());
    for s in SHAPES.iter().filter(|s| s.name.contains(&only)) {
        let [m, n, k] = s.mnk;
        let lhs = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
        let rhs = Tensor::randn(0f32, 1.0, if s.nk { (n, k) } else { (k, n) }, &Device::Cpu)?;
        let (lhs_v, rhs_v) = (lhs.flatten_all()?.to_vec1::<f32>()?, rhs.flatten_all()?.to_vec1::<f32>()?);
        let rhs_h: Vec<bf16> = rhs_v.iter().map(|&v| bf16::from_f32(v)).collect();
        let mut dst = vec![0f32; m * n];
        let gflops = |[wall, cpu]: [f64; 2]| {
            let g = 2.0 * (m * n * k) as f64 / 1e9;
            format!("{:>6.1}/{:<6.1}", g / wall, g / cpu)
        };
        for (threads, pool) in [1, 2].into_iter().zip(&pools) {
            let pool = pool.as_ref().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            let (ours, ours_h, crate_, candle) = pool.install(|| -> candle_core::Result<_> {
                let ours = best_of(runs, || bench_sgemm(s.mnk, &mut dst, &lhs_v, &rhs_v, s.nk));
                let ours_h = best_of(runs, || bench_sgemm(s.mnk, &mut dst, &lhs_v, &rhs_h, s.nk));
                let crate_ = best_of(runs, || gemm_crate(s.mnk, s.nk, &mut dst, &lhs_v, &rhs_v, threads));
                let rhs_t = if s.nk { rhs.t()? } else { rhs.clone() };
                let mut err = None;
                let candle = best_of(runs, || if let Err(e) = lhs.matmul(&rhs_t) { err = Some(e) });
                err.map_or(Ok((ours, ours_h, crate_, candle)), Err)
            })?;
            println!("{:<30} {threads:>3} {:>13} {:>13} {:>13} {:>13}", s.name, gflops(ours), gflops(ours_h), gflops(crate_), gflops(candle));
        }
    }
    println!("load average at the end {}", load_average());
    Ok(())
}
