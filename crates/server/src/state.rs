//! The server's shared state, its configuration and the JSON extractor.

use std::sync::Arc;
use std::time::Duration;

use anectx_models::TextTokenizer;
use anectx_serve::{ContextService, EmbedService, EngineContext, ServeError};
use axum::extract::{FromRequest, Request};
use axum::Json;

use crate::batcher::Batcher;
use crate::context::{
    ContextProvider, ContextRequest, ContextResult, InteractionRecorder, NoopRecorder,
};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::reload::{RelevanceReloader, RelevanceSource};

#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// Base URL of an OpenAI-compatible API, as given to an OpenAI client's
    /// `base_url` (e.g. `http://127.0.0.1:11434/v1`); the proxy posts to
    /// `{base_url}/chat/completions`.
    pub base_url: String,
    /// Bearer key for the upstream. Without it, the client's own
    /// `Authorization` header is forwarded only when anectx has no API key.
    pub api_key: Option<String>,
    /// Longest wait for the upstream's response headers (504 after it).
    pub first_byte_timeout: Duration,
    /// Longest wait for a whole non-streamed answer (504 after it).
    pub total_timeout: Duration,
    /// Largest non-streamed answer body in bytes (502 above).
    pub max_body_bytes: usize,
    /// Longest line of a streamed (SSE) answer in bytes; past it the stream
    /// ends with an error event.
    pub max_sse_line_bytes: usize,
    /// Largest streamed answer in bytes in all; past it the stream ends with
    /// an error event.
    pub max_stream_bytes: usize,
    /// Longest silence between two chunks of a streamed answer; past it the
    /// stream ends with an error event.
    pub idle_timeout: Duration,
}

impl LlmConfig {
    /// An upstream at `base_url` with the default timeouts (first byte
    /// 120 s, whole answer 600 s, silence in a stream 120 s) and caps (body
    /// 16 MiB, SSE line 1 MiB, stream 64 MiB).
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            first_byte_timeout: Duration::from_secs(120),
            total_timeout: Duration::from_secs(600),
            max_body_bytes: 16 << 20,
            max_sse_line_bytes: 1 << 20,
            max_stream_bytes: 64 << 20,
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// Everything the HTTP layer needs to know, resolved by the caller.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The name clients pass as `model` and that `/v1/models` lists.
    pub model_id: String,
    /// Other names listed by `/v1/models` (e.g. `text-embedding-3-small`
    /// for unchanged clients).
    pub model_aliases: Vec<String>,
    /// Refuse (404) a `model` name that is neither the id, an alias nor the
    /// classifier. Off by default: as TEI does, any name is answered by the
    /// served model and the response names the real one.
    pub strict_model: bool,
    /// The model's kind (`bert`, `conv_embedder`, …), for `/info`.
    pub model_kind: String,
    /// A content hash of the weights, for `/info` and `anectx_model_info`.
    pub model_version: String,
    /// The relevance classifier's name, when one is loaded.
    pub classifier_id: Option<String>,
    /// Which backend runs the embedder and why (`--backend auto`'s
    /// decision), for `/info`.
    pub backend_choice: Option<anectx_core::BackendChoice>,
    /// Bearer key required on every route except `/health`.
    pub api_key: Option<String>,
    /// Token required on `/admin/*` in the `x-anectx-admin-token` header,
    /// even on loopback (`None`: the admin routes are open).
    pub admin_token: Option<String>,
    /// Largest request body in bytes (413 above).
    pub payload_limit: usize,
    /// Most inputs in one embeddings request or documents in one rerank (413 above).
    pub max_client_batch: usize,
    /// Default context budget in tokens for `/v1/context` and the chat proxy.
    pub context_budget: usize,
    /// Requests handled at once; more are shed with 503 and `Retry-After`.
    pub max_inflight: usize,
    /// Longest time a request (other than the chat proxy) may take (503 after it).
    pub request_timeout: Duration,
    pub llm: Option<LlmConfig>,
}

impl ServerConfig {
    /// Defaults for a model called `model_id`.
    pub fn new(model_id: impl Into<String>) -> Self {
        Self {
            model_id: model_id.into(),
            model_aliases: Vec::new(),
            strict_model: false,
            model_kind: String::new(),
            model_version: String::new(),
            classifier_id: None,
            backend_choice: None,
            api_key: None,
            admin_token: None,
            payload_limit: 2 * 1024 * 1024,
            max_client_batch: 512,
            context_budget: 1500,
            max_inflight: 256,
            request_timeout: Duration::from_secs(120),
            llm: None,
        }
    }

