//! `POST /v1/rerank`: Cohere's rerank shape.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use anectx_serve::{ServeError, Truncate};
use axum::http::HeaderMap;

use super::embeddings::{check_model, embed_texts_with, json_type, timing_headers};
use crate::body::{Bounded, Documents};
use crate::error::ApiError;
use crate::state::{ApiJson, AppState};

#[derive(Debug, Deserialize)]
pub(crate) struct RerankRequest {
    model: Option<String>,
    query: Option<String>,
    documents: Option<Bounded<Documents>>,
    top_n: Option<usize>,
    #[serde(default)]
    return_documents: bool,
}

/// Relevance scores of documents for one query.
pub(crate) struct DocumentScores {
    /// In [0, 1]: the classifier's probability, or `(cos + 1) / 2`.
    pub scores: Vec<f32>,
    /// Before calibration: the classifier's logit, or the cosine.
    pub raw: Vec<f32>,
    pub tokens: usize,
    pub headers: HeaderMap,
}

/// Scores `texts` against `query`, in document order: with the classifier
/// when the server has one, else by embedding cosine. Shared by
/// `/v1/rerank` and TEI's `/rerank`. A [`ServeError::TooLong`] index is a
/// document's index in both cases.
pub(crate) async fn score_documents(
    state: &AppState,
    query: String,
    texts: Arc<Vec<String>>,
    truncate: Truncate,
) -> Result<DocumentScores, ServeError> {
    if state.inner.embed.scores_pairs() {
        let s = state.inner.embed.score_with(query, texts, truncate).await?;
        let headers = timing_headers(s.timings, &s.truncated);
        let raw = s
            .scores
            .iter()
            .map(|&p| {
                let p = p.clamp(1e-7, 1.0 - 1e-7);
                (p / (1.0 - p)).ln()
            })
            .collect();
        Ok(DocumentScores {
            scores: s.scores,
            raw,
            tokens: s.real_tokens,
            headers,
        })
    } else {
        let mut all = Vec::with_capacity(texts.len() + 1);
        all.push(query);
        all.extend(texts.iter().cloned());
        let (emb, tokens, headers) =
            embed_texts_with(state, all, truncate)
                .await
                .map_err(|e| match e {
                    // The query is input 0; a document's own index is one less.
                    ServeError::TooLong { index, tokens, max } if index > 0 => {
                        ServeError::TooLong {
                            index: index - 1,
                            tokens,
                            max,
                        }
                    }
                    ServeError::TooLong { tokens, max, .. } => ServeError::invalid_param(
                        "query",
                        format!("the query has {tokens} tokens but the model reads at most {max}"),
                    ),
                    other => other,
                })?;
        let q = emb.row(0);
        let raw: Vec<f32> = (1..emb.rows)
            .map(|i| emb.row(i).iter().zip(q).map(|(a, b)| a * b).sum())
            .collect();
        let scores = raw
            .iter()
            .map(|cos| ((cos + 1.0) / 2.0).clamp(0.0, 1.0))
            .collect();
        Ok(DocumentScores {
            scores,
            raw,
            tokens,
            headers,
        })
    }
}

/// How `/v1/rerank` scores documents.
pub(crate) fn rerank_method(state: &AppState) -> &'static str {
    if state.inner.embed.scores_pairs() {
        "classifier"
    } else {
        "embedding_cosine"
    }
}

pub(crate) async fn rerank(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RerankRequest>,
) -> Result<Response, ApiError> {
    check_model(&state, req.model.as_deref())?;
    let query = req.query.filter(|q| !q.trim().is_empty()).ok_or_else(|| {
        ApiError::invalid("`query` is required and must not be empty").with_param("query")
    })?;
    let docs = match req.documents.map(Bounded::into_inner) {
        Some(Value::Array(d)) => d,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "`documents` is {}, expected a list of strings",
                json_type(&other)
            ))
            .with_param("documents"))
        }
        None => {
            return Err(
                ApiError::invalid("`documents` is required: a list of strings")
                    .with_param("documents"),
            )
        }
    };
    if docs.is_empty() {
        return Err(ApiError::invalid("`documents` is an empty list").with_param("documents"));
    }
    if docs.len() > state.inner.config.max_client_batch {
        return Err(ApiError::too_large(format!(
            "{} documents in one request; the limit is {} (--max-client-batch)",
            docs.len(),
            state.inner.config.max_client_batch
        ))
        .with_param("documents"));
    }
    let mut texts = Vec::with_capacity(docs.len());
    for (i, d) in docs.into_iter().enumerate() {
        let t = match d {
            Value::String(s) => s,
            Value::Object(mut o) => match o.remove("text") {
                Some(Value::String(s)) => s,
                _ => {
                    return Err(ApiError::invalid(format!(
                        "`documents[{i}]` is an object without a string `text`"
                    ))
                    .with_param("documents"))
                }
            },
            other => {
                return Err(ApiError::invalid(format!(
                    "`documents[{i}]` is {}, expected a string",
                    json_type(&other)
                ))
                .with_param("documents"))
            }
        };
        if t.trim().is_empty() {
            return Err(
                ApiError::invalid(format!("`documents[{i}]` is empty")).with_param("documents")
            );
        }
        texts.push(t);
    }
    let texts = Arc::new(texts);
    let scored = score_documents(&state, query, texts.clone(), Truncate::Cut)
        .await
        .map_err(ApiError::from)?;
    let (scores, tokens, headers) = (scored.scores, scored.tokens, scored.headers);
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    if let Some(n) = req.top_n {
        order.truncate(n);
    }
    let results: Vec<Value> = order
        .into_iter()
        .map(|i| {
            let mut r = json!({"index": i, "relevance_score": scores[i]});
            if req.return_documents {
                r["document"] = json!({"text": texts[i]});
            }
            r
        })
        .collect();
    let body = json!({
        "object": "rerank",
        "id": format!("rerank-{}", state.context_service().next_interaction_id()),
        "model": state
            .inner
            .config
            .classifier_id
            .clone()
            .unwrap_or_else(|| state.inner.config.model_id.clone()),
        "results": results,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "meta": {"scoring": rerank_method(&state)},
    });
    Ok((headers, Json(body)).into_response())
}
