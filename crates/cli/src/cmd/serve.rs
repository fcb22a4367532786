//! `anectx serve`: the HTTP server (embeddings, rerank, context, chat proxy).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anectx_core::{Backend, BackendError, PairedBackend};
use anectx_engine::{ContextOptions, Engine};
use anectx_models::{load_classifier, CandleBackend};
use anectx_server::{
    AppState, BatcherConfig, BatcherEmbedder, EngineContext, LlmConfig, Metrics, ServerConfig,
    SqliteRecorder,
};
use anectx_store::Durability;
use anyhow::{Context, Result};
use clap::Args;

/// Serve OpenAI-compatible embeddings, Cohere-style rerank, context
/// selection and a context-injecting chat proxy over HTTP.
///
/// Binds 127.0.0.1 by default; binding any other address requires --api-key.
/// With --port 0 an ephemeral port is chosen; the first line on stdout is
/// always `anectx listening on http://ADDR`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Relevance-model registry (default: <store>/registry). The current
    /// version serves and is swapped in when it changes.
    #[arg(long)]
    registry: Option<PathBuf>,
    /// Embedder: a model directory (or Hugging Face id in the local cache)
    /// or `default` (the built-in embedder). Env: ANECTX_MODEL; config
    /// `model`; default: the store's own embedder, else the built-in one.
    #[arg(long, short)]
    model: Option<String>,
    /// Compute precision: f32 or f16. Env: ANECTX_DTYPE.
    #[arg(long)]
    dtype: Option<String>,
    /// The embedder's runtime: `auto` (on a Mac, the model exported to Core
    /// ML and run on the Neural Engine when it matches candle; candle
    /// elsewhere), `candle` or `coreml`. Env: ANECTX_BACKEND; config
    /// `backend`; default: auto. `/info` shows the decision.
    #[arg(long)]
    backend: Option<String>,
    /// Core ML compute units: cpu, gpu, ane (CPU + Neural Engine) or all.
    /// Default: ane.
    #[arg(long, value_parser = super::embed::parse_units)]
    units: Option<anectx_core::ComputeUnits>,
    /// Relevance classifier directory; /v1/rerank uses it when given,
    /// otherwise the embedder's cosine similarity mapped to [0, 1].
    #[arg(long)]
    classifier: Option<String>,
    /// Context store for /v1/context and the chat proxy (see `anectx index`),
    /// or a shared store `postgres://user@host/db`: this replica then serves
    /// from its cache of it, catches up when another replica publishes
    /// (LISTEN/NOTIFY, else every --shared-poll-secs), and writes every
    /// interaction to the shared log before acknowledging it.
    /// Env: ANECTX_STORE; config `store`; default ./.anectx when it exists.
    #[arg(long)]
    store: Option<PathBuf>,
    /// With a shared store: most seconds between catch-ups when no change
    /// notification arrives.
    #[arg(long, default_value_t = 2.0)]
    shared_poll_secs: f64,
    /// Vector search over the store: auto (exact below 20,000 vectors, else
    /// bits), exact, bits, int8 or hnsw (see `anectx index --help`). Env:
    /// ANECTX_VECTOR_SEARCH; config `vector_search`; default: auto.
    #[arg(long)]
    vector_search: Option<String>,
    /// Address to bind. Anything but loopback requires --api-key.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to bind; 0 picks a free one. Env: ANECTX_PORT.
    #[arg(long, env = "ANECTX_PORT", default_value_t = 8181)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on every route but /health.
    #[arg(long, env = "ANECTX_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Upstream OpenAI-compatible LLM base URL for /v1/chat/completions,
    /// e.g. http://127.0.0.1:11434/v1 (requests go to URL/chat/completions).
    #[arg(long, env = "ANECTX_LLM_URL")]
    llm: Option<String>,
    /// Seconds to wait for the upstream LLM's first response byte (504 after).
    #[arg(long, default_value_t = 120.0)]
    llm_first_byte_secs: f64,
    /// Seconds to wait for a whole non-streamed upstream answer (504 after).
    #[arg(long, default_value_t = 600.0)]
    llm_total_secs: f64,
    /// Seconds a streamed upstream answer may stay silent between chunks
    /// (the stream then ends with an error event).
    #[arg(long, default_value_t = 120.0)]
    llm_idle_secs: f64,
    /// Largest non-streamed upstream answer in MiB (502 above).
    #[arg(long, default_value_t = 16)]
    llm_max_body_mb: usize,
    /// Longest line of a streamed (SSE) upstream answer in MiB.
    #[arg(long, default_value_t = 1)]
    llm_max_sse_line_mb: usize,
    /// Largest streamed upstream answer in MiB in all.
    #[arg(long, default_value_t = 64)]
    llm_max_stream_mb: usize,
    /// Bearer key sent to the upstream LLM.
    #[arg(long, env = "ANECTX_LLM_API_KEY", hide_env_values = true)]
    llm_api_key: Option<String>,
    /// Name clients use as `model` (default: the model directory's name).
    #[arg(long)]
    model_id: Option<String>,
    /// Other names listed by /v1/models (repeatable), e.g.
    /// text-embedding-3-small. Any `model` name is accepted and answered by
    /// the served model (as TEI does) unless --strict-model is given.
    #[arg(long = "model-alias")]
    model_aliases: Vec<String>,
    /// Answer 404 to a `model` name that is neither the model id nor an alias.
    #[arg(long)]
    strict_model: bool,
    /// Default token budget of /v1/context and the chat proxy.
    #[arg(long, default_value_t = 1500)]
    context_budget: usize,
    /// Largest request body in MiB (413 above).
    #[arg(long, default_value_t = 2)]
    payload_limit_mb: usize,
    /// Most inputs (or rerank documents) per request (413 above).
    #[arg(long, default_value_t = 512)]
    max_client_batch: usize,
    /// Rows per merged backend batch.
    #[arg(long, default_value_t = 64)]
    max_batch_rows: usize,
    /// Padded tokens per merged backend batch.
    #[arg(long, default_value_t = 16_384)]
    max_batch_tokens: usize,
    /// Requests admitted at once (queued or running); more get 429.
    #[arg(long, default_value_t = 512)]
    max_queue_requests: usize,
    /// Padded tokens admitted at once; more get 429.
    #[arg(long, default_value_t = 262_144)]
    max_queue_tokens: usize,
    /// Do not record interactions in the store's interaction log (by default
    /// every /v1/context and chat-proxy call is logged when a store is served).
    #[arg(long)]
    no_log: bool,
    /// How interaction-log commits are flushed: `normal` survives a crash of
    /// the server process, `full` (fsync per commit group) also power loss.
    /// With a shared store, `normal` also lets the shared log's commits
    /// return before PostgreSQL flushes them (they survive this server's
    /// crash, not a crash of PostgreSQL's machine).
    #[arg(long, default_value = "full", value_parser = ["normal", "full"])]
    log_sync: String,
    /// Share of /v1/context and chat calls that explore (0..=1): one shown
    /// chunk is swapped for a runner-up and the order shuffled, with the
    /// propensities logged, so the learning loop sees chunks the current
    /// model ranks low.
    #[arg(long, default_value_t = 0.0)]
    explore: f32,
    /// Do not use the usage memory (by default it is rebuilt from the
    /// interaction log at start and at every relevance-model reload, so
    /// questions asked again get the chunks their earlier answers used).
    #[arg(long)]
    no_memory: bool,
    /// Seconds between polls of the relevance-model source (0 = never; POST
    /// /admin/reload still reloads).
    #[arg(long, default_value_t = 2.0)]
    relevance_poll_secs: f64,
    /// Requests handled at once; past it, requests get 503 with Retry-After
    /// (load shedding; /health and /metrics always answer).
    #[arg(long, default_value_t = 256)]
    max_inflight: usize,
    /// Seconds a request may take before it is answered 503 (not the chat
    /// proxy, which has --llm-first-byte-secs and --llm-total-secs).
    #[arg(long, default_value_t = 120.0)]
    request_timeout_secs: f64,
    /// Connections open at once; more wait to be accepted.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Seconds a client may take to send its request headers.
    #[arg(long, default_value_t = 10.0)]
    header_timeout_secs: f64,
    /// Keep the served store up to date with these folders while serving
    /// (as `anectx index --watch`: a full reconcile at start, then debounced
    /// file changes; reports go to stderr). Creates the store if needed.
    #[arg(long, num_args = 1.., value_name = "PATH")]
    watch: Vec<PathBuf>,
    /// With --watch: milliseconds without new events before a batch is indexed.
    #[arg(long, default_value_t = 1000)]
    debounce_ms: u64,
    /// Seconds in-flight requests get to finish after Ctrl-C or SIGTERM.
    #[arg(long, default_value_t = 30.0)]
    shutdown_grace_secs: f64,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let addr = SocketAddr::new(args.host, args.port);
    // Refuse an unsafe bind before loading anything.
    anectx_server::check_bind(&addr, args.api_key.as_deref())?;
    if args.max_batch_tokens < 512 {
        anyhow::bail!(
            "--max-batch-tokens must be at least 512 (one sequence of the longest bucket)"
        );
    }
    if !(0.0..=1.0).contains(&args.explore) {
        anyhow::bail!("--explore must be between 0 and 1, got {}", args.explore);
    }
    for (name, v) in [
        ("--llm-first-byte-secs", args.llm_first_byte_secs),
        ("--llm-total-secs", args.llm_total_secs),
        ("--llm-idle-secs", args.llm_idle_secs),
        ("--request-timeout-secs", args.request_timeout_secs),
        ("--header-timeout-secs", args.header_timeout_secs),
        ("--shutdown-grace-secs", args.shutdown_grace_secs),
    ] {
        if !v.is_finite() || v <= 0.0 || v > 86_400.0 {
            anyhow::bail!("{name} must be a number of seconds between 0 and 86400, got {v}");
        }
    }
    if !args.relevance_poll_secs.is_finite() || args.relevance_poll_secs < 0.0 {
        anyhow::bail!("--relevance-poll-secs must be 0 or more");
    }
    if !args.shared_poll_secs.is_finite() || args.shared_poll_secs <= 0.0 {
        anyhow::bail!("--shared-poll-secs must be more than 0");
    }
    // The store first: when no model is given, the store's own embedder serves.
    let store = crate::settings::Layers::get()?.store(args.store.as_deref());
    let explicit = store.explicit();
    let shared_url = super::shared::url(&store.value).map(str::to_string);
    let store_dir = match &shared_url {
        Some(url) => super::shared::cache_dir(url)?,
        None => store.value,
    };
    let shared = shared_url
        .as_deref()
        .map(super::shared::connect)
        .transpose()?;
    let resolved = super::embedder::resolve_for_store(
        args.model.clone(),
        args.dtype.clone(),
        Some(&store_dir),
    )?
    .with_backend(args.backend.clone(), args.units)?;
    let dtype = resolved.dtype;
    let choice = resolved
        .model
        .clone()
        .context("`anectx serve` needs an embedder (`--model none` is for BM25-only commands)")?;
    let prepared = choice.prepare(dtype, resolved.backend, resolved.units)?;
    let kind = prepared.kind.clone();
    let fingerprint = prepared.info.fingerprint.clone();
    let backend_choice = prepared.choice.clone();
    let (embed_backend, tokenizer, info, legacy) = (
        prepared.backend,
        prepared.tokenizer,
        prepared.info,
        prepared.legacy,
    );
    let (classifier, classifier_tok) = match &args.classifier {
        Some(spec) => {
            let cdir = anectx_models::io::resolve_model_dir(spec)?;
            let (c, t) = load_classifier(&cdir, dtype)
                .with_context(|| format!("loading the classifier from {}", cdir.display()))?;
            (Some((c, cdir)), Some(t))
        }
        None => (None, None),
    };
    let model_id = args.model_id.clone().unwrap_or_else(|| choice.name());
    let classifier_id = classifier
        .as_ref()
        .map(|(_, d)| super::embedder::ModelChoice::Dir(d.clone()).name());

    let metrics = Arc::new(Metrics::new());
    let classifier_model = classifier.map(|(c, _)| c);
    let batcher = anectx_server::Batcher::spawn(
        move || {
            Ok(match classifier_model {
                None => embed_backend,
                Some(c) => Box::new(PairedBackend {
                    embed: embed_backend,
                    score: Box::new(CandleBackend::new(None, Some(c))),
                }) as Box<dyn Backend>,
            })
        },
        BatcherConfig {
            max_batch_rows: args.max_batch_rows.max(1),
            max_batch_tokens: args.max_batch_tokens,
            max_queue_requests: args.max_queue_requests.max(1),
            max_queue_tokens: args.max_queue_tokens.max(args.max_batch_tokens),
        },
        metrics.clone(),
    )
    .map_err(|e: BackendError| anyhow::anyhow!("starting the backend: {e}"))?;

    for p in &args.watch {
        anyhow::ensure!(
            p.is_dir(),
            "--watch {}: not a folder (give the folders to keep indexed)",
            p.display()
        );
    }
    // The store is optional unless named explicitly (or watched into being).
    let context =
        if anectx_engine::Store::exists(&store_dir) || !args.watch.is_empty() || shared.is_some() {
            Some(engine_context(
                &store_dir,
                &batcher,
                &tokenizer,
                (info.clone(), legacy),
                args.explore,
                args.vector_search.clone(),
                shared.as_ref(),
            )?)
        } else if explicit {
            anyhow::bail!(
                "no store in {}: run `anectx index <path> --store {}` first",
                store_dir.display(),
                store_dir.display()
            );
        } else {
            tracing::info!(
                "no store in {}: /v1/context is off and the chat proxy forwards without context",
                store_dir.display()
            );
            None
        };

    let mut config = ServerConfig::new(model_id);
    config.model_aliases = args.model_aliases.clone();
    config.strict_model = args.strict_model;
    config.model_kind = kind;
    config.backend_choice = Some(backend_choice);
    config.model_version = fingerprint.chars().take(16).collect();
    config.classifier_id = classifier_id;
    config.api_key = args.api_key.clone().filter(|k| !k.trim().is_empty());
    let token_path = if anectx_engine::Store::exists(&store_dir) {
        store_dir.join(ADMIN_TOKEN_FILE)
    } else {
        user_config_dir()
            .context("no HOME or XDG_CONFIG_HOME to keep the admin token in")?
            .join(ADMIN_TOKEN_FILE)
    };
    config.admin_token = Some(
        admin_token(&token_path)
            .with_context(|| format!("reading or creating {}", token_path.display()))?,
    );
    config.payload_limit = args.payload_limit_mb.max(1) * 1024 * 1024;
    config.max_client_batch = args.max_client_batch.max(1);
    config.context_budget = args.context_budget.max(1);
    config.max_inflight = args.max_inflight.max(1);
    config.request_timeout = std::time::Duration::from_secs_f64(args.request_timeout_secs);
    config.llm = args.llm.clone().map(|base_url| LlmConfig {
        api_key: args.llm_api_key.clone(),
        first_byte_timeout: std::time::Duration::from_secs_f64(args.llm_first_byte_secs),
        total_timeout: std::time::Duration::from_secs_f64(args.llm_total_secs),
        idle_timeout: std::time::Duration::from_secs_f64(args.llm_idle_secs),
        max_body_bytes: args.llm_max_body_mb.clamp(1, 4096) << 20,
        max_sse_line_bytes: args.llm_max_sse_line_mb.clamp(1, 4096) << 20,
        max_stream_bytes: args.llm_max_stream_mb.clamp(1, 65536) << 20,
        ..LlmConfig::new(base_url)
    });
    if let (Some(pg), Some(c)) = (&shared, &context) {
        // A replica that starts empty rebuilds its cache here, with progress,
        // then takes the fleet's log (which names chunks by document, so
        // only once the documents are here).
        let r = c
            .engine()
            .sync_shared(pg, &super::index::Bars::new())
            .with_context(|| format!("catching up from {}", pg.target()))?;
        let pulled = super::shared::pull_log(c.engine(), pg)?;
        tracing::info!(
            "shared store {}: cache at change {} ({} documents taken), {} interactions taken \
             from the fleet's log",
            pg.target(),
            r.to,
            r.documents_written,
            pulled.pulled
        );
    }
    // With a shared store, the registry this replica serves from follows the
    // fleet's: at start (before the registry source loads it) and then in
    // the follower thread. A version's usage memory holds the chunk ids of
    // the machine that trained it, so the first load here rebuilds it from
    // this replica's log (see `anectx_learn::memory::load`).
    let shared_registry = match (&shared, &context) {
        (Some(pg), Some(_)) => {
            let registry = anectx_learn::Registry::open(&super::learn::registry_dir(
                &store_dir,
                args.registry.as_ref(),
            ))
            .context("opening the model registry")?;
            super::shared::follow_registry(pg, &registry)?;
            Some(registry)
        }
        _ => None,
    };
    let recorder = match (&context, args.no_log) {
        (Some(_), false) => {
            let r = match &shared_url {
                Some(url) => super::shared::mirrored_recorder(&store_dir, &args.log_sync, url)?,
                None => recorder(&store_dir, &args.log_sync)?,
            };
            Some(Arc::new(r.with_metrics(metrics.clone())))
        }
        _ => None,
    };
    if let (Some(pg), Some(c), Some(registry)) = (shared, &context, shared_registry) {
        super::shared::spawn_follower(
            pg,
            c.engine().clone(),
            registry,
            std::time::Duration::from_secs_f64(args.shared_poll_secs),
        )?;
    }
    let mut builder = AppState::builder(config, batcher, tokenizer, metrics)
        .relevance_poll(std::time::Duration::from_secs_f64(args.relevance_poll_secs));
    if let Some(t) = classifier_tok {
        builder = builder.classifier_tokenizer(t);
    }
    let mut watched = None;
    if let Some(c) = context {
        let c_engine = c.engine().clone();
        if !args.watch.is_empty() {
            watched = Some(c_engine.clone());
        }
        builder = builder.engine_context(c);
        // The relevance model comes from the store's model registry: loaded
        // now, and hot-swapped on promotion, rollback or POST /admin/reload.
        builder = builder.relevance_source(registry_source(
            &store_dir,
            args.registry.as_ref(),
            (!args.no_memory).then(|| c_engine.clone()),
        )?);
    }
    if let Some(r) = recorder {
        builder = builder.recorder(r);
    }
    let state = builder.build()?;
    if let Some(engine) = watched {
        let roots = args.watch.clone();
        let debounce = std::time::Duration::from_millis(args.debounce_ms.max(1));
        // With a shared store, the watched folders are published to it.
        let watch_pg = shared_url
            .as_deref()
            .map(super::shared::connect)
            .transpose()?;
        std::thread::Builder::new()
            .name("anectx-watch".into())
            .spawn(move || {
                let opts = anectx_engine::IndexOptions::default();
                if let Err(e) = super::watch::run(
                    &engine,
                    &roots,
                    &opts,
                    debounce,
                    super::watch::Report::Stderr,
                    &anectx_engine::NoProgress,
                    watch_pg.as_ref(),
                ) {
                    eprintln!("error: the folder watch stopped: {e:#}");
                }
            })
            .context("starting the folder watch")?;
    }
    let log_on = anectx_engine::Store::exists(&store_dir) && !args.no_log;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("anectx-http")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = anectx_server::bind(addr, args.api_key.as_deref()).await?;
        let bound = listener.local_addr()?;
        println!("anectx listening on http://{bound}");
        std::io::stdout().flush().ok();
        eprintln!(
            "anectx: model {} ({}) · embeddings, rerank{}{}{} · Ctrl-C to stop",
            choice.display(),
            resolved.source,
            if args.llm.is_some() {
                ", chat proxy"
            } else {
                ""
            },
            if anectx_engine::Store::exists(&store_dir) {
                ", context"
            } else {
                ""
            },
            if log_on { ", interaction log" } else { "" },
        );
        eprintln!(
            "anectx: admin routes need the token in {} (header x-anectx-admin-token)",
            token_path.display()
        );
        let limits = anectx_server::Limits {
            max_connections: args.max_connections.max(1),
            header_read_timeout: std::time::Duration::from_secs_f64(args.header_timeout_secs),
            shutdown_grace: std::time::Duration::from_secs_f64(args.shutdown_grace_secs),
        };
        anectx_server::serve_with(listener, state, limits, anectx_server::shutdown_signal())
            .await?;
        eprintln!("anectx: stopped");
        Ok::<(), anyhow::Error>(())
    })
}

