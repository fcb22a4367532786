//! Indexing, incremental re-indexing, context selection and model swaps on
//! small synthetic corpora.

mod common;

use std::sync::Arc;

use anectx_engine::{
    Candidate, ContextOptions, Engine, EngineError, IndexOptions, NoProgress, RelevanceModel,
    RetrievalMode,
};
use common::{small_corpus, write, Harness, HashEmbedder};

fn open(store: &std::path::Path, dense: bool) -> Engine {
    let e: Option<Arc<dyn anectx_engine::TextEmbedder>> = if dense {
        Some(Arc::new(HashEmbedder::new(64, "a")))
    } else {
        None
    };
    Engine::open(store, e).unwrap()
}

fn bm25_only_index_context_and_incremental_updates(h: &Harness) {
    let root = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    small_corpus(root.path());
    let engine = open(store.path(), false);
    let r = h.index_root(&engine, root.path());
    // .gitignore is itself a (text) file; hidden and ignored files are not walked.
    assert_eq!(r.files_indexed, 4, "{r:?}");
    assert!(
        r.notes.iter().any(|n| n.contains("BM25-only")),
        "{:?}",
        r.notes
    );
    assert!(engine.store().check_consistency().unwrap().is_empty());

    let res = engine
        .context(
            "which port does the server listen on",
            &ContextOptions::default(),
        )
        .unwrap();
    assert!(!res.chunks.is_empty());
    let top = res
        .chunks
        .iter()
        .find(|c| c.scores.relevance_rank == 1)
        .unwrap();
    assert!(top.path.ends_with("guide.md"), "{top:?}");
    assert_eq!(top.heading.as_deref(), Some("Server"));
    assert!(top.text.contains("8080"));
    assert!(res.text.starts_with("[1] "));
    assert_eq!(res.mode, RetrievalMode::Bm25);
    // HTML script content never reaches the index.
    assert!(engine
        .context("zebra", &ContextOptions::default())
        .unwrap()
        .chunks
        .is_empty());
    assert!(engine
        .context("pancakes", &ContextOptions::default())
        .unwrap()
        .chunks[0]
        .path
        .ends_with("cooking.html"));

    // Unchanged re-index does nothing; a change re-chunks one file; a deletion removes it.
    let r = h.index_root(&engine, root.path());
    assert_eq!(
        (r.files_indexed, r.files_unchanged, r.chunks_added),
        (0, 4, 0),
        "{r:?}"
    );
    write(
        root.path(),
        "notes/astronomy.txt",
        "Saturn has rings made of ice.\n",
    );
    std::fs::remove_file(root.path().join("src/lib.rs")).unwrap();
    let r = h.index_root(&engine, root.path());
    assert_eq!((r.files_indexed, r.files_removed), (1, 1), "{r:?}");
    assert!(engine
        .context("jupiter", &ContextOptions::default())
        .unwrap()
        .chunks
        .is_empty());
    assert!(engine
        .context("checksum adler", &ContextOptions::default())
        .unwrap()
        .chunks
        .is_empty());
    assert_eq!(
        engine
            .context("saturn rings", &ContextOptions::default())
            .unwrap()
            .chunks
            .len(),
        1
    );
    assert!(engine.store().check_consistency().unwrap().is_empty());
    assert_eq!(
        engine.store().lexical.num_docs().unwrap(),
        engine.store().db.chunk_count().unwrap()
    );
}

