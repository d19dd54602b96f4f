//! `NativeAutoencoderDC`: the vae component (sana-core `AutoencoderDC`).

use crate::component::ComponentKind;
use crate::job::Job;
use crate::tensor::JsTensor;
use crate::js_err;
use napi::bindgen_prelude::AsyncTask;
use napi_derive::napi;
use sana_core::config::AutoencoderDCConfig;
use sana_core::models::autoencoder_dc::{decode_memory, AutoencoderDC, DecodeOptions, Tiling};
use sana_core::{SanaError, Tensor};

crate::component_class!(JsVae, "NativeAutoencoderDC", AutoencoderDCConfig, ComponentKind::Vae, AutoencoderDC);

/// Options of `decode`.
#[napi(object)]
#[derive(Default)]
pub struct NativeDecodeOptions {
    /// `'auto'` (tile when the activation estimate exceeds the budget), `'on'` or `'off'`. Defaults to `'auto'`.
    pub tiling: Option<String>,
    /// Tile side in latent pixels (×32 image pixels). Defaults to the largest tile within the budget.
    pub tile_size: Option<u32>,
    /// Overlap of neighbouring tiles in latent pixels. Defaults to a quarter of the tile.
    pub tile_overlap: Option<u32>,
    /// Activation memory budget for one decoder pass, in MiB. Defaults to 4096.
    pub memory_budget_mb: Option<f64>,
}

fn decode_options(o: Option<NativeDecodeOptions>) -> napi::Result<DecodeOptions> {
    let o = o.unwrap_or_default();
    let tiling = match o.tiling.as_deref() {
        None | Some("auto") => Tiling::Auto,
        Some("on") => Tiling::On,
        Some("off") => Tiling::Off,
        Some(other) => {
            return Err(js_err(SanaError::invalid_arg("tiling", format!("expected 'auto', 'on' or 'off', received \"{other}\""))))
        }
    };
    let memory_budget_bytes = match o.memory_budget_mb {
        None => None,
        Some(mb) if mb.is_finite() && mb > 0.0 => Some((mb * 1024.0 * 1024.0) as u64),
        Some(mb) => return Err(js_err(SanaError::invalid_arg("memoryBudgetMb", format!("expected a positive number, received {mb}")))),
    };
    Ok(DecodeOptions {
        tiling,
        tile_latent_size: o.tile_size.map(|v| v as usize),
        tile_overlap: o.tile_overlap.map(|v| v as usize),
        memory_budget_bytes,
    })
}

#[napi]
impl JsVae {
    /// Decode raw latents z [B, 32, h, w] (diffusion latents / scalingFactor) to images [B, 3, 32h, 32w]
    /// in nominal [-1, 1], not clamped.
    #[napi]
    pub fn decode(&self, z: &JsTensor, options: Option<NativeDecodeOptions>) -> napi::Result<AsyncTask<Job<Tensor, JsTensor>>> {
        let (_component, model) = self.loaded()?;
        let opts = decode_options(options)?;
        let z = z.inner.clone();
        Ok(AsyncTask::new(Job::new(move || model.decode(&z, &opts), |t| Ok(JsTensor::new(t)))))
    }

    /// Encode images [B, 3, H, W] (H, W multiples of 32, nominal [-1, 1]) to raw latents [B, 32, H/32, W/32].
    #[napi]
    pub fn encode(&self, image: &JsTensor) -> napi::Result<AsyncTask<Job<Tensor, JsTensor>>> {
        let (_component, model) = self.loaded()?;
        let x = image.inner.clone();
        Ok(AsyncTask::new(Job::new(move || model.encode(&x), |t| Ok(JsTensor::new(t)))))
    }
}

/// Input of `vaeDecodeMemory`.
#[napi(object)]
pub struct NativeVaeMemoryInput {
    /// The VAE's config.json (snake_case keys, as written) serialized.
    pub config_json: String,
    /// `float32`, `bfloat16` or `float16`: the dtype the decoder computes in.
    pub dtype: String,
    pub batch: u32,
    /// Latent height and width (image size / 32 for f32c32).
    pub latent_height: u32,
    pub latent_width: u32,
    /// The decode options the call would use. Defaults to auto tiling with a 4096 MiB budget.
    pub options: Option<NativeDecodeOptions>,
}

/// The decode plan and its activation memory (weights not included).
#[napi(object)]
pub struct NativeVaeMemory {
    /// One pass over the whole latent.
    pub untiled_bytes: f64,
    /// Tile side in latent pixels when the decode would be tiled.
    pub tile_size: Option<u32>,
    /// The decode as planned: `untiledBytes`, or one tile plus the blend buffers.
    pub peak_bytes: f64,
}

/// The same estimate and tiling decision `decode` makes, from a config alone (nothing loaded), so that
/// the TypeScript memory planner and the native auto-tiling share one formula.
#[napi]
pub fn vae_decode_memory(input: NativeVaeMemoryInput) -> napi::Result<NativeVaeMemory> {
    let json = sana_core::config::parse_json_str(&input.config_json, "vae config").map_err(js_err)?;
    let cfg: AutoencoderDCConfig = sana_core::config::parse_config(json, std::path::Path::new("<vae config>")).map_err(js_err)?;
    let dtype = match input.dtype.as_str() {
        "float32" => sana_core::DType::F32,
        "bfloat16" => sana_core::DType::BF16,
        "float16" => sana_core::DType::F16,
        other => return Err(js_err(SanaError::invalid_arg("dtype", format!("expected 'float32', 'bfloat16' or 'float16', received \"{other}\"")))),
    };
    let (b, h, w) = (input.batch as usize, input.latent_height as usize, input.latent_width as usize);
    if b == 0 || h == 0 || w == 0 {
        return Err(js_err(SanaError::invalid_arg("batch", format!("batch and latent size must be > 0, received {b}×{h}×{w}"))));
    }
    let m = decode_memory(&cfg, dtype, b, h, w, &decode_options(input.options)?).map_err(js_err)?;
    Ok(NativeVaeMemory { untiled_bytes: m.untiled_bytes as f64, tile_size: m.tile_latent_size.map(|t| t as u32), peak_bytes: m.peak_bytes as f64 })
}
