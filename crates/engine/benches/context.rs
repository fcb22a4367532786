//! `context` latency on a generated 100k-chunk corpus, including the query
//! embedding, and indexing throughput without model embedding.
//!
//! Corpus vectors are synthetic (embedding 100k chunks with a real model is
//! infeasible on a laptop CPU); queries are embedded for real with a randomly
//! initialised seed-default `ConvEmbedder` and, when the fixture is present,
//! all-MiniLM-L6-v2. Both need the MiniLM fixture's tokenizer
//! (`scripts/fixtures.sh`). Size: `ANECTX_BENCH_CHUNKS` (default 100000).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anectx_engine::{
    index_texts, ChunkConfig, ContextOptions, Engine, EngineError, IndexOptions, ModelEmbedder,
    NoProgress, TextEmbedder,
};
use anectx_models::weights::Rng;
use anectx_models::{CandleBackend, ConvEmbedder, ConvEmbedderConfig, Embedder, TextTokenizer};
use anectx_store::EmbedderInfo;
use candle_core::DType;
use criterion::{criterion_group, criterion_main, Criterion};

const DIM: usize = 384;
const FINGERPRINT: &str = "bench-synthetic-384";

/// Random unit vectors for corpus chunks (seeded by the text).
struct SyntheticCorpus(EmbedderInfo);
impl TextEmbedder for SyntheticCorpus {
    fn info(&self) -> &EmbedderInfo {
        &self.0
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<f32>, EngineError> {
        let mut out = Vec::with_capacity(texts.len() * DIM);
        for t in texts {
            let h = blake3::hash(t.as_bytes());
            let mut rng = Rng::new(u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap()));
            let v: Vec<f32> = (0..DIM).map(|_| rng.normal()).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            out.extend(v.iter().map(|x| x / n));
        }
        Ok(out)
    }
}

/// A real query embedder presented under the corpus fingerprint.
struct QueryEmbedder(ModelEmbedder, EmbedderInfo);
impl TextEmbedder for QueryEmbedder {
    fn info(&self) -> &EmbedderInfo {
        &self.1
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<f32>, EngineError> {
        self.0.embed(texts)
    }
}

fn info() -> EmbedderInfo {
    EmbedderInfo {
        fingerprint: FINGERPRINT.into(),
        description: "synthetic".into(),
        dim: DIM,
    }
}

fn words(n: usize, rng: &mut Rng) -> Vec<String> {
    const SYL: [&str; 16] = [
        "ka", "to", "ri", "ne", "mu", "sa", "lo", "vi", "de", "po", "zu", "mi", "te", "ga", "ru",
        "ho",
    ];
    (0..n)
        .map(|_| {
            let k = 2 + rng.below(3);
            (0..k).map(|_| SYL[rng.below(16)]).collect::<String>()
        })
        .collect()
}

/// Zipf-like word choice: index ~ vocab^u.
fn zipf(rng: &mut Rng, n: usize) -> usize {
    ((n as f32).powf(rng.uniform()) as usize)
        .saturating_sub(1)
        .min(n - 1)
}

fn build_store(dir: &Path, chunks: usize) -> Vec<String> {
    let mut rng = Rng::new(7);
    let vocab = words(30_000, &mut rng);
    let docs: Vec<(String, String)> = (0..chunks)
        .map(|i| {
            let len = 80 + rng.below(80);
            let text = (0..len)
                .map(|_| vocab[zipf(&mut rng, vocab.len())].as_str())
                .collect::<Vec<_>>()
                .join(" ");
            (format!("doc{i:06}.txt"), text)
        })
        .collect();
    let store = anectx_store::Store::open(dir).unwrap();
    let opts = IndexOptions {
        chunk: ChunkConfig {
            max_tokens: 200,
            overlap: 0,
        },
        embed_batch: 256,
        ..IndexOptions::default()
    };
    let t = Instant::now();
    let r = index_texts(
        &store,
        Some(&SyntheticCorpus(info())),
        &docs,
        &opts,
        &NoProgress,
    )
    .unwrap();
    let s = t.elapsed().as_secs_f64();
    eprintln!(
        "indexed {} chunks in {s:.1}s: {:.0} chunks/s (SQLite + tantivy + synthetic vectors; \
         synthetic embedding took {:.1}s)",
        r.chunks_total,
        r.chunks_total as f64 / s,
        r.embed_seconds
    );
    (0..200)
        .map(|_| {
            let n = 3 + rng.below(6);
            (0..n)
                .map(|_| vocab[zipf(&mut rng, 3000)].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn percentiles(engine: &Engine, queries: &[String], label: &str) {
    let opts = ContextOptions::default();
    for q in queries.iter().take(20) {
        engine.context(q, &opts).unwrap();
    }
    let mut ms: Vec<f64> = Vec::new();
    let mut embed = Vec::new();
    let mut retrieve = Vec::new();
    let mut rerank = Vec::new();
    for _ in 0..3 {
        for q in queries {
            let t = Instant::now();
            let r = engine.context(q, &opts).unwrap();
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            embed.push(r.timings.embed_ms);
            retrieve.push(r.timings.retrieve_ms);
            rerank.push(r.timings.rerank_ms);
        }
    }
    ms.sort_by(f64::total_cmp);
    embed.sort_by(f64::total_cmp);
    retrieve.sort_by(f64::total_cmp);
    rerank.sort_by(f64::total_cmp);
    let p = |v: &[f64], q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "{label}: context latency over {} calls: p50 {:.2} ms, p99 {:.2} ms \
         (p50 of stages: query embedding {:.2} ms, BM25 + dense retrieval {:.2} ms, \
         fusion + relevance + MMR {:.2} ms)",
        ms.len(),
        p(&ms, 0.5),
        p(&ms, 0.99),
        p(&embed, 0.5),
        p(&retrieve, 0.5),
        p(&rerank, 0.5)
    );
}

fn bench(c: &mut Criterion) {
    let Some(minilm) = anectx_testing::minilm_dir() else {
        return;
    };
    let tok = TextTokenizer::from_file(&minilm.join("tokenizer.json"), 512).unwrap();
    let n: usize = std::env::var("ANECTX_BENCH_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let queries = build_store(dir.path(), n);

    let conv = ConvEmbedder::new_random(ConvEmbedderConfig::default(), 0, DType::F32).unwrap();
    let backend = CandleBackend::new(Some(Embedder::Conv(conv)), None);
    let conv_q = ModelEmbedder::new(Box::new(backend), tok, info());
    let engine = Engine::open(dir.path(), Some(Arc::new(QueryEmbedder(conv_q, info())))).unwrap();
    assert!(engine.dense_enabled());
    percentiles(
        &engine,
        &queries,
        "ConvEmbedder (seed default, random weights)",
    );
    let opts = ContextOptions::default();
    let mut i = 0;
    c.bench_function(&format!("context_{n}_chunks_conv_embedder"), |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            engine.context(&queries[i], &opts).unwrap()
        })
    });
    drop(engine);

    if let Ok(m) = ModelEmbedder::load(&minilm, anectx_models::WeightDtype::F32) {
        let engine = Engine::open(dir.path(), Some(Arc::new(QueryEmbedder(m, info())))).unwrap();
        percentiles(&engine, &queries, "all-MiniLM-L6-v2");
        c.bench_function(&format!("context_{n}_chunks_minilm"), |b| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                engine.context(&queries[i], &opts).unwrap()
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50);
    targets = bench
}
criterion_main!(benches);
