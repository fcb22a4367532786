//! Re-embedding a shared store once for the fleet (PostgreSQL + pgvector,
//! started per test from the pgserver PyPI package): a run that stops is
//! resumed and also embeds what replicas published meanwhile; the fleet
//! keeps serving and publishing with the old embedder until the swap; then
//! a replica on the old embedder is refused at its sync (and keeps serving
//! its cache), and one restarted with the new embedder takes the new
//! vectors from the shared store, the same a local index run gives.

mod common;

use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use anectx_engine::{
    adopt_shared_embedder, reembed_shared, ContextOptions, Engine, EngineError, IndexOptions,
    NoProgress, RetrievalMode, TextEmbedder,
};
use anectx_store::VectorIndex;
use anectx_store_pg::PgStore;
use anectx_testing::pg::PgServer;
use common::{vectors_by_text, write, Failing, HashEmbedder};

fn corpus(root: &Path) {
    common::shore_corpus(root);
    for i in 0..6 {
        write(
            root,
            &format!("notes/n{i}.md"),
            &format!("# Note {i}\n\nnote {i} on topic{i} and its shared words\n"),
        );
    }
}

fn mode(e: &Engine, q: &str) -> RetrievalMode {
    e.context(q, &ContextOptions::default()).unwrap().mode
}

