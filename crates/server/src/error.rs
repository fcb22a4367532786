//! Errors: [`ApiError`] is what a handler returns and what a client sees;
//! [`ServerError`] is what starting the server can fail with.

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use thiserror::Error;

/// An error returned to an HTTP client.
///
/// The body follows OpenAI's error shape, so OpenAI client libraries surface
/// the message:
///
/// ```json
/// {"error": {"message": "…", "type": "invalid_request_error", "param": null, "code": null}}
/// ```
///
/// | status | `type` | when |
/// | --- | --- | --- |
/// | 400 | `invalid_request_error` | the body is not valid JSON |
/// | 401 | `authentication_error` | missing or wrong `Authorization: Bearer` key |
/// | 404 | `not_found_error` | unknown route or unknown `model` |
/// | 413 | `payload_too_large_error` | body over the payload limit, or too many inputs/tokens in one request |
/// | 415 | `invalid_request_error` | the body is not `application/json` |
/// | 422 | `invalid_request_error` | well-formed JSON with wrong types or values (empty input, …) |
/// | 429 | `overloaded_error` | the embedding queue is full; retry later |
/// | 502 | `upstream_error` | the chat upstream could not be reached |
/// | 503 | `unavailable_error` | a feature is not configured (no LLM, no store) or the backend is down |
/// | 500 | `internal_error` | a bug or a failed computation |
#[derive(Debug, Clone, Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    /// The request field the error is about, when there is one.
    pub param: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            param: None,
        }
    }

    pub fn with_param(mut self, param: &str) -> Self {
        self.param = Some(param.to_string());
        self
    }

    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_error",
            message,
        )
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large_error",
            message,
        )
    }

    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "overloaded_error", message)
    }

    /// 503 with `Retry-After`: the server is at its request limit or the
    /// request ran past its timeout.
    pub fn shed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded_error", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found_error", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable_error",
            message,
        )
    }

    pub fn upstream(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "upstream_error", message)
    }

    /// 504: the upstream LLM did not answer in time.
    pub fn upstream_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout_error", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }

    /// 400: the request has nothing to work on (TEI's `Empty` error).
    pub fn empty(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, EMPTY_KIND, message)
    }

    /// This error in TEI's shape, `{"error": "…", "error_type": "…"}`, with
    /// TEI's status for its type:
    ///
    /// | TEI `error_type` | status | here |
    /// | --- | --- | --- |
    /// | `Empty` | 400 | no input to work on |
    /// | `Validation` | 413 | too many inputs, an input too long with `truncate: false`, body too large |
    /// | `Validation` | other 4xx kept | wrong types or values (422), bad JSON (400), auth (401), … |
    /// | `Overloaded` | 429 | the queue is full, or the server is at `--max-inflight` / past its timeout |
    /// | `Unhealthy` | 503 | the backend is not running or a feature is not configured |
    /// | `Backend` | 424 | inference failed |
    pub fn to_tei(&self) -> Response {
        let (status, error_type) = match (self.kind, self.status) {
            (EMPTY_KIND, _) => (StatusCode::BAD_REQUEST, "Empty"),
            ("overloaded_error", _) => (StatusCode::TOO_MANY_REQUESTS, "Overloaded"),
            (_, StatusCode::SERVICE_UNAVAILABLE) => (StatusCode::SERVICE_UNAVAILABLE, "Unhealthy"),
            (_, s) if s.is_server_error() => (StatusCode::FAILED_DEPENDENCY, "Backend"),
            (_, s) => (s, "Validation"),
        };
        let body = serde_json::json!({"error": self.message, "error_type": error_type});
        self.finish((status, axum::Json(body)).into_response())
    }

    /// This error in Ollama's shape, `{"error": "…"}`, with Ollama's
    /// statuses: 400 for any unusable request (wrong types, empty or
    /// too-long input, too many inputs, bad JSON), 404 for an unknown model,
    /// 503 when the server is busy; 401/403/405/421 and 5xx are kept.
    pub fn to_ollama(&self) -> Response {
        let status = match (self.kind, self.status) {
            ("overloaded_error", _) => StatusCode::SERVICE_UNAVAILABLE,
            (
                _,
                StatusCode::UNPROCESSABLE_ENTITY
                | StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ) => StatusCode::BAD_REQUEST,
            (_, s) => s,
        };
        let body = serde_json::json!({"error": self.message});
        self.finish((status, axum::Json(body)).into_response())
    }

    /// Adds `Retry-After` to overload answers.
    fn finish(&self, mut r: Response) -> Response {
        if self.kind == "overloaded_error" {
            // 429 (queue full) and shed 503s: a client may retry shortly.
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        r
    }
}

