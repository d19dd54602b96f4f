//! SanaTransformer2DModel against the diffusers references in ../shared/fixtures (fp32, CPU).

mod common;

use common::*;
use sana_core::config::SanaTransformerConfig;
use sana_core::models::component::{BuildModel, Component, ComponentKind, LoadOptions};
use sana_core::models::sana_transformer::{SanaTransformer2DModel, TransformerInput};
use sana_core::{SanaError, Tensor};

fn load(case_name: &str) -> SanaTransformer2DModel {
    let dir = fixtures().join(case(case_name)["model_dir"].as_str().expect("model_dir"));
    let c = Component::<SanaTransformerConfig>::load(ComponentKind::Transformer, &dir, &LoadOptions::default()).expect("load");
    SanaTransformer2DModel::build(&c).expect("build")
}

fn input(case_name: &str) -> TransformerInput {
    let has_guidance = case(case_name)["tensors"].get("guidance").is_some();
    TransformerInput {
        hidden_states: case_tensor(case_name, "hidden_states"),
        encoder_hidden_states: case_tensor(case_name, "encoder_hidden_states"),
        timestep: case_tensor(case_name, "timestep"),
        encoder_attention_mask: Some(case_tensor(case_name, "encoder_attention_mask")),
        guidance: has_guidance.then(|| case_tensor(case_name, "guidance")),
        controlnet_block_samples: None,
        lora_scale: 1.0,
        pag: None,
        caption_cache: None,
    }
}

fn check_output(case_name: &str) {
    let model = load(case_name);
    let got = model.forward(&input(case_name)).expect("forward");
    let (atol, rtol) = tolerance(case_name);
    let err = assert_close(&format!("{case_name}/output"), &got, &case_tensor(case_name, "output"), atol, rtol);
    eprintln!("{case_name}: output max abs err {err:.3e} (atol {atol:e}, rtol {rtol:e})");
}

#[test]
fn transformer_square() {
    check_output("transformer_square");
}

#[test]
fn transformer_nonsquare() {
    check_output("transformer_nonsquare");
}

#[test]
fn transformer_sana15_square() {
    check_output("transformer_sana15_square");
}

#[test]
fn transformer_sprint_square() {
    check_output("transformer_sprint_square");
}

#[test]
fn transformer_sana2k_nonsquare() {
    check_output("transformer_sana2k_nonsquare");
}

/// Every captured intermediate of every case, at the case tolerance (for localising a regression).
#[test]
fn transformer_intermediates() {
    for case_name in [
        "transformer_square",
        "transformer_nonsquare",
        "transformer_sana15_square",
        "transformer_sprint_square",
        "transformer_sana2k_nonsquare",
    ] {
        let model = load(case_name);
        let (_, caps) = model.forward_with_intermediates(&input(case_name)).expect("forward");
        let names: Vec<String> =
            case(case_name)["intermediates"].as_object().expect("intermediates").keys().cloned().collect();
        let (atol, rtol) = tolerance(case_name);
        let mut report = Vec::new();
        for name in &names {
            let got = &caps.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{case_name}: no capture {name}")).1;
            let err = assert_close(&format!("{case_name}/{name}"), got, &case_tensor(case_name, name), atol, rtol);
            report.push(format!("{name} {err:.1e}"));
        }
        eprintln!("{case_name}: {}", report.join(", "));
    }
}

/// The mask is applied as a finite bias: an all-ones mask equals no mask at all.
#[test]
fn all_ones_mask_equals_no_mask() {
    let model = load("transformer_square");
    let mut inp = input("transformer_square");
    let m = inp.encoder_attention_mask.take().unwrap();
    let a = model.forward(&inp).unwrap();
    inp.encoder_attention_mask = Some(m.ones_like().unwrap().to_dtype(sana_core::DType::F32).unwrap());
    let b = model.forward(&inp).unwrap();
    assert_close("ones mask vs none", &a, &b, 1e-6, 0.0);
}

