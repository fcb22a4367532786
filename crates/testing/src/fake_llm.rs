//! A fake OpenAI-compatible chat LLM for tests and demos of the proxy.
//!
//! `POST /v1/chat/completions` answers `"I saw sources [1] [2]."` — the
//! `[n]` markers found in the request's system messages, in order (or
//! `"I saw no sources."`) — as a normal completion or, with `"stream": true`,
//! as SSE chunks of a few characters each ending in `data: [DONE]`. Every
//! request body it receives is kept for inspection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// Requests the fake LLM received.
#[derive(Debug, Default, Clone)]
pub struct FakeLlmLog(pub Arc<Mutex<Vec<Value>>>);

impl FakeLlmLog {
    pub fn requests(&self) -> Vec<Value> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The `[n]` markers that start a line in the system messages of a chat
/// request, in order.
pub fn markers_in_system(body: &Value) -> Vec<usize> {
    let mut out = Vec::new();
    let msgs = body
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for m in msgs {
        if m.get("role").and_then(Value::as_str) != Some("system") {
            continue;
        }
        let text = m.get("content").and_then(Value::as_str).unwrap_or("");
        // Sources are announced as `[n]` at the start of a line.
        for line in text.lines() {
            let Some(rest) = line.strip_prefix('[') else {
                continue;
            };
            let Some(j) = rest.find(']') else { continue };
            if let Ok(n) = rest[..j].parse::<usize>() {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
    }
    out
}

/// The answer the fake LLM gives to `body`.
pub fn answer_for(body: &Value) -> String {
    let markers = markers_in_system(body);
    if markers.is_empty() {
        "I saw no sources.".into()
    } else {
        let list: Vec<String> = markers.iter().map(|n| format!("[{n}]")).collect();
        format!("I saw sources {}.", list.join(" "))
    }
}

async fn completions(State(log): State<FakeLlmLog>, Json(body): Json<Value>) -> Response {
    log.0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(body.clone());
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake")
        .to_string();
    let answer = answer_for(&body);
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        let mut sse = String::new();
        let first = json!({"id": "fake-1", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]});
        sse.push_str(&format!("data: {first}\n\n"));
        let chars: Vec<char> = answer.chars().collect();
        for piece in chars.chunks(4) {
            let s: String = piece.iter().collect();
            let c = json!({"id": "fake-1", "object": "chat.completion.chunk", "created": 0, "model": model,
                "choices": [{"index": 0, "delta": {"content": s}, "finish_reason": null}]});
            sse.push_str(&format!("data: {c}\n\n"));
        }
        let last = json!({"id": "fake-1", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        sse.push_str(&format!("data: {last}\n\ndata: [DONE]\n\n"));
        return ([(CONTENT_TYPE, "text/event-stream")], sse).into_response();
    }
    Json(json!({
        "id": "fake-1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }))
    .into_response()
}

/// The fake LLM's router (serves `/v1/chat/completions`).
pub fn router(log: FakeLlmLog) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(log)
}

/// Starts the fake LLM on 127.0.0.1 with an ephemeral port; returns its
/// address (base URL `http://{addr}/v1`) and the request log. It runs until
/// the runtime stops.
pub async fn spawn() -> std::io::Result<(SocketAddr, FakeLlmLog)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let log = FakeLlmLog::default();
    let app = router(log.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("fake LLM stopped: {e}");
        }
    });
    Ok((addr, log))
}