/// The engine over the store at `store_dir`, embedding queries through the
/// served model's batcher, as the context provider of `serve` and `mcp`.
pub(crate) fn engine_context(
    store_dir: &std::path::Path,
    batcher: &anectx_server::Batcher,
    tokenizer: &anectx_models::TextTokenizer,
    (info, legacy): (anectx_store::EmbedderInfo, Vec<String>),
    explore: f32,
    vector_search: Option<String>,
    shared: Option<&anectx_store_pg::PgStore>,
) -> Result<Arc<EngineContext>> {
    let emb = BatcherEmbedder::new(
        anectx_server::EmbedService::new(batcher.clone(), Arc::new(tokenizer.clone())),
        info,
    )
    .with_legacy(legacy);
    super::shared::adopt(store_dir, Some(&emb), shared)?;
    let engine = Engine::open(store_dir, Some(Arc::new(emb)))
        .with_context(|| format!("opening the store in {}", store_dir.display()))?;
    crate::settings::apply_vector_search(&engine, vector_search)?;
    for n in engine.notes() {
        eprintln!("note: {n}");
    }
    Ok(Arc::new(EngineContext::new(
        Arc::new(engine),
        ContextOptions {
            explore,
            ..ContextOptions::default()
        },
        format!("store {}", store_dir.display()),
    )))
}

