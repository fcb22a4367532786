//! The [`Engine`]: a store, an optional embedder and a relevance model.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;

use anectx_store::{Bm25Params, Pending, Store, VectorIndex};
use arc_swap::{ArcSwap, ArcSwapOption};
use serde::{Deserialize, Serialize};

use crate::embed::TextEmbedder;
use crate::filter::Filter;
use crate::ingest::{IndexOptions, IndexReport, Progress};
use crate::memory::{MemoryConfig, MemoryStats, UsageMemory};
use crate::relevance::{Candidate, Features, FusionRelevance, RelevanceModel};
use crate::select::{lost_in_the_middle, mmr, pack, rank_relevance, rrf, rrf_weighted, token_cost};
use crate::{EngineError, Result};

/// Which retrievers produce candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetrievalMode {
    Bm25,
    Dense,
    /// BM25 ∪ dense, fused with RRF.
    Hybrid,
    /// Hybrid, then the relevance model and MMR.
    Full,
}

impl RetrievalMode {
    pub const ALL: [RetrievalMode; 4] = [Self::Bm25, Self::Dense, Self::Hybrid, Self::Full];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bm25 => "bm25",
            Self::Dense => "dense",
            Self::Hybrid => "hybrid",
            Self::Full => "full",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
    }
}

/// Settings of one `context` call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContextOptions {
    /// Token budget for the packed context.
    pub budget: usize,
    /// Candidates taken from BM25 and from dense retrieval.
    pub k_lexical: usize,
    pub k_dense: usize,
    /// RRF constant.
    pub rrf_k: f32,
    /// MMR trade-off: 1 = relevance only, 0 = diversity only.
    pub mmr_lambda: f32,
    /// Candidates more similar than this to a chosen one are dropped.
    pub dedup_threshold: f32,
    pub bm25: Bm25Params,
    /// Candidates whose relevance is below this are never packed.
    pub min_relevance: f32,
    /// Share of calls that explore (0 = never, at most 1): one packed chunk is
    /// swapped for a random runner-up and the order is shuffled, so that
    /// chunks the current model ranks low still get shown and labelled. Every
    /// shown chunk carries its propensity (probability of being shown).
    pub explore: f32,
    /// Seed for exploration; `None` seeds from a per-engine counter and the clock.
    pub explore_seed: Option<u64>,
    /// RRF weight of the usage memory's "asked as" ranking (0: not fused;
    /// its score is still a candidate feature). Off by default: the field
    /// matches new questions too. At weight 1 it cost new questions
    /// 0.01–0.04 nDCG@10 in the project's earlier measurements, and even at
    /// 0.1 `simulate --stream` measured new questions −0.0055 (med, BM25
    /// only, 10 seeds) while the near-duplicate channel alone already gives
    /// the repeat and variant gains.
    pub memory_weight: f32,
    /// Chunks taken from the "asked as" ranking.
    pub k_memory: usize,
    /// RRF weight of the near-duplicate ranking (chunks used by logged
    /// questions within `memory_dup_threshold`), times the similarity
    /// (0 = off). It only acts when such a question exists.
    pub memory_dup_weight: f32,
    /// Similarity from which a logged question counts as a near duplicate
    /// (see [`UsageMemory::near_duplicates`]).
    pub memory_dup_threshold: f32,
    /// Negative evidence: a chunk that near duplicates were shown and never
    /// used loses this weight × the top RRF term (1 / (rrf_k + 1)) for each
    /// such showing, times the neighbour's similarity (0 = off). Each unused
    /// showing is one more independent sign that the chunk does not serve
    /// the question, so the penalty grows with their number.
    pub memory_unused_weight: f32,
    /// Which documents may be drawn from (path glob, kind, modification
    /// time); applied inside BM25 and the vector search, so the candidates
    /// are the best allowed chunks, not the allowed part of the best.
    #[serde(skip_serializing_if = "Filter::is_empty")]
    pub filter: Filter,
}

impl Default for ContextOptions {
    fn default() -> Self {
        Self {
            budget: 2000,
            k_lexical: 50,
            k_dense: 50,
            rrf_k: 60.0,
            mmr_lambda: 0.7,
            dedup_threshold: 0.95,
            bm25: Bm25Params::default(),
            min_relevance: 0.0,
            explore: 0.0,
            explore_seed: None,
            memory_weight: 0.0,
            k_memory: 20,
            memory_dup_weight: 2.0,
            memory_dup_threshold: 0.9,
            memory_unused_weight: 0.5,
            filter: Filter::default(),
        }
    }
}

/// Per-chunk scores in an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkScores {
    pub relevance: f32,
    /// Rank by relevance among the candidates (1 = best).
    pub relevance_rank: u32,
    /// Order in which MMR picked it (1 = first).
    pub mmr_rank: u32,
    #[serde(flatten)]
    pub features: Features,
}

/// What [`Engine::refresh_from_disk`] took in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// The vectors were read again (another process wrote some).
    pub vectors_read: bool,
    /// The store's embedder, when another process re-embedded the store
    /// with a model other than this engine's: this engine keeps answering
    /// from the vectors it has, and new documents reach it through BM25
    /// only, until it is started again with that model.
    pub other_embedder: Option<String>,
}

/// One packed chunk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContextChunk {
    /// The `[n]` marker; also its 1-based position in the context.
    pub marker: u32,
    pub chunk_id: u64,
    pub path: String,
    pub heading: Option<String>,
    pub byte_start: usize,
    pub byte_end: usize,
    pub line_start: usize,
    pub line_end: usize,
    /// 1-based page (PDF page, PPTX slide) the chunk comes from, if any;
    /// its source line then reads `path p.N`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    pub tokens: usize,
    pub text: String,
    pub scores: ChunkScores,
    /// Probability that this chunk is shown for this query under the logging
    /// policy (exploration included); training weights by its inverse.
    pub propensity: f32,
}

/// One scored candidate of a `context` call, shown or not (for the log).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolCandidate {
    pub chunk_id: u64,
    pub relevance: f32,
    pub relevance_rank: u32,
    pub features: Features,
    /// The `[n]` marker when the chunk was shown.
    pub shown: Option<u32>,
    /// Probability of being shown under the logging policy.
    pub propensity: f32,
}

/// Timings of one `context` call, in milliseconds, stage by stage.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Timings {
    /// Query embedding (0 when the caller passed the vector).
    pub embed_ms: f64,
    /// BM25 alone (it runs in parallel with the vector search).
    pub lexical_ms: f64,
    /// Vector search alone.
    pub dense_ms: f64,
    /// Wall time of BM25 and vector search together.
    pub retrieve_ms: f64,
    /// Usage-memory lookups and reciprocal-rank fusion.
    pub fusion_ms: f64,
    /// Loading the fused candidates and computing their features.
    pub features_ms: f64,
    /// The relevance model scoring the candidates.
    pub score_ms: f64,
    /// MMR diversification.
    pub mmr_ms: f64,
    /// Everything between retrieval and packing: fusion, features, relevance
    /// and MMR.
    pub rerank_ms: f64,
    /// Packing into the budget and rendering the context.
    pub pack_ms: f64,
    pub total_ms: f64,
}

