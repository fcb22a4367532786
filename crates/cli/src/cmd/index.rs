use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anectx_engine::{ChunkConfig, Engine, IndexOptions, Progress, TextEmbedder};
use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

/// Index files and folders into a store (incremental; deleted files disappear).
#[derive(Debug, Args)]
pub struct IndexArgs {
    /// Files or folders to index. Folders are walked respecting .gitignore.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
    /// Chunk size in tokens.
    #[arg(long, default_value_t = 200)]
    chunk_tokens: usize,
    /// Tokens shared by consecutive chunks.
    #[arg(long, default_value_t = 32)]
    overlap: usize,
    /// Skip files larger than this many MB.
    #[arg(long, default_value_t = 32)]
    max_file_mb: u64,
    /// Follow symbolic links whose target stays inside the indexed folders
    /// (after resolving every link). Without it, links are skipped with a note.
    #[arg(long)]
    follow_links: bool,
    /// Print the report as JSON (with --watch: one JSON object per line,
    /// one line per indexing run).
    #[arg(long)]
    json: bool,
    /// After indexing, keep watching the paths and index changes as they
    /// happen (created, modified, deleted and renamed files), with the same
    /// ignore rules and content hashes. A full reconcile runs at start and
    /// whenever the watcher reports lost events. Runs until stopped.
    #[arg(long)]
    watch: bool,
    /// With --watch: wait for this many milliseconds without new events
    /// before indexing a batch of changes.
    #[arg(long, default_value_t = 1000, requires = "watch")]
    debounce_ms: u64,
}

/// Store and embedder options shared by index, context and eval.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Store directory, or a shared store `postgres://user@host/db`
    /// (PostgreSQL with pgvector; add `?sslmode=require` for TLS and
    /// `&sslrootcert=FILE` for a private CA. This machine keeps a cache of it under
    /// ~/.cache/anectx/shared/; `index` publishes to it, after every run
    /// with --watch, and `context` catches up from it first). Env: ANECTX_STORE; config `store`; default ./.anectx
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Embedder: a model directory, a Hugging Face id in the local cache,
    /// `default` (the built-in embedder) or `none` (BM25-only).
    /// Env: ANECTX_MODEL; config `model`; default: the built-in embedder.
    #[arg(long, short)]
    pub model: Option<String>,
    /// Compute precision: f32 or f16. Env: ANECTX_DTYPE.
    #[arg(long)]
    pub dtype: Option<String>,
    /// The embedder's runtime: `auto` (on a Mac, the model exported to Core
    /// ML and run on the Neural Engine when it matches candle; candle
    /// elsewhere), `candle` or `coreml`. Env: ANECTX_BACKEND; config
    /// `backend`; default: auto.
    #[arg(long)]
    pub backend: Option<String>,
    /// Core ML compute units: cpu, gpu, ane (CPU + Neural Engine) or all.
    /// Default: ane.
    #[arg(long, value_parser = super::embed::parse_units)]
    pub units: Option<anectx_core::ComputeUnits>,
    /// Vector search: auto (exact below 20,000 vectors, else bits), exact,
    /// bits (a sign-bit scan keeps 1/128 of the rows, int8 codes narrow
    /// them, the rest are scored exactly), int8 (a full int8 scan's
    /// shortlist scored exactly) or hnsw (a graph walk's candidates scored
    /// exactly; the graph is saved beside the vectors). Env:
    /// ANECTX_VECTOR_SEARCH; config `vector_search`; default: auto.
    #[arg(long)]
    pub vector_search: Option<String>,
}

impl StoreArgs {
    /// --store > ANECTX_STORE > config `store` > ./.anectx; for a shared
    /// store (`postgres://…`), this machine's cache of it.
    pub fn store_dir(&self) -> Result<PathBuf> {
        let raw = self.raw_store()?;
        match super::shared::url(&raw) {
            Some(url) => super::shared::cache_dir(url),
            None => Ok(raw),
        }
    }

    /// The store as a user types it in a command this CLI suggests: a
    /// shared store's URL (never with its password), else the directory;
    /// quoted for the shell. A shared store's cache directory would work as
    /// a store too, but it would leave the shared store out.
    pub(crate) fn typed(&self) -> Result<String> {
        let raw = self.raw_store()?;
        let shown = match super::shared::url(&raw) {
            Some(url) => PathBuf::from(anectx_store_pg::redact(url)),
            None => raw,
        };
        Ok(super::quickstart::shell_word(&shown))
    }

    /// The store as resolved (CLI > env > config > default), before a
    /// shared store's URL is turned into its cache directory.
    pub(crate) fn raw_store(&self) -> Result<PathBuf> {
        Ok(crate::settings::Layers::get()?
            .store(self.store.as_deref())
            .value)
    }

    /// The shared store when `--store` (or its env/config layers) names
    /// one, connected and migrated; `None` for a local store.
    pub fn shared(&self) -> Result<Option<anectx_store_pg::PgStore>> {
        let raw = self.raw_store()?;
        super::shared::url(&raw)
            .map(super::shared::connect)
            .transpose()
    }

    /// The configured embedder for the store this command works on:
    /// --model > ANECTX_MODEL > config `model` > the store's own embedder >
    /// the built-in one; `none` means BM25-only.
    pub fn embedder(&self) -> Result<Option<Arc<dyn TextEmbedder>>> {
        let dir = self.store_dir()?;
        self.embedder_for(Some(&dir))
    }

