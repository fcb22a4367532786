//! Several processes writing one store: `anectx serve --watch` keeps the
//! store open for days while `anectx index` runs beside it. Two `Store`
//! values on one directory stand for the two processes (each has its own
//! memory and its own lock file handle, as two processes do).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use anectx_engine::{index_paths, EngineError, IndexOptions, NoProgress, Store, TextEmbedder};
use anectx_store::EmbedderInfo;
use common::{write, HashEmbedder};

fn one_chunk_batches() -> IndexOptions {
    IndexOptions {
        embed_batch: 1,
        ..IndexOptions::default()
    }
}

struct Setup {
    store_dir: tempfile::TempDir,
    /// keep.md and gone.md, indexed.
    watched: tempfile::TempDir,
    /// Four documents of one chunk each, not indexed yet.
    other: tempfile::TempDir,
}

fn setup() -> Setup {
    let store_dir = tempfile::tempdir().unwrap();
    let watched = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    write(
        watched.path(),
        "keep.md",
        "The keeper trimmed the lamp wick every evening.\n",
    );
    write(
        watched.path(),
        "gone.md",
        "Compost and seedlings for the vegetable garden.\n",
    );
    let s = Store::open(store_dir.path()).unwrap();
    index_paths(
        &s,
        Some(&HashEmbedder::new(32, "w")),
        &[watched.path().into()],
        &one_chunk_batches(),
        &NoProgress,
    )
    .unwrap();
    for i in 0..4 {
        write(
            other.path(),
            &format!("tide-{i}.md"),
            &format!("Spring tide number {i} follows the full moon over the harbour.\n"),
        );
    }
    Setup {
        store_dir,
        watched,
        other,
    }
}

/// The serving process opened the store before another process indexed new
/// documents; then its watcher saw a deletion. Removing a vector rewrites the
/// vector file: from what the serving process has in memory, before this fix,
/// so the other process's new vectors were dropped while SQLite still counted
/// their chunks as embedded ("chunk N has no vector").
#[test]
fn a_writer_that_opened_the_store_earlier_keeps_what_another_process_wrote_since() {
    let Setup {
        store_dir,
        watched,
        other,
    } = setup();
    let e = HashEmbedder::new(32, "w");
    // The long-running process.
    let serving = Store::open(store_dir.path()).unwrap();
    // Another process indexes other documents.
    {
        let cli = Store::open(store_dir.path()).unwrap();
        let r = index_paths(
            &cli,
            Some(&e),
            &[other.path().into()],
            &one_chunk_batches(),
            &NoProgress,
        )
        .unwrap();
        assert_eq!(r.chunks_embedded, 4);
    }
    // The serving process's watcher sees a deletion.
    std::fs::remove_file(watched.path().join("gone.md")).unwrap();
    index_paths(
        &serving,
        Some(&e),
        &[watched.path().into()],
        &one_chunk_batches(),
        &NoProgress,
    )
    .unwrap();
    drop(serving);

    let reopened = Store::open(store_dir.path()).unwrap();
    assert_eq!(reopened.db.chunk_count().unwrap(), 5);
    assert_eq!(reopened.check_consistency().unwrap(), Vec::<String>::new());
}

