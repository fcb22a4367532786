//! `POST /v1/embeddings` (also `/embeddings`): OpenAI's embeddings shape.

use std::sync::Arc;
use std::time::Duration;

use anectx_core::Embeddings;
use anectx_serve::{CallTimings, ServeError, Truncate};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::body::{Bounded, Input};
use crate::error::ApiError;
use crate::state::{ApiJson, AppState};

/// Checks a request's `model` name (only under `strict_model`; otherwise any
/// name is accepted, as TEI does, and answered by the served model).
pub(crate) fn check_model(state: &AppState, model: Option<&str>) -> Result<(), ApiError> {
    match model {
        Some(m)
            if state.inner.config.strict_model
                && !m.is_empty()
                && !state.inner.config.serves(m) =>
        {
            Err(ApiError::not_found(format!(
                "the model `{m}` does not exist on this server; it serves `{}` (GET /v1/models)",
                state.inner.config.model_id
            ))
            .with_param("model"))
        }
        _ => Ok(()),
    }
}

pub(crate) fn timing_headers(t: CallTimings, truncated: &[usize]) -> HeaderMap {
    let (tokenize, t) = (t.tokenize, t.jobs);
    let mut h = HeaderMap::new();
    let ms = |d: Duration| HeaderValue::from_str(&format!("{:.3}", d.as_secs_f64() * 1e3));
    if let Ok(v) = ms(tokenize) {
        h.insert("x-anectx-tokenize-ms", v);
    }
    if let Ok(v) = ms(t.queue) {
        h.insert("x-anectx-queue-ms", v);
    }
    if let Ok(v) = ms(t.inference) {
        h.insert("x-anectx-inference-ms", v);
    }
    if let Ok(v) = HeaderValue::from_str(&t.batch_rows.to_string()) {
        h.insert("x-anectx-batch-rows", v);
    }
    if !truncated.is_empty() {
        let list: Vec<String> = truncated.iter().map(usize::to_string).collect();
        if let Ok(v) = HeaderValue::from_str(&list.join(",")) {
            h.insert("x-anectx-truncated", v);
        }
    }
    h
}

#[derive(Debug, Deserialize)]
pub(crate) struct EmbeddingsRequest {
    input: Option<Bounded<Input>>,
    model: Option<String>,
    encoding_format: Option<String>,
    dimensions: Option<usize>,
    #[allow(dead_code)]
    user: Option<String>,
}

#[derive(Serialize)]
struct EmbeddingObject {
    object: &'static str,
    index: usize,
    embedding: Value,
}

/// Reads `input`: a string or a list of strings. Token arrays are refused.
fn parse_input(v: Option<Value>, max: usize) -> Result<Vec<String>, ApiError> {
    parse_texts(v, "input", max, ApiError::invalid)
}

/// Reads a request's texts from `field` (`input`, TEI's `inputs`): a string
/// or a non-empty list of non-empty strings, at most `max` of them. Token
/// arrays are refused. `empty` builds the error for a missing or empty
/// input (422 in OpenAI's shape, `Empty` 400 in TEI's).
pub(crate) fn parse_texts(
    v: Option<Value>,
    field: &'static str,
    max: usize,
    empty: fn(String) -> ApiError,
) -> Result<Vec<String>, ApiError> {
    let v = v.ok_or_else(|| {
        empty(format!(
            "`{field}` is required: a string or a list of strings"
        ))
        .with_param(field)
    })?;
    let texts = match v {
        Value::String(s) => vec![s],
        Value::Array(items) => {
            if items.is_empty() {
                return Err(empty(format!(
                    "`{field}` is an empty list: give at least one text"
                ))
                .with_param(field));
            }
            let mut out = Vec::with_capacity(items.len());
            for (i, it) in items.into_iter().enumerate() {
                match it {
                    Value::String(s) => out.push(s),
                    Value::Number(_) | Value::Array(_) => {
                        return Err(ApiError::invalid(format!(
                            "token-id inputs are not supported: send `{field}` as text \
                             (a string or a list of strings)"
                        ))
                        .with_param(field))
                    }
                    other => {
                        return Err(ApiError::invalid(format!(
                            "`{field}[{i}]` is {}, expected a string",
                            json_type(&other)
                        ))
                        .with_param(field))
                    }
                }
            }
            out
        }
        other => {
            return Err(ApiError::invalid(format!(
                "`{field}` is {}, expected a string or a list of strings",
                json_type(&other)
            ))
            .with_param(field))
        }
    };
    if texts.len() > max {
        return Err(ApiError::too_large(format!(
            "{} inputs in one request; the limit is {max} (--max-client-batch)",
            texts.len()
        ))
        .with_param(field));
    }
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(empty(format!(
            "`{field}[{i}]` is empty: there is nothing to embed"
        ))
        .with_param(field));
    }
    Ok(texts)
}

