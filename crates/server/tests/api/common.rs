//! Harness: the tiny random models behind a real `Batcher`, an in-memory
//! context, a recording recorder, and `oneshot` calls on the router.

use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anectx_core::{Backend, BackendError, BackendHealth, Embeddings, SupportedShapes, TokenBatch};
use anectx_server::{
    router, AppState, Batcher, BatcherConfig, Interaction, InteractionRecorder, LlmConfig,
    MemoryContext, Metrics, RecordError, ServerConfig,
};
use anectx_testing::tiny;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub const PASSAGES: &[(&str, &str)] = &[
    ("geo.md", "paris is the capital of france ."),
    ("pets.md", "the cat sat on the mat ."),
    ("ane.md", "the apple neural engine is a chip for models ."),
    ("water.md", "water boils at 100 degrees at sea level ."),
    ("fox.md", "the quick brown fox jumps over the lazy dog ."),
];

/// The bound on every wait in these tests: far longer than any wait takes
/// (they end in milliseconds), so it never decides a pass, but a lost
/// interaction or a stuck batcher fails the test instead of hanging CI.
pub const WAIT: Duration = Duration::from_secs(60);

/// Yields until `done()` holds; panics naming `what` after [`WAIT`].
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "gave up after {} s waiting for {what}",
            WAIT.as_secs()
        );
        tokio::task::yield_now().await;
    }
}

/// Waits (bounded, see [`wait_until`]) until the recorder holds at least one
/// interaction, and takes them all; `what` names the request that records.
pub async fn recorded_by(h: &Harness, what: &str) -> Vec<Interaction> {
    let mut got = Vec::new();
    wait_until(&format!("the interaction recorded by {what}"), || {
        got = h.recorder.take();
        !got.is_empty()
    })
    .await;
    got
}

#[derive(Default)]
pub struct MemRecorder(pub Mutex<Vec<Interaction>>);

impl InteractionRecorder for MemRecorder {
    fn record(&self, i: Interaction) -> Result<(), RecordError> {
        self.0.lock().unwrap().push(i);
        Ok(())
    }
}

impl MemRecorder {
    pub fn take(&self) -> Vec<Interaction> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// A backend that waits for a token on `gate` before every embed, so tests
/// can hold the backend busy without timing. The wait is bounded by
/// [`WAIT`]: a test that never sends the token gets a failed embed, not a
/// hung batcher.
pub struct GatedBackend {
    pub inner: anectx_models::CandleBackend,
    pub gate: Mutex<mpsc::Receiver<()>>,
}

impl Backend for GatedBackend {
    fn name(&self) -> &str {
        "gated"
    }
    fn health(&self) -> BackendHealth {
        self.inner.health()
    }
    fn shapes(&self) -> SupportedShapes {
        self.inner.shapes()
    }
    fn embedding_dim(&self) -> Option<usize> {
        self.inner.embedding_dim()
    }
    fn embed(&self, batch: &TokenBatch) -> Result<Embeddings, BackendError> {
        match self.gate.lock().unwrap().recv_timeout(WAIT) {
            Ok(()) => self.inner.embed(batch),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(BackendError::Inference(format!(
                "gated backend: gave up after {} s waiting for the test's gate token",
                WAIT.as_secs()
            ))),
            // The harness was dropped: the test is over.
            Err(mpsc::RecvTimeoutError::Disconnected) => self.inner.embed(batch),
        }
    }
    fn score(&self, pairs: &TokenBatch) -> Result<Vec<f32>, BackendError> {
        self.inner.score(pairs)
    }
}

#[derive(Clone)]
pub struct Opts {
    pub classifier: bool,
    pub context: bool,
    pub api_key: Option<String>,
    pub llm: Option<String>,
    pub batcher: BatcherConfig,
    pub max_client_batch: usize,
    /// Hold every embed until a token is sent on the returned gate.
    pub gated: bool,
    /// `--strict-model`: unknown `model` names get 404.
    pub strict_model: bool,
    /// Token required on `/admin/*`.
    pub admin_token: Option<String>,
    /// The upstream LLM's first-byte timeout.
    pub llm_timeout: Duration,
    /// `--max-inflight`.
    pub max_inflight: usize,
    /// `--request-timeout-secs`.
    pub request_timeout: Duration,
    /// Changes the upstream LLM's settings (caps, idle timeout).
    pub llm_tweak: Option<fn(&mut LlmConfig)>,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            classifier: false,
            context: true,
            api_key: None,
            llm: None,
            batcher: BatcherConfig::default(),
            max_client_batch: 512,
            gated: false,
            strict_model: false,
            admin_token: None,
            llm_timeout: Duration::from_secs(120),
            max_inflight: ServerConfig::new("x").max_inflight,
            request_timeout: ServerConfig::new("x").request_timeout,
            llm_tweak: None,
        }
    }
}