/// Embeds with `inner`; its second call waits until the test releases it (an
/// indexing run paused after its first batch was written).
struct Paused {
    inner: HashEmbedder,
    calls: AtomicUsize,
    reached: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl TextEmbedder for Paused {
    fn info(&self) -> &EmbedderInfo {
        self.inner.info()
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<f32>, EngineError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 1 {
            self.reached.lock().unwrap().send(()).unwrap();
            self.release.lock().unwrap().recv().unwrap();
        }
        self.inner.embed(texts)
    }
}

/// Two writers at once: one process is in the middle of embedding (its
/// postings are committed and tantivy's lock is released) when another one
/// starts an indexing run that removes a document. The second run waits for
/// the first to finish, then keeps every vector the first one wrote.
#[test]
fn a_second_writer_waits_for_the_first_and_loses_nothing() {
    let Setup {
        store_dir,
        watched,
        other,
    } = setup();
    let (reached_tx, reached) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let paused = Arc::new(Paused {
        inner: HashEmbedder::new(32, "w"),
        calls: AtomicUsize::new(0),
        reached: Mutex::new(reached_tx),
        release: Mutex::new(release_rx),
    });
    let first = {
        let dir = store_dir.path().to_path_buf();
        let root = other.path().to_path_buf();
        let paused = paused.clone();
        std::thread::spawn(move || {
            let s = Store::open(&dir).unwrap();
            index_paths(
                &s,
                Some(paused.as_ref()),
                &[root],
                &one_chunk_batches(),
                &NoProgress,
            )
        })
    };
    reached
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the first run reached its second batch");
    std::fs::remove_file(watched.path().join("gone.md")).unwrap();
    let (done_tx, done) = mpsc::channel();
    let second = {
        let dir = store_dir.path().to_path_buf();
        let root = watched.path().to_path_buf();
        std::thread::spawn(move || {
            let s = Store::open(&dir).unwrap();
            let e = HashEmbedder::new(32, "w");
            let r = index_paths(&s, Some(&e), &[root], &one_chunk_batches(), &NoProgress);
            done_tx.send(()).unwrap();
            r
        })
    };
    // Give the second run the time to finish if nothing holds it back (it
    // then rewrites the vector file while the first run is still writing).
    let finished_early = done.recv_timeout(std::time::Duration::from_secs(2)).is_ok();
    release.send(()).unwrap();
    first.join().unwrap().unwrap();
    second.join().unwrap().unwrap();
    assert!(
        !finished_early,
        "the second writer ran while the first one held the store"
    );
    let reopened = Store::open(store_dir.path()).unwrap();
    assert_eq!(reopened.db.chunk_count().unwrap(), 5);
    assert_eq!(reopened.check_consistency().unwrap(), Vec::<String>::new());
}

/// A server keeps running while another process re-embeds its store with
/// another model (another dimension here). Its query vectors are the old
/// model's, so it keeps its own vectors, says why once, and still answers
/// densely. Before the check, it read the new
/// model's vectors and every dense query failed on the dimension.
#[test]
fn a_server_keeps_its_vectors_when_another_process_re_embeds_the_store() {
    use anectx_engine::{ContextOptions, Engine, RetrievalMode};
    let store_dir = tempfile::tempdir().unwrap();
    let docs = tempfile::tempdir().unwrap();
    common::shore_corpus(docs.path());
    let a: Arc<dyn TextEmbedder> = Arc::new(HashEmbedder::new(32, "a"));
    let b: Arc<dyn TextEmbedder> = Arc::new(HashEmbedder::new(16, "b"));
    let serving = Engine::open(store_dir.path(), Some(a.clone())).unwrap();
    serving
        .index(&[docs.path().into()], &IndexOptions::default(), &NoProgress)
        .unwrap();
    let opts = ContextOptions::default();
    let top = |e: &Engine| {
        let hits = e
            .rank("lamp wick keeper", None, RetrievalMode::Dense, 3, &opts)
            .unwrap();
        e.store().db.chunks_by_ids(&[hits[0].0]).unwrap()[0]
            .text
            .clone()
    };
    assert!(top(&serving).contains("lamp wick"));

    {
        let other = Engine::open_to_reembed(store_dir.path(), b.clone()).unwrap();
        other.reembed(&NoProgress).unwrap();
    }
    let r = serving.refresh_from_disk().unwrap();
    assert!(!r.vectors_read, "{r:?}");
    assert_eq!(r.other_embedder.as_deref(), Some("hash embedder b"));
    assert!(top(&serving).contains("lamp wick"));
    // The re-embedded store serves the new model.
    let fresh = Engine::open(store_dir.path(), Some(b)).unwrap();
    assert!(fresh.dense_enabled());
    let hits = fresh
        .rank("lamp wick keeper", None, RetrievalMode::Dense, 3, &opts)
        .unwrap();
    assert_eq!(hits.len(), 3);
}