/// The answer to a `context` call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContextResult {
    pub query: String,
    /// The packed context with `[n]` markers.
    pub text: String,
    /// Packed chunks in context order.
    pub chunks: Vec<ContextChunk>,
    pub budget: usize,
    pub used_tokens: usize,
    /// Number of fused candidates scored.
    pub candidates: usize,
    pub mode: RetrievalMode,
    pub relevance_model: String,
    pub embedder: Option<String>,
    pub notes: Vec<String>,
    pub timings: Timings,
    /// Whether this call explored (see [`ContextOptions::explore`]).
    pub explored: bool,
    /// Every scored candidate, best relevance first, with features and
    /// whether it was shown: what the learning loop logs.
    pub pool: Vec<PoolCandidate>,
}

/// The context engine. Thread-safe; share it behind an `Arc`.
pub struct Engine {
    store: Store,
    embedder: Option<Arc<dyn TextEmbedder>>,
    relevance: ArcSwap<Arc<dyn RelevanceModel>>,
    memory: ArcSwapOption<UsageMemory>,
    notes: Vec<String>,
    /// While the store's vectors are being replaced by this engine's
    /// embedder's ([`Engine::reembed`]): why retrieval is BM25-only.
    reembedding: ArcSwapOption<String>,
    calls: AtomicU64,
}

/// What [`Engine::reembed`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReembedReport {
    /// The store's embedder before (`None`: BM25-only).
    pub from: Option<String>,
    /// The embedder whose vectors the store now holds.
    pub to: String,
    /// An interrupted re-embedding to the same embedder was resumed.
    pub resumed: bool,
    /// The store's vectors already came from this embedder: only chunks
    /// without a vector were embedded.
    pub already_current: bool,
    pub chunks_embedded: u64,
    pub chunks_total: u64,
    pub seconds: f64,
    pub notes: Vec<String>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("store", &self.store)
            .field("dense", &self.dense_enabled())
            .finish()
    }
}

/// The `meta` key holding when the last indexing run finished (Unix ms).
pub const LAST_INDEX_META: &str = "last_index_ms";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Longest query, in characters, that the engine answers: longer ones are a
/// [`EngineError::QueryTooLong`] (HTTP 422 from the server).
pub const MAX_QUERY_CHARS: usize = 4096;

