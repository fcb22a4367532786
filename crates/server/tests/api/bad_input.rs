//! Every bad request gets the right status and a clear OpenAI-shaped error,
//! and the server keeps serving afterwards.

use axum::body::Body;
use axum::http::Request;
use serde_json::json;

use crate::common::*;

async fn still_serves(h: &Harness, key: Option<&str>) {
    let r = post_raw(
        &h.app,
        "/v1/embeddings",
        json!({"input": "the cat"}).to_string().into_bytes(),
        key,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[tokio::test]
async fn malformed_json_is_400() {
    let h = harness(Opts::default()).await;
    let r = post_raw(
        &h.app,
        "/v1/embeddings",
        b"{\"input\": [\"a\",".to_vec(),
        None,
    )
    .await;
    assert_eq!(r.status, 400);
    let m = r.error_message();
    assert!(m.contains("not valid JSON"), "{m}");
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    still_serves(&h, None).await;
}

#[tokio::test]
async fn wrong_types_are_422_and_name_the_field() {
    let h = harness(Opts::default()).await;
    for (body, needle) in [
        (json!({"input": 5}), "`input` is a number"),
        (json!({"input": {"text": "a"}}), "`input` is an object"),
        (json!({"input": ["ok", null]}), "`input[1]` is null"),
        (
            json!({"input": [[101, 2023]]}),
            "token-id inputs are not supported",
        ),
        (
            json!({"input": "a", "encoding_format": "int8"}),
            "`encoding_format`",
        ),
        (json!({"input": "a", "model": 7}), "model"),
        (json!({"inputs": "a"}), "`input` is required"),
    ] {
        let r = post(&h.app, "/v1/embeddings", body.clone()).await;
        assert_eq!(
            r.status,
            422,
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let m = r.error_message();
        assert!(m.contains(needle), "{body}: {m}");
    }
    for (body, needle) in [
        (json!({"query": "q", "documents": "a"}), "documents"),
        (json!({"query": "", "documents": ["a"]}), "`query`"),
        (
            json!({"query": "q", "documents": [3]}),
            "`documents[0]` is a number",
        ),
        (
            json!({"query": "q", "documents": ["a"], "top_n": -1}),
            "top_n",
        ),
    ] {
        let r = post(&h.app, "/v1/rerank", body.clone()).await;
        assert_eq!(
            r.status,
            422,
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            r.error_message().contains(needle),
            "{body}: {}",
            r.error_message()
        );
    }
    still_serves(&h, None).await;
}

#[tokio::test]
async fn empty_inputs_are_422() {
    let h = harness(Opts::default()).await;
    let r = post(&h.app, "/v1/embeddings", json!({"input": []})).await;
    assert_eq!(r.status, 422);
    assert!(
        r.error_message().contains("empty list"),
        "{}",
        r.error_message()
    );
    assert_eq!(r.json()["error"]["param"], "input");
    let r = post(&h.app, "/v1/embeddings", json!({"input": ["a", "  "]})).await;
    assert_eq!(r.status, 422);
    assert!(
        r.error_message().contains("`input[1]` is empty"),
        "{}",
        r.error_message()
    );
    let r = post(&h.app, "/v1/rerank", json!({"query": "q", "documents": []})).await;
    assert_eq!(r.status, 422);
    let r = post(&h.app, "/v1/context", json!({"query": "  "})).await;
    assert_eq!(r.status, 422);
    still_serves(&h, None).await;
}

#[tokio::test]
async fn a_10_mb_body_is_413() {
    let h = harness(Opts::default()).await;
    let big = "cat ".repeat(10 * 1024 * 1024 / 4);
    let body = json!({"input": big}).to_string().into_bytes();
    assert!(body.len() >= 10 * 1024 * 1024);
    let r = post_raw(&h.app, "/v1/embeddings", body, None).await;
    assert_eq!(r.status, 413);
    assert!(
        r.error_message().contains("payload limit"),
        "{}",
        r.error_message()
    );
    assert_eq!(r.json()["error"]["type"], "payload_too_large_error");
    still_serves(&h, None).await;
}

#[tokio::test]
async fn too_many_inputs_is_413() {
    let h = harness(Opts {
        max_client_batch: 4,
        ..Opts::default()
    })
    .await;
    let r = post(&h.app, "/v1/embeddings", json!({"input": vec!["a"; 5]})).await;
    assert_eq!(r.status, 413);
    assert!(
        r.error_message().contains("limit is 4"),
        "{}",
        r.error_message()
    );
    still_serves(&h, None).await;
}

#[tokio::test]
async fn any_model_name_is_answered_by_the_served_model() {
    let h = harness(Opts::default()).await;
    for name in ["text-embedding-3-large", "text-embedding-3-small", MODEL] {
        let r = post(
            &h.app,
            "/v1/embeddings",
            json!({"input": "a", "model": name}),
        )
        .await;
        assert_eq!(r.status, 200, "{name}");
        // The response names the real model, not the requested name.
        assert_eq!(r.json()["model"], MODEL, "{name}");
    }
    let r = post(
        &h.app,
        "/v1/rerank",
        json!({"query": "q", "documents": ["a"], "model": "nope"}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["model"], MODEL);
    // /v1/models lists the real id and the aliases.
    let ids: Vec<String> = get(&h.app, "/v1/models").await.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, [MODEL, "text-embedding-3-small"]);
}

#[tokio::test]
async fn unknown_model_is_404_with_strict_model() {
    let h = harness(Opts {
        strict_model: true,
        ..Opts::default()
    })
    .await;
    let r = post(
        &h.app,
        "/v1/embeddings",
        json!({"input": "a", "model": "text-embedding-3-large"}),
    )
    .await;
    assert_eq!(r.status, 404);
    let m = r.error_message();
    assert!(
        m.contains("text-embedding-3-large") && m.contains(MODEL),
        "{m}"
    );
    assert_eq!(r.json()["error"]["param"], "model");
    // An alias is still accepted, and answered by the real model.
    let r = post(
        &h.app,
        "/v1/embeddings",
        json!({"input": "a", "model": "text-embedding-3-small"}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["model"], MODEL);
    let r = post(
        &h.app,
        "/v1/rerank",
        json!({"query": "q", "documents": ["a"], "model": "nope"}),
    )
    .await;
    assert_eq!(r.status, 404);
    still_serves(&h, None).await;
}

#[tokio::test]
async fn unknown_route_and_wrong_method_are_json_errors() {
    let h = harness(Opts::default()).await;
    let r = get(&h.app, "/v1/nothing").await;
    assert_eq!(r.status, 404);
    assert!(r.error_message().contains("/v1/nothing"));
    let r = get(&h.app, "/v1/embeddings").await;
    assert_eq!(r.status, 405);
    assert!(r.error_message().contains("GET"));
    let r = send(
        &h.app,
        Request::post("/v1/embeddings")
            .header("content-type", "text/plain")
            .body(Body::from("hello"))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 415);
    assert!(r.error_message().contains("application/json"));
    still_serves(&h, None).await;
}

#[tokio::test]
async fn missing_or_wrong_api_key_is_401() {
    let h = harness(Opts {
        api_key: Some("s3cret".into()),
        ..Opts::default()
    })
    .await;
    let body = || json!({"input": "a"}).to_string().into_bytes();
    let r = post_raw(&h.app, "/v1/embeddings", body(), None).await;
    assert_eq!(r.status, 401);
    assert!(
        r.error_message().contains("missing API key"),
        "{}",
        r.error_message()
    );
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    let r = post_raw(&h.app, "/v1/embeddings", body(), Some("wrong")).await;
    assert_eq!(r.status, 401);
    assert!(
        r.error_message().contains("not valid"),
        "{}",
        r.error_message()
    );
    let r = get(&h.app, "/metrics").await;
    assert_eq!(r.status, 401, "metrics need the key too");
    // Health stays open for probes.
    assert_eq!(get(&h.app, "/health").await.status, 200);
    still_serves(&h, Some("s3cret")).await;
}

/// Without an API key only loopback names are served: a DNS-rebinding page
/// (foreign Host) gets 421, a cross-origin page (foreign Origin) 403.
#[tokio::test]
async fn foreign_host_and_origin_are_refused_without_an_api_key() {
    let h = harness(Opts::default()).await;
    let req = |host: &str, origin: Option<&str>| {
        let mut b = Request::post("/v1/context")
            .header("content-type", "application/json")
            .header("host", host);
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        b.body(Body::from(
            json!({"query": "capital of France"}).to_string(),
        ))
        .unwrap()
    };
    let r = send(&h.app, req("attacker.example:8181", None)).await;
    assert_eq!(r.status, 421, "{}", r.error_message());
    assert!(r.error_message().contains("attacker.example"));
    let r = send(
        &h.app,
        req("127.0.0.1:8181", Some("http://attacker.example")),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.error_message());
    let r = send(&h.app, req("127.0.0.1:8181", Some("null"))).await;
    assert_eq!(r.status, 403);
    let r = send(&h.app, req("localhost:8181", Some("http://localhost:3000"))).await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    let r = send(&h.app, req("[::1]:8181", None)).await;
    assert_eq!(r.status, 200, "{}", r.error_message());

    // With a key, any name may be served; the key is what is checked.
    let h = harness(Opts {
        api_key: Some("k".into()),
        ..Opts::default()
    })
    .await;
    let r = send(&h.app, req("anectx.internal:8181", None)).await;
    assert_eq!(r.status, 401, "{}", r.error_message());
}

/// Feedback over the store's caps is refused as invalid input (422) while
/// parsing, not as a server error from the log.
#[tokio::test]
async fn oversized_feedback_is_422() {
    let h = harness(Opts::default()).await;
    let long = "x".repeat(anectx_store::log::MAX_FEEDBACK_COMMENT_BYTES + 1);
    let r = post(
        &h.app,
        "/v1/feedback",
        json!({"interaction_id": "i-1", "rating": 1, "comment": long}),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.error_message());
    assert_eq!(r.json()["error"]["param"], "comment");
    let ids: Vec<u64> = (0..=anectx_store::log::MAX_FEEDBACK_CHUNKS as u64).collect();
    let r = post(
        &h.app,
        "/v1/feedback",
        json!({"interaction_id": "i-1", "chunk_ids": ids}),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.error_message());
    assert_eq!(r.json()["error"]["param"], "chunk_ids");
}

/// `/admin/*` needs the admin token even on loopback without an API key;
/// other routes do not.
#[tokio::test]
async fn admin_routes_need_the_admin_token() {
    let h = harness(Opts {
        admin_token: Some("s3cret-token".into()),
        ..Opts::default()
    })
    .await;
    let reload = |token: Option<&str>| {
        let mut b = Request::post("/admin/reload").header("content-type", "application/json");
        if let Some(t) = token {
            b = b.header("x-anectx-admin-token", t);
        }
        b.body(Body::from("{}")).unwrap()
    };
    let r = send(&h.app, reload(None)).await;
    assert_eq!(r.status, 401, "{}", r.error_message());
    assert!(r.error_message().contains("x-anectx-admin-token"));
    let r = send(&h.app, reload(Some("guess"))).await;
    assert_eq!(r.status, 401);
    // With the token the route itself answers (this harness has no
    // relevance source: 503).
    let r = send(&h.app, reload(Some("s3cret-token"))).await;
    assert_eq!(r.status, 503, "{}", r.error_message());
    let r = post(&h.app, "/v1/embeddings", json!({"input": "a"})).await;
    assert_eq!(r.status, 200);
}
