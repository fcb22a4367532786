//! Re-embedding a store in place: every vector is replaced by the new
//! embedder's (another dimension too), an interrupted run leaves a store
//! that answers BM25-only and is resumed, and the old embedder is refused
//! afterwards.

mod common;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use anectx_engine::{
    ContextOptions, Engine, EngineError, IndexOptions, NoProgress, RetrievalMode, TextEmbedder,
};
use anectx_store::VectorIndex;
use common::{small_corpus, write, Failing, HashEmbedder};

fn index_with(store: &std::path::Path, root: &std::path::Path, e: Arc<dyn TextEmbedder>) {
    let engine = Engine::open(store, Some(e)).unwrap();
    engine
        .index(&[root.to_path_buf()], &IndexOptions::default(), &NoProgress)
        .unwrap();
}

/// Every chunk's vector, by (path, position in its document).
fn vectors_by_chunk(engine: &Engine) -> HashMap<(String, u32), Vec<f32>> {
    let store = engine.store();
    let ids: Vec<u64> = store.db.embedded_chunk_ids().unwrap().into_iter().collect();
    let v = store.vectors();
    store
        .db
        .chunks_by_ids(&ids)
        .unwrap()
        .into_iter()
        .map(|c| ((c.path.clone(), c.ord), v.get(c.id).unwrap()))
        .collect()
}

/// A corpus of a few dozen chunks, so a re-embedding takes several batches.
fn corpus(root: &std::path::Path) {
    small_corpus(root);
    for i in 0..40 {
        write(
            root,
            &format!("notes/n{i}.txt"),
            &format!("note {i} about topic{i} with shared words and more words"),
        );
    }
}

#[test]
fn reembedding_replaces_every_vector_with_the_new_embedders() {
    let root = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let fresh = tempfile::tempdir().unwrap();
    corpus(root.path());
    let a: Arc<dyn TextEmbedder> = Arc::new(HashEmbedder::new(64, "a"));
    let b: Arc<dyn TextEmbedder> = Arc::new(HashEmbedder::new(32, "b"));
    index_with(store.path(), root.path(), a.clone());
    // What the new embedder gives the same chunks in a store of its own.
    index_with(fresh.path(), root.path(), b.clone());
    let want = vectors_by_chunk(&Engine::open(fresh.path(), Some(b.clone())).unwrap());

    // The old store refuses the new embedder, and says how to re-embed.
    let err = Engine::open(store.path(), Some(b.clone())).unwrap_err();
    assert!(matches!(err, EngineError::EmbedderMismatch { .. }), "{err}");
    assert!(err.to_string().contains("anectx reembed"), "{err}");

    let engine = Engine::open_to_reembed(store.path(), b.clone()).unwrap();
    assert!(!engine.dense_enabled(), "dense before the vectors exist");
    let report = engine.reembed(&NoProgress).unwrap();
    let chunks = engine.store().db.chunk_count().unwrap();
    assert_eq!(report.chunks_embedded, chunks, "{report:?}");
    assert_eq!(report.chunks_total, chunks);
    assert!(!report.resumed && !report.already_current, "{report:?}");
    assert_eq!(report.from.as_deref(), Some("hash embedder a"));
    assert!(engine.dense_enabled());
    assert!(
        engine.notes().is_empty(),
        "no note once done: {:?}",
        engine.notes()
    );
    drop(engine);

    let engine = Engine::open(store.path(), Some(b.clone())).unwrap();
    assert!(engine.notes().is_empty(), "{:?}", engine.notes());
    assert_eq!(
        engine.store().db.embedder().unwrap(),
        Some(b.info().clone())
    );
    assert_eq!(engine.store().vectors().dim(), 32);
    assert_eq!(
        engine.store().check_consistency().unwrap(),
        Vec::<String>::new()
    );
    let got = vectors_by_chunk(&engine);
    assert_eq!(got.len(), want.len());
    for (k, v) in &want {
        assert_eq!(got.get(k), Some(v), "chunk {k:?}");
    }
    let r = engine
        .context("topic7 note", &ContextOptions::default())
        .unwrap();
    assert_ne!(r.mode, RetrievalMode::Bm25);
    assert!(r.chunks.iter().any(|c| c.text.contains("topic7")));
    drop(engine);

    // Now the old embedder is the one refused; running again is a no-op.
    let err = Engine::open(store.path(), Some(a)).unwrap_err();
    assert!(matches!(err, EngineError::EmbedderMismatch { .. }), "{err}");
    let again = Engine::open_to_reembed(store.path(), b)
        .unwrap()
        .reembed(&NoProgress)
        .unwrap();
    assert!(again.already_current, "{again:?}");
    assert_eq!(again.chunks_embedded, 0);
}