fn dense_hybrid_budget_and_ordering(h: &Harness) {
    let root = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    // Many small files about overlapping topics.
    for i in 0..40 {
        let topic = [
            "rust borrow checker",
            "python asyncio loop",
            "sqlite wal journal",
            "tantivy bm25 index",
        ][i % 4];
        write(
            root.path(),
            &format!("f{i:02}.txt"),
            &format!(
                "Note {i} about the {topic}. The {topic} matters for item {i}. {}",
                "filler words here ".repeat(i % 7)
            ),
        );
    }
    let engine = open(store.path(), true);
    let r = h.index_root(&engine, root.path());
    assert_eq!(r.chunks_embedded, 40);
    assert!(engine.dense_enabled());
    assert!(engine.store().check_consistency().unwrap().is_empty());

    let opts = ContextOptions {
        budget: 120,
        ..ContextOptions::default()
    };
    let res = engine.context("sqlite wal journal", &opts).unwrap();
    assert_eq!(res.mode, RetrievalMode::Full);
    assert!(res.used_tokens <= 120, "{}", res.used_tokens);
    assert!(res.chunks.len() >= 2);
    // Markers number the context in order.
    for (i, c) in res.chunks.iter().enumerate() {
        assert_eq!(c.marker as usize, i + 1);
        assert!(res.text.contains(&format!("[{}] ", c.marker)));
    }
    // Lost in the middle: the first MMR pick opens the context, the second closes it.
    assert_eq!(res.chunks.first().unwrap().scores.mmr_rank, 1);
    assert_eq!(res.chunks.last().unwrap().scores.mmr_rank, 2);
    let first = &res.chunks[0];
    assert!(first.text.contains("sqlite wal journal"), "{first:?}");
    assert!(first.scores.features.bm25.is_some() && first.scores.features.dense.is_some());

    // Each mode ranks; dense alone finds the topic too.
    let d = engine
        .rank("asyncio loop", None, RetrievalMode::Dense, 5, &opts)
        .unwrap();
    let recs = engine.store().db.chunks_by_ids(&[d[0].0]).unwrap();
    assert!(recs[0].text.contains("asyncio"));
    let h = engine
        .rank("asyncio loop", None, RetrievalMode::Hybrid, 5, &opts)
        .unwrap();
    assert_eq!(h.len(), 5);
}

/// A relevance model preferring long chunks, to check hot swapping.
struct LongestFirst;
impl RelevanceModel for LongestFirst {
    fn version(&self) -> String {
        "longest-first-v0".into()
    }
    fn score(&self, _q: &str, c: &[Candidate]) -> Result<Vec<f32>, EngineError> {
        Ok(c.iter().map(|x| x.features.tokens as f32).collect())
    }
}

fn relevance_model_hot_swap(h: &Harness) {
    let root = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    write(root.path(), "short.txt", "kiwi");
    write(
        root.path(),
        "long.txt",
        &format!("kiwi {}", "and many more words ".repeat(20)),
    );
    write(root.path(), "mid.txt", "kiwi kiwi kiwi fruit");
    let engine = Arc::new(open(store.path(), false));
    h.index_root(&engine, root.path());
    let opts = ContextOptions {
        mmr_lambda: 1.0,
        ..ContextOptions::default()
    };
    let before = engine.context("kiwi", &opts).unwrap();
    assert!(before.relevance_model.starts_with("fusion-v2"));
    let top = |r: &anectx_engine::ContextResult| {
        r.chunks
            .iter()
            .find(|c| c.scores.relevance_rank == 1)
            .unwrap()
            .path
            .clone()
    };
    assert!(!top(&before).ends_with("long.txt"));
    // Swap while another thread holds the engine.
    let e2 = Arc::clone(&engine);
    std::thread::spawn(move || e2.set_relevance_model(Arc::new(LongestFirst)))
        .join()
        .unwrap();
    let after = engine.context("kiwi", &opts).unwrap();
    assert_eq!(after.relevance_model, "longest-first-v0");
    assert!(top(&after).ends_with("long.txt"));
}

