//! DC-AE, diffusers' `AutoencoderDC` (MIT Han Lab, arXiv 2410.10733): the deep-compression autoencoder of
//! Sana (f32c32: 32× spatial compression, 32 latent channels). Encoder and decoder are stacks of stages;
//! the high-resolution stages use `ResBlock`s, the low-resolution ones `EfficientViTBlock`s (ReLU linear
//! attention "LiteMLA" with a multi-scale 5×5 aggregation, then a GLU inverted-bottleneck conv).
//!
//! Everything is channel-major [B, C, H, W]. diffusers applies its Linear layers and RMSNorms after
//! `movedim(1, -1)`; here they are 1×1 convs and channel norms, which compute the same sums without the
//! permutes. Tiled decoding lives in [`tiling`].

use crate::config::AutoencoderDCConfig;
use crate::models::component::{BuildModel, Component};
use crate::ops::channel_ops::{pixel_shuffle, pixel_unshuffle, rms_norm_channels, rms_norm_channels_add};
use crate::ops::conv2d::{conv2d, conv2d_then, Then};
use crate::models::linear::Linear;
use crate::ops::grouped_conv::grouped_conv1x1;
use crate::ops::{activation, depthwise_conv2d, silu_depthwise_conv2d_glu};
use crate::weights::Vb;
use crate::{ensure_arg, Result, SanaError};
use candle_core::{Tensor, D};

mod tiling;
pub use tiling::{decode_activation_bytes, decode_memory, DecodeMemory, DecodeOptions, Tiling, DEFAULT_MEMORY_BUDGET};

/// Norm eps of every DC-AE norm (`get_normalization` default and `RMSNorm(…, 1e-5)`).
const NORM_EPS: f64 = 1e-5;
/// `SanaMultiscaleLinearAttention(eps=1e-15)`: added to the attention denominators.
const ATTN_EPS: f64 = 1e-15;

fn bad_config(msg: String) -> SanaError {
    SanaError::InvalidConfig { path: "config.json".into(), msg }
}

// ============================================================================ helpers

/// `nn.Conv2d(cin, cout, k, stride, padding=k // 2)`, optionally reading a nearest-×`up` upsampled input.
struct Conv {
    weight: Tensor, // [Cout, Cin, k, k]
    bias: Option<Tensor>,
    stride: usize,
    up: usize,
}

impl Conv {
    fn new(vb: &Vb, cin: usize, cout: usize, k: usize, bias: bool) -> Result<Self> {
        let weight = vb.get_weight((cout, cin, k, k), "weight")?;
        let bias = if bias { Some(vb.get(cout, "bias")?) } else { None };
        Ok(Conv { weight, bias, stride: 1, up: 1 })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d(x, &self.weight, self.bias.as_ref(), self.stride, self.up)
    }
    /// `act(conv(x))`, SiLU fused into the conv (in place on its output).
    fn forward_act(&self, x: &Tensor, act: Act) -> Result<Tensor> {
        match act {
            Act::Silu => conv2d_then(x, &self.weight, self.bias.as_ref(), self.stride, self.up, Then::Silu),
            act => act.forward(&self.forward(x)?),
        }
    }
}

/// `get_activation(name)`.
#[derive(Clone, Copy)]
enum Act {
    Silu,
    Relu,
    Gelu,
}

impl Act {
    fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "silu" | "swish" => Ok(Act::Silu),
            "relu" => Ok(Act::Relu),
            "gelu" => Ok(Act::Gelu),
            other => Err(bad_config(format!("unsupported activation \"{other}\" (expected silu, swish, relu or gelu)"))),
        }
    }
    fn forward(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Act::Silu => activation::silu(x)?,
            Act::Relu => x.relu()?,
            Act::Gelu => x.gelu_erf()?,
        })
    }
}

/// `get_normalization(norm_type, C)` applied over channels: RMSNorm with weight and bias, or BatchNorm2d
/// in eval mode (running statistics folded into a per-channel scale and shift at load).
enum Norm {
    Rms { weight: Tensor, bias: Tensor },
    Batch { scale: Tensor, shift: Tensor }, // [1, C, 1, 1]
}

