//! `POST /v1/context`: the context service's selection, logged for learning.

use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::filters::parse_filters;
use crate::context::{ContextRequest, Interaction, InteractionKind};
use crate::error::ApiError;
use crate::state::{now_ms, ApiJson, AppState};

#[derive(Debug, Deserialize)]
pub(crate) struct ContextBody {
    query: Option<String>,
    budget_tokens: Option<usize>,
    max_chunks: Option<usize>,
    filters: Option<serde_json::Value>,
}

pub(crate) async fn context(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ContextBody>,
) -> Result<Response, ApiError> {
    let query = req.query.filter(|q| !q.trim().is_empty()).ok_or_else(|| {
        ApiError::invalid("`query` is required and must not be empty").with_param("query")
    })?;
    let budget = req
        .budget_tokens
        .unwrap_or(state.inner.config.context_budget);
    if budget == 0 {
        return Err(
            ApiError::invalid("`budget_tokens` must be positive").with_param("budget_tokens")
        );
    }
    let filters = parse_filters(req.filters)?;
    let start = Instant::now();
    let timestamp_ms = now_ms();
    let result = state
        .select_context(ContextRequest {
            query: query.clone(),
            budget_tokens: budget,
            max_chunks: req.max_chunks,
            filters,
        })
        .await?;
    let id = state.next_interaction_id();
    // The interaction is logged (committed) before the answer goes out, so
    // `logged: true` means it is in the log.
    let logged = state
        .record_and_wait(Interaction {
            id: id.clone(),
            kind: InteractionKind::Context,
            timestamp_ms,
            query,
            chunks: result.chunks.clone(),
            response: None,
            model: None,
            upstream_status: None,
            streamed: false,
            complete: true,
            latency_ms: start.elapsed().as_millis() as u64,
            budget_tokens: Some(result.budget_tokens),
            tokens_used: Some(result.tokens_used),
            trace: result.trace.clone(),
        })
        .await;
    let mut body = serde_json::to_value(&result)
        .map_err(|e| ApiError::internal(format!("could not serialise the context: {e}")))?;
    body["id"] = json!(id);
    body["interaction_id"] = json!(id);
    body["logged"] = json!(logged);
    body["object"] = json!("context");
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&id) {
        headers.insert("x-anectx-interaction-id", v);
    }
    Ok((headers, Json(body)).into_response())
}
