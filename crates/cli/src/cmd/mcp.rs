//! `anectx mcp`: the MCP server over stdio, for Claude Desktop, Cursor, VS
//! Code, Zed and other MCP clients.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anectx_core::BackendError;
use anectx_serve::{BatcherConfig, ContextService, Metrics, RelevanceReloader};
use anyhow::{Context, Result};
use clap::Args;

/// Serve the store to an MCP client (Claude Desktop, Cursor, VS Code, Zed)
/// over stdio.
///
/// The protocol is newline-delimited JSON-RPC on stdin/stdout; logs go to
/// stderr.
///
/// Tools: `search` (query, k, filters → id, path, page, snippet, score),
/// `fetch` (id → the chunk's text), `context` (query, budget, filters →
/// packed context with [n] sources; logged for learning like /v1/context)
/// and `index_status`. `filters` is `{path: glob, kind: [..],
/// modified_after, modified_before}`, applied inside retrieval.
///
/// MCP clients often start servers in `/`, so the store is never looked up
/// in the working directory alone: --store, ANECTX_STORE, the config file's
/// `store`, then ./.anectx, then the per-user data directory
/// ($XDG_DATA_HOME/anectx or ~/.local/share/anectx). Give an absolute path.
/// `anectx serve` answers the same tools over HTTP at /mcp.
#[derive(Debug, Args)]
pub struct McpArgs {
    /// Store directory (absolute; see above for the lookup order).
    /// Env: ANECTX_STORE; config `store`.
    #[arg(long)]
    store: Option<PathBuf>,
    /// Embedder (default: the store's own). Env: ANECTX_MODEL.
    #[arg(long, short)]
    model: Option<String>,
    /// Compute precision: f32 or f16. Env: ANECTX_DTYPE.
    #[arg(long)]
    dtype: Option<String>,
    /// Relevance-model registry (default: <store>/registry); its current
    /// version serves and is swapped in when it changes.
    #[arg(long)]
    registry: Option<PathBuf>,
    /// Default token budget of the `context` tool.
    #[arg(long, default_value_t = 1500)]
    context_budget: usize,
    /// Do not log `context` calls in the store's interaction log.
    #[arg(long)]
    no_log: bool,
    /// Do not use the usage memory (rebuilt from the log by default).
    #[arg(long)]
    no_memory: bool,
    /// Seconds between checks of the registry for a new relevance model
    /// (0 = never).
    #[arg(long, default_value_t = 2.0)]
    relevance_poll_secs: f64,
}

/// The per-user data directory's store: `$XDG_DATA_HOME/anectx`, else
/// `~/.local/share/anectx` (`~/Library/Application Support/anectx` on macOS).
pub fn user_data_store() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join("anectx"));
    }
    let home = PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?);
    Some(if cfg!(target_os = "macos") {
        home.join("Library/Application Support/anectx")
    } else {
        home.join(".local/share/anectx")
    })
}

/// The store for a server a client starts (the working directory may be
/// `/`): a named one (made absolute), else ./.anectx when it holds a store,
/// else the per-user data directory's.
pub fn resolve_store(cli: Option<&Path>) -> Result<PathBuf> {
    let setting = crate::settings::Layers::get()?.store(cli);
    let cwd = std::env::current_dir().context("reading the working directory")?;
    if setting.explicit() {
        let dir = cwd.join(&setting.value);
        anyhow::ensure!(
            anectx_engine::Store::exists(&dir),
            "no store in {} (from {}): index your documents first with `anectx index <path> \
             --store {}`",
            dir.display(),
            setting.origin(),
            dir.display()
        );
        return Ok(dir);
    }
    let local = cwd.join(&setting.value);
    if anectx_engine::Store::exists(&local) {
        return Ok(local);
    }
    let user = user_data_store();
    if let Some(u) = user.as_ref().filter(|u| anectx_engine::Store::exists(u)) {
        return Ok(u.clone());
    }
    let suggestion = user.as_ref().map_or_else(
        || "/ABSOLUTE/STORE".to_string(),
        |u| u.display().to_string(),
    );
    anyhow::bail!(
        "no store found: not in {} (the working directory) nor in {}. Index your documents with \
         `anectx index <path> --store {suggestion}`, or give --store / ANECTX_STORE",
        local.display(),
        user.map_or_else(
            || "a per-user data directory (no HOME)".into(),
            |u| u.display().to_string()
        ),
    )
}

pub fn run(args: McpArgs) -> Result<()> {
    if !args.relevance_poll_secs.is_finite() || args.relevance_poll_secs < 0.0 {
        anyhow::bail!("--relevance-poll-secs must be 0 or more");
    }
    let store_dir = resolve_store(args.store.as_deref())?;
    let resolved = super::embedder::resolve_for_store(
        args.model.clone(),
        args.dtype.clone(),
        Some(&store_dir),
    )?;
    let choice = resolved
        .model
        .clone()
        .context("`anectx mcp` needs an embedder (`--model none` is for BM25-only commands)")?;
    // The runtime from ANECTX_BACKEND / config `backend` (default auto).
    let prepared = choice.prepare(resolved.dtype, resolved.backend, resolved.units)?;
    let (backend, tokenizer, info, legacy) = (
        prepared.backend,
        prepared.tokenizer,
        prepared.info,
        prepared.legacy,
    );
    let metrics = Arc::new(Metrics::new());
    let batcher = anectx_serve::Batcher::spawn(
        move || Ok(backend),
        BatcherConfig::default(),
        metrics.clone(),
    )
    .map_err(|e: BackendError| anyhow::anyhow!("starting the backend: {e}"))?;
    let context = super::serve::engine_context(
        &store_dir,
        &batcher,
        &tokenizer,
        (info, legacy),
        0.0,
        None,
        None,
    )?;
    let engine = context.engine().clone();
    let source = super::serve::registry_source(
        &store_dir,
        args.registry.as_ref(),
        (!args.no_memory).then(|| engine.clone()),
    )?;
    let poll = std::time::Duration::from_secs_f64(args.relevance_poll_secs);
    let reloader = Arc::new(RelevanceReloader::new(engine, source, poll, metrics));
    if let Err(e) = reloader.reload(false) {
        tracing::warn!("{e}");
    }
    let mut service = ContextService::new(args.context_budget.max(1)).with_provider(Some(context));
    if !args.no_log {
        service = service.with_recorder(Arc::new(super::serve::recorder(&store_dir, "full")?));
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("anectx-mcp")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let _poll = anectx_serve::reload::spawn_polling(reloader);
        // stdout carries the protocol only.
        eprintln!(
            "anectx mcp: store {} over stdio (tools: search, fetch, context, index_status{})",
            store_dir.display(),
            if args.no_log {
                ""
            } else {
                "; context calls are logged"
            }
        );
        anectx_mcp::serve_stdio(Arc::new(service)).await?;
        Ok::<(), anyhow::Error>(())
    })
}