/// ControlNet residuals: zeros change nothing; a residual for block 1 changes the output, and a
/// wrongly shaped one is rejected (the diffusers comparison is __test__/controlnet.spec.mjs).
#[test]
fn controlnet_residuals_plumbing() {
    let model = load("transformer_square");
    let mut inp = input("transformer_square");
    let base = model.forward(&inp).unwrap();
    let zeros = Tensor::zeros((2, 64, 64), sana_core::DType::F32, &sana_core::Device::Cpu).unwrap();
    inp.controlnet_block_samples = Some(vec![zeros.clone()]);
    assert_close("zero residual", &model.forward(&inp).unwrap(), &base, 0.0, 0.0);
    // Not a constant: the final LayerNorm would remove a per-token constant shift.
    inp.controlnet_block_samples = Some(vec![zeros.randn_like(0.0, 1.0).unwrap()]);
    let diff = (model.forward(&inp).unwrap() - &base).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff > 1e-3, "residual had no effect");
    inp.controlnet_block_samples = Some(vec![zeros.narrow(1, 0, 8).unwrap()]);
    expect_invalid(&model, &inp, "controlnetBlockSamples");
}

fn expect_invalid(model: &SanaTransformer2DModel, inp: &TransformerInput, arg: &str) {
    match model.forward(inp) {
        Err(SanaError::InvalidArgument { name, msg }) => {
            assert_eq!(name, arg, "wrong argument named: {msg}");
            assert_eq!(SanaError::invalid_arg("x", "").code(), "SANA_INVALID_ARGUMENT");
        }
        Err(e) => panic!("expected InvalidArgument({arg}), got {e}"),
        Ok(_) => panic!("expected InvalidArgument({arg}), got Ok"),
    }
}

#[test]
fn bad_inputs_name_the_argument() {
    let model = load("transformer_square");
    let good = input("transformer_square");
    let dev = &sana_core::Device::Cpu;

    let mut i = good.clone();
    i.hidden_states = Tensor::zeros((2, 16, 8, 8), sana_core::DType::F32, dev).unwrap();
    expect_invalid(&model, &i, "hiddenStates");

    let mut i = good.clone();
    i.encoder_hidden_states = good.encoder_hidden_states.narrow(0, 0, 1).unwrap();
    expect_invalid(&model, &i, "encoderHiddenStates");

    let mut i = good.clone();
    i.encoder_attention_mask = Some(good.encoder_attention_mask.as_ref().unwrap().narrow(1, 0, 299).unwrap());
    expect_invalid(&model, &i, "encoderAttentionMask");

    let mut i = good.clone();
    i.timestep = good.timestep.narrow(0, 0, 1).unwrap();
    expect_invalid(&model, &i, "timestep");

    let mut i = good.clone();
    i.guidance = Some(good.timestep.clone());
    expect_invalid(&model, &i, "guidance");

    // Guidance model without guidance.
    let sprint = load("transformer_sprint_square");
    let mut i = input("transformer_sprint_square");
    i.guidance = None;
    expect_invalid(&sprint, &i, "guidance");
}

