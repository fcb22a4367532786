//! Ollama's `POST /api/embed`.
//!
//! Same embedding path as `/v1/embeddings`
//! ([`anectx_serve::EmbedService`]); errors are answered in Ollama's shape,
//! `{"error": "…"}`, by [`crate::middleware::dialect`] (see
//! [`ApiError::to_ollama`]).

use std::time::{Duration, Instant};

use anectx_serve::Truncate;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::embeddings::{check_model, embed_texts_with, parse_texts, shorten, too_long};
use crate::body::{Bounded, Input};
use crate::error::ApiError;
use crate::state::{ApiJson, AppState};

#[derive(Debug, Deserialize)]
pub(crate) struct EmbedRequest {
    model: Option<String>,
    input: Option<Bounded<Input>>,
    /// Ollama's default is to cut too-long inputs.
    truncate: Option<bool>,
    /// 0 (Ollama's "unset") or absent: the model's dimension.
    dimensions: Option<i64>,
    // Accepted and ignored: the model stays loaded while the server runs,
    // and sampling options do not apply to embeddings.
    #[allow(dead_code)]
    keep_alive: Option<Value>,
    #[allow(dead_code)]
    options: Option<Value>,
}

#[derive(Debug, Serialize)]
struct EmbedResponse {
    model: String,
    embeddings: Vec<Vec<f32>>,
    /// Nanoseconds.
    total_duration: u64,
    /// Nanoseconds; always 0: the model is loaded when the server starts.
    load_duration: u64,
    prompt_eval_count: usize,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `POST /api/embed`: `{model, input, truncate, dimensions}` →
/// `{model, embeddings, total_duration, load_duration, prompt_eval_count}`.
/// Embeddings are unit length; `dimensions` keeps the first N and
/// renormalises. No input (absent, `""` or `[]`) answers no embeddings, as
/// Ollama does.
pub(crate) async fn embed(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<EmbedRequest>,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    check_model(&state, req.model.as_deref())?;
    let model = req
        .model
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| state.inner.config.model_id.clone());
    let dimensions = match req.dimensions {
        None | Some(0) => None,
        Some(d) => Some(usize::try_from(d).map_err(|_| {
            ApiError::invalid(format!("`dimensions` is {d}; give a positive number"))
                .with_param("dimensions")
        })?),
    };
    let input = req.input.map(Bounded::into_inner);
    let nothing = match &input {
        None => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(_) => false,
    };
    if nothing {
        let body = EmbedResponse {
            model,
            embeddings: Vec::new(),
            total_duration: nanos(start.elapsed()),
            load_duration: 0,
            prompt_eval_count: 0,
        };
        return Ok(Json(body).into_response());
    }
    let texts = parse_texts(
        input,
        "input",
        state.inner.config.max_client_batch,
        ApiError::invalid,
    )?;
    let truncate = if req.truncate.unwrap_or(true) {
        Truncate::Cut
    } else {
        Truncate::Refuse
    };
    let (emb, tokens, headers) = embed_texts_with(&state, texts, truncate)
        .await
        .map_err(|e| too_long(e, |i| format!("input[{i}]")))?;
    let embeddings = match dimensions {
        Some(d) => shorten(&emb, d, "dimensions")?,
        None => emb.iter().map(<[f32]>::to_vec).collect(),
    };
    let body = EmbedResponse {
        model,
        embeddings,
        total_duration: nanos(start.elapsed()),
        load_duration: 0,
        prompt_eval_count: tokens,
    };
    Ok((headers, Json(body)).into_response())
}