/// Refuses empty queries and queries over [`MAX_QUERY_CHARS`] characters.
fn check_query(query: &str) -> Result<()> {
    if query.trim().is_empty() {
        return Err(EngineError::Invalid(
            "the query is empty: ask a question or give some keywords".into(),
        ));
    }
    // Bytes bound characters from above: count only when it can matter.
    if query.len() > MAX_QUERY_CHARS {
        let chars = query.chars().count();
        if chars > MAX_QUERY_CHARS {
            return Err(EngineError::QueryTooLong {
                chars,
                max: MAX_QUERY_CHARS,
            });
        }
    }
    Ok(())
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

impl Engine {
    /// Opens the store in `dir` (created when missing). With an embedder that
    /// differs from the one that built the store's vectors this fails; with
    /// none, retrieval is BM25-only and [`Engine::notes`] says so.
    pub fn open(dir: &Path, embedder: Option<Arc<dyn TextEmbedder>>) -> Result<Self> {
        let store = Store::open(dir)?;
        let mut notes = Vec::new();
        let stored = store.db.embedder()?;
        let embedder = match (&stored, embedder) {
            (Some(s), Some(e)) if !e.accepts(s) => {
                return Err(EngineError::EmbedderMismatch {
                    store: dir.to_path_buf(),
                    stored: format!("{} [{}]", s.description, s.fingerprint),
                    stored_dim: s.dim,
                    requested: format!("{} [{}]", e.info().description, e.info().fingerprint),
                    requested_dim: e.info().dim,
                })
            }
            (Some(s), None) => {
                notes.push(format!(
                    "the store has vectors from {} but no embedder is configured: BM25 only",
                    s.description
                ));
                None
            }
            (None, e) => {
                if store.db.chunk_count()? > 0 || e.is_none() {
                    notes.push(
                        "no embedder vectors in this store: BM25 only (index with --model for \
                         dense retrieval)"
                            .into(),
                    );
                }
                e
            }
            (Some(s), Some(e)) => {
                if s.fingerprint != e.info().fingerprint {
                    // The same model under an earlier identity: record the
                    // current one so later checks compare like with like.
                    store.set_embedder(e.info())?;
                }
                Some(e)
            }
        };
        let pending = store.pending()?;
        let reembedding = match (store.db.reembedding()?, &embedder) {
            (Some(r), Some(e)) if e.accepts(&r.to) => {
                let total = store.db.chunk_count()?;
                let done = total.saturating_sub(pending.unembedded_chunks);
                Some(if store.db.meta(anectx_store_pg::STORE_ID_KEY)?.is_some() {
                    format!(
                        "the shared store was re-embedded with {}: this cache is taking \
                             its vectors ({done} of {total} chunks done), BM25 only until its \
                             next catch-up finishes",
                        r.to.description
                    )
                } else {
                    reembedding_note(&r.to.description, done, total)
                })
            }
            _ => None,
        };
        let only_reembedding = reembedding.is_some()
            && Pending {
                unembedded_chunks: 0,
                ..pending.clone()
            }
            .is_empty();
        if !pending.is_empty() && !only_reembedding {
            notes.push(format!(
                "the store has unfinished indexing work ({pending:?}); run `anectx index` again \
                 to complete it"
            ));
        }
        Ok(Self::assemble(store, embedder, notes, reembedding))
    }

    /// Opens the store in `dir` to re-embed it with `embedder`
    /// ([`Engine::reembed`]), whichever embedder its vectors came from.
    /// Dense retrieval stays off until the re-embedding finishes.
    pub fn open_to_reembed(dir: &Path, embedder: Arc<dyn TextEmbedder>) -> Result<Self> {
        let store = Store::open(dir)?;
        let note = reembedding_note(&embedder.info().description, 0, store.db.chunk_count()?);
        Ok(Self::assemble(
            store,
            Some(embedder),
            Vec::new(),
            Some(note),
        ))
    }

    fn assemble(
        store: Store,
        embedder: Option<Arc<dyn TextEmbedder>>,
        notes: Vec<String>,
        reembedding: Option<String>,
    ) -> Self {
        Self {
            store,
            embedder,
            relevance: ArcSwap::from_pointee(Arc::new(FusionRelevance::default())),
            memory: ArcSwapOption::empty(),
            notes,
            reembedding: ArcSwapOption::from(reembedding.map(Arc::new)),
            calls: AtomicU64::new(0),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Notes about the engine's state (BM25-only, unfinished work).
    pub fn notes(&self) -> Vec<String> {
        let mut notes = self.notes.clone();
        if let Some(n) = self.reembedding.load_full() {
            notes.push(n.to_string());
        }
        notes
    }

    pub fn embedder(&self) -> Option<&Arc<dyn TextEmbedder>> {
        self.embedder.as_ref()
    }

    /// Whether dense retrieval is available (an embedder and stored vectors).
    /// Off while the store's vectors are being replaced ([`Engine::reembed`]):
    /// until every chunk has a new vector, dense retrieval would see only
    /// part of the store.
    pub fn dense_enabled(&self) -> bool {
        self.embedder.is_some()
            && self.reembedding.load().is_none()
            && self.store.db.embedder().ok().flatten().is_some()
    }

    /// The current relevance model.
    pub fn relevance_model(&self) -> Arc<dyn RelevanceModel> {
        Arc::clone(&self.relevance.load())
    }

    /// Swaps the relevance model atomically (lock-free for readers); calls
    /// in flight finish with the model they started with.
    pub fn set_relevance_model(&self, model: Arc<dyn RelevanceModel>) {
        self.relevance.store(Arc::new(model));
    }

    /// The usage memory in use, if any.
    pub fn memory(&self) -> Option<Arc<UsageMemory>> {
        self.memory.load_full()
    }

    /// Swaps the usage memory atomically (`None` turns it off); calls in
    /// flight finish with the memory they started with.
    pub fn set_memory(&self, memory: Option<Arc<UsageMemory>>) {
        self.memory.store(memory);
    }

    /// Builds a usage memory from the interactions of this engine's log that
    /// `keep` accepts (usage labels of `analyzer_version`, and feedback),
    /// with this engine's analyser and, when dense retrieval is on, its
    /// embedder. `None` when the log says nothing was used. Does not install
    /// it (see [`Engine::set_memory`], [`Engine::rebuild_memory`]).
    pub fn build_memory(
        &self,
        analyzer_version: &str,
        cfg: &MemoryConfig,
        keep: &dyn Fn(&anectx_store::LoggedInteraction) -> bool,
    ) -> Result<Option<UsageMemory>> {
        self.build_memory_until(analyzer_version, cfg, keep, i64::MAX)
    }

    /// [`Engine::build_memory`] over the interactions with row id ≤ `until`.
    pub fn build_memory_until(
        &self,
        analyzer_version: &str,
        cfg: &MemoryConfig,
        keep: &dyn Fn(&anectx_store::LoggedInteraction) -> bool,
        until: i64,
    ) -> Result<Option<UsageMemory>> {
        let analyze = |t: &str| self.store.lexical.analyze(t);
        let embed = |t: &[&str]| self.memory_embed(t);
        let embed_ref: Option<&crate::memory::EmbedFn<'_>> = self.dense_enabled().then_some(&embed);
        UsageMemory::build_until(
            &self.store.db,
            analyzer_version,
            cfg,
            &analyze,
            embed_ref,
            keep,
            until,
        )
    }

    /// `base` plus the interactions logged after its watermark, with this
    /// engine's analyser and embedder (see [`UsageMemory::extend`]).
    pub fn extend_memory(&self, base: &UsageMemory) -> Result<(UsageMemory, u64)> {
        let analyze = |t: &str| self.store.lexical.analyze(t);
        let embed = |t: &[&str]| self.memory_embed(t);
        let embed_ref: Option<&crate::memory::EmbedFn<'_>> = self.dense_enabled().then_some(&embed);
        base.extend(&self.store.db, &analyze, embed_ref)
    }

    fn memory_embed(&self, texts: &[&str]) -> Result<Vec<f32>> {
        match &self.embedder {
            Some(e) => e.embed(texts),
            None => Ok(Vec::new()),
        }
    }

    /// Which embedder a memory built by this engine takes its question
    /// vectors from: the store's embedder fingerprint and dimension when
    /// dense retrieval is on, else `none`. A memory file records it, and one
    /// built with another is refused ([`crate::MemoryFileError::Embedder`]).
    pub fn memory_embedder_id(&self) -> Result<String> {
        if !self.dense_enabled() {
            return Ok("none".into());
        }
        Ok(match self.store.db.embedder()? {
            Some(e) => format!("{}/{}", e.fingerprint, e.dim),
            None => "none".into(),
        })
    }

    /// Rebuilds the usage memory from the whole interaction log (usage
    /// labels of `analyzer_version` and all feedback) and installs it; an
    /// empty or unlabelled log turns the memory off. Returns its stats
    /// (`None` when off).
    pub fn rebuild_memory(&self, analyzer_version: &str) -> Result<Option<MemoryStats>> {
        let m = self.build_memory(analyzer_version, &MemoryConfig::default(), &|_| true)?;
        let stats = m.as_ref().map(|m| m.stats().clone());
        self.set_memory(m.map(Arc::new));
        Ok(stats)
    }

    /// The memory's rankings for one query (`None` without a memory).
    fn memory_hits(
        &self,
        qterms: &[String],
        qv: Option<&[f32]>,
        opts: &ContextOptions,
    ) -> Option<MemoryHits> {
        let mem = self.memory.load_full()?;
        // Computed even when not fused: its score is a candidate feature.
        let asked = mem.asked_as(qterms, opts.k_memory);
        let mut hits = MemoryHits {
            asked,
            ..MemoryHits::default()
        };
        if opts.memory_dup_weight > 0.0 {
            let nb = mem.near_duplicates(qterms, qv, opts.memory_dup_threshold);
            if let Some(top) = nb.first() {
                hits.dup_similarity = top.similarity;
                hits.evidence = mem.duplicate_evidence(&nb);
                hits.dup = hits
                    .evidence
                    .iter()
                    .filter(|(_, e)| e.used > 0.0)
                    .map(|(&c, e)| (c, e.used))
                    .collect();
                hits.dup
                    .sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                hits.unused = hits
                    .evidence
                    .iter()
                    .filter(|(_, e)| e.unused_shows > 0.0 && e.used <= 0.0)
                    .map(|(&c, e)| (c, e.unused_shows))
                    .collect();
            }
        }
        Some(hits)
    }

    /// RRF over the lexical, dense and memory rankings; chunks outside
    /// `allowed` (which only the memory's rankings can bring) are dropped.
    fn fuse(
        &self,
        lex: &[(u64, f32)],
        den: &[(u64, f32)],
        hits: Option<&MemoryHits>,
        opts: &ContextOptions,
        allowed: Option<&HashSet<u64>>,
    ) -> Vec<(u64, f32)> {
        let mut f = self.fuse_all(lex, den, hits, opts);
        if let Some(a) = allowed {
            f.retain(|(id, _)| a.contains(id));
        }
        f
    }

    fn fuse_all(
        &self,
        lex: &[(u64, f32)],
        den: &[(u64, f32)],
        hits: Option<&MemoryHits>,
        opts: &ContextOptions,
    ) -> Vec<(u64, f32)> {
        match hits {
            None => rrf(&[lex, den], opts.rrf_k),
            Some(h) => {
                let mut f = rrf_weighted(
                    &[
                        (lex, 1.0),
                        (den, 1.0),
                        (&h.asked, opts.memory_weight),
                        (&h.dup, opts.memory_dup_weight * h.dup_similarity),
                    ],
                    opts.rrf_k,
                );
                let w = opts.memory_unused_weight / (opts.rrf_k + 1.0);
                if w > 0.0 && !h.unused.is_empty() {
                    for (id, s) in f.iter_mut() {
                        if let Some(&n) = h.unused.get(id) {
                            *s -= w * n;
                        }
                    }
                    f.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                }
                f
            }
        }
    }

    /// Indexes paths into this engine's store with its embedder.
    pub fn index(
        &self,
        roots: &[std::path::PathBuf],
        opts: &IndexOptions,
        progress: &dyn Progress,
    ) -> Result<IndexReport> {
        let report = crate::ingest::index_paths(
            &self.store,
            self.embedder.as_deref(),
            roots,
            opts,
            progress,
        )?;
        self.indexed(report)
    }

    /// Stamps the end of an indexing run (for `anectx status`). An
    /// indexing run embeds every unembedded chunk, so it also finishes a
    /// re-embedding.
    fn indexed(&self, report: IndexReport) -> Result<IndexReport> {
        self.store
            .db
            .set_meta(LAST_INDEX_META, &now_ms().to_string())?;
        if self.store.db.reembedding()?.is_none() {
            self.reembedding.store(None);
        }
        Ok(report)
    }

    /// Replaces every vector in the store by one from this engine's
    /// embedder (another model, another dimension): the way to keep a store
    /// when the embedder changes, instead of indexing into a new one.
    ///
    /// Crash-safe and resumable: the store records the re-embedding and its
    /// target first ([`Store::begin_reembedding`]), then chunks are embedded
    /// in batches, each one durable before it counts as done; a run that
    /// stops anywhere is resumed by the next `reembed` (or indexing run)
    /// with the same embedder. Until it finishes, an engine opened on the
    /// store answers BM25-only with a note. A store whose vectors already
    /// come from this embedder only gets its missing vectors.
    pub fn reembed(&self, progress: &dyn Progress) -> Result<ReembedReport> {
        let t0 = Instant::now();
        let Some(e) = self.embedder.as_deref() else {
            return Err(EngineError::Invalid(
                "re-embedding needs an embedder: choose one with --model (`none` is BM25-only)"
                    .into(),
            ));
        };
        if self.store.db.meta(anectx_store_pg::STORE_ID_KEY)?.is_some() {
            return Err(EngineError::Invalid(format!(
                "the store in {} is this machine's cache of a shared store, whose vectors \
                 every replica shares: re-embed the shared store itself (`anectx reembed \
                 --store postgres://…`, once for the fleet); this cache then takes its new \
                 vectors",
                self.store.dir().display()
            )));
        }
        let _guard = self.store.write_guard()?;
        let marker = self.store.db.reembedding()?;
        let stored = self.store.db.embedder()?;
        let mut report = ReembedReport {
            to: e.info().description.clone(),
            ..ReembedReport::default()
        };
        match (&marker, &stored) {
            (Some(r), _) if e.accepts(&r.to) => {
                report.from = r.from.as_ref().map(|f| f.description.clone());
                report.resumed = true;
            }
            (None, Some(s)) if e.accepts(s) => {
                report.from = Some(s.description.clone());
                report.already_current = true;
            }
            _ => {
                let r = self.store.begin_reembedding(e.info())?;
                report.from = r.from.map(|f| f.description);
            }
        }
        if !report.already_current {
            self.reembedding.store(Some(Arc::new(reembedding_note(
                &report.to,
                0,
                self.store.db.chunk_count()?,
            ))));
        }
        let mut index = IndexReport::default();
        crate::ingest::finish_pending(
            &self.store,
            Some(e),
            &IndexOptions::default(),
            progress,
            &mut index,
        )?;
        progress.finish();
        self.store.finish_reembedding()?;
        self.reembedding.store(None);
        if !report.already_current && self.memory.load().is_some() {
            // Its question vectors are the old embedder's.
            self.set_memory(None);
            let msg = "the usage memory was switched off: its question vectors came from the \
                       old embedder (it is rebuilt from the log when next loaded)";
            progress.note(msg);
            report.notes.push(msg.into());
        }
        self.store
            .db
            .set_meta(LAST_INDEX_META, &now_ms().to_string())?;
        report.chunks_embedded = index.chunks_embedded;
        report.chunks_total = index.chunks_total;
        report.notes.extend(index.notes);
        report.seconds = t0.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Brings the store up to date with paths a file watcher reported as
    /// changed under the indexed `roots` (see [`crate::ingest::index_changes`]).
    pub fn index_changes(
        &self,
        roots: &[std::path::PathBuf],
        changed: &[std::path::PathBuf],
        opts: &IndexOptions,
        progress: &dyn Progress,
    ) -> Result<IndexReport> {
        let report = crate::ingest::index_changes(
            &self.store,
            self.embedder.as_deref(),
            roots,
            changed,
            opts,
            progress,
        )?;
        self.indexed(report)
    }

    /// Publishes what this engine's store holds under `roots` (the roots
    /// just indexed) to a shared store: changed documents with their chunks
    /// and vectors, one transaction each, and deletions of documents under
    /// `roots` that are gone here (see [`anectx_store_pg::PgStore::publish`]).
    pub fn publish_shared(
        &self,
        shared: &anectx_store_pg::PgStore,
        roots: &[std::path::PathBuf],
    ) -> Result<anectx_store_pg::PublishReport> {
        let scope: Vec<String> = roots
            .iter()
            .map(|r| {
                std::fs::canonicalize(r)
                    .unwrap_or_else(|_| r.clone())
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let report = shared.publish(&self.store, Some(&scope))?;
        self.publish_roots(shared)?;
        Ok(report)
    }

    /// Records this store's indexed roots in the shared store, so replicas
    /// show sources and match path filters as this store does.
    fn publish_roots(&self, shared: &anectx_store_pg::PgStore) -> Result<()> {
        let roots: Vec<String> = self
            .roots()?
            .iter()
            .map(|r| r.to_string_lossy().into_owned())
            .collect();
        Ok(shared.add_roots(&roots)?)
    }

    /// Publishes every document of this engine's store (deleting nothing in
    /// the shared store): for a store built without file roots.
    pub fn publish_shared_all(
        &self,
        shared: &anectx_store_pg::PgStore,
    ) -> Result<anectx_store_pg::PublishReport> {
        let report = shared.publish(&self.store, None)?;
        self.publish_roots(shared)?;
        Ok(report)
    }

    /// Brings this engine's store, as a replica's cache, up to a shared
    /// store: documents and vectors written there since the last sync,
    /// deletions, then postings (and vectors the shared store lacks, with
    /// this engine's embedder). The embedder must be the shared store's.
    pub fn sync_shared(
        &self,
        shared: &anectx_store_pg::PgStore,
        progress: &dyn Progress,
    ) -> Result<anectx_store_pg::SyncReport> {
        let _guard = self.store.write_guard()?;
        if let Some(s) = shared.embedder()? {
            match self.embedder.as_deref() {
                Some(e) if e.accepts(&s) => {}
                Some(e) => {
                    return Err(EngineError::FleetEmbedder {
                        store: shared.target().into(),
                        stored: format!("{} [{}] ({} dims)", s.description, s.fingerprint, s.dim),
                        requested: format!(
                            "{} [{}] ({} dims)",
                            e.info().description,
                            e.info().fingerprint,
                            e.info().dim
                        ),
                    })
                }
                None => {
                    return Err(EngineError::EmbedderRequired {
                        store: shared.target().into(),
                        stored: format!("{} [{}]", s.description, s.fingerprint),
                    })
                }
            }
        }
        // Another process on this machine (an `anectx context` beside an
        // `anectx serve`) may have synced this cache since: read its vectors
        // first, when they are this engine's embedder's.
        if self.stored_embedder()?.0 {
            self.store.refresh_vectors()?;
        }
        let mut shown = 0u64;
        let report = shared.sync_into(&self.store, &mut |done, total| {
            if shown == 0 && done > 0 {
                progress.stage("shared store", Some(total));
            }
            progress.inc(done.saturating_sub(shown));
            shown = shown.max(done);
        })?;
        // Roots arrive with the documents published from them.
        if report.changes > 0 {
            let roots: Vec<std::path::PathBuf> =
                shared.roots()?.into_iter().map(Into::into).collect();
            crate::ingest::record_roots(&self.store, &roots)?;
        }
        // A follower calls this every few seconds: with nothing new and no
        // pending work, there is nothing to commit or reload.
        if report.changes == 0 && self.store.pending()?.is_empty() {
            return Ok(report);
        }
        let mut index_report = IndexReport::default();
        crate::ingest::finish_pending(
            &self.store,
            self.embedder.as_deref(),
            &IndexOptions::default(),
            progress,
            &mut index_report,
        )?;
        self.store.lexical.reload()?;
        // A cache that took a re-embedded shared store's vectors
        // ([`crate::adopt_shared_embedder`]) answers densely again.
        if self.store.db.reembedding()?.is_none() {
            self.reembedding.store(None);
        }
        Ok(report)
    }

    /// Picks up what another process indexed into this engine's store
    /// since (an `anectx index` beside a running `anectx serve`, which calls
    /// this at every poll): the postings, and the vectors when the store's
    /// embedder is still this engine's (after another process re-embedded
    /// the store with another model, this engine keeps answering from the
    /// vectors it has, as its query vectors are the old model's). Skipped
    /// while a writer runs, here or elsewhere (see
    /// [`Store::refresh_from_disk`]).
    pub fn refresh_from_disk(&self) -> Result<Refreshed> {
        let (ours, stored) = self.stored_embedder()?;
        let vectors_read = self.store.refresh_from_disk(ours)?;
        let other_embedder = match (self.embedder.as_ref(), stored) {
            (Some(e), Some(s)) if !e.accepts(&s) => Some(s.description),
            _ => None,
        };
        Ok(Refreshed {
            vectors_read,
            other_embedder,
        })
    }

    /// The store's embedder, and whether the store's vectors come from this
    /// engine's embedder with no re-embedding under way.
    fn stored_embedder(&self) -> Result<(bool, Option<anectx_store::EmbedderInfo>)> {
        let stored = self.store.db.embedder()?;
        let ours = match (self.embedder.as_deref(), &stored) {
            (Some(e), Some(s)) => e.accepts(s) && self.store.db.reembedding()?.is_none(),
            _ => false,
        };
        Ok((ours, stored))
    }

    /// Embeds queries with the engine's embedder.
    pub fn embed_queries(&self, queries: &[&str]) -> Result<Option<Vec<f32>>> {
        match &self.embedder {
            Some(e) if self.dense_enabled() => Ok(Some(e.embed(queries)?)),
            _ => Ok(None),
        }
    }

    /// Ranked chunks for `query` in `mode`, up to `k`, as `(chunk id, score)`.
    /// `query_vec` is the query's embedding (computed when `None` and needed).
    pub fn rank(
        &self,
        query: &str,
        query_vec: Option<&[f32]>,
        mode: RetrievalMode,
        k: usize,
        opts: &ContextOptions,
    ) -> Result<Vec<(u64, f32)>> {
        let allowed = self.allowed_chunks(&opts.filter)?;
        let allowed = allowed.as_ref();
        match mode {
            RetrievalMode::Bm25 => {
                Ok(self.store.lexical.search_in(query, k, opts.bm25, allowed)?)
            }
            RetrievalMode::Dense => self.dense(query, query_vec, k, allowed),
            RetrievalMode::Hybrid => {
                let (lex, den, qv, _) = self.retrieve(query, query_vec, k, k, opts, allowed)?;
                let qterms = self.store.lexical.analyze(query);
                let hits = self.memory_hits(&qterms, qv.as_deref(), opts);
                let mut f = self.fuse(&lex, &den, hits.as_ref(), opts, allowed);
                f.truncate(k);
                Ok(f)
            }
            RetrievalMode::Full => {
                let (cands, rel, order) = self.score_candidates(query, query_vec, k, k, opts)?;
                Ok(order
                    .into_iter()
                    .map(|i| (cands[i].chunk.id, rel[i]))
                    .take(k)
                    .collect())
            }
        }
    }

    /// The chunks `filter` allows, or `None` when it allows every chunk.
    pub fn allowed_chunks(&self, filter: &Filter) -> Result<Option<HashSet<u64>>> {
        if filter.is_empty() {
            return Ok(None);
        }
        let compiled = filter.compile()?;
        let roots = self.roots()?;
        let docs = self.store.db.document_facts()?;
        let ids = compiled.allowed_documents(&docs, |p| crate::source::display_path(p, &roots));
        Ok(Some(self.store.db.chunk_ids_of(&ids)?))
    }

    /// The indexed roots, to show sources relative to them.
    fn roots(&self) -> Result<Vec<std::path::PathBuf>> {
        Ok(match self.store.db.meta(crate::source::ROOTS_KEY)? {
            Some(s) => serde_json::from_str::<Vec<String>>(&s)
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
            None => Vec::new(),
        })
    }

    /// Vector search, among `allowed` chunks when given.
    fn vector_search(
        &self,
        q: &[f32],
        k: usize,
        allowed: Option<&HashSet<u64>>,
    ) -> anectx_store::Result<Vec<(u64, f32)>> {
        let v = self.store.vectors();
        match allowed {
            Some(a) => v.search_in(q, k, a),
            None => v.search(q, k),
        }
    }

    fn dense(
        &self,
        query: &str,
        query_vec: Option<&[f32]>,
        k: usize,
        allowed: Option<&HashSet<u64>>,
    ) -> Result<Vec<(u64, f32)>> {
        if !self.dense_enabled() {
            return Ok(Vec::new());
        }
        let owned;
        let q = match query_vec {
            Some(q) => q,
            None => match self.embed_queries(&[query])? {
                Some(v) => {
                    owned = v;
                    &owned
                }
                None => return Ok(Vec::new()),
            },
        };
        Ok(self.vector_search(q, k, allowed)?)
    }

    #[allow(clippy::type_complexity)]
    fn retrieve(
        &self,
        query: &str,
        query_vec: Option<&[f32]>,
        k_lex: usize,
        k_dense: usize,
        opts: &ContextOptions,
        allowed: Option<&HashSet<u64>>,
    ) -> Result<(Vec<(u64, f32)>, Vec<(u64, f32)>, Option<Vec<f32>>, Timings)> {
        check_query(query)?;
        let mut t = Timings::default();
        let qv_owned = match query_vec {
            Some(q) => Some(q.to_vec()),
            None => {
                let t0 = Instant::now();
                let v = self.embed_queries(&[query])?;
                t.embed_ms = ms(t0);
                v
            }
        };
        let qv = qv_owned.as_deref();
        let t0 = Instant::now();
        let ((lex, lex_ms), (den, den_ms)) = rayon::join(
            || {
                let t = Instant::now();
                (
                    self.store
                        .lexical
                        .search_in(query, k_lex, opts.bm25, allowed),
                    ms(t),
                )
            },
            || {
                let t = Instant::now();
                let r = match qv {
                    Some(q) => self.vector_search(q, k_dense, allowed),
                    None => Ok(Vec::new()),
                };
                (r, ms(t))
            },
        );
        t.retrieve_ms = ms(t0);
        t.lexical_ms = lex_ms;
        t.dense_ms = den_ms;
        Ok((lex?, den?, qv_owned, t))
    }

    /// Candidates with features, their relevance, and the MMR order.
    fn score_candidates(
        &self,
        query: &str,
        query_vec: Option<&[f32]>,
        k_lex: usize,
        k_dense: usize,
        opts: &ContextOptions,
    ) -> Result<(Vec<Candidate>, Vec<f32>, Vec<usize>)> {
        let model = self.relevance_model();
        let (c, r, o, _) =
            self.score_candidates_timed(model.as_ref(), query, query_vec, k_lex, k_dense, opts)?;
        Ok((c, r, o))
    }

    #[allow(clippy::type_complexity)]
    fn score_candidates_timed(
        &self,
        model: &dyn RelevanceModel,
        query: &str,
        query_vec: Option<&[f32]>,
        k_lex: usize,
        k_dense: usize,
        opts: &ContextOptions,
    ) -> Result<(Vec<Candidate>, Vec<f32>, Vec<usize>, Timings)> {
        let allowed = self.allowed_chunks(&opts.filter)?;
        let allowed = allowed.as_ref();
        let (lex, den, qv, mut t) =
            self.retrieve(query, query_vec, k_lex, k_dense, opts, allowed)?;
        let t0 = Instant::now();
        let qtoks = self.store.lexical.analyze(query);
        let hits = self.memory_hits(&qtoks, qv.as_deref(), opts);
        let fused = self.fuse(&lex, &den, hits.as_ref(), opts, allowed);
        t.fusion_ms = ms(t0);
        let t_feat = Instant::now();
        let mem_at: HashMap<u64, (u32, f32)> = hits
            .iter()
            .flat_map(|h| h.asked.iter())
            .enumerate()
            .map(|(r, (id, s))| (*id, (r as u32 + 1, *s)))
            .collect();
        let lex_at: HashMap<u64, (u32, f32)> = lex
            .iter()
            .enumerate()
            .map(|(r, (id, s))| (*id, (r as u32 + 1, *s)))
            .collect();
        let den_at: HashMap<u64, (u32, f32)> = den
            .iter()
            .enumerate()
            .map(|(r, (id, s))| (*id, (r as u32 + 1, *s)))
            .collect();
        let ids: Vec<u64> = fused.iter().map(|f| f.0).collect();
        let records = self.store.db.chunks_by_ids(&ids)?;
        let rrf_of: HashMap<u64, f32> = fused.into_iter().collect();
        let terms = QueryTerms::new(&qtoks);
        // BM25-only MMR compares candidates by their terms; with vectors
        // they are not kept.
        let keep_terms = !self.dense_enabled();
        // Each candidate's coverage features, from one pass over its tokens
        // (and its terms, when BM25-only MMR needs them). Candidates are
        // analysed in parallel (order kept): this is the costliest part of
        // the stage, and retrieval has finished with the cores.
        let (cands, chunk_terms): (Vec<Candidate>, Vec<Vec<String>>) = records
            .into_par_iter()
            .map(|chunk| {
                let id = chunk.id;
                let mut features = Features {
                    rrf: rrf_of.get(&id).copied().unwrap_or(0.0),
                    bm25: lex_at.get(&id).map(|x| x.1),
                    bm25_rank: lex_at.get(&id).map(|x| x.0),
                    dense: den_at.get(&id).map(|x| x.1),
                    dense_rank: den_at.get(&id).map(|x| x.0),
                    tokens: chunk.tokens as u32,
                    coverage: 0.0,
                    bigram_coverage: 0.0,
                    title_coverage: 0.0,
                    adapted: None,
                    memory: mem_at.get(&id).map(|x| x.1),
                    memory_rank: mem_at.get(&id).map(|x| x.0),
                    dup_used: None,
                    dup_similarity: None,
                    dup_unused: None,
                };
                if let Some(e) = hits.as_ref().and_then(|h| h.evidence.get(&id)) {
                    features.dup_used = Some(e.used);
                    features.dup_similarity = Some(e.similarity);
                    features.dup_unused = Some(e.unused);
                }
                let mut toks = Vec::new();
                let mut seen = terms.seen();
                self.store.lexical.for_each_token(&chunk.text, |t| {
                    seen.token(t);
                    if keep_terms {
                        toks.push(t.to_string());
                    }
                });
                features.coverage = seen.coverage();
                features.bigram_coverage = seen.bigram_coverage();
                let title = match &chunk.heading {
                    Some(h) => h.as_str(),
                    None => chunk.text.lines().next().unwrap_or(""),
                };
                let mut seen = terms.seen();
                self.store.lexical.for_each_token(title, |t| seen.token(t));
                features.title_coverage = seen.coverage();
                (Candidate { chunk, features }, toks)
            })
            .unzip();
        t.features_ms = ms(t_feat);
        let t_score = Instant::now();
        let rel = model.score(query, &cands)?;
        t.score_ms = ms(t_score);
        if rel.len() != cands.len() {
            return Err(EngineError::Relevance {
                version: model.version(),
                message: format!(
                    "returned {} scores for {} candidates",
                    rel.len(),
                    cands.len()
                ),
            });
        }
        // MMR over the relevance *rank*, mapped to (0, 1] as 10 / (10 + rank):
        // the diversity trade-off then does not depend on how a model's
        // scores are spread (a learned model's logistic outputs and the fusion
        // scores have very different shapes), so swapping models cannot
        // silently change how much diversity costs.
        let t_mmr = Instant::now();
        let norm = rank_relevance(&rel);
        let vecs = self.store.vectors();
        let dense_vecs: Option<Vec<Vec<f32>>> = if self.dense_enabled() {
            cands.iter().map(|c| vecs.get(c.chunk.id)).collect()
        } else {
            None
        };
        let order = match dense_vecs {
            Some(v) => mmr(&norm, opts.mmr_lambda, opts.dedup_threshold, |i, j| {
                anectx_store::vectors::dot(&v[i], &v[j])
            }),
            None => {
                // Terms were kept only for a store without vectors; here a
                // candidate lacks its vector (an interrupted run), so take
                // them now.
                let taken: Vec<Vec<String>>;
                let chunk_terms = if keep_terms {
                    &chunk_terms
                } else {
                    taken = cands
                        .iter()
                        .map(|c| self.store.lexical.analyze(&c.chunk.text))
                        .collect();
                    &taken
                };
                let sets: Vec<HashSet<&str>> = chunk_terms
                    .iter()
                    .map(|t| t.iter().map(String::as_str).collect())
                    .collect();
                mmr(&norm, opts.mmr_lambda, opts.dedup_threshold, |i, j| {
                    let inter = sets[i].intersection(&sets[j]).count() as f32;
                    let union = (sets[i].len() + sets[j].len()) as f32 - inter;
                    if union > 0.0 {
                        inter / union
                    } else {
                        1.0
                    }
                })
            }
        };
        drop(vecs);
        t.mmr_ms = ms(t_mmr);
        t.rerank_ms = ms(t0);
        Ok((cands, rel, order, t))
    }

    /// Selects and packs context for `query` within `opts.budget` tokens.
    pub fn context(&self, query: &str, opts: &ContextOptions) -> Result<ContextResult> {
        let t0 = Instant::now();
        // One model for the whole call: a concurrent swap cannot split the
        // scoring and the recorded version.
        let model = self.relevance_model();
        let model_version = model.version();
        let (cands, rel, order, mut timings) = self.score_candidates_timed(
            model.as_ref(),
            query,
            None,
            opts.k_lexical,
            opts.k_dense,
            opts,
        )?;
        let t_pack = Instant::now();
        let mut by_rel: Vec<usize> = (0..cands.len()).collect();
        by_rel.sort_by(|&a, &b| rel[b].total_cmp(&rel[a]).then(a.cmp(&b)));
        let mut rel_rank = vec![0u32; cands.len()];
        for (r, &i) in by_rel.iter().enumerate() {
            rel_rank[i] = r as u32 + 1;
        }
        let eligible: Vec<usize> = order
            .into_iter()
            .filter(|&i| rel[i] >= opts.min_relevance)
            .collect();
        // Sources are shown relative to the indexed roots.
        let roots = self.roots()?;
        // Pages of the chunks that may be shown (PDF pages, PPTX slides).
        let eligible_ids: Vec<u64> = eligible.iter().map(|&i| cands[i].chunk.id).collect();
        let pages = self.store.db.chunk_pages(&eligible_ids)?;
        let cite = |c: &Candidate| {
            crate::source::citation(
                &crate::source::display_path(&c.chunk.path, &roots),
                c.chunk.line_start,
                c.chunk.line_end,
                pages.get(&c.chunk.id).copied(),
            )
        };
        let header = |c: &Candidate| format!("[00] {}", cite(c));
        let costs: Vec<usize> = eligible
            .iter()
            .map(|&i| {
                let c = &cands[i];
                token_cost(
                    c.chunk.tokens,
                    c.chunk.text.chars().count(),
                    header(c).len(),
                )
            })
            .collect();
        let mut taken = pack(&costs, opts.budget);
        let n_shown = taken.len();
        // Exploration: swap one packed chunk for a random runner-up among the
        // next `2n` eligible candidates (when it fits the budget) and shuffle.
        let explore = opts.explore.clamp(0.0, 1.0);
        let mut rng = anectx_core::rng::Rng::from_state(match opts.explore_seed {
            Some(s) => s ^ hash_str(query),
            None => {
                let n = self.calls.fetch_add(1, Ordering::Relaxed);
                hash_str(query)
                    ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    ^ std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos() as u64)
                        .unwrap_or(0)
            }
        });
        let runners: Vec<usize> = (0..eligible.len())
            .filter(|t| !taken.contains(t))
            .take(2 * n_shown.max(1))
            .collect();
        let explored = explore > 0.0 && n_shown > 0 && rng.unit() < explore as f64;
        if explored && !runners.is_empty() {
            let slot = rng.below(n_shown);
            let pick = runners[rng.below(runners.len())];
            let used_now: usize = taken.iter().map(|&t| costs[t]).sum();
            if used_now - costs[taken[slot]] + costs[pick] <= opts.budget {
                taken[slot] = pick;
            }
        }
        let used: usize = taken.iter().map(|&t| costs[t]).sum();
        // Marginal probabilities of being shown under this policy.
        let mut propensity = vec![0f32; cands.len()];
        for t in 0..n_shown {
            propensity[eligible[t]] = 1.0 - explore / n_shown as f32;
        }
        if !runners.is_empty() {
            for &t in &runners {
                propensity[eligible[t]] = explore / runners.len() as f32;
            }
        }
        let picked: Vec<(usize, u32)> =
            taken.iter().map(|&t| (eligible[t], t as u32 + 1)).collect();
        let ordered = if explored {
            let mut p = picked;
            for i in (1..p.len()).rev() {
                p.swap(i, rng.below(i + 1));
            }
            p
        } else {
            lost_in_the_middle(picked)
        };
        let mut text = String::new();
        let mut chunks = Vec::with_capacity(ordered.len());
        for (pos, (i, mmr_rank)) in ordered.into_iter().enumerate() {
            let c = &cands[i];
            let marker = pos as u32 + 1;
            let head = c
                .chunk
                .heading
                .as_deref()
                .map(|h| format!(" ({})", crate::source::one_line(h)))
                .unwrap_or_default();
            text.push_str(&format!(
                "[{marker}] {}{head}\n{}\n\n",
                cite(c),
                crate::source::neutralize_markers(&c.chunk.text)
            ));
            chunks.push(ContextChunk {
                marker,
                chunk_id: c.chunk.id,
                path: c.chunk.path.clone(),
                heading: c.chunk.heading.clone(),
                byte_start: c.chunk.byte_start,
                byte_end: c.chunk.byte_end,
                line_start: c.chunk.line_start,
                line_end: c.chunk.line_end,
                page: pages.get(&c.chunk.id).copied(),
                tokens: c.chunk.tokens,
                text: c.chunk.text.clone(),
                scores: ChunkScores {
                    relevance: rel[i],
                    relevance_rank: rel_rank[i],
                    mmr_rank,
                    features: c.features.clone(),
                },
                propensity: propensity[i],
            });
        }
        let shown_at: HashMap<u64, u32> = chunks.iter().map(|c| (c.chunk_id, c.marker)).collect();
        let pool = by_rel
            .iter()
            .map(|&i| PoolCandidate {
                chunk_id: cands[i].chunk.id,
                relevance: rel[i],
                relevance_rank: rel_rank[i],
                features: cands[i].features.clone(),
                shown: shown_at.get(&cands[i].chunk.id).copied(),
                propensity: propensity[i],
            })
            .collect();
        timings.pack_ms = ms(t_pack);
        timings.total_ms = ms(t0);
        Ok(ContextResult {
            query: query.to_string(),
            text: text.trim_end().to_string(),
            chunks,
            budget: opts.budget,
            used_tokens: used,
            candidates: cands.len(),
            mode: if self.dense_enabled() {
                RetrievalMode::Full
            } else {
                RetrievalMode::Bm25
            },
            relevance_model: model_version,
            embedder: self
                .embedder
                .as_ref()
                .filter(|_| self.dense_enabled())
                .map(|e| e.info().description.clone()),
            notes: self.notes(),
            timings,
            explored,
            pool,
        })
    }
}

/// The usage memory's rankings for one query.
#[derive(Debug, Default)]
struct MemoryHits {
    /// BM25 over the "asked as" field, best first.
    asked: Vec<(u64, f32)>,
    /// Chunks used by near-duplicate questions, by usage evidence.
    dup: Vec<(u64, f32)>,
    /// Chunks near duplicates were shown and never used → the
    /// similarity-weighted number of such showings.
    unused: HashMap<u64, f32>,
    /// Similarity of the closest near duplicate (0 when none).
    dup_similarity: f32,
    evidence: HashMap<u64, crate::memory::DupEvidence>,
}

/// A query's distinct analysed terms and adjacent pairs, for the
/// coverage features. Queries have a handful of terms, so lists searched
/// in order beat hashing every chunk token.
struct QueryTerms<'a> {
    terms: Vec<&'a str>,
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> QueryTerms<'a> {
    fn new(qtoks: &'a [String]) -> Self {
        let mut terms: Vec<&str> = Vec::new();
        for t in qtoks {
            if !terms.contains(&t.as_str()) {
                terms.push(t);
            }
        }
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for w in qtoks.windows(2) {
            let p = (w[0].as_str(), w[1].as_str());
            if !pairs.contains(&p) {
                pairs.push(p);
            }
        }
        Self { terms, pairs }
    }

    fn seen(&self) -> Seen<'_, 'a> {
        Seen {
            q: self,
            terms: vec![false; self.terms.len()],
            pairs: vec![false; self.pairs.len()],
            prev: String::new(),
            first: true,
        }
    }
}

/// Which query terms and pairs a token stream has shown.
struct Seen<'q, 'a> {
    q: &'q QueryTerms<'a>,
    terms: Vec<bool>,
    pairs: Vec<bool>,
    /// The previous token (reused buffer).
    prev: String,
    first: bool,
}

impl Seen<'_, '_> {
    fn token(&mut self, t: &str) {
        if let Some(i) = self.q.terms.iter().position(|q| *q == t) {
            self.terms[i] = true;
        }
        if !self.first {
            let prev = self.prev.as_str();
            if let Some(j) = self.q.pairs.iter().position(|(a, b)| *a == prev && *b == t) {
                self.pairs[j] = true;
            }
        }
        self.prev.clear();
        self.prev.push_str(t);
        self.first = false;
    }

    /// Share of the query's distinct terms seen.
    fn coverage(&self) -> f32 {
        share(&self.terms)
    }

    /// Share of the query's distinct adjacent pairs seen in order.
    fn bigram_coverage(&self) -> f32 {
        share(&self.pairs)
    }
}

fn share(seen: &[bool]) -> f32 {
    if seen.is_empty() {
        0.0
    } else {
        seen.iter().filter(|&&s| s).count() as f32 / seen.len() as f32
    }
}

fn hash_str(s: &str) -> u64 {
    let h = blake3::hash(s.as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

/// Why an engine whose store is being re-embedded answers BM25-only.
fn reembedding_note(to: &str, done: u64, total: u64) -> String {
    format!(
        "the store is being re-embedded with {to} ({done} of {total} chunks done): BM25 only \
         until it finishes (run the same anectx reembed command again, or anectx index; \
         anectx status shows the exact command for the built-in embedder)"
    )
}

#[cfg(test)]
mod coverage_tests {
    use super::*;

    /// The coverage features from one pass over the tokens equal their
    /// definition with sets: distinct query terms (and adjacent query
    /// pairs) found in the chunk, over how many distinct ones the query has.
    #[test]
    fn one_pass_coverage_matches_the_set_definition() {
        let toks = |s: &str| -> Vec<String> { s.split(' ').map(String::from).collect() };
        let reference = |q: &[String], c: &[String]| -> (f32, f32) {
            let qs: HashSet<&str> = q.iter().map(String::as_str).collect();
            let cs: HashSet<&str> = c.iter().map(String::as_str).collect();
            let qp: HashSet<(&str, &str)> = q
                .windows(2)
                .map(|w| (w[0].as_str(), w[1].as_str()))
                .collect();
            let cp: HashSet<(&str, &str)> = c
                .windows(2)
                .map(|w| (w[0].as_str(), w[1].as_str()))
                .collect();
            let share = |hit: usize, all: usize| {
                if all == 0 {
                    0.0
                } else {
                    hit as f32 / all as f32
                }
            };
            (
                share(qs.intersection(&cs).count(), qs.len()),
                share(qp.intersection(&cp).count(), qp.len()),
            )
        };
        let cases = [
            ("a b a c", "c a b x a"),
            ("a b a c", "a c"),
            ("a", "b a a"),
            ("x y", "z w"),
            ("a b", "b a b"),
            ("a a a", "a a"),
        ];
        for (q, c) in cases {
            let (q, c) = (toks(q), toks(c));
            let terms = QueryTerms::new(&q);
            let mut seen = terms.seen();
            for t in &c {
                seen.token(t);
            }
            let (cov, big) = reference(&q, &c);
            assert_eq!(
                (seen.coverage(), seen.bigram_coverage()),
                (cov, big),
                "{q:?} in {c:?}"
            );
        }
        let empty = QueryTerms::new(&[]);
        let seen = empty.seen();
        assert_eq!((seen.coverage(), seen.bigram_coverage()), (0.0, 0.0));
    }
}
