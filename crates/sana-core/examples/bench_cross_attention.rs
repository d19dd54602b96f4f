//! The DiT's cross-attention (`ops/cross_attention.rs`) at Sana-600M 1024² CFG shape: 2 × 1024 queries,
//! 16 heads of 72, 300 caption keys; best and median of RUNS. K/V f32, or bf16 with PROFILE_DTYPE=bf16.
//! cargo run --release -p sana-core --example bench_cross_attention [-- RUNS]
use candle_core::{DType, Device, Tensor};
use sana_core::ops::cross_attention::cross_attention;
use std::time::Instant;

fn main() -> sana_core::Result<()> {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let dev = Device::Cpu;
    let (b, n, h, s, hd) = (2usize, 1024usize, 16usize, 300usize, 72usize);
    let kv_dt = if std::env::var("PROFILE_DTYPE").is_ok_and(|v| v == "bf16") { DType::BF16 } else { DType::F32 };
    let q = Tensor::randn(0f32, 1.0, (b, n, h * hd), &dev)?;
    let k = Tensor::randn(0f32, 1.0, (b, h, s, hd), &dev)?.to_dtype(kv_dt)?;
    let v = Tensor::randn(0f32, 1.0, (b, h, s, hd), &dev)?.to_dtype(kv_dt)?;
    let scale = 1.0 / (hd as f64).sqrt();
    let mut times = Vec::with_capacity(runs);
    for i in 0..=runs {
        let t = Instant::now();
        let o = cross_attention(&q, &k, &v, scale, None)?;
        if i > 0 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        drop(o);
    }
    times.sort_by(f64::total_cmp);
    let flops = 4.0 * (b * n * h * s * hd) as f64;
    println!(
        "cross-attention {b}×{n}×{h}×{s}×{hd} ({kv_dt:?} K/V, kernel {}): best {:.2} ms, median {:.2} ms, {:.0} GFLOP/s at the best",
        sana_core::ops::sgemm::cpu_gemm_kernel(), times[0], times[runs / 2], flops / times[0] * 1e-6
    );
    // SANA_GEMM_STATS=1: the op's products by shape (per-thread wall time, summed over both threads).
    print!("{}", sana_core::ops::sgemm::sgemm_stats_report());
    Ok(())
}