#[test]
fn spatial_size_must_be_a_multiple_of_the_patch() {
    // A patch-2 model with random weights (the fixtures all use patch 1).
    use sana_core::weights::ParamStore;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    let cfg: SanaTransformerConfig = serde_json::from_value(serde_json::json!({
        "in_channels": 4, "out_channels": 4, "num_attention_heads": 2, "attention_head_dim": 8, "num_layers": 1,
        "num_cross_attention_heads": 2, "cross_attention_head_dim": 8, "cross_attention_dim": 16,
        "caption_channels": 8, "patch_size": 2, "sample_size": 8, "interpolation_scale": 1.0
    }))
    .unwrap();
    let dev = sana_core::Device::Cpu;
    let shapes: Vec<(&str, Vec<usize>)> = vec![
        ("patch_embed.proj.weight", vec![16, 4, 2, 2]), ("patch_embed.proj.bias", vec![16]),
        ("time_embed.emb.timestep_embedder.linear_1.weight", vec![16, 256]), ("time_embed.emb.timestep_embedder.linear_1.bias", vec![16]),
        ("time_embed.emb.timestep_embedder.linear_2.weight", vec![16, 16]), ("time_embed.emb.timestep_embedder.linear_2.bias", vec![16]),
        ("time_embed.linear.weight", vec![96, 16]), ("time_embed.linear.bias", vec![96]),
        ("caption_projection.linear_1.weight", vec![16, 8]), ("caption_projection.linear_1.bias", vec![16]),
        ("caption_projection.linear_2.weight", vec![16, 16]), ("caption_projection.linear_2.bias", vec![16]),
        ("caption_norm.weight", vec![16]), ("scale_shift_table", vec![2, 16]),
        ("proj_out.weight", vec![16, 16]), ("proj_out.bias", vec![16]),
        ("transformer_blocks.0.scale_shift_table", vec![6, 16]),
        ("transformer_blocks.0.attn1.to_q.weight", vec![16, 16]), ("transformer_blocks.0.attn1.to_k.weight", vec![16, 16]),
        ("transformer_blocks.0.attn1.to_v.weight", vec![16, 16]),
        ("transformer_blocks.0.attn1.to_out.0.weight", vec![16, 16]), ("transformer_blocks.0.attn1.to_out.0.bias", vec![16]),
        ("transformer_blocks.0.attn2.to_q.weight", vec![16, 16]), ("transformer_blocks.0.attn2.to_q.bias", vec![16]),
        ("transformer_blocks.0.attn2.to_k.weight", vec![16, 16]), ("transformer_blocks.0.attn2.to_k.bias", vec![16]),
        ("transformer_blocks.0.attn2.to_v.weight", vec![16, 16]), ("transformer_blocks.0.attn2.to_v.bias", vec![16]),
        ("transformer_blocks.0.attn2.to_out.0.weight", vec![16, 16]), ("transformer_blocks.0.attn2.to_out.0.bias", vec![16]),
        ("transformer_blocks.0.ff.conv_inverted.weight", vec![80, 16, 1, 1]), ("transformer_blocks.0.ff.conv_inverted.bias", vec![80]),
        ("transformer_blocks.0.ff.conv_depth.weight", vec![80, 1, 3, 3]), ("transformer_blocks.0.ff.conv_depth.bias", vec![80]),
        ("transformer_blocks.0.ff.conv_point.weight", vec![16, 40, 1, 1]),
    ];
    let tensors: BTreeMap<String, Tensor> =
        shapes.into_iter().map(|(n, s)| (n.to_string(), Tensor::randn(0f32, 0.2, s, &dev).unwrap())).collect();
    let store = Arc::new(ParamStore::from_tensors(tensors));
    let model = SanaTransformer2DModel::new(&cfg, store.root()).unwrap();
    assert!(store.unused().is_empty(), "unused: {:?}", store.unused());
    let mut inp = TransformerInput {
        hidden_states: Tensor::randn(0f32, 1.0, (1, 4, 6, 4), &dev).unwrap(),
        encoder_hidden_states: Tensor::randn(0f32, 1.0, (1, 5, 8), &dev).unwrap(),
        timestep: Tensor::new(&[500f32], &dev).unwrap(),
        encoder_attention_mask: None,
        guidance: None,
        controlnet_block_samples: None,
        lora_scale: 1.0,
        pag: None,
        caption_cache: None,
    };
    let out = model.forward(&inp).unwrap();
    assert_eq!(out.dims(), &[1, 4, 6, 4]);
    inp.hidden_states = Tensor::randn(0f32, 1.0, (1, 4, 6, 5), &dev).unwrap();
    expect_invalid(&model, &inp, "hiddenStates");
}

/// PAG arguments are checked and named `pag`.
#[test]
fn pag_arguments_are_checked() {
    use sana_core::models::sana_transformer::PagInput;
    let model = load("transformer_square"); // 2 blocks, batch 2
    let mut inp = input("transformer_square");
    for (layers, perturbed_rows) in [(vec![2], 1), (vec![], 1), (vec![1], 0), (vec![1], 2)] {
        inp.pag = Some(PagInput { layers, perturbed_rows });
        expect_invalid(&model, &inp, "pag");
    }
}

