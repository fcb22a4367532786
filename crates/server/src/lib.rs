//! The anectx HTTP server: a thin layer over the serving core
//! (`anectx-serve`), which owns batching, embedding, context selection,
//! recording and reload.
//!
//! Routes (see [`router`]):
//!
//! | route | shape |
//! | --- | --- |
//! | `POST /v1/embeddings` (also `/embeddings`) | OpenAI embeddings: `input` string or list of strings, `encoding_format` `float`/`base64`, `usage` |
//! | `POST /v1/rerank` | Cohere/infinity rerank: `query`, `documents`, `top_n`, `return_documents` → `results[{index, relevance_score, document?}]` |
//! | `POST /v1/context` | the [`ContextProvider`]'s selection as JSON |
//! | `POST /v1/chat/completions` | proxy to an OpenAI-compatible LLM with context injected ([`chat`]) |
//! | `POST /v1/feedback` | `{interaction_id, rating?: 1 \| -1, chunk_ids?, comment?}` into the interaction log |
//! | `POST /admin/reload` | load the [`RelevanceSource`]'s current relevance model and swap it in ([`reload`]) |
//! | `GET /v1/models`, `/health`, `/info`, `/metrics` | model list, health, configuration, Prometheus text |
//!
//! Errors use OpenAI's shape `{"error": {"message", "type", "param", "code"}}`
//! ([`ApiError`] lists the statuses).
//!
//! Principal types: [`Batcher`] (the backend on its own thread with dynamic
//! batching), [`AppState`] and [`ServerConfig`], the [`ContextProvider`] and
//! [`InteractionRecorder`] traits, [`SqliteRecorder`] (the interaction log),
//! [`RelevanceReloader`] (hot swap) and [`Metrics`].

mod body;
mod error;
mod listen;
mod middleware;
mod routes;
mod state;

pub use routes::chat;

// The serving core lives in `anectx-serve`; these paths stay for callers.
pub use anectx_serve::{batcher, context, memory, metrics, reload};

use std::future::Future;
use std::net::SocketAddr;

pub use anectx_serve::{
    BackendInfo, BatchError, Batcher, BatcherConfig, BatcherEmbedder, ContextChunk, ContextError,
    ContextProvider, ContextRequest, ContextResult, EmbedService, EngineContext, Interaction,
    InteractionKind, InteractionRecorder, MemoryContext, Metrics, NoopRecorder, RecordError,
    RegistrySource, RelevanceReloader, RelevanceSource, ReloadError, ReloadOutcome, ServeError,
    SourceError, SqliteRecorder,
};
pub use error::{ApiError, ServerError};
pub use listen::Limits;
pub use middleware::ADMIN_TOKEN_HEADER;
pub use routes::router;
pub use state::{
    ApiJson, AppState, AppStateBuilder, LlmConfig, ServerConfig, DEFAULT_RELEVANCE_POLL,
};

/// Refuses a non-loopback bind without an API key: anectx is safe by default.
pub fn check_bind(addr: &SocketAddr, api_key: Option<&str>) -> Result<(), ServerError> {
    let has_key = api_key.is_some_and(|k| !k.trim().is_empty());
    if !addr.ip().is_loopback() && !has_key {
        return Err(ServerError::Config(format!(
            "refusing to listen on {addr} without an API key: any host that can reach it could \
             use the server. Pass --api-key KEY (or set ANECTX_API_KEY) to require \
             `Authorization: Bearer KEY`, or bind 127.0.0.1"
        )));
    }
    Ok(())
}

/// Binds `addr` (after [`check_bind`]).
pub async fn bind(
    addr: SocketAddr,
    api_key: Option<&str>,
) -> Result<tokio::net::TcpListener, ServerError> {
    check_bind(&addr, api_key)?;
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Serves `state` on `listener` with the default [`Limits`] until
/// `shutdown` completes, then lets in-flight requests finish (within the
/// limits' grace period).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve_with(listener, state, Limits::default(), shutdown).await
}

/// [`serve`] with explicit connection [`Limits`].
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let background = state.spawn_background();
    // MCP sessions hold streams open: end them when the shutdown starts.
    let mcp_cancel = state.inner.mcp_cancel.clone();
    let shutdown = async move {
        shutdown.await;
        mcp_cancel.cancel();
    };
    let r = listen::run(listener, router(state), limits, shutdown).await;
    if let Some(b) = background {
        b.abort();
    }
    r?;
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("could not listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("could not listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received; shutting down"),
        _ = term => tracing::info!("SIGTERM received; shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_bind_needs_a_key() {
        let public: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let err = check_bind(&public, None).unwrap_err().to_string();
        assert!(err.contains("--api-key"), "{err}");
        assert!(check_bind(&public, Some("  ")).is_err());
        assert!(check_bind(&public, Some("k")).is_ok());
        assert!(check_bind(&local, None).is_ok());
        assert!(check_bind(&"[::1]:0".parse().unwrap(), None).is_ok());
    }
}
