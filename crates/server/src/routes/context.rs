//! `POST /v1/context`: the context service's selection, logged for learning.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::filters::parse_filters;
use crate::context::ContextRequest;
use crate::error::ApiError;
use crate::state::{context_error, ApiJson, AppState};

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
    // The service checks the query and the budget (422 naming the field).
    let query = req.query.unwrap_or_default();
    let budget = req
        .budget_tokens
        .unwrap_or(state.context_service().default_budget());
    let filters = parse_filters(req.filters)?;
    let answer = state
        .context_service()
        .answer(ContextRequest {
            query,
            budget_tokens: budget,
            max_chunks: req.max_chunks,
            filters,
        })
        .await
        .map_err(context_error)?;
    let id = answer.interaction_id.clone();
    let mut body = serde_json::to_value(&answer)
        .map_err(|e| ApiError::internal(format!("could not serialise the context: {e}")))?;
    body["id"] = json!(id);
    body["object"] = json!("context");
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&id) {
        headers.insert("x-anectx-interaction-id", v);
    }
    Ok((headers, Json(body)).into_response())
}
