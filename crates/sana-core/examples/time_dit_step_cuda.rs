//! Where one Sana-600M transformer block spends its time on a GPU, op group by op group, as
//! `models/sana_transformer.rs` runs them (its `Linear`s and ops; random weights; 1024² → 32×32 latent
//! tokens, 300 caption tokens, bf16 by default). Each group is timed with the device synchronised before
//! and after it (wall time on the host: a launch-bound group shows its launch overhead too). Batches are
//! DiT batches: with CFG, 1 image = batch 2, 16 images = batch 32. × 28 blocks ≈ one step's blocks.
//!
//! Old vs new paths come from the environment, read once per process (see `ops/cuda/mod.rs` and
//! `device.rs`): `SANA_CUDA_FUSED=softmax,adaln,residual,mixffn|all`, `SANA_CUDA_EVENT_TRACKING=0`,
//! `SANA_CUDA_POOL_KEEP=1`; scripts/device-check.sh runs it once per setting.
//!
//! cargo run --release -p sana-core --features cuda --example time_dit_step_cuda [-- RUNS BATCHES DTYPE]
//! (defaults: 10 runs after one warm-up, batches 2,32, bfloat16 (or float16, float32); prints one JSON line per batch too).
use candle_core::{DType, Device, Tensor};
use sana_core::models::linear::Linear;
use sana_core::ops::softmax::scaled_softmax;
use sana_core::ops::{gated_residual, modulated_layer_norm, relu_linear_attention, silu_depthwise_conv2d_glu};
use std::time::Instant;

/// Sana-600M: D = 1152, 36 linear-attention heads of 32, 16 cross-attention heads of 72, Mix-FFN 2880.
const D: usize = 1152;
const HEADS: usize = 36;
const XHEADS: usize = 16;
const XDIM: usize = 72;
const HID: usize = 2880;
const S: usize = 300;
const GRID: usize = 32;

fn main() -> sana_core::Result<()> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let batches: Vec<usize> = args.next().unwrap_or_else(|| "2,32".into()).split(',').filter_map(|b| b.parse().ok()).collect();
    let dtype = match args.next().as_deref() {
        Some("float32") => DType::F32,
        Some("float16") => DType::F16,
        _ => DType::BF16,
    };
    let dev = match sana_core::device::resolve_device("cuda:0") {
        Ok(dev) => dev,
        Err(e) => {
            println!("time_dit_step_cuda: no CUDA device ({e}); nothing to time");
            return Ok(());
        }
    };
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    println!(
        "SANA_CUDA_FUSED={:?} SANA_CUDA_EVENT_TRACKING={:?} SANA_CUDA_POOL_KEEP={:?} dtype {dtype:?}",
        env("SANA_CUDA_FUSED"),
        env("SANA_CUDA_EVENT_TRACKING"),
        env("SANA_CUDA_POOL_KEEP")
    );
    let block = Block::random(&dev, dtype)?;
    for b in batches {
        time_batch(&block, &dev, dtype, b, runs)?;
    }
    Ok(())
}

/// One block's weights, as `SanaTransformerBlock` holds them.
struct Block {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    x_q: Linear,
    x_k: Linear,
    x_v: Linear,
    x_out: Linear,
    conv_inverted: Linear,
    conv_depth_w: Tensor,
    conv_depth_b: Tensor,
    conv_point: Linear,
}

impl Block {
    fn random(dev: &Device, dtype: DType) -> sana_core::Result<Self> {
        let r = |dims: &[usize], scale: f64| -> sana_core::Result<Tensor> { Ok((Tensor::randn(0f32, 1.0, dims, dev)? * scale)?.to_dtype(dtype)?) };
        let lin = |o: usize, i: usize, bias: bool, name: &str| -> sana_core::Result<Linear> {
            Ok(Linear::from_weight(r(&[o, i], 1.0 / (i as f64).sqrt())?, if bias { Some(r(&[o], 0.02)?) } else { None }, name))
        };
        let xi = XHEADS * XDIM;
        Ok(Block {
            to_q: lin(D, D, false, "attn1.to_q")?,
            to_k: lin(D, D, false, "attn1.to_k")?,
            to_v: lin(D, D, false, "attn1.to_v")?,
            to_out: lin(D, D, true, "attn1.to_out.0")?,
            x_q: lin(xi, D, true, "attn2.to_q")?,
            x_k: lin(xi, D, true, "attn2.to_k")?,
            x_v: lin(xi, D, true, "attn2.to_v")?,
            x_out: lin(D, xi, true, "attn2.to_out.0")?,
            conv_inverted: lin(2 * HID, D, true, "ff.conv_inverted")?,
            conv_depth_w: r(&[2 * HID, 1, 3, 3], 0.3)?,
            conv_depth_b: r(&[2 * HID], 0.1)?,
            conv_point: lin(D, HID, false, "ff.conv_point")?,
        })
    }
}

