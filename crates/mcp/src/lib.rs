//! anectx's MCP server: the serving core's [`ContextService`] as MCP tools,
//! over stdio ([`serve_stdio`], for `anectx mcp`) and Streamable HTTP
//! ([`http_service`], mounted at `/mcp` by `anectx serve`).
//!
//! Tools (each with an input and an output schema, answering structured
//! content):
//!
//! - `search`: query, k, filters → id, path, page, source, heading,
//!   snippet, score;
//! - `fetch`: id → the chunk's whole text (the search/fetch pair that
//!   ChatGPT-style connectors use);
//! - `context`: query, budget, filters → packed context with `[n]` sources, logged
//!   for learning like `/v1/context`;
//! - `index_status`: what the index holds.
//!
//! Errors a caller can fix (an empty query, an unknown id, a busy server)
//! are tool errors (`isError: true`) whose text says what to do; the MCP
//! SDK (`rmcp`, pinned) is used only in this crate.

use std::sync::Arc;

use anectx_engine::filter::parse_time;
use anectx_engine::Filter;
use anectx_serve::{ContextRequest, ContextService, SearchRequest, ServeError};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{tool, tool_handler, tool_router, Json, ServerHandler, ServiceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use anectx_serve::{FetchedChunk, IndexStatus, SearchHit};
pub use rmcp::transport::streamable_http_server::StreamableHttpService as McpHttpService;
pub use tokio_util::sync::CancellationToken;

/// Hits `search` returns when `k` is not given.
pub const DEFAULT_K: usize = 8;

/// Why the MCP server stopped.
#[derive(Debug, Error)]
pub enum McpError {
    #[error("the MCP session could not start: {0}")]
    Start(String),
    #[error("the MCP session ended with an error: {0}")]
    Session(String),
}

/// Which documents to draw from; every given restriction must hold.
/// Applied inside retrieval, so a filter never returns fewer hits than
/// exist.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct FilterParams {
    /// A glob over the document's path (relative to the indexed folder, the
    /// full path or the file name): `*.pdf`, `notes/**`.
    #[serde(default)]
    pub path: Option<String>,
    /// File kinds: extensions (`pdf`, `md`) or formats (`markdown`, `code`,
    /// `docx`, …); any one matches.
    #[serde(default)]
    pub kind: Option<Vec<String>>,
    /// Only files modified at or after this date (`YYYY-MM-DD` or RFC 3339).
    #[serde(default)]
    pub modified_after: Option<String>,
    /// Only files modified before this date (`YYYY-MM-DD` or RFC 3339).
    #[serde(default)]
    pub modified_before: Option<String>,
}

impl FilterParams {
    /// The engine's filter, or a tool error naming the bad field.
    fn to_filter(&self) -> Result<Filter, String> {
        let bad =
            |e: anectx_engine::FilterError| format!("invalid `filters.{}`: {}", e.param, e.message);
        let mut kind = Vec::new();
        for k in self.kind.iter().flatten() {
            kind.extend(Filter::parse_kinds(k).map_err(bad)?);
        }
        let time = |param: &'static str, v: &Option<String>| {
            v.as_deref()
                .map(|s| parse_time(param, s))
                .transpose()
                .map_err(bad)
        };
        let f = Filter {
            path: self.path.clone().filter(|p| !p.trim().is_empty()),
            kind,
            modified_after: time("modified_after", &self.modified_after)?,
            modified_before: time("modified_before", &self.modified_before)?,
        };
        // A bad glob or an empty date range is refused before searching.
        f.compile().map_err(bad)?;
        Ok(f)
    }
}

/// `search`'s input.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchParams {
    /// What to look for, in natural language or keywords.
    pub query: String,
    /// How many hits to return (1–100, default 8).
    #[serde(default)]
    pub k: Option<usize>,
    /// Only documents that pass these restrictions.
    #[serde(default)]
    pub filters: Option<FilterParams>,
}

/// `search`'s output.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SearchOutput {
    /// Best first. Give a hit's `id` to `fetch` for its whole text.
    pub hits: Vec<SearchHit>,
}

/// `fetch`'s input.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct FetchParams {
    /// A chunk id from `search` or `context`.
    pub id: String,
}