impl Norm {
    fn new(kind: &str, c: usize, vb: &Vb) -> Result<Self> {
        match kind {
            "rms_norm" => Ok(Norm::Rms { weight: vb.get(c, "weight")?, bias: vb.get(c, "bias")? }),
            "batch_norm" => {
                // y = (x − mean) / sqrt(var + eps) · w + b = x · scale + shift
                let (w, b) = (vb.get(c, "weight")?, vb.get(c, "bias")?);
                let (mean, var) = (vb.get(c, "running_mean")?, vb.get(c, "running_var")?);
                let scale = (w / (var + NORM_EPS)?.sqrt()?)?;
                let shift = (b - (mean * &scale)?)?;
                Ok(Norm::Batch { scale: scale.reshape((1, c, 1, 1))?, shift: shift.reshape((1, c, 1, 1))? })
            }
            other => Err(bad_config(format!("unsupported norm type \"{other}\" (expected rms_norm or batch_norm)"))),
        }
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Norm::Rms { weight, bias } => rms_norm_channels(x, Some(weight), Some(bias), NORM_EPS),
            Norm::Batch { scale, shift } => Ok(x.broadcast_mul(scale)?.broadcast_add(shift)?),
        }
    }
    /// `norm(x) + residual`, the end of every block (RMSNorm forms the sum in its own pass).
    fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        match self {
            Norm::Rms { weight, bias } => rms_norm_channels_add(x, Some(weight), Some(bias), NORM_EPS, Some(residual)),
            Norm::Batch { scale, shift } => Ok((x.broadcast_mul(scale)?.broadcast_add(shift)? + residual)?),
        }
    }
}

// ============================================================================ blocks

/// `ResBlock`: x + norm(conv2(act(conv1(x)))), convs 3×3, conv2 without bias.
struct ResBlock {
    conv1: Conv,
    conv2: Conv,
    norm: Norm,
    act: Act,
}

