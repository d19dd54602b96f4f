//! SiLU and tanh-GELU over whole tensors: on the CPU (f32) in parallel chunks with the vectorised exp
//! of [`super::fastmath`]; elsewhere candle's ops. The DC-AE decoder applies SiLU to every high-resolution
//! activation (≈ 130 M values per ResBlock at 1024²) and Gemma-2's MLP tanh-GELU to 9216 channels per
//! token and layer, where candle's scalar `expf` / `tanhf` per value showed in profiles.

use super::{fastmath, is_cpu_f32, with_cpu_f32};
use crate::Result;
use candle_core::Tensor;
use rayon::prelude::*;

/// Values per parallel task: large enough to amortise the task, small enough to balance two cores.
const CHUNK: usize = 1 << 16;

fn map_cpu(x: &Tensor, f: fn(&[f32], &mut [f32])) -> Result<Tensor> {
    let out = with_cpu_f32(x, |xs| {
        let mut out = vec![0f32; xs.len()];
        out.par_chunks_mut(CHUNK).zip(xs.par_chunks(CHUNK)).for_each(|(d, s)| f(s, d));
        out
    })?;
    Ok(Tensor::from_vec(out, x.dims(), x.device())?)
}

/// x · sigmoid(x) (PyTorch `F.silu`).
pub fn silu(x: &Tensor) -> Result<Tensor> {
    if is_cpu_f32(x) {
        map_cpu(x, fastmath::silu_into)
    } else {
        Ok(x.silu()?)
    }
}

/// PyTorch `F.gelu(x, approximate="tanh")` (candle's `gelu`).
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    if is_cpu_f32(x) {
        map_cpu(x, fastmath::gelu_tanh_into)
    } else {
        Ok(x.gelu()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn match_candle_on_a_strided_tensor() -> Result<()> {
        // More than one chunk, and a transposed view (read in logical order).
        let x = (Tensor::randn(0f32, 1.0, (3, 300, 257), &Device::Cpu)? * 4.0)?.transpose(1, 2)?;
        for (got, want) in [(silu(&x)?, x.silu()?), (gelu_tanh(&x)?, x.gelu()?)] {
            assert_eq!(got.dims(), x.dims());
            let err = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(err < 1e-5, "{err}");
        }
        Ok(())
    }
}
