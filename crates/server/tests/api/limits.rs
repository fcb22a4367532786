//! Request and connection limits: load shedding with `Retry-After`, the
//! request timeout, the header-read timeout, the connection cap and a
//! bounded graceful shutdown (the last three on a real loopback socket).

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{get, harness, post, wait_until, Opts, WAIT};

/// Reads what the server sends until it closes the connection or `limit`
/// passes; `None` when it neither answered nor closed in time.
async fn read_until_close(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let r = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    r.ok().map(|()| out)
}

#[tokio::test]
async fn past_the_in_flight_limit_requests_are_shed_with_retry_after() {
    let h = harness(Opts {
        gated: true,
        context: false,
        max_inflight: 1,
        ..Opts::default()
    })
    .await;
    let app = h.app.clone();
    let held =
        tokio::spawn(
            async move { post(&app, "/v1/embeddings", json!({"input": "the cat"})).await },
        );
    let state = h.state.clone();
    wait_until("the first request to hold the only slot", || {
        state.in_flight() == 1
    })
    .await;
    let r = post(&h.app, "/v1/embeddings", json!({"input": "the dog"})).await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(
        r.headers.get("retry-after").map(|v| v.to_str().unwrap()),
        Some("1")
    );
    assert!(
        r.error_message().contains("--max-inflight"),
        "{}",
        r.error_message()
    );
    // Monitoring still answers.
    assert_eq!(get(&h.app, "/health").await.status, StatusCode::OK);
    let m = String::from_utf8(get(&h.app, "/metrics").await.body.to_vec()).unwrap();
    assert!(m.contains("anectx_requests_shed_total 1"), "{m}");
    h.gate.as_ref().unwrap().send(()).unwrap();
    let first = tokio::time::timeout(WAIT, held)
        .await
        .expect("the held request")
        .unwrap();
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(h.state.in_flight(), 0);
}

#[tokio::test]
async fn a_request_past_the_timeout_is_answered_503() {
    let h = harness(Opts {
        gated: true,
        context: false,
        request_timeout: Duration::from_millis(300),
        ..Opts::default()
    })
    .await;
    let r = tokio::time::timeout(
        WAIT,
        post(&h.app, "/v1/embeddings", json!({"input": "the cat"})),
    )
    .await
    .expect("the timeout answers");
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        r.error_message().contains("--request-timeout-secs"),
        "{}",
        r.error_message()
    );
    assert!(r.headers.contains_key("retry-after"));
    h.gate.as_ref().unwrap().send(()).unwrap();
}

/// Serves the harness on 127.0.0.1:0 with `limits`; returns the address,
/// the shutdown trigger and the server task.
async fn listen(
    h: &crate::common::Harness,
    limits: anectx_server::Limits,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), anectx_server::ServerError>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let state = h.state.clone();
    let task = tokio::spawn(anectx_server::serve_with(listener, state, limits, async {
        let _ = rx.await;
    }));
    (addr, tx, task)
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn unfinished_headers_are_cut_off() {
    let h = harness(Opts::default()).await;
    let (addr, stop, task) = listen(
        &h,
        anectx_server::Limits {
            header_read_timeout: Duration::from_millis(300),
            ..Default::default()
        },
    )
    .await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // A slow client: a request line and one header, then nothing.
    s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let got = read_until_close(&mut s, WAIT).await;
    assert!(
        got.is_some(),
        "the server kept a connection with unfinished headers open for {} s",
        WAIT.as_secs()
    );
    // A prompt client is still served.
    let mut ok = TcpStream::connect(addr).await.unwrap();
    ok.write_all(HEALTH).await.unwrap();
    let body = read_until_close(&mut ok, WAIT).await.expect("an answer");
    assert!(
        body.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("shutdown")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn connections_past_the_cap_wait_for_a_free_slot() {
    let h = harness(Opts::default()).await;
    let (addr, stop, task) = listen(
        &h,
        anectx_server::Limits {
            max_connections: 1,
            header_read_timeout: Duration::from_secs(120),
            ..Default::default()
        },
    )
    .await;
    // The only slot, held by a client that sends nothing yet.
    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    second.write_all(HEALTH).await.unwrap();
    assert!(
        read_until_close(&mut second, Duration::from_millis(500))
            .await
            .is_none(),
        "a connection past the cap was served"
    );
    drop(first);
    let body = read_until_close(&mut second, WAIT)
        .await
        .expect("served once the slot is free");
    assert!(
        body.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("shutdown")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn shutdown_does_not_wait_forever_on_a_hung_request() {
    let h = harness(Opts {
        gated: true,
        context: false,
        ..Opts::default()
    })
    .await;
    let (addr, stop, task) = listen(
        &h,
        anectx_server::Limits {
            shutdown_grace: Duration::from_millis(300),
            ..Default::default()
        },
    )
    .await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let body = br#"{"input": "the cat"}"#;
    let req = format!(
        "POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let state = h.state.clone();
    wait_until("the request to be in flight", || state.in_flight() == 1).await;
    stop.send(()).unwrap();
    let done = tokio::time::timeout(WAIT, task).await;
    assert!(
        done.is_ok(),
        "the server was still waiting for a hung request {} s after shutdown",
        WAIT.as_secs()
    );
    done.unwrap().unwrap().unwrap();
    h.gate.as_ref().unwrap().send(()).unwrap();
}

/// A list past `--max-client-batch` is refused at its first extra item,
/// while the body is parsed: the rest of the body (here not even JSON) is
/// never read. A parse that built the whole list first would answer 400.
#[tokio::test]
async fn a_list_past_the_batch_limit_is_refused_while_parsing() {
    let h = harness(Opts {
        max_client_batch: 2,
        ..Opts::default()
    })
    .await;
    for (path, field, body) in [
        (
            "/v1/embeddings",
            "input",
            r#"{"input": ["a", "b", "c", !!!"#,
        ),
        ("/embed", "inputs", r#"{"inputs": ["a", "b", "c", !!!"#),
        ("/api/embed", "input", r#"{"input": ["a", "b", "c", !!!"#),
        (
            "/v1/rerank",
            "documents",
            r#"{"query": "q", "documents": ["a", {"text": "b"}, "c", !!!"#,
        ),
        (
            "/rerank",
            "texts",
            r#"{"query": "q", "texts": ["a", "b", "c", !!!"#,
        ),
    ] {
        let r = crate::common::post_raw(&h.app, path, body.as_bytes().to_vec(), None).await;
        let text = String::from_utf8_lossy(&r.body).to_string();
        // Ollama's dialect answers every unusable request 400.
        let want = if path.starts_with("/api/") {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::PAYLOAD_TOO_LARGE
        };
        assert_eq!(r.status, want, "{path}: {text}");
        assert!(text.contains("more than 2 items"), "{path}: {text}");
        if path.starts_with("/v1/") {
            assert_eq!(r.json()["error"]["param"], field, "{path}: {text}");
        }
    }
    // At the limit, the same lists are read.
    let r = post(&h.app, "/v1/embeddings", json!({"input": ["a", "b"]})).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = post(
        &h.app,
        "/v1/rerank",
        json!({"query": "q", "documents": ["a", {"text": "b"}]}),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}