impl ResBlock {
    fn new(c: usize, norm: &str, act: Act, vb: &Vb) -> Result<Self> {
        Ok(ResBlock {
            conv1: Conv::new(&vb.pp("conv1"), c, c, 3, true)?,
            conv2: Conv::new(&vb.pp("conv2"), c, c, 3, false)?,
            norm: Norm::new(norm, c, &vb.pp("norm"))?,
            act,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Three tensors, not five (each a full activation: 512 MiB at the 1024² stage): the activation
        // runs in place on conv1's output, a temporary freed before the norm's output exists, and the
        // residual is added as the norm writes.
        let h = self.conv2.forward(&self.conv1.forward_act(x, self.act)?)?;
        self.norm.forward_add(&h, x)
    }
}

/// `SanaMultiscaleLinearAttention` (LiteMLA) with its residual connection.
struct LiteMla {
    qkv: [Linear; 3],                  // to_q, to_k, to_v: [inner, C] each
    multiscale: Vec<(Tensor, Tensor)>, // per kernel: proj_in [3·inner, 1, k, k], proj_out [3·inner, d, 1, 1]
    to_out: Linear,                    // [C, inner·(1 + scales)]
    norm_out: Norm,
    heads: usize,
    head_dim: usize,
}

impl LiteMla {
    fn new(c: usize, head_dim: usize, scales: &[usize], norm: &str, vb: &Vb) -> Result<Self> {
        // diffusers: num_attention_heads = int(in_channels // attention_head_dim * mult), mult = 1.
        let heads = c / head_dim;
        let inner = heads * head_dim;
        let qkv = [Linear::new(c, inner, false, vb.pp("to_q"))?, Linear::new(c, inner, false, vb.pp("to_k"))?,
            Linear::new(c, inner, false, vb.pp("to_v"))?];
        let multiscale = scales
            .iter()
            .enumerate()
            .map(|(i, &k)| {
                let vb = vb.pp("to_qkv_multiscale").pp(i);
                Ok((vb.pp("proj_in").get((3 * inner, 1, k, k), "weight")?, vb.pp("proj_out").get((3 * inner, head_dim, 1, 1), "weight")?))
            })
            .collect::<Result<Vec<_>>>()?;
        let to_out = Linear::new(inner * (1 + scales.len()), c, false, vb.pp("to_out"))?;
        let norm_out = Norm::new(norm, c, &vb.pp("norm_out"))?;
        Ok(LiteMla { qkv, multiscale, to_out, norm_out, heads, head_dim })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let (d, n) = (self.head_dim, h * w);
        // 1. q, k, v projections (Linear over channels) as one GEMM: [B, 3·inner, H, W]. The weights are
        //    stacked per call rather than at load so the checkpoint tensors are not held twice.
        let stacked = Tensor::cat(&self.qkv.iter().map(Linear::weight).collect::<Vec<_>>(), 0)?;
        let qkv = Linear::from_weight(stacked, None, "to_qkv").forward_nchw(x)?;
        // 2. Multi-scale aggregation: depthwise k×k, then a grouped 1×1 with 3·heads groups of d channels.
        let mut parts = vec![qkv.clone()];
        for (proj_in, proj_out) in &self.multiscale {
            let agg = depthwise_conv2d(&qkv, proj_in, None)?;
            parts.push(grouped_conv1x1(&agg, proj_out, None, 3 * self.heads)?);
        }
        drop(qkv);
        // 3. [B, G, 3d, N] with G = heads·(1 + scales): each group of 3d consecutive channels is one
        //    attention head's (q, k, v) — diffusers' `reshape(B, -1, 3·d, H·W).chunk(3, dim=2)`.
        let all = Tensor::cat(&parts, 1)?;
        drop(parts);
        let g = all.dim(1)? / (3 * d);
        let all = all.reshape((b, g, 3 * d, n))?;
        let q = all.narrow(2, 0, d)?.relu()?;
        let k = all.narrow(2, d, d)?.relu()?;
        let v = all.narrow(2, 2 * d, d)?;
        // 4. Attention per group; linear when H·W > d, quadratic (the N×N form) otherwise, as diffusers.
        let o = if n > d { linear_attention(&q, &k, &v)? } else { quadratic_attention(&q, &k, &v)? };
        drop((q, k, v, all));
        // 5. Output projection, norm, residual.
        let o = self.to_out.forward_nchw(&o.reshape((b, g * d, h, w))?)?;
        self.norm_out.forward_add(&o, x)
    }
}

/// ReLU linear attention, channel-major q, k, v [B, G, d, N] (q, k already ReLU'd):
/// `(v_pad kᵀ) q` with v padded by a row of ones, i.e. out = (v kᵀ) q / (Σₘkₘ · q + eps), in f32.
fn linear_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let kt = k.transpose(2, 3)?; // [B, G, N, d]
    let vk = v.matmul(&kt)?; // [B, G, d, d]
    let num = vk.matmul(q)?; // [B, G, d, N]
    let ksum = k.sum_keepdim(D::Minus1)?.transpose(2, 3)?; // [B, G, 1, d]
    let den = (ksum.matmul(q)? + ATTN_EPS)?; // [B, G, 1, N]
    Ok(num.broadcast_div(&den)?)
}

/// Quadratic form for tiny maps: scores = kᵀq [B, G, N_k, N_q], normalised over keys by their sum + eps.
fn quadratic_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let scores = k.transpose(2, 3)?.matmul(q)?;
    let scores = scores.broadcast_div(&(scores.sum_keepdim(2)? + ATTN_EPS)?)?;
    Ok(v.matmul(&scores)?) // [B, G, d, N]
}

/// `GLUMBConv(C, C, expand_ratio=4, norm_type="rms_norm")` with its residual connection.
struct GluMbConv {
    inverted: Linear,           // 1×1 conv [8C, C] + bias
    depth: (Tensor, Tensor),    // [8C, 1, 3, 3], [8C]
    point: Linear,              // 1×1 conv [C, 4C]
    norm: Norm,
}

