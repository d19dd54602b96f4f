//! AutoencoderDC against the diffusers references in ../shared/fixtures: the DC-AE-f32c32 structure
//! (sana-tiny/vae) and the DC-AE-Lite one (wave2/dc-ae-lite-tiny: ResBlock-only decoder, empty stage 0).

mod common;

use common::{assert_close, case_tensor, fixtures, tolerance};
use sana_core::config::AutoencoderDCConfig;
use sana_core::models::autoencoder_dc::{decode_activation_bytes, decode_memory, AutoencoderDC, DecodeOptions, Tiling};
use sana_core::models::component::{BuildModel, Component, ComponentKind, LoadOptions};
use sana_core::{SanaError, Tensor};
use std::sync::OnceLock;

fn load(dir: &str) -> AutoencoderDC {
    let c = Component::<AutoencoderDCConfig>::load(ComponentKind::Vae, &fixtures().join(dir), &LoadOptions::default())
        .unwrap_or_else(|e| panic!("load {dir}: {e}"));
    AutoencoderDC::build(&c).expect("build AutoencoderDC")
}

fn vae() -> &'static AutoencoderDC {
    static M: OnceLock<AutoencoderDC> = OnceLock::new();
    M.get_or_init(|| load("sana-tiny/vae"))
}

fn lite() -> &'static AutoencoderDC {
    static M: OnceLock<AutoencoderDC> = OnceLock::new();
    M.get_or_init(|| load("wave2/dc-ae-lite-tiny"))
}

fn untiled() -> DecodeOptions {
    DecodeOptions { tiling: Tiling::Off, ..Default::default() }
}

fn check_decode(case: &str) -> f64 {
    check_decode_with(vae(), case)
}

fn check_decode_with(m: &AutoencoderDC, case: &str) -> f64 {
    let z = case_tensor(case, "z");
    let got = m.decode(&z, &untiled()).unwrap();
    let (atol, rtol) = tolerance(case);
    let err = assert_close(case, &got, &case_tensor(case, "image"), atol, rtol);
    println!("{case}: max abs err {err:.3e} (atol {atol:e}, rtol {rtol:e})");
    err
}

fn check_encode(case: &str) -> f64 {
    check_encode_with(vae(), case)
}

fn check_encode_with(m: &AutoencoderDC, case: &str) -> f64 {
    let x = case_tensor(case, "image");
    let got = m.encode(&x).unwrap();
    let (atol, rtol) = tolerance(case);
    let err = assert_close(case, &got, &case_tensor(case, "latent"), atol, rtol);
    println!("{case}: max abs err {err:.3e} (atol {atol:e}, rtol {rtol:e})");
    err
}

#[test]
fn vae_decode_square() {
    check_decode("vae_decode_square");
    // Auto tiling with the default budget leaves a small latent untiled: identical output.
    let z = case_tensor("vae_decode_square", "z");
    let auto = vae().decode(&z, &DecodeOptions::default()).unwrap();
    let off = vae().decode(&z, &untiled()).unwrap();
    assert_eq!(max_abs(&(auto - off).unwrap()), 0.0);
}

#[test]
fn vae_decode_nonsquare_b2() {
    check_decode("vae_decode_nonsquare_b2");
}

#[test]
fn vae_decode_tiny_quadratic() {
    check_decode("vae_decode_tiny_quadratic");
}

#[test]
fn vae_encode_square() {
    check_encode("vae_encode_square");
}

#[test]
fn vae_encode_tiny_quadratic() {
    check_encode("vae_encode_tiny_quadratic");
}

#[test]
fn dcae_lite_decode_square() {
    check_decode_with(lite(), "dcae_lite_decode_square");
}

#[test]
fn dcae_lite_decode_nonsquare_b2() {
    check_decode_with(lite(), "dcae_lite_decode_nonsquare_b2");
}