fn interrupted(finish_by_indexing: bool) {
    let root = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    corpus(root.path());
    let a: Arc<dyn TextEmbedder> = Arc::new(HashEmbedder::new(64, "a"));
    let b: Arc<dyn TextEmbedder> = Arc::new(HashEmbedder::new(32, "b"));
    index_with(store.path(), root.path(), a.clone());
    let failing: Arc<dyn TextEmbedder> = Arc::new(Failing {
        inner: b.clone(),
        left: AtomicUsize::new(1),
    });
    let engine = Engine::open_to_reembed(store.path(), failing).unwrap();
    // Batches of 32 chunks: the first succeeds, the second fails.
    let err = engine.reembed(&NoProgress).unwrap_err();
    assert!(err.to_string().contains("went away"), "{err}");
    drop(engine);
    let total = {
        let s = anectx_engine::Store::open(store.path()).unwrap();
        let pending = s.pending().unwrap().unembedded_chunks;
        assert!(pending > 0, "nothing left to do after a failure");
        s.db.chunk_count().unwrap()
    };

    // Meanwhile: the new embedder answers BM25-only with a note, and the
    // old one is refused (the store is the new embedder's now).
    let engine = Engine::open(store.path(), Some(b.clone())).unwrap();
    assert!(!engine.dense_enabled());
    let notes = engine.notes().join("\n");
    assert!(
        notes.contains("being re-embedded") && notes.contains("anectx reembed"),
        "{notes}"
    );
    assert!(!notes.contains("unfinished indexing work"), "{notes}");
    let r = engine
        .context("topic7 note", &ContextOptions::default())
        .unwrap();
    assert_eq!(r.mode, RetrievalMode::Bm25);
    assert!(r.chunks.iter().any(|c| c.text.contains("topic7")));
    assert!(r.notes.iter().any(|n| n.contains("being re-embedded")));
    let err = Engine::open(store.path(), Some(a)).unwrap_err();
    assert!(matches!(err, EngineError::EmbedderMismatch { .. }), "{err}");

    if finish_by_indexing {
        // An indexing run embeds every unembedded chunk: it finishes too.
        let rep = engine
            .index(
                &[root.path().to_path_buf()],
                &IndexOptions::default(),
                &NoProgress,
            )
            .unwrap();
        assert!(
            rep.chunks_embedded > 0 && rep.chunks_embedded < total,
            "{rep:?}"
        );
        assert!(
            rep.notes
                .iter()
                .any(|n| n.contains("re-embedding finished")),
            "{:?}",
            rep.notes
        );
        assert!(engine.dense_enabled());
        assert!(engine.notes().is_empty(), "{:?}", engine.notes());
    } else {
        drop(engine);
        let engine = Engine::open_to_reembed(store.path(), b.clone()).unwrap();
        let rep = engine.reembed(&NoProgress).unwrap();
        assert!(rep.resumed, "{rep:?}");
        assert!(
            rep.chunks_embedded > 0 && rep.chunks_embedded < total,
            "{rep:?}"
        );
    }
    let engine = Engine::open(store.path(), Some(b)).unwrap();
    assert!(engine.dense_enabled());
    assert!(engine.notes().is_empty(), "{:?}", engine.notes());
    assert_eq!(
        engine.store().check_consistency().unwrap(),
        Vec::<String>::new()
    );
    assert!(engine.store().db.reembedding().unwrap().is_none());
    let r = engine
        .context("topic7 note", &ContextOptions::default())
        .unwrap();
    assert_ne!(r.mode, RetrievalMode::Bm25);
}

#[test]
fn an_interrupted_reembedding_answers_bm25_only_and_is_resumed() {
    interrupted(false);
}

#[test]
fn an_indexing_run_finishes_an_interrupted_reembedding() {
    interrupted(true);
}
