//! Dynamic batching and backpressure, made deterministic with a gated
//! backend (no sleeps; each wait has a generous bound that only a lost
//! request reaches).

use std::sync::atomic::Ordering;

use anectx_server::BatcherConfig;
use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_are_merged_into_one_batch() {
    let h = harness(Opts {
        gated: true,
        ..Opts::default()
    })
    .await;
    let gate = h.gate.clone().unwrap();
    let m = h.state.metrics().clone();
    let app = h.app.clone();
    let first =
        tokio::spawn(
            async move { post(&app, "/v1/embeddings", json!({"input": "the cat"})).await },
        );
    // The backend has taken the first job and waits on the gate.
    wait_until("the backend to take the first embed job", || {
        m.queue_duration.count("embed") == 1
    })
    .await;
    let mut rest = Vec::new();
    for text in ["paris", "the quick brown fox", "water boils at sea level"] {
        let app = h.app.clone();
        rest.push(tokio::spawn(async move {
            post(&app, "/v1/embeddings", json!({"input": text})).await
        }));
    }
    wait_until("4 queued embed requests", || {
        m.queue_requests.load(Ordering::SeqCst) == 4
    })
    .await;
    gate.send(()).unwrap();
    gate.send(()).unwrap();
    let r = first.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-anectx-batch-rows"], "1");
    for t in rest {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            r.headers["x-anectx-batch-rows"], "3",
            "the three waiting requests ran together"
        );
        let e = floats(&r.json()["data"][0]["embedding"]);
        assert!((norm(&e) - 1.0).abs() < 1e-4);
    }
    assert_eq!(m.batch_size.count("embed"), 2);
    assert_eq!(m.queue_requests.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_and_recovers() {
    let h = harness(Opts {
        gated: true,
        batcher: BatcherConfig {
            max_queue_requests: 1,
            ..BatcherConfig::default()
        },
        ..Opts::default()
    })
    .await;
    let gate = h.gate.clone().unwrap();
    let m = h.state.metrics().clone();
    let app = h.app.clone();
    let first =
        tokio::spawn(
            async move { post(&app, "/v1/embeddings", json!({"input": "the cat"})).await },
        );
    wait_until("1 queued embed request", || {
        m.queue_requests.load(Ordering::SeqCst) == 1
    })
    .await;
    let r = post(&h.app, "/v1/embeddings", json!({"input": "dog"})).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["type"], "overloaded_error");
    assert!(r.error_message().contains("busy"), "{}", r.error_message());
    gate.send(()).unwrap();
    assert_eq!(first.await.unwrap().status, 200);
    gate.send(()).unwrap();
    let r = post(&h.app, "/v1/embeddings", json!({"input": "dog"})).await;
    assert_eq!(r.status, 200);
    let text = m.render();
    assert!(
        text.contains("anectx_rejected_total{reason=\"queue_full\"} 1"),
        "{text}"
    );
    assert!(text.contains("anectx_http_requests_total{route=\"/v1/embeddings\",status=\"429\"} 1"));
}

#[tokio::test]
async fn a_request_larger_than_the_queue_is_413_not_429() {
    let h = harness(Opts {
        batcher: BatcherConfig {
            max_queue_tokens: 100,
            ..BatcherConfig::default()
        },
        context: false,
        ..Opts::default()
    })
    .await;
    // 4 inputs in the 32-token bucket: 128 padded tokens > 100.
    let r = post(
        &h.app,
        "/v1/embeddings",
        json!({"input": ["a", "b", "c", "d"]}),
    )
    .await;
    assert_eq!(r.status, 413);
    assert!(
        r.error_message().contains("more than the queue holds"),
        "{}",
        r.error_message()
    );
    let r = post(&h.app, "/v1/embeddings", json!({"input": ["a", "b"]})).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn large_requests_are_split_into_jobs_and_keep_their_order() {
    let h = harness(Opts {
        batcher: BatcherConfig {
            max_batch_rows: 4,
            ..BatcherConfig::default()
        },
        ..Opts::default()
    })
    .await;
    let texts: Vec<String> = (0..10)
        .map(|i| format!("the {} cat", ["red", "blue", "green"][i % 3]).repeat(i + 1))
        .collect();
    let r = post(&h.app, "/v1/embeddings", json!({"input": texts})).await;
    assert_eq!(r.status, 200);
    let all = r.json();
    for (i, t) in texts.iter().enumerate() {
        let one = post(&h.app, "/v1/embeddings", json!({"input": t}))
            .await
            .json();
        let a = floats(&all["data"][i]["embedding"]);
        let b = floats(&one["data"][0]["embedding"]);
        let cos: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!(cos > 0.9999, "input {i}: cosine {cos}");
        assert_eq!(all["data"][i]["index"], i);
    }
}
