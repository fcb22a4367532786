//! Shared state, the router and the non-chat handlers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anectx_core::Embeddings;
use anectx_models::TextTokenizer;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use anectx_serve::{CallTimings, EmbedService, ServeError};

use crate::batcher::Batcher;
use crate::context::{
    ContextProvider, ContextRequest, ContextResult, Interaction, InteractionKind,
    InteractionRecorder, NoopRecorder,
};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::reload::{RelevanceReloader, RelevanceSource};
use anectx_serve::EngineContext;

/// Where the chat proxy sends requests.
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
}

impl LlmConfig {
    /// An upstream at `base_url` with the default timeouts (first byte
    /// 120 s, whole answer 600 s).
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            first_byte_timeout: Duration::from_secs(120),
            total_timeout: Duration::from_secs(600),
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
            api_key: None,
            admin_token: None,
            payload_limit: 2 * 1024 * 1024,
            max_client_batch: 512,
            context_budget: 1500,
            llm: None,
        }
    }

    fn serves(&self, model: &str) -> bool {
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
    pub context: Option<Arc<dyn ContextProvider>>,
    pub recorder: Arc<dyn InteractionRecorder>,
    pub metrics: Arc<Metrics>,
    pub http: reqwest::Client,
    pub start_ms: u64,
    pub pid: u32,
    pub counter: AtomicU64,
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
        let embed = EmbedService::new(self.batcher, self.tokenizer)
            .with_score_tokenizer(self.score_tokenizer)
            .with_metrics(self.metrics.clone());
        Ok(AppState {
            inner: Arc::new(Inner {
                config: self.config,
                embed,
                context: self.context,
                recorder: self.recorder,
                metrics: self.metrics,
                http,
                start_ms: now_ms(),
                pid: std::process::id(),
                counter: AtomicU64::new(0),
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
        let r = self.inner.reloader.clone()?;
        let every = r.poll_interval();
        if every.is_zero() {
            return None;
        }
        Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let r = r.clone();
                // Errors are counted and logged by the reloader.
                let _ = tokio::task::spawn_blocking(move || r.reload(false)).await;
            }
        }))
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub fn batcher(&self) -> &Batcher {
        self.inner.embed.batcher()
    }

    /// The embedding service every route shares.
    pub fn embed_service(&self) -> &EmbedService {
        &self.inner.embed
    }

    pub(crate) fn next_interaction_id(&self) -> String {
        let n = self.inner.counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{}-{n}", self.inner.start_ms, self.inner.pid)
    }

    /// Whether this server process handed out the interaction id `id`.
    pub(crate) fn issued_here(&self, id: &str) -> bool {
        let prefix = format!("{}-{}-", self.inner.start_ms, self.inner.pid);
        id.strip_prefix(&prefix)
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n < self.inner.counter.load(Ordering::Relaxed))
    }

    /// Records an interaction on the blocking pool and waits for the
    /// recorder: `true` when it is stored (for the SQLite log: committed).
    pub(crate) async fn record_and_wait(&self, interaction: Interaction) -> bool {
        let recorder = self.inner.recorder.clone();
        if !recorder.enabled() {
            return false;
        }
        match tokio::task::spawn_blocking(move || recorder.record(interaction)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!("{e}");
                false
            }
            Err(e) => {
                tracing::warn!("the recorder task failed: {e}");
                false
            }
        }
    }

    /// Hands an interaction to the recorder on the blocking pool; failures are logged.
    pub(crate) fn record(&self, interaction: Interaction) {
        let recorder = self.inner.recorder.clone();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            if let Err(e) = recorder.record(interaction) {
                tracing::warn!("{e}");
            }
            return;
        };
        handle.spawn_blocking(move || {
            if let Err(e) = recorder.record(interaction) {
                tracing::warn!("{e}");
            }
        });
    }

    /// Runs the context provider on the blocking pool.
    pub(crate) async fn select_context(
        &self,
        request: ContextRequest,
    ) -> Result<ContextResult, ApiError> {
        let Some(provider) = self.inner.context.clone() else {
            return Err(ApiError::unavailable(
                "no context store is configured: start the server with --store DIR",
            ));
        };
        tokio::task::spawn_blocking(move || provider.context(&request))
            .await
            .map_err(|e| ApiError::internal(format!("the context task failed: {e}")))?
            .map_err(|e| match e {
                ServeError::Invalid { param, message } => {
                    ApiError::invalid(message).with_param(param.unwrap_or("query"))
                }
                ServeError::Internal(e) => {
                    ApiError::internal(format!("context selection failed: {e}"))
                }
                other => other.into(),
            })
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A JSON body whose rejections become [`ApiError`]s (400 syntax, 422 types,
/// 413 size, 415 content type) in the OpenAI error shape.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(v) = Json::<T>::from_request(req, state).await?;
        Ok(Self(v))
    }
}

