//! `anectx bench context`: the latency of a whole `context` call against
//! corpus size.
//!
//! For each size a corpus of generated documents (Zipf-distributed words, one
//! chunk each) is indexed with the given embedder, so the build time is the
//! real one (chunking, SQLite, tantivy and model embedding). Queries are
//! generated from the same vocabulary and embedded for real on every call,
//! as a user's question is. Every requested vector search (exact, the fast
//! path, automatic choice) is timed on the same store in the same run, so
//! the figures compare like with like; recall@10 of each against exact
//! search is measured on the same query vectors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anectx_engine::{
    index_texts, ChunkConfig, ContextOptions, Engine, IndexOptions, TextEmbedder, Timings,
};
use anectx_models::weights::Rng;
use anectx_store::{VectorIndex, VectorSearch};
use serde::{Deserialize, Serialize};

use crate::html::{esc, line_chart, Line};
use crate::report::SystemInfo;
use crate::stats::percentile;
use crate::{BenchError, Progress, Result};

/// Version of the context report format.
pub const CONTEXT_SCHEMA_VERSION: u32 = 1;

/// Stages reported for each call, in pipeline order.
pub const STAGES: [&str; 8] = [
    "embed", "bm25", "vector", "fusion", "features", "rerank", "mmr", "pack",
];

/// Settings of one `bench context` run.
#[derive(Debug, Clone)]
pub struct ContextBenchOptions {
    /// Corpus sizes in chunks, run in this order.
    pub sizes: Vec<usize>,
    /// Distinct generated queries.
    pub queries: usize,
    /// Timed passes over the queries (samples = queries × rounds).
    pub rounds: usize,
    /// Untimed calls before each timed series.
    pub warmup: usize,
    /// Vector searches timed on every size; the first is the one reported
    /// at the top level of each size (`sizes[].p50_ms` …).
    pub searches: Vec<VectorSearch>,
    /// Where the stores are built (a temporary directory when `None`).
    pub work_dir: Option<PathBuf>,
    /// Seed of the corpus and the queries.
    pub seed: u64,
    /// Corpus vectors are synthetic (each the normalised sum of the
    /// embedder's vectors of its words) instead of the embedder's own: builds
    /// far faster, so large sizes fit in a run. Timed queries are still embedded by the
    /// embedder; recall is measured with queries embedded the synthetic way,
    /// in the corpus's own space. Dense relevance is meaningless and
    /// `build_s` leaves out embedding.
    pub synthetic_vectors: bool,
    /// Questions logged (and labelled used) into a usage memory, which is
    /// then timed against no memory on every size (0: not timed). The
    /// timed queries are among them, so every timed call is a repeat.
    pub memory_questions: usize,
    /// A shared store (`postgres://…`, an empty database): each corpus is
    /// also published there, a replica's cache is rebuilt from it, and the
    /// replica is timed beside the local store (one size per run).
    pub shared: Option<String>,
}

/// Synthetic embeddings, cheap enough for a million chunks, under another
/// embedder's identity (so the store accepts that embedder for queries): a
/// text is the normalised sum of its words' vectors. With a base embedder
/// each word's vector is that embedder's embedding of the word (computed
/// once a word), so the corpus keeps the real model's geometry (its narrow
/// cone and which words are near which); without one (unit tests) each word
/// gets a fixed random direction. Uniformly random corpus vectors would
/// have no neighbourhoods at all, which no real corpus looks like.
struct SyntheticVectors {
    info: anectx_store::EmbedderInfo,
    base: Option<Arc<dyn TextEmbedder>>,
    words: std::sync::Mutex<std::collections::HashMap<String, Vec<f32>>>,
}

impl SyntheticVectors {
    fn new(info: anectx_store::EmbedderInfo, base: Option<Arc<dyn TextEmbedder>>) -> Self {
        Self {
            info,
            base,
            words: Default::default(),
        }
    }

    fn random_direction(&self, word: &str) -> Vec<f32> {
        // FNV-1a of the word seeds its direction.
        let seed = word.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        let mut rng = Rng::new(seed);
        (0..self.info.dim).map(|_| rng.normal()).collect()
    }

    /// Fills the word cache for every word of `texts`.
    fn learn_words(&self, texts: &[&str]) -> anectx_engine::Result<()> {
        let mut cache = self.words.lock().unwrap_or_else(|p| p.into_inner());
        let mut new: Vec<&str> = texts
            .iter()
            .flat_map(|t| t.split_whitespace())
            .filter(|w| !cache.contains_key(*w))
            .collect();
        new.sort_unstable();
        new.dedup();
        let d = self.info.dim;
        match &self.base {
            Some(base) if !new.is_empty() => {
                let v = base.embed(&new)?;
                for (w, row) in new.iter().zip(v.chunks_exact(d)) {
                    cache.insert(w.to_string(), row.to_vec());
                }
            }
            _ => {
                for w in new {
                    let v = self.random_direction(w);
                    cache.insert(w.to_string(), v);
                }
            }
        }
        Ok(())
    }
}

impl TextEmbedder for SyntheticVectors {
    fn info(&self) -> &anectx_store::EmbedderInfo {
        &self.info
    }

