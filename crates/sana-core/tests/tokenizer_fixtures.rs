//! The Gemma tokenizer against the `tokenizer` fixture case: ids and masks exactly as `encode_prompt`
//! hands them to the text encoder, with CHI (max_length 506) and without (300), and the negatives.

mod common;
use common::*;
use sana_core::tokenizer::GemmaTokenizer;

fn tokenizer() -> GemmaTokenizer {
    GemmaTokenizer::load(&fixtures().join("sana-tiny/tokenizer")).expect("load tokenizer")
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

fn to_u32_rows(key: &str) -> Vec<Vec<u32>> {
    tensor(key).to_vec2::<i64>().unwrap().into_iter().map(|r| r.into_iter().map(|x| x as u32).collect()).collect()
}

fn check(tok: &GemmaTokenizer, texts: &[String], max_len: usize, which: &str) {
    let got = tok.encode(texts, Some(max_len), true, true).unwrap();
    let (want_ids, want_mask) = (to_u32_rows(&format!("tokenizer/{which}/input_ids")), to_u32_rows(&format!("tokenizer/{which}/attention_mask")));
    for (i, text) in texts.iter().enumerate() {
        assert_eq!(got.input_ids[i], want_ids[i], "{which}: ids of prompt {i} ({text:?})");
        assert_eq!(got.attention_mask[i], want_mask[i], "{which}: mask of prompt {i}");
    }
    assert_eq!(got.input_ids.len(), want_ids.len());
}

#[test]
fn prompts_with_and_without_chi_and_negatives() {
    let c = case("tokenizer");
    let tok = tokenizer();
    let prompts = strings(&c["preprocessed_prompts"]);
    assert_eq!(prompts.len(), 8);
    let chi = c["chi_prompt_joined"].as_str().unwrap();

    // The CHI length rule: unpadded, with <bos>.
    let chi_ids = tok.encode(&[chi.to_string()], None, false, true).unwrap().input_ids.remove(0);
    let want_chi: Vec<u32> = c["chi_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    assert_eq!(chi_ids, want_chi);
    assert_eq!(chi_ids.len(), c["num_chi_prompt_tokens"].as_u64().unwrap() as usize);
    let max_seq = c["max_sequence_length"].as_u64().unwrap() as usize;
    let max_with_chi = chi_ids.len() + max_seq - 2;
    assert_eq!(max_with_chi, c["max_length_with_chi"].as_u64().unwrap() as usize);

    let with_chi: Vec<String> = prompts.iter().map(|p| format!("{chi}{p}")).collect();
    check(&tok, &with_chi, max_with_chi, "with_chi");
    check(&tok, &prompts, max_seq, "without_chi");
    let negs = strings(&c["negative_prompts"]);
    check(&tok, &negs[..1], max_seq, "negative_0");
    check(&tok, &negs[1..], max_seq, "negative_1");

    // The unpadded form: exactly the real tokens, truncated iff the manifest says so.
    let unpadded = tok.encode(&with_chi, None, false, true).unwrap();
    for (p, row) in c["per_prompt"].as_array().unwrap().iter().zip(&unpadded.input_ids) {
        assert_eq!(row.len() > max_with_chi, p["with_chi_truncated"].as_bool().unwrap(), "{}", p["prompt"]);
        if !p["with_chi_truncated"].as_bool().unwrap() {
            assert_eq!(row.len(), p["with_chi_num_tokens"].as_u64().unwrap() as usize);
        }
        assert!(unpadded.attention_mask.iter().all(|m| m.iter().all(|&x| x == 1)));
    }
    let neg_unpadded = tok.encode(&negs, None, false, true).unwrap().input_ids;
    let want: Vec<Vec<u32>> = c["negative_ids_unpadded"].as_array().unwrap().iter()
        .map(|r| r.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()).collect();
    assert_eq!(neg_unpadded, want);
}

#[test]
fn long_empty_and_control_character_prompts() {
    let tok = tokenizer();
    let long: String = "a watercolor fox in a snowy forest, ".repeat(300).chars().take(10_000).collect();
    let control: String = (0u8..32).map(|b| b as char).chain(['\u{7f}', '\u{200b}', '\u{feff}', '\u{fffd}']).collect();
    let texts = vec![long, String::new(), control, "<bos><pad><eos> literal specials".to_string()];
    let out = tok.encode(&texts, Some(300), true, true).unwrap();
    for (ids, mask) in out.input_ids.iter().zip(&out.attention_mask) {
        assert_eq!((ids.len(), mask.len()), (300, 300));
        assert_eq!(ids[0], 2, "<bos> first");
        let n = mask.iter().filter(|&&m| m == 1).count();
        assert!(mask[..n].iter().all(|&m| m == 1) && ids[n..].iter().all(|&i| i == 0), "right padding with <pad>");
    }
    assert_eq!(out.attention_mask[0].iter().sum::<u32>(), 300, "10k-char prompt is truncated to max_length");
    assert_eq!(out.attention_mask[1].iter().sum::<u32>(), 1, "empty prompt is just <bos>");
    let unpadded = tok.encode(&texts, None, false, true).unwrap();
    assert!(unpadded.input_ids[0].len() > 300);
    assert_eq!(unpadded.input_ids[1], vec![2]);
    // Without special tokens, padding to the longest row.
    let plain = tok.encode(&texts[1..3], None, true, false).unwrap();
    assert!(plain.input_ids[0].iter().all(|&i| i == 0) && plain.attention_mask[0].iter().all(|&m| m == 0));
    assert_eq!(plain.input_ids[0].len(), plain.input_ids[1].len());
}

#[test]
fn typed_errors() {
    let missing = GemmaTokenizer::load(&fixtures().join("no-such-folder")).err().unwrap();
    assert_eq!(missing.code(), "SANA_NOT_FOUND");
    let dir = std::env::temp_dir().join(format!("sana-tok-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    assert_eq!(GemmaTokenizer::load(&dir).err().unwrap().code(), "SANA_NOT_FOUND");
    std::fs::write(dir.join("tokenizer.json"), "{ not json").unwrap();
    assert_eq!(GemmaTokenizer::load(&dir).err().unwrap().code(), "SANA_INVALID_JSON");
    std::fs::write(dir.join("tokenizer.json"), "{\"model\": 3}").unwrap();
    assert_eq!(GemmaTokenizer::load(&dir).err().unwrap().code(), "SANA_TOKENIZER_ERROR");
    std::fs::copy(fixtures().join("sana-tiny/tokenizer/tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    assert_eq!(GemmaTokenizer::load(&dir).err().unwrap().code(), "SANA_NOT_FOUND", "missing tokenizer_config.json");
    std::fs::write(dir.join("tokenizer_config.json"), "{\"padding_side\": 1,").unwrap();
    assert_eq!(GemmaTokenizer::load(&dir).err().unwrap().code(), "SANA_INVALID_JSON");
    std::fs::remove_dir_all(&dir).unwrap();

    let e = tokenizer().encode(&["x".into()], Some(0), true, true).unwrap_err();
    assert_eq!(e.code(), "SANA_INVALID_ARGUMENT");
    assert!(e.to_string().contains("maxLength"));
}