/// Keeps the first `d` dimensions of each row and scales them back to unit
/// length (Matryoshka-style shortening, as Ollama's and TEI's `dimensions`
/// do). `d` must be between 1 and the model's dimension.
pub(crate) fn shorten(
    emb: &Embeddings,
    d: usize,
    field: &'static str,
) -> Result<Vec<Vec<f32>>, ApiError> {
    if d == 0 || d > emb.dim {
        return Err(ApiError::invalid(format!(
            "`{field}` is {d}; this model produces {} dimensions, so give 1 to {}",
            emb.dim, emb.dim
        ))
        .with_param(field));
    }
    Ok(emb
        .iter()
        .map(|row| {
            let mut v = row[..d].to_vec();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if n > 0.0 {
                v.iter_mut().for_each(|x| *x /= n);
            }
            v
        })
        .collect())
}

/// The message for an input longer than the model reads, under
/// `truncate: false`; `name(index)` names the input (e.g. `inputs[2]`).
pub(crate) fn too_long(e: ServeError, name: impl Fn(usize) -> String) -> ApiError {
    match e {
        ServeError::TooLong { index, tokens, max } => ApiError::too_large(format!(
            "`{}` has {tokens} tokens but the model reads at most {max}; \
             send `truncate: true` to cut it",
            name(index)
        )),
        other => other.into(),
    }
}

pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Embeds texts through the batcher; returns the embeddings, real tokens and headers.
pub(crate) async fn embed_texts(
    state: &AppState,
    texts: Vec<String>,
) -> Result<(Embeddings, usize, HeaderMap), ApiError> {
    embed_texts_with(state, texts, Truncate::Cut)
        .await
        .map_err(ApiError::from)
}

/// [`embed_texts`] with a choice for too-long inputs.
pub(crate) async fn embed_texts_with(
    state: &AppState,
    texts: Vec<String>,
    truncate: Truncate,
) -> Result<(Embeddings, usize, HeaderMap), ServeError> {
    let e = state
        .inner
        .embed
        .embed_with(Arc::new(texts), truncate)
        .await?;
    let headers = timing_headers(e.timings, &e.truncated);
    Ok((e.embeddings, e.real_tokens, headers))
}

pub(crate) async fn embeddings(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<EmbeddingsRequest>,
) -> Result<Response, ApiError> {
    check_model(&state, req.model.as_deref())?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "`encoding_format` is `{other}`; use `float` or `base64`"
            ))
            .with_param("encoding_format"))
        }
    };
    let texts = parse_input(
        req.input.map(Bounded::into_inner),
        state.inner.config.max_client_batch,
    )?;
    let (emb, tokens, headers) = embed_texts(&state, texts).await?;
    if let Some(d) = req.dimensions {
        if d != emb.dim {
            return Err(ApiError::invalid(format!(
                "`dimensions` is {d} but this model produces {} dimensions",
                emb.dim
            ))
            .with_param("dimensions"));
        }
    }
    let data: Vec<EmbeddingObject> = emb
        .iter()
        .enumerate()
        .map(|(index, row)| EmbeddingObject {
            object: "embedding",
            index,
            embedding: if base64 {
                let bytes: Vec<u8> = row.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(row)
            },
        })
        .collect();
    let body = json!({
        "object": "list",
        "data": data,
        "model": state.inner.config.model_id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    Ok((headers, Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    #[test]
    fn parse_input_rejects_token_arrays_and_wrong_types() {
        assert!(parse_input(Some(json!("hi")), 4).is_ok());
        let e = parse_input(Some(json!([[1, 2]])), 4).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.contains("token-id"), "{}", e.message);
        let e = parse_input(Some(json!(5)), 4).unwrap_err();
        assert!(e.message.contains("a number"), "{}", e.message);
        let e = parse_input(Some(json!(["a", "b", "c"])), 2).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