/// The router with every route, auth and metrics.
pub fn router(state: AppState) -> Router {
    let limit = state.inner.config.payload_limit;
    Router::new()
        .route("/v1/embeddings", post(embeddings))
        .route("/embeddings", post(embeddings))
        .route("/v1/rerank", post(rerank))
        .route("/v1/context", post(context))
        .route("/v1/feedback", post(feedback))
        .route("/admin/reload", post(admin_reload))
        .route("/v1/chat/completions", post(crate::chat::chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/info", get(info))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            local_only,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}; see GET /info for the API",
        req.method(),
        req.uri().path()
    ))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// Counts every request by route and status and times it.
async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let start = Instant::now();
    let resp = next.run(req).await;
    state
        .inner
        .metrics
        .record_request(&route, resp.status().as_u16(), start.elapsed());
    resp
}

/// Without an API key the server answers only requests addressed to a
/// loopback name: a `Host` other than `localhost`, `127.0.0.1` or `[::1]`
/// (any port) gets 421, and a browser `Origin` that is not one of them gets
/// 403. This stops a web page from using DNS rebinding (or a plain
/// cross-origin request) to read the user's documents through
/// `/v1/context`, spend the configured LLM key or write to the training log.
async fn local_only(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.inner.config.api_key.is_none() {
        if let Some(e) = foreign_request(&req) {
            return e.into_response();
        }
    }
    next.run(req).await
}

/// Why a request must be refused by [`local_only`], if it must.
fn foreign_request(req: &Request) -> Option<ApiError> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| v.to_str().unwrap_or("\u{fffd}").to_string())
    };
    if let Some(host) = header("host") {
        if !is_loopback_authority(&host) {
            return Some(ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "invalid_request_error",
                format!(
                    "this server answers only requests for localhost, 127.0.0.1 or [::1], not \
                     Host {host:?}; start it with --api-key to serve other names"
                ),
            ));
        }
    }
    if let Some(origin) = header("origin") {
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        if !authority.is_some_and(is_loopback_authority) {
            return Some(ApiError::new(
                StatusCode::FORBIDDEN,
                "permission_error",
                format!(
                    "requests from the web origin {origin:?} are refused; only pages served \
                     from localhost may call this server without --api-key"
                ),
            ));
        }
    }
    None
}

/// `host[:port]` names a loopback address.
fn is_loopback_authority(authority: &str) -> bool {
    let a = authority.trim().trim_end_matches('/');
    let host = if let Some(rest) = a.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, port)) if port.is_empty() || port.starts_with(':') => h,
            _ => return false,
        }
    } else {
        match a.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            Some(_) => return false,
            None => a,
        }
    };
    let host = host.to_ascii_lowercase();
    host == "localhost" || host == "127.0.0.1" || host == "::1"
}

/// The header that carries the admin token.
pub const ADMIN_TOKEN_HEADER: &str = "x-anectx-admin-token";

/// `/admin/*` needs the admin token, when one is configured, whatever the
/// API key: a page on another site must not be able to reload models.
fn admin_refusal(state: &AppState, req: &Request) -> Option<ApiError> {
    let token = state.inner.config.admin_token.as_deref()?;
    if !req.uri().path().starts_with("/admin/") {
        return None;
    }
    let given = req
        .headers()
        .get(ADMIN_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => None,
        Some(_) => Some(ApiError::unauthorized("the admin token is not valid")),
        None => Some(ApiError::unauthorized(format!(
            "admin routes need the `{ADMIN_TOKEN_HEADER}` header; `anectx serve` printed \
             where its admin token is stored"
        ))),
    }
}

