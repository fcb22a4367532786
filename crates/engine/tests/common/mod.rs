//! Test helpers: a deterministic bag-of-words embedder and corpus writers.
#![allow(dead_code)]

use std::path::Path;

use anectx_engine::{EngineError, TextEmbedder};
use anectx_store::EmbedderInfo;

/// Hashes lower-cased words into `dim` buckets and L2-normalises: texts that
/// share words get similar vectors. Deterministic, no model needed.
pub struct HashEmbedder {
    info: EmbedderInfo,
}

impl HashEmbedder {
    pub fn new(dim: usize, seed: &str) -> Self {
        Self {
            info: EmbedderInfo {
                fingerprint: format!("hash-{seed}-{dim}"),
                description: format!("hash embedder {seed}"),
                dim,
            },
        }
    }
}

impl TextEmbedder for HashEmbedder {
    fn info(&self) -> &EmbedderInfo {
        &self.info
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<f32>, EngineError> {
        let d = self.info.dim;
        let mut out = vec![0f32; texts.len() * d];
        for (t, row) in texts.iter().zip(out.chunks_exact_mut(d)) {
            for w in t
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
            {
                let h = blake3::hash(w.to_lowercase().as_bytes());
                let b = h.as_bytes();
                row[(u16::from_le_bytes([b[0], b[1]]) as usize) % d] += 1.0;
            }
            let n = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-9);
            row.iter_mut().for_each(|x| *x /= n);
        }
        Ok(out)
    }
}

/// Embeds with `inner` for `left` calls, then fails (an embedder that
/// goes away in the middle of a run).
pub struct Failing {
    pub inner: std::sync::Arc<dyn TextEmbedder>,
    pub left: std::sync::atomic::AtomicUsize,
}

impl TextEmbedder for Failing {
    fn info(&self) -> &EmbedderInfo {
        self.inner.info()
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<f32>, EngineError> {
        use std::sync::atomic::Ordering;
        if self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            return Err(EngineError::Invalid("the embedder went away".into()));
        }
        self.inner.embed(texts)
    }
}

/// Three documents on distinct topics (lighthouses, a garden, tides).
pub fn shore_corpus(root: &Path) {
    write(
        root,
        "lighthouse.md",
        "# Lighthouses\n\nThe keeper trimmed the lamp wick every evening at the lighthouse.\n",
    );
    write(
        root,
        "garden.txt",
        "Compost, seedlings and a watering schedule for the vegetable garden.\n",
    );
    write(
        root,
        "tides.md",
        "# Tides\n\nSpring tides follow the new and the full moon; neap tides the quarters.\n",
    );
}