/// `context`'s input.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ContextParams {
    /// The question the context is for.
    pub query: String,
    /// Token budget for the packed context (default: the server's).
    #[serde(default)]
    pub budget_tokens: Option<usize>,
    /// At most this many chunks.
    #[serde(default)]
    pub max_chunks: Option<usize>,
    /// Only documents that pass these restrictions.
    #[serde(default)]
    pub filters: Option<FilterParams>,
}

/// One source in `context`'s answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ContextSource {
    /// The `n` of the `[n]` marker in `context`.
    pub marker: usize,
    /// The chunk id (for `fetch`).
    pub id: String,
    /// `path p.N` or `path:lines`.
    pub source: String,
    pub score: f32,
    pub tokens: usize,
}

/// `context`'s output.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ContextOutput {
    /// The selected chunks, each after its `[n] (source)` line: paste it into
    /// the prompt and cite `[n]`.
    pub context: String,
    pub sources: Vec<ContextSource>,
    pub tokens_used: usize,
    pub budget_tokens: usize,
    /// The interaction's id in the log (for `/v1/feedback`).
    pub interaction_id: String,
    /// Whether the interaction was logged for learning.
    pub logged: bool,
}

/// The MCP tools over one [`ContextService`].
#[derive(Clone)]
pub struct AnectxMcp {
    service: Arc<ContextService>,
    tool_router: ToolRouter<Self>,
}

impl std::fmt::Debug for AnectxMcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnectxMcp").finish_non_exhaustive()
    }
}

/// A [`ServeError`] as the text of a tool error: what went wrong and, where
/// it helps, what to do.
fn tool_error(e: ServeError) -> String {
    match e {
        ServeError::Invalid {
            param: Some(p),
            message,
        } => format!("invalid `{p}`: {message}"),
        ServeError::Invalid {
            param: None,
            message,
        } => format!("invalid input: {message}"),
        ServeError::TooLarge(m) => format!("too large: {m}"),
        e @ ServeError::TooLong { .. } => format!("too long: {e}"),
        ServeError::Overloaded(m) => format!("the server is busy, try again shortly: {m}"),
        ServeError::Unavailable(m) => format!("unavailable: {m}"),
        ServeError::Internal(e) => format!("internal error: {e}"),
    }
}

#[tool_router]
impl AnectxMcp {
    pub fn new(service: Arc<ContextService>) -> Self {
        Self {
            service,
            tool_router: Self::tool_router(),
        }
    }

    /// The tools this server lists, with their schemas.
    pub fn tools(&self) -> Vec<rmcp::model::Tool> {
        self.tool_router.list_all()
    }

    #[tool(
        name = "search",
        description = "Search the indexed documents. Returns the best chunks with their path, \
                       page, a snippet and a score; give a hit's id to `fetch` for its whole \
                       text. Nothing is logged.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn search(
        &self,
        Parameters(p): Parameters<SearchParams>,
    ) -> Result<Json<SearchOutput>, String> {
        let filters = p.filters.unwrap_or_default().to_filter()?;
        let hits = self
            .service
            .search(SearchRequest {
                query: p.query,
                k: p.k.unwrap_or(DEFAULT_K),
                filters,
            })
            .await
            .map_err(tool_error)?;
        Ok(Json(SearchOutput { hits }))
    }

    #[tool(
        name = "fetch",
        description = "The whole text of one chunk, by the id that `search` or `context` gave.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn fetch(
        &self,
        Parameters(p): Parameters<FetchParams>,
    ) -> Result<Json<FetchedChunk>, String> {
        let id = p.id.clone();
        match self.service.fetch(p.id).await.map_err(tool_error)? {
            Some(c) => Ok(Json(c)),
            None => Err(format!(
                "no chunk has the id `{id}` (ids come from `search` or `context`; a re-index \
                 can retire them)"
            )),
        }
    }

    #[tool(
        name = "context",
        description = "Context for a question, packed to a token budget: the most relevant \
                       chunks, each after a `[n] (path)` line, to paste into the prompt and cite \
                       as [n]. The question and the chunks are logged so anectx learns what \
                       helps.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            open_world_hint = false
        )
    )]
    async fn context(
        &self,
        Parameters(p): Parameters<ContextParams>,
    ) -> Result<Json<ContextOutput>, String> {
        let filters = p.filters.unwrap_or_default().to_filter()?;
        let a = self
            .service
            .answer(ContextRequest {
                query: p.query,
                budget_tokens: p.budget_tokens.unwrap_or(self.service.default_budget()),
                max_chunks: p.max_chunks,
                filters,
            })
            .await
            .map_err(tool_error)?;
        Ok(Json(ContextOutput {
            context: a.result.packed,
            sources: a
                .result
                .chunks
                .into_iter()
                .map(|c| ContextSource {
                    marker: c.marker,
                    id: c.id,
                    source: c.source,
                    score: c.score,
                    tokens: c.tokens,
                })
                .collect(),
            tokens_used: a.result.tokens_used,
            budget_tokens: a.result.budget_tokens,
            interaction_id: a.interaction_id,
            logged: a.logged,
        }))
    }

    #[tool(
        name = "index_status",
        description = "What the index holds: documents, chunks, whether dense retrieval runs, \
                       the relevance model, the interaction log and the usage memory.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn index_status(&self) -> Result<Json<IndexStatus>, String> {
        self.service.status().await.map(Json).map_err(tool_error)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for AnectxMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("anectx", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "anectx searches the user's indexed documents. Call `context` with the user's \
                 question to get the relevant passages packed with [n] sources, or `search` \
                 then `fetch` to browse. Cite sources as [n] or by path.",
            )
    }
}