    pub(crate) fn serves(&self, model: &str) -> bool {
        model == self.model_id
            || self.model_aliases.iter().any(|a| a == model)
            || self.classifier_id.as_deref() == Some(model)
    }
}

/// The server's shared state (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: ServerConfig,
    pub embed: EmbedService,
    /// Context selection, search and the interaction log (shared with MCP).
    pub context: Arc<ContextService>,
    pub metrics: Arc<Metrics>,
    pub http: reqwest::Client,
    pub start_ms: u64,
    /// Ends `/mcp` sessions at shutdown.
    pub mcp_cancel: anectx_mcp::CancellationToken,
    pub inflight: Arc<tokio::sync::Semaphore>,
    pub engine: Option<Arc<anectx_engine::Engine>>,
    pub reloader: Option<Arc<RelevanceReloader>>,
}

/// Builds an [`AppState`].
pub struct AppStateBuilder {
    config: ServerConfig,
    batcher: Batcher,
    tokenizer: Arc<TextTokenizer>,
    score_tokenizer: Option<Arc<TextTokenizer>>,
    context: Option<Arc<dyn ContextProvider>>,
    recorder: Arc<dyn InteractionRecorder>,
    metrics: Arc<Metrics>,
    engine: Option<Arc<anectx_engine::Engine>>,
    relevance_source: Option<Arc<dyn RelevanceSource>>,
    relevance_poll: Duration,
}

/// Default interval between polls of the relevance source's stamp.
pub const DEFAULT_RELEVANCE_POLL: Duration = Duration::from_secs(2);

impl AppStateBuilder {
    /// Uses the relevance classifier (loaded in the backend) for `/v1/rerank`,
    /// with its tokenizer for (query, document) pairs.
    pub fn classifier_tokenizer(mut self, tok: TextTokenizer) -> Self {
        self.score_tokenizer = Some(Arc::new(tok));
        self
    }

    pub fn context_provider(mut self, p: Arc<dyn ContextProvider>) -> Self {
        self.context = Some(p);
        self
    }

    pub fn recorder(mut self, r: Arc<dyn InteractionRecorder>) -> Self {
        self.recorder = r;
        self
    }

    /// Uses the engine for `/v1/context` and the chat proxy, and makes its
    /// relevance model the one that [`AppStateBuilder::relevance_source`]
    /// swaps and `/info` reports.
    pub fn engine_context(mut self, c: Arc<EngineContext>) -> Self {
        self.engine = Some(c.engine().clone());
        self.context = Some(c);
        self
    }

    /// Hot swap: loads the source's current relevance model when the state
    /// is built, again on `POST /admin/reload`, and whenever a poll of its
    /// stamp sees a change. Needs [`AppStateBuilder::engine_context`].
    pub fn relevance_source(mut self, s: Arc<dyn RelevanceSource>) -> Self {
        self.relevance_source = Some(s);
        self
    }

    /// Interval between polls of the relevance source's stamp (default 2 s;
    /// zero disables polling, `/admin/reload` still works).
    pub fn relevance_poll(mut self, every: Duration) -> Self {
        self.relevance_poll = every;
        self
    }

    pub fn build(self) -> Result<AppState, crate::ServerError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| crate::ServerError::Client(e.to_string()))?;
        let info = self.batcher.info();
        self.metrics.set_model_info(vec![
            ("model".into(), self.config.model_id.clone()),
            ("kind".into(), self.config.model_kind.clone()),
            ("backend".into(), info.name.clone()),
            ("version".into(), self.config.model_version.clone()),
            (
                "classifier".into(),
                self.config.classifier_id.clone().unwrap_or_default(),
            ),
            ("server_version".into(), env!("CARGO_PKG_VERSION").into()),
        ]);
        if let Some(e) = &self.engine {
            self.metrics
                .set_relevance_version(&e.relevance_model().version());
        }
        let reloader = match (self.relevance_source, &self.engine) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(crate::ServerError::Config(
                    "a relevance source needs the engine: build the state with engine_context"
                        .into(),
                ))
            }
            (Some(src), Some(engine)) => {
                let r = Arc::new(RelevanceReloader::new(
                    engine.clone(),
                    src,
                    self.relevance_poll,
                    self.metrics.clone(),
                ));
                // The source's current version serves from the start; if it
                // cannot load, the engine's model keeps serving.
                if let Err(e) = r.reload(false) {
                    tracing::warn!("{e}");
                }
                Some(r)
            }
        };
        let max_inflight = self.config.max_inflight.max(1);
        let embed = EmbedService::new(self.batcher, self.tokenizer)
            .with_score_tokenizer(self.score_tokenizer)
            .with_metrics(self.metrics.clone());
        let context = ContextService::new(self.config.context_budget)
            .with_provider(self.context)
            .with_recorder(self.recorder);
        Ok(AppState {
            inner: Arc::new(Inner {
                config: self.config,
                embed,
                context: Arc::new(context),
                metrics: self.metrics,
                http,
                start_ms: now_ms(),
                mcp_cancel: anectx_mcp::CancellationToken::new(),
                inflight: Arc::new(tokio::sync::Semaphore::new(max_inflight)),
                engine: self.engine,
                reloader,
            }),
        })
    }
}

