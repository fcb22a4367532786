//! Randomly initialised small models with a word-level tokenizer, for
//! tests, demos and load runs (feature `tiny`).

use anectx_models::{
    CandleBackend, ConvClassifier, ConvClassifierConfig, ConvEmbedder, ConvEmbedderConfig,
    Embedder, TextTokenizer,
};
use candle_core::DType;
use serde_json::{json, Map, Value};

/// Words of the tiny vocabulary (after `[PAD] [UNK] [CLS] [SEP]`).
pub const WORDS: &[&str] = &[
    "the",
    "a",
    "an",
    "of",
    "to",
    "in",
    "is",
    "on",
    "and",
    "or",
    "what",
    "how",
    "why",
    "where",
    "who",
    "which",
    "does",
    "do",
    "i",
    "you",
    "it",
    "cat",
    "dog",
    "mat",
    "sat",
    "paris",
    "france",
    "capital",
    "city",
    "neural",
    "engine",
    "apple",
    "chip",
    "model",
    "models",
    "embedding",
    "embeddings",
    "server",
    "port",
    "context",
    "query",
    "rust",
    "python",
    "code",
    "error",
    "water",
    "boils",
    "boil",
    "at",
    "degrees",
    "sea",
    "level",
    "mountain",
    "fox",
    "quick",
    "brown",
    "lazy",
    "jumps",
    "over",
    "shock",
    "wave",
    "flow",
    "kidney",
    "disease",
    "cell",
    "energy",
    "sun",
    "moon",
    "star",
    "light",
    "fast",
    "slow",
    "big",
    "small",
    "red",
    "blue",
    "green",
    "tree",
    "river",
    "bridge",
    "music",
    "song",
    "book",
    "read",
    "write",
    "train",
    "test",
    "data",
    "search",
    "rank",
    "answer",
    "cite",
    "source",
    "sources",
    ".",
    ",",
    "?",
    "!",
    "[",
    "]",
    "(",
    ")",
    ":",
    "1",
    "2",
    "3",
];

/// Vocabulary size of the tiny tokenizer.
pub fn vocab_size() -> usize {
    4 + WORDS.len()
}

/// A BERT-like word-level `tokenizer.json` (lowercase, whitespace split,
/// `[CLS] A [SEP] B [SEP]` template).
pub fn tokenizer_json() -> String {
    let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"];
    let mut vocab = Map::new();
    for (i, w) in specials.iter().chain(WORDS).enumerate() {
        vocab.insert((*w).to_string(), json!(i));
    }
    let added: Vec<Value> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"id": i, "content": s, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let special =
        |name: &str, type_id: u32| json!({"SpecialToken": {"id": name, "type_id": type_id}});
    let seq = |name: &str, type_id: u32| json!({"Sequence": {"id": name, "type_id": type_id}});
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special("[CLS]", 0), seq("A", 0), special("[SEP]", 0)],
            "pair": [special("[CLS]", 0), seq("A", 0), special("[SEP]", 0), seq("B", 1), special("[SEP]", 1)],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]},
            },
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"},
    })
    .to_string()
}

/// The tiny tokenizer with buckets up to `max_seq`.
pub fn tokenizer(max_seq: usize) -> Result<TextTokenizer, anectx_models::ModelError> {
    TextTokenizer::from_bytes(tokenizer_json().as_bytes(), max_seq)
}

/// A small random [`ConvEmbedder`] (64 dims) over the tiny vocabulary.
pub fn embedder(seed: u64) -> Result<Embedder, anectx_models::ModelError> {
    let cfg = ConvEmbedderConfig {
        vocab_size: vocab_size(),
        embed_dim: 32,
        widths: vec![64, 64],
        kernel_sizes: vec![3, 3],
        output_dim: 64,
        max_seq: 512,
        ..ConvEmbedderConfig::default()
    };
    Ok(Embedder::Conv(ConvEmbedder::new_random(
        cfg,
        seed,
        DType::F32,
    )?))
}

/// A small random [`ConvClassifier`] over the tiny vocabulary.
pub fn classifier(seed: u64) -> Result<ConvClassifier, anectx_models::ModelError> {
    let cfg = ConvClassifierConfig {
        vocab_size: vocab_size(),
        embed_dim: 32,
        widths: vec![32],
        kernel_sizes: vec![3],
        hidden_dim: 16,
        max_seq: 512,
        ..ConvClassifierConfig::default()
    };
    ConvClassifier::new_random(cfg, seed, DType::F32)
}

/// A CPU backend with the tiny embedder and, optionally, the classifier.
pub fn backend(with_classifier: bool) -> Result<CandleBackend, anectx_models::ModelError> {
    let c = if with_classifier {
        Some(classifier(7)?)
    } else {
        None
    };
    Ok(CandleBackend::new(Some(embedder(1)?), c))
}
