//! `POST /v1/feedback`: explicit feedback on an interaction.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use anectx_serve::ServeError;

use super::embeddings::json_type;
use crate::error::ApiError;
use crate::state::{now_ms, ApiJson, AppState};

/// Reads `chunk_ids`: numbers or numeric strings (`/v1/context` gives ids as strings).
fn parse_chunk_ids(v: Option<Value>) -> Result<Vec<u64>, ApiError> {
    let bad = |m: String| ApiError::invalid(m).with_param("chunk_ids");
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            if items.len() > 1000 {
                return Err(bad(format!("{} chunk ids; at most 1000", items.len())));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, it)| {
                    match it {
                        Value::Number(n) => n.as_u64(),
                        Value::String(s) => s.trim().parse::<u64>().ok(),
                        _ => None,
                    }
                    .ok_or_else(|| {
                        bad(format!(
                            "`chunk_ids[{i}]` is {it}, expected a chunk id (a non-negative integer)"
                        ))
                    })
                })
                .collect()
        }
        Some(other) => Err(bad(format!(
            "`chunk_ids` is {}, expected a list of chunk ids",
            json_type(&other)
        ))),
    }
}

pub(crate) async fn feedback(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let Value::Object(mut o) = body else {
        return Err(ApiError::invalid("the request body must be a JSON object"));
    };
    let uid =
        match o.remove("interaction_id") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            Some(Value::Null) | None => return Err(ApiError::invalid(
                "`interaction_id` is required: the `interaction_id` of a /v1/context answer or \
                 the `x-anectx-interaction-id` header of a chat answer",
            )
            .with_param("interaction_id")),
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "`interaction_id` is {}, expected a non-empty string",
                    json_type(&other)
                ))
                .with_param("interaction_id"))
            }
        };
    let rating = match o.remove("rating") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_i64() == Some(1) || n.as_i64() == Some(-1) => {
            n.as_i64().map(|r| r as i32)
        }
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "`rating` is {other}; use 1 (helpful) or -1 (not helpful)"
            ))
            .with_param("rating"))
        }
    };
    let chunk_ids = parse_chunk_ids(o.remove("chunk_ids"))?;
    if chunk_ids.len() > anectx_store::log::MAX_FEEDBACK_CHUNKS {
        return Err(ApiError::invalid(format!(
            "`chunk_ids` names {} chunks; at most {} per feedback",
            chunk_ids.len(),
            anectx_store::log::MAX_FEEDBACK_CHUNKS
        ))
        .with_param("chunk_ids"));
    }
    let comment = match o.remove("comment") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= anectx_store::log::MAX_FEEDBACK_COMMENT_BYTES => {
            Some(s)
        }
        Some(Value::String(s)) => {
            return Err(ApiError::invalid(format!(
                "`comment` is {} bytes; at most {} are kept",
                s.len(),
                anectx_store::log::MAX_FEEDBACK_COMMENT_BYTES
            ))
            .with_param("comment"))
        }
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "`comment` is {}, expected a string",
                json_type(&other)
            ))
            .with_param("comment"))
        }
    };
    if rating.is_none() && chunk_ids.is_empty() && comment.is_none() {
        return Err(ApiError::invalid(
            "the feedback is empty: give `rating`, `chunk_ids` or `comment`",
        ));
    }
    let f = anectx_store::Feedback {
        interaction_uid: uid.clone(),
        ts_ms: i64::try_from(now_ms()).unwrap_or(i64::MAX),
        rating,
        chunk_ids,
        comment,
    };
    let id = match state.context_service().feedback(f).await {
        Ok(Some(id)) => id,
        Ok(None) => {
            return Err(
                ApiError::invalid(format!("no interaction `{uid}` is in the log"))
                    .with_param("interaction_id"),
            )
        }
        Err(ServeError::Internal(e)) => return Err(ApiError::internal(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    Ok(Json(json!({"object": "feedback", "id": id, "interaction_id": uid})).into_response())
}
