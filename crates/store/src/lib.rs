//! anectx storage: everything the context engine persists, in one directory.
//!
//! - [`db`]: SQLite (WAL) — documents, chunks and the work queues that keep the
//!   other two stores consistent. The schema is versioned (`PRAGMA user_version`)
//!   and grows by appending migrations; this is the only crate that talks to SQLite.
//! - [`lexical`]: a tantivy index holding the chunk postings; BM25 is computed
//!   here from tantivy's postings, document frequencies and field norms so that
//!   `k1` and `b` are configurable (tantivy's own scorer fixes them).
//! - [`log`]: the interaction log (interactions with their candidate pools,
//!   usage labels per analyzer version, user feedback) for the learning loop.
//! - [`vectors`]: chunk embeddings, f16 on disk, searched exactly behind the
//!   [`vectors::VectorIndex`] trait so an ANN index can replace it.
//!
//! SQLite is the source of truth. Every chunk row carries `lexed` and
//! `embedded` flags; deleted chunks are queued in `pending_deletes` by a
//! trigger. A crash at any point leaves work in those queues, which
//! [`Store::pending`] reports and the next indexing run finishes.

pub mod db;
mod error;
pub mod hnsw;
pub mod lexical;
pub mod log;
pub mod private;
pub mod vectors;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

pub use db::{
    Applied, ChunkRecord, ChunkRef, Db, DocumentFacts, DocumentRecord, EmbedderInfo, NewChunk,
    Pending, Reembedding, SharedChange, SharedDocument, StoredDocument,
};
pub use error::StoreError;

/// Aborts the process when `ANECTX_FAILPOINT` names `name`: the crash tests
/// of the store, the engine's indexing and the shared store's publishing
/// stop a real process at a named point this way.
pub fn failpoint(name: &str) {
    if std::env::var("ANECTX_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("ANECTX_FAILPOINT={name}: aborting");
        std::process::abort();
    }
}
pub use lexical::{Bm25Params, LexicalIndex};
pub use log::{
    Durability, Feedback, InteractionKind, InteractionMeta, LogStats, LoggedCandidate,
    LoggedInteraction, PruneReport, Retention, UsageLabelRow, FOREIGN_CHUNK_BASE,
};
pub use vectors::{FlatVectors, VectorIndex, VectorSearch};

/// Result alias for this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

const DB_FILE: &str = "anectx.sqlite";
const LEXICAL_DIR: &str = "lexical";
const VECTORS_FILE: &str = "vectors.f16";
/// Locked (`flock`) by the process writing the store, for the whole run.
const LOCK_FILE: &str = "anectx.lock";
/// Everything the store keeps in its directory.
const OWN_FILES: [&str; 9] = [
    DB_FILE,
    LOCK_FILE,
    "anectx.sqlite-wal",
    "anectx.sqlite-shm",
    LEXICAL_DIR,
    VECTORS_FILE,
    "vectors.f16.tmp",
    "vectors.hnsw",
    "vectors.hnsw.tmp",
];

/// A store directory: SQLite metadata, tantivy postings and vectors.
pub struct Store {
    dir: PathBuf,
    pub db: Db,
    pub lexical: LexicalIndex,
    vectors: RwLock<FlatVectors>,
    /// Serialises writers inside this process.
    write_lock: Mutex<()>,
    /// Serialises writing processes: [`Store::write_guard`] holds an
    /// exclusive lock on it (tantivy's own lock covers only the postings,
    /// and an indexing run releases it before it embeds).
    lock_file: std::fs::File,
}

/// The store's writer lock, in this process and across processes (see
/// [`Store::write_guard`]); released when dropped.
pub struct WriteGuard<'a> {
    _in_process: std::sync::MutexGuard<'a, ()>,
    file: &'a std::fs::File,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        // Closing the file would release it too; the store keeps it open.
        let _ = self.file.unlock();
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