    fn embed(&self, texts: &[&str]) -> anectx_engine::Result<Vec<f32>> {
        self.learn_words(texts)?;
        let cache = self.words.lock().unwrap_or_else(|p| p.into_inner());
        let d = self.info.dim;
        let mut out = Vec::with_capacity(texts.len() * d);
        let mut v = vec![0f32; d];
        for t in texts {
            v.fill(0.0);
            for w in t.split_whitespace() {
                if let Some(x) = cache.get(w) {
                    v.iter_mut().zip(x).for_each(|(a, b)| *a += b);
                }
            }
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if n > 0.0 {
                out.extend(v.iter().map(|x| x / n));
            } else {
                // An empty text: any fixed unit vector.
                out.extend((0..d).map(|i| if i == 0 { 1.0 } else { 0.0 }));
            }
        }
        Ok(out)
    }
}

impl Default for ContextBenchOptions {
    fn default() -> Self {
        Self {
            sizes: vec![10_000, 100_000],
            queries: 200,
            rounds: 2,
            warmup: 20,
            searches: vec![VectorSearch::Auto, VectorSearch::Exact],
            work_dir: None,
            seed: 7,
            synthetic_vectors: false,
            memory_questions: 0,
            shared: None,
        }
    }
}

/// p50/p95/p99 of one series, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

impl Percentiles {
    fn of(samples: &[f64]) -> Self {
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        Self {
            p50_ms: percentile(&s, 0.50),
            p95_ms: percentile(&s, 0.95),
            p99_ms: percentile(&s, 0.99),
        }
    }
}

/// One vector search timed on one corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathReport {
    /// The search asked for (`auto`, `exact`, `int8`).
    pub search: String,
    /// What ran: `auto` resolved for this corpus size.
    pub resolved: String,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Per stage (see [`STAGES`]).
    pub stages: BTreeMap<String, Percentiles>,
    /// Share of exact search's top 10 that this search returns in its top
    /// 10, averaged over the queries (1 for exact search).
    pub recall_at_10: f64,
    /// Ratio of this path's p50 to the exact path's p50 in the same run.
    pub p50_vs_exact: Option<f64>,
}

/// One corpus size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SizeReport {
    /// Chunks actually indexed.
    pub chunks: usize,
    pub documents: usize,
    /// Index build: chunking, SQLite, tantivy, embedding and vector writes.
    pub build_s: f64,
    pub build_chunks_per_s: f64,
    /// The embedding part of `build_s`.
    pub embed_s: f64,
    /// Bytes of the store directory on disk.
    pub store_bytes: u64,
    /// Resident memory of the process after the timed calls (MiB; includes
    /// the model and anything earlier sizes left allocated).
    pub rss_mb: f64,
    /// Resident memory added by opening this store (MiB).
    pub rss_open_mb: f64,
    /// Bytes the in-memory vector index holds, and per chunk.
    pub vector_index_bytes: u64,
    pub vector_index_bytes_per_chunk: f64,
    /// Top-level figures: the first search of the run (`searches[0]`).
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub recall_at_10: f64,
    pub stages: BTreeMap<String, Percentiles>,
    /// Every search timed on this corpus.
    pub paths: Vec<PathReport>,
    /// The usage memory on against off (with `memory_questions` > 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryLatency>,
    /// The same corpus through a shared store (with `shared`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedReport>,
}

/// One corpus published to a shared store (PostgreSQL + pgvector) and
/// served by a replica whose cache was rebuilt from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedReport {
    /// Publishing the built local store: one transaction per document,
    /// chunks with their vectors.
    pub publish_s: f64,
    pub publish_chunks_per_s: f64,
    /// The part of `publish_s` spent building the HNSW index at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_build_s: Option<f64>,
    /// Rebuilding an empty replica's cache from the shared store (documents,
    /// vectors copied, postings built).
    pub sync_s: f64,
    pub sync_chunks_per_s: f64,
    /// Size of the shared database after publishing (bytes), and per chunk.
    pub database_bytes: u64,
    pub database_bytes_per_chunk: f64,
    /// `context` on the local store and on the replica, the two
    /// interleaved call by call with the first search of the run.
    pub local: Percentiles,
    pub replica: Percentiles,
    /// `replica.p99_ms / local.p99_ms`.
    pub p99_ratio: f64,
}

/// `context` with a usage memory against without one, on the same store,
/// search and queries, the two interleaved call by call (alternating which
/// goes first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryLatency {
    /// Distinct questions in the memory.
    pub questions: u64,
    /// (question, chunk) pairs in the memory.
    pub pairs: u64,
    pub off: Percentiles,
    pub on: Percentiles,
    /// `on.p99_ms / off.p99_ms` (the target is ≤ 1.2).
    pub p99_ratio: f64,
    pub p50_ratio: f64,
}

/// Analyzer version of the bench's synthetic usage labels.
const BENCH_LABELS: &str = "bench-labels-v1";

