//! `anectx status`: what a store holds and what serves it.

use std::path::PathBuf;

use anectx_engine::{ModelIdentity, Store};
use anectx_models::WeightDtype;
use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use super::index::StoreArgs;

/// Show the store: documents and chunks, the embedder and backend, the
/// relevance-model version, the interaction log, and when the last index and
/// the last training ran. With a shared store (`--store postgres://…`):
/// this machine's cache, and how far it is behind the shared store.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Store directory, or a shared store `postgres://…`. Env: ANECTX_STORE;
    /// config `store`; default ./.anectx
    #[arg(long)]
    store: Option<PathBuf>,
    /// Relevance-model registry (default: <store>/registry).
    #[arg(long)]
    registry: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Embedder {
    description: String,
    fingerprint: String,
    dim: usize,
    builtin: bool,
}

#[derive(Debug, Serialize)]
struct Status {
    store: PathBuf,
    exists: bool,
    documents: u64,
    chunks: u64,
    /// The embedder that made the store's vectors (`null`: BM25 only).
    embedder: Option<Embedder>,
    /// The backend `serve`, `context` and `index` run it on.
    backend: String,
    /// A re-embedding that has not finished (`null`: none): until it does,
    /// retrieval is BM25-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    reembedding: Option<Reembedding>,
    /// Another process is writing the store now (an indexing run, a
    /// watcher batch or a re-embedding); a second writer waits for it.
    writer_running: bool,
    registry: PathBuf,
    /// The serving relevance-model version (`null`: the built-in fusion).
    relevance_model: Option<String>,
    relevance_versions: usize,
    interactions: u64,
    /// Bytes of the store's SQLite files (documents, chunks and the log).
    db_bytes: u64,
    last_index_ms: Option<u64>,
    last_training_ms: Option<u64>,
    /// The shared store this store caches (`null`: a local store).
    #[serde(skip_serializing_if = "Option::is_none")]
    shared: Option<Shared>,
}

/// An unfinished `anectx reembed`.
#[derive(Debug, Serialize)]
struct Reembedding {
    /// The embedder whose vectors replace the old ones.
    to: String,
    /// Chunks that have their new vector.
    done: u64,
    started_ms: u64,
    /// The target is the built-in embedder.
    builtin: bool,
}

/// A shared store, as `status` shows it beside this machine's cache.
#[derive(Debug, Serialize)]
struct Shared {
    /// The connection string without its password.
    target: String,
    /// The shared store's last change number.
    head: i64,
    /// The change number this cache has caught up to.
    cache_at: i64,
    documents: u64,
    chunks: u64,
    /// Interactions in the fleet's log.
    interactions: u64,
    /// Feedback entries in the fleet's log.
    feedback: u64,
    /// The fleet's relevance model (`null`: the built-in fusion).
    relevance_model: Option<String>,
    /// The shared store's embedder (`null`: BM25 only).
    embedder: Option<String>,
    /// A fleet re-embedding under way (`null`: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    reembedding: Option<SharedReembedding>,
}

/// An unfinished `anectx reembed --store postgres://…`.
#[derive(Debug, Serialize)]
struct SharedReembedding {
    to: String,
    /// Chunks whose new vector is staged.
    staged: u64,
    chunks: u64,
}