impl Store {
    /// Opens (creating when missing) the store in `dir`. On Unix a store
    /// directory created here is 0700 and every file the store writes 0600;
    /// the files of a store made by an older version are tightened here
    /// (not the directory itself, which may be the user's own).
    pub fn open(dir: &Path) -> Result<Self> {
        private::create_private_dir(dir)?;
        for name in OWN_FILES {
            private::tighten(&dir.join(name))?;
        }
        let db = Db::open(&dir.join(DB_FILE))?;
        let lexical = LexicalIndex::open(&dir.join(LEXICAL_DIR))?;
        // tantivy's files are created with the process umask.
        private::tighten(&dir.join(LEXICAL_DIR))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = private::private_file_options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::io(&lock_path, e))?;
        let mut skip_vectors = false;
        if db.reembedding()?.is_some_and(|r| r.reset_pending) {
            // A crash between recording the re-embedding and removing the
            // old vectors: no chunk counts as embedded, so the old file
            // holds nothing live; finish removing it. Only when no other
            // process writes: one that does is that re-embedding, past this
            // point or about to be (it removes the file itself, then
            // appends the new vectors, which must not be removed here).
            if try_lock(&lock_file, &lock_path, Lock::Exclusive)? {
                let finished = finish_reset(&db, dir);
                let _ = lock_file.unlock();
                finished?;
            } else {
                skip_vectors = true;
            }
        }
        let dim = db.embedder()?.map(|e| e.dim);
        let vectors = if skip_vectors {
            // Nothing is embedded yet (the reset is pending), and the file
            // may still be the old embedder's.
            FlatVectors::unread(&dir.join(VECTORS_FILE), dim)
        } else {
            let live = db.embedded_chunk_ids()?;
            FlatVectors::load(&dir.join(VECTORS_FILE), dim, &live)?
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            db,
            lexical,
            vectors: RwLock::new(vectors),
            write_lock: Mutex::new(()),
            lock_file,
        })
    }

    /// The SQLite file of the store in `dir` (metadata and the interaction log).
    pub fn db_path(dir: &Path) -> PathBuf {
        dir.join(DB_FILE)
    }

    /// Whether `dir` already holds a store.
    pub fn exists(dir: &Path) -> bool {
        dir.join(DB_FILE).is_file()
    }

    /// Whether a process holds the store's writer lock now (an indexing
    /// run, a watcher batch, a re-embedding; see [`Store::write_guard`]),
    /// without opening the store. A server that only reads it does not
    /// count.
    pub fn writer_running(dir: &Path) -> Result<bool> {
        let path = dir.join(LOCK_FILE);
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        let free = try_lock(&f, &path, Lock::Shared)?;
        if free {
            let _ = f.unlock();
        }
        Ok(!free)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Read access to the vector store.
    pub fn vectors(&self) -> std::sync::RwLockReadGuard<'_, FlatVectors> {
        self.vectors.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Write access to the vector store.
    pub fn vectors_mut(&self) -> std::sync::RwLockWriteGuard<'_, FlatVectors> {
        self.vectors.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the vector file (changes made by another process).
    pub fn reload_vectors(&self) -> Result<()> {
        let live = self.db.embedded_chunk_ids()?;
        let dim = self.db.embedder()?.map(|e| e.dim);
        let mode = self.vectors().search_mode();
        let v = FlatVectors::load_with(&self.dir.join(VECTORS_FILE), dim, &live, mode)?;
        *self.vectors_mut() = v;
        Ok(())
    }

    /// Takes the store's writer lock: one writer at a time in this process
    /// and across processes (an `anectx serve --watch` and an
    /// `anectx index` on one store take turns; a second writer waits, with
    /// a warning, until the first is done). A writer that writes vectors
    /// calls [`Store::refresh_vectors`] next, once it knows the vectors on
    /// disk are its embedder's: another process may have written them since
    /// this one read them, and a rewrite from stale memory would drop them.
    pub fn write_guard(&self) -> Result<WriteGuard<'_>> {
        let in_process = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let lock_path = self.dir.join(LOCK_FILE);
        if !try_lock(&self.lock_file, &lock_path, Lock::Exclusive)? {
            tracing::warn!(
                "another anectx process holds the store in {} (an indexing run, or a server \
                 reading one in); waiting for it to finish",
                self.dir.display()
            );
            self.lock_file
                .lock()
                .map_err(|e| StoreError::io(&lock_path, e))?;
        }
        Ok(WriteGuard {
            _in_process: in_process,
            file: &self.lock_file,
        })
    }

    /// Picks up what another process indexed since this one last read the
    /// store (an `anectx index` beside a running `anectx serve`): tantivy's
    /// latest commit, and with `vectors` the vector file when it changed
    /// (the caller knows whether they are its embedder's). Only between
    /// writers' runs: while a writer holds the store, here or in another
    /// process, nothing is read (a run in progress has appended vectors it
    /// has not yet recorded as embedded; its end is picked up by the next
    /// call). True when the vector file was read again. Cheap when nothing
    /// changed: a lock, tantivy's `meta.json`, one `stat`.
    pub fn refresh_from_disk(&self, vectors: bool) -> Result<bool> {
        let Ok(_in_process) = self.write_lock.try_lock() else {
            return Ok(false);
        };
        let lock_path = self.dir.join(LOCK_FILE);
        if !try_lock(&self.lock_file, &lock_path, Lock::Shared)? {
            return Ok(false);
        }
        let read = self.lexical.reload().and_then(|()| {
            if vectors {
                self.refresh_vectors()
            } else {
                Ok(false)
            }
        });
        let _ = self.lock_file.unlock();
        read
    }

    /// Reads the vector file again when another process wrote it since this
    /// one last read or wrote it (true when it did). Cheap otherwise: one
    /// `stat`. The caller holds the write guard, or knows no writer runs.
    pub fn refresh_vectors(&self) -> Result<bool> {
        if !self.vectors().changed_on_disk()? {
            return Ok(false);
        }
        self.reload_vectors()?;
        Ok(true)
    }

    /// Sets the vector dimension (first embedding run) and records the embedder.
    pub fn set_embedder(&self, info: &EmbedderInfo) -> Result<()> {
        self.db.set_embedder(info)?;
        self.vectors_mut().set_dim(info.dim)
    }

    /// Starts replacing every vector by one from `to` (which may have
    /// another dimension): records the re-embedding and `to` as the store's
    /// embedder, marks every chunk unembedded, then removes the old vector
    /// file and graph. Crash-safe at every point: before the SQLite
    /// transaction the store is as it was; after it, no chunk counts as
    /// embedded, so old vectors are never read as `to`'s, and opening the
    /// store finishes the removal. The chunks are then embedded as any
    /// unembedded chunks are (an indexing run), and
    /// [`Store::finish_reembedding`] removes the record. The caller holds
    /// the write guard.
    pub fn begin_reembedding(&self, to: &EmbedderInfo) -> Result<Reembedding> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut r = Reembedding {
            from: self.db.embedder()?,
            to: to.clone(),
            started_ms: now,
            reset_pending: true,
        };
        self.db.start_reembedding(&r)?;
        failpoint("reembed-after-mark");
        remove_vector_files(&self.dir)?;
        let mode = self.vectors().search_mode();
        // The file is gone: this is an empty store of `to`'s dimension.
        *self.vectors_mut() = FlatVectors::load_with(
            &self.dir.join(VECTORS_FILE),
            Some(to.dim),
            &Default::default(),
            mode,
        )?;
        r.reset_pending = false;
        self.db.set_reembedding(Some(&r))?;
        Ok(r)
    }

    /// Removes the re-embedding record once every chunk has a vector (true
    /// when one was finished here).
    pub fn finish_reembedding(&self) -> Result<bool> {
        if self.db.reembedding()?.is_none() || self.pending()?.unembedded_chunks > 0 {
            return Ok(false);
        }
        self.db.set_reembedding(None)?;
        Ok(true)
    }

    /// Outstanding work left by an interrupted run.
    pub fn pending(&self) -> Result<Pending> {
        self.db.pending()
    }

    /// Cross-checks SQLite, tantivy and the vector store. An empty list means
    /// the three agree (no pending work, same chunk sets).
    pub fn check_consistency(&self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let p = self.pending()?;
        if !p.is_empty() {
            problems.push(format!("pending work: {p:?}"));
        }
        let chunks = self.db.chunk_count()?;
        let lex = self.lexical.num_docs()?;
        if lex != chunks {
            problems.push(format!("tantivy holds {lex} live chunks, SQLite {chunks}"));
        }
        if self.db.embedder()?.is_some() {
            let embedded = self.db.embedded_chunk_ids()?;
            let v = self.vectors();
            if v.len() != chunks as usize {
                problems.push(format!(
                    "vector store holds {} vectors, SQLite {chunks} chunks",
                    v.len()
                ));
            }
            if let Some(missing) = embedded.iter().find(|id| !v.contains(**id)) {
                problems.push(format!("chunk {missing} has no vector"));
            }
        }
        Ok(problems)
    }
}