/// Bearer auth on every route except `/health`, when an API key is set.
async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(e) = admin_refusal(&state, &req) {
        return e.into_response();
    }
    let Some(key) = state.inner.config.api_key.as_deref() else {
        return next.run(req).await;
    };
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    match given {
        None => ApiError::unauthorized(
            "missing API key: send `Authorization: Bearer <key>` (the server was started with --api-key)",
        )
        .into_response(),
        Some(g) if constant_time_eq(g.trim().as_bytes(), key.as_bytes()) => next.run(req).await,
        Some(_) => ApiError::unauthorized("the API key is not valid").into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a request's `model` name (only under `strict_model`; otherwise any
/// name is accepted, as TEI does, and answered by the served model).
fn check_model(state: &AppState, model: Option<&str>) -> Result<(), ApiError> {
    match model {
        Some(m)
            if state.inner.config.strict_model
                && !m.is_empty()
                && !state.inner.config.serves(m) =>
        {
            Err(ApiError::not_found(format!(
                "the model `{m}` does not exist on this server; it serves `{}` (GET /v1/models)",
                state.inner.config.model_id
            ))
            .with_param("model"))
        }
        _ => Ok(()),
    }
}

fn timing_headers(t: CallTimings, truncated: &[usize]) -> HeaderMap {
    let (tokenize, t) = (t.tokenize, t.jobs);
    let mut h = HeaderMap::new();
    let ms = |d: Duration| HeaderValue::from_str(&format!("{:.3}", d.as_secs_f64() * 1e3));
    if let Ok(v) = ms(tokenize) {
        h.insert("x-anectx-tokenize-ms", v);
    }
    if let Ok(v) = ms(t.queue) {
        h.insert("x-anectx-queue-ms", v);
    }
    if let Ok(v) = ms(t.inference) {
        h.insert("x-anectx-inference-ms", v);
    }
    if let Ok(v) = HeaderValue::from_str(&t.batch_rows.to_string()) {
        h.insert("x-anectx-batch-rows", v);
    }
    if !truncated.is_empty() {
        let list: Vec<String> = truncated.iter().map(usize::to_string).collect();
        if let Ok(v) = HeaderValue::from_str(&list.join(",")) {
            h.insert("x-anectx-truncated", v);
        }
    }
    h
}

// ---------------------------------------------------------------- embeddings

#[derive(Debug, Deserialize)]
struct EmbeddingsRequest {
    input: Option<Value>,
    model: Option<String>,
    encoding_format: Option<String>,
    dimensions: Option<usize>,
    #[allow(dead_code)]
    user: Option<String>,
}

#[derive(Serialize)]
struct EmbeddingObject {
    object: &'static str,
    index: usize,
    embedding: Value,
}

/// Reads `input`: a string or a list of strings. Token arrays are refused.
fn parse_input(v: Option<Value>, max: usize) -> Result<Vec<String>, ApiError> {
    let v = v.ok_or_else(|| {
        ApiError::invalid("`input` is required: a string or a list of strings").with_param("input")
    })?;
    let texts = match v {
        Value::String(s) => vec![s],
        Value::Array(items) => {
            if items.is_empty() {
                return Err(
                    ApiError::invalid("`input` is an empty list: give at least one text")
                        .with_param("input"),
                );
            }
            let mut out = Vec::with_capacity(items.len());
            for (i, it) in items.into_iter().enumerate() {
                match it {
                    Value::String(s) => out.push(s),
                    Value::Number(_) | Value::Array(_) => {
                        return Err(ApiError::invalid(
                            "token-id inputs are not supported: send `input` as text \
                             (a string or a list of strings)",
                        )
                        .with_param("input"))
                    }
                    other => {
                        return Err(ApiError::invalid(format!(
                            "`input[{i}]` is {}, expected a string",
                            json_type(&other)
                        ))
                        .with_param("input"))
                    }
                }
            }
            out
        }
        other => {
            return Err(ApiError::invalid(format!(
                "`input` is {}, expected a string or a list of strings",
                json_type(&other)
            ))
            .with_param("input"))
        }
    };
    if texts.len() > max {
        return Err(ApiError::too_large(format!(
            "{} inputs in one request; the limit is {max} (--max-client-batch)",
            texts.len()
        ))
        .with_param("input"));
    }
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(
            ApiError::invalid(format!("`input[{i}]` is empty: there is nothing to embed"))
                .with_param("input"),
        );
    }
    Ok(texts)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Embeds texts through the batcher; returns the embeddings, real tokens and headers.
pub(crate) async fn embed_texts(
    state: &AppState,
    texts: Vec<String>,
) -> Result<(Embeddings, usize, HeaderMap), ApiError> {
    let e = state.inner.embed.embed(Arc::new(texts)).await?;
    let headers = timing_headers(e.timings, &e.truncated);
    Ok((e.embeddings, e.real_tokens, headers))
}

async fn embeddings(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<EmbeddingsRequest>,
) -> Result<Response, ApiError> {
    check_model(&state, req.model.as_deref())?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "`encoding_format` is `{other}`; use `float` or `base64`"
            ))
            .with_param("encoding_format"))
        }
    };
    let texts = parse_input(req.input, state.inner.config.max_client_batch)?;
    let (emb, tokens, headers) = embed_texts(&state, texts).await?;
    if let Some(d) = req.dimensions {
        if d != emb.dim {
            return Err(ApiError::invalid(format!(
                "`dimensions` is {d} but this model produces {} dimensions",
                emb.dim
            ))
            .with_param("dimensions"));
        }
    }
    let data: Vec<EmbeddingObject> = emb
        .iter()
        .enumerate()
        .map(|(index, row)| EmbeddingObject {
            object: "embedding",
            index,
            embedding: if base64 {
                let bytes: Vec<u8> = row.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(row)
            },
        })
        .collect();
    let body = json!({
        "object": "list",
        "data": data,
        "model": state.inner.config.model_id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    Ok((headers, Json(body)).into_response())
}

// ---------------------------------------------------------------- rerank

#[derive(Debug, Deserialize)]
struct RerankRequest {
    model: Option<String>,
    query: Option<String>,
    documents: Option<Vec<Value>>,
    top_n: Option<usize>,
    #[serde(default)]
    return_documents: bool,
}

/// How `/v1/rerank` scores documents.
pub(crate) fn rerank_method(state: &AppState) -> &'static str {
    if state.inner.embed.scores_pairs() {
        "classifier"
    } else {
        "embedding_cosine"
    }
}

