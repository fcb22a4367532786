//! The learning-loop surface of the server: the interaction log written by
//! `/v1/context`, `POST /v1/feedback`, and hot swap of the relevance model
//! (`POST /admin/reload`, polling) under load.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anectx_core::BackendError;
use anectx_engine::{
    index_texts, Candidate, ContextOptions, Engine, FusionRelevance, IndexOptions, NoProgress,
    RelevanceModel,
};
use anectx_server::{
    router, AppState, Batcher, BatcherConfig, EngineContext, InteractionRecorder, Metrics,
    RelevanceSource, ServerConfig, SourceError, SqliteRecorder,
};
use anectx_store::{Db, Durability, Store};
use anectx_testing::tiny;
use axum::Router;
use serde_json::{json, Value};

use crate::common::{get, post, post_raw, Reply};

const DOCS: &[(&str, &str)] = &[
    (
        "geo.md",
        "paris is the capital of france . the city is on a river .",
    ),
    (
        "pets.md",
        "the cat sat on the mat . the dog sat on the mat too .",
    ),
    ("ane.md", "the apple neural engine is a chip for models ."),
    ("water.md", "water boils at 100 degrees at sea level ."),
    (
        "mountain.md",
        "water boils at a lower degrees on a mountain .",
    ),
    ("fox.md", "the quick brown fox jumps over the lazy dog ."),
    (
        "server.md",
        "the server port is in the context of the query .",
    ),
    (
        "rust.md",
        "rust code and python code can search and rank data .",
    ),
];

const QUERIES: &[&str] = &[
    "where does water boil ?",
    "what is the capital of france ?",
    "the cat and the dog",
    "neural engine chip",
    "rust code search",
];

/// A relevance source whose "registry" the test controls: the stamp is a
/// counter; what `load` returns depends on the stamp's kind.
#[derive(Default)]
struct TestSource {
    stamp: AtomicU64,
    /// Kind of the current version: 0/1 = two good weightings, 2 = fails to
    /// load (a corrupt file), 3 = loads but scores NaN.
    kind: AtomicU64,
    loads: AtomicU64,
    /// Reads of the stamp: one per poll.
    stamps: AtomicU64,
}

fn weights(kind: u64) -> FusionRelevance {
    if kind == 0 {
        FusionRelevance {
            w_rrf: 0.7,
            w_bm25: 0.3,
            w_dense: 0.0,
            w_memory: 0.0,
        }
    } else {
        FusionRelevance {
            w_rrf: 0.2,
            w_bm25: 0.8,
            w_dense: 0.0,
            w_memory: 0.0,
        }
    }
}

struct NanModel;

impl RelevanceModel for NanModel {
    fn version(&self) -> String {
        "broken-nan".into()
    }
    fn score(&self, _q: &str, c: &[Candidate]) -> anectx_engine::Result<Vec<f32>> {
        Ok(vec![f32::NAN; c.len()])
    }
}

impl TestSource {
    fn set(&self, kind: u64) {
        self.kind.store(kind, Ordering::SeqCst);
        self.stamp.fetch_add(1, Ordering::SeqCst);
    }
}

impl RelevanceSource for TestSource {
    fn stamp(&self) -> Result<String, SourceError> {
        self.stamps.fetch_add(1, Ordering::SeqCst);
        Ok(format!("v{}", self.stamp.load(Ordering::SeqCst)))
    }
    fn load(&self) -> Result<Arc<dyn RelevanceModel>, SourceError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        match self.kind.load(Ordering::SeqCst) {
            k @ (0 | 1) => Ok(Arc::new(weights(k))),
            2 => Err("model.safetensors: invalid header (corrupt file)".into()),
            _ => Ok(Arc::new(NanModel)),
        }
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    state: AppState,
    app: Router,
    engine: Arc<Engine>,
    source: Arc<TestSource>,
}

fn build(log: Option<Durability>, source: bool, poll: Duration) -> Setup {
    build_with(log, source, poll, None)
}