/// Per-group times of `runs` block forwards at DiT batch `b` (after one warm-up), printed as a table and
/// one JSON line.
fn time_batch(blk: &Block, dev: &Device, dtype: DType, b: usize, runs: usize) -> sana_core::Result<()> {
    let n = GRID * GRID;
    let r = |dims: &[usize], scale: f64| -> sana_core::Result<Tensor> { Ok((Tensor::randn(0f32, 1.0, dims, dev)? * scale)?.to_dtype(dtype)?) };
    let x = r(&[b, n, D], 1.0)?;
    let ctx = r(&[b, S, D], 1.0)?;
    let m = r(&[b, 6, D], 0.1)?;
    // The caption mask as the model builds it: 0 / −10000 per token, f32 [B, 1, 1, S]; half the caption padded.
    let mask: Vec<f32> = (0..b * S).map(|i| if i % S < S / 2 { 0.0 } else { -10000.0 }).collect();
    let bias = Tensor::from_vec(mask, (b, 1, 1, S), &Device::Cpu)?.to_device(dev)?;
    let mut groups: Vec<(&'static str, Vec<f64>)> = Vec::new();
    for run in 0..=runs {
        dev.synchronize()?;
        let mut t0 = Instant::now();
        let mut lap = |name: &'static str| -> sana_core::Result<()> {
            dev.synchronize()?;
            if run > 0 {
                match groups.iter_mut().find(|(g, _)| *g == name) {
                    Some((_, v)) => v.push(t0.elapsed().as_secs_f64()),
                    None => groups.push((name, vec![t0.elapsed().as_secs_f64()])),
                }
            }
            t0 = Instant::now();
            Ok(())
        };
        // 2. Self-attention.
        let nx = modulated_layer_norm(&x, &m.narrow(1, 0, 1)?, &m.narrow(1, 1, 1)?, 1e-6, None)?;
        lap("norm1 (modulated LayerNorm)")?;
        let (q, k, v) = (blk.to_q.forward(&nx)?, blk.to_k.forward(&nx)?, blk.to_v.forward(&nx)?);
        lap("attn1 q/k/v GEMMs")?;
        let a = relu_linear_attention(&q, &k, &v, HEADS, 1e-15)?;
        lap("attn1 linear attention")?;
        let o = blk.to_out.forward(&a)?;
        lap("attn1 out GEMM + bias")?;
        let x1 = gated_residual(&x, &o, &m.narrow(1, 2, 1)?)?;
        lap("gated residual 1")?;
        // 3. Cross-attention (as CrossAttention::forward).
        let split = |t: Tensor, len: usize| t.reshape((b, len, XHEADS, XDIM))?.transpose(1, 2)?.contiguous();
        let (cq, ck, cv) = (blk.x_q.forward(&x1)?, blk.x_k.forward(&ctx)?, blk.x_v.forward(&ctx)?);
        lap("attn2 q/k/v GEMMs + bias")?;
        let (cq, ck, cv) = (split(cq, n)?, split(ck, S)?, split(cv, S)?);
        lap("attn2 head split")?;
        let logits = cq.matmul(&ck.t()?)?;
        lap("attn2 scores GEMM")?;
        let p = scaled_softmax(&logits, 1.0 / (XDIM as f64).sqrt(), Some(&bias))?.to_dtype(cv.dtype())?;
        lap("attn2 softmax (+ scale, mask, cast)")?;
        let ao = p.matmul(&cv)?;
        lap("attn2 p·v GEMM")?;
        let ao = ao.transpose(1, 2)?.reshape((b, n, XHEADS * XDIM))?;
        lap("attn2 head merge")?;
        let x2 = (&x1 + blk.x_out.forward(&ao)?)?;
        lap("attn2 out GEMM + bias + residual")?;
        // 4. Mix-FFN (as GluMbConv::forward).
        let nx = modulated_layer_norm(&x2, &m.narrow(1, 3, 1)?, &m.narrow(1, 4, 1)?, 1e-6, None)?;
        lap("norm2 (modulated LayerNorm)")?;
        let y = blk.conv_inverted.forward_channels(&nx.transpose(1, 2)?)?;
        lap("ff conv_inverted GEMM + bias")?;
        let y = silu_depthwise_conv2d_glu(&y.reshape((b, 2 * HID, GRID, GRID))?, &blk.conv_depth_w, Some(&blk.conv_depth_b))?;
        lap("ff silu + depthwise 3×3 + GLU")?;
        let y = blk.conv_point.forward_channels_to_tokens(&y.reshape((b, HID, n))?)?;
        lap("ff conv_point GEMM")?;
        let out = gated_residual(&x2, &y, &m.narrow(1, 5, 1)?)?;
        lap("gated residual 2")?;
        if run == runs {
            let bad = out.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?.iter().filter(|v| !v.is_finite()).count();
            if bad > 0 {
                println!("WARNING: {bad} non-finite values in the block output");
            }
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2] * 1e3
    };
    println!("one Sana-600M block, {GRID}×{GRID} tokens, DiT batch {b}, {dtype:?}, median of {runs} runs (ms):");
    let mut total = 0.0;
    let mut json = Vec::new();
    for (name, v) in &groups {
        let med = median(v);
        total += med;
        println!("  {name:<38} {med:9.3}");
        json.push(format!("\"{name}\":{med:.4}"));
    }
    println!("  {:<38} {total:9.3}  (× 28 blocks = {:.1} ms)", "block", total * 28.0);
    println!("JSON {{\"batch\":{b},\"block_ms\":{total:.4},\"groups\":{{{}}}}}", json.join(","));
    Ok(())
}