#[test]
fn a_shared_store_is_re_embedded_once_for_the_fleet() {
    let Some(pg) = PgServer::start() else { return };
    let root = tempfile::tempdir().unwrap();
    corpus(root.path());
    let roots = [root.path().to_path_buf()];
    let (dir_a, dir_b, dir_c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let old: Arc<dyn TextEmbedder> = Arc::new(HashEmbedder::new(48, "old"));
    let shared = PgStore::connect(&pg.conninfo("postgres")).unwrap();
    let a = Engine::open(dir_a.path(), Some(old.clone())).unwrap();
    a.index(&roots, &IndexOptions::default(), &NoProgress)
        .unwrap();
    a.publish_shared(&shared, &roots).unwrap();
    let b = Engine::open(dir_b.path(), Some(old.clone())).unwrap();
    b.sync_shared(&shared, &NoProgress).unwrap();
    assert_ne!(mode(&b, "lighthouse keeper"), RetrievalMode::Bm25);

    // A run that stops after one batch of two.
    let failing = Failing {
        inner: Arc::new(HashEmbedder::new(24, "new")),
        left: AtomicUsize::new(1),
    };
    let err = reembed_shared(&shared, &failing, 2, &NoProgress).unwrap_err();
    assert!(err.to_string().contains("went away"), "{err}");
    let (done, total) = shared.reembedding_progress().unwrap();
    assert_eq!(done, 2, "{done} of {total}");
    assert!(total > 2);
    assert_eq!(shared.embedder().unwrap(), Some(old.info().clone()));

    // A vector computed from a chunk's text is not staged once a replica
    // has rewritten that chunk: the rewritten one is embedded again.
    let new = Arc::new(HashEmbedder::new(24, "new"));
    let read = shared.chunks_to_reembed(100).unwrap();
    assert_eq!(read.len() as u64, total - 2);
    assert!(read.iter().any(|c| c.text.contains("neap tides")));
    write(
        root.path(),
        "tides.md",
        "# Tides\n\nA tide table lists high and low water for each day.\n",
    );
    a.index(&roots, &IndexOptions::default(), &NoProgress)
        .unwrap();
    a.publish_shared(&shared, &roots).unwrap();
    let texts: Vec<&str> = read.iter().map(|c| c.text.as_str()).collect();
    let flat = new.embed(&texts).unwrap();
    let vectors: Vec<Vec<f32>> = flat.chunks_exact(24).map(<[f32]>::to_vec).collect();
    let staged = shared.stage_vectors(&read, &vectors).unwrap();
    assert_eq!(staged, total - 3, "the rewritten chunk was staged");
    let s = b.sync_shared(&shared, &NoProgress).unwrap();
    assert_eq!(s.documents_written, 1, "{s:?}");

    // Meanwhile the fleet works as before: A publishes, B takes it.
    write(
        root.path(),
        "harbour.md",
        "# Harbour\n\nThe harbour master logs every boat that moors overnight.\n",
    );
    a.index(&roots, &IndexOptions::default(), &NoProgress)
        .unwrap();
    a.publish_shared(&shared, &roots).unwrap();
    let s = b.sync_shared(&shared, &NoProgress).unwrap();
    assert_eq!(s.documents_written, 1, "{s:?}");
    assert_ne!(mode(&b, "harbour master"), RetrievalMode::Bm25);

    // The same command resumes: it embeds the rewritten chunk and the new
    // document's, and swaps the vectors in.
    let rep = reembed_shared(&shared, new.as_ref(), 2, &NoProgress).unwrap();
    assert!(rep.resumed, "{rep:?}");
    let chunks = shared.counts().unwrap().1;
    assert_eq!(rep.chunks_embedded, 2, "{rep:?}");
    let sw = rep.switched.clone().unwrap();
    assert_eq!((sw.documents, sw.chunks), (10, chunks), "{sw:?}");
    assert_eq!(shared.embedder().unwrap(), Some(new.info().clone()));
    assert_eq!(shared.reembedding().unwrap(), None);
    assert!(shared.has_vector_index().unwrap());
    let again = reembed_shared(&shared, new.as_ref(), 2, &NoProgress).unwrap();
    assert!(
        again.already_current && again.chunks_embedded == 0,
        "{again:?}"
    );

    // A replica still on the old embedder: refused at its sync, it keeps
    // serving its cache; it cannot publish either.
    let err = b.sync_shared(&shared, &NoProgress).unwrap_err();
    assert!(matches!(err, EngineError::FleetEmbedder { .. }), "{err}");
    assert_ne!(mode(&b, "harbour master"), RetrievalMode::Bm25);
    assert!(a.publish_shared(&shared, &roots).is_err());
    drop(b);

    // Restarted with the new embedder, it takes the new vectors.
    let new_dyn: Arc<dyn TextEmbedder> = new.clone();
    assert!(adopt_shared_embedder(dir_b.path(), new_dyn.as_ref(), &shared).unwrap());
    let b = Engine::open(dir_b.path(), Some(new_dyn.clone())).unwrap();
    assert!(!b.dense_enabled());
    assert!(
        b.notes()
            .iter()
            .any(|n| n.contains("this cache is taking its vectors")),
        "{:?}",
        b.notes()
    );
    assert_eq!(mode(&b, "harbour master"), RetrievalMode::Bm25);
    let s = b.sync_shared(&shared, &NoProgress).unwrap();
    let local = b.store().db.chunk_count().unwrap();
    assert_eq!(s.vectors_copied, local, "{s:?}");
    assert!(b.dense_enabled());
    assert!(b.notes().is_empty(), "{:?}", b.notes());
    assert_eq!(b.store().check_consistency().unwrap(), Vec::<String>::new());
    assert_eq!(b.store().vectors().dim(), 24);
    assert_ne!(mode(&b, "harbour master"), RetrievalMode::Bm25);
    // Adopting again is a no-op.
    assert!(!adopt_shared_embedder(dir_b.path(), new_dyn.as_ref(), &shared).unwrap());
    // A cache is not re-embedded on its own: its vectors are the fleet's.
    let other: Arc<dyn TextEmbedder> = Arc::new(HashEmbedder::new(16, "other"));
    let err = Engine::open_to_reembed(dir_b.path(), other)
        .unwrap()
        .reembed(&NoProgress)
        .unwrap_err();
    assert!(err.to_string().contains("cache of a shared store"), "{err}");
    assert_eq!(b.store().db.embedder().unwrap(), Some(new.info().clone()));

    // The vectors are what a local index run with the new embedder gives.
    let c = Engine::open(dir_c.path(), Some(new_dyn)).unwrap();
    c.index(&roots, &IndexOptions::default(), &NoProgress)
        .unwrap();
    assert_eq!(vectors_by_text(&b), vectors_by_text(&c));
}