pub fn run(args: StatusArgs) -> Result<()> {
    let store_args = StoreArgs {
        store: args.store.clone(),
        model: None,
        dtype: None,
        backend: None,
        units: None,
        vector_search: None,
    };
    let dir = store_args.store_dir()?;
    let shared = match store_args.shared()? {
        Some(pg) => {
            let (documents, chunks) = pg.counts()?;
            let cache_at = if Store::exists(&dir) {
                anectx_store_pg::synced_to(&anectx_store::Db::open(&Store::db_path(&dir))?)?
            } else {
                0
            };
            Some(Shared {
                target: pg.target().to_string(),
                head: pg.head()?,
                cache_at,
                documents,
                chunks,
                interactions: pg.interaction_count()?,
                feedback: pg.feedback_count()?,
                relevance_model: pg.current_version()?.0,
                embedder: pg.embedder()?.map(|e| e.description),
                reembedding: match pg.reembedding()? {
                    Some(to) => {
                        let (staged, chunks) = pg.reembedding_progress()?;
                        Some(SharedReembedding {
                            to: to.description,
                            staged,
                            chunks,
                        })
                    }
                    None => None,
                },
            })
        }
        None => None,
    };
    let registry_dir = super::learn::registry_dir(&dir, args.registry.as_ref());
    let mut st = Status {
        store: dir.clone(),
        exists: Store::exists(&dir),
        documents: 0,
        chunks: 0,
        embedder: None,
        backend: "candle (CPU)".into(),
        reembedding: None,
        writer_running: false,
        registry: registry_dir.clone(),
        relevance_model: None,
        relevance_versions: 0,
        interactions: 0,
        db_bytes: 0,
        last_index_ms: None,
        last_training_ms: None,
        shared,
    };
    if st.exists {
        let db = anectx_store::Db::open(&Store::db_path(&dir))
            .with_context(|| format!("opening the store in {}", dir.display()))?;
        st.documents = db.document_count()?;
        st.chunks = db.chunk_count()?;
        st.interactions = db.interaction_count()?;
        st.embedder = db.embedder()?.map(|e| Embedder {
            builtin: [WeightDtype::F32, WeightDtype::F16]
                .iter()
                .any(|&d| ModelIdentity::builtin(d).matches(&e.fingerprint)),
            description: e.description,
            fingerprint: e.fingerprint,
            dim: e.dim,
        });
        if let Some(r) = db.reembedding()? {
            st.reembedding = Some(Reembedding {
                builtin: [WeightDtype::F32, WeightDtype::F16]
                    .iter()
                    .any(|&d| ModelIdentity::builtin(d).matches(&r.to.fingerprint)),
                to: r.to.description,
                done: st.chunks.saturating_sub(db.pending()?.unembedded_chunks),
                started_ms: r.started_ms,
            });
        }
        st.writer_running = Store::writer_running(&dir)?;
        st.last_index_ms = db
            .meta(anectx_engine::LAST_INDEX_META)?
            .and_then(|v| v.parse().ok());
        let db_path = Store::db_path(&dir);
        st.db_bytes = ["", "-wal"]
            .iter()
            .filter_map(|suffix| {
                let mut p = db_path.clone().into_os_string();
                p.push(suffix);
                std::fs::metadata(PathBuf::from(p)).ok()
            })
            .map(|m| m.len())
            .sum();
        if registry_dir.is_dir() {
            let reg = anectx_learn::Registry::open(&registry_dir)
                .with_context(|| format!("opening the registry in {}", registry_dir.display()))?;
            let versions = reg.list()?;
            st.relevance_versions = versions.len();
            st.last_training_ms = versions.iter().map(|v| v.manifest.created_ms).max();
            st.relevance_model = reg.current()?;
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(());
    }
    if let Some(sh) = &st.shared {
        println!(
            "shared       {}: {} documents ({} chunks) at change {}; this cache at change {}{}",
            sh.target,
            sh.documents,
            sh.chunks,
            sh.head,
            sh.cache_at,
            match sh.head - sh.cache_at {
                0 => String::new(),
                n => format!(" ({n} behind: `anectx context` or `anectx serve` catches up)"),
            }
        );
        println!(
            "fleet        {} interactions and {} feedback in the shared log; model {}",
            sh.interactions,
            sh.feedback,
            sh.relevance_model
                .as_deref()
                .unwrap_or("built-in fusion (nothing promoted)")
        );
        if let Some(r) = &sh.reembedding {
            println!(
                "re-embedding the fleet with {}: {} of {} chunks staged; the fleet serves {} \
                 until the swap (the same anectx reembed command resumes it)",
                r.to,
                r.staged,
                r.chunks,
                sh.embedder.as_deref().unwrap_or("BM25 only")
            );
        }
    }
    if !st.exists {
        // A password is never printed: say when the command needs it back.
        let raw = store_args.raw_store()?;
        let note = match super::shared::url(&raw) {
            Some(url) if anectx_store_pg::redact(url) != url => " (with its password)",
            _ => "",
        };
        println!(
            "no store in {}\nnext: `anectx index PATH --store {}`{note} (or `anectx quickstart`)",
            dir.display(),
            store_args.typed()?
        );
        return Ok(());
    }
    let when = |ms: Option<u64>| ms.map_or_else(|| "never".to_string(), utc);
    println!("store        {}", dir.display());
    println!("documents    {} ({} chunks)", st.documents, st.chunks);
    if st.writer_running && st.reembedding.is_none() {
        println!(
            "writing      another anectx process is writing to this store now (an indexing run, \
             a watcher batch or a re-embedding); another writer waits for it"
        );
    }
    match &st.embedder {
        Some(e) => println!(
            "embedder     {} [{}], {} dimensions, on {}",
            e.description, e.fingerprint, e.dim, st.backend
        ),
        None => println!("embedder     none (BM25 only)"),
    }
    if let Some(r) = &st.reembedding {
        let resume = if st.writer_running {
            "running now in another process".to_string()
        } else if r.builtin {
            format!(
                "`anectx reembed --store {} --model default` resumes it",
                store_args.typed()?
            )
        } else {
            "the same anectx reembed command, with the same --model, resumes it".into()
        };
        println!(
            "re-embedding {} of {} chunks done with {} since {}: BM25 only until it finishes \
             ({resume})",
            r.done,
            st.chunks,
            r.to,
            utc(r.started_ms),
        );
    }
    println!(
        "relevance    {} ({} version{} in {})",
        st.relevance_model
            .as_deref()
            .unwrap_or("built-in fusion (nothing promoted)"),
        st.relevance_versions,
        if st.relevance_versions == 1 { "" } else { "s" },
        registry_dir.display()
    );
    println!(
        "log          {} interactions, {:.1} MB of SQLite",
        st.interactions,
        st.db_bytes as f64 / 1e6
    );
    println!("last index   {}", when(st.last_index_ms));
    println!("last train   {}", when(st.last_training_ms));
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix milliseconds.
fn utc(ms: u64) -> String {
    anectx_bench::run::utc_string(ms / 1000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(super::utc(1_796_556_720_999), "2026-12-06T11:32:00Z");
    }
}
