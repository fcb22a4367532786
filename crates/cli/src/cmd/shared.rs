//! `--store postgres://…`: a shared store on PostgreSQL + pgvector, with
//! this machine's cache of it as the local store every command works on.
//!
//! The cache lives in `$XDG_CACHE_HOME/anectx/shared/<id>` (else
//! `~/.cache/anectx/shared/<id>`), where `<id>` hashes the URL without its
//! password ([`anectx_store_pg::redact`]). `index` indexes into the cache
//! and publishes what changed (one transaction per document); `context`
//! catches the cache up first.

use std::path::{Path, PathBuf};

use anectx_engine::{Engine, NoProgress};
use anectx_store_pg::{PgStore, PublishReport, SyncReport};
use anyhow::{Context, Result};
use serde::Serialize;

/// The URL when `store` names a shared store.
pub fn url(store: &Path) -> Option<&str> {
    store
        .to_str()
        .filter(|s| anectx_store_pg::is_postgres_url(s))
}

/// This machine's cache directory for the shared store at `url`.
pub fn cache_dir(url: &str) -> Result<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .context("neither XDG_CACHE_HOME nor HOME is set: cannot place the shared store's cache")?;
    let hash = blake3::hash(anectx_store_pg::redact(url).as_bytes()).to_hex();
    let dir = base.join("anectx").join("shared").join(&hash[..16]);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating the shared store's cache {}", dir.display()))?;
    Ok(dir)
}

/// Connects to the shared store (and migrates it).
pub fn connect(url: &str) -> Result<PgStore> {
    PgStore::connect(url)
        .with_context(|| format!("opening the shared store {}", anectx_store_pg::redact(url)))
}

/// What `index` did with the shared store.
#[derive(Debug, Serialize)]
pub struct Shared {
    pub target: String,
    pub published: PublishReport,
    pub synced: SyncReport,
}

/// Publishes what `engine` indexed under `roots`, then catches its cache up
/// with what other replicas published.
pub fn publish_and_sync(engine: &Engine, pg: &PgStore, roots: &[PathBuf]) -> Result<Shared> {
    let published = engine
        .publish_shared(pg, roots)
        .with_context(|| format!("publishing to {}", pg.target()))?;
    let synced = sync(engine, pg)?;
    Ok(Shared {
        target: pg.target().to_string(),
        published,
        synced,
    })
}

/// Before an engine opens this machine's cache (`dir`) of `pg` with
/// `embedder`: when the shared store was re-embedded with it, the cache
/// starts taking the new vectors (see [`anectx_engine::adopt_shared_embedder`]).
pub fn adopt(
    dir: &Path,
    embedder: Option<&dyn anectx_engine::TextEmbedder>,
    pg: Option<&PgStore>,
) -> Result<()> {
    if let (Some(e), Some(pg)) = (embedder, pg) {
        if anectx_engine::adopt_shared_embedder(dir, e, pg)
            .with_context(|| format!("preparing the cache of {}", pg.target()))?
        {
            eprintln!(
                "note: {} was re-embedded with {}: this cache takes the new vectors now",
                pg.target(),
                e.info().description
            );
        }
    }
    Ok(())
}

/// Catches `engine`'s cache up with the shared store.
pub fn sync(engine: &Engine, pg: &PgStore) -> Result<SyncReport> {
    engine
        .sync_shared(pg, &NoProgress)
        .with_context(|| format!("catching up from {}", pg.target()))
}

/// Takes the fleet's log (interactions, then feedback) into `engine`'s
/// cache. Run after a sync: the log names chunks by document, so they are
/// placed only once the documents are here.
pub fn pull_log(engine: &Engine, pg: &PgStore) -> Result<anectx_store_pg::PullReport> {
    let db = &engine.store().db;
    pg.pull_log(db)
        .and_then(|r| pg.pull_feedback(db).map(|_| r))
        .with_context(|| format!("reading the shared log of {}", pg.target()))
}