async fn rerank(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RerankRequest>,
) -> Result<Response, ApiError> {
    check_model(&state, req.model.as_deref())?;
    let query = req.query.filter(|q| !q.trim().is_empty()).ok_or_else(|| {
        ApiError::invalid("`query` is required and must not be empty").with_param("query")
    })?;
    let docs = req.documents.ok_or_else(|| {
        ApiError::invalid("`documents` is required: a list of strings").with_param("documents")
    })?;
    if docs.is_empty() {
        return Err(ApiError::invalid("`documents` is an empty list").with_param("documents"));
    }
    if docs.len() > state.inner.config.max_client_batch {
        return Err(ApiError::too_large(format!(
            "{} documents in one request; the limit is {} (--max-client-batch)",
            docs.len(),
            state.inner.config.max_client_batch
        ))
        .with_param("documents"));
    }
    let mut texts = Vec::with_capacity(docs.len());
    for (i, d) in docs.into_iter().enumerate() {
        let t = match d {
            Value::String(s) => s,
            Value::Object(mut o) => match o.remove("text") {
                Some(Value::String(s)) => s,
                _ => {
                    return Err(ApiError::invalid(format!(
                        "`documents[{i}]` is an object without a string `text`"
                    ))
                    .with_param("documents"))
                }
            },
            other => {
                return Err(ApiError::invalid(format!(
                    "`documents[{i}]` is {}, expected a string",
                    json_type(&other)
                ))
                .with_param("documents"))
            }
        };
        if t.trim().is_empty() {
            return Err(
                ApiError::invalid(format!("`documents[{i}]` is empty")).with_param("documents")
            );
        }
        texts.push(t);
    }
    let texts = Arc::new(texts);
    let (scores, tokens, headers) = if state.inner.embed.scores_pairs() {
        let s = state.inner.embed.score(query, texts.clone()).await?;
        let headers = timing_headers(s.timings, &s.truncated);
        (s.scores, s.real_tokens, headers)
    } else {
        {
            let mut all = Vec::with_capacity(texts.len() + 1);
            all.push(query);
            all.extend(texts.iter().cloned());
            let (emb, real, headers) = embed_texts(&state, all).await?;
            let q = emb.row(0).to_vec();
            let s = (1..emb.rows)
                .map(|i| {
                    let cos: f32 = emb.row(i).iter().zip(&q).map(|(a, b)| a * b).sum();
                    ((cos + 1.0) / 2.0).clamp(0.0, 1.0)
                })
                .collect();
            (s, real, headers)
        }
    };
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    if let Some(n) = req.top_n {
        order.truncate(n);
    }
    let results: Vec<Value> = order
        .into_iter()
        .map(|i| {
            let mut r = json!({"index": i, "relevance_score": scores[i]});
            if req.return_documents {
                r["document"] = json!({"text": texts[i]});
            }
            r
        })
        .collect();
    let body = json!({
        "object": "rerank",
        "id": format!("rerank-{}", state.next_interaction_id()),
        "model": state
            .inner
            .config
            .classifier_id
            .clone()
            .unwrap_or_else(|| state.inner.config.model_id.clone()),
        "results": results,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "meta": {"scoring": rerank_method(&state)},
    });
    Ok((headers, Json(body)).into_response())
}

