//! Hugging Face TEI's routes: `POST /embed`, `/rerank` and `/tokenize`.
//!
//! Same embedding and scoring path as `/v1/embeddings` and `/v1/rerank`
//! ([`anectx_serve::EmbedService`]); errors are answered in TEI's shape,
//! `{"error": "…", "error_type": "Validation"}`, by
//! [`crate::middleware::dialect`] (see [`ApiError::to_tei`]).

use std::sync::Arc;

use anectx_serve::Truncate;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::embeddings::{embed_texts_with, parse_texts, shorten, too_long};
use super::rerank::score_documents;
use crate::body::{Bounded, Inputs, Texts};
use crate::error::ApiError;
use crate::state::{ApiJson, AppState};

fn yes() -> bool {
    true
}

/// `truncate: false` (TEI's default) refuses too-long inputs.
fn truncate_policy(truncate: bool) -> Truncate {
    if truncate {
        Truncate::Cut
    } else {
        Truncate::Refuse
    }
}

/// TEI cuts on the right by default; cutting on the left is not offered.
fn check_direction(direction: Option<&str>) -> Result<(), ApiError> {
    match direction {
        None => Ok(()),
        Some(d) if d.eq_ignore_ascii_case("right") => Ok(()),
        Some(d) => Err(ApiError::invalid(format!(
            "`truncation_direction` is `{d}`; this server truncates on the right only (`Right`)"
        ))
        .with_param("truncation_direction")),
    }
}

/// This server has no prompt templates (TEI reads them from the model's
/// sentence-transformers config).
fn check_prompt(prompt_name: Option<&str>) -> Result<(), ApiError> {
    match prompt_name {
        None => Ok(()),
        Some(p) => Err(ApiError::invalid(format!(
            "`prompt_name` is `{p}`, but this model defines no prompts; prepend the prompt \
             to the text instead"
        ))
        .with_param("prompt_name")),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct EmbedRequest {
    inputs: Option<Bounded<Inputs>>,
    #[serde(default = "yes")]
    normalize: bool,
    #[serde(default)]
    truncate: bool,
    truncation_direction: Option<String>,
    dimensions: Option<usize>,
    prompt_name: Option<String>,
}

/// `POST /embed`: `{inputs, normalize, truncate, dimensions}` → `[[f32]]`.
pub(crate) async fn embed(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<EmbedRequest>,
) -> Result<Response, ApiError> {
    if !req.normalize {
        return Err(ApiError::invalid(
            "`normalize: false` is not supported: this server's models return unit-length \
             embeddings only",
        )
        .with_param("normalize"));
    }
    check_direction(req.truncation_direction.as_deref())?;
    check_prompt(req.prompt_name.as_deref())?;
    let texts = parse_texts(
        req.inputs.map(Bounded::into_inner),
        "inputs",
        state.inner.config.max_client_batch,
        ApiError::empty,
    )?;
    let (emb, _tokens, headers) = embed_texts_with(&state, texts, truncate_policy(req.truncate))
        .await
        .map_err(|e| too_long(e, |i| format!("inputs[{i}]")))?;
    let rows: Vec<Vec<f32>> = match req.dimensions {
        Some(d) => shorten(&emb, d, "dimensions")?,
        None => emb.iter().map(<[f32]>::to_vec).collect(),
    };
    Ok((headers, Json(rows)).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct RerankRequest {
    query: Option<String>,
    texts: Option<Bounded<Texts>>,
    #[serde(default)]
    raw_scores: bool,
    #[serde(default)]
    return_text: bool,
    #[serde(default)]
    truncate: bool,
    truncation_direction: Option<String>,
}

#[derive(Debug, Serialize)]
struct Rank {
    index: usize,
    score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

/// `POST /rerank`: `{query, texts, raw_scores, return_text, truncate}` →
/// `[{index, score, text?}]`, best first.
pub(crate) async fn rerank(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RerankRequest>,
) -> Result<Response, ApiError> {
    check_direction(req.truncation_direction.as_deref())?;
    let query = match req.query {
        None => {
            return Err(
                ApiError::empty("`query` is required: the text to rank `texts` against")
                    .with_param("query"),
            )
        }
        Some(q) if q.trim().is_empty() => {
            return Err(ApiError::empty("`query` is empty").with_param("query"))
        }
        Some(q) => q,
    };
    let texts = parse_texts(
        req.texts.map(Bounded::into_inner),
        "texts",
        state.inner.config.max_client_batch,
        ApiError::empty,
    )?;
    let texts = Arc::new(texts);
    let scored = score_documents(&state, query, texts.clone(), truncate_policy(req.truncate))
        .await
        .map_err(|e| too_long(e, |i| format!("texts[{i}]")))?;
    let scores = if req.raw_scores {
        &scored.raw
    } else {
        &scored.scores
    };
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let ranks: Vec<Rank> = order
        .into_iter()
        .map(|i| Rank {
            index: i,
            score: scores[i],
            text: req.return_text.then(|| texts[i].clone()),
        })
        .collect();
    Ok((scored.headers, Json(ranks)).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenizeRequest {
    inputs: Option<Bounded<Inputs>>,
    #[serde(default = "yes")]
    add_special_tokens: bool,
    prompt_name: Option<String>,
}

/// `POST /tokenize`: `{inputs, add_special_tokens}` → per input a list of
/// `{id, text, special, start, stop}` (character offsets; `null` for
/// special tokens). Nothing is truncated.
pub(crate) async fn tokenize(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<TokenizeRequest>,
) -> Result<Response, ApiError> {
    check_prompt(req.prompt_name.as_deref())?;
    let texts = parse_texts(
        req.inputs.map(Bounded::into_inner),
        "inputs",
        state.inner.config.max_client_batch,
        ApiError::empty,
    )?;
    let tokens = state
        .inner
        .embed
        .tokens(Arc::new(texts), req.add_special_tokens)
        .await?;
    Ok(Json(tokens).into_response())
}