/// Catches `engine`'s cache up with the shared store, then takes the
/// fleet's log, saying what it did: what training and the usage memory
/// need on a machine that does not serve.
pub fn catch_up_for_learning(engine: &Engine, pg: &PgStore) -> Result<()> {
    let synced = sync(engine, pg)?;
    let r = pull_log(engine, pg)?;
    eprintln!(
        "shared store {}: cache at change {}; {} interactions taken from the fleet's log \
         ({} of their candidates are chunks this cache does not hold)",
        pg.target(),
        synced.to,
        r.pulled,
        r.unplaced_candidates
    );
    Ok(())
}

/// The cache's interaction log as a recorder that also writes each
/// committed group to the shared log (its own connection) before it
/// acknowledges the group; what fails to reach the shared log is sent by
/// the follower's catch-up ([`spawn_follower`]).
pub fn mirrored_recorder(
    store_dir: &Path,
    sync: &str,
    url: &str,
) -> Result<anectx_serve::SqliteRecorder> {
    let pg = connect(url)?;
    let fleet = std::sync::Arc::new(connect(url)?);
    // `--log-sync normal` lets the last commits roll back on an OS crash
    // here; the shared log's writes are asked no more than that.
    if super::serve::durability(sync) == anectx_store::Durability::Normal {
        pg.commit_without_flush()
            .and_then(|_| fleet.commit_without_flush())
            .with_context(|| format!("configuring the shared log of {}", pg.target()))?;
    }
    let mirror: anectx_serve::recorder::Mirror = Box::new(move |db, items| {
        pg.append_interactions(db, items)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    // Feedback can reach this replica before the interaction it rates has
    // been copied here: then the fleet's log is taken at once.
    let pulls = fleet.clone();
    let catch_up: anectx_serve::recorder::LogHook =
        Box::new(move |db| pulls.pull_log(db).map(|_| ()).map_err(|e| e.to_string()));
    // Feedback goes to the shared log before it is acknowledged, as
    // interactions do; after any interaction the mirror failed to send, so
    // other replicas find the interaction it rates.
    let feedback: anectx_serve::recorder::LogHook = Box::new(move |db| {
        fleet
            .push_log(db)
            .and_then(|_| fleet.push_feedback(db))
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    Ok(anectx_serve::SqliteRecorder::open_mirrored(
        store_dir,
        super::serve::durability(sync),
        mirror,
    )
    .with_context(|| format!("opening the interaction log in {}", store_dir.display()))?
    .with_catch_up(catch_up)
    .with_feedback_mirror(feedback))
}

/// Starts the thread that keeps a serving replica's cache caught up: it
/// waits for a change notification (or `poll`), syncs the engine's store,
/// sends interactions the shared log missed, takes the fleet's, then takes
/// the fleet's current relevance model into `registry` (the server's
/// registry poll hot-swaps it). Errors are logged and
/// retried at the next wake-up (the shared store may be restarting).
pub fn spawn_follower(
    pg: PgStore,
    engine: std::sync::Arc<Engine>,
    registry: anectx_learn::Registry,
    poll: std::time::Duration,
) -> Result<()> {
    let mut listener = pg.listener().ok();
    // A catch-up that keeps failing the same way (a replica on the old
    // embedder after the fleet was re-embedded: every wake-up) is logged
    // once, and again when it changes or recovers.
    let mut failing: Option<String> = None;
    std::thread::Builder::new()
        .name("anectx-shared".into())
        .spawn(move || loop {
            match listener.as_mut() {
                Some(l) => {
                    if let Err(e) = l.wait(poll) {
                        tracing::warn!("shared store notifications: {e}; polling");
                        listener = None;
                        std::thread::sleep(poll);
                    }
                }
                None => {
                    std::thread::sleep(poll);
                    listener = pg.listener().ok();
                }
            }
            match engine.sync_shared(&pg, &NoProgress) {
                Ok(r) => {
                    if failing.take().is_some() {
                        tracing::info!("shared store: catching up works again");
                    }
                    if r.changes > 0 {
                        tracing::info!(
                            "shared store: caught up to change {} ({} documents written, {} \
                             removed; {} logged candidates placed on chunks that arrived)",
                            r.to,
                            r.documents_written,
                            r.documents_deleted,
                            r.candidates_placed
                        );
                    }
                }
                Err(e) => {
                    let now = e.to_string();
                    if failing.as_deref() != Some(now.as_str()) {
                        tracing::warn!(
                            "shared store: catching up failed: {now} (this replica keeps \
                             serving its cache; logged again when this changes)"
                        );
                    }
                    failing = Some(now);
                }
            }
            let db = &engine.store().db;
            if let Err(e) = pg.push_log(db).and_then(|_| pg.push_feedback(db)) {
                tracing::warn!("shared store: sending the log failed: {e}");
            }
            // The other replicas' interactions and feedback, for the usage
            // memory and training on this replica.
            if let Err(e) = pg.pull_log(db).and_then(|_| pg.pull_feedback(db)) {
                tracing::warn!("shared store: reading the fleet's log failed: {e}");
            }
            // Last, so a new version's memory (rebuilt here at its first
            // load, in this cache's chunk ids) sees the log just pulled.
            match follow_registry(&pg, &registry) {
                Ok(true) => tracing::info!(
                    "shared store: the fleet's relevance model is now {:?}",
                    registry.current().ok().flatten()
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!("shared store: following the registry failed: {e:#}"),
            }
        })
        .context("starting the shared store's follower thread")?;
    Ok(())
}

/// Makes the fleet's current version the shared registry's: publishes
/// `registry`'s current version (its files) and sets it current there.
pub fn publish_registry(pg: &PgStore, registry: &anectx_learn::Registry) -> Result<Option<String>> {
    let current = registry.current()?;
    if let Some(v) = &current {
        pg.publish_version(v, &registry.version_dir(v))
            .with_context(|| format!("publishing {v} to {}", pg.target()))?;
    }
    pg.set_current_version(current.as_deref())
        .with_context(|| format!("setting the fleet's model in {}", pg.target()))?;
    Ok(current)
}

/// Makes `registry`'s current version the fleet's (copying the version
/// from the shared registry when this machine lacks it); returns whether it
/// changed. A server polling the registry then hot-swaps it.
pub fn follow_registry(pg: &PgStore, registry: &anectx_learn::Registry) -> Result<bool> {
    let (shared, _) = pg.current_version()?;
    if registry.current()? == shared {
        return Ok(false);
    }
    if let Some(v) = &shared {
        anectx_learn::registry::validate_version(v)?;
        let dir = registry.version_dir(v);
        if !dir.exists() {
            pg.fetch_version(v, &dir)
                .with_context(|| format!("copying {v} from {}", pg.target()))?;
        }
    }
    registry
        .follow(shared.as_deref())
        .with_context(|| format!("taking the fleet's model {shared:?}"))?;
    Ok(true)
}

/// One line for people.
pub fn describe(pg: &PgStore, s: &Shared) -> String {
    let p = &s.published;
    format!(
        "shared store {}: {} documents published ({} chunks), {} removed, {} unchanged{}; \
         {} documents taken from other replicas; at change {}",
        pg.target(),
        p.documents_written,
        p.chunks_written,
        p.documents_deleted,
        p.documents_unchanged,
        if p.documents_touched > 0 {
            format!(
                ", {} with only a new modification time",
                p.documents_touched
            )
        } else {
            String::new()
        },
        s.synced.documents_written,
        s.synced.to.max(p.head),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_postgres_urls_name_a_shared_store() {
        assert!(url(Path::new("postgres://h/db")).is_some());
        assert!(url(Path::new("./.anectx")).is_none());
    }
}
