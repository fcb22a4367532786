use std::path::PathBuf;

use anectx_engine::eval::{evaluate_mode, Collection, ModeReport};
use anectx_engine::{
    index_texts, Bm25Params, ChunkConfig, ContextOptions, Engine, IndexOptions, RetrievalMode,
};
use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use super::index::{Bars, StoreArgs};

/// Evaluate retrieval on a BEIR-layout collection (corpus.jsonl, queries.jsonl, qrels.tsv).
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Collection directory.
    collection: PathBuf,
    /// Modes to run (repeatable): bm25, dense, hybrid, full. Default: all
    /// that the store supports.
    #[arg(long = "mode")]
    modes: Vec<String>,
    #[command(flatten)]
    store: StoreArgs,
    /// Chunk size in tokens for the collection's documents.
    #[arg(long, default_value_t = 512)]
    chunk_tokens: usize,
    /// BM25 k1.
    #[arg(long, default_value_t = 0.9)]
    k1: f32,
    /// BM25 b.
    #[arg(long, default_value_t = 0.4)]
    b: f32,
    /// Reciprocal-rank-fusion constant.
    #[arg(long, default_value_t = 60.0)]
    rrf_k: f32,
    /// Print JSON with per-query metrics.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Output {
    collection: String,
    /// The vector search that ran (auto resolved).
    vector_search: String,
    documents: usize,
    queries: usize,
    embedder: Option<String>,
    modes: Vec<ModeReport>,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let coll = Collection::load(&args.collection)?;
    // Without --store the index lives in a temporary directory.
    let tmp;
    let dir = match &args.store.store {
        Some(d) => d.clone(),
        None => {
            tmp = tempdir()?;
            tmp.0.clone()
        }
    };
    let embedder = args.store.embedder_for(args.store.store.as_deref())?;
    let engine = Engine::open(&dir, embedder.clone())
        .with_context(|| format!("opening the store in {}", dir.display()))?;
    let opts = IndexOptions {
        chunk: ChunkConfig {
            max_tokens: args.chunk_tokens,
            overlap: 64.min(args.chunk_tokens / 4),
        },
        ..IndexOptions::default()
    };
    let report = index_texts(
        engine.store(),
        embedder.as_deref(),
        &coll.docs,
        &opts,
        &Bars::new(),
    )?;
    eprintln!(
        "indexed {} documents ({} new, {} chunks) in {:.1}s",
        report.documents_total, report.files_indexed, report.chunks_total, report.seconds
    );
    let modes: Vec<RetrievalMode> = if args.modes.is_empty() {
        if engine.dense_enabled() {
            RetrievalMode::ALL.to_vec()
        } else {
            vec![RetrievalMode::Bm25, RetrievalMode::Full]
        }
    } else {
        args.modes
            .iter()
            .map(|m| {
                RetrievalMode::parse(m)
                    .with_context(|| format!("unknown mode {m:?}: use bm25, dense, hybrid or full"))
            })
            .collect::<Result<_>>()?
    };
    let needs_dense = modes.iter().any(|m| *m != RetrievalMode::Bm25);
    if needs_dense && !engine.dense_enabled() {
        eprintln!("note: no embedder configured: dense is empty and hybrid/full equal BM25");
    }
    let texts: Vec<&str> = coll.queries.iter().map(|q| q.1.as_str()).collect();
    let qvecs = if needs_dense && engine.dense_enabled() {
        let mut all = Vec::new();
        for b in texts.chunks(32) {
            all.extend(engine.embed_queries(b)?.unwrap_or_default());
        }
        Some(all)
    } else {
        None
    };
    let copts = ContextOptions {
        bm25: Bm25Params {
            k1: args.k1,
            b: args.b,
        },
        rrf_k: args.rrf_k,
        ..ContextOptions::default()
    };
    let search = crate::settings::Layers::get()?
        .vector_search(args.store.vector_search.clone())?
        .value;
    engine.store().vectors_mut().set_search(search);
    let mut out = Output {
        collection: args.collection.display().to_string(),
        vector_search: engine.store().vectors().resolved_search().as_str().into(),
        documents: coll.docs.len(),
        queries: coll.queries.len(),
        embedder: embedder.map(|e| e.info().description.clone()),
        modes: Vec::new(),
    };
    for m in modes {
        out.modes
            .push(evaluate_mode(&engine, &coll, m, qvecs.as_deref(), &copts)?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{} — {} documents, {} judged queries, {} vector search",
            out.collection, out.documents, out.queries, out.vector_search
        );
        println!(
            "{:<8} {:>8} {:>10} {:>8} {:>8}",
            "mode", "nDCG@10", "Recall@100", "MRR@10", "MAP"
        );
        for r in &out.modes {
            println!(
                "{:<8} {:>8.4} {:>10.4} {:>8.4} {:>8.4}",
                r.mode, r.ndcg_10, r.recall_100, r.mrr_10, r.map
            );
        }
    }
    Ok(())
}

/// A temporary directory removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn tempdir() -> Result<TempDir> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let p = std::env::temp_dir().join(format!("anectx-eval-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
    Ok(TempDir(p))
}
