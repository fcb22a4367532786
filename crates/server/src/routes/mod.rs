//! The router: one module per route group; middleware in [`crate::middleware`].

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use crate::middleware::{auth, dialect, local_only, method_not_allowed, not_found, shed, track};
use crate::state::AppState;

pub(crate) mod admin;
pub mod chat;
pub(crate) mod context;
pub(crate) mod embeddings;
pub(crate) mod feedback;
pub(crate) mod filters;
pub(crate) mod info;
pub(crate) mod ollama;
pub(crate) mod rerank;
pub(crate) mod tei;

/// The router with every route, auth and metrics.
pub fn router(state: AppState) -> Router {
    let limit = state.inner.config.payload_limit;
    // MCP over Streamable HTTP on the same context service, behind the same
    // auth, loopback checks and load shedding; rmcp's own Host and Origin
    // checks are on too when no API key guards the server.
    let mcp = anectx_mcp::http_service(
        state.context_service().clone(),
        anectx_mcp::HttpAccess {
            loopback_only: state.inner.config.api_key.is_none(),
            cancel: state.inner.mcp_cancel.clone(),
            max_body_bytes: limit,
        },
    );
    Router::new()
        .nest_service("/mcp", mcp)
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/embeddings", post(embeddings::embeddings))
        .route("/v1/rerank", post(rerank::rerank))
        .route("/embed", post(tei::embed))
        .route("/rerank", post(tei::rerank))
        .route("/tokenize", post(tei::tokenize))
        .route("/api/embed", post(ollama::embed))
        .route("/v1/context", post(context::context))
        .route("/v1/feedback", post(feedback::feedback))
        .route("/admin/reload", post(admin::admin_reload))
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/models", get(info::models))
        .route("/health", get(info::health))
        .route("/info", get(info::info))
        .route("/metrics", get(info::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), shed))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            local_only,
        ))
        .layer(axum::middleware::from_fn(dialect))
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}
