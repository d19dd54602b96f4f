//! Where one Sana-600M transformer block spends its time on the CPU: the block's steps, as
//! `models/sana_transformer.rs` runs them, timed one by one (f32, or bf16 weights with
//! PROFILE_DTYPE=bf16; 32×32 latents, batch 2 = one CFG step, 300 caption tokens, random weights). Multiply by 28 blocks for a forward. As the model does: attn1's
//! q/k/v are one GEMM over the merged [3D, D] weight, and attn2's caption K/V (one [2·inner, D] GEMM) are
//! computed once per generation (the caption cache), reported apart from the per-step total. GEMMs go
//! through the model's `Linear` (our CPU GEMM) and the cross-attention through its op, as in the model.
//! cargo run --release -p sana-core --example profile_dit_block [-- RUNS]

// As in the Node addon: freed activation blocks are reused instead of page-faulted in again.
#[global_allocator]
static ALLOC: sana_core::alloc_cache::LargeBlockCache = sana_core::alloc_cache::LargeBlockCache::new();

use candle_core::{DType, Device, Tensor};
use sana_core::models::linear::Linear;
use sana_core::ops::cross_attention::cross_attention;
use sana_core::ops::{gated_residual, modulated_layer_norm, relu_linear_attention, silu_depthwise_conv2d_glu_nhwc};
use std::collections::BTreeMap;
use std::time::Instant;

fn main() -> sana_core::Result<()> {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let dev = Device::Cpu;
    let (b, h, w, d, s) = (2usize, 32usize, 32usize, 1152usize, 300usize);
    let (n, heads, xheads, xdim, hid) = (h * w, 36usize, 16usize, 72usize, 2880usize);
    let r = |dims: &[usize], scale: f64| -> sana_core::Result<Tensor> { Ok((Tensor::randn(0f32, 1.0, dims, &dev)? * scale)?) };
    let lin = |o: usize, i: usize| r(&[o, i], 1.0 / (i as f64).sqrt());
    let (wqkv, wo) = (lin(3 * d, d)?, lin(d, d)?);
    let (cq, ckv, co) = (lin(xheads * xdim, d)?, lin(2 * xheads * xdim, d)?, lin(d, xheads * xdim)?);
    let (w_inv, w_dw, b_dw, w_pt) = (lin(2 * hid, d)?, r(&[2 * hid, 1, 3, 3], 0.3)?, r(&[2 * hid], 0.1)?, lin(d, hid)?);
    let x = r(&[b, n, d], 1.0)?;
    let ctx = r(&[b, s, d], 1.0)?;
    let m = r(&[b, 6, d], 0.1)?;
    // The model's Linear (our CPU GEMM), as the blocks run it. PROFILE_DTYPE=bf16: the Linear weights
    // held in bf16, as `dtype: 'bfloat16'` loads them (and the caption K/V too where the CPU multiplies
    // bf16 in bf16, as the model keeps them).
    let bf16 = std::env::var("PROFILE_DTYPE").is_ok_and(|v| v == "bf16");
    let wdt = if bf16 { DType::BF16 } else { DType::F32 };
    let lin_of = |wt: &Tensor| -> sana_core::Result<Linear> { Ok(Linear::from_weight(wt.to_dtype(wdt)?, None, "profile")) };
    let (l_qkv, l_o, l_cq, l_ckv, l_co) = (lin_of(&wqkv)?, lin_of(&wo)?, lin_of(&cq)?, lin_of(&ckv)?, lin_of(&co)?);
    let (l_inv, l_pt) = (lin_of(&w_inv)?, lin_of(&w_pt)?);
    let split = |t: &Tensor, len: usize| t.reshape((b, len, xheads, xdim))?.transpose(1, 2)?.contiguous();
    // Once per generation: the caption's K and V for this block (one merged GEMM, heads split).
    let t0 = Instant::now();
    let kv = l_ckv.forward(&ctx)?;
    let (ckh, cvh) = (split(&kv.narrow(2, 0, xheads * xdim)?, s)?, split(&kv.narrow(2, xheads * xdim, xheads * xdim)?, s)?);
    let kv_dt = if bf16 && sana_core::ops::sgemm::bf16_rhs_rounds_lhs() { DType::BF16 } else { DType::F32 };
    let (ckh, cvh) = (ckh.to_dtype(kv_dt)?, cvh.to_dtype(kv_dt)?);
    let caption_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut t: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut lap = |name: &'static str, t0: &mut Instant| {
        t.entry(name).or_default().push(t0.elapsed().as_secs_f64());
        *t0 = Instant::now();
    };
    for _ in 0..runs + 1 {
        let mut t0 = Instant::now();
        let nx = modulated_layer_norm(&x, &m.narrow(1, 0, 1)?, &m.narrow(1, 1, 1)?, 1e-6, None)?;
        lap("1 norm1 (modulated)", &mut t0);
        let qkv = l_qkv.forward(&nx)?;
        let (q, k, v) = (qkv.narrow(2, 0, d)?, qkv.narrow(2, d, d)?, qkv.narrow(2, 2 * d, d)?);
        lap("2 attn1 merged q/k/v GEMM", &mut t0);
        let a = relu_linear_attention(&q, &k, &v, heads, 1e-15)?;
        lap("3 attn1 linear attention", &mut t0);
        let o = l_o.forward(&a)?;
        lap("4 attn1 out GEMM", &mut t0);
        let x1 = gated_residual(&x, &o, &m.narrow(1, 2, 1)?)?;
        lap("5 gated residual 1", &mut t0);
        let cqv = l_cq.forward(&x1)?;
        lap("6 attn2 q GEMM", &mut t0);
        let ao = cross_attention(&cqv, &ckh, &cvh, 1.0 / (xdim as f64).sqrt(), None)?;
        lap("7 attn2 q·kᵀ, softmax, p·v", &mut t0);
        let x2 = (&x1 + l_co.forward(&ao)?)?;
        lap("9 attn2 out GEMM + residual", &mut t0);
        let nx = modulated_layer_norm(&x2, &m.narrow(1, 3, 1)?, &m.narrow(1, 4, 1)?, 1e-6, None)?;
        lap("a norm2 (modulated)", &mut t0);
        // Channels-last, as the model runs the Mix-FFN on the CPU.
        let y = l_inv.forward(&nx)?;
        lap("b ff conv_inverted GEMM", &mut t0);
        let y = silu_depthwise_conv2d_glu_nhwc(&y.reshape((b, h, w, 2 * hid))?, &w_dw, Some(&b_dw))?;
        lap("c ff silu + depthwise + GLU", &mut t0);
        let y = l_pt.forward(&y.reshape((b, n, hid))?)?;
        lap("d ff conv_point GEMM", &mut t0);
        let out = gated_residual(&x2, &y, &m.narrow(1, 5, 1)?)?;
        lap("e gated residual 2", &mut t0);
        assert_eq!(out.dtype(), DType::F32);
    }
    let mut total = 0.0;
    let kernel = sana_core::ops::sgemm::cpu_gemm_kernel();
    println!("one Sana-600M block, 32×32 latents, batch 2, {wdt:?} weights, kernel {kernel}, {runs} runs after a warm-up (median ms):");
    for (name, v) in &mut t {
        let mut v = v[1..].to_vec();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let med = v[v.len() / 2] * 1e3;
        total += med;
        println!("  {name:<36} {med:8.1}");
    }
    println!("  {:<36} {total:8.1}  (× 28 blocks = {:.1} s)", "block", total * 28.0 / 1e3);
    println!("  {:<36} {caption_ms:8.1}  (once per generation, not per step)", "attn2 caption K/V (cached)");
    Ok(())
}
