//! `NativeTokenizer`: the Gemma tokenizer (`tokenizer/` folder: tokenizer.json + tokenizer_config.json).

use crate::job::Job;
use napi::bindgen_prelude::AsyncTask;
use napi_derive::napi;
use sana_core::tokenizer::{GemmaTokenizer, TokenizedBatch};
use std::path::PathBuf;
use std::sync::Arc;

/// Options of `encode`.
#[napi(object)]
#[derive(Default)]
pub struct NativeEncodeOptions {
    /// Truncate every row to this many tokens, special tokens included. Defaults to no truncation.
    pub max_length: Option<u32>,
    /// Pad to `maxLength` (or, without it, to the longest row) with `<pad>`. Defaults to false.
    pub padding: Option<bool>,
    /// Prepend `<bos>` as the tokenizer config asks. Defaults to true.
    pub add_special_tokens: Option<bool>,
}

/// Token ids and attention masks (1 = real token, 0 = padding), one row per text.
#[napi(object)]
pub struct NativeEncoding {
    pub input_ids: Vec<Vec<u32>>,
    pub attention_mask: Vec<Vec<u32>>,
}

impl From<TokenizedBatch> for NativeEncoding {
    fn from(b: TokenizedBatch) -> Self {
        NativeEncoding { input_ids: b.input_ids, attention_mask: b.attention_mask }
    }
}

#[napi(js_name = "NativeTokenizer")]
pub struct JsTokenizer {
    inner: Arc<GemmaTokenizer>,
}

fn run(tok: &GemmaTokenizer, texts: &[String], o: NativeEncodeOptions) -> sana_core::Result<TokenizedBatch> {
    tok.encode(texts, o.max_length.map(|l| l as usize), o.padding.unwrap_or(false), o.add_special_tokens.unwrap_or(true))
}

#[napi]
impl JsTokenizer {
    /// Load a tokenizer folder (`tokenizer.json`, `tokenizer_config.json`) off the JS thread.
    #[napi]
    pub fn load(dir: String) -> AsyncTask<Job<GemmaTokenizer, JsTokenizer>> {
        AsyncTask::new(Job::new(
            move || GemmaTokenizer::load(&PathBuf::from(dir)),
            |t| Ok(JsTokenizer { inner: Arc::new(t) }),
        ))
    }

    /// Tokenize a batch off the JS thread. Sana's call is
    /// `encode(texts, { maxLength: 300, padding: true })` (HF `padding="max_length", truncation=True`).
    #[napi]
    pub fn encode(&self, texts: Vec<String>, options: Option<NativeEncodeOptions>) -> AsyncTask<Job<TokenizedBatch, NativeEncoding>> {
        let tok = self.inner.clone();
        let o = options.unwrap_or_default();
        AsyncTask::new(Job::new(move || run(&tok, &texts, o), |b| Ok(b.into())))
    }

    /// Synchronous `encode`, for a few short texts (e.g. counting the CHI tokens).
    #[napi]
    pub fn encode_sync(&self, texts: Vec<String>, options: Option<NativeEncodeOptions>) -> napi::Result<NativeEncoding> {
        run(&self.inner, &texts, options.unwrap_or_default()).map(Into::into).map_err(crate::js_err)
    }

    #[napi(getter)]
    pub fn pad_token_id(&self) -> u32 {
        self.inner.pad_token_id()
    }

    #[napi(getter)]
    pub fn bos_token_id(&self) -> Option<u32> {
        self.inner.bos_token_id()
    }

    #[napi(getter)]
    pub fn vocab_size(&self) -> u32 {
        self.inner.vocab_size() as u32
    }
}
