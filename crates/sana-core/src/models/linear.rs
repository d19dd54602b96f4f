//! The one `nn.Linear` of every model (1×1 convs included: the DiT's Mix-FFN, DC-AE's projections), and so
//! the one place LoRA hooks in.
//!
//! ```text
//! y = x Wᵀ + b                                   plain (Gemma, the DiT's embeddings and proj_out)
//! y = x W'ᵀ + b + Σₖ sₖ · s · B_k (A_k x)        with the call's adapters (peft's LoRA forward):
//!     W' = W, or the fused weight; A_k [r, in], B_k [out, r]; sₖ = weight_k · alpha_k / r_k; s = the call's scale
//! ```
//! The adapters a call runs with come from a snapshot ([`LoraCall`]) taken when the forward starts, so adapters
//! changed meanwhile by another thread never mix into a running pass; the base weight is never copied.

use crate::weights::Vb;
use crate::Result;
use candle_core::{DType, Tensor};
use std::collections::BTreeMap;

/// How a Linear's input and output are laid out (the DiT keeps its Mix-FFN channel-major).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// x [..., in] → [..., out].
    Tokens,
    /// x [B, in, N] (any strides) → [B, out, N]: a 1×1 conv.
    Channels,
    /// x [B, in, N] → [B, N, out], contiguous: a 1×1 conv whose output is token-major.
    ChannelsToTokens,
}

impl Layout {
    /// Layouts of the down (A) and up (B) projections of a low-rank term: `B(A x)` has this layout overall.
    fn low_rank(self) -> (Layout, Layout) {
        match self {
            Layout::ChannelsToTokens => (Layout::Channels, Layout::ChannelsToTokens),
            l => (l, l),
        }
    }
}

/// `nn.Linear`, or a 1×1 `nn.Conv2d` whose weight [out, in, 1, 1] is kept as [out, in].
pub struct Linear {
    weight: Tensor,       // [out, in]
    bias: Option<Tensor>, // [out]
    /// Checkpoint module path (`transformer_blocks.0.attn1.to_q`): the name adapter keys use.
    path: String,
    /// Loaded from a 1×1 conv: a LoRA for it has 1×1 conv factors ([r, in, 1, 1], [out, r, 1, 1]).
    conv: bool,
}

impl Linear {
    /// `prefix.weight` [out, in] (and `prefix.bias` [out] when `bias`).
    pub fn new(in_dim: usize, out_dim: usize, bias: bool, vb: Vb) -> Result<Self> {
        let weight = vb.get_weight((out_dim, in_dim), "weight")?;
        Self::with_bias(weight, bias, vb, false)
    }

    /// A 1×1 `nn.Conv2d`: `prefix.weight` [out, in, 1, 1] loaded as a linear map.
    pub fn conv1x1(in_dim: usize, out_dim: usize, bias: bool, vb: Vb) -> Result<Self> {
        let weight = vb.get_weight((out_dim, in_dim, 1, 1), "weight")?.reshape((out_dim, in_dim))?;
        Self::with_bias(weight, bias, vb, true)
    }

    /// A linear map whose [out, in] weight was reshaped from another layer (a p×p patch conv).
    pub fn from_weight(weight: Tensor, bias: Option<Tensor>, path: &str) -> Self {
        Linear { weight, bias, path: path.to_string(), conv: false }
    }

    fn with_bias(weight: Tensor, bias: bool, vb: Vb, conv: bool) -> Result<Self> {
        let bias = if bias { Some(vb.get(weight.dim(0)?, "bias")?) } else { None };
        Ok(Linear { weight, bias, path: vb.prefix().to_string(), conv })
    }

    /// The checkpoint module path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The [out, in] base weight (shared with the checkpoint store, never modified).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The [out] bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// True for a 1×1 conv.
    pub fn is_conv(&self) -> bool {
        self.conv
    }

    /// True when the call's adapters change this layer (unfused terms or a fused weight).
    pub fn is_adapted(&self, lora: LoraCall) -> bool {
        lora.layers.is_some_and(|l| l.contains_key(&self.path))
    }

