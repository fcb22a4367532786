use anectx_core::Backend;
use anectx_testing::tiny;
use base64::Engine as _;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn embeddings_float_match_the_backend_and_are_unit_norm() {
    let h = harness(Opts::default()).await;
    let texts = [
        "the cat sat on the mat .",
        "paris is the capital of france",
        "rust",
    ];
    let r = post(
        &h.app,
        "/v1/embeddings",
        json!({"model": MODEL, "input": texts}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], MODEL);
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    // The same model and tokenizer, called directly.
    let tok = tiny::tokenizer(512).unwrap();
    let backend = tiny::backend(false).unwrap();
    let direct = backend.embed(&tok.encode_batch(&texts).unwrap()).unwrap();
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["object"], "embedding");
        assert_eq!(d["index"], i);
        let e = floats(&d["embedding"]);
        assert_eq!(e.len(), 64);
        assert!((norm(&e) - 1.0).abs() < 1e-4);
        let cos: f32 = e.iter().zip(direct.row(i)).map(|(a, b)| a * b).sum();
        assert!(cos > 0.9999, "row {i}: cosine {cos}");
    }
    let tokens = v["usage"]["prompt_tokens"].as_u64().unwrap();
    // [CLS] + words + [SEP]: 7+2, 6+2 (unknown words count too), 1+2.
    assert_eq!(tokens, 9 + 8 + 3);
    assert_eq!(v["usage"]["total_tokens"], tokens);
    assert!(r.headers.contains_key("x-anectx-inference-ms"));
}