/// Logs `questions` (each answered from its top chunk, shown the top five),
/// builds a memory from them, and times `context` on `queries` with and
/// without it.
fn time_memory(
    engine: &Engine,
    queries: &[String],
    questions: &[String],
    opts: &ContextBenchOptions,
) -> Result<MemoryLatency> {
    use anectx_store::{LoggedCandidate, LoggedInteraction, UsageLabelRow};
    let copts = ContextOptions::default();
    let db = &engine.store().db;
    for (i, q) in questions.iter().enumerate() {
        let r = engine.context(q, &copts)?;
        let shown: Vec<u64> = r.chunks.iter().take(5).map(|c| c.chunk_id).collect();
        let id = db
            .append_interaction(&LoggedInteraction {
                uid: format!("bench-{i}"),
                ts_ms: i as i64,
                kind: "bench".into(),
                query: q.clone(),
                model_version: r.relevance_model.clone(),
                explored: false,
                response: None,
                complete: true,
                meta: Default::default(),
                candidates: shown
                    .iter()
                    .enumerate()
                    .map(|(k, &c)| LoggedCandidate {
                        chunk_id: c,
                        position: Some(k as u32 + 1),
                        score: 1.0,
                        propensity: 1.0,
                        features: serde_json::Value::Null,
                        text: None,
                    })
                    .collect(),
            })
            .map_err(|e| BenchError::Eval(e.into()))?;
        let rows: Vec<UsageLabelRow> = shown
            .iter()
            .enumerate()
            .map(|(k, &c)| UsageLabelRow {
                interaction_id: id,
                chunk_id: c,
                analyzer_version: BENCH_LABELS.into(),
                score: (k == 0) as u8 as f32,
                used: k == 0,
                evidence: serde_json::Value::Null,
            })
            .collect();
        db.put_labels(&rows)
            .map_err(|e| BenchError::Eval(e.into()))?;
    }
    let memory = engine
        .build_memory(
            BENCH_LABELS,
            &anectx_engine::MemoryConfig::default(),
            &|_| true,
        )?
        .map(Arc::new)
        .ok_or_else(|| BenchError::Config("the logged questions gave no usage memory".into()))?;
    let stats = memory.stats().clone();
    let set = |on: bool| engine.set_memory(on.then(|| Arc::clone(&memory)));
    for (i, q) in queries.iter().cycle().take(opts.warmup).enumerate() {
        set(i % 2 == 0);
        engine.context(q, &copts)?;
    }
    let (on, off) = interleaved(queries, opts.rounds, |with, q| {
        set(with);
        engine.context(q, &copts)?;
        Ok(())
    })?;
    engine.set_memory(None);
    let (off, on) = (Percentiles::of(&off), Percentiles::of(&on));
    Ok(MemoryLatency {
        questions: stats.questions,
        pairs: stats.pairs,
        p99_ratio: on.p99_ms / off.p99_ms.max(1e-9),
        p50_ratio: on.p50_ms / off.p50_ms.max(1e-9),
        off,
        on,
    })
}

/// Times `call(true, q)` against `call(false, q)` for every query, `rounds`
/// times, call by call, alternating which goes first; returns the
/// milliseconds of the `true` calls and of the `false` calls.
fn interleaved(
    queries: &[String],
    rounds: usize,
    mut call: impl FnMut(bool, &str) -> Result<()>,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut yes, mut no) = (Vec::new(), Vec::new());
    for round in 0..rounds.max(1) {
        for (i, q) in queries.iter().enumerate() {
            let first = (i + round) % 2 == 0;
            for which in [first, !first] {
                let t = Instant::now();
                call(which, q)?;
                let ms = t.elapsed().as_secs_f64() * 1e3;
                if which {
                    yes.push(ms);
                } else {
                    no.push(ms);
                }
            }
        }
    }
    Ok((yes, no))
}

/// A whole `bench context` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextReport {
    pub schema_version: u32,
    /// Always `"anectx-bench-context"`.
    pub tool: String,
    pub anectx_version: String,
    pub created_utc: String,
    pub duration_s: f64,
    pub embedder: String,
    /// Corpus vectors were synthetic (see `--synthetic-vectors`).
    pub synthetic_vectors: bool,
    pub queries: usize,
    pub samples_per_path: usize,
    pub searches: Vec<String>,
    pub system: SystemInfo,
    pub sizes: Vec<SizeReport>,
    pub notes: Vec<String>,
}