fn build_with(log: Option<Durability>, source: bool, poll: Duration, llm: Option<String>) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    {
        let store = Store::open(&dir).unwrap();
        let docs: Vec<(String, String)> = DOCS
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        index_texts(&store, None, &docs, &IndexOptions::default(), &NoProgress).unwrap();
    }
    let engine = Arc::new(Engine::open(&dir, None).unwrap());
    let metrics = Arc::new(Metrics::new());
    let batcher = Batcher::spawn(
        || {
            Ok(Box::new(tiny::backend(false).map_err(BackendError::from)?)
                as Box<dyn anectx_core::Backend>)
        },
        BatcherConfig::default(),
        metrics.clone(),
    )
    .unwrap();
    let ctx = Arc::new(EngineContext::new(
        engine.clone(),
        ContextOptions {
            // Exploration on, so explored calls and propensities are logged too.
            explore: 0.3,
            ..ContextOptions::default()
        },
        "test store".into(),
    ));
    let mut config = ServerConfig::new("tiny");
    config.llm = llm.map(anectx_server::LlmConfig::new);
    let mut b = AppState::builder(
        config,
        batcher,
        tiny::tokenizer(512).unwrap(),
        metrics.clone(),
    )
    .engine_context(ctx)
    .relevance_poll(poll);
    if let Some(d) = log {
        let r = SqliteRecorder::open(&dir, d).unwrap().with_metrics(metrics);
        b = b.recorder(Arc::new(r));
    }
    let src = Arc::new(TestSource::default());
    if source {
        b = b.relevance_source(src.clone());
    }
    let state = b.build().unwrap();
    Setup {
        _dir: tmp,
        dir,
        app: router(state.clone()),
        state,
        engine,
        source: src,
    }
}

async fn setup(log: Option<Durability>, source: bool, poll: Duration) -> Setup {
    tokio::task::spawn_blocking(move || build(log, source, poll))
        .await
        .unwrap()
}

fn log_db(dir: &std::path::Path) -> Db {
    Db::open(&Store::db_path(dir)).unwrap()
}

