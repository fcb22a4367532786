//! `GET /v1/models`, `/health`, `/info` and `/metrics`.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::rerank::rerank_method;
use crate::state::AppState;

pub(crate) async fn models(State(state): State<AppState>) -> Json<Value> {
    let created = state.inner.start_ms / 1000;
    let mut data = vec![json!({
        "id": state.inner.config.model_id,
        "object": "model",
        "created": created,
        "owned_by": "anectx",
    })];
    for a in &state.inner.config.model_aliases {
        data.push(json!({"id": a, "object": "model", "created": created, "owned_by": "anectx"}));
    }
    if let Some(c) = &state.inner.config.classifier_id {
        data.push(json!({"id": c, "object": "model", "created": created, "owned_by": "anectx"}));
    }
    Json(json!({"object": "list", "data": data}))
}

pub(crate) async fn health(State(state): State<AppState>) -> Response {
    let h = state.batcher().health();
    let status = if h.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"status": if h.ok { "ok" } else { "unavailable" }, "detail": h.detail})),
    )
        .into_response()
}

pub(crate) async fn info(State(state): State<AppState>) -> Json<Value> {
    let s = &state.inner;
    let b = s.embed.batcher().info();
    let c = s.embed.batcher().config();
    Json(json!({
        "name": "anectx",
        "version": env!("CARGO_PKG_VERSION"),
        "model": {
            "id": s.config.model_id,
            "aliases": s.config.model_aliases,
            "kind": s.config.model_kind,
            "version": s.config.model_version,
            "dim": b.embedding_dim,
            "max_seq": s.embed.tokenizer().max_seq(),
            "seq_buckets": s.embed.tokenizer().buckets(),
        },
        "classifier": s.config.classifier_id,
        "rerank_scoring": rerank_method(&state),
        "backend": {
            "name": b.name,
            "max_batch": b.shapes.max_batch,
            "seq_buckets": b.shapes.seq_buckets,
            "choice": s.config.backend_choice,
        },
        "limits": {
            "payload_bytes": s.config.payload_limit,
            "max_client_batch": s.config.max_client_batch,
            "max_batch_rows": c.max_batch_rows,
            "max_batch_tokens": c.max_batch_tokens,
            "max_queue_requests": c.max_queue_requests,
            "max_queue_tokens": c.max_queue_tokens,
        },
        "context": s.context.provider().map(|p| p.describe()),
        "context_budget": s.config.context_budget,
        "llm": s.config.llm.as_ref().map(|l| l.base_url.clone()),
        "auth": s.config.api_key.is_some(),
        "relevance": relevance_info(&state),
        "interaction_log": s.context.recorder().enabled(),
    }))
}

fn relevance_info(state: &AppState) -> Value {
    let s = &state.inner;
    if let Some(r) = &s.reloader {
        return json!(r.status());
    }
    let (ok, failed) = s.metrics.reloads();
    match &s.engine {
        Some(e) => json!({
            "version": e.relevance_model().version(),
            "reloads_ok": ok,
            "reloads_failed": failed,
            "source": null,
        }),
        None => Value::Null,
    }
}

pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.inner.metrics.render(),
    )
        .into_response()
}