// ---------------------------------------------------------------- context

#[derive(Debug, Deserialize)]
struct ContextBody {
    query: Option<String>,
    budget_tokens: Option<usize>,
    max_chunks: Option<usize>,
}

async fn context(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ContextBody>,
) -> Result<Response, ApiError> {
    let query = req.query.filter(|q| !q.trim().is_empty()).ok_or_else(|| {
        ApiError::invalid("`query` is required and must not be empty").with_param("query")
    })?;
    let budget = req
        .budget_tokens
        .unwrap_or(state.inner.config.context_budget);
    if budget == 0 {
        return Err(
            ApiError::invalid("`budget_tokens` must be positive").with_param("budget_tokens")
        );
    }
    let start = Instant::now();
    let timestamp_ms = now_ms();
    let result = state
        .select_context(ContextRequest {
            query: query.clone(),
            budget_tokens: budget,
            max_chunks: req.max_chunks,
        })
        .await?;
    let id = state.next_interaction_id();
    // The interaction is logged (committed) before the answer goes out, so
    // `logged: true` means it is in the log.
    let logged = state
        .record_and_wait(Interaction {
            id: id.clone(),
            kind: InteractionKind::Context,
            timestamp_ms,
            query,
            chunks: result.chunks.clone(),
            response: None,
            model: None,
            upstream_status: None,
            streamed: false,
            complete: true,
            latency_ms: start.elapsed().as_millis() as u64,
            budget_tokens: Some(result.budget_tokens),
            tokens_used: Some(result.tokens_used),
            trace: result.trace.clone(),
        })
        .await;
    let mut body = serde_json::to_value(&result)
        .map_err(|e| ApiError::internal(format!("could not serialise the context: {e}")))?;
    body["id"] = json!(id);
    body["interaction_id"] = json!(id);
    body["logged"] = json!(logged);
    body["object"] = json!("context");
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&id) {
        headers.insert("x-anectx-interaction-id", v);
    }
    Ok((headers, Json(body)).into_response())
}

// ---------------------------------------------------------------- feedback