/// The `kind` of [`ApiError::empty`] (`invalid_request_error` in OpenAI's
/// shape, `Empty` in TEI's).
const EMPTY_KIND: &str = "empty_input_error";

/// Which error shape a route speaks; [`crate::middleware::dialect`] rewrites
/// every error answer of a route (handler, extractor, auth, load shedding)
/// into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Tei,
    Ollama,
}

impl Dialect {
    /// The dialect of a request path.
    pub fn of_path(path: &str) -> Self {
        match path {
            "/embed" | "/rerank" | "/tokenize" => Self::Tei,
            p if p.starts_with("/api/") => Self::Ollama,
            _ => Self::OpenAi,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, "{}", self.message);
        } else {
            tracing::debug!(status = %self.status, "{}", self.message);
        }
        let kind = if self.kind == EMPTY_KIND {
            "invalid_request_error"
        } else {
            self.kind
        };
        let body = ErrorBody {
            error: ErrorDetail {
                message: &self.message,
                kind,
                param: self.param.as_deref(),
                code: None,
            },
        };
        let mut r = self.finish((self.status, axum::Json(body)).into_response());
        // Kept so that the dialect middleware can answer in TEI's or
        // Ollama's shape instead.
        r.extensions_mut().insert(self.clone());
        r
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match &r {
            JsonRejection::JsonSyntaxError(_) => Self::bad_json(format!(
                "the request body is not valid JSON: {}",
                r.body_text()
            )),
            JsonRejection::JsonDataError(_) => Self::invalid(r.body_text()),
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request_error",
                "expected a JSON body with `Content-Type: application/json`",
            ),
            JsonRejection::BytesRejection(_) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::too_large(
                    "the request body is larger than the server's payload limit (--payload-limit)",
                )
            }
            _ => Self::new(r.status(), "invalid_request_error", r.body_text()),
        }
    }
}

impl From<anectx_serve::ServeError> for ApiError {
    fn from(e: anectx_serve::ServeError) -> Self {
        use anectx_serve::ServeError as E;
        match e {
            E::Invalid { param, message } => {
                let a = Self::invalid(message);
                match param {
                    Some(p) => a.with_param(p),
                    None => a,
                }
            }
            E::TooLarge(m) => Self::too_large(m),
            e @ E::TooLong { .. } => Self::too_large(e.to_string()).with_param("input"),
            E::Overloaded(m) => Self::overloaded(m),
            E::Unavailable(m) => Self::unavailable(m),
            E::Internal(e) => Self::internal(e.to_string()),
        }
    }
}

impl From<anectx_serve::BatchError> for ApiError {
    fn from(e: anectx_serve::BatchError) -> Self {
        anectx_serve::ServeError::from(e).into()
    }
}

impl From<anectx_core::BackendError> for ApiError {
    fn from(e: anectx_core::BackendError) -> Self {
        use anectx_core::BackendError as B;
        match e {
            B::Input(m) => Self::invalid(m),
            B::NotSupported(m) => Self::unavailable(format!("not supported by this model: {m}")),
            B::Unsupported(m) => Self::unavailable(m),
            B::Start(m) => Self::unavailable(format!("the backend is not running: {m}")),
            B::Inference(m) => Self::internal(format!("inference failed: {m}")),
            B::Overloaded(m) => Self::overloaded(m),
        }
    }
}

/// Errors starting or running the server.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The configuration is unsafe or inconsistent (e.g. a public bind without an API key).
    #[error("{0}")]
    Config(String),
    #[error("could not bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the backend thread could not start: {0}")]
    Backend(String),
    #[error("could not build the HTTP client for the LLM upstream: {0}")]
    Client(String),
}