#[test]
fn dcae_lite_encode_nonsquare() {
    check_encode_with(lite(), "dcae_lite_encode_nonsquare");
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// Mean |I[x] − I[x−1]| per column boundary x (over batch, channels, rows) of [B, C, H, W].
fn column_jumps(img: &Tensor) -> Vec<f32> {
    let (b, c, h, w) = img.dims4().unwrap();
    let v = img.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    (1..w)
        .map(|x| {
            let mut s = 0f32;
            for p in 0..b * c * h {
                s += (v[p * w + x] - v[p * w + x - 1]).abs();
            }
            s / (b * c * h) as f32
        })
        .collect()
}

#[test]
fn tiled_decode_agrees_with_untiled_and_is_seamless() {
    let z = case_tensor("vae_decode_nonsquare_b2", "z"); // [2, 32, 6, 10]
    let full = vae().decode(&z, &untiled()).unwrap();
    let range = max_abs(&full);

    // 1. Tiled vs one pass for growing tiles. Every tile sees a different global context in its
    //    linear-attention stages (stages 3–5 attend over the whole tile), and with the fixture's random
    //    weights that global term dominates, so tiling is far from exact here; the difference must shrink
    //    as tiles cover more of the latent. (The blending itself is exact for a local decoder: see the
    //    unit tests in autoencoder_dc/tiling.rs.)
    let full_mean = full.abs().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap();
    let mut prev = f32::INFINITY;
    for (t, o) in [(4, 2), (6, 3), (9, 4)] {
        let opts = DecodeOptions { tiling: Tiling::On, tile_latent_size: Some(t), tile_overlap: Some(o), ..Default::default() };
        let tiled = vae().decode(&z, &opts).unwrap();
        assert_eq!(tiled.dims(), full.dims());
        let diff = (&tiled - &full).unwrap().abs().unwrap();
        let (max_d, mean_d) = (max_abs(&diff), diff.mean_all().unwrap().to_scalar::<f32>().unwrap());
        println!("tile {t} overlap {o} vs untiled: max |Δ| {max_d:.4}, mean |Δ| {mean_d:.4} (image: max |x| {range:.3}, mean |x| {full_mean:.3})");
        assert!(mean_d < prev && mean_d < full_mean, "tile {t}: mean diff {mean_d}");
        prev = mean_d;
    }

    // 2. A tile covering the whole latent is exactly the untiled decode.
    let whole = DecodeOptions { tiling: Tiling::On, tile_latent_size: Some(10), ..Default::default() };
    assert_eq!(max_abs(&(vae().decode(&z, &whole).unwrap() - &full).unwrap()), 0.0);

    // 3. Seams: with forced tiny tiles (3×3, overlap 1), no jump at a tile border column exceeds the
    //    largest neighbour difference the image has elsewhere.
    let tiny = DecodeOptions { tiling: Tiling::On, tile_latent_size: Some(3), tile_overlap: Some(1), ..Default::default() };
    let img = vae().decode(&z, &tiny).unwrap();
    let jumps = column_jumps(&img);
    // Tile starts along width 10 with tile 3, overlap 1: 0, 2, 4, 6, 7 → borders at 32·{2,3,4,5,6,7,8}.
    let borders: Vec<usize> = (2..=8).map(|l| 32 * l).collect();
    let interior_max = jumps.iter().enumerate().filter(|(i, _)| !borders.contains(&(i + 1))).map(|(_, v)| *v).fold(0f32, f32::max);
    let border_max = borders.iter().map(|&x| jumps[x - 1]).fold(0f32, f32::max);
    println!("tile 3/1: max mean jump at tile borders {border_max:.4}, elsewhere {interior_max:.4}");
    assert!(border_max <= interior_max, "seam: {border_max} > {interior_max}");
}

#[test]
fn activation_estimate_drives_auto_tiling() {
    let cfg = &vae().config;
    let f32 = sana_core::DType::F32;
    let small = decode_activation_bytes(cfg, f32, 1, 8, 8);
    // Linear in batch·h·w apart from the constant im2col band term.
    let band = 2 * sana_core::ops::conv2d::BAND_BYTES as u64;
    assert_eq!(decode_activation_bytes(cfg, f32, 2, 16, 16) - band, 8 * (small - band));
    // Half precision halves the activations.
    assert_eq!(2 * (decode_activation_bytes(cfg, sana_core::DType::BF16, 1, 8, 8) - band), small - band);
    // A budget that fits an 8×8 latent but not 16×16 tiles a 16×16 latent (with the largest fitting tile).
    let z = Tensor::randn(0f32, 1.0, (1, 32, 16, 16), &sana_core::Device::Cpu).unwrap();
    let tight = DecodeOptions { memory_budget_bytes: Some(small), ..Default::default() };
    let tiled = vae().decode(&z, &tight).unwrap();
    let full = vae().decode(&z, &untiled()).unwrap();
    assert_eq!(tiled.dims(), full.dims());
    assert!(max_abs(&(tiled - full).unwrap()) > 0.0, "expected a tiled decode");
    // The same budget leaves the 8×8 latent in one pass.
    let z8 = z.narrow(2, 0, 8).unwrap().narrow(3, 0, 8).unwrap();
    let a = vae().decode(&z8, &tight).unwrap();
    assert_eq!(max_abs(&(a - vae().decode(&z8, &untiled()).unwrap()).unwrap()), 0.0);
}

fn invalid_arg_name<T>(r: sana_core::Result<T>) -> String {
    match r {
        Err(SanaError::InvalidArgument { name, .. }) => name,
        Err(e) => panic!("expected InvalidArgument, got {e}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn bad_inputs_are_invalid_arguments() {
    let dev = sana_core::Device::Cpu;
    let zeros = |s: &[usize]| Tensor::zeros(s, sana_core::DType::F32, &dev).unwrap();
    let d = DecodeOptions::default();
    assert_eq!(invalid_arg_name(vae().decode(&zeros(&[1, 16, 4, 4]), &d)), "z");
    assert_eq!(invalid_arg_name(vae().decode(&zeros(&[1, 32, 0, 4]), &d)), "z");
    assert_eq!(invalid_arg_name(vae().decode(&zeros(&[32, 4, 4]), &d)), "z");
    assert_eq!(invalid_arg_name(vae().encode(&zeros(&[1, 4, 64, 64]))), "image");
    assert_eq!(invalid_arg_name(vae().encode(&zeros(&[1, 3, 64, 48]))), "image");
    assert_eq!(invalid_arg_name(vae().encode(&zeros(&[0, 3, 64, 64]))), "image");
    let bad_overlap = DecodeOptions { tiling: Tiling::On, tile_latent_size: Some(4), tile_overlap: Some(4), ..Default::default() };
    assert_eq!(invalid_arg_name(vae().decode(&zeros(&[1, 32, 8, 8]), &bad_overlap)), "tile_overlap");
    let bad_tile = DecodeOptions { tiling: Tiling::On, tile_latent_size: Some(0), ..Default::default() };
    assert_eq!(invalid_arg_name(vae().decode(&zeros(&[1, 32, 8, 8]), &bad_tile)), "tile_latent_size");
}


#[test]
fn lite_tiled_decode_works_and_a_whole_tile_is_exact() {
    let z = case_tensor("dcae_lite_decode_nonsquare_b2", "z"); // [2, 32, 5, 7]
    let full = lite().decode(&z, &untiled()).unwrap();
    let tiny = DecodeOptions { tiling: Tiling::On, tile_latent_size: Some(3), tile_overlap: Some(1), ..Default::default() };
    let tiled = lite().decode(&z, &tiny).unwrap();
    assert_eq!(tiled.dims(), full.dims());
    // The Lite decoder has no attention: each output pixel sees only a local window of the latent, so
    // tiles agree with the one-pass decode away from the tile borders far more closely than the base VAE.
    let diff = (&tiled - &full).unwrap().abs().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap();
    let mean = full.abs().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap();
    println!("Lite tile 3/1 vs untiled: mean |Δ| {diff:.4} (mean |x| {mean:.3})");
    assert!(diff.is_finite() && diff < mean, "tiled Lite decode differs by {diff} (mean |x| {mean})");
    let whole = DecodeOptions { tiling: Tiling::On, tile_latent_size: Some(7), ..Default::default() };
    assert_eq!(max_abs(&(lite().decode(&z, &whole).unwrap() - &full).unwrap()), 0.0);
}

#[test]
fn lite_estimate_ignores_the_empty_stage() {
    // Stage 0 of DC-AE-Lite has no layers, so its width never allocates anything.
    let mut cfg = lite().config.clone();
    let f32 = sana_core::DType::F32;
    let a = decode_activation_bytes(&cfg, f32, 1, 16, 16);
    cfg.decoder_block_out_channels[0] *= 16;
    assert_eq!(decode_activation_bytes(&cfg, f32, 1, 16, 16), a);
    // …while the base VAE's stage 0 (3 ResBlocks at full resolution) does.
    let mut base = vae().config.clone();
    let b = decode_activation_bytes(&base, f32, 1, 16, 16);
    base.decoder_block_out_channels[0] *= 16;
    assert!(decode_activation_bytes(&base, f32, 1, 16, 16) > b);
}

#[test]
fn decode_memory_follows_the_plan() {
    let cfg = &vae().config;
    let f32 = sana_core::DType::F32;
    let one = decode_memory(cfg, f32, 1, 16, 16, &DecodeOptions::default()).unwrap();
    assert_eq!((one.tile_latent_size, one.peak_bytes), (None, one.untiled_bytes));
    let budget = decode_activation_bytes(cfg, f32, 1, 8, 8);
    let tight = DecodeOptions { memory_budget_bytes: Some(budget), ..Default::default() };
    let tiled = decode_memory(cfg, f32, 1, 16, 16, &tight).unwrap();
    assert_eq!(tiled.untiled_bytes, one.untiled_bytes);
    let t = tiled.tile_latent_size.expect("tiled");
    assert!((8..16).contains(&t), "tile {t}");
    assert!(tiled.peak_bytes < tiled.untiled_bytes && tiled.peak_bytes > decode_activation_bytes(cfg, f32, 1, t, t));
    let off = DecodeOptions { tiling: Tiling::Off, ..tight };
    assert_eq!(decode_memory(cfg, f32, 1, 16, 16, &off).unwrap().tile_latent_size, None);
}

#[test]
fn unsupported_config_values_name_their_key() {
    let base = serde_json::to_value(&lite().config).unwrap();
    for (key, value) in [
        ("decoder_block_types", serde_json::json!("ConvNeXtBlock")),
        ("decoder_block_types", serde_json::json!(["ResBlock", "ResBlock"])),
        ("encoder_block_types", serde_json::json!("Attention")),
        ("decoder_norm_types", serde_json::json!("layer_norm")),
        ("decoder_act_fns", serde_json::json!("mish")),
        ("decoder_conv_act_fn", serde_json::json!("tanh")),
        ("upsample_block_type", serde_json::json!("bicubic")),
        ("downsample_block_type", serde_json::json!("avgpool")),
        ("decoder_layers_per_block", serde_json::json!([0, 0, 2, 1, 1, 2])),
        ("decoder_qkv_multiscales", serde_json::json!([[], []])),
    ] {
        let mut json = base.clone();
        json[key] = value;
        let cfg: AutoencoderDCConfig = serde_json::from_value(json).unwrap();
        let msg = cfg.check().expect_err(key);
        assert!(msg.starts_with(key), "{key}: {msg}");
        // The model constructor reports the same check as SANA_INVALID_CONFIG.
        let store = std::sync::Arc::new(sana_core::weights::ParamStore::from_tensors(Default::default()));
        match AutoencoderDC::new(&cfg, &store.root()) {
            Err(e) => assert_eq!((e.code(), e.to_string().contains(key)), ("SANA_INVALID_CONFIG", true), "{key}: {e}"),
            Ok(_) => panic!("{key}: expected an error"),
        }
    }
    // Activation names are case-insensitive, as diffusers' get_activation.
    let mut json = base;
    json["decoder_conv_act_fn"] = "SiLU".into();
    assert!(serde_json::from_value::<AutoencoderDCConfig>(json).unwrap().check().is_ok());
}
