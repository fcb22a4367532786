//! [`ContextService`]: select context for a query and record the
//! interaction for learning — the one copy behind `/v1/context`, the chat
//! proxy and MCP's tools.
//!
//! Every call runs the (blocking) provider and recorder on tokio's blocking
//! pool, so front ends only `await`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::context::{
    ContextProvider, ContextRequest, ContextResult, FetchedChunk, IndexStatus, Interaction,
    InteractionKind, InteractionRecorder, NoopRecorder, RecordError, SearchHit, SearchRequest,
};
use crate::error::ServeError;

/// Interaction ids: `<start-ms>-<pid>-<counter>`, unique per process run.
#[derive(Debug)]
pub struct InteractionIds {
    start_ms: u64,
    pid: u32,
    counter: AtomicU64,
}

impl Default for InteractionIds {
    fn default() -> Self {
        Self {
            start_ms: now_ms(),
            pid: std::process::id(),
            counter: AtomicU64::new(0),
        }
    }
}

impl InteractionIds {
    /// A fresh id.
    pub fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{}-{n}", self.start_ms, self.pid)
    }

    /// Whether this process handed out `id`.
    pub fn issued(&self, id: &str) -> bool {
        let prefix = format!("{}-{}-", self.start_ms, self.pid);
        id.strip_prefix(&prefix)
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n < self.counter.load(Ordering::Relaxed))
    }
}

/// A selection that was recorded: what `/v1/context` and MCP's `context`
/// tool answer.
#[derive(Debug, Clone, Serialize)]
pub struct ContextAnswer {
    /// The interaction's id, for `/v1/feedback`.
    pub interaction_id: String,
    /// Whether the interaction is in the log (committed) before the answer
    /// goes out.
    pub logged: bool,
    #[serde(flatten)]
    pub result: ContextResult,
}

/// Context selection, search and recording over one provider and recorder.
pub struct ContextService {
    provider: Option<Arc<dyn ContextProvider>>,
    recorder: Arc<dyn InteractionRecorder>,
    ids: InteractionIds,
    default_budget: usize,
}

impl ContextService {
    /// A service without a provider (every selection is
    /// [`ServeError::Unavailable`]) and without a log.
    pub fn new(default_budget: usize) -> Self {
        Self {
            provider: None,
            recorder: Arc::new(NoopRecorder),
            ids: InteractionIds::default(),
            default_budget: default_budget.max(1),
        }
    }

    pub fn with_provider(mut self, provider: Option<Arc<dyn ContextProvider>>) -> Self {
        self.provider = provider;
        self
    }

    pub fn with_recorder(mut self, recorder: Arc<dyn InteractionRecorder>) -> Self {
        self.recorder = recorder;
        self
    }

    pub fn provider(&self) -> Option<&Arc<dyn ContextProvider>> {
        self.provider.as_ref()
    }

    pub fn recorder(&self) -> &Arc<dyn InteractionRecorder> {
        &self.recorder
    }

    /// The budget used when a request gives none.
    pub fn default_budget(&self) -> usize {
        self.default_budget
    }

    pub fn next_interaction_id(&self) -> String {
        self.ids.next()
    }

    /// Whether this process handed out the interaction id `id` (its chat
    /// interaction may not be written yet).
    pub fn issued_here(&self, id: &str) -> bool {
        self.ids.issued(id)
    }

    fn provider_or_unavailable(&self) -> Result<Arc<dyn ContextProvider>, ServeError> {
        self.provider.clone().ok_or_else(|| {
            ServeError::Unavailable(
                "no context store is configured: start the server with --store DIR".into(),
            )
        })
    }

