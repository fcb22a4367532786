//! TEI's (`/embed`, `/rerank`, `/tokenize`) and Ollama's (`/api/embed`)
//! routes: their response shapes, their error shapes and statuses, and
//! parity with `/v1/embeddings`.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

/// The TEI-shaped error `(error_type, message)`, asserting the shape: just
/// `error` and `error_type`.
fn tei_error(r: &Reply) -> (String, String) {
    let v = r.json();
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    assert_eq!(o.len(), 2, "TEI errors have `error` and `error_type`: {v}");
    (
        v["error_type"].as_str().expect("error_type").to_string(),
        v["error"].as_str().expect("error").to_string(),
    )
}

/// The Ollama-shaped error message, asserting the shape: just `error`.
fn ollama_error(r: &Reply) -> String {
    let v = r.json();
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    assert_eq!(o.len(), 1, "Ollama errors have only `error`: {v}");
    v["error"].as_str().expect("error").to_string()
}

/// Row by row equal up to float noise (batches of other shapes round
/// differently).
fn assert_close(got: &[Vec<f32>], want: &[Vec<f32>]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "row {i}");
        let worst = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-5, "row {i} differs by {worst}");
    }
}

fn rows(v: &Value) -> Vec<Vec<f32>> {
    v.as_array().unwrap().iter().map(floats).collect()
}

async fn openai_rows(h: &Harness, texts: &[&str]) -> Vec<Vec<f32>> {
    let r = post(&h.app, "/v1/embeddings", json!({"input": texts})).await;
    assert_eq!(r.status, 200);
    r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| floats(&d["embedding"]))
        .collect()
}

const TEXTS: [&str; 3] = [
    "the cat sat on the mat .",
    "paris is the capital of france",
    "rust",
];