pub fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Sets a file's modification time to `secs` after the Unix epoch.
pub fn set_mtime(path: &Path, secs: i64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// A small mixed corpus: Markdown, HTML, code and text on distinct topics.
pub fn small_corpus(dir: &Path) {
    write(
        dir,
        "docs/guide.md",
        "# Server\n\nThe server listens on port 8080 by default. Change the port with --port.\n\n\
         ## TLS\n\nTLS certificates are loaded from the certs folder.\n\n\
         # Storage\n\nThe store keeps chunks in SQLite with write-ahead logging.\n",
    );
    write(
        dir,
        "docs/cooking.html",
        "<html><body><h1>Pancakes</h1><p>Whisk flour, eggs and milk; fry the batter in butter.</p>\
         <script>var secret = 'zebra';</script></body></html>",
    );
    write(
        dir,
        "src/lib.rs",
        "/// Computes the checksum of a buffer with the adler algorithm.\n\
         pub fn checksum(buf: &[u8]) -> u32 { buf.iter().map(|&b| b as u32).sum() }\n",
    );
    write(
        dir,
        "notes/astronomy.txt",
        "Jupiter is the largest planet; its great red spot is a storm larger than Earth.\n",
    );
    write(
        dir,
        "notes/.hidden.txt",
        "hidden file about jupiter should not be indexed\n",
    );
    write(dir, ".gitignore", "ignored/\n");
    write(dir, "ignored/skip.txt", "ignored file mentions pancakes\n");
}

/// Which store a test's documents go through. The engine always answers
/// from its own cache; with [`Harness::postgres`], what a test indexes is
/// indexed by another engine (the indexer), published to a shared store
/// (PostgreSQL + pgvector) and synced into the engine under test, so every
/// answer the test checks went through the shared store. Each engine cache
/// (by directory) has its own indexer and its own database, as each has its
/// own store with SQLite. [`on_both_stores!`] runs a test body with each.
pub struct Harness {
    server: Option<&'static anectx_testing::pg::PgServer>,
    /// The engine's cache directory → its indexer and shared store.
    through: std::sync::Mutex<
        std::collections::HashMap<
            std::path::PathBuf,
            (tempfile::TempDir, anectx_store_pg::PgStore),
        >,
    >,
}

impl Harness {
    pub fn sqlite() -> Self {
        Self {
            server: None,
            through: Default::default(),
        }
    }

    /// `None` when the pgserver fixture is missing outside CI (under CI the
    /// fixture check panics, so the PostgreSQL half never skips there).
    pub fn postgres() -> Option<Self> {
        Some(Self {
            server: Some(anectx_testing::pg::PgServer::shared()?),
            through: Default::default(),
        })
    }

    pub fn is_postgres(&self) -> bool {
        self.server.is_some()
    }

    /// Runs `f` with `engine`'s indexer (the same embedder, its own
    /// directory, kept for the whole test so re-indexing is incremental as
    /// on one store) and shared store, then syncs `engine` from it.
    fn through<T>(
        &self,
        server: &anectx_testing::pg::PgServer,
        engine: &anectx_engine::Engine,
        f: impl FnOnce(&anectx_engine::Engine, &anectx_store_pg::PgStore) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let mut map = self.through.lock().unwrap();
        let (dir, shared) = map
            .entry(engine.store().dir().to_path_buf())
            .or_insert_with(|| {
                let db = server.fresh_database();
                let shared = anectx_store_pg::PgStore::connect(&server.conninfo(&db)).unwrap();
                (tempfile::tempdir().unwrap(), shared)
            });
        let indexer = anectx_engine::Engine::open(dir.path(), engine.embedder().cloned())?;
        let out = f(&indexer, shared)?;
        engine.sync_shared(shared, &anectx_engine::NoProgress)?;
        // The engine under test is a replica of the shared store, and what
        // it holds came from there.
        assert_eq!(
            engine
                .store()
                .db
                .meta(anectx_store_pg::STORE_ID_KEY)
                .unwrap(),
            Some(shared.store_id().unwrap())
        );
        Ok(out)
    }

    /// Indexes `roots` for `engine`: directly, or through the shared store
    /// (the report is the indexer's, of the same indexing code).
    pub fn index(
        &self,
        engine: &anectx_engine::Engine,
        roots: &[std::path::PathBuf],
        opts: &anectx_engine::IndexOptions,
        progress: &dyn anectx_engine::Progress,
    ) -> Result<anectx_engine::IndexReport, EngineError> {
        let Some(server) = self.server else {
            return engine.index(roots, opts, progress);
        };
        self.through(server, engine, |indexer, shared| {
            let report = indexer.index(roots, opts, progress)?;
            indexer.publish_shared(shared, roots)?;
            Ok(report)
        })
    }

    /// [`Self::index`] of one root with the default options; panics on an
    /// error.
    pub fn index_root(
        &self,
        engine: &anectx_engine::Engine,
        root: &Path,
    ) -> anectx_engine::IndexReport {
        self.index(
            engine,
            &[root.to_path_buf()],
            &anectx_engine::IndexOptions::default(),
            &anectx_engine::NoProgress,
        )
        .unwrap()
    }

    /// [`anectx_engine::index_texts`] for `engine`, directly or through the
    /// shared store.
    pub fn index_texts(
        &self,
        engine: &anectx_engine::Engine,
        docs: &[(String, String)],
        opts: &anectx_engine::IndexOptions,
    ) -> Result<anectx_engine::IndexReport, EngineError> {
        let texts = |e: &anectx_engine::Engine| {
            anectx_engine::index_texts(
                e.store(),
                e.embedder().map(|x| x.as_ref()),
                docs,
                opts,
                &anectx_engine::NoProgress,
            )
        };
        let Some(server) = self.server else {
            return texts(engine);
        };
        self.through(server, engine, |indexer, shared| {
            let report = texts(indexer)?;
            indexer.publish_shared_all(shared)?;
            Ok(report)
        })
    }
}

/// For each named test body `fn name(h: &Harness)`, a module `name` with
/// two tests: `sqlite` (the engine's own store) and `postgres` (through the
/// shared store).
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(&$crate::common::Harness::sqlite())
            }
            #[test]
            fn postgres() {
                if let Some(h) = $crate::common::Harness::postgres() {
                    super::$name(&h)
                }
            }
        }
    )*};
}

/// Every chunk's text → its stored vector (as bits).
pub fn vectors_by_text(e: &anectx_engine::Engine) -> std::collections::BTreeMap<String, Vec<u32>> {
    use anectx_store::VectorIndex;
    let db = &e.store().db;
    let ids: Vec<u64> = db.chunk_paths().unwrap().into_keys().collect();
    let v = e.store().vectors();
    db.chunks_by_ids(&ids)
        .unwrap()
        .into_iter()
        .map(|c| {
            let x = v.get(c.id).unwrap();
            (c.text, x.iter().map(|f| f.to_bits()).collect())
        })
        .collect()
}