/// diffusers' PAG processors skip norm_q/norm_k: on a qk-norm model (Sana 1.5) a PAG layer changes the
/// unperturbed row too, on a model without qk-norm that row is the plain forward.
#[test]
fn pag_skips_qk_norm_like_diffusers() {
    use sana_core::models::sana_transformer::PagInput;
    let unperturbed_change = |case_name: &str| {
        let model = load(case_name);
        let mut inp = input(case_name);
        let plain = model.forward(&inp).unwrap().narrow(0, 0, 1).unwrap();
        inp.pag = Some(PagInput { layers: vec![1], perturbed_rows: 1 });
        let pag = model.forward(&inp).unwrap();
        let diff = |a: &Tensor, b: &Tensor| (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let perturbed = diff(&pag.narrow(0, 1, 1).unwrap(), &model.forward(&input(case_name)).unwrap().narrow(0, 1, 1).unwrap());
        assert!(perturbed > 1e-2, "{case_name}: the perturbed row did not change ({perturbed})");
        diff(&pag.narrow(0, 0, 1).unwrap(), &plain)
    };
    let plain_model = unperturbed_change("transformer_square");
    assert!(plain_model < 1e-5, "no qk-norm: unperturbed row changed by {plain_model}");
    let qk_norm_model = unperturbed_change("transformer_sana15_square");
    assert!(qk_norm_model > 1e-3, "qk-norm: unperturbed row should lose norm_q/norm_k, changed by only {qk_norm_model}");
}

/// Sana 1.5 4.8B is the 1.6B architecture at 60 layers: nothing may assume ≤ 28. The tiny fixture's blocks,
/// repeated to 60 layers, must load (every block's tensors used), run every block, and stay finite.
#[test]
fn sixty_layers_load_and_run() {
    use std::collections::BTreeMap;
    let name = "transformer_square";
    let dir = fixtures().join(case(name)["model_dir"].as_str().expect("model_dir"));
    let c = Component::<SanaTransformerConfig>::load(ComponentKind::Transformer, &dir, &LoadOptions::default()).expect("load");
    let layers = c.config.num_layers;
    let mut tensors = BTreeMap::new();
    for (n, _, _) in c.store.infos() {
        let t = c.store.tensor(&n).unwrap().unwrap();
        match n.strip_prefix("transformer_blocks.").and_then(|r| r.split_once('.')) {
            // Block i of 60 takes block (i mod layers)'s weights.
            Some((i, rest)) => {
                let i: usize = i.parse().unwrap();
                for j in (i..60).step_by(layers) {
                    tensors.insert(format!("transformer_blocks.{j}.{rest}"), t.clone());
                }
            }
            None => {
                tensors.insert(n, t);
            }
        }
    }
    let mut cfg = c.config.clone();
    cfg.num_layers = 60;
    let store = std::sync::Arc::new(sana_core::weights::ParamStore::from_tensors(tensors));
    let deep = SanaTransformer2DModel::new(&cfg, store.root()).expect("60-layer model");
    assert!(store.unused().is_empty(), "unused: {:?}", store.unused());
    let (out, caps) = deep.forward_with_intermediates(&input(name)).expect("forward");
    let blocks: Vec<_> = caps.iter().filter(|(n, _)| n.starts_with("block_")).map(|(n, _)| n.clone()).collect();
    assert_eq!(blocks.len(), 60);
    assert_eq!(blocks.last().map(String::as_str), Some("block_59"));
    let v: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|x| x.is_finite()));
    // The depth is real: the 60-layer output is not the fixture model's.
    let shallow = SanaTransformer2DModel::build(&c).unwrap().forward(&input(name)).unwrap();
    assert_eq!(shallow.dims(), out.dims());
    let d = (shallow - &out).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(d > 1e-3, "60 layers changed nothing ({d})");
}

/// The weights the DiT merges (attn1 q/k/v, attn2 k/v) are not decoded at load: the build decodes them
/// into the merged GEMM weight, and `Component::build` then stores the model's views under their names,
/// so the originals never sit beside the merged copy. The views hold exactly the checkpoint's values,
/// and the model built this way still matches diffusers.
#[test]
fn merged_weights_are_decoded_by_the_build_and_replaced_by_its_views() {
    let case_name = "transformer_square";
    let dir = fixtures().join(case(case_name)["model_dir"].as_str().expect("model_dir"));
    let mut c = Component::<SanaTransformerConfig>::load(ComponentKind::Transformer, &dir, &LoadOptions::default()).expect("load");
    let names = ["transformer_blocks.0.attn1.to_q.weight", "transformer_blocks.0.attn1.to_v.weight", "transformer_blocks.0.attn2.to_v.bias"];
    let mut originals = Vec::new();
    for n in names {
        assert!(c.store.deferred.contains_key(n) && !c.store.tensors.contains_key(n), "{n} should be deferred at load");
        originals.push(c.store.tensor(n).expect("decode").expect("present"));
    }
    assert!(!c.store.deferred.contains_key("transformer_blocks.0.attn2.to_q.weight"), "attn2.to_q is not merged");
    let model: SanaTransformer2DModel = c.build().expect("build");
    assert!(c.store.deferred.is_empty(), "left deferred: {:?}", c.store.deferred.keys().collect::<Vec<_>>());
    for (n, want) in names.iter().zip(&originals) {
        let got = c.store.tensors.get(*n).expect("view stored");
        let diff = (got - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0, "{n}");
    }
    assert!(c.store.unused().is_empty());
    let got = model.forward(&input(case_name)).expect("forward");
    let (atol, rtol) = tolerance(case_name);
    assert_close(case_name, &got, &case_tensor(case_name, "output"), atol, rtol);
}