fn refuses_to_mix_embedders(h: &Harness) {
    let root = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    small_corpus(root.path());
    let engine = open(store.path(), true);
    h.index_root(&engine, root.path());
    drop(engine);
    let other: Arc<dyn anectx_engine::TextEmbedder> = Arc::new(HashEmbedder::new(64, "b"));
    let err = Engine::open(store.path(), Some(other.clone())).unwrap_err();
    assert!(matches!(err, EngineError::EmbedderMismatch { .. }), "{err}");
    assert!(err.to_string().contains("never mixes"), "{err}");
    // Indexing without the embedder is refused too; querying falls back to BM25 with a note.
    let plain = Engine::open(store.path(), None).unwrap();
    assert!(plain.notes().iter().any(|n| n.contains("BM25 only")));
    let err = h
        .index(
            &plain,
            &[root.path().to_path_buf()],
            &IndexOptions::default(),
            &NoProgress,
        )
        .unwrap_err();
    assert!(matches!(err, EngineError::EmbedderRequired { .. }), "{err}");
    let err = anectx_engine::index_paths(
        plain.store(),
        Some(other.as_ref()),
        &[root.path().to_path_buf()],
        &IndexOptions::default(),
        &NoProgress,
    )
    .unwrap_err();
    assert!(matches!(err, EngineError::EmbedderMismatch { .. }), "{err}");
    assert!(plain.store().check_consistency().unwrap().is_empty());
}

fn exploration_logs_propensities_and_pool(h: &Harness) {
    let root = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    for i in 0..12 {
        write(
            root.path(),
            &format!("f{i}.txt"),
            &format!("kiwi fruit note {i} {}", "filler words here ".repeat(i + 1)),
        );
    }
    let engine = open(store.path(), false);
    h.index_root(&engine, root.path());
    // Source lines name files relative to the root (`[1] f0.txt:1-1`), so
    // their cost no longer depends on the temporary directory's path; 100
    // tokens leave room to swap a shown chunk for a slightly longer one.
    let base = ContextOptions {
        budget: 100,
        ..ContextOptions::default()
    };
    // No exploration: shown chunks have propensity 1, the pool holds every
    // candidate in relevance order and marks the shown ones.
    let r = engine.context("kiwi fruit", &base).unwrap();
    assert!(!r.explored);
    assert!(
        !r.chunks.is_empty() && r.chunks.len() < 12,
        "{}",
        r.chunks.len()
    );
    assert!(r.chunks.iter().all(|c| (c.propensity - 1.0).abs() < 1e-6));
    assert_eq!(r.pool.len(), r.candidates);
    assert!(r.pool.windows(2).all(|w| w[0].relevance >= w[1].relevance));
    let shown: Vec<u32> = r.pool.iter().filter_map(|p| p.shown).collect();
    assert_eq!(shown.len(), r.chunks.len());
    assert!(
        r.pool.iter().all(|p| p.features.coverage > 0.99),
        "{:?}",
        r.pool[0].features
    );

    // Always exploring: some call shows a runner-up, whose propensity is
    // small, and the shown chunks' propensities fall below one.
    let explore = ContextOptions {
        explore: 1.0,
        ..base.clone()
    };
    let mut saw_runner_up = false;
    for seed in 0..20 {
        let r = engine
            .context(
                "kiwi fruit",
                &ContextOptions {
                    explore_seed: Some(seed),
                    ..explore.clone()
                },
            )
            .unwrap();
        assert!(r.explored);
        assert!(r
            .chunks
            .iter()
            .all(|c| c.propensity > 0.0 && c.propensity < 1.0));
        let n = r.chunks.len() as f32;
        if r.chunks.iter().any(|c| c.propensity < 1.0 - 1.0 / n - 1e-6) {
            saw_runner_up = true;
        }
        // The same seed gives the same draw.
        let again = engine
            .context(
                "kiwi fruit",
                &ContextOptions {
                    explore_seed: Some(seed),
                    ..explore.clone()
                },
            )
            .unwrap();
        let ids = |r: &anectx_engine::ContextResult| {
            r.chunks.iter().map(|c| c.chunk_id).collect::<Vec<_>>()
        };
        assert_eq!(ids(&r), ids(&again));
    }
    assert!(saw_runner_up);
}

on_both_stores!(
    bm25_only_index_context_and_incremental_updates,
    dense_hybrid_budget_and_ordering,
    relevance_model_hot_swap,
    refuses_to_mix_embedders,
    exploration_logs_propensities_and_pool,
);
