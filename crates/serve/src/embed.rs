//! [`EmbedService`]: the one copy of "tokenise → split into jobs → run on
//! the batcher" that every front end and provider shares (the HTTP
//! embeddings and rerank routes, the engine's query embedder, the in-memory
//! context provider).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anectx_core::{Embeddings, TokenBatch, Truncation};
use anectx_models::{ModelError, TextTokenizer, TokenSpan};

use crate::batcher::{Batcher, JobTimings, Op};
use crate::error::ServeError;
use crate::metrics::Metrics;

/// Texts tokenised and split into jobs that fit the batcher's limits.
#[derive(Debug)]
pub struct Prepared {
    pub jobs: Vec<TokenBatch>,
    /// Real (unpadded) tokens over all texts.
    pub real_tokens: usize,
    /// Indices of the texts that were truncated to the model's length.
    pub truncated: Vec<usize>,
    /// The same truncations with their lengths (`index` in input order).
    pub truncations: Vec<Truncation>,
    /// Tokens of each text as encoded (after truncation), in input order.
    pub lengths: Vec<usize>,
    /// Time spent tokenising.
    pub tokenize: Duration,
}

/// What to do with an input longer than the model reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Truncate {
    /// Keep its first tokens and report it in `truncated` (the default).
    #[default]
    Cut,
    /// Refuse the call with [`ServeError::TooLong`] (TEI's `truncate: false`,
    /// Ollama's `truncate: false`).
    Refuse,
}

/// Where the time of one service call went.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallTimings {
    pub tokenize: Duration,
    pub jobs: JobTimings,
}

/// Embeddings with what the caller may report about them.
#[derive(Debug)]
pub struct Embedded {
    pub embeddings: Embeddings,
    pub real_tokens: usize,
    pub truncated: Vec<usize>,
    pub timings: CallTimings,
}

/// Pair scores (query, document) in document order.
#[derive(Debug)]
pub struct Scored {
    pub scores: Vec<f32>,
    pub real_tokens: usize,
    pub truncated: Vec<usize>,
    pub timings: CallTimings,
}

/// Embeds texts and scores pairs through one [`Batcher`]. Cheap to clone.
#[derive(Clone)]
pub struct EmbedService {
    batcher: Batcher,
    tokenizer: Arc<TextTokenizer>,
    score_tokenizer: Option<Arc<TextTokenizer>>,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for EmbedService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedService")
            .field("batcher", &self.batcher)
            .field("scores", &self.score_tokenizer.is_some())
            .finish()
    }
}

impl EmbedService {
    pub fn new(batcher: Batcher, tokenizer: Arc<TextTokenizer>) -> Self {
        Self {
            batcher,
            tokenizer,
            score_tokenizer: None,
            metrics: None,
        }
    }

    /// Scores pairs with a classifier that reads `tokenizer`'s pairs.
    pub fn with_score_tokenizer(mut self, tokenizer: Option<Arc<TextTokenizer>>) -> Self {
        self.score_tokenizer = tokenizer;
        self
    }