#[tokio::test]
async fn context_calls_are_logged_before_the_answer_with_the_candidate_pool() {
    let s = setup(Some(Durability::Full), false, Duration::ZERO).await;
    let mut ids = Vec::new();
    for q in QUERIES {
        let r = post(
            &s.app,
            "/v1/context",
            json!({"query": q, "budget_tokens": 40}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        assert_eq!(v["logged"], true, "{v}");
        let id = v["interaction_id"].as_str().unwrap().to_string();
        assert_eq!(v["id"], id.as_str());
        assert_eq!(r.headers["x-anectx-interaction-id"], id.as_str());
        // Logged before the answer: already in the database now.
        let db = log_db(&s.dir);
        let rowid = db.interaction_id(&id).unwrap().expect("logged");
        let (_, l) = db.interactions(rowid - 1, 1).unwrap().remove(0);
        assert_eq!(l.uid, id);
        assert_eq!(l.kind.as_str(), "context");
        assert_eq!(l.query, *q);
        assert_eq!(l.model_version, FusionRelevance::default().version());
        assert_eq!(l.explored, v["details"]["explored"].as_bool().unwrap());
        // Every shown chunk is a candidate at its marker, with its text and
        // a propensity in (0, 1]; unshown pool entries have no position.
        let shown = v["chunks"].as_array().unwrap();
        assert!(!shown.is_empty(), "{v}");
        for c in shown {
            let cid: u64 = c["id"].as_str().unwrap().parse().unwrap();
            let lc = l.candidates.iter().find(|x| x.chunk_id == cid).unwrap();
            assert_eq!(lc.position, Some(c["marker"].as_u64().unwrap() as u32));
            assert_eq!(lc.text.as_deref(), c["text"].as_str());
            assert!(lc.propensity > 0.0 && lc.propensity <= 1.0, "{lc:?}");
            assert!(lc.features["coverage"].is_number(), "{:?}", lc.features);
        }
        let n_shown = l.candidates.iter().filter(|c| c.position.is_some()).count();
        assert_eq!(n_shown, shown.len());
        assert_eq!(
            l.candidates.len(),
            v["details"]["pool"].as_array().unwrap().len()
        );
        ids.push(id);
    }
    assert_eq!(
        log_db(&s.dir).interaction_count().unwrap(),
        QUERIES.len() as u64
    );
    // max_chunks cuts chunks: the cut ones are not logged as shown.
    let r = post(
        &s.app,
        "/v1/context",
        json!({"query": "water boils at sea level", "budget_tokens": 200, "max_chunks": 1}),
    )
    .await;
    let v = r.json();
    assert_eq!(v["chunks"].as_array().unwrap().len(), 1);
    let db = log_db(&s.dir);
    let rowid = db
        .interaction_id(v["interaction_id"].as_str().unwrap())
        .unwrap()
        .unwrap();
    let (_, l) = db.interactions(rowid - 1, 1).unwrap().remove(0);
    assert_eq!(
        l.candidates.iter().filter(|c| c.position.is_some()).count(),
        1
    );
    assert!(l.candidates.len() > 1);

    // Feedback.
    let first = &ids[0];
    let chunk: String = {
        let db = log_db(&s.dir);
        let rowid = db.interaction_id(first).unwrap().unwrap();
        let (_, l) = db.interactions(rowid - 1, 1).unwrap().remove(0);
        l.candidates[0].chunk_id.to_string()
    };
    let r = post(
        &s.app,
        "/v1/feedback",
        json!({"interaction_id": first, "rating": 1, "chunk_ids": [chunk, 7], "comment": "good"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = post(
        &s.app,
        "/v1/feedback",
        json!({"interaction_id": first, "rating": -1}),
    )
    .await;
    assert_eq!(r.status, 200);
    let fb = log_db(&s.dir).feedback().unwrap();
    assert_eq!(fb.len(), 2);
    assert_eq!(fb[0].interaction_uid, *first);
    assert_eq!(fb[0].rating, Some(1));
    assert_eq!(fb[0].chunk_ids, vec![chunk.parse::<u64>().unwrap(), 7]);
    assert_eq!(fb[0].comment.as_deref(), Some("good"));
    assert_eq!(fb[1].rating, Some(-1));

    // Bad feedback: 422 with the OpenAI error shape, nothing stored.
    let bad = [
        json!({"interaction_id": "1-2-3", "rating": 1}),
        json!({"interaction_id": first, "rating": 2}),
        json!({"interaction_id": first, "rating": 0}),
        json!({"interaction_id": first, "rating": "up"}),
        json!({"interaction_id": first, "rating": 1.0}),
        json!({"interaction_id": first, "chunk_ids": ["x"]}),
        json!({"interaction_id": first, "chunk_ids": [-4]}),
        json!({"interaction_id": first, "chunk_ids": "3"}),
        json!({"interaction_id": first, "comment": 5}),
        json!({"interaction_id": first}),
        json!({"interaction_id": ""}),
        json!({"interaction_id": 17, "rating": 1}),
        json!({"rating": 1}),
        json!([1, 2]),
    ];
    for b in bad {
        let r = post(&s.app, "/v1/feedback", b.clone()).await;
        assert_eq!(r.status, 422, "{b}: {}", String::from_utf8_lossy(&r.body));
        assert!(!r.error_message().is_empty());
    }
    let r = post_raw(&s.app, "/v1/feedback", b"{not json".to_vec(), None).await;
    assert_eq!(r.status, 400);
    assert_eq!(log_db(&s.dir).feedback().unwrap().len(), 2);

    // /metrics counts the log writes and their latency.
    let m = String::from_utf8(get(&s.app, "/metrics").await.body.to_vec()).unwrap();
    assert!(
        m.contains("anectx_log_writes_total{result=\"ok\"} 6"),
        "{m}"
    );
    assert!(
        m.contains("anectx_log_write_duration_seconds_count{kind=\"context\"} 6"),
        "{m}"
    );
    let info = get(&s.app, "/info").await.json();
    assert_eq!(info["interaction_log"], true);
    assert_eq!(
        info["relevance"]["version"],
        FusionRelevance::default().version()
    );
}

#[tokio::test]
async fn chat_answers_are_logged_with_the_response_and_take_feedback_by_header_id() {
    let (addr, _log) = anectx_testing::fake_llm::spawn().await.unwrap();
    let s = tokio::task::spawn_blocking(move || {
        build_with(
            Some(Durability::Full),
            false,
            Duration::ZERO,
            Some(format!("http://{addr}/v1")),
        )
    })
    .await
    .unwrap();
    let body = json!({
        "model": "fake",
        "messages": [{"role": "user", "content": "where does water boil ?"}],
    });
    let r = post(&s.app, "/v1/chat/completions", body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let id = r.headers["x-anectx-interaction-id"]
        .to_str()
        .unwrap()
        .to_string();
    let answer = r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    // A non-streamed answer is logged before it is returned.
    let db = log_db(&s.dir);
    let rowid = db.interaction_id(&id).unwrap().expect("chat logged");
    let (_, l) = db.interactions(rowid - 1, 1).unwrap().remove(0);
    assert_eq!(l.kind.as_str(), "chat");
    assert_eq!(l.query, "where does water boil ?");
    assert_eq!(l.response.as_deref(), Some(answer.as_str()));
    assert!(l.complete);
    assert_eq!(l.meta.llm_model.as_deref(), Some("fake"));
    assert_eq!(l.meta.upstream_status, Some(200));
    assert!(l.candidates.iter().any(|c| c.position.is_some()));
    let r = post(
        &s.app,
        "/v1/feedback",
        json!({"interaction_id": id, "rating": -1}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(log_db(&s.dir).feedback_for(&id).unwrap().len(), 1);
}

#[tokio::test]
async fn without_a_log_context_still_answers_and_feedback_is_unavailable() {
    let s = setup(None, false, Duration::ZERO).await;
    let r = post(&s.app, "/v1/context", json!({"query": "water"})).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["logged"], false);
    let id = v["interaction_id"].as_str().unwrap();
    let r = post(
        &s.app,
        "/v1/feedback",
        json!({"interaction_id": id, "rating": 1}),
    )
    .await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    // No source: /admin/reload has nothing to reload.
    let r = post(&s.app, "/admin/reload", json!({})).await;
    assert_eq!(r.status, 503);
}

#[tokio::test]
async fn admin_reload_needs_the_api_key_when_one_is_set() {
    let s = tokio::task::spawn_blocking(|| {
        let mut s = build(None, true, Duration::ZERO);
        // Rebuild the same engine behind a keyed server.
        let metrics = Arc::new(Metrics::new());
        let batcher = Batcher::spawn(
            || {
                Ok(Box::new(tiny::backend(false).map_err(BackendError::from)?)
                    as Box<dyn anectx_core::Backend>)
            },
            BatcherConfig::default(),
            metrics.clone(),
        )
        .unwrap();
        let mut config = ServerConfig::new("tiny");
        config.api_key = Some("k".into());
        let ctx = Arc::new(EngineContext::new(
            s.engine.clone(),
            ContextOptions::default(),
            "t".into(),
        ));
        s.state = AppState::builder(config, batcher, tiny::tokenizer(512).unwrap(), metrics)
            .engine_context(ctx)
            .relevance_source(s.source.clone())
            .relevance_poll(Duration::ZERO)
            .build()
            .unwrap();
        s.app = router(s.state.clone());
        s
    })
    .await
    .unwrap();
    let r = post(&s.app, "/admin/reload", json!({})).await;
    assert_eq!(r.status, 401);
    let r = post_raw(&s.app, "/admin/reload", b"{}".to_vec(), Some("k")).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[tokio::test]
async fn a_corrupt_or_broken_version_is_refused_and_the_current_model_keeps_serving() {
    let s = setup(Some(Durability::Normal), true, Duration::ZERO).await;
    // The source's first version loaded at start.
    let v0 = weights(0).version();
    assert_eq!(s.engine.relevance_model().version(), v0);
    for kind in [2, 3] {
        s.source.set(kind);
        let r = post(&s.app, "/admin/reload", json!({})).await;
        assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
        let msg = r.error_message();
        assert!(msg.contains(&v0), "{msg}");
        assert!(
            msg.contains(if kind == 2 { "corrupt" } else { "NaN" }),
            "{msg}"
        );
        assert_eq!(s.engine.relevance_model().version(), v0);
        let r = post(&s.app, "/v1/context", json!({"query": "water boils"})).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["details"]["relevance_model"], v0.as_str());
    }
    s.source.set(1);
    let r = post(&s.app, "/admin/reload", json!({})).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["status"], "swapped");
    assert_eq!(v["previous"], v0.as_str());
    assert_eq!(v["version"], weights(1).version().as_str());
    let info = get(&s.app, "/info").await.json();
    assert_eq!(info["relevance"]["version"], weights(1).version().as_str());
    assert_eq!(info["relevance"]["reloads_ok"], 2);
    assert_eq!(info["relevance"]["reloads_failed"], 2);
    let m = String::from_utf8(get(&s.app, "/metrics").await.body.to_vec()).unwrap();
    assert!(
        m.contains("anectx_relevance_reloads_total{result=\"ok\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("anectx_relevance_reloads_total{result=\"failed\"} 2"),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "anectx_relevance_model_info{{version=\"{}\"}} 1",
            weights(1).version()
        )),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn polling_swaps_on_a_stamp_change_and_does_not_retry_a_failed_version() {
    let s = setup(None, true, Duration::from_millis(20)).await;
    let bg = s.state.spawn_background().expect("poller");
    let wait_for = |want: String| {
        let engine = s.engine.clone();
        async move {
            // Bounded by count, not by a time limit on the test's speed.
            for _ in 0..3000 {
                if engine.relevance_model().version() == want {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        }
    };
    s.source.set(1);
    assert!(wait_for(weights(1).version()).await);
    let loads = s.source.loads.load(Ordering::SeqCst);
    s.source.set(2); // corrupt
    let r = s.state.reloader().unwrap().clone();
    for _ in 0..3000 {
        if r.status().reloads_failed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(r.status().reloads_failed, 1);
    // Several more polls of the same broken stamp: not retried. Counted,
    // not timed: wait for five more reads of the stamp (one per poll), then
    // for the reload in progress to finish (`status` takes the lock that a
    // reload holds from its stamp read to its load), and count the loads.
    let loads_before = s.source.loads.load(Ordering::SeqCst);
    assert_eq!(loads_before, loads + 1);
    let stamps = s.source.stamps.load(Ordering::SeqCst);
    let mut polled = false;
    for _ in 0..3000 {
        if s.source.stamps.load(Ordering::SeqCst) >= stamps + 5 {
            polled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(polled, "the poller read the stamp fewer than 5 more times");
    let _ = r.status();
    assert_eq!(
        s.source.loads.load(Ordering::SeqCst),
        loads_before,
        "a poll retried the version that failed"
    );
    assert_eq!(s.engine.relevance_model().version(), weights(1).version());
    s.source.set(0);
    assert!(wait_for(weights(0).version()).await);
    assert_eq!(r.status().reloads_failed, 1);
    bg.abort();
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_hundred_reloads_under_load_fail_no_request() {
    const RELOADS: usize = 100;
    const CLIENTS: usize = 6;
    let s = setup(Some(Durability::Normal), true, Duration::ZERO).await;
    let stop = Arc::new(AtomicBool::new(false));
    // (during swaps?, milliseconds)
    let latencies = Arc::new(Mutex::new(Vec::<(bool, f64)>::new()));
    let swapping = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let good: Vec<String> = vec![weights(0).version(), weights(1).version()];
    let done = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let app = s.app.clone();
        let stop = stop.clone();
        let lat = latencies.clone();
        let fails = failures.clone();
        let good = good.clone();
        let done = done.clone();
        let swapping = swapping.clone();
        clients.push(tokio::spawn(async move {
            let mut n = 0usize;
            // Bounded: stops with the reloads, and after at most 5000 requests.
            while !stop.load(Ordering::SeqCst) && n < 5000 {
                let q = QUERIES[(c + n) % QUERIES.len()];
                let phase = swapping.load(Ordering::SeqCst);
                let t = Instant::now();
                let r = post(
                    &app,
                    "/v1/context",
                    json!({"query": q, "budget_tokens": 60}),
                )
                .await;
                lat.lock()
                    .unwrap()
                    .push((phase, t.elapsed().as_secs_f64() * 1e3));
                let ok = r.status == 200 && {
                    let v: Value = r.json();
                    let m = v["details"]["relevance_model"].as_str().unwrap_or("");
                    v["logged"] == true && good.iter().any(|g| g == m)
                };
                if !ok {
                    fails.lock().unwrap().push(format!(
                        "{}: {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    ));
                }
                n += 1;
                done.fetch_add(1, Ordering::SeqCst);
            }
            n
        }));
    }
    // 100 reloads: alternate the two weightings; every 10th version fails to
    // load and every 10th (offset 5) scores NaN — both must be refused.
    // Pace by work, not time: let every client finish about one request
    // (bounded wait).
    let pace = || {
        let done = done.clone();
        async move {
            let target = done.load(Ordering::SeqCst) + CLIENTS as u64;
            for _ in 0..10_000 {
                if done.load(Ordering::SeqCst) >= target {
                    break;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    };
    // Baseline: the same load without reloads.
    for _ in 0..RELOADS {
        pace().await;
    }
    swapping.store(true, Ordering::SeqCst);
    let mut swapped = 0;
    let mut refused = 0;
    let t0 = Instant::now();
    for k in 0..RELOADS {
        let kind = match k % 10 {
            3 => 2,
            8 => 3,
            _ => (k % 2) as u64,
        };
        let before = s.engine.relevance_model().version();
        s.source.set(kind);
        let r = post(&s.app, "/admin/reload", json!({})).await;
        if kind >= 2 {
            assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
            assert_eq!(s.engine.relevance_model().version(), before);
            refused += 1;
        } else {
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            assert_eq!(
                s.engine.relevance_model().version(),
                weights(kind).version()
            );
            swapped += 1;
        }
        pace().await;
    }
    let swap_secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for c in clients {
        total += c.await.unwrap();
    }
    let fails = failures.lock().unwrap().clone();
    assert!(
        fails.is_empty(),
        "{} failed requests: {:?}",
        fails.len(),
        &fails[..fails.len().min(3)]
    );
    assert_eq!((swapped, refused), (80, 20));
    let all = latencies.lock().unwrap().clone();
    let phase = |p: bool| {
        let mut v: Vec<f64> = all.iter().filter(|x| x.0 == p).map(|x| x.1).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (base, during) = (phase(false), phase(true));
    println!(
        "hot swap under load: {RELOADS} reloads ({swapped} swapped, {refused} refused) in \
         {swap_secs:.2} s while {CLIENTS} clients sent {total} /v1/context requests \
         (all 200, all logged). During swaps ({} requests): p50 {:.2} ms, p99 {:.2} ms, max \
         {:.2} ms; baseline without swaps ({} requests): p50 {:.2} ms, p99 {:.2} ms",
        during.len(),
        percentile(&during, 0.5),
        percentile(&during, 0.99),
        during.last().copied().unwrap_or(0.0),
        base.len(),
        percentile(&base, 0.5),
        percentile(&base, 0.99),
    );
    assert!(total > 0);
    // Every answer was logged with the version that produced it.
    let db = log_db(&s.dir);
    assert_eq!(db.interaction_count().unwrap(), total as u64);
    let stats = db.log_stats().unwrap();
    for (v, _) in &stats.by_model_version {
        assert!(good.contains(v), "unexpected logged version {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_write_cost() {
    // Sequential cost of one logged interaction, durable (fsync) and not,
    // and /v1/context end to end with and without the log. Printed only.
    for (name, d) in [
        ("none", None),
        ("normal", Some(Durability::Normal)),
        ("full", Some(Durability::Full)),
    ] {
        let s = setup(d, false, Duration::ZERO).await;
        let mut lat = Vec::new();
        for k in 0..150 {
            let t = Instant::now();
            let r = post(
                &s.app,
                "/v1/context",
                json!({"query": QUERIES[k % QUERIES.len()], "budget_tokens": 60}),
            )
            .await;
            assert_eq!(r.status, 200);
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        lat.sort_by(f64::total_cmp);
        println!(
            "/v1/context with log sync {name}: p50 {:.3} ms, p99 {:.3} ms (150 sequential calls)",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        );
        if let Some(d) = d {
            // The recorder alone, called directly.
            let r = SqliteRecorder::open(&s.dir, d).unwrap();
            let mut w = Vec::new();
            for k in 0..150 {
                let i = anectx_server::Interaction {
                    id: format!("cost-{k}"),
                    kind: anectx_server::InteractionKind::Context,
                    timestamp_ms: 1,
                    query: "q".into(),
                    chunks: vec![],
                    response: None,
                    model: None,
                    upstream_status: None,
                    streamed: false,
                    complete: true,
                    latency_ms: 0,
                    budget_tokens: None,
                    tokens_used: None,
                    trace: Some(pool_of_30(true)),
                };
                let t = Instant::now();
                r.record(i).unwrap();
                w.push(t.elapsed().as_secs_f64() * 1e3);
            }
            w.sort_by(f64::total_cmp);
            println!(
                "recorder write ({name}, 30 candidates): p50 {:.3} ms, p99 {:.3} ms",
                percentile(&w, 0.5),
                percentile(&w, 0.99)
            );
            // 8 concurrent writers: the writer groups commits.
            let r = Arc::new(r);
            let t = Instant::now();
            let hs: Vec<_> = (0..8)
                .map(|th| {
                    let r = r.clone();
                    std::thread::spawn(move || {
                        for k in 0..50 {
                            let mut i = anectx_server::Interaction {
                                id: format!("conc-{th}-{k}"),
                                kind: anectx_server::InteractionKind::Context,
                                timestamp_ms: 1,
                                query: "q".into(),
                                chunks: vec![],
                                response: None,
                                model: None,
                                upstream_status: None,
                                streamed: false,
                                complete: true,
                                latency_ms: 0,
                                budget_tokens: None,
                                tokens_used: None,
                                trace: None,
                            };
                            i.trace = Some(pool_of_30(false));
                            r.record(i).unwrap();
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            let secs = t.elapsed().as_secs_f64();
            println!(
                "recorder ({name}), 8 concurrent writers: 400 acknowledged writes in {:.3} s \
                 ({:.0}/s)",
                secs,
                400.0 / secs
            );
        }
    }
}

/// A selection trace with 30 unshown candidates (the recorder cost runs).
fn pool_of_30(full: bool) -> anectx_engine::SelectionTrace {
    anectx_engine::SelectionTrace {
        pool: (0..30)
            .map(|c| anectx_engine::PoolCandidate {
                chunk_id: c,
                relevance: 0.5,
                relevance_rank: c as u32 + 1,
                features: anectx_engine::Features {
                    rrf: 0.1,
                    bm25: full.then_some(1.0),
                    coverage: if full { 0.5 } else { 0.0 },
                    ..Default::default()
                },
                shown: None,
                propensity: 0.0,
            })
            .collect(),
        ..Default::default()
    }
}

/// `/v1/context` `filters` select inside retrieval (over the engine), and
/// every bad value is a 400 naming its field.
#[tokio::test]
async fn context_filters_restrict_the_documents_and_bad_values_are_400() {
    let s = setup(None, false, Duration::from_secs(3600)).await;
    let ask = |filters: Value| {
        let app = s.app.clone();
        async move {
            post(
                &app,
                "/v1/context",
                json!({"query": "water boils at degrees", "filters": filters}),
            )
            .await
        }
    };
    let sources = |r: &Reply| -> Vec<String> {
        r.json()["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["source"].as_str().unwrap().to_string())
            .collect()
    };
    let all = ask(Value::Null).await;
    assert_eq!(all.status, 200, "{}", String::from_utf8_lossy(&all.body));
    assert!(sources(&all).iter().any(|s| s.starts_with("water.md")));
    let r = ask(json!({"path": "mountain*"})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let got = sources(&r);
    assert!(
        !got.is_empty() && got.iter().all(|s| s.starts_with("mountain.md")),
        "{got:?}"
    );
    // index_texts documents are text without a file time: a kind matches,
    // a date cannot.
    let r = ask(json!({"kind": ["text"], "path": "water.md"})).await;
    assert_eq!(sources(&r).len(), 1, "{:?}", sources(&r));
    let r = ask(json!({"kind": "pdf"})).await;
    assert_eq!(r.status, 200);
    assert!(sources(&r).is_empty());
    let r = ask(json!({"modified_after": "2000-01-01"})).await;
    assert!(sources(&r).is_empty());

    for (filters, param, needle) in [
        (json!({"path": "a/["}), "filters.path", "invalid"),
        (json!({"path": 5}), "filters.path", "a number"),
        (json!({"kind": "pdf,,md"}), "filters.kind", "empty entry"),
        (json!({"kind": {}}), "filters.kind", "an object"),
        (
            json!({"modified_after": "yesterday"}),
            "filters.modified_after",
            "YYYY-MM-DD",
        ),
        (
            json!({"modified_before": "2024-02-30"}),
            "filters.modified_before",
            "no such day",
        ),
        (
            json!({"modified_after": "2024-05-02", "modified_before": "2024-05-01"}),
            "filters.modified_before",
            "not after",
        ),
        (json!({"size": 3}), "filters.size", "unknown filter"),
        (json!("pdf"), "filters", "expected an object"),
    ] {
        let r = ask(filters.clone()).await;
        assert_eq!(
            r.status,
            400,
            "{filters}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let v = r.json();
        assert_eq!(v["error"]["param"], param, "{filters}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{filters}: {v}"
        );
    }
}