/// Resident set size of this process in bytes, when the OS tells.
pub fn rss_bytes() -> Option<u64> {
    if let Ok(s) = std::fs::read_to_string("/proc/self/status") {
        let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        return Some(kb * 1024);
    }
    let out = std::process::Command::new("ps")
        .args(["-o", "rss=", "-p", &std::process::id().to_string()])
        .output()
        .ok()?;
    let kb: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    Some(kb * 1024)
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn syllable_words(n: usize, rng: &mut Rng) -> Vec<String> {
    const SYL: [&str; 20] = [
        "ka", "to", "ri", "ne", "mu", "sa", "lo", "vi", "de", "po", "zu", "mi", "te", "ga", "ru",
        "ho", "bel", "an", "or", "is",
    ];
    (0..n)
        .map(|_| {
            let k = 2 + rng.below(3);
            (0..k).map(|_| SYL[rng.below(SYL.len())]).collect()
        })
        .collect()
}

/// Zipf-like index into a vocabulary of `n` words (rank ~ n^u).
fn zipf(rng: &mut Rng, n: usize) -> usize {
    ((n as f32).powf(rng.uniform()) as usize)
        .saturating_sub(1)
        .min(n - 1)
}

/// A deterministic generated corpus: `docs` documents of 40–100 words (one
/// chunk each at the bench's chunk size) and `queries` queries of 3–8 words.
pub fn generate(docs: usize, queries: usize, seed: u64) -> (Vec<(String, String)>, Vec<String>) {
    let mut rng = Rng::new(seed);
    let vocab = syllable_words(30_000, &mut rng);
    let sentence = |rng: &mut Rng, len: usize, top: usize| -> String {
        (0..len)
            .map(|_| vocab[zipf(rng, top)].as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let corpus = (0..docs)
        .map(|i| {
            let len = 40 + rng.below(61);
            (
                format!("doc{i:07}.txt"),
                sentence(&mut rng, len, vocab.len()),
            )
        })
        .collect();
    let qs = (0..queries)
        .map(|_| {
            let len = 3 + rng.below(6);
            sentence(&mut rng, len, 3000)
        })
        .collect();
    (corpus, qs)
}

/// Publishes `engine`'s store to the shared store at `url` (which must be
/// empty), rebuilds a replica's cache in `replica_dir` from it, and times
/// `context` on both, interleaved call by call.
fn time_shared(
    engine: &Engine,
    embedder: &Arc<dyn TextEmbedder>,
    url: &str,
    replica_dir: &Path,
    queries: &[String],
    opts: &ContextBenchOptions,
) -> Result<SharedReport> {
    let pg = anectx_store_pg::PgStore::connect(url)
        .map_err(|e| BenchError::Eval(anectx_engine::EngineError::from(e)))?;
    let pg_err = |e: anectx_store_pg::PgError| BenchError::Eval(e.into());
    if pg.counts().map_err(pg_err)?.0 > 0 {
        return Err(BenchError::Config(format!(
            "the shared store {} is not empty: give --shared an empty database",
            pg.target()
        )));
    }
    let chunks = engine
        .store()
        .db
        .chunk_count()
        .map_err(|e| BenchError::Eval(e.into()))? as f64;
    let t = Instant::now();
    let published = engine.publish_shared_all(&pg)?;
    let publish_s = t.elapsed().as_secs_f64();
    if replica_dir.exists() {
        std::fs::remove_dir_all(replica_dir).map_err(|e| BenchError::io(replica_dir, e))?;
    }
    let replica = Engine::open(replica_dir, Some(Arc::clone(embedder)))?;
    replica
        .store()
        .vectors_mut()
        .set_search(engine.store().vectors().search_mode());
    let t = Instant::now();
    replica.sync_shared(&pg, &anectx_engine::NoProgress)?;
    let sync_s = t.elapsed().as_secs_f64();
    let database_bytes = pg.database_bytes().map_err(pg_err)?;
    let copts = ContextOptions::default();
    for q in queries.iter().cycle().take(opts.warmup) {
        engine.context(q, &copts)?;
        replica.context(q, &copts)?;
    }
    let (rep, local) = interleaved(queries, opts.rounds, |on_replica, q| {
        let e = if on_replica { &replica } else { engine };
        e.context(q, &copts)?;
        Ok(())
    })?;
    let (local, replica_p) = (Percentiles::of(&local), Percentiles::of(&rep));
    Ok(SharedReport {
        publish_s,
        publish_chunks_per_s: chunks / publish_s.max(1e-9),
        index_build_s: published.index_built_s,
        sync_s,
        sync_chunks_per_s: chunks / sync_s.max(1e-9),
        database_bytes,
        database_bytes_per_chunk: database_bytes as f64 / chunks.max(1.0),
        p99_ratio: replica_p.p99_ms / local.p99_ms.max(1e-9),
        local,
        replica: replica_p,
    })
}

fn stage_ms(t: &Timings) -> [f64; 8] {
    [
        t.embed_ms,
        t.lexical_ms,
        t.dense_ms,
        t.fusion_ms,
        t.features_ms,
        t.score_ms,
        t.mmr_ms,
        t.pack_ms,
    ]
}

/// Times `context` over the queries with the store's current search.
fn time_path(
    engine: &Engine,
    queries: &[String],
    opts: &ContextBenchOptions,
) -> Result<(Percentiles, BTreeMap<String, Percentiles>)> {
    let copts = ContextOptions::default();
    for q in queries.iter().cycle().take(opts.warmup) {
        engine.context(q, &copts)?;
    }
    let mut total = Vec::new();
    let mut stages: Vec<Vec<f64>> = vec![Vec::new(); STAGES.len()];
    for _ in 0..opts.rounds.max(1) {
        for q in queries {
            let t = Instant::now();
            let r = engine.context(q, &copts)?;
            total.push(t.elapsed().as_secs_f64() * 1e3);
            for (s, v) in stages.iter_mut().zip(stage_ms(&r.timings)) {
                s.push(v);
            }
        }
    }
    let per_stage = STAGES
        .iter()
        .zip(&stages)
        .map(|(n, s)| (n.to_string(), Percentiles::of(s)))
        .collect();
    Ok((Percentiles::of(&total), per_stage))
}

/// Mean share of `truth`'s top 10 found in `got`'s top 10, per query.
pub fn recall_at_10(truth: &[Vec<u64>], got: &[Vec<u64>]) -> f64 {
    let mut sum = 0.0;
    let mut n = 0usize;
    for (t, g) in truth.iter().zip(got) {
        let t10: Vec<u64> = t.iter().take(10).copied().collect();
        if t10.is_empty() {
            continue;
        }
        let hit = t10
            .iter()
            .filter(|id| g.iter().take(10).any(|x| x == *id))
            .count();
        sum += hit as f64 / t10.len() as f64;
        n += 1;
    }
    if n == 0 {
        1.0
    } else {
        sum / n as f64
    }
}

fn search_ids(engine: &Engine, qvecs: &[f32], dim: usize) -> Result<Vec<Vec<u64>>> {
    let v = engine.store().vectors();
    qvecs
        .chunks_exact(dim)
        .map(|q| {
            Ok(v.search(q, 10)
                .map_err(|e| BenchError::Eval(e.into()))?
                .into_iter()
                .map(|h| h.0)
                .collect())
        })
        .collect()
}

/// Runs the benchmark with `embedder` (used for the corpus and the queries).
pub fn run_context(
    embedder: Arc<dyn TextEmbedder>,
    opts: &ContextBenchOptions,
    progress: &dyn Progress,
) -> Result<ContextReport> {
    if opts.sizes.is_empty() || opts.sizes.contains(&0) {
        return Err(BenchError::Config(
            "--chunks needs one or more sizes above 0".into(),
        ));
    }
    if opts.queries == 0 {
        return Err(BenchError::Config("--queries must be above 0".into()));
    }
    if opts.searches.is_empty() {
        return Err(BenchError::Config("no vector search to time".into()));
    }
    if opts.shared.is_some() && opts.sizes.len() != 1 {
        return Err(BenchError::Config(
            "--shared times one corpus size per run (its database must start empty)".into(),
        ));
    }
    let started = Instant::now();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let tmp;
    let root = match &opts.work_dir {
        Some(d) => d.clone(),
        None => {
            tmp = TempDir::new()?;
            tmp.0.clone()
        }
    };
    let steps = opts.sizes.len()
        * (1 + opts.searches.len()
            + usize::from(opts.memory_questions > 0)
            + usize::from(opts.shared.is_some()));
    let mut step = 0;
    let mut sizes = Vec::new();
    let mut notes = Vec::new();
    if opts.synthetic_vectors {
        notes.push(
            "corpus vectors are synthetic (--synthetic-vectors: each text the normalised \
             sum of the embedder's vectors of its words): build_s leaves out most model \
             embedding and dense relevance is approximate; timed queries are embedded for \
             real, recall is measured with queries embedded the synthetic way"
                .into(),
        );
    }
    let dim = embedder.info().dim;
    for &n in &opts.sizes {
        step += 1;
        progress.stage(step, steps, &format!("{n} chunks: generating and indexing"));
        let dir = root.join(format!("store-{n}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| BenchError::io(&dir, e))?;
        }
        let (docs, queries) = generate(n, opts.queries, opts.seed);
        let store = anectx_store::Store::open(&dir).map_err(|e| BenchError::Eval(e.into()))?;
        let iopts = IndexOptions {
            chunk: ChunkConfig {
                max_tokens: 512,
                overlap: 0,
            },
            embed_batch: 64,
            ..IndexOptions::default()
        };
        let t = Instant::now();
        let synthetic = SyntheticVectors::new(embedder.info().clone(), Some(Arc::clone(&embedder)));
        let corpus_embedder: &dyn TextEmbedder = if opts.synthetic_vectors {
            &synthetic
        } else {
            embedder.as_ref()
        };
        let rep = index_texts(
            &store,
            Some(corpus_embedder),
            &docs,
            &iopts,
            &anectx_engine::NoProgress,
        )?;
        let build_s = t.elapsed().as_secs_f64();
        drop(store);
        drop(docs);
        let store_bytes = dir_bytes(&dir);
        let rss0 = rss_bytes().unwrap_or(0);
        let engine = Engine::open(&dir, Some(Arc::clone(&embedder)))?;
        let rss_open = rss_bytes().unwrap_or(0).saturating_sub(rss0);
        let chunks = rep.chunks_total as usize;
        // Query vectors for recall, embedded once.
        let qrefs: Vec<&str> = queries.iter().map(String::as_str).collect();
        let qvecs = if opts.synthetic_vectors {
            synthetic.embed(&qrefs)?
        } else {
            embedder.embed(&qrefs)?
        };
        engine.store().vectors_mut().set_search(VectorSearch::Exact);
        let truth = search_ids(&engine, &qvecs, dim)?;
        let mut paths: Vec<PathReport> = Vec::new();
        for &search in &opts.searches {
            step += 1;
            progress.stage(
                step,
                steps,
                &format!("{n} chunks: timing {} search", search.as_str()),
            );
            engine.store().vectors_mut().set_search(search);
            let resolved = engine.store().vectors().resolved_search();
            let got = search_ids(&engine, &qvecs, dim)?;
            let (p, stages) = time_path(&engine, &queries, opts)?;
            paths.push(PathReport {
                search: search.as_str().into(),
                resolved: resolved.as_str().into(),
                p50_ms: p.p50_ms,
                p95_ms: p.p95_ms,
                p99_ms: p.p99_ms,
                stages,
                recall_at_10: recall_at_10(&truth, &got),
                p50_vs_exact: None,
            });
        }
        let exact_p50 = paths
            .iter()
            .find(|p| p.resolved == VectorSearch::Exact.as_str())
            .map(|p| p.p50_ms);
        for p in &mut paths {
            p.p50_vs_exact = exact_p50.filter(|e| *e > 0.0).map(|e| p.p50_ms / e);
        }
        engine.store().vectors_mut().set_search(opts.searches[0]);
        let memory = if opts.memory_questions > 0 {
            step += 1;
            progress.stage(
                step,
                steps,
                &format!(
                    "{n} chunks: timing the usage memory ({} logged questions)",
                    opts.memory_questions
                ),
            );
            // The timed queries and more from the same vocabulary.
            let extra = opts.memory_questions.saturating_sub(queries.len());
            let (_, more) = generate(0, extra, opts.seed);
            let logged: Vec<String> = queries
                .iter()
                .take(opts.memory_questions)
                .cloned()
                .chain(more)
                .collect();
            Some(time_memory(&engine, &queries, &logged, opts)?)
        } else {
            None
        };
        let shared = match &opts.shared {
            Some(url) => {
                step += 1;
                progress.stage(
                    step,
                    steps,
                    &format!("{n} chunks: publishing to the shared store, rebuilding a replica"),
                );
                Some(time_shared(
                    &engine,
                    &embedder,
                    url,
                    &root.join(format!("replica-{n}")),
                    &queries,
                    opts,
                )?)
            }
            None => None,
        };
        let index_bytes = engine.store().vectors().memory_bytes() as u64;
        let first = paths[0].clone();
        if rep.chunks_total as usize != n {
            notes.push(format!("{n} documents gave {} chunks", rep.chunks_total));
        }
        sizes.push(SizeReport {
            chunks,
            documents: rep.documents_total as usize,
            build_s,
            build_chunks_per_s: chunks as f64 / build_s.max(1e-9),
            embed_s: rep.embed_seconds,
            store_bytes,
            rss_mb: rss_bytes().unwrap_or(0) as f64 / (1 << 20) as f64,
            rss_open_mb: rss_open as f64 / (1 << 20) as f64,
            vector_index_bytes: index_bytes,
            vector_index_bytes_per_chunk: index_bytes as f64 / chunks.max(1) as f64,
            p50_ms: first.p50_ms,
            p95_ms: first.p95_ms,
            p99_ms: first.p99_ms,
            recall_at_10: first.recall_at_10,
            stages: first.stages,
            paths,
            memory,
            shared,
        });
        drop(engine);
        if opts.work_dir.is_none() {
            std::fs::remove_dir_all(&dir).map_err(|e| BenchError::io(&dir, e))?;
        }
    }
    Ok(ContextReport {
        schema_version: CONTEXT_SCHEMA_VERSION,
        tool: "anectx-bench-context".into(),
        anectx_version: env!("CARGO_PKG_VERSION").into(),
        created_utc: crate::run::utc_string(now),
        duration_s: started.elapsed().as_secs_f64(),
        embedder: embedder.info().description.clone(),
        synthetic_vectors: opts.synthetic_vectors,
        queries: opts.queries,
        samples_per_path: opts.queries * opts.rounds.max(1),
        searches: opts.searches.iter().map(|s| s.as_str().into()).collect(),
        system: crate::system::collect(),
        sizes,
        notes,
    })
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let base = std::env::temp_dir();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = base.join(format!(
            "anectx-bench-context-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).map_err(|e| BenchError::io(&p, e))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A plain-text table of the report.
pub fn render_context_text(r: &ContextReport) -> String {
    let mut s = format!(
        "anectx bench context ({:.1} s) · {} · {} samples per path\n",
        r.duration_s, r.embedder, r.samples_per_path
    );
    s.push_str(&format!(
        "{:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>9}\n",
        "chunks",
        "search",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "recall10",
        "build s",
        "RSS MB",
        "store MB"
    ));
    for z in &r.sizes {
        for p in &z.paths {
            s.push_str(&format!(
                "{:>9} {:>8} {:>8.2} {:>8.2} {:>8.2} {:>9.4} {:>8.1} {:>8.0} {:>9.1}\n",
                z.chunks,
                format!("{}→{}", p.search, p.resolved)
                    .chars()
                    .take(14)
                    .collect::<String>(),
                p.p50_ms,
                p.p95_ms,
                p.p99_ms,
                p.recall_at_10,
                z.build_s,
                z.rss_mb,
                z.store_bytes as f64 / 1e6
            ));
        }
        s.push_str("          stage p50 ms (first search): ");
        for name in STAGES {
            if let Some(p) = z.stages.get(name) {
                s.push_str(&format!("{name} {:.2} · ", p.p50_ms));
            }
        }
        s.push('\n');
        if let Some(m) = &z.memory {
            s.push_str(&format!(
                "          usage memory ({} questions, {} pairs): p50 {:.2} → {:.2} ms, p99 \
                 {:.2} → {:.2} ms (off → on), p99 ratio {:.3}\n",
                m.questions,
                m.pairs,
                m.off.p50_ms,
                m.on.p50_ms,
                m.off.p99_ms,
                m.on.p99_ms,
                m.p99_ratio
            ));
        }
        if let Some(x) = &z.shared {
            s.push_str(&format!(
                "          shared store: publish {:.1} s ({:.0} chunks/s; HNSW build {:.1} s), \
                 replica rebuild \
                 {:.1} s ({:.0} chunks/s), database {:.0} B/chunk; context p50 {:.2} / {:.2} ms, \
                 p99 {:.2} / {:.2} ms (local / replica), p99 ratio {:.3}\n",
                x.publish_s,
                x.publish_chunks_per_s,
                x.index_build_s.unwrap_or(0.0),
                x.sync_s,
                x.sync_chunks_per_s,
                x.database_bytes_per_chunk,
                x.local.p50_ms,
                x.replica.p50_ms,
                x.local.p99_ms,
                x.replica.p99_ms,
                x.p99_ratio
            ));
        }
    }
    for n in &r.notes {
        s.push_str(&format!("note: {n}\n"));
    }
    s
}

/// A self-contained HTML page: latency against corpus size, per search and
/// per stage, and the figures as a table.
pub fn render_context_html(r: &ContextReport) -> Result<String> {
    let mut h = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <title>anectx bench context</title>\n<style>body{font-family:system-ui,sans-serif;\
         margin:2em auto;max-width:1100px}table{border-collapse:collapse}th,td{border:1px \
         solid #ccc;padding:3px 8px;text-align:right;font-size:13px}</style></head><body>\n",
    );
    h.push_str(&format!(
        "<h1>anectx bench context</h1>\n<p>{} · {} · {} · {} logical cores · {} samples per \
         path</p>\n",
        esc(&r.created_utc),
        esc(&r.embedder),
        esc(r.system.cpu_model.as_deref().unwrap_or("unknown CPU")),
        r.system.logical_cores,
        r.samples_per_path
    ));
    let mut lines: Vec<Line> = Vec::new();
    for (i, search) in r.searches.iter().enumerate() {
        for (q, get) in [
            ("p50", (|p: &PathReport| p.p50_ms) as fn(&PathReport) -> f64),
            ("p99", |p: &PathReport| p.p99_ms),
        ] {
            lines.push((
                format!("{search} {q}"),
                r.sizes
                    .iter()
                    .filter_map(|z| z.paths.get(i).map(|p| (z.chunks as f64, get(p))))
                    .collect(),
            ));
        }
    }
    h.push_str(&line_chart(
        "context latency against corpus size",
        "chunks",
        "ms",
        &lines,
    )?);
    let stage_lines: Vec<Line> = STAGES
        .iter()
        .map(|name| {
            (
                format!("{name} p50"),
                r.sizes
                    .iter()
                    .filter_map(|z| z.stages.get(*name).map(|p| (z.chunks as f64, p.p50_ms)))
                    .collect(),
            )
        })
        .collect();
    h.push_str(&line_chart(
        &format!("stages (p50) with {} search", r.searches[0]),
        "chunks",
        "ms",
        &stage_lines,
    )?);
    h.push_str(
        "<table><tr><th>chunks</th><th>search</th><th>p50 ms</th><th>p95 ms</th><th>p99 \
         ms</th><th>recall@10</th><th>build s</th><th>chunks/s</th><th>RSS MB</th><th>index \
         B/chunk</th><th>store MB</th></tr>\n",
    );
    for z in &r.sizes {
        for p in &z.paths {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{} ({})</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td>\
                 <td>{:.4}</td><td>{:.1}</td><td>{:.0}</td><td>{:.0}</td><td>{:.0}</td>\
                 <td>{:.1}</td></tr>\n",
                z.chunks,
                esc(&p.search),
                esc(&p.resolved),
                p.p50_ms,
                p.p95_ms,
                p.p99_ms,
                p.recall_at_10,
                z.build_s,
                z.build_chunks_per_s,
                z.rss_mb,
                z.vector_index_bytes_per_chunk,
                z.store_bytes as f64 / 1e6
            ));
        }
    }
    h.push_str("</table>\n");
    for n in &r.notes {
        h.push_str(&format!("<p>{}</p>\n", esc(n)));
    }
    h.push_str("</body></html>\n");
    Ok(h)
}

/// Writes `context.json` and `context.html` into `dir`.
pub fn write_context_outputs(r: &ContextReport, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| BenchError::io(dir, e))?;
    let json = dir.join("context.json");
    let text = serde_json::to_string_pretty(r).map_err(|e| BenchError::Other(e.to_string()))?;
    std::fs::write(&json, text + "\n").map_err(|e| BenchError::io(&json, e))?;
    let html = dir.join("context.html");
    std::fs::write(&html, render_context_html(r)?).map_err(|e| BenchError::io(&html, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_run_publishes_rebuilds_a_replica_and_times_both() {
        let Some(pg) = anectx_testing::pg::PgServer::start() else {
            return;
        };
        let info = anectx_store::EmbedderInfo {
            fingerprint: "test-hash-16".into(),
            description: "hashing test embedder".into(),
            dim: 16,
        };
        let embedder: Arc<dyn TextEmbedder> = Arc::new(SyntheticVectors::new(info, None));
        let work = tempfile::tempdir().unwrap();
        let mut opts = ContextBenchOptions {
            sizes: vec![200],
            queries: 8,
            rounds: 1,
            warmup: 2,
            searches: vec![VectorSearch::Exact],
            work_dir: Some(work.path().to_path_buf()),
            seed: 1,
            synthetic_vectors: false,
            memory_questions: 0,
            shared: Some(pg.url("postgres")),
        };
        let r = run_context(Arc::clone(&embedder), &opts, &crate::NoProgress).unwrap();
        let x = r.sizes[0].shared.as_ref().expect("shared timed");
        assert!(x.publish_chunks_per_s > 0.0 && x.sync_chunks_per_s > 0.0);
        assert!(x.database_bytes > 0);
        assert!(x.local.p50_ms > 0.0 && x.replica.p50_ms > 0.0 && x.p99_ratio > 0.0);
        assert!(render_context_text(&r).contains("shared store: publish"));
        // The database is no longer empty: a second run is refused.
        let err = run_context(Arc::clone(&embedder), &opts, &crate::NoProgress).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        opts.sizes = vec![100, 200];
        assert!(run_context(embedder, &opts, &crate::NoProgress).is_err());
    }

    #[test]
    fn recall_counts_the_shared_top_ten() {
        let truth = vec![(0..10).collect::<Vec<u64>>(), (0..10).collect()];
        let got = vec![(0..10).collect::<Vec<u64>>(), (5..15).collect()];
        assert!((recall_at_10(&truth, &got) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn small_run_reports_every_size_search_and_stage() {
        let info = anectx_store::EmbedderInfo {
            fingerprint: "test-hash-16".into(),
            description: "hashing test embedder".into(),
            dim: 16,
        };
        let embedder: Arc<dyn TextEmbedder> = Arc::new(SyntheticVectors::new(info, None));
        let work = tempfile::tempdir().unwrap();
        let opts = ContextBenchOptions {
            sizes: vec![150, 300],
            queries: 12,
            rounds: 1,
            warmup: 2,
            searches: vec![VectorSearch::Int8, VectorSearch::Exact],
            work_dir: Some(work.path().to_path_buf()),
            seed: 1,
            synthetic_vectors: false,
            memory_questions: 30,
            shared: None,
        };
        let r = run_context(embedder, &opts, &crate::NoProgress).unwrap();
        assert_eq!(r.sizes.len(), 2);
        assert_eq!(r.samples_per_path, 12);
        for (z, n) in r.sizes.iter().zip([150, 300]) {
            assert_eq!(z.chunks, n);
            assert!(z.build_s > 0.0 && z.store_bytes > 0 && z.vector_index_bytes > 0);
            assert_eq!(z.paths.len(), 2);
            assert_eq!(z.paths[0].resolved, "int8");
            assert_eq!(z.paths[1].resolved, "exact");
            assert_eq!(z.paths[1].recall_at_10, 1.0);
            assert_eq!(z.paths[1].p50_vs_exact, Some(1.0));
            assert!(z.recall_at_10 > 0.0 && z.recall_at_10 <= 1.0);
            assert_eq!(z.p50_ms, z.paths[0].p50_ms);
            assert!(z.p50_ms > 0.0 && z.p50_ms <= z.p95_ms && z.p95_ms <= z.p99_ms);
            assert_eq!(z.stages.len(), STAGES.len());
            assert!(z.stages["vector"].p50_ms > 0.0);
            // The memory holds the logged questions and was timed on and off.
            let m = z.memory.as_ref().expect("memory timed");
            assert_eq!(m.questions, 30);
            assert!(m.pairs > 0);
            assert!(m.on.p99_ms > 0.0 && m.off.p99_ms > 0.0 && m.p99_ratio > 0.0);
        }
        assert!(render_context_text(&r).contains("p99 ratio"));
        let html = render_context_html(&r).unwrap();
        assert!(html.contains("<svg") && html.contains("latency against corpus size"));
        let json = serde_json::to_string(&r).unwrap();
        let back: ContextReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        // Bad settings are refused, not panicked on.
        let bad = ContextBenchOptions {
            sizes: vec![0],
            ..opts
        };
        let e = Arc::new(SyntheticVectors::new(
            anectx_store::EmbedderInfo {
                fingerprint: "x".into(),
                description: "x".into(),
                dim: 4,
            },
            None,
        ));
        assert!(matches!(
            run_context(e, &bad, &crate::NoProgress),
            Err(BenchError::Config(_))
        ));
    }

    #[test]
    fn generated_corpus_is_deterministic() {
        let a = generate(50, 5, 3);
        let b = generate(50, 5, 3);
        assert_eq!(a, b);
        assert_eq!(a.0.len(), 50);
        assert!(a.1.iter().all(|q| (3..=8).contains(&q.split(' ').count())));
        assert_ne!(generate(50, 5, 4).0, a.0);
    }
}
