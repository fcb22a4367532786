//! A bounded loopback load run against an in-process anectx server.
//!
//! ```sh
//! cargo run --release -p anectx-server --example loadgen -- \
//!     [--requests 1000] [--max-secs 30] [--levels 1,8,64] [--docs 1000] [--tiny]
//! ```
//!
//! Starts the server on 127.0.0.1:0 with all-MiniLM-L6-v2 (the fixture from
//! `scripts/fixtures.sh`; `--tiny` or a missing fixture uses a small random
//! `ConvEmbedder`) and a context engine over a temporary store of `--docs`
//! generated documents, indexed through the server's own batcher. Then, for
//! `/v1/embeddings` (one sentence per request) and `/v1/context` (budget 500)
//! at each concurrency level, clients send at most `--requests` requests
//! and stop after `--max-secs` seconds, whichever comes first. Prints
//! throughput, p50/p99 latency and the status counts; any status other than
//! 200 or an intended 429 makes the run exit non-zero.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anectx_core::{Backend, BackendError};
use anectx_engine::{index_texts, ContextOptions, Engine, IndexOptions, NoProgress};
use anectx_models::{load_embedder, CandleBackend, TextTokenizer, WeightDtype};
use anectx_server::{
    AppState, Batcher, BatcherConfig, BatcherEmbedder, EngineContext, Metrics, ServerConfig,
};
use anectx_store::{EmbedderInfo, Store};
use anectx_testing::tiny;
use serde_json::json;

struct Args {
    requests: usize,
    max_secs: u64,
    levels: Vec<usize>,
    docs: usize,
    tiny: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        requests: 1000,
        max_secs: 30,
        levels: vec![1, 8, 64],
        docs: 1000,
        tiny: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_default();
        match flag.as_str() {
            "--requests" => a.requests = val().parse().unwrap_or(a.requests),
            "--max-secs" => a.max_secs = val().parse().unwrap_or(a.max_secs),
            "--docs" => a.docs = val().parse().unwrap_or(a.docs),
            "--levels" => {
                a.levels = val()
                    .split(',')
                    .filter_map(|s| s.trim().parse().ok())
                    .collect()
            }
            "--tiny" => a.tiny = true,
            "--bench" => {}
            other => eprintln!("ignoring unknown argument {other}"),
        }
    }
    a.requests = a.requests.clamp(1, 100_000);
    a.max_secs = a.max_secs.clamp(1, 600);
    a
}

const WORDS: &[&str] = &[
    "engine",
    "neural",
    "context",
    "query",
    "model",
    "server",
    "port",
    "token",
    "budget",
    "cache",
    "batch",
    "latency",
    "vector",
    "index",
    "chunk",
    "retrieval",
    "ranking",
    "paris",
    "france",
    "water",
    "river",
    "mountain",
    "kidney",
    "shock",
    "wave",
    "rust",
    "python",
    "error",
    "config",
];

fn doc(i: usize) -> String {
    let s = anectx_testing::SENTENCES;
    let mut out = format!("Document {i}. ");
    for k in 0..4 {
        out.push_str(s[(i * 7 + k * 3) % s.len()]);
        out.push(' ');
        out.push_str(WORDS[(i * 5 + k) % WORDS.len()]);
        out.push_str(". ");
    }
    out
}

fn load_model(tiny_only: bool) -> (anectx_models::Embedder, TextTokenizer, String) {
    if !tiny_only {
        if let Some(dir) = std::env::var_os("ANECTX_MINILM_DIR")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                let d = anectx_testing::workspace_root().join(".fixtures/all-minilm-l6-v2");
                d.join("model.safetensors").exists().then_some(d)
            })
        {
            let (e, t) = load_embedder(&dir, WeightDtype::F32).expect("loading MiniLM");
            return (e, t, "all-MiniLM-L6-v2 (f32)".into());
        }
        eprintln!("MiniLM fixture not found; using the tiny random ConvEmbedder");
    }
    (
        tiny::embedder(1).unwrap(),
        tiny::tokenizer(512).unwrap(),
        "tiny random ConvEmbedder".into(),
    )
}

#[derive(Default)]
struct LevelResult {
    latencies: Vec<Duration>,
    statuses: BTreeMap<u16, usize>,
    transport_errors: usize,
    elapsed: Duration,
}