impl GluMbConv {
    fn new(c: usize, vb: &Vb) -> Result<Self> {
        let hidden = 4 * c;
        let (vi, vd) = (vb.pp("conv_inverted"), vb.pp("conv_depth"));
        Ok(GluMbConv {
            inverted: Linear::conv1x1(c, 2 * hidden, true, vi)?,
            depth: (vd.get((2 * hidden, 1, 3, 3), "weight")?, vd.get(2 * hidden, "bias")?),
            point: Linear::conv1x1(hidden, c, false, vb.pp("conv_point"))?,
            norm: Norm::new("rms_norm", c, &vb.pp("norm"))?,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // 1. 1×1 expand to 2·hidden.
        let mut h = self.inverted.forward_nchw(x)?;
        // 2. SiLU, depthwise 3×3, GLU: value · silu(gate) (torch.chunk(2, dim=1)). Reassigning `h` frees
        //    each intermediate once the next exists (shadowing would keep all of them to the end).
        h = silu_depthwise_conv2d_glu(&h, &self.depth.0, Some(&self.depth.1))?;
        // 3. 1×1 project back, norm, residual.
        h = self.point.forward_nchw(&h)?;
        self.norm.forward_add(&h, x)
    }
}

/// `DCDownBlock2d`: stride-2 conv (or conv + pixel-unshuffle) plus the unshuffle group-mean shortcut.
struct DownBlock {
    conv: Conv,
    unshuffle: bool,
    shortcut_group: Option<usize>,
}

impl DownBlock {
    fn new(cin: usize, cout: usize, unshuffle: bool, shortcut: bool, vb: &Vb) -> Result<Self> {
        let conv_out = if unshuffle { cout / 4 } else { cout };
        let mut conv = Conv::new(&vb.pp("conv"), cin, conv_out, 3, true)?;
        conv.stride = if unshuffle { 1 } else { 2 };
        Ok(DownBlock { conv, unshuffle, shortcut_group: shortcut.then_some(cin * 4 / cout) })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv.forward(x)?;
        if self.unshuffle {
            h = pixel_unshuffle(&h, 2, 1)?;
        }
        match self.shortcut_group {
            Some(g) => Ok((h + pixel_unshuffle(x, 2, g)?)?),
            None => Ok(h),
        }
    }
}

/// `DCUpBlock2d`: nearest ×2 + conv (or conv + pixel-shuffle) plus the repeat-interleave shuffle shortcut.
struct UpBlock {
    conv: Conv,
    interpolate: bool,
    shortcut_repeats: Option<usize>,
}

impl UpBlock {
    fn new(cin: usize, cout: usize, interpolate: bool, shortcut: bool, vb: &Vb) -> Result<Self> {
        let conv_out = if interpolate { cout } else { cout * 4 };
        let mut conv = Conv::new(&vb.pp("conv"), cin, conv_out, 3, true)?;
        // The nearest-×2 upsample is fused into the conv's column reads.
        conv.up = if interpolate { 2 } else { 1 };
        Ok(UpBlock { conv, interpolate, shortcut_repeats: shortcut.then_some(cout * 4 / cin) })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv.forward(x)?;
        if !self.interpolate {
            h = pixel_shuffle(&h, 2, 1)?;
        }
        match self.shortcut_repeats {
            Some(r) => Ok((h + pixel_shuffle(x, 2, r)?)?),
            None => Ok(h),
        }
    }
}

enum Block {
    Res(ResBlock),
    Vit(LiteMla, GluMbConv),
    Down(DownBlock),
    Up(UpBlock),
}

impl Block {
    /// `get_block(block_type, C, C, …)`; an `EfficientViTBlock` is `attn` then `conv_out`.
    fn new(kind: &str, c: usize, head_dim: usize, norm: &str, act: Act, scales: &[usize], vb: &Vb) -> Result<Self> {
        match kind {
            "ResBlock" => Ok(Block::Res(ResBlock::new(c, norm, act, vb)?)),
            "EfficientViTBlock" => {
                ensure_cfg(c % head_dim == 0, || format!("attention_head_dim: {head_dim} does not divide the EfficientViTBlock width {c}"))?;
                Ok(Block::Vit(LiteMla::new(c, head_dim, scales, norm, &vb.pp("attn"))?, GluMbConv::new(c, &vb.pp("conv_out"))?))
            }
            other => Err(bad_config(format!("unsupported block type \"{other}\" (expected ResBlock or EfficientViTBlock)"))),
        }
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Block::Res(b) => b.forward(x),
            Block::Vit(attn, conv) => conv.forward(&attn.forward(x)?),
            Block::Down(b) => b.forward(x),
            Block::Up(b) => b.forward(x),
        }
    }
}

fn ensure_cfg(cond: bool, msg: impl FnOnce() -> String) -> Result<()> {
    if cond { Ok(()) } else { Err(bad_config(msg())) }
}

fn run(blocks: &[Block], x: &Tensor) -> Result<Tensor> {
    let mut h = x.clone();
    for b in blocks {
        h = b.forward(&h)?;
    }
    Ok(h)
}

// ============================================================================ encoder / decoder

struct Encoder {
    conv_in: Block, // a 3×3 conv (as a stride-1 DownBlock without shortcut) or a DCDownBlock2d
    down_blocks: Vec<Vec<Block>>,
    conv_out: Conv,
    out_shortcut_group: Option<usize>,
}

impl Encoder {
    fn new(cfg: &AutoencoderDCConfig, vb: &Vb) -> Result<Self> {
        let ch = &cfg.encoder_block_out_channels;
        let layers = &cfg.encoder_layers_per_block;
        let n = ch.len();
        let unshuffle = cfg.downsample_block_type == "pixel_unshuffle";
        let conv_in = if layers[0] > 0 {
            let conv = Conv::new(&vb.pp("conv_in"), cfg.in_channels, ch[0], 3, true)?;
            Block::Down(DownBlock { conv, unshuffle: false, shortcut_group: None })
        } else {
            Block::Down(DownBlock::new(cfg.in_channels, ch[1], unshuffle, false, &vb.pp("conv_in"))?)
        };
        let mut down_blocks = Vec::with_capacity(n);
        for i in 0..n {
            let vb = vb.pp("down_blocks").pp(i);
            let kind = cfg.encoder_block_types.get(i);
            // diffusers' Encoder fixes norm_type="rms_norm", act_fn="silu".
            let mut stage = (0..layers[i])
                .map(|j| Block::new(&kind, ch[i], cfg.attention_head_dim, "rms_norm", Act::Silu, &cfg.encoder_qkv_multiscales[i], &vb.pp(j)))
                .collect::<Result<Vec<_>>>()?;
            if i < n - 1 && layers[i] > 0 {
                stage.push(Block::Down(DownBlock::new(ch[i], ch[i + 1], unshuffle, true, &vb.pp(layers[i]))?));
            }
            down_blocks.push(stage);
        }
        let latent = cfg.latent_channels;
        Ok(Encoder {
            conv_in,
            down_blocks,
            conv_out: Conv::new(&vb.pp("conv_out"), ch[n - 1], latent, 3, true)?,
            out_shortcut_group: cfg.encoder_out_shortcut.then_some(ch[n - 1] / latent),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // 1. conv_in and the down stages.
        let mut h = self.conv_in.forward(x)?;
        for stage in &self.down_blocks {
            h = run(stage, &h)?;
        }
        // 2. conv_out + channel group-mean shortcut: h.unflatten(1, (-1, group)).mean(2).
        let out = self.conv_out.forward(&h)?;
        match self.out_shortcut_group {
            Some(g) => Ok((out + pixel_unshuffle(&h, 1, g)?)?),
            None => Ok(out),
        }
    }
}

struct Decoder {
    conv_in: Conv,
    in_shortcut_repeats: Option<usize>,
    up_blocks: Vec<Vec<Block>>,
    norm_out: Norm,
    conv_act: Act,
    conv_out: Block, // a 3×3 conv (as an UpBlock without upsampling/shortcut) or a DCUpBlock2d
}

impl Decoder {
    fn new(cfg: &AutoencoderDCConfig, vb: &Vb) -> Result<Self> {
        let ch = &cfg.decoder_block_out_channels;
        let layers = &cfg.decoder_layers_per_block;
        let n = ch.len();
        let interpolate = cfg.upsample_block_type == "interpolate";
        let latent = cfg.latent_channels;
        let mut up_blocks = Vec::with_capacity(n);
        for i in 0..n {
            let vb = vb.pp("up_blocks").pp(i);
            let mut stage = Vec::new();
            if i < n - 1 && layers[i] > 0 {
                stage.push(Block::Up(UpBlock::new(ch[i + 1], ch[i], interpolate, true, &vb.pp(0))?));
            }
            let off = stage.len();
            let (kind, norm, act) = (cfg.decoder_block_types.get(i), cfg.decoder_norm_types.get(i), Act::parse(&cfg.decoder_act_fns.get(i))?);
            for j in 0..layers[i] {
                stage.push(Block::new(&kind, ch[i], cfg.attention_head_dim, &norm, act, &cfg.decoder_qkv_multiscales[i], &vb.pp(off + j))?);
            }
            up_blocks.push(stage);
        }
        let c0 = if layers[0] > 0 { ch[0] } else { ch[1] };
        let conv_out = if layers[0] > 0 {
            let conv = Conv::new(&vb.pp("conv_out"), c0, cfg.in_channels, 3, true)?;
            Block::Up(UpBlock { conv, interpolate: true, shortcut_repeats: None })
        } else {
            Block::Up(UpBlock::new(c0, cfg.in_channels, interpolate, false, &vb.pp("conv_out"))?)
        };
        Ok(Decoder {
            conv_in: Conv::new(&vb.pp("conv_in"), latent, ch[n - 1], 3, true)?,
            in_shortcut_repeats: cfg.decoder_in_shortcut.then_some(ch[n - 1] / latent),
            up_blocks,
            norm_out: Norm::new("rms_norm", c0, &vb.pp("norm_out"))?,
            conv_act: Act::parse(&cfg.decoder_conv_act_fn)?,
            conv_out,
        })
    }

    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        // 1. conv_in + repeat_interleave(z, C_last / latent, dim=1) shortcut (a pixel shuffle with r = 1).
        let mut h = self.conv_in.forward(z)?;
        if let Some(r) = self.in_shortcut_repeats {
            h = (h + pixel_shuffle(z, 1, r)?)?;
        }
        // 2. Up stages, lowest resolution first.
        for stage in self.up_blocks.iter().rev() {
            h = run(stage, &h)?;
        }
        // 3. RMSNorm (with bias) over channels, activation, conv to image channels.
        h = self.norm_out.forward(&h)?;
        h = self.conv_act.forward(&h)?;
        self.conv_out.forward(&h)
    }
}

// ============================================================================ model

pub struct AutoencoderDC {
    pub config: AutoencoderDCConfig,
    encoder: Encoder,
    decoder: Decoder,
}

impl AutoencoderDC {
    pub fn new(cfg: &AutoencoderDCConfig, vb: &Vb) -> Result<Self> {
        cfg.check().map_err(bad_config)?;
        Ok(AutoencoderDC {
            config: cfg.clone(),
            encoder: Encoder::new(cfg, &vb.pp("encoder"))?,
            decoder: Decoder::new(cfg, &vb.pp("decoder"))?,
        })
    }

