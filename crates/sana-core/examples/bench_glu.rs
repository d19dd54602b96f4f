//! Mix-FFN middle (SiLU → depthwise 3×3 → GLU) at Sana-600M 1024² CFG shape: planar vs channels-last.
//! cargo run --release -p sana-core --example bench_glu [-- RUNS]
use candle_core::{Device, Tensor};
use sana_core::ops::{silu_depthwise_conv2d_glu, silu_depthwise_conv2d_glu_nhwc};
use std::time::Instant;

fn best(runs: usize, mut f: impl FnMut() -> sana_core::Result<Tensor>) -> sana_core::Result<f64> {
    f()?;
    let mut best = f64::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        let y = f()?;
        best = best.min(t.elapsed().as_secs_f64());
        drop(y);
    }
    Ok(best * 1e3)
}

fn main() -> sana_core::Result<()> {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let dev = Device::Cpu;
    let (b, c2, h, w) = (2usize, 5760usize, 32usize, 32usize);
    let planar = (Tensor::randn(0f32, 1.0, (b, c2, h, w), &dev)? * 2.0)?;
    let nhwc = planar.permute((0, 2, 3, 1))?.contiguous()?;
    let wt = (Tensor::randn(0f32, 1.0, (c2, 1, 3, 3), &dev)? * 0.3)?;
    let bias = Tensor::randn(0f32, 1.0, c2, &dev)?;
    let p = best(runs, || silu_depthwise_conv2d_glu(&planar, &wt, Some(&bias)))?;
    let n = best(runs, || silu_depthwise_conv2d_glu_nhwc(&nhwc, &wt, Some(&bias)))?;
    println!("planar {p:.1} ms, channels-last {n:.1} ms (best of {runs})");
    Ok(())
}