async fn run_level(
    client: &reqwest::Client,
    url: &str,
    bodies: Arc<Vec<serde_json::Value>>,
    clients: usize,
    requests: usize,
    max: Duration,
) -> LevelResult {
    let next = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(Mutex::new(LevelResult::default()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url, bodies, next, out) = (
            client.clone(),
            url.to_string(),
            bodies.clone(),
            next.clone(),
            out.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests || start.elapsed() >= max {
                    break;
                }
                let body = &bodies[i % bodies.len()];
                let t = Instant::now();
                let r = client.post(&url).json(body).send().await;
                let status = match r {
                    Ok(resp) => {
                        let s = resp.status().as_u16();
                        let _ = resp.bytes().await;
                        Some(s)
                    }
                    Err(_) => None,
                };
                let lat = t.elapsed();
                let mut o = out.lock().unwrap();
                match status {
                    Some(s) => {
                        *o.statuses.entry(s).or_insert(0) += 1;
                        if s == 200 {
                            o.latencies.push(lat);
                        }
                    }
                    None => o.transport_errors += 1,
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut r = std::mem::take(&mut *out.lock().unwrap());
    r.elapsed = start.elapsed();
    r.latencies.sort();
    r
}

fn pct(v: &[Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i].as_secs_f64() * 1e3
}

fn main() {
    let args = parse_args();
    let (embedder, tokenizer, model_name) = load_model(args.tiny);
    let dim = embedder.dim();
    let metrics = Arc::new(Metrics::new());
    let batcher = Batcher::spawn(
        move || Ok(Box::new(CandleBackend::new(Some(embedder), None)) as Box<dyn Backend>),
        BatcherConfig::default(),
        metrics.clone(),
    )
    .map_err(|e: BackendError| e.to_string())
    .expect("backend");

    // A store of generated documents, embedded through the batcher.
    let tmp = tempfile::tempdir().expect("tempdir");
    let info = EmbedderInfo {
        fingerprint: format!("loadgen-{model_name}"),
        description: model_name.clone(),
        dim,
    };
    let emb = Arc::new(BatcherEmbedder::new(
        anectx_server::EmbedService::new(batcher.clone(), Arc::new(tokenizer.clone())),
        info,
    ));
    let t = Instant::now();
    {
        let store = Store::open(tmp.path()).expect("store");
        let docs: Vec<(String, String)> = (0..args.docs)
            .map(|i| (format!("doc{i}.txt"), doc(i)))
            .collect();
        index_texts(
            &store,
            Some(emb.as_ref()),
            &docs,
            &IndexOptions::default(),
            &NoProgress,
        )
        .expect("indexing");
    }
    let engine = Engine::open(tmp.path(), Some(emb)).expect("engine");
    let chunks = engine.store().db.chunk_count().unwrap_or(0);
    eprintln!(
        "indexed {} documents ({chunks} chunks) with {model_name} in {:.1} s",
        args.docs,
        t.elapsed().as_secs_f64()
    );
    let provider = EngineContext::new(
        Arc::new(engine),
        ContextOptions::default(),
        "loadgen store".into(),
    );
    let state = AppState::builder(
        ServerConfig::new("loadgen"),
        batcher,
        tokenizer,
        metrics.clone(),
    )
    .context_provider(Arc::new(provider))
    .build()
    .expect("state");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let failed = rt.block_on(async move {
        let listener = anectx_server::bind("127.0.0.1:0".parse().unwrap(), None)
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(anectx_server::serve(listener, state, async {
            let _ = stop_rx.await;
        }));
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .unwrap();
        let s = anectx_testing::SENTENCES;
        let embed_bodies: Vec<_> = (0..s.len())
            .map(|i| json!({"input": s[i], "model": "loadgen"}))
            .collect();
        let ctx_bodies: Vec<_> = (0..s.len())
            .map(|i| json!({"query": s[i], "budget_tokens": 500}))
            .collect();
        println!(
            "model: {model_name}; store: {} docs / {chunks} chunks; per level: at most {} requests or {} s",
            args.docs, args.requests, args.max_secs
        );
        println!(
            "| route | clients | requests | 200 | 429 | other | throughput (req/s) | p50 (ms) | p99 (ms) |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        let mut failed = false;
        for (route, bodies) in [
            ("/v1/embeddings", Arc::new(embed_bodies)),
            ("/v1/context", Arc::new(ctx_bodies)),
        ] {
            let url = format!("http://{addr}{route}");
            // Warm-up, not counted.
            run_level(&client, &url, bodies.clone(), 4, 32, Duration::from_secs(10)).await;
            for &c in &args.levels {
                let r = run_level(
                    &client,
                    &url,
                    bodies.clone(),
                    c,
                    args.requests,
                    Duration::from_secs(args.max_secs),
                )
                .await;
                let ok = r.statuses.get(&200).copied().unwrap_or(0);
                let busy = r.statuses.get(&429).copied().unwrap_or(0);
                let other: usize = r
                    .statuses
                    .iter()
                    .filter(|(s, _)| **s != 200 && **s != 429)
                    .map(|(_, n)| n)
                    .sum::<usize>()
                    + r.transport_errors;
                failed |= other > 0;
                println!(
                    "| {route} | {c} | {} | {ok} | {busy} | {other} | {:.1} | {:.1} | {:.1} |",
                    ok + busy + other,
                    ok as f64 / r.elapsed.as_secs_f64(),
                    pct(&r.latencies, 0.50),
                    pct(&r.latencies, 0.99),
                );
            }
        }
        let _ = stop_tx.send(());
        let _ = server.await;
        failed
    });
    let text = metrics.render();
    for line in text.lines() {
        let shown = [
            "anectx_batch_size_sum",
            "anectx_batch_size_count",
            "anectx_embed_queue_duration_seconds_sum",
            "anectx_tokenize_duration_seconds_sum",
            "anectx_inference_duration_seconds_sum",
            "anectx_inference_duration_seconds_count",
        ];
        if shown.iter().any(|s| line.starts_with(s)) {
            println!("{line}");
        }
    }
    if failed {
        eprintln!("some requests failed with a status other than 200/429");
        std::process::exit(1);
    }
}