    /// Runs `f` over the provider on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&dyn ContextProvider) -> Result<T, ServeError> + Send + 'static,
    ) -> Result<T, ServeError> {
        let provider = self.provider_or_unavailable()?;
        tokio::task::spawn_blocking(move || f(provider.as_ref()))
            .await
            .map_err(|e| ServeError::internal(format!("the {what} task failed: {e}")))?
    }

    /// Selects context (not recorded; the chat proxy records the whole
    /// exchange itself).
    pub async fn select(&self, request: ContextRequest) -> Result<ContextResult, ServeError> {
        check_request(&request)?;
        self.blocking("context", move |p| p.context(&request)).await
    }

    /// Selects context and records the interaction (kind `context`) before
    /// answering, so `logged: true` means it is in the log.
    pub async fn answer(&self, request: ContextRequest) -> Result<ContextAnswer, ServeError> {
        let start = Instant::now();
        let timestamp_ms = now_ms();
        let result = self.select(request).await?;
        let interaction_id = self.next_interaction_id();
        let logged = self
            .record_and_wait(Interaction {
                id: interaction_id.clone(),
                kind: InteractionKind::Context,
                timestamp_ms,
                query: result.query.clone(),
                chunks: result.chunks.clone(),
                response: None,
                model: None,
                upstream_status: None,
                streamed: false,
                complete: true,
                latency_ms: start.elapsed().as_millis() as u64,
                budget_tokens: Some(result.budget_tokens),
                tokens_used: Some(result.tokens_used),
                trace: result.trace.clone(),
            })
            .await;
        Ok(ContextAnswer {
            interaction_id,
            logged,
            result,
        })
    }

    /// Ranked chunks for a query, with snippets (nothing is recorded).
    pub async fn search(&self, request: SearchRequest) -> Result<Vec<SearchHit>, ServeError> {
        if request.query.trim().is_empty() {
            return Err(ServeError::invalid_param(
                "query",
                "`query` is required and must not be empty",
            ));
        }
        if request.k == 0 || request.k > MAX_SEARCH_K {
            return Err(ServeError::invalid_param(
                "k",
                format!("`k` is {}; give 1 to {MAX_SEARCH_K}", request.k),
            ));
        }
        self.blocking("search", move |p| p.search(&request)).await
    }

    /// One chunk's whole text by id; `None` when no chunk has that id.
    pub async fn fetch(&self, id: String) -> Result<Option<FetchedChunk>, ServeError> {
        if id.trim().is_empty() {
            return Err(ServeError::invalid_param(
                "id",
                "`id` is required: a chunk id from `search` or `context`",
            ));
        }
        self.blocking("fetch", move |p| p.fetch(id.trim())).await
    }

    /// What the index holds.
    pub async fn status(&self) -> Result<IndexStatus, ServeError> {
        self.blocking("status", |p| p.status()).await
    }

    /// Records an interaction on the blocking pool and waits for the
    /// recorder: `true` when it is stored (for the SQLite log: committed).
    /// Failures are logged, never returned: the client's answer stands.
    pub async fn record_and_wait(&self, interaction: Interaction) -> bool {
        let recorder = self.recorder.clone();
        if !recorder.enabled() {
            return false;
        }
        match tokio::task::spawn_blocking(move || recorder.record(interaction)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!("{e}");
                false
            }
            Err(e) => {
                tracing::warn!("the recorder task failed: {e}");
                false
            }
        }
    }

    /// Hands an interaction to the recorder without waiting; failures are logged.
    pub fn record(&self, interaction: Interaction) {
        let recorder = self.recorder.clone();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            if let Err(e) = recorder.record(interaction) {
                tracing::warn!("{e}");
            }
            return;
        };
        handle.spawn_blocking(move || {
            if let Err(e) = recorder.record(interaction) {
                tracing::warn!("{e}");
            }
        });
    }

    /// Stores explicit feedback on an interaction of the log (or one this
    /// process handed out). Returns the feedback's id, or `None` when no
    /// such interaction exists.
    pub async fn feedback(
        &self,
        feedback: anectx_store::Feedback,
    ) -> Result<Option<i64>, ServeError> {
        let recorder = self.recorder.clone();
        if !recorder.accepts_feedback() {
            return Err(ServeError::Unavailable(
                "the interaction log is off (started with --no-log or without a store), so \
                 feedback cannot be stored"
                    .into(),
            ));
        }
        let issued = self.issued_here(&feedback.interaction_uid);
        tokio::task::spawn_blocking(move || -> Result<Option<i64>, RecordError> {
            if !issued && recorder.contains(&feedback.interaction_uid)? != Some(true) {
                return Ok(None);
            }
            recorder.feedback(&feedback).map(Some)
        })
        .await
        .map_err(|e| ServeError::internal(format!("the feedback task failed: {e}")))?
        .map_err(ServeError::internal)
    }
}

/// Most hits one search returns.
pub const MAX_SEARCH_K: usize = 100;

fn check_request(r: &ContextRequest) -> Result<(), ServeError> {
    if r.query.trim().is_empty() {
        return Err(ServeError::invalid_param(
            "query",
            "`query` is required and must not be empty",
        ));
    }
    if r.budget_tokens == 0 {
        return Err(ServeError::invalid_param(
            "budget_tokens",
            "`budget_tokens` must be positive",
        ));
    }
    Ok(())
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_recognised_only_once_issued() {
        let ids = InteractionIds::default();
        let a = ids.next();
        assert!(ids.issued(&a));
        let n: u64 = a.rsplit('-').next().unwrap().parse().unwrap();
        let later = a.replace(&format!("-{n}"), &format!("-{}", n + 1));
        assert!(!ids.issued(&later), "{later} was not handed out yet");
        assert!(!ids.issued("1-2-0"));
    }

    #[tokio::test]
    async fn without_a_provider_every_call_is_unavailable() {
        let s = ContextService::new(100);
        let r = s
            .answer(ContextRequest {
                query: "q".into(),
                budget_tokens: 10,
                ..Default::default()
            })
            .await;
        assert!(matches!(r, Err(ServeError::Unavailable(_))), "{r:?}");
        assert!(matches!(s.status().await, Err(ServeError::Unavailable(_))));
    }

    #[tokio::test]
    async fn empty_queries_and_zero_budgets_name_their_parameter() {
        let s = ContextService::new(100);
        let r = s
            .select(ContextRequest {
                query: "  ".into(),
                budget_tokens: 10,
                ..Default::default()
            })
            .await;
        assert!(
            matches!(
                r,
                Err(ServeError::Invalid {
                    param: Some("query"),
                    ..
                })
            ),
            "{r:?}"
        );
        let r = s
            .select(ContextRequest {
                query: "q".into(),
                budget_tokens: 0,
                ..Default::default()
            })
            .await;
        assert!(
            matches!(
                r,
                Err(ServeError::Invalid {
                    param: Some("budget_tokens"),
                    ..
                })
            ),
            "{r:?}"
        );
        let r = s
            .search(SearchRequest {
                query: "q".into(),
                k: 0,
                ..Default::default()
            })
            .await;
        assert!(
            matches!(
                r,
                Err(ServeError::Invalid {
                    param: Some("k"),
                    ..
                })
            ),
            "{r:?}"
        );
    }
}
