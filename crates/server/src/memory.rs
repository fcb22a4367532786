//! Small things that need no fixture: [`MemoryContext`], an in-memory
//! [`ContextProvider`] over a fixed list of passages, and [`tiny`], randomly
//! initialised models with a word-level tokenizer, for tests, demos and load
//! runs.

use std::sync::Arc;

use anectx_core::Embeddings;
use anectx_models::TextTokenizer;

use crate::batcher::{BatchError, Batcher};
use crate::context::{ContextChunk, ContextError, ContextProvider, ContextRequest, ContextResult};

/// Cosine top-k over passages embedded once at start-up, packed greedily
/// by score until the token budget is spent. Queries are embedded through
/// the server's [`Batcher`], so they share its batching and backpressure.
pub struct MemoryContext {
    batcher: Batcher,
    tokenizer: Arc<TextTokenizer>,
    passages: Vec<Passage>,
    vectors: Embeddings,
}

struct Passage {
    source: String,
    text: String,
    tokens: usize,
}

impl MemoryContext {
    /// Embeds `(source, text)` passages. Blocking: call it outside async tasks.
    pub fn new(
        batcher: Batcher,
        tokenizer: TextTokenizer,
        passages: Vec<(String, String)>,
    ) -> Result<Self, ContextError> {
        let mut out = Vec::with_capacity(passages.len());
        let mut vectors: Option<Embeddings> = None;
        for part in passages.chunks(batcher.config().max_batch_rows) {
            let texts: Vec<&str> = part.iter().map(|p| p.1.as_str()).collect();
            let b = tokenizer
                .encode_batch(&texts)
                .map_err(|e| ContextError::InvalidQuery(format!("passage: {e}")))?;
            for (i, (source, text)) in part.iter().enumerate() {
                out.push(Passage {
                    source: source.clone(),
                    text: text.clone(),
                    tokens: b.len_of(i),
                });
            }
            let rows = batcher.rows_per_job(b.seq);
            let jobs = b.split_rows(rows);
            let e = batcher.embed_blocking(jobs).map_err(batch_err)?;
            match &mut vectors {
                None => vectors = Some(e),
                Some(v) => {
                    v.rows += e.rows;
                    v.data.extend(e.data);
                }
            }
        }
        Ok(Self {
            batcher,
            tokenizer: Arc::new(tokenizer),
            passages: out,
            vectors: vectors.unwrap_or(Embeddings {
                rows: 0,
                dim: 0,
                data: Vec::new(),
            }),
        })
    }

    pub fn len(&self) -> usize {
        self.passages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.passages.is_empty()
    }
}

fn batch_err(e: BatchError) -> ContextError {
    match e {
        BatchError::Overloaded { .. } => ContextError::Overloaded(e.to_string()),
        BatchError::TooLarge(m) => ContextError::InvalidQuery(m),
        other => ContextError::Failed(other.to_string()),
    }
}

impl ContextProvider for MemoryContext {
    fn describe(&self) -> String {
        format!("in-memory passages ({})", self.passages.len())
    }

    fn context(&self, request: &ContextRequest) -> Result<ContextResult, ContextError> {
        let b = self
            .tokenizer
            .encode_batch(&[request.query.as_str()])
            .map_err(|e| ContextError::InvalidQuery(e.to_string()))?;
        let q = self.batcher.embed_blocking(vec![b]).map_err(batch_err)?;
        let qv = q.row(0);
        let mut scored: Vec<(usize, f32)> = self
            .vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (i, v.iter().zip(qv).map(|(a, b)| a * b).sum()))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut chunks = Vec::new();
        let mut used = 0;
        for (i, score) in scored {
            if request.max_chunks.is_some_and(|m| chunks.len() >= m) {
                break;
            }
            let p = &self.passages[i];
            if used + p.tokens > request.budget_tokens {
                continue;
            }
            used += p.tokens;
            chunks.push(ContextChunk {
                marker: chunks.len() + 1,
                id: format!("mem:{i}"),
                source: p.source.clone(),
                text: p.text.clone(),
                score,
                tokens: p.tokens,
                details: serde_json::Value::Null,
            });
        }
        Ok(ContextResult {
            query: request.query.clone(),
            packed: ContextResult::pack(&chunks),
            chunks,
            tokens_used: used,
            budget_tokens: request.budget_tokens,
            details: serde_json::Value::Null,
        })
    }
}

/// Randomly initialised small models with a word-level tokenizer.
pub mod tiny {
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
}