/// The log durability named by `--log-sync` (`normal` or `full`).
pub(crate) fn durability(sync: &str) -> Durability {
    if sync == "normal" {
        Durability::Normal
    } else {
        Durability::Full
    }
}

/// The store's interaction log as a recorder (`sync`: `normal` or `full`).
pub(crate) fn recorder(store_dir: &std::path::Path, sync: &str) -> Result<SqliteRecorder> {
    SqliteRecorder::open(store_dir, durability(sync))
        .with_context(|| format!("opening the interaction log in {}", store_dir.display()))
}

/// The relevance model from the store's registry, with the usage memory of
/// `memory` (when given) rebuilt at every load.
pub(crate) fn registry_source(
    store_dir: &std::path::Path,
    registry: Option<&PathBuf>,
    memory: Option<Arc<Engine>>,
) -> Result<Arc<anectx_server::RegistrySource>> {
    let registry = anectx_learn::Registry::open(&super::learn::registry_dir(store_dir, registry))
        .context("opening the model registry")?;
    Ok(Arc::new(anectx_server::RegistrySource::new(
        registry, memory,
    )))
}

/// The admin token's file name (in the served store, else in the user's
/// config directory).
const ADMIN_TOKEN_FILE: &str = "admin-token";

fn user_config_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|h| h.join(".config"))
        })
        .map(|d| d.join("anectx"))
}

/// Reads the admin token from `path`, or creates one there at first start:
/// 256 random bits as hex, in a file only its owner can read.
fn admin_token(path: &std::path::Path) -> Result<String> {
    use std::io::Read;
    if let Ok(t) = std::fs::read_to_string(path) {
        let t = t.trim().to_string();
        if t.len() >= 32 {
            return Ok(t);
        }
        anyhow::bail!(
            "{} holds no valid admin token (delete it to make a new one)",
            path.display()
        );
    }
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_admin_token_is_created_once_private_and_reread() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join(super::ADMIN_TOKEN_FILE);
        let a = super::admin_token(&p).unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(super::admin_token(&p).unwrap(), a);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let other = tempfile::tempdir().unwrap();
        let q = other.path().join(super::ADMIN_TOKEN_FILE);
        assert_ne!(super::admin_token(&q).unwrap(), a);
        std::fs::write(&q, "short").unwrap();
        assert!(super::admin_token(&q).is_err());
    }
}