    /// Observes tokenisation time (`anectx_tokenize_duration_seconds{op}`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn batcher(&self) -> &Batcher {
        &self.batcher
    }

    pub fn tokenizer(&self) -> &Arc<TextTokenizer> {
        &self.tokenizer
    }

    /// Whether [`EmbedService::score`] runs a classifier (else callers fall
    /// back to embedding cosine).
    pub fn scores_pairs(&self) -> bool {
        self.score_tokenizer.is_some()
    }

    /// Tokenises `texts` (or, with `query`, the pairs `(query, text)`) and
    /// splits them into jobs. Blocking (CPU work).
    pub fn prepare(&self, texts: &[&str], query: Option<&str>) -> Result<Prepared, ServeError> {
        let (tok, op) = match query {
            None => (&self.tokenizer, Op::Embed),
            Some(_) => (
                self.score_tokenizer.as_ref().ok_or_else(|| {
                    ServeError::Unavailable("this server has no classifier to score pairs".into())
                })?,
                Op::Score,
            ),
        };
        let start = Instant::now();
        let mut batches = Vec::new();
        for part in texts.chunks(self.batcher.config().max_batch_rows.max(1)) {
            let b = match query {
                None => tok.encode_batch(part),
                Some(q) => {
                    let pairs: Vec<(&str, &str)> = part.iter().map(|d| (q, *d)).collect();
                    tok.encode_pairs(&pairs)
                }
            };
            batches.push(b.map_err(|e| match e {
                ModelError::Input(m) => ServeError::invalid_param("input", m),
                other => ServeError::invalid(other.to_string()),
            })?);
        }
        let tokenize = start.elapsed();
        if let Some(m) = &self.metrics {
            m.tokenize_duration.observe_duration(op.label(), tokenize);
        }
        let mut jobs = Vec::new();
        let mut real_tokens = 0;
        let mut truncations = Vec::new();
        let mut lengths = Vec::with_capacity(texts.len());
        let mut base = 0;
        for b in batches {
            real_tokens += b.real_tokens();
            lengths.extend((0..b.batch).map(|i| b.len_of(i)));
            truncations.extend(b.truncations.iter().map(|t| Truncation {
                index: base + t.index,
                ..t.clone()
            }));
            base += b.batch;
            let rows = self.batcher.rows_per_job(b.seq);
            jobs.extend(b.split_rows(rows));
        }
        Ok(Prepared {
            jobs,
            real_tokens,
            truncated: truncations.iter().map(|t| t.index).collect(),
            truncations,
            lengths,
            tokenize,
        })
    }

    /// Refuses `prepared` under [`Truncate::Refuse`] when an input was cut.
    fn check_truncation(&self, prepared: &Prepared, truncate: Truncate) -> Result<(), ServeError> {
        match (truncate, prepared.truncations.first()) {
            (Truncate::Refuse, Some(t)) => Err(ServeError::TooLong {
                index: t.index,
                tokens: t.original_len,
                max: t.kept,
            }),
            _ => Ok(()),
        }
    }

    /// [`EmbedService::prepare`] on tokio's blocking pool.
    async fn prepare_async(
        &self,
        texts: Arc<Vec<String>>,
        query: Option<String>,
    ) -> Result<Prepared, ServeError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            this.prepare(&refs, query.as_deref())
        })
        .await
        .map_err(|e| ServeError::internal(format!("the tokenizer task failed: {e}")))?
    }

    /// Embeds `texts` (async callers); too-long inputs are cut.
    pub async fn embed(&self, texts: Arc<Vec<String>>) -> Result<Embedded, ServeError> {
        self.embed_with(texts, Truncate::Cut).await
    }

    /// Embeds `texts` (async callers), with a choice for too-long inputs.
    pub async fn embed_with(
        &self,
        texts: Arc<Vec<String>>,
        truncate: Truncate,
    ) -> Result<Embedded, ServeError> {
        let p = self.prepare_async(texts, None).await?;
        self.check_truncation(&p, truncate)?;
        let (embeddings, jobs) = self.batcher.embed(p.jobs).await?;
        Ok(Embedded {
            embeddings,
            real_tokens: p.real_tokens,
            truncated: p.truncated,
            timings: CallTimings {
                tokenize: p.tokenize,
                jobs,
            },
        })
    }

    /// Scores `(query, doc)` pairs with the classifier (async callers);
    /// too-long pairs are cut.
    pub async fn score(&self, query: String, docs: Arc<Vec<String>>) -> Result<Scored, ServeError> {
        self.score_with(query, docs, Truncate::Cut).await
    }

    /// Scores `(query, doc)` pairs, with a choice for too-long pairs.
    pub async fn score_with(
        &self,
        query: String,
        docs: Arc<Vec<String>>,
        truncate: Truncate,
    ) -> Result<Scored, ServeError> {
        let p = self.prepare_async(docs, Some(query)).await?;
        self.check_truncation(&p, truncate)?;
        let (scores, jobs) = self.batcher.score(p.jobs).await?;
        Ok(Scored {
            scores,
            real_tokens: p.real_tokens,
            truncated: p.truncated,
            timings: CallTimings {
                tokenize: p.tokenize,
                jobs,
            },
        })
    }

    /// The tokens of each text with their character spans (async callers;
    /// TEI's `/tokenize`). Nothing is truncated.
    pub async fn tokens(
        &self,
        texts: Arc<Vec<String>>,
        add_special_tokens: bool,
    ) -> Result<Vec<Vec<TokenSpan>>, ServeError> {
        let tok = self.tokenizer.clone();
        tokio::task::spawn_blocking(move || {
            texts
                .iter()
                .map(|t| tok.tokens(t, add_special_tokens))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| ServeError::internal(format!("the tokenizer task failed: {e}")))?
        .map_err(|e| match e {
            ModelError::Input(m) => ServeError::invalid_param("inputs", m),
            other => ServeError::invalid(other.to_string()),
        })
    }

    /// Embeds `texts` from a blocking thread (a context provider). Must not
    /// be called from an async task.
    pub fn embed_blocking(&self, texts: &[&str]) -> Result<Embeddings, ServeError> {
        if texts.is_empty() {
            return Ok(Embeddings {
                rows: 0,
                dim: 0,
                data: Vec::new(),
            });
        }
        let p = self.prepare(texts, None)?;
        self.embed_prepared_blocking(p)
    }

    /// Runs already prepared jobs from a blocking thread.
    pub fn embed_prepared_blocking(&self, prepared: Prepared) -> Result<Embeddings, ServeError> {
        Ok(self.batcher.embed_blocking(prepared.jobs)?)
    }
}