    /// Pixels per latent pixel along each axis: 2^(stages − 1) (32 for f32c32).
    pub fn spatial_compression(&self) -> usize {
        1 << (self.config.encoder_block_out_channels.len() - 1)
    }

    /// Raw latent z [B, latent, h, w] (= diffusion latents / scaling_factor) → image [B, 3, 32h, 32w],
    /// nominally in [−1, 1] and not clamped. Tiling per `opts` (see [`DecodeOptions`]).
    pub fn decode(&self, z: &Tensor, opts: &DecodeOptions) -> Result<Tensor> {
        let dims = z.dims();
        ensure_arg!(dims.len() == 4, "z", "expected [batch, {}, height, width], got shape {dims:?}", self.config.latent_channels);
        ensure_arg!(dims[1] == self.config.latent_channels, "z",
            "expected {} latent channels, got {} (shape {dims:?})", self.config.latent_channels, dims[1]);
        ensure_arg!(dims.iter().all(|&d| d > 0), "z", "has a zero-size dimension (shape {dims:?})");
        let w = &self.decoder.conv_in.weight;
        let z = z.to_device(w.device())?.to_dtype(crate::weights::compute_dtype(w.dtype(), w.device()))?;
        match tiling::plan(&self.config, z.dtype(), dims[0], dims[2], dims[3], opts)? {
            None => self.decoder.forward(&z),
            Some(plan) => tiling::tiled_decode(&z, &plan, self.spatial_compression(), |t| self.decoder.forward(t)),
        }
    }

