//! f32 GEMM throughput of candle's CPU matmul at a Sana-600M shape (the DiT and DC-AE are GEMM-bound).
//! cargo run --release -p sana-core --example bench_gemm
use candle_core::{Device, Tensor};
use std::time::Instant;

fn main() -> candle_core::Result<()> {
    // Tokens × inner for 32×32 latents, batch 2, against a 1152→1152 Linear (Sana-600M inner dim).
    let (m, k, n) = (2048usize, 1152usize, 2880usize);
    let a = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
    let b = Tensor::randn(0f32, 1.0, (k, n), &Device::Cpu)?;
    let _ = a.matmul(&b)?; // warm-up
    let mut best = f64::MAX;
    let runs = 10;
    let cpu0 = cpu_seconds();
    for _ in 0..runs {
        let t = Instant::now();
        let _ = a.matmul(&b)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    let cpu = (cpu_seconds() - cpu0) / runs as f64;
    let flop = 2.0 * (m * k * n) as f64;
    // CPU seconds per matmul are far less sensitive to other processes than wall time on a shared machine.
    println!(
        "matmul {m}×{k} @ {k}×{n}: best wall {:.1} ms ({:.1} GFLOP/s), {:.1} GFLOP per CPU-second",
        best * 1e3,
        flop / best / 1e9,
        flop / cpu / 1e9
    );
    Ok(())
}

/// User + system CPU time of this process, from /proc/self/stat (clock ticks of 10 ms).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}