/// Reads `chunk_ids`: numbers or numeric strings (`/v1/context` gives ids as strings).
fn parse_chunk_ids(v: Option<Value>) -> Result<Vec<u64>, ApiError> {
    let bad = |m: String| ApiError::invalid(m).with_param("chunk_ids");
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            if items.len() > 1000 {
                return Err(bad(format!("{} chunk ids; at most 1000", items.len())));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, it)| {
                    match it {
                        Value::Number(n) => n.as_u64(),
                        Value::String(s) => s.trim().parse::<u64>().ok(),
                        _ => None,
                    }
                    .ok_or_else(|| {
                        bad(format!(
                            "`chunk_ids[{i}]` is {it}, expected a chunk id (a non-negative integer)"
                        ))
                    })
                })
                .collect()
        }
        Some(other) => Err(bad(format!(
            "`chunk_ids` is {}, expected a list of chunk ids",
            json_type(&other)
        ))),
    }
}

async fn feedback(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let Value::Object(mut o) = body else {
        return Err(ApiError::invalid("the request body must be a JSON object"));
    };
    let uid =
        match o.remove("interaction_id") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            Some(Value::Null) | None => return Err(ApiError::invalid(
                "`interaction_id` is required: the `interaction_id` of a /v1/context answer or \
                 the `x-anectx-interaction-id` header of a chat answer",
            )
            .with_param("interaction_id")),
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "`interaction_id` is {}, expected a non-empty string",
                    json_type(&other)
                ))
                .with_param("interaction_id"))
            }
        };
    let rating = match o.remove("rating") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_i64() == Some(1) || n.as_i64() == Some(-1) => {
            n.as_i64().map(|r| r as i32)
        }
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "`rating` is {other}; use 1 (helpful) or -1 (not helpful)"
            ))
            .with_param("rating"))
        }
    };
    let chunk_ids = parse_chunk_ids(o.remove("chunk_ids"))?;
    if chunk_ids.len() > anectx_store::log::MAX_FEEDBACK_CHUNKS {
        return Err(ApiError::invalid(format!(
            "`chunk_ids` names {} chunks; at most {} per feedback",
            chunk_ids.len(),
            anectx_store::log::MAX_FEEDBACK_CHUNKS
        ))
        .with_param("chunk_ids"));
    }
    let comment = match o.remove("comment") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= anectx_store::log::MAX_FEEDBACK_COMMENT_BYTES => {
            Some(s)
        }
        Some(Value::String(s)) => {
            return Err(ApiError::invalid(format!(
                "`comment` is {} bytes; at most {} are kept",
                s.len(),
                anectx_store::log::MAX_FEEDBACK_COMMENT_BYTES
            ))
            .with_param("comment"))
        }
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "`comment` is {}, expected a string",
                json_type(&other)
            ))
            .with_param("comment"))
        }
    };
    if rating.is_none() && chunk_ids.is_empty() && comment.is_none() {
        return Err(ApiError::invalid(
            "the feedback is empty: give `rating`, `chunk_ids` or `comment`",
        ));
    }
    let recorder = state.inner.recorder.clone();
    if !recorder.accepts_feedback() {
        return Err(ApiError::unavailable(
            "the interaction log is off (started with --no-log or without a store), so feedback \
             cannot be stored",
        ));
    }
    let issued = state.issued_here(&uid);
    let f = anectx_store::Feedback {
        interaction_uid: uid.clone(),
        ts_ms: i64::try_from(now_ms()).unwrap_or(i64::MAX),
        rating,
        chunk_ids,
        comment,
    };
    let r = tokio::task::spawn_blocking(move || {
        // An id this process handed out is valid even before its (chat)
        // interaction is written at the end of the stream.
        if !issued && recorder.contains(&f.interaction_uid)? != Some(true) {
            return Ok(None);
        }
        recorder.feedback(&f).map(Some)
    })
    .await
    .map_err(|e| ApiError::internal(format!("the feedback task failed: {e}")))?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let Some(id) = r else {
        return Err(
            ApiError::invalid(format!("no interaction `{uid}` is in the log"))
                .with_param("interaction_id"),
        );
    };
    Ok(Json(json!({"object": "feedback", "id": id, "interaction_id": uid})).into_response())
}

// ---------------------------------------------------------------- admin

async fn admin_reload(State(state): State<AppState>) -> Result<Response, ApiError> {
    let Some(r) = state.inner.reloader.clone() else {
        return Err(ApiError::unavailable(
            "no relevance-model source is configured, so there is nothing to reload",
        ));
    };
    match tokio::task::spawn_blocking(move || r.reload(true))
        .await
        .map_err(|e| ApiError::internal(format!("the reload task failed: {e}")))?
    {
        Ok(outcome) => Ok(Json(json!(outcome)).into_response()),
        Err(e) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "reload_error",
            e.to_string(),
        )),
    }
}