pub struct Harness {
    pub state: AppState,
    pub app: Router,
    pub recorder: Arc<MemRecorder>,
    pub gate: Option<mpsc::Sender<()>>,
}

pub const MODEL: &str = "tiny-conv";

fn build(opts: Opts) -> Harness {
    let metrics = Arc::new(Metrics::new());
    let (gate_tx, gate_rx) = mpsc::channel();
    let with_classifier = opts.classifier;
    let gated = opts.gated;
    let batcher = Batcher::spawn(
        move || {
            let b = tiny::backend(with_classifier).map_err(BackendError::from)?;
            Ok(if gated {
                Box::new(GatedBackend {
                    inner: b,
                    gate: Mutex::new(gate_rx),
                }) as Box<dyn Backend>
            } else {
                Box::new(b)
            })
        },
        opts.batcher.clone(),
        metrics.clone(),
    )
    .unwrap();
    let mut config = ServerConfig::new(MODEL);
    config.model_kind = "conv_embedder".into();
    config.model_version = "test-0001".into();
    config.api_key = opts.api_key.clone();
    config.max_client_batch = opts.max_client_batch;
    config.strict_model = opts.strict_model;
    config.admin_token = opts.admin_token.clone();
    config.max_inflight = opts.max_inflight;
    config.request_timeout = opts.request_timeout;
    config.model_aliases = vec!["text-embedding-3-small".into()];
    config.llm = opts.llm.clone().map(|base_url| {
        let mut llm = LlmConfig {
            first_byte_timeout: opts.llm_timeout,
            ..LlmConfig::new(base_url)
        };
        if let Some(tweak) = opts.llm_tweak {
            tweak(&mut llm);
        }
        llm
    });
    if opts.classifier {
        config.classifier_id = Some("tiny-classifier".into());
    }
    let recorder = Arc::new(MemRecorder::default());
    let mut b = AppState::builder(
        config,
        batcher.clone(),
        tiny::tokenizer(512).unwrap(),
        metrics,
    )
    .recorder(recorder.clone());
    if opts.classifier {
        b = b.classifier_tokenizer(tiny::tokenizer(512).unwrap());
    }
    if opts.context && !gated {
        let passages = PASSAGES
            .iter()
            .map(|(s, t)| (s.to_string(), t.to_string()))
            .collect();
        let ctx = MemoryContext::new(
            anectx_server::EmbedService::new(batcher, Arc::new(tiny::tokenizer(512).unwrap())),
            passages,
        )
        .unwrap();
        b = b.context_provider(Arc::new(ctx));
    }
    let state = b.build().unwrap();
    Harness {
        app: router(state.clone()),
        state,
        recorder,
        gate: gated.then_some(gate_tx),
    }
}

pub async fn harness(opts: Opts) -> Harness {
    tokio::task::spawn_blocking(move || build(opts))
        .await
        .unwrap()
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The OpenAI-shaped error message, asserting the shape.
    pub fn error_message(&self) -> String {
        let v = self.json();
        assert!(v["error"]["type"].is_string(), "no error.type in {v}");
        v["error"]["message"].as_str().unwrap().to_string()
    }
}

pub async fn send(app: &Router, req: Request<Body>) -> Reply {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn post(app: &Router, path: &str, body: Value) -> Reply {
    post_raw(app, path, body.to_string().into_bytes(), None).await
}

pub async fn post_raw(app: &Router, path: &str, body: Vec<u8>, key: Option<&str>) -> Reply {
    let mut r = Request::post(path).header("content-type", "application/json");
    if let Some(k) = key {
        r = r.header("authorization", format!("Bearer {k}"));
    }
    send(app, r.body(Body::from(body)).unwrap()).await
}

pub async fn get(app: &Router, path: &str) -> Reply {
    send(app, Request::get(path).body(Body::empty()).unwrap()).await
}

pub fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}