    /// x [..., in] → [..., out].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        project(&self.weight, self.bias.as_ref(), Layout::Tokens, x)
    }

    /// Channel-major 1×1 conv: x [B, in, N] → [B, out, N].
    pub fn forward_channels(&self, x: &Tensor) -> Result<Tensor> {
        project(&self.weight, self.bias.as_ref(), Layout::Channels, x)
    }

    /// 1×1 conv from channel-major input to token-major output: x [B, in, N] → [B, N, out].
    pub fn forward_channels_to_tokens(&self, x: &Tensor) -> Result<Tensor> {
        project(&self.weight, self.bias.as_ref(), Layout::ChannelsToTokens, x)
    }

    /// 1×1 conv on an image: x [B, in, H, W] → [B, out, H, W] (DC-AE's convs).
    pub fn forward_nchw(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let y = self.forward_channels(&x.reshape((b, c, h * w))?)?;
        Ok(y.reshape((b, self.weight.dim(0)?, h, w))?)
    }

    /// Any layout, with whatever the call's adapters hold for this layer (see the module docs).
    pub fn forward_lora(&self, x: &Tensor, layout: Layout, lora: LoraCall) -> Result<Tensor> {
        let Some(layer) = lora.layers.and_then(|l| l.get(&self.path)) else {
            return project(&self.weight, self.bias.as_ref(), layout, x);
        };
        let mut y = project(layer.merged.as_ref().unwrap_or(&self.weight), self.bias.as_ref(), layout, x)?;
        let (down_layout, up_layout) = layout.low_rank();
        for term in &layer.terms {
            let s = term.scale * lora.scale;
            if s == 0.0 {
                continue;
            }
            // peft: lora_B(lora_A(x)) * scaling
            let h = project(&term.down, None, down_layout, x)?;
            y = (y + project(&term.up, None, up_layout, &h)?.affine(s, 0.0)?)?;
        }
        Ok(y)
    }
}

/// x · Wᵀ + b in `layout`, W [out, in].
fn project(weight: &Tensor, bias: Option<&Tensor>, layout: Layout, x: &Tensor) -> Result<Tensor> {
    if crate::ops::is_cpu_f32(x) && weight.device().is_cpu() && matches!(weight.dtype(), DType::F32 | DType::BF16 | DType::F16) {
        return project_cpu(weight, bias, layout, x);
    }
    match layout {
        Layout::Tokens => {
            // One GEMM over all leading dims: x[M, in] @ Wᵀ.
            let (&in_dim, lead) = x.dims().split_last().ok_or_else(|| candle_core::Error::Msg("linear input is a scalar".into()))?;
            let rows: usize = lead.iter().product();
            let y = x.reshape((rows, in_dim))?.matmul(&weight.t()?)?;
            let y = match bias {
                Some(b) => y.broadcast_add(b)?,
                None => y,
            };
            Ok(y.reshape([lead, &[weight.dim(0)?]].concat())?)
        }
        Layout::Channels => {
            let (b, _, _) = x.dims3()?;
            let (o, i) = weight.dims2()?;
            // Stride-0 batch on the weight: one GEMM per batch item, no copies of W.
            let y = weight.broadcast_as((b, o, i))?.matmul(x)?;
            Ok(match bias {
                Some(bias) => y.broadcast_add(&bias.reshape((o, 1))?)?,
                None => y,
            })
        }
        Layout::ChannelsToTokens => {
            // (W · x)ᵀ = xᵀ · Wᵀ per batch item, both operands read transposed, so the residual add that
            // follows reads both operands in order. One 2-D GEMM per item: candle 0.11's batched CPU matmul
            // gave wrong results for a transposed lhs with a stride-0 (broadcast) rhs.
            let b = x.dim(0)?;
            let wt = weight.t()?;
            let rows = (0..b).map(|i| x.get(i)?.t()?.matmul(&wt)).collect::<candle_core::Result<Vec<_>>>()?;
            let y = Tensor::stack(&rows, 0)?;
            Ok(match bias {
                Some(bias) => y.broadcast_add(bias)?,
                None => y,
            })
        }
    }
}

