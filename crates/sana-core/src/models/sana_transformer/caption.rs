//! The caption-only work of a Sana DiT forward — caption projection + norm, the mask bias, and every block's
//! cross-attention K and V — which does not change between the steps of one generation, and the per-generation
//! cache that lets every step after the first skip it.
//!
//! ```text
//! text [B,S,caption] ─ caption_projection ─ caption_norm ─► ctx [B,S,D] ─ block i attn2 to_k/to_v (+ norm_k) ─► K_i, V_i [B,H,S,hd]
//! mask [B,S] ─► (1 − mask)·−10000 [B,1,1,S]
//! ```
//!
//! A [`CaptionCache`] is an explicit handle the sampling loop owns for one generation (created before the first
//! step, cleared when the loop ends). Each entry is keyed on everything the work reads: the model, the caption
//! and mask tensors, the LoRA snapshot and the call's LoRA scale; a forward whose key differs recomputes and
//! replaces its model's entry. Tensors are compared by identity: sana-node never changes a tensor's values in
//! place, so the same tensor means the same values. One handle serves the transformer and its ControlNet (one
//! entry per model).

use super::layers::CaptionProjection;
use super::SanaTransformerBlock;
use crate::models::linear::{AdapterLayers, LoraCall};
use crate::ops::cross_attention::MASK_BIAS;
use crate::Result;
use candle_core::{DType, Device, Tensor};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};


/// A process-unique id for a loaded model, so a cache entry never serves another model.
pub(crate) fn next_model_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// What the caption-only work produced for one forward (shared by every step of a generation).
pub struct CaptionState {
    /// Caption tokens after caption_norm [B, S, D] (the `caption_norm` intermediate).
    pub ctx: Tensor,
    /// (1 − mask) · −10000 as f32 [B, 1, 1, S], added to the f32 cross-attention logits.
    pub bias: Option<Tensor>,
    /// Per block: attn2's K (after `norm_k`) and V, heads split: [B, H, S, hd] each. Empty in a forward
    /// without a cache, which computes each block's pair as it reaches the block ([`Self::block_kv`]).
    pub kv: Vec<(Tensor, Tensor)>,
}

impl CaptionState {
    /// Block `i`'s K/V: the stored pair, or (in a forward without a cache) computed now from `ctx`.
    /// Why on demand: only a cache reuses the pairs, and holding every block's at once cost a forward
    /// without one 2 · layers · B · S · width floats of fresh pages (155 MB at Sana-600M's CFG batch,
    /// ≈ 38 K page faults) where one block's pair at a time reuses the same few freed blocks.
    pub(crate) fn block_kv(&self, i: usize, block: &SanaTransformerBlock, lora: LoraCall) -> Result<(Tensor, Tensor)> {
        match self.kv.get(i) {
            Some(kv) => Ok(kv.clone()), // shares the cache's tensors
            None => block.caption_kv(&self.ctx, lora),
        }
    }

    /// Device bytes held by the tensors.
    fn bytes(&self) -> usize {
        let size = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        size(&self.ctx) + self.bias.as_ref().map_or(0, size) + self.kv.iter().map(|(k, v)| size(k) + size(v)).sum::<usize>()
    }
}

/// The model side of the caption work: the caption projection and the blocks whose attn2 reads the caption.
pub(crate) struct CaptionModel<'a> {
    pub id: u64,
    pub projection: &'a CaptionProjection,
    pub blocks: &'a [SanaTransformerBlock],
    pub device: &'a Device,
    pub dtype: DType,
}

/// What one forward's caption work reads (the cache key's inputs).
pub(crate) struct CaptionInput<'a> {
    /// [B, S, caption_channels] as given (any device, any float dtype).
    pub caption: &'a Tensor,
    /// [B, S] 1/0, as given.
    pub mask: Option<&'a Tensor>,
    /// The call's adapter snapshot (`None`: the model takes no adapters) and scale.
    pub adapters: Option<&'a Arc<AdapterLayers>>,
    pub lora_scale: f64,
}