// ---------------------------------------------------------------- info

async fn models(State(state): State<AppState>) -> Json<Value> {
    let created = state.inner.start_ms / 1000;
    let mut data = vec![json!({
        "id": state.inner.config.model_id,
        "object": "model",
        "created": created,
        "owned_by": "anectx",
    })];
    for a in &state.inner.config.model_aliases {
        data.push(json!({"id": a, "object": "model", "created": created, "owned_by": "anectx"}));
    }
    if let Some(c) = &state.inner.config.classifier_id {
        data.push(json!({"id": c, "object": "model", "created": created, "owned_by": "anectx"}));
    }
    Json(json!({"object": "list", "data": data}))
}

async fn health(State(state): State<AppState>) -> Response {
    let h = state.batcher().health();
    let status = if h.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"status": if h.ok { "ok" } else { "unavailable" }, "detail": h.detail})),
    )
        .into_response()
}

async fn info(State(state): State<AppState>) -> Json<Value> {
    let s = &state.inner;
    let b = s.embed.batcher().info();
    let c = s.embed.batcher().config();
    Json(json!({
        "name": "anectx",
        "version": env!("CARGO_PKG_VERSION"),
        "model": {
            "id": s.config.model_id,
            "aliases": s.config.model_aliases,
            "kind": s.config.model_kind,
            "version": s.config.model_version,
            "dim": b.embedding_dim,
            "max_seq": s.embed.tokenizer().max_seq(),
            "seq_buckets": s.embed.tokenizer().buckets(),
        },
        "classifier": s.config.classifier_id,
        "rerank_scoring": rerank_method(&state),
        "backend": {
            "name": b.name,
            "max_batch": b.shapes.max_batch,
            "seq_buckets": b.shapes.seq_buckets,
        },
        "limits": {
            "payload_bytes": s.config.payload_limit,
            "max_client_batch": s.config.max_client_batch,
            "max_batch_rows": c.max_batch_rows,
            "max_batch_tokens": c.max_batch_tokens,
            "max_queue_requests": c.max_queue_requests,
            "max_queue_tokens": c.max_queue_tokens,
        },
        "context": s.context.as_ref().map(|p| p.describe()),
        "context_budget": s.config.context_budget,
        "llm": s.config.llm.as_ref().map(|l| l.base_url.clone()),
        "auth": s.config.api_key.is_some(),
        "relevance": relevance_info(&state),
        "interaction_log": s.recorder.enabled(),
    }))
}

fn relevance_info(state: &AppState) -> Value {
    let s = &state.inner;
    if let Some(r) = &s.reloader {
        return json!(r.status());
    }
    let (ok, failed) = s.metrics.reloads();
    match &s.engine {
        Some(e) => json!({
            "version": e.relevance_model().version(),
            "reloads_ok": ok,
            "reloads_failed": failed,
            "source": null,
        }),
        None => Value::Null,
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.inner.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_authorities() {
        for ok in [
            "localhost",
            "LOCALHOST:8181",
            "127.0.0.1",
            "127.0.0.1:8181",
            "[::1]",
            "[::1]:8181",
        ] {
            assert!(is_loopback_authority(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8181",
            "127.0.0.1.evil.example",
            "localhost.evil.example:80",
            "[::1]evil",
            "127.0.0.2",
            "localhost:80x",
            "",
        ] {
            assert!(!is_loopback_authority(bad), "{bad}");
        }
    }

    #[test]
    fn parse_input_rejects_token_arrays_and_wrong_types() {
        assert!(parse_input(Some(json!("hi")), 4).is_ok());
        let e = parse_input(Some(json!([[1, 2]])), 4).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.contains("token-id"), "{}", e.message);
        let e = parse_input(Some(json!(5)), 4).unwrap_err();
        assert!(e.message.contains("a number"), "{}", e.message);
        let e = parse_input(Some(json!(["a", "b", "c"])), 2).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