/// The CPU path of [`project`]: our GEMM ([`crate::ops::sgemm`]) reads W in place in whatever layout and dtype it
/// is stored (bf16/f16 weights are widened panel by panel as they are packed: no f32 copy of the layer), x in
/// place through its strides (a channel-major x needs no transpose copy), and accumulates onto the bias written
/// into the output first (no separate broadcast add).
fn project_cpu(weight: &Tensor, bias: Option<&Tensor>, layout: Layout, x: &Tensor) -> Result<Tensor> {
    use crate::ops::sgemm::{sgemm, Rhs};
    use crate::ops::Strided;
    use candle_core::Storage;
    let (o, i) = weight.dims2()?;
    let bias: Option<Vec<f32>> = match bias {
        Some(b) => Some(b.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?),
        None => None,
    };
    // Tokens: one GEMM over every leading dim, on a contiguous [M, in] (a copy only if x is strided).
    let x = if layout == Layout::Tokens { x.contiguous()? } else { x.clone() };
    let (x_storage, x_layout) = x.storage_and_layout();
    let (w_storage, w_layout) = weight.storage_and_layout();
    let (Storage::Cpu(xs), Storage::Cpu(ws)) = (&*x_storage, &*w_storage) else {
        unreachable!("project_cpu: checked CPU tensors")
    };
    let xs = xs.as_slice::<f32>()?;
    // rhs (k, j) = W[j, k]: the weight read transposed through its own strides.
    let ws_strides = w_layout.stride();
    let r = Strided { offset: w_layout.start_offset(), rs: ws_strides[1], cs: ws_strides[0] };
    let rhs = || -> Result<Rhs<'_>> {
        Ok(match weight.dtype() {
            DType::BF16 => Rhs::Bf16(ws.as_slice()?),
            DType::F16 => Rhs::F16(ws.as_slice()?),
            _ => Rhs::F32(ws.as_slice()?),
        })
    };
    // The output starts as the bias (so the GEMM accumulates onto it), or is fully written by the GEMM.
    // Token-major outputs ([M, out], [B, N, out]) hold one bias row per token.
    // Bias rows are copied on rayon's threads: on one, the Mix-FFN expand's 47 MB of them took 6.3 ms
    // (3.1 ms on two, best of 30). Zeros stay one allocation (calloc, or the allocator cache's memset:
    // no faster split over threads, measured).
    let token_rows_with_bias = |len: usize| -> Vec<f32> {
        let Some(row) = bias.as_deref().filter(|b| !b.is_empty()) else { return vec![0f32; len] };
        let copy_rows = |_: usize, part: &mut [std::mem::MaybeUninit<f32>]| {
            for o in part.chunks_exact_mut(row.len()) {
                // SAFETY: `o` holds row.len() values; a MaybeUninit<f32> has f32's layout.
                unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), o.as_mut_ptr().cast::<f32>(), row.len()) }
            }
        };
        // SAFETY: parts of whole rows (len is a whole number of them), each row copied in full.
        unsafe { crate::ops::par_filled(len / row.len() * row.len(), row.len() * (16384 / row.len()).max(1), copy_rows) }
    };
    let acc = bias.is_some();
    match layout {
        Layout::Tokens => {
            let (&in_dim, lead) = x.dims().split_last().ok_or_else(|| candle_core::Error::Msg("linear input is a scalar".into()))?;
            crate::ensure_arg!(in_dim == i, "x", "linear input has {in_dim} features, the weight expects {i}");
            let m: usize = lead.iter().product();
            let mut out = token_rows_with_bias(m * o);
            let l = Strided::rows(x_layout.start_offset(), i);
            sgemm([m, o, i], (&mut out, Strided::rows(0, o)), (xs, l), (rhs()?, r), acc);
            drop((x_storage, w_storage));
            Ok(Tensor::from_vec(out, [lead, &[o]].concat(), &candle_core::Device::Cpu)?)
        }
        Layout::Channels | Layout::ChannelsToTokens => {
            let (b, in_dim, n) = x.dims3()?;
            crate::ensure_arg!(in_dim == i, "x", "1×1 conv input has {in_dim} channels, the weight expects {i}");
            let st = x_layout.stride();
            let mut out = if layout == Layout::Channels { vec![0f32; b * n * o] } else { token_rows_with_bias(b * n * o) };
            for bi in 0..b {
                // lhs (token t, channel c) = x[bi, c, t].
                let l = Strided { offset: x_layout.start_offset() + bi * st[0], rs: st[2], cs: st[1] };
                let d = if layout == Layout::Channels {
                    // [B, out, N]: element (t, j) at j·N + t; the bias fills each output channel's row.
                    if let Some(bv) = &bias {
                        for (j, row) in out[bi * o * n..(bi + 1) * o * n].chunks_mut(n).enumerate() {
                            row.fill(bv[j]);
                        }
                    }
                    Strided { offset: bi * o * n, rs: 1, cs: n }
                } else {
                    Strided::rows(bi * n * o, o)
                };
                sgemm([n, o, i], (&mut out, d), (xs, l), (rhs()?, r), acc);
            }
            drop((x_storage, w_storage));
            let shape = if layout == Layout::Channels { (b, o, n) } else { (b, n, o) };
            Ok(Tensor::from_vec(out, shape, &candle_core::Device::Cpu)?)
        }
    }
}

