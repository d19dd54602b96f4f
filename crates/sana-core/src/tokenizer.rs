//! The Gemma tokenizer as Sana's pipeline calls it (`GemmaTokenizerFast`):
//! `tokenizer(texts, padding="max_length", max_length=L, truncation=True, add_special_tokens=True)`.
//!
//! The BPE itself is the `tokenizers` crate on `tokenizer.json`. Special tokens, padding and
//! truncation follow `tokenizer_config.json` (`add_bos_token`, `add_eos_token`, `pad_token`,
//! `padding_side`, `truncation_side`), as transformers does, rather than tokenizer.json's
//! post-processor: `<bos>` prepended, no `<eos>`, truncation counting the special tokens, right padding
//! with `<pad>`.

use crate::config::read_json;
use crate::{ensure_arg, Result, SanaError};
use std::path::Path;
use std::str::FromStr;
use tokenizers::Tokenizer;

/// Ids and attention masks of a batch (mask 1 = real token, 0 = padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedBatch {
    pub input_ids: Vec<Vec<u32>>,
    pub attention_mask: Vec<Vec<u32>>,
}

pub struct GemmaTokenizer {
    tokenizer: Tokenizer,
    /// Prepended when `add_special_tokens` (`add_bos_token`, default true).
    bos_id: Option<u32>,
    /// Appended when `add_special_tokens` (`add_eos_token`, default false).
    eos_id: Option<u32>,
    pad_id: u32,
    pad_left: bool,
    truncate_left: bool,
}

impl GemmaTokenizer {
    /// Load `dir/tokenizer.json` and `dir/tokenizer_config.json` (a diffusers `tokenizer/` folder).
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(SanaError::not_found("tokenizer folder", dir));
        }
        let path = dir.join("tokenizer.json");
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SanaError::not_found("tokenizer file", &path),
            _ => SanaError::Io { path: path.clone(), source: e },
        })?;
        // Not JSON at all → InvalidJson; JSON that is not a tokenizer → Tokenizer.
        serde_json::from_str::<serde::de::IgnoredAny>(&text)
            .map_err(|e| SanaError::InvalidJson { path: path.clone(), msg: e.to_string() })?;
        let mut tokenizer = Tokenizer::from_str(&text)
            .map_err(|e| SanaError::Tokenizer(format!("cannot build a tokenizer from {}: {e}", path.display())))?;
        // Padding and truncation are ours (below); ignore any stored in tokenizer.json.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| SanaError::Tokenizer(format!("{}: {e}", path.display())))?;

        let cfg_path = dir.join("tokenizer_config.json");
        let cfg = read_json(&cfg_path)?;
        let flag = |key: &str, default: bool| cfg.get(key).and_then(|v| v.as_bool()).unwrap_or(default);
        let side_is_left = |key: &str| -> Result<bool> {
            match cfg.get(key).and_then(|v| v.as_str()).unwrap_or("right") {
                "right" => Ok(false),
                "left" => Ok(true),
                other => Err(SanaError::InvalidConfig { path: cfg_path.clone(), msg: format!("{key} must be \"left\" or \"right\", got \"{other}\"") }),
            }
        };
        let token_id = |key: &str, default: &str| -> Result<u32> {
            // The value is a string or, in older configs, an AddedToken object {"content": ...}.
            let v = cfg.get(key);
            let content = v.and_then(|v| v.as_str().or_else(|| v.get("content").and_then(|c| c.as_str()))).unwrap_or(default);
            tokenizer.token_to_id(content).ok_or_else(|| SanaError::InvalidConfig {
                path: cfg_path.clone(),
                msg: format!("{key} \"{content}\" is not in the vocabulary of {}", path.display()),
            })
        };
        let bos_id = if flag("add_bos_token", true) { Some(token_id("bos_token", "<bos>")?) } else { None };
        let eos_id = if flag("add_eos_token", false) { Some(token_id("eos_token", "<eos>")?) } else { None };
        let pad_id = token_id("pad_token", "<pad>")?;
        let (pad_left, truncate_left) = (side_is_left("padding_side")?, side_is_left("truncation_side")?);
        Ok(GemmaTokenizer { tokenizer, bos_id, eos_id, pad_id, pad_left, truncate_left })
    }

    /// Tokenize a batch.
    /// - `max_length: Some(L)`: truncate to L tokens, special tokens included (`truncation=True`);
    ///   with `padding`, pad every row to exactly L (`padding="max_length"`).
    /// - `max_length: None`: no truncation; with `padding`, pad to the longest row (`padding=True`).
    /// - `add_special_tokens`: prepend `<bos>` (and append `<eos>` if the config asks for it).
    pub fn encode(&self, texts: &[String], max_length: Option<usize>, padding: bool, add_special_tokens: bool) -> Result<TokenizedBatch> {
        let specials = if add_special_tokens { self.bos_id.is_some() as usize + self.eos_id.is_some() as usize } else { 0 };
        if let Some(l) = max_length {
            ensure_arg!(l >= specials.max(1), "maxLength", "must be at least {} (the special tokens), got {l}", specials.max(1));
        }
        let encodings = self
            .tokenizer
            .encode_batch_fast(texts.iter().map(|t| t.as_str()).collect::<Vec<_>>(), false)
            .map_err(|e| SanaError::Tokenizer(e.to_string()))?;
        // 1. Truncate the text tokens so that text + specials fit, then add the specials.
        let mut rows: Vec<Vec<u32>> = encodings
            .iter()
            .map(|enc| {
                let mut ids = enc.get_ids().to_vec();
                if let Some(l) = max_length {
                    let keep = l - specials;
                    if ids.len() > keep {
                        ids = if self.truncate_left { ids.split_off(ids.len() - keep) } else { ids[..keep].to_vec() };
                    }
                }
                if add_special_tokens {
                    ids.splice(0..0, self.bos_id);
                    ids.extend(self.eos_id);
                }
                ids
            })
            .collect();
        // 2. Masks, then pad to max_length or to the longest row.
        let mut masks: Vec<Vec<u32>> = rows.iter().map(|r| vec![1; r.len()]).collect();
        if padding {
            let target = max_length.unwrap_or_else(|| rows.iter().map(|r| r.len()).max().unwrap_or(0));
            for (ids, mask) in rows.iter_mut().zip(&mut masks) {
                let n = target - ids.len();
                if self.pad_left {
                    ids.splice(0..0, std::iter::repeat_n(self.pad_id, n));
                    mask.splice(0..0, std::iter::repeat_n(0, n));
                } else {
                    ids.extend(std::iter::repeat_n(self.pad_id, n));
                    mask.extend(std::iter::repeat_n(0, n));
                }
            }
        }
        Ok(TokenizedBatch { input_ids: rows, attention_mask: masks })
    }

    pub fn pad_token_id(&self) -> u32 {
        self.pad_id
    }

    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_id
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }
}