    /// As [`StoreArgs::embedder`], for the store in `store` (`None`: a
    /// command that builds its own store, so only the settings count).
    pub fn embedder_for(
        &self,
        store: Option<&std::path::Path>,
    ) -> Result<Option<Arc<dyn TextEmbedder>>> {
        super::embedder::resolve_for_store(self.model.clone(), self.dtype.clone(), store)?
            .with_backend(self.backend.clone(), self.units)?
            .embedder()
    }
}

/// indicatif progress: one bar per stage, notes printed above it.
pub struct Bars {
    bar: Mutex<ProgressBar>,
    visible: bool,
}

impl Bars {
    pub fn new() -> Self {
        Self {
            bar: Mutex::new(ProgressBar::hidden()),
            visible: std::io::stderr().is_terminal(),
        }
    }
}

impl Progress for Bars {
    fn stage(&self, name: &str, total: Option<u64>) {
        let mut bar = self.bar.lock().unwrap_or_else(|p| p.into_inner());
        bar.finish_and_clear();
        *bar = if !self.visible {
            ProgressBar::hidden()
        } else if let Some(n) = total {
            let b = ProgressBar::new(n);
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix:>10} {bar:40} {pos}/{len} ({per_sec}, eta {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        } else {
            ProgressBar::new_spinner()
        };
        bar.set_prefix(name.to_string());
        bar.set_message(name.to_string());
    }
    fn inc(&self, n: u64) {
        self.bar.lock().unwrap_or_else(|p| p.into_inner()).inc(n);
    }
    fn note(&self, msg: &str) {
        let bar = self.bar.lock().unwrap_or_else(|p| p.into_inner());
        bar.suspend(|| eprintln!("note: {msg}"));
    }
    fn finish(&self) {
        self.bar
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .finish_and_clear();
    }
}

pub fn run(args: IndexArgs) -> Result<()> {
    let dir = args.store.store_dir()?;
    let embedder = args.store.embedder()?;
    if embedder.is_none() {
        eprintln!("note: --model none: indexing for BM25 only");
    }
    let shared = args.store.shared()?;
    super::shared::adopt(&dir, embedder.as_deref(), shared.as_ref())?;
    let engine = Engine::open(&dir, embedder)
        .with_context(|| format!("opening the store in {}", dir.display()))?;
    crate::settings::apply_vector_search(&engine, args.store.vector_search.clone())?;
    let opts = IndexOptions {
        chunk: ChunkConfig {
            max_tokens: args.chunk_tokens,
            overlap: args.overlap,
        },
        max_file_bytes: args.max_file_mb.saturating_mul(1 << 20),
        follow_links: args.follow_links,
        ..IndexOptions::default()
    };
    if args.watch {
        return super::watch::run(
            &engine,
            &args.paths,
            &opts,
            std::time::Duration::from_millis(args.debounce_ms),
            if args.json {
                super::watch::Report::Json
            } else {
                super::watch::Report::Text
            },
            &Bars::new(),
            shared.as_ref(),
        );
    }
    let report = engine.index(&args.paths, &opts, &Bars::new())?;
    let published = match &shared {
        Some(pg) => Some(super::shared::publish_and_sync(&engine, pg, &args.paths)?),
        None => None,
    };
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        if let (Some(p), Some(o)) = (&published, v.as_object_mut()) {
            o.insert("shared".into(), serde_json::to_value(p)?);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{}: {} files seen, {} indexed, {} unchanged, {} removed, {} skipped; \
             {} chunks added ({} embedded); store holds {} documents, {} chunks ({:.1}s, {:.0} chunks/s)",
            dir.display(),
            report.files_seen,
            report.files_indexed,
            report.files_unchanged,
            report.files_removed,
            report.files_skipped,
            report.chunks_added,
            report.chunks_embedded,
            report.documents_total,
            report.chunks_total,
            report.seconds,
            report.chunks_lexed.max(report.chunks_embedded) as f64 / report.seconds.max(1e-9),
        );
        print_details(&report);
        if let (Some(p), Some(pg)) = (&published, &shared) {
            println!("{}", super::shared::describe(pg, p));
        }
    }
    Ok(())
}

/// The files read by kind, pages, and the skipped files grouped by reason.
fn print_details(report: &anectx_engine::IndexReport) {
    if !report.files_read_by_kind.is_empty() {
        let kinds: Vec<String> = report
            .files_read_by_kind
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        println!("read: {}", kinds.join(", "));
    }
    if report.pages_indexed + report.pages_skipped > 0 {
        println!(
            "pages: {} with text indexed, {} without text skipped (see notes)",
            report.pages_indexed, report.pages_skipped
        );
    }
    if !report.skipped.is_empty() {
        let mut by_reason: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for s in &report.skipped {
            by_reason.entry(&s.reason).or_default().push(&s.path);
        }
        println!("skipped {} files:", report.skipped.len());
        for (reason, paths) in by_reason {
            let shown: Vec<&str> = paths.iter().take(3).copied().collect();
            let more = if paths.len() > 3 {
                format!(" and {} more", paths.len() - 3)
            } else {
                String::new()
            };
            println!("  {} × {reason}: {}{more}", paths.len(), shown.join(", "));
        }
    }
}
