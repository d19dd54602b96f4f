//! Grouped 1×1 convolution on channel-major tensors as one batched matmul per image.
//! PyTorch: `nn.Conv2d(Cin, Cout, 1, groups=g)`; with g = 1 it is a plain pointwise conv (a Linear over
//! channels without the NCHW→NHWC permute).
//!
//! candle's grouped conv runs one conv call per group (DC-AE's LiteMLA has 3·heads groups, 96 at the
//! real widths); here each image is a single `[g, Cout/g, Cin/g] @ [g, Cin/g, H·W]` batched GEMM.

use crate::{ensure_arg, Result};
use candle_core::Tensor;

/// x: [B, Cin, H, W], weight: [Cout, Cin/groups, 1, 1] or [Cout, Cin/groups], bias: [Cout]
/// → [B, Cout, H, W].
pub fn grouped_conv1x1(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, groups: usize) -> Result<Tensor> {
    let (b, cin, h, w) = x.dims4()?;
    let cout = weight.dim(0)?;
    let ci_g = weight.elem_count() / cout.max(1);
    ensure_arg!(groups >= 1 && cin % groups == 0 && cout % groups == 0 && ci_g * groups == cin, "weight",
        "grouped 1×1 conv weight {:?} does not fit {cin} input channels in {groups} groups", weight.dims());
    let co_g = cout / groups;
    // [g, Cout/g, Cin/g]
    let w3 = weight.reshape((groups, co_g, ci_g))?;
    let x = x.contiguous()?;
    let mut outs = Vec::with_capacity(b);
    for n in 0..b {
        // 1. [g, Cout/g, Cin/g] @ [g, Cin/g, H·W] → [g, Cout/g, H·W] = [Cout, H, W]
        let xn = x.get(n)?.reshape((groups, ci_g, h * w))?;
        outs.push(w3.matmul(&xn)?.reshape((cout, h, w))?);
    }
    // 2. Batch back together (no copy for one image), then the bias.
    let y = if b == 1 { outs.swap_remove(0).unsqueeze(0)? } else { Tensor::stack(&outs, 0)? };
    Ok(match bias {
        Some(bias) => y.broadcast_add(&bias.reshape((1, cout, 1, 1))?)?,
        None => y,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Literal definition: out[n, o, p] = bias[o] + Σ_{i in group(o)} w[o, i] · x[n, g(o)·Cin/g + i, p].
    fn naive(x: &[f32], wt: &[f32], bias: &[f32], b: usize, cin: usize, cout: usize, hw: usize, g: usize) -> Vec<f32> {
        let (ci_g, co_g) = (cin / g, cout / g);
        let mut out = vec![0f32; b * cout * hw];
        for n in 0..b {
            for o in 0..cout {
                let grp = o / co_g;
                for p in 0..hw {
                    let mut s = bias[o] as f64;
                    for i in 0..ci_g {
                        s += (wt[o * ci_g + i] * x[(n * cin + grp * ci_g + i) * hw + p]) as f64;
                    }
                    out[(n * cout + o) * hw + p] = s as f32;
                }
            }
        }
        out
    }

    #[test]
    fn matches_naive_reference_and_candle() -> Result<()> {
        let dev = Device::Cpu;
        for &(b, cin, cout, h, w, g) in &[(2, 12, 6, 3, 5, 3), (1, 8, 8, 4, 4, 8), (3, 6, 4, 2, 3, 1), (1, 96, 96, 5, 7, 3)] {
            let x = Tensor::randn(0f32, 1.0, (b, cin, h, w), &dev)?;
            let wt = Tensor::randn(0f32, 1.0, (cout, cin / g, 1, 1), &dev)?;
            let bias = Tensor::randn(0f32, 1.0, cout, &dev)?;
            let got = grouped_conv1x1(&x, &wt, Some(&bias), g)?;
            assert_eq!(got.dims(), &[b, cout, h, w]);
            let got = got.flatten_all()?.to_vec1::<f32>()?;
            let want = naive(&x.flatten_all()?.to_vec1()?, &wt.flatten_all()?.to_vec1()?, &bias.to_vec1()?, b, cin, cout, h * w, g);
            let candle = x.conv2d(&wt, 0, 1, 1, g)?.broadcast_add(&bias.reshape((1, cout, 1, 1))?)?;
            let candle = candle.flatten_all()?.to_vec1::<f32>()?;
            for i in 0..got.len() {
                assert!((got[i] - want[i]).abs() < 1e-4, "{:?} at {i}: {} vs {}", (b, cin, cout, g), got[i], want[i]);
                assert!((candle[i] - want[i]).abs() < 1e-4);
            }
        }
        Ok(())
    }

    #[test]
    fn rejects_mismatched_groups() {
        let x = Tensor::zeros((1, 6, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let wt = Tensor::zeros((4, 3, 1, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(grouped_conv1x1(&x, &wt, None, 3), Err(crate::SanaError::InvalidArgument { .. })));
    }
}