// ================================================================================================
// What one forward pass runs with
// ================================================================================================

/// One active low-rank term of a layer: `scale · B(A x)`.
#[derive(Clone)]
pub struct LowRank {
    pub down: Tensor, // A [r, in]
    pub up: Tensor,   // B [out, r]
    /// Adapter weight × peft scaling (alpha / r); the call's scale multiplies it.
    pub scale: f64,
}

/// A layer's share of the active adapters: a fused weight replacing the base one, and unfused terms.
#[derive(Clone, Default)]
pub struct LayerAdapters {
    /// W + Σ scale·B·A when adapters are fused (the base weight stays untouched beside it).
    pub merged: Option<Tensor>,
    pub terms: Vec<LowRank>,
}

/// Layer path → what the active adapters add there.
pub type AdapterLayers = BTreeMap<String, LayerAdapters>;

/// The adapters one forward pass runs with, and the call's scale (diffusers' `attention_kwargs["scale"]`).
#[derive(Clone, Copy)]
pub struct LoraCall<'a> {
    layers: Option<&'a AdapterLayers>,
    scale: f64,
}

impl<'a> LoraCall<'a> {
    /// No adapters: every layer runs its base weight.
    pub const NONE: LoraCall<'static> = LoraCall { layers: None, scale: 1.0 };