#[tokio::test]
async fn tei_embed_returns_the_vectors_of_v1_embeddings() {
    let h = harness(Opts::default()).await;
    let want = openai_rows(&h, &TEXTS).await;
    let r = post(&h.app, "/embed", json!({"inputs": TEXTS})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_close(&rows(&r.json()), &want);
    // A single string is one row.
    let r = post(
        &h.app,
        "/embed",
        json!({"inputs": "rust", "normalize": true}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_close(&rows(&r.json()), &want[2..]);
    // `dimensions` keeps the first N and renormalises.
    let r = post(
        &h.app,
        "/embed",
        json!({"inputs": "rust", "dimensions": 16}),
    )
    .await;
    assert_eq!(r.status, 200);
    let short = &rows(&r.json())[0];
    assert_eq!(short.len(), 16);
    assert!((norm(short) - 1.0).abs() < 1e-5);
    let n = norm(&want[2][..16]);
    for (a, b) in short.iter().zip(&want[2][..16]) {
        assert!((a - b / n).abs() < 1e-5);
    }
}

#[tokio::test]
async fn tei_embed_refuses_too_long_input_unless_truncate() {
    let h = harness(Opts::default()).await;
    let long = vec!["cat"; 700].join(" ");
    let r = post(&h.app, "/embed", json!({"inputs": ["dog", long]})).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let (kind, msg) = tei_error(&r);
    assert_eq!(kind, "Validation");
    assert!(
        msg.contains("inputs[1]") && msg.contains("702 tokens") && msg.contains("512"),
        "{msg}"
    );
    let r = post(
        &h.app,
        "/embed",
        json!({"inputs": ["dog", long], "truncate": true}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(rows(&r.json()).len(), 2);
    assert_eq!(r.headers["x-anectx-truncated"], "1");
}

#[tokio::test]
async fn tei_errors_have_teis_shape_and_statuses() {
    let h = harness(Opts {
        max_client_batch: 2,
        ..Opts::default()
    })
    .await;
    for (body, status, kind, needle) in [
        (json!({}), 400, "Empty", "`inputs` is required"),
        (json!({"inputs": []}), 400, "Empty", "empty list"),
        (
            json!({"inputs": ["a", " "]}),
            400,
            "Empty",
            "`inputs[1]` is empty",
        ),
        (json!({"inputs": 5}), 422, "Validation", "a number"),
        (json!({"inputs": [[1, 2]]}), 422, "Validation", "token-id"),
        (
            json!({"inputs": ["a", "b", "c"]}),
            413,
            "Validation",
            "limit is 2",
        ),
        (
            json!({"inputs": "a", "normalize": false}),
            422,
            "Validation",
            "normalize",
        ),
        (
            json!({"inputs": "a", "dimensions": 0}),
            422,
            "Validation",
            "give 1 to 64",
        ),
        (
            json!({"inputs": "a", "truncate": "yes"}),
            422,
            "Validation",
            "truncate",
        ),
    ] {
        let r = post(&h.app, "/embed", body.clone()).await;
        assert_eq!(
            r.status,
            status,
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let (k, msg) = tei_error(&r);
        assert_eq!(k, kind, "{body}: {msg}");
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    let r = post_raw(&h.app, "/embed", b"{not json".to_vec(), None).await;
    assert_eq!(r.status, 400);
    assert_eq!(tei_error(&r).0, "Validation");
    let r = post(&h.app, "/rerank", json!({"query": "a", "texts": []})).await;
    assert_eq!(r.status, 400);
    assert_eq!(tei_error(&r).0, "Empty");
    let r = post(&h.app, "/rerank", json!({"texts": ["a"]})).await;
    assert_eq!(r.status, 400);
    assert!(tei_error(&r).1.contains("`query`"));
    let r = post(&h.app, "/tokenize", json!({"inputs": 3})).await;
    assert_eq!(r.status, 422);
    assert_eq!(tei_error(&r).0, "Validation");
    // The OpenAI routes keep OpenAI's shape.
    let r = post(&h.app, "/v1/embeddings", json!({"input": []})).await;
    assert_eq!(r.status, 422);
    assert!(r.error_message().contains("empty list"));
}

#[tokio::test]
async fn auth_and_load_shedding_answer_in_each_routes_shape() {
    let h = harness(Opts {
        api_key: Some("sekret".into()),
        ..Opts::default()
    })
    .await;
    let body = json!({"inputs": "a"}).to_string().into_bytes();
    let r = post_raw(&h.app, "/embed", body.clone(), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let (_, msg) = tei_error(&r);
    assert!(msg.contains("API key"), "{msg}");
    let r = post_raw(&h.app, "/embed", body, Some("sekret")).await;
    assert_eq!(r.status, 200);
    let body = json!({"input": "a"}).to_string().into_bytes();
    let r = post_raw(&h.app, "/api/embed", body, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(ollama_error(&r).contains("API key"));

    // Past --max-inflight: TEI answers 429 Overloaded, Ollama 503; both
    // with Retry-After.
    let h = harness(Opts {
        gated: true,
        context: false,
        max_inflight: 1,
        ..Opts::default()
    })
    .await;
    let app = h.app.clone();
    let held = tokio::spawn(async move { post(&app, "/embed", json!({"inputs": "cat"})).await });
    let state = h.state.clone();
    wait_until("the first request to hold the only slot", || {
        state.in_flight() == 1
    })
    .await;
    let r = post(&h.app, "/embed", json!({"inputs": "dog"})).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(tei_error(&r).0, "Overloaded");
    assert_eq!(r.headers["retry-after"], "1");
    let r = post(&h.app, "/api/embed", json!({"input": "dog"})).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ollama_error(&r).contains("--max-inflight"));
    assert_eq!(r.headers["retry-after"], "1");
    h.gate.as_ref().unwrap().send(()).unwrap();
    let first = tokio::time::timeout(WAIT, held)
        .await
        .expect("the held request")
        .unwrap();
    assert_eq!(first.status, StatusCode::OK);
    // Every alias is counted per route, by its final status.
    let m = String::from_utf8(get(&h.app, "/metrics").await.body.to_vec()).unwrap();
    assert!(
        m.contains(r#"route="/embed",status="429""#)
            && m.contains(r#"route="/api/embed",status="503""#),
        "{m}"
    );
}

#[tokio::test]
async fn tei_rerank_ranks_best_first_with_text_and_raw_scores() {
    let h = harness(Opts::default()).await;
    let texts = [
        "the cat sat on the mat .",
        "water boils at sea level",
        "paris is the capital of france .",
    ];
    let q = "paris is the capital of france .";
    let r = post(
        &h.app,
        "/rerank",
        json!({"query": q, "texts": texts, "return_text": true}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let ranks = v.as_array().unwrap();
    assert_eq!(ranks.len(), 3);
    assert_eq!(ranks[0]["index"], 2);
    assert_eq!(ranks[0]["text"], texts[2]);
    assert!((ranks[0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-4);
    let scores: Vec<f64> = ranks.iter().map(|x| x["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    // The same scores as /v1/rerank.
    let o = post(
        &h.app,
        "/v1/rerank",
        json!({"query": q, "documents": texts}),
    )
    .await;
    for (a, b) in ranks.iter().zip(o.json()["results"].as_array().unwrap()) {
        assert_eq!(a["index"], b["index"]);
        let (a, b) = (a["score"].as_f64(), b["relevance_score"].as_f64());
        assert!((a.unwrap() - b.unwrap()).abs() < 1e-6, "{a:?} vs {b:?}");
    }
    // Without return_text there is no `text`; raw scores are the cosines.
    let r = post(
        &h.app,
        "/rerank",
        json!({"query": q, "texts": texts, "raw_scores": true}),
    )
    .await;
    let raw = r.json();
    for (a, b) in raw.as_array().unwrap().iter().zip(ranks) {
        assert!(a.get("text").is_none(), "{a}");
        assert_eq!(a["index"], b["index"]);
        let (raw, cal) = (a["score"].as_f64().unwrap(), b["score"].as_f64().unwrap());
        assert!((cal - (raw + 1.0) / 2.0).abs() < 1e-5, "{raw} vs {cal}");
    }
    // A too-long text is refused unless truncate.
    let long = vec!["cat"; 700].join(" ");
    let r = post(&h.app, "/rerank", json!({"query": q, "texts": ["a", long]})).await;
    assert_eq!(r.status, 413);
    let (kind, msg) = tei_error(&r);
    assert_eq!(kind, "Validation");
    assert!(msg.contains("texts[1]"), "{msg}");
    let r = post(
        &h.app,
        "/rerank",
        json!({"query": q, "texts": ["a", long], "truncate": true}),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn tei_rerank_with_the_classifier_gives_logits_as_raw_scores() {
    let h = harness(Opts {
        classifier: true,
        ..Opts::default()
    })
    .await;
    let body = |raw: bool| json!({"query": "the cat", "texts": ["a cat", "the dog", "water"], "raw_scores": raw});
    let p = post(&h.app, "/rerank", body(false)).await.json();
    let l = post(&h.app, "/rerank", body(true)).await.json();
    for (p, l) in p.as_array().unwrap().iter().zip(l.as_array().unwrap()) {
        assert_eq!(p["index"], l["index"]);
        let (p, l) = (p["score"].as_f64().unwrap(), l["score"].as_f64().unwrap());
        assert!((0.0..=1.0).contains(&p));
        assert!(
            (1.0 / (1.0 + (-l).exp()) - p).abs() < 1e-4,
            "sigmoid({l}) != {p}"
        );
    }
}

#[tokio::test]
async fn tei_tokenize_lists_tokens_with_character_spans() {
    let h = harness(Opts::default()).await;
    let r = post(&h.app, "/tokenize", json!({"inputs": "the cat"})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let toks = v[0].as_array().unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    let texts: Vec<&str> = toks.iter().map(|t| t["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["[CLS]", "the", "cat", "[SEP]"]);
    assert_eq!(toks[0]["special"], true);
    assert_eq!(toks[0]["start"], Value::Null);
    assert_eq!(toks[2]["special"], false);
    assert_eq!(
        (toks[2]["start"].clone(), toks[2]["stop"].clone()),
        (json!(4), json!(7))
    );
    assert!(toks.iter().all(|t| t["id"].is_u64()));
    let r = post(
        &h.app,
        "/tokenize",
        json!({"inputs": ["the cat", "dog"], "add_special_tokens": false}),
    )
    .await;
    let v = r.json();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0].as_array().unwrap().len(), 2);
    assert!(v[0]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["special"] == false));
}

#[tokio::test]
async fn ollama_embed_returns_unit_vectors_and_counts() {
    let h = harness(Opts::default()).await;
    let want = openai_rows(&h, &TEXTS).await;
    let o = post(&h.app, "/v1/embeddings", json!({"input": TEXTS}))
        .await
        .json();
    let r = post(
        &h.app,
        "/api/embed",
        json!({"model": "nomic-embed-text", "input": TEXTS, "keep_alive": "5m", "options": {"num_ctx": 512}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["model"], "nomic-embed-text");
    assert_close(&rows(&v["embeddings"]), &want);
    for e in rows(&v["embeddings"]) {
        assert!((norm(&e) - 1.0).abs() < 1e-4);
    }
    assert_eq!(v["prompt_eval_count"], o["usage"]["prompt_tokens"]);
    assert!(v["total_duration"].as_u64().unwrap() > 0);
    assert_eq!(v["load_duration"], 0);
    // One string; `dimensions` keeps the first N and renormalises.
    let r = post(
        &h.app,
        "/api/embed",
        json!({"input": "rust", "dimensions": 8}),
    )
    .await;
    let v = r.json();
    assert_eq!(v["model"], MODEL);
    let e = &rows(&v["embeddings"])[0];
    assert_eq!(e.len(), 8);
    assert!((norm(e) - 1.0).abs() < 1e-5);
    // No input answers no embeddings, as Ollama does (a "load" call).
    for empty in [
        json!({"model": "m"}),
        json!({"input": ""}),
        json!({"input": []}),
    ] {
        let r = post(&h.app, "/api/embed", empty.clone()).await;
        assert_eq!(r.status, 200, "{empty}");
        assert_eq!(r.json()["embeddings"], json!([]), "{empty}");
    }
    // Too long: cut by default (Ollama's `truncate` defaults to true).
    let long = vec!["cat"; 700].join(" ");
    let r = post(&h.app, "/api/embed", json!({"input": [long.clone()]})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["prompt_eval_count"], 512);
    let r = post(
        &h.app,
        "/api/embed",
        json!({"input": [long], "truncate": false}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(ollama_error(&r).contains("`input[0]` has 702 tokens"));
}

#[tokio::test]
async fn ollama_errors_have_ollamas_shape_and_statuses() {
    let h = harness(Opts {
        strict_model: true,
        max_client_batch: 2,
        ..Opts::default()
    })
    .await;
    for (body, status, needle) in [
        (json!({"input": 5}), 400, "a number"),
        (json!({"input": ["a", 5]}), 400, "token-id"),
        (
            json!({"input": ["a", true]}),
            400,
            "`input[1]` is a boolean",
        ),
        (json!({"input": ["a", " "]}), 400, "`input[1]` is empty"),
        (json!({"input": ["a", "b", "c"]}), 400, "limit is 2"),
        (json!({"input": "a", "dimensions": -1}), 400, "positive"),
        (json!({"input": "a", "dimensions": 65}), 400, "give 1 to 64"),
        (json!({"input": "a", "truncate": 1}), 400, "truncate"),
        (json!({"model": "llama3", "input": "a"}), 404, "llama3"),
    ] {
        let r = post(&h.app, "/api/embed", body.clone()).await;
        assert_eq!(
            r.status,
            status,
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let msg = ollama_error(&r);
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    let r = post_raw(&h.app, "/api/embed", b"{".to_vec(), None).await;
    assert_eq!(r.status, 400);
    assert!(ollama_error(&r).contains("not valid JSON"));
    // Unknown Ollama routes answer 404 in Ollama's shape.
    let r = post(&h.app, "/api/generate", json!({})).await;
    assert_eq!(r.status, 404);
    ollama_error(&r);
}