impl CaptionModel<'_> {
    /// The caption state of this forward: the cache's entry when its key matches, else computed (and stored in
    /// the cache when there is one).
    /// Without a cache the blocks' K/V are left to [`CaptionState::block_kv`].
    pub(crate) fn state(&self, input: &CaptionInput, cache: Option<&CaptionCache>) -> Result<Arc<CaptionState>> {
        let Some(cache) = cache else { return Ok(Arc::new(self.compute(input, false)?)) };
        let key = CaptionKey {
            model: self.id,
            caption: input.caption.clone(),
            mask: input.mask.cloned(),
            adapters: input.adapters.cloned(),
            lora_scale: input.lora_scale,
        };
        if let Some(hit) = cache.lookup(&key) {
            return Ok(hit);
        }
        let state = Arc::new(self.compute(input, true)?);
        cache.store(key, state.clone());
        Ok(state)
    }

    /// The caption work; every block's K/V too when `with_kv`.
    fn compute(&self, input: &CaptionInput, with_kv: bool) -> Result<CaptionState> {
        let lora = match input.adapters {
            Some(a) => LoraCall::new(a, input.lora_scale),
            None => LoraCall::NONE,
        };
        // 1. caption_projection → caption_norm [B, S, D], in the model dtype on its device.
        let ctx = self.projection.forward(&input.caption.to_device(self.device)?.to_dtype(self.dtype)?)?;
        // 2. The mask as diffusers' additive bias, f32 [B, 1, 1, S].
        let bias = match input.mask {
            Some(m) => {
                let (b, s) = m.dims2()?;
                Some(m.to_device(self.device)?.to_dtype(DType::F32)?.affine(-MASK_BIAS as f64, MASK_BIAS as f64)?.reshape((b, 1, 1, s))?)
            }
            None => None,
        };
        // 3. Every block's cross-attention K and V of the caption, for the cache.
        let kv = if with_kv { self.blocks.iter().map(|b| b.caption_kv(&ctx, lora)).collect::<Result<Vec<_>>>()? } else { Vec::new() };
        Ok(CaptionState { ctx, bias, kv })
    }
}

/// Everything the caption work depends on. Holding the tensors and the snapshot keeps their ids and address
/// from being reused while the entry lives.
struct CaptionKey {
    model: u64,
    caption: Tensor,
    mask: Option<Tensor>,
    adapters: Option<Arc<AdapterLayers>>,
    lora_scale: f64,
}

impl CaptionKey {
    fn matches(&self, other: &CaptionKey) -> bool {
        let same = |a: &Tensor, b: &Tensor| a.id() == b.id();
        self.model == other.model
            && same(&self.caption, &other.caption)
            && match (&self.mask, &other.mask) {
                (Some(a), Some(b)) => same(a, b),
                (None, None) => true,
                _ => false,
            }
            && match (&self.adapters, &other.adapters) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
            && self.lora_scale.to_bits() == other.lora_scale.to_bits()
    }
}

/// The caption states of one generation, one per model (see the module docs). Shared by the forward calls of
/// that generation; [`CaptionCache::clear`] (or dropping it) frees the tensors once running calls finish.
#[derive(Default)]
pub struct CaptionCache {
    entries: Mutex<Vec<(CaptionKey, Arc<CaptionState>)>>,
}

impl CaptionCache {
    pub fn new() -> Self {
        Self::default()
    }

    fn lookup(&self, key: &CaptionKey) -> Option<Arc<CaptionState>> {
        let entries = self.entries.lock().expect("poisoned");
        entries.iter().find(|(k, _)| k.matches(key)).map(|(_, s)| s.clone())
    }

    /// Replace the entry of `key`'s model.
    fn store(&self, key: CaptionKey, state: Arc<CaptionState>) {
        let mut entries = self.entries.lock().expect("poisoned");
        entries.retain(|(k, _)| k.model != key.model);
        entries.push((key, state));
    }

    /// Drop every entry.
    pub fn clear(&self) {
        self.entries.lock().expect("poisoned").clear();
    }

    /// Device bytes the entries hold (≈ 2 · layers · B · S · cross-attention width · element size).
    pub fn bytes(&self) -> usize {
        self.entries.lock().expect("poisoned").iter().map(|(_, s)| s.bytes()).sum()
    }

    /// Number of models with an entry.
    pub fn len(&self) -> usize {
        self.entries.lock().expect("poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