impl AppState {
    /// Starts building state around a running [`Batcher`] whose backend has
    /// an embedder, and the embedder's tokenizer. `metrics` must be the one
    /// the batcher was spawned with.
    pub fn builder(
        config: ServerConfig,
        batcher: Batcher,
        tokenizer: TextTokenizer,
        metrics: Arc<Metrics>,
    ) -> AppStateBuilder {
        AppStateBuilder {
            config,
            batcher,
            tokenizer: Arc::new(tokenizer),
            score_tokenizer: None,
            context: None,
            recorder: Arc::new(NoopRecorder),
            metrics,
            engine: None,
            relevance_source: None,
            relevance_poll: DEFAULT_RELEVANCE_POLL,
        }
    }

    /// The hot-swap reloader, when a relevance source is configured.
    pub fn reloader(&self) -> Option<&Arc<RelevanceReloader>> {
        self.inner.reloader.as_ref()
    }

    /// Starts background work (the relevance-source poll) on the current
    /// tokio runtime; [`crate::serve`] calls it. Abort the handle to stop.
    pub fn spawn_background(&self) -> Option<tokio::task::JoinHandle<()>> {
        anectx_serve::reload::spawn_polling(self.inner.reloader.clone()?)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub fn batcher(&self) -> &Batcher {
        self.inner.embed.batcher()
    }

    /// Requests being handled now (those counted by `--max-inflight`).
    pub fn in_flight(&self) -> usize {
        self.inner.config.max_inflight.max(1) - self.inner.inflight.available_permits()
    }

    /// The embedding service every route shares.
    pub fn embed_service(&self) -> &EmbedService {
        &self.inner.embed
    }

    /// The context service every route (and MCP) shares.
    pub fn context_service(&self) -> &Arc<ContextService> {
        &self.inner.context
    }

    /// Selects context (not recorded) with the server's error wording.
    pub(crate) async fn select_context(
        &self,
        request: ContextRequest,
    ) -> Result<ContextResult, ApiError> {
        self.inner
            .context
            .select(request)
            .await
            .map_err(context_error)
    }
}

/// A context service error as the API shows it: an unnamed bad input is the
/// query, an internal failure says it was the selection.
pub(crate) fn context_error(e: ServeError) -> ApiError {
    match e {
        ServeError::Invalid { param, message } => {
            ApiError::invalid(message).with_param(param.unwrap_or("query"))
        }
        ServeError::Internal(e) => ApiError::internal(format!("context selection failed: {e}")),
        other => other.into(),
    }
}

pub(crate) use anectx_serve::service::now_ms;

/// A JSON body whose rejections become [`ApiError`]s (400 syntax, 422 types,
/// 413 size or too many items in a bounded list, 415 content type) in the
/// OpenAI error shape. Bounded list fields count their items against
/// `--max-client-batch` while the body is parsed.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    AppState: axum::extract::FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let app = <AppState as axum::extract::FromRef<S>>::from_ref(state);
        let max = app.inner.config.max_client_batch.max(1);
        let (r, refusal) = crate::body::Scope::run(max, Json::<T>::from_request(req, state)).await;
        match (r, refusal) {
            (Ok(Json(v)), _) => Ok(Self(v)),
            (Err(_), Some(e)) => Err(e),
            (Err(e), None) => Err(e.into()),
        }
    }
}