#[tokio::test]
async fn embeddings_base64_decode_to_the_float_vectors() {
    let h = harness(Opts::default()).await;
    let f = post(
        &h.app,
        "/v1/embeddings",
        json!({"input": "the quick brown fox"}),
    )
    .await;
    let b = post(
        &h.app,
        "/embeddings",
        json!({"input": ["the quick brown fox"], "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(b.status, 200);
    let fv = floats(&f.json()["data"][0]["embedding"]);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b.json()["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let bv: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(bv.len(), fv.len());
    for (a, b) in fv.iter().zip(&bv) {
        assert!((a - b).abs() < 1e-6);
    }
}

#[tokio::test]
async fn long_inputs_are_truncated_and_reported() {
    let h = harness(Opts::default()).await;
    let long = vec!["cat"; 700].join(" ");
    let r = post(&h.app, "/v1/embeddings", json!({"input": ["dog", long]})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-anectx-truncated"], "1");
    assert_eq!(r.json()["usage"]["prompt_tokens"], 3 + 512);
}

#[tokio::test]
async fn rerank_with_embeddings_ranks_the_identical_document_first() {
    let h = harness(Opts::default()).await;
    let docs = [
        "the cat sat on the mat .",
        "water boils at sea level",
        "paris is the capital of france .",
    ];
    let r = post(
        &h.app,
        "/v1/rerank",
        json!({"query": "paris is the capital of france .", "documents": docs, "top_n": 2, "return_documents": true}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["object"], "rerank");
    assert_eq!(v["meta"]["scoring"], "embedding_cosine");
    let res = v["results"].as_array().unwrap();
    assert_eq!(res.len(), 2);
    assert_eq!(res[0]["index"], 2);
    assert!((res[0]["relevance_score"].as_f64().unwrap() - 1.0).abs() < 1e-4);
    assert_eq!(res[0]["document"]["text"], docs[2]);
    let s1 = res[1]["relevance_score"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&s1) && s1 <= res[0]["relevance_score"].as_f64().unwrap());
}

#[tokio::test]
async fn rerank_with_the_classifier_matches_direct_scores() {
    let h = harness(Opts {
        classifier: true,
        ..Opts::default()
    })
    .await;
    let q = "what is the capital of france ?";
    let docs = [
        "paris is the capital of france .",
        "the cat sat on the mat .",
        "rust code",
    ];
    let r = post(
        &h.app,
        "/v1/rerank",
        json!({"model": "tiny-classifier", "query": q, "documents": docs}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["meta"]["scoring"], "classifier");
    let tok = tiny::tokenizer(512).unwrap();
    let backend = tiny::backend(true).unwrap();
    let pairs: Vec<(&str, &str)> = docs.iter().map(|d| (q, *d)).collect();
    let direct = backend.score(&tok.encode_pairs(&pairs).unwrap()).unwrap();
    let res = v["results"].as_array().unwrap();
    assert_eq!(res.len(), 3);
    let mut prev = f64::INFINITY;
    for r in res {
        let i = r["index"].as_u64().unwrap() as usize;
        let s = r["relevance_score"].as_f64().unwrap();
        assert!(
            (s - direct[i] as f64).abs() < 1e-5,
            "doc {i}: {s} vs {}",
            direct[i]
        );
        assert!(s <= prev, "results are sorted by score");
        assert!(r.get("document").is_none());
        prev = s;
    }
}

#[tokio::test]
async fn context_returns_marked_chunks_within_budget_and_is_recorded() {
    let h = harness(Opts::default()).await;
    let r = post(
        &h.app,
        "/v1/context",
        json!({"query": "what is the capital of france ?", "budget_tokens": 30}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let chunks = v["chunks"].as_array().unwrap();
    assert!(!chunks.is_empty());
    let used: u64 = chunks.iter().map(|c| c["tokens"].as_u64().unwrap()).sum();
    assert!(used <= 30);
    assert_eq!(v["tokens_used"], used);
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c["marker"], i + 1);
        assert!(v["packed"].as_str().unwrap().contains(&format!(
            "[{}] ({})",
            i + 1,
            c["source"].as_str().unwrap()
        )));
    }
    // The recorder runs on the blocking pool; wait for it (bounded).
    let rec = recorded_by(&h, "POST /v1/context").await;
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].query, "what is the capital of france ?");
    assert_eq!(rec[0].chunks.len(), chunks.len());
    assert_eq!(rec[0].response, None);
}

#[tokio::test]
async fn context_without_a_store_is_503() {
    let h = harness(Opts {
        context: false,
        ..Opts::default()
    })
    .await;
    let r = post(&h.app, "/v1/context", json!({"query": "paris"})).await;
    assert_eq!(r.status, 503);
    assert!(
        r.error_message().contains("--store"),
        "{}",
        r.error_message()
    );
}

#[tokio::test]
async fn models_health_info_and_metrics() {
    let h = harness(Opts::default()).await;
    let m = get(&h.app, "/v1/models").await.json();
    assert_eq!(m["object"], "list");
    assert_eq!(m["data"][0]["id"], MODEL);
    let hl = get(&h.app, "/health").await;
    assert_eq!(hl.status, 200);
    assert_eq!(hl.json()["status"], "ok");
    let info = get(&h.app, "/info").await.json();
    assert_eq!(info["model"]["dim"], 64);
    assert_eq!(info["model"]["version"], "test-0001");
    assert_eq!(info["rerank_scoring"], "embedding_cosine");
    assert_eq!(info["limits"]["max_batch_rows"], 64);

    post(&h.app, "/v1/embeddings", json!({"input": "cat"})).await;
    post(&h.app, "/v1/embeddings", json!({"input": []})).await;
    let r = get(&h.app, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    for needle in [
        "anectx_http_requests_total{route=\"/v1/embeddings\",status=\"200\"} 1",
        "anectx_http_requests_total{route=\"/v1/embeddings\",status=\"422\"} 1",
        "anectx_http_request_duration_seconds_count{route=\"/v1/embeddings\"} 2",
        "anectx_embed_queue_duration_seconds_count{op=\"embed\"}",
        "anectx_tokenize_duration_seconds_count{op=\"embed\"}",
        "anectx_inference_duration_seconds_count{op=\"embed\"}",
        "anectx_batch_size_bucket{op=\"embed\",le=\"1\"}",
        "anectx_model_info{model=\"tiny-conv\",kind=\"conv_embedder\",backend=\"candle-cpu\",version=\"test-0001\"",
        "anectx_queue_requests 0",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}
