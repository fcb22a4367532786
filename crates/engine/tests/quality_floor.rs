//! Quality floors of the shipped embedder on the shipped sample
//! (`samples/quickstart`, 600 Cranfield abstracts, indexed as `anectx eval`
//! indexes a collection): dense nDCG@10 ≥ 0.38 and hybrid ≥ BM25 + 0.01.
//! The README's table reads dense 0.429, hybrid 0.494, BM25 0.463; random
//! weights score far below the dense floor and drag hybrid under BM25.

mod common;

use std::sync::Arc;

use anectx_engine::eval::{evaluate_mode, Collection};
use anectx_engine::{
    ChunkConfig, ContextOptions, Engine, IndexOptions, ModelEmbedder, RetrievalMode,
};
use anectx_models::WeightDtype;
use common::Harness;

fn shipped_embedder_meets_the_quality_floors_on_the_sample(h: &Harness) {
    let sample = anectx_testing::workspace_root().join("samples/quickstart");
    let coll = Collection::load(&sample).unwrap();
    assert_eq!(coll.docs.len(), 600);
    let embedder = Arc::new(ModelEmbedder::embedded_default(WeightDtype::F32).unwrap());
    let store = tempfile::tempdir().unwrap();
    let engine = Engine::open(store.path(), Some(embedder.clone())).unwrap();
    // As `anectx eval` indexes a collection (512-token chunks, overlap 64).
    let opts = IndexOptions {
        chunk: ChunkConfig {
            max_tokens: 512,
            overlap: 64,
        },
        ..IndexOptions::default()
    };
    h.index_texts(&engine, &coll.docs, &opts).unwrap();
    let texts: Vec<&str> = coll.queries.iter().map(|q| q.1.as_str()).collect();
    // In batches of 32, as `anectx eval` embeds them.
    let qvecs: Vec<f32> = texts
        .chunks(32)
        .flat_map(|b| engine.embed_queries(b).unwrap().unwrap())
        .collect();
    let copts = ContextOptions::default();
    let ndcg = |mode| {
        evaluate_mode(&engine, &coll, mode, Some(&qvecs), &copts)
            .unwrap()
            .ndcg_10
    };
    let (bm25, dense, hybrid) = (
        ndcg(RetrievalMode::Bm25),
        ndcg(RetrievalMode::Dense),
        ndcg(RetrievalMode::Hybrid),
    );
    eprintln!(
        "nDCG@10 on samples/quickstart: bm25 {bm25:.4}, dense {dense:.4}, hybrid {hybrid:.4}"
    );
    assert!(dense >= 0.38, "dense nDCG@10 {dense:.4} < 0.38");
    assert!(
        hybrid >= bm25 + 0.01,
        "hybrid nDCG@10 {hybrid:.4} < BM25 {bm25:.4} + 0.01: the embedder adds nothing"
    );
}

on_both_stores!(shipped_embedder_meets_the_quality_floors_on_the_sample,);