    /// Image x [B, 3, H, W] (H, W multiples of 32, nominally in [−1, 1]) → raw latent [B, latent, H/32, W/32].
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let f = self.spatial_compression();
        ensure_arg!(dims.len() == 4, "image", "expected [batch, {}, height, width], got shape {dims:?}", self.config.in_channels);
        ensure_arg!(dims[1] == self.config.in_channels, "image",
            "expected {} channels, got {} (shape {dims:?})", self.config.in_channels, dims[1]);
        ensure_arg!(dims.iter().all(|&d| d > 0), "image", "has a zero-size dimension (shape {dims:?})");
        ensure_arg!(dims[2] % f == 0 && dims[3] % f == 0, "image",
            "height and width must be multiples of {f}, got {}×{}", dims[2], dims[3]);
        let w = &self.decoder.conv_in.weight;
        self.encoder.forward(&x.to_device(w.device())?.to_dtype(crate::weights::compute_dtype(w.dtype(), w.device()))?)
    }
}

impl BuildModel<AutoencoderDCConfig> for AutoencoderDC {
    fn build(c: &Component<AutoencoderDCConfig>) -> Result<Self> {
        let m = AutoencoderDC::new(&c.config, &c.vb())?;
        // BatchNorm's step counter is training state only.
        c.store.ensure_all_used(|name| name.ends_with(".num_batches_tracked"))?;
        Ok(m)
    }
}