/// Serves the tools over stdin/stdout until the client closes the stream.
/// Nothing but protocol messages is written to stdout: log to stderr.
pub async fn serve_stdio(service: Arc<ContextService>) -> Result<(), McpError> {
    let running = AnectxMcp::new(service)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| McpError::Start(e.to_string()))?;
    running
        .waiting()
        .await
        .map_err(|e| McpError::Session(e.to_string()))?;
    Ok(())
}

/// Who may call `/mcp` over HTTP.
#[derive(Debug, Clone)]
pub struct HttpAccess {
    /// Check `Host` and `Origin` against loopback names (a server without an
    /// API key). With `false` (an API key guards the server) neither is
    /// checked here.
    pub loopback_only: bool,
    /// Stops the service's sessions (at shutdown).
    pub cancel: CancellationToken,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
}

/// The Streamable HTTP service for `/mcp` (a tower service to nest into a
/// router). Serves both the 2026 stateless protocol and 2025-11-25 sessions.
pub fn http_service(
    service: Arc<ContextService>,
    access: HttpAccess,
) -> StreamableHttpService<AnectxMcp, LocalSessionManager> {
    let mut config = StreamableHttpServerConfig::default()
        .with_cancellation_token(access.cancel)
        .with_max_request_body_bytes(access.max_body_bytes);
    config = if access.loopback_only {
        config
            .with_allowed_hosts(["localhost", "127.0.0.1", "::1", "[::1]"])
            .with_allowed_origins([
                "http://localhost:*",
                "http://127.0.0.1:*",
                "http://[::1]:*",
                "https://localhost:*",
                "https://127.0.0.1:*",
                "https://[::1]:*",
            ])
    } else {
        config.disable_allowed_hosts().disable_allowed_origins()
    };
    StreamableHttpService::new(
        move || Ok(AnectxMcp::new(service.clone())),
        Default::default(),
        config,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_tools_have_input_and_output_schemas() {
        let mcp = AnectxMcp::new(Arc::new(ContextService::new(100)));
        let mut tools = mcp.tools();
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(names, ["context", "fetch", "index_status", "search"]);
        for t in &tools {
            let out = t
                .output_schema
                .as_ref()
                .unwrap_or_else(|| panic!("{} has no output schema", t.name));
            assert_eq!(out.get("type").and_then(|v| v.as_str()), Some("object"));
            assert!(t.description.is_some(), "{}", t.name);
        }
        let required = |name: &str| -> Vec<String> {
            let t = tools.iter().find(|t| t.name == name).unwrap();
            t.input_schema
                .get("required")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(required("search"), ["query"]);
        assert_eq!(required("context"), ["query"]);
        assert_eq!(required("fetch"), ["id"]);
    }

    #[test]
    fn service_errors_read_as_instructions() {
        let t = tool_error(ServeError::invalid_param("query", "must not be empty"));
        assert_eq!(t, "invalid `query`: must not be empty");
        let t = tool_error(ServeError::Overloaded("queue full".into()));
        assert!(t.contains("try again"), "{t}");
    }
}
