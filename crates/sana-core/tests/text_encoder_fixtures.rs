//! Gemma-2 text encoder against the `text_encoder` and `encode_prompt` fixture cases
//! (transformers `Gemma2Model`, eager attention, fp32). Compared only where attention_mask == 1.

mod common;
use common::*;
use sana_core::models::component::{BuildModel, Component, ComponentKind, LoadOptions};
use sana_core::models::gemma2::Gemma2Model;
use sana_core::{DType, Device, Tensor};

fn model() -> Gemma2Model {
    let dir = fixtures().join("sana-tiny/text_encoder");
    let c = Component::load(ComponentKind::TextEncoder, &dir, &LoadOptions::default()).expect("load text_encoder");
    Gemma2Model::build(&c).expect("build Gemma2Model")
}

/// Rows [B, L, H] → [N, H] at the positions where mask [B, L] is nonzero.
fn valid_rows(x: &Tensor, mask: &Tensor) -> Tensor {
    let (b, l, h) = x.dims3().unwrap();
    let m: Vec<i64> = mask.to_dtype(DType::I64).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let idx: Vec<u32> = (0..b * l).filter(|&i| m[i] != 0).map(|i| i as u32).collect();
    let idx = Tensor::new(idx.as_slice(), &Device::Cpu).unwrap();
    x.reshape((b * l, h)).unwrap().index_select(&idx, 0).unwrap()
}

fn check_case(m: &Gemma2Model, which: &str) {
    let ids = tensor(&format!("tokenizer/{which}/input_ids"));
    let mask = tensor(&format!("tokenizer/{which}/attention_mask"));
    let t0 = std::time::Instant::now();
    let got = m.forward(&ids, &mask).unwrap();
    let elapsed = t0.elapsed();
    let want = case_tensor("text_encoder", &format!("{which}_last_hidden_state"));
    assert_eq!(got.dims(), want.dims());
    // Padded positions are implementation-defined but must stay finite.
    let all: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
    assert!(all.iter().all(|v| v.is_finite()), "{which}: non-finite output at padded positions");
    let (atol, rtol) = tolerance("text_encoder");
    let err = assert_close(&format!("text_encoder/{which}"), &valid_rows(&got, &mask), &valid_rows(&want, &mask), atol, rtol);
    eprintln!("text_encoder/{which} {:?}: max abs err {err:.3e} (atol {atol:e}, rtol {rtol:e}) in {elapsed:?}", got.dims());
}

#[test]
fn text_encoder_with_chi() {
    check_case(&model(), "with_chi");
}

#[test]
fn text_encoder_without_chi() {
    check_case(&model(), "without_chi");
}

/// The encoder half of `encode_prompt`: encode the tokenized CHI prompts, keep `<bos>` + the last 299
/// positions (select_index), and the negative prompt "" without CHI.
#[test]
fn encode_prompt_encoder_half() {
    let m = model();
    let (atol, rtol) = tolerance("encode_prompt");
    let ids = case_tensor("encode_prompt", "tokenized_input_ids");
    let mask = case_tensor("encode_prompt", "tokenized_attention_mask");
    let h = m.forward(&ids, &mask).unwrap(); // [2, 506, 32]
    let l = h.dim(1).unwrap();
    let select: Vec<u32> = std::iter::once(0).chain((l - 299) as u32..l as u32).collect();
    let select = Tensor::new(select.as_slice(), &Device::Cpu).unwrap();
    let embeds = h.index_select(&select, 1).unwrap();
    let sel_mask = mask.index_select(&select, 1).unwrap();
    let want_mask = case_tensor("encode_prompt", "prompt_attention_mask");
    assert_eq!(sel_mask.to_vec2::<i64>().unwrap(), want_mask.to_vec2::<i64>().unwrap());
    let want = case_tensor("encode_prompt", "prompt_embeds");
    let err = assert_close("encode_prompt/prompt_embeds", &valid_rows(&embeds, &sel_mask), &valid_rows(&want, &sel_mask), atol, rtol);
    eprintln!("encode_prompt/prompt_embeds: max abs err {err:.3e} (atol {atol:e})");

    // Negative prompt "" for both prompts: the tokenizer case's negative_0 ids, repeated.
    let nids = tensor("tokenizer/negative_0/input_ids").repeat((2, 1)).unwrap();
    let nmask = tensor("tokenizer/negative_0/attention_mask").repeat((2, 1)).unwrap();
    let want_nmask = case_tensor("encode_prompt", "negative_prompt_attention_mask");
    assert_eq!(nmask.to_vec2::<i64>().unwrap(), want_nmask.to_vec2::<i64>().unwrap());
    let neg = m.forward(&nids, &nmask).unwrap();
    let want = case_tensor("encode_prompt", "negative_prompt_embeds");
    let err = assert_close("encode_prompt/negative_prompt_embeds", &valid_rows(&neg, &nmask), &valid_rows(&want, &nmask), atol, rtol);
    eprintln!("encode_prompt/negative_prompt_embeds: max abs err {err:.3e} (atol {atol:e})");
}

#[test]
fn rejects_bad_inputs_naming_the_argument() {
    let m = model();
    let ids = Tensor::new(&[[2i64, 5, 7]], &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1i64, 1]], &Device::Cpu).unwrap();
    let e = m.forward(&ids, &mask).unwrap_err();
    assert_eq!(e.code(), "SANA_INVALID_ARGUMENT");
    assert!(e.to_string().contains("attentionMask"), "{e}");
    let bad_ids = Tensor::new(&[[2i64, 256000]], &Device::Cpu).unwrap();
    let e = m.forward(&bad_ids, &mask).unwrap_err();
    assert!(e.to_string().contains("inputIds"), "{e}");
    let float_ids = Tensor::new(&[[2f32, 3.]], &Device::Cpu).unwrap();
    assert!(m.forward(&float_ids, &mask).unwrap_err().to_string().contains("inputIds"));
}

/// Checkpoints saved from a causal-LM wrapper name tensors `model.…` (plus a tied `lm_head.weight`);
/// BuildModel accepts them and gives the same output.
#[test]
fn accepts_model_prefixed_checkpoints() {
    let dir = fixtures().join("sana-tiny/text_encoder");
    let c = Component::<sana_core::config::Gemma2Config>::load(ComponentKind::TextEncoder, &dir, &LoadOptions::default()).unwrap();
    // (On CPU the embedding table is left in the file mapping; `tensor` decodes it.)
    let get = |name: &str| c.store.tensor(name).unwrap().unwrap();
    let mut tensors: std::collections::BTreeMap<String, Tensor> =
        c.store.infos().into_iter().map(|(k, _, _)| (format!("model.{k}"), get(&k))).collect();
    tensors.insert("lm_head.weight".into(), get("embed_tokens.weight"));
    let prefixed = Component { store: std::sync::Arc::new(sana_core::weights::ParamStore::from_tensors(tensors)), ..c };
    let m = Gemma2Model::build(&prefixed).expect("build from model.-prefixed names");
    let ids = tensor("tokenizer/negative_1/input_ids");
    let mask = tensor("tokenizer/negative_1/attention_mask");
    let a = m.forward(&ids, &mask).unwrap();
    let b = model().forward(&ids, &mask).unwrap();
    assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
}