    pub fn new(layers: &'a AdapterLayers, scale: f64) -> Self {
        LoraCall { layers: Some(layers), scale }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// N(0, 1) f32 on the CPU (also the merged-projection tests' input).
    pub(crate) fn randn(shape: &[usize]) -> Tensor {
        Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap()
    }

    pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Every layout with a low-rank term equals the plain layer with the dense weight W + s·c·B·A.
    #[test]
    fn low_rank_terms_equal_the_merged_weight_in_every_layout() -> Result<()> {
        let (o, i, r, b, n) = (6, 5, 2, 3, 7);
        let lin = Linear::from_weight(randn(&[o, i]), Some(randn(&[o])), "layer");
        let (down, up) = (randn(&[r, i]), randn(&[o, r]));
        let (c, s) = (1.5, 0.4);
        let mut layers = AdapterLayers::new();
        layers.insert("layer".into(), LayerAdapters { merged: None, terms: vec![LowRank { down: down.clone(), up: up.clone(), scale: c }] });
        let dense = Linear::from_weight((lin.weight() + (up.matmul(&down)? * (c * s))?)?, lin.bias.clone(), "dense");
        let tokens = randn(&[b, n, i]);
        let channels = tokens.transpose(1, 2)?; // [B, in, N], strided
        for (layout, x) in [(Layout::Tokens, &tokens), (Layout::Channels, &channels), (Layout::ChannelsToTokens, &channels)] {
            let got = lin.forward_lora(x, layout, LoraCall::new(&layers, s))?;
            let want = dense.forward_lora(x, layout, LoraCall::NONE)?;
            assert!(max_diff(&got, &want) < 1e-5, "{layout:?}");
            // A layer the adapters do not name, and scale 0, run the base weight.
            let base = lin.forward_lora(x, layout, LoraCall::NONE)?;
            assert_eq!(max_diff(&lin.forward_lora(x, layout, LoraCall::new(&layers, 0.0))?, &base), 0.0);
        }
        assert_eq!(lin.forward(&tokens)?.dims(), &[b, n, o]);
        assert_eq!(lin.forward_channels(&channels)?.dims(), &[b, o, n]);
        assert_eq!(lin.forward_channels_to_tokens(&channels)?.dtype(), DType::F32);
        // An image [B, in, H, W] is the channel-major case over H·W pixels.
        let image = channels.contiguous()?.reshape((b, i, 1, n))?;
        assert!(max_diff(&lin.forward_nchw(&image)?.reshape((b, o, n))?, &lin.forward_channels(&channels)?) < 1e-5);
        Ok(())
    }

    /// The CPU GEMM path equals candle's matmul on the widened weight, in every layout, for f32/bf16/f16
    /// weights, a strided (transposed) x, with and without a bias, and a weight that is a row view. Where
    /// this CPU multiplies bf16 weights in bf16 (AMX), the reference takes x rounded to bf16 as well.
    #[test]
    fn cpu_gemm_path_matches_candle_matmul() -> Result<()> {
        let (o, i, b, n) = (37, 29, 3, 41);
        let big = randn(&[o + 5, i]);
        let bias = randn(&[o]);
        let tokens = randn(&[b, n, i]);
        let channels = tokens.transpose(1, 2)?; // [B, in, N], strided
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let w = big.to_dtype(dtype)?.narrow(0, 5, o)?; // a view at an offset, as the merged q/k/v weights
            let w32 = w.to_dtype(DType::F32)?;
            let rounded = dtype == DType::BF16 && crate::ops::sgemm::bf16_rhs_rounds_lhs();
            let x = if rounded { tokens.to_dtype(DType::BF16)?.to_dtype(DType::F32)? } else { tokens.clone() };
            for bias in [Some(&bias), None] {
                let mut want = x.reshape((b * n, i))?.matmul(&w32.t()?)?;
                if let Some(bias) = bias {
                    want = want.broadcast_add(bias)?;
                }
                let want = want.reshape((b, n, o))?;
                let tol = 1e-4;
                assert!(max_diff(&project(&w, bias, Layout::Tokens, &tokens)?, &want) < tol, "{dtype:?} tokens");
                let got = project(&w, bias, Layout::Channels, &channels)?;
                assert!(max_diff(&got, &want.transpose(1, 2)?) < tol, "{dtype:?} channels");
                assert!(max_diff(&project(&w, bias, Layout::ChannelsToTokens, &channels)?, &want) < tol, "{dtype:?} c→t");
            }
        }
        Ok(())
    }

    #[test]
    fn bias_rows_across_several_fill_tasks() -> Result<()> {
        // 1000 rows of 37: three of the bias fill's chunks (whole rows each), the last one short.
        let (o, i, n) = (37, 8, 1000);
        let (w, bias, x) = (randn(&[o, i]), randn(&[o]), randn(&[1, n, i]));
        let want = project(&w, None, Layout::Tokens, &x)?.broadcast_add(&bias)?;
        assert!(max_diff(&project(&w, Some(&bias), Layout::Tokens, &x)?, &want) < 1e-5);
        Ok(())
    }

    #[test]
    fn a_merged_weight_replaces_the_base_one() -> Result<()> {
        let lin = Linear::from_weight(randn(&[4, 3]), None, "l");
        let other = randn(&[4, 3]);
        let mut layers = AdapterLayers::new();
        layers.insert("l".into(), LayerAdapters { merged: Some(other.clone()), terms: vec![] });
        let x = randn(&[2, 3]);
        let got = lin.forward_lora(&x, Layout::Tokens, LoraCall::new(&layers, 7.0))?;
        assert!(max_diff(&got, &x.matmul(&other.t()?)?) < 1e-6);
        Ok(())
    }
}
