//! f32 3×3 convolution throughput of `ops::conv2d` (per-tap GEMMs) at DC-AE decoder shapes, best of 5.
//! cargo run --release -p sana-core --example bench_conv
use candle_core::{Device, Tensor};
use std::time::Instant;

fn main() -> sana_core::Result<()> {
    for (c, hw) in [(256usize, 256usize), (512, 128), (128, 512)] {
        let x = Tensor::randn(0f32, 1.0, (1, c, hw, hw), &Device::Cpu)?;
        let w = (Tensor::randn(0f32, 1.0, (c, c, 3, 3), &Device::Cpu)? * 0.02)?;
        let b = Tensor::zeros(c, candle_core::DType::F32, &Device::Cpu)?;
        let _ = sana_core::ops::conv2d::conv2d(&x, &w, Some(&b), 1, 1)?;
        // Best of 5: on a shared VM the fastest run is the steadiest estimate of the code's own speed.
        let mut dt = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            let _ = sana_core::ops::conv2d::conv2d(&x, &w, Some(&b), 1, 1)?;
            dt = dt.min(t.elapsed().as_secs_f64());
        }
        println!("{c} ch, {hw}²: {:.0} ms, {:.0} GFLOP/s", dt * 1e3, 2.0 * (c * c * 9 * hw * hw) as f64 / dt / 1e9);
    }
    Ok(())
}