#[derive(Clone, Copy)]
enum Lock {
    Shared,
    Exclusive,
}

/// Takes `file`'s OS lock without waiting: false when another process
/// holds it in a conflicting mode.
fn try_lock(file: &std::fs::File, path: &Path, how: Lock) -> Result<bool> {
    let r = match how {
        Lock::Shared => file.try_lock_shared(),
        Lock::Exclusive => file.try_lock(),
    };
    match r {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::io(path, e)),
    }
}

/// Finishes a re-embedding's removal of the old vectors when the record
/// says it is pending (the caller holds the writer lock).
fn finish_reset(db: &Db, dir: &Path) -> Result<()> {
    if let Some(mut r) = db.reembedding()? {
        if r.reset_pending {
            remove_vector_files(dir)?;
            r.reset_pending = false;
            db.set_reembedding(Some(&r))?;
        }
    }
    Ok(())
}

/// Removes the vector file, its graph and their temporary files (missing
/// ones are fine), then syncs the directory so the removal is durable.
fn remove_vector_files(dir: &Path) -> Result<()> {
    for name in [
        VECTORS_FILE,
        "vectors.f16.tmp",
        "vectors.hnsw",
        "vectors.hnsw.tmp",
    ] {
        let p = dir.join(name);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(&p, e)),
        }
    }
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(dim: usize, name: &str) -> EmbedderInfo {
        EmbedderInfo {
            fingerprint: format!("{name}-{dim}"),
            description: name.into(),
            dim,
        }
    }

    fn chunk(text: &str) -> NewChunk {
        NewChunk {
            text: text.into(),
            heading: None,
            byte_start: 0,
            byte_end: 7,
            line_start: 1,
            line_end: 1,
            tokens: 2,
            page: None,
        }
    }

    fn store_with_vectors(dir: &Path) -> Store {
        let store = Store::open(dir).unwrap();
        store.set_embedder(&info(8, "old")).unwrap();
        let chunks: Vec<NewChunk> = (0..3).map(|i| chunk(&format!("chunk {i}"))).collect();
        let ids = store
            .db
            .transaction(|tx| Db::replace_document(tx, "a.txt", "h", 10, "text", &chunks))
            .unwrap();
        store
            .vectors_mut()
            .append(&ids, &vec![0.5; ids.len() * 8])
            .unwrap();
        store.db.mark_embedded(&ids).unwrap();
        store
    }

    /// A crash between the SQLite transaction that starts a re-embedding
    /// and the removal of the old vectors leaves a file of the old
    /// dimension beside a store that records the new one: opening the store
    /// finishes the removal instead of refusing the file.
    #[test]
    fn opening_finishes_a_reembedding_interrupted_before_the_old_vectors_went() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_vectors(dir.path());
        let r = Reembedding {
            from: store.db.embedder().unwrap(),
            to: info(4, "new"),
            started_ms: 1,
            reset_pending: true,
        };
        // What `begin_reembedding` does before the failpoint.
        store.db.start_reembedding(&r).unwrap();
        drop(store);
        assert!(dir.path().join(VECTORS_FILE).exists());

        let store = Store::open(dir.path()).unwrap();
        let got = store.db.reembedding().unwrap().unwrap();
        assert!(!got.reset_pending, "{got:?}");
        assert!(!dir.path().join(VECTORS_FILE).exists());
        assert_eq!(store.pending().unwrap().unembedded_chunks, 3);
        // The chunks take vectors of the new dimension, and then the
        // re-embedding is finished.
        let ids: Vec<u64> = store
            .db
            .unembedded_chunks_after(0, 10)
            .unwrap()
            .iter()
            .map(|c| c.0)
            .collect();
        store.vectors_mut().append(&ids, &[0.5; 12]).unwrap();
        assert!(
            !store.finish_reembedding().unwrap(),
            "finished before marking"
        );
        store.db.mark_embedded(&ids).unwrap();
        assert!(store.finish_reembedding().unwrap());
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert!(store.db.reembedding().unwrap().is_none());
        assert_eq!(store.pending().unwrap().unembedded_chunks, 0);
        assert_eq!(store.vectors().len(), 3);
        assert_eq!(VectorIndex::dim(&*store.vectors()), 4);
    }

    /// The same crash-recovery step, while another process is the
    /// re-embedding itself (it holds the writer lock, has recorded the
    /// re-embedding and is about to remove the old file, then to append the
    /// new vectors): opening the store leaves the file to that process, and
    /// reads no vector of the old embedder. Before the lock, opening
    /// removed the file, and with it any new vectors already appended.
    #[test]
    fn opening_leaves_a_pending_reset_to_the_process_that_writes() {
        let dir = tempfile::tempdir().unwrap();
        let writer = store_with_vectors(dir.path());
        let guard = writer.write_guard().unwrap();
        let r = Reembedding {
            from: writer.db.embedder().unwrap(),
            to: info(4, "new"),
            started_ms: 1,
            reset_pending: true,
        };
        writer.db.start_reembedding(&r).unwrap();

        let reader = Store::open(dir.path()).unwrap();
        assert!(dir.path().join(VECTORS_FILE).exists());
        assert!(reader.db.reembedding().unwrap().unwrap().reset_pending);
        assert_eq!(reader.vectors().len(), 0);
        drop(guard);
        drop(reader);
        // With the writer gone, the next open finishes the step.
        let again = Store::open(dir.path()).unwrap();
        assert!(!again.db.reembedding().unwrap().unwrap().reset_pending);
        assert!(!dir.path().join(VECTORS_FILE).exists());
    }

    /// Two stores on one directory stand for two processes: the second
    /// writer waits while the first holds the lock, then reads what the
    /// first wrote before it writes itself.
    #[test]
    fn writers_take_turns_across_processes_and_the_next_one_reads_what_the_last_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let first = store_with_vectors(dir.path());
        let second = Store::open(dir.path()).unwrap();
        assert_eq!(second.vectors().len(), 3);
        let held = first.write_guard().unwrap();
        let waited = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                let _g = second.write_guard().unwrap();
                let waited = waited.load(std::sync::atomic::Ordering::SeqCst);
                assert!(second.refresh_vectors().unwrap());
                waited
            });
            // The first writer appends a vector while it holds the lock.
            let ids = first
                .db
                .transaction(|tx| {
                    Db::replace_document(tx, "b.txt", "h", 10, "text", &[chunk("chunk b")])
                })
                .unwrap();
            first.vectors_mut().append(&ids, &[0.25; 8]).unwrap();
            first.db.mark_embedded(&ids).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(200));
            waited.store(true, std::sync::atomic::Ordering::SeqCst);
            drop(held);
            assert!(
                t.join().unwrap(),
                "the second writer took the lock while the first held it"
            );
        });
        // Taking the lock read the first writer's new vector.
        assert_eq!(second.vectors().len(), 4);
        let embedded = second.db.embedded_chunk_ids().unwrap();
        assert_eq!(embedded.len(), 4);
        assert!(embedded.iter().all(|id| second.vectors().contains(*id)));
    }

    #[test]
    fn begin_reembedding_drops_the_old_vectors_and_records_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_vectors(dir.path());
        let r = store.begin_reembedding(&info(4, "new")).unwrap();
        assert_eq!(r.from, Some(info(8, "old")));
        assert!(!r.reset_pending);
        assert_eq!(store.db.embedder().unwrap(), Some(info(4, "new")));
        assert_eq!(store.vectors().len(), 0);
        assert_eq!(store.pending().unwrap().unembedded_chunks, 3);
        assert!(!dir.path().join(VECTORS_FILE).exists());
    }
}
