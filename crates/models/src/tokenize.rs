//! Tokenisation into fixed sequence buckets with reported truncation.

use std::path::Path;

use anectx_core::{TokenBatch, Truncation, SEQ_BUCKETS};
use tokenizers::{EncodeInput, Encoding, Tokenizer, TruncationParams, TruncationStrategy};

use crate::{ModelError, Result};

/// One token of a text, as TEI's `/tokenize` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenSpan {
    pub id: u32,
    /// The covered text for a real token; the token itself (e.g. `[CLS]`)
    /// for a special one.
    pub text: String,
    pub special: bool,
    /// Character offsets into the text (`None` for special tokens).
    pub start: Option<usize>,
    pub stop: Option<usize>,
}

/// A Hugging Face tokenizer that pads to the smallest bucket of
/// [`SEQ_BUCKETS`] that holds the longest input (capped at `max_seq`), and
/// reports every input it had to cut.
#[derive(Clone)]
pub struct TextTokenizer {
    truncating: Tokenizer,
    plain: Tokenizer,
    max_seq: usize,
    buckets: Vec<usize>,
    pad_id: u32,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab", &self.vocab_size())
            .field("max_seq", &self.max_seq)
            .field("buckets", &self.buckets)
            .finish()
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json`. `max_seq` caps the buckets (e.g. BERT's 512
    /// position embeddings).
    pub fn from_file(path: &Path, max_seq: usize) -> Result<Self> {
        let tok = Tokenizer::from_file(path).map_err(|e| {
            ModelError::Tokenizer(format!("could not load {}: {e}", path.display()))
        })?;
        Self::new(tok, max_seq)
    }

    pub fn from_bytes(bytes: &[u8], max_seq: usize) -> Result<Self> {
        let tok = Tokenizer::from_bytes(bytes)
            .map_err(|e| ModelError::Tokenizer(format!("invalid tokenizer.json: {e}")))?;
        Self::new(tok, max_seq)
    }

    fn new(mut tok: Tokenizer, max_seq: usize) -> Result<Self> {
        let mut buckets: Vec<usize> = SEQ_BUCKETS
            .iter()
            .copied()
            .filter(|&b| b <= max_seq)
            .collect();
        if buckets.is_empty() {
            buckets.push(max_seq.max(2));
        }
        let max_seq = *buckets.last().unwrap_or(&max_seq);
        tok.with_padding(None);
        let mut plain = tok.clone();
        plain
            .with_truncation(None)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        tok.with_truncation(Some(TruncationParams {
            max_length: max_seq,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            ..Default::default()
        }))
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let pad_id = tok
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| tok.token_to_id("[PAD]"))
            .or_else(|| tok.token_to_id("<pad>"))
            .unwrap_or(0);
        Ok(Self {
            truncating: tok,
            plain,
            max_seq,
            buckets,
            pad_id,
        })
    }

    /// Number of tokens the tokenizer can emit (including added tokens).
    pub fn vocab_size(&self) -> usize {
        self.truncating.get_vocab_size(true)
    }

    /// The largest id the tokenizer can emit plus one.
    pub fn id_bound(&self) -> usize {
        self.truncating
            .get_vocab(true)
            .values()
            .map(|&i| i as usize + 1)
            .max()
            .unwrap_or(0)
    }

    pub fn max_seq(&self) -> usize {
        self.max_seq
    }

    pub fn buckets(&self) -> &[usize] {
        &self.buckets
    }

    /// Restricts padding to a single fixed length (for static-shape runtimes).
    pub fn with_buckets(mut self, buckets: Vec<usize>) -> Self {
        if !buckets.is_empty() {
            self.max_seq = buckets.iter().copied().max().unwrap_or(self.max_seq);
            self.buckets = buckets;
        }
        self
    }

    /// The tokens of `text`, untruncated, with their character spans.
    pub fn tokens(&self, text: &str, add_special_tokens: bool) -> Result<Vec<TokenSpan>> {
        let enc = self
            .plain
            .encode_char_offsets(text, add_special_tokens)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let chars: Vec<char> = text.chars().collect();
        let spans = enc
            .get_ids()
            .iter()
            .zip(enc.get_tokens())
            .zip(enc.get_offsets())
            .zip(enc.get_special_tokens_mask())
            .map(|(((&id, token), &(start, stop)), &special)| {
                if special == 1 {
                    TokenSpan {
                        id,
                        text: token.clone(),
                        special: true,
                        start: None,
                        stop: None,
                    }
                } else {
                    let stop = stop.min(chars.len());
                    let start = start.min(stop);
                    TokenSpan {
                        id,
                        text: chars[start..stop].iter().collect(),
                        special: false,
                        start: Some(start),
                        stop: Some(stop),
                    }
                }
            })
            .collect();
        Ok(spans)
    }

    /// Tokenises single texts into one padded batch.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<TokenBatch> {
        check_texts(texts.iter().copied())?;
        let inputs: Vec<EncodeInput> = texts.iter().map(|&t| t.into()).collect();
        self.encode_inputs(inputs, |i| {
            self.plain.encode(texts[i], true).map(|e| e.len())
        })
    }

    /// Tokenises (first, second) pairs, e.g. (query, chunk), into one batch
    /// with segment ids 0 and 1. Truncation cuts the longer side first.
    pub fn encode_pairs(&self, pairs: &[(&str, &str)]) -> Result<TokenBatch> {
        check_texts(pairs.iter().map(|p| p.0))?;
        check_texts(pairs.iter().map(|p| p.1))?;
        let inputs: Vec<EncodeInput> = pairs.iter().map(|&(a, b)| (a, b).into()).collect();
        self.encode_inputs(inputs, |i| {
            self.plain
                .encode((pairs[i].0, pairs[i].1), true)
                .map(|e| e.len())
        })
    }

    fn encode_inputs(
        &self,
        inputs: Vec<EncodeInput>,
        full_len: impl Fn(usize) -> tokenizers::Result<usize>,
    ) -> Result<TokenBatch> {
        let encodings: Vec<Encoding> = self
            .truncating
            .encode_batch(inputs, true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let longest = encodings.iter().map(Encoding::len).max().unwrap_or(1);
        let seq = TokenBatch::bucket_for(longest, &self.buckets).unwrap_or(self.max_seq);
        let n = encodings.len();
        let (mut ids, mut type_ids, mut mask) = (
            vec![self.pad_id; n * seq],
            vec![0u32; n * seq],
            vec![0u32; n * seq],
        );
        let mut truncations = Vec::new();
        for (i, enc) in encodings.iter().enumerate() {
            let len = enc.len().min(seq);
            ids[i * seq..i * seq + len].copy_from_slice(&enc.get_ids()[..len]);
            type_ids[i * seq..i * seq + len].copy_from_slice(&enc.get_type_ids()[..len]);
            mask[i * seq..i * seq + len].fill(1);
            if !enc.get_overflowing().is_empty() {
                let original_len = full_len(i).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
                truncations.push(Truncation {
                    index: i,
                    original_len,
                    kept: len,
                });
            }
        }
        let mut batch = TokenBatch::new(n, seq, ids, type_ids, mask)
            .map_err(|e| ModelError::Input(e.to_string()))?;
        batch.truncations = truncations;
        Ok(batch)
    }
}

fn check_texts<'a>(texts: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut any = false;
    for (i, t) in texts.enumerate() {
        any = true;
        if t.trim().is_empty() {
            return Err(ModelError::Input(format!(
                "input {i} is empty: there is nothing to embed"
            )));
        }
    }
    if !any {
        return Err(ModelError::Input("no input texts were given".into()));
    }
    Ok(())
}
