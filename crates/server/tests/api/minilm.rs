//! The server with all-MiniLM-L6-v2 (skips without the fixture, fails under CI).

use std::sync::Arc;

use anectx_core::Backend;
use anectx_models::{load_embedder, CandleBackend, WeightDtype};
use anectx_server::{router, AppState, Batcher, BatcherConfig, Metrics, ServerConfig};
use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_embeddings_match_the_model_and_concurrent_requests_merge_safely() {
    let Some(dir) = anectx_testing::minilm_dir() else {
        return;
    };
    let d = dir.clone();
    let (app, direct) = tokio::task::spawn_blocking(move || {
        let (emb, tok) = load_embedder(&d, WeightDtype::F32).unwrap();
        let texts = anectx_testing::SENTENCES;
        let direct = CandleBackend::new(Some(emb.clone()), None)
            .embed(&tok.encode_batch(texts).unwrap())
            .unwrap();
        let metrics = Arc::new(Metrics::new());
        let batcher = Batcher::spawn(
            move || Ok(Box::new(CandleBackend::new(Some(emb), None))),
            BatcherConfig::default(),
            metrics.clone(),
        )
        .unwrap();
        let state = AppState::builder(ServerConfig::new("all-MiniLM-L6-v2"), batcher, tok, metrics)
            .build()
            .unwrap();
        (router(state), direct)
    })
    .await
    .unwrap();
    // One request per sentence, all at once: the batcher merges those of the
    // same sequence bucket; every row must still match the direct batch
    // (which padded all sentences to one bucket).
    let mut tasks = Vec::new();
    for (i, s) in anectx_testing::SENTENCES.iter().enumerate() {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            (
                i,
                post(
                    &app,
                    "/v1/embeddings",
                    json!({"input": s, "model": "all-MiniLM-L6-v2"}),
                )
                .await,
            )
        }));
    }
    for t in tasks {
        let (i, r) = t.await.unwrap();
        assert_eq!(r.status, 200);
        let e = floats(&r.json()["data"][0]["embedding"]);
        assert_eq!(e.len(), 384);
        let cos: f32 = e.iter().zip(direct.row(i)).map(|(a, b)| a * b).sum();
        assert!(cos > 0.9999, "sentence {i}: cosine {cos}");
    }
}
