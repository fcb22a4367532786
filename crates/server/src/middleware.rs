//! Middleware: metrics per route, the loopback Host/Origin check, bearer
//! auth and the admin token; the JSON 404/405 fallbacks.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, Dialect};
use crate::state::AppState;

pub(crate) async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}; see GET /info for the API",
        req.method(),
        req.uri().path()
    ))
}

pub(crate) async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// Answers errors on TEI's routes (`/embed`, `/rerank`, `/tokenize`) in
/// TEI's shape and on Ollama's (`/api/…`) in Ollama's, whatever produced
/// them (the handler, the JSON extractor, auth, the loopback check, load
/// shedding, the 404/405 fallbacks). Every [`ApiError`] response carries the
/// error in its extensions; other routes keep OpenAI's shape.
pub(crate) async fn dialect(req: Request, next: Next) -> Response {
    let d = Dialect::of_path(req.uri().path());
    let resp = next.run(req).await;
    if d == Dialect::OpenAi {
        return resp;
    }
    match resp.extensions().get::<ApiError>() {
        Some(e) if d == Dialect::Tei => e.to_tei(),
        Some(e) => e.to_ollama(),
        None => resp,
    }
}

/// Counts every request by route and status and times it.
pub(crate) async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let start = Instant::now();
    let resp = next.run(req).await;
    state
        .inner
        .metrics
        .record_request(&route, resp.status().as_u16(), start.elapsed());
    resp
}

/// Without an API key the server answers only requests addressed to a
/// loopback name: a `Host` other than `localhost`, `127.0.0.1` or `[::1]`
/// (any port) gets 421, and a browser `Origin` that is not one of them gets
/// 403. This stops a web page from using DNS rebinding (or a plain
/// cross-origin request) to read the user's documents through
/// `/v1/context`, spend the configured LLM key or write to the training log.
pub(crate) async fn local_only(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if state.inner.config.api_key.is_none() {
        if let Some(e) = foreign_request(&req) {
            return e.into_response();
        }
    }
    next.run(req).await
}

/// Why a request must be refused by [`local_only`], if it must.
fn foreign_request(req: &Request) -> Option<ApiError> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| v.to_str().unwrap_or("\u{fffd}").to_string())
    };
    if let Some(host) = header("host") {
        if !is_loopback_authority(&host) {
            return Some(ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "invalid_request_error",
                format!(
                    "this server answers only requests for localhost, 127.0.0.1 or [::1], not \
                     Host {host:?}; start it with --api-key to serve other names"
                ),
            ));
        }
    }
    if let Some(origin) = header("origin") {
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        if !authority.is_some_and(is_loopback_authority) {
            return Some(ApiError::new(
                StatusCode::FORBIDDEN,
                "permission_error",
                format!(
                    "requests from the web origin {origin:?} are refused; only pages served \
                     from localhost may call this server without --api-key"
                ),
            ));
        }
    }
    None
}

/// `host[:port]` names a loopback address.
fn is_loopback_authority(authority: &str) -> bool {
    let a = authority.trim().trim_end_matches('/');
    let host = if let Some(rest) = a.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, port)) if port.is_empty() || port.starts_with(':') => h,
            _ => return false,
        }
    } else {
        match a.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            Some(_) => return false,
            None => a,
        }
    };
    let host = host.to_ascii_lowercase();
    host == "localhost" || host == "127.0.0.1" || host == "::1"
}

/// The header that carries the admin token.
pub const ADMIN_TOKEN_HEADER: &str = "x-anectx-admin-token";

/// `/admin/*` needs the admin token, when one is configured, whatever the
/// API key: a page on another site must not be able to reload models.
fn admin_refusal(state: &AppState, req: &Request) -> Option<ApiError> {
    let token = state.inner.config.admin_token.as_deref()?;
    if !req.uri().path().starts_with("/admin/") {
        return None;
    }
    let given = req
        .headers()
        .get(ADMIN_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => None,
        Some(_) => Some(ApiError::unauthorized("the admin token is not valid")),
        None => Some(ApiError::unauthorized(format!(
            "admin routes need the `{ADMIN_TOKEN_HEADER}` header; `anectx serve` printed \
             where its admin token is stored"
        ))),
    }
}

/// Bearer auth on every route except `/health`, when an API key is set.
pub(crate) async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(e) = admin_refusal(&state, &req) {
        return e.into_response();
    }
    let Some(key) = state.inner.config.api_key.as_deref() else {
        return next.run(req).await;
    };
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    match given {
        None => ApiError::unauthorized(
            "missing API key: send `Authorization: Bearer <key>` (the server was started with --api-key)",
        )
        .into_response(),
        Some(g) if constant_time_eq(g.trim().as_bytes(), key.as_bytes()) => next.run(req).await,
        Some(_) => ApiError::unauthorized("the API key is not valid").into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Load shedding and the request timeout. `/health` and `/metrics` always
/// answer, so monitoring still sees an overloaded server.
///
/// - More than [`ServerConfig::max_inflight`] requests at once: 503 with
///   `Retry-After` at once, instead of queueing without bound.
/// - A request that takes longer than [`ServerConfig::request_timeout`]:
///   503 with `Retry-After` (work already on the blocking pool finishes in
///   the background). The chat proxy has its own upstream timeouts and is
///   not cut here; its slot is held until its response head is sent.
///
/// [`ServerConfig::max_inflight`]: crate::ServerConfig::max_inflight
/// [`ServerConfig::request_timeout`]: crate::ServerConfig::request_timeout
pub(crate) async fn shed(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/health" || path == "/metrics" {
        return next.run(req).await;
    }
    let Ok(_slot) = state.inner.inflight.clone().try_acquire_owned() else {
        state.inner.metrics.record_shed();
        return ApiError::shed(format!(
            "the server is handling {} requests, its limit (--max-inflight); retry shortly",
            state.inner.config.max_inflight
        ))
        .into_response();
    };
    if path == "/v1/chat/completions" {
        return next.run(req).await;
    }
    let limit = state.inner.config.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            state.inner.metrics.record_shed();
            ApiError::shed(format!(
                "the request took longer than {:.0} s (--request-timeout-secs); retry later",
                limit.as_secs_f64()
            ))
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_authorities() {
        for ok in [
            "localhost",
            "LOCALHOST:8181",
            "127.0.0.1",
            "127.0.0.1:8181",
            "[::1]",
            "[::1]:8181",
        ] {
            assert!(is_loopback_authority(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8181",
            "127.0.0.1.evil.example",
            "localhost.evil.example:80",
            "[::1]evil",
            "127.0.0.2",
            "localhost:80x",
            "",
        ] {
            assert!(!is_loopback_authority(bad), "{bad}");
        }
    }
}
