//! The interaction log: what the learning loop learns from.
//!
//! Four tables (schema migration 2):
//!
//! - `interactions`: one row per answered query (`/v1/context`, the chat
//!   proxy, the simulator): time, query, relevance-model version, whether
//!   the call explored, the response text when known.
//! - `interaction_candidates`: the scored candidate pool of each
//!   interaction, shown or not, with the `[n]` position of shown ones, the
//!   score, the propensity (probability of being shown under the logging
//!   policy), the features and, for shown chunks, the text the LLM saw.
//! - `usage_labels`: which shown chunks the response used, keyed by analyzer
//!   version. Relabelling inserts rows for a new analyzer version; the
//!   events above are never rewritten.
//! - `feedback`: explicit user feedback (thumbs, chunk ids, a comment).
//!
//! [`Db::append_interaction`] writes one interaction and its candidates in
//! one transaction: when it returns `Ok`, the row is committed to the WAL.
//! With the connection's default `synchronous = NORMAL` a committed row
//! survives a crash of the process (SIGKILL included); call
//! [`Db::set_durability`] with [`Durability::Full`] to survive power loss
//! as well (one fsync per commit).

use rusqlite::{params, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use crate::{Db, Result, StoreError};

/// One logged interaction with its candidate pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedInteraction {
    /// Unique id handed to the client (e.g. the server's interaction id).
    pub uid: String,
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Which path answered it.
    pub kind: InteractionKind,
    pub query: String,
    /// The relevance model that ranked the candidates.
    pub model_version: String,
    /// Whether the logging policy explored on this call.
    pub explored: bool,
    /// The LLM's answer, when known.
    pub response: Option<String>,
    /// `false` when the answer was cut short (client gone, upstream failed).
    pub complete: bool,
    /// Upstream status, latency, retrieval mode, …
    pub meta: InteractionMeta,
    pub candidates: Vec<LoggedCandidate>,
}

/// Which path produced an interaction; stored as its name (`context`,
/// `chat`, `simulated`). A name this version does not know is kept as
/// [`InteractionKind::Other`], so newer logs stay readable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum InteractionKind {
    /// `/v1/context` (HTTP) or an MCP `context` call: no response text.
    Context,
    /// The chat proxy: the response is the LLM's answer.
    Chat,
    /// `anectx simulate`: a simulated LLM answered.
    Simulated,
    Other(String),
}

impl InteractionKind {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Context => "context",
            Self::Chat => "chat",
            Self::Simulated => "simulated",
            Self::Other(s) => s,
        }
    }
}

impl From<String> for InteractionKind {
    fn from(s: String) -> Self {
        match s.as_str() {
            "context" => Self::Context,
            "chat" => Self::Chat,
            "simulated" => Self::Simulated,
            _ => Self::Other(s),
        }
    }
}

impl From<&str> for InteractionKind {
    fn from(s: &str) -> Self {
        Self::from(s.to_string())
    }
}

impl From<InteractionKind> for String {
    fn from(k: InteractionKind) -> Self {
        k.as_str().to_string()
    }
}

impl std::fmt::Display for InteractionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an interaction row keeps beside the query and the candidates
/// (stored as a JSON object; absent fields are left out). Keys this
/// version does not know are kept in `other`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InteractionMeta {
    /// Time to answer, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// The `model` the client asked the LLM for (chat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_model: Option<String>,
    /// The upstream LLM's HTTP status (chat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    /// Whether the answer was streamed (chat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streamed: Option<bool>,
    /// The retrieval mode of the selection (`hybrid`, `bm25`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The embedder that served the query, when dense retrieval ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedder: Option<String>,
    /// Fused candidates scored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates: Option<u64>,
    /// The context budget in tokens (`/v1/context`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<u64>,
    /// Tokens the packed context used (`/v1/context`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_used: Option<u64>,
    /// Shown chunks that have no numeric id and so are not candidates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unlogged_chunks: Vec<String>,
    /// The judged query this was asked for (simulate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_id: Option<String>,
    /// The training round (simulate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u32>,
    /// The seed of the stream evaluation (simulate --stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_seed: Option<u64>,
    /// Keys written by another version.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// One scored candidate of an interaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedCandidate {
    pub chunk_id: u64,
    /// The 1-based `[n]` marker when the chunk was shown.
    pub position: Option<u32>,
    /// The relevance score the logging policy used.
    pub score: f32,
    /// Probability of being shown under the logging policy.
    pub propensity: f32,
    pub features: serde_json::Value,
    /// The chunk text as shown (shown candidates only).
    pub text: Option<String>,
}

/// A usage label: how much the response used a shown chunk, per analyzer version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageLabelRow {
    /// The interaction's row id (as returned by [`Db::append_interaction`]).
    pub interaction_id: i64,
    pub chunk_id: u64,
    pub analyzer_version: String,
    pub score: f32,
    pub used: bool,
    pub evidence: serde_json::Value,
}

/// Explicit feedback on an interaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    pub interaction_uid: String,
    pub ts_ms: i64,
    /// +1 (helpful) or -1 (not helpful).
    pub rating: Option<i32>,
    /// Chunks the user marked (as useful, or as the ones meant by the rating).
    pub chunk_ids: Vec<u64>,
    pub comment: Option<String>,
}

/// Counts over the whole log, for `anectx log stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogStats {
    pub interactions: u64,
    /// Interactions by kind.
    pub by_kind: Vec<(String, u64)>,
    /// Interactions by relevance-model version.
    pub by_model_version: Vec<(String, u64)>,
    pub explored: u64,
    pub with_response: u64,
    pub complete: u64,
    pub candidates: u64,
    pub shown: u64,
    /// Label rows by analyzer version.
    pub labels: Vec<(String, u64)>,
    pub feedback: u64,
    pub feedback_positive: u64,
    pub feedback_negative: u64,
    pub first_ts_ms: Option<i64>,
    pub last_ts_ms: Option<i64>,
}

/// How hard a commit is flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Durability {
    /// `synchronous = NORMAL`: committed rows survive a process crash; the
    /// last commits can roll back on power loss or an OS crash.
    Normal,
    /// `synchronous = FULL`: every commit is fsynced; it survives power loss.
    Full,
}

/// How much of the interaction log is kept. Stored in the store (so every
/// process that appends applies the same settings) and applied on every
/// append; [`Db::prune_log`] applies it at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Interactions older than this many days are dropped (`None`: no age
    /// limit).
    pub max_age_days: Option<u32>,
    /// At most this many interactions are kept, the oldest dropped first
    /// (`None`: no limit). Feedback rows are capped at the same count.
    pub max_interactions: Option<u64>,
}

/// The interaction cap when none was set: a million interactions (about
/// 1 GB with 50-candidate pools).
pub const DEFAULT_MAX_INTERACTIONS: u64 = 1_000_000;

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age_days: None,
            max_interactions: Some(DEFAULT_MAX_INTERACTIONS),
        }
    }
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    pub interactions: u64,
    pub candidates: u64,
    pub labels: u64,
    pub feedback: u64,
}

/// Longest feedback comment, in bytes.
pub const MAX_FEEDBACK_COMMENT_BYTES: usize = 4096;
/// Most chunk ids in one feedback.
pub const MAX_FEEDBACK_CHUNKS: usize = 256;
/// Most feedback rows kept per interaction; more are refused.
pub const MAX_FEEDBACK_PER_INTERACTION: u64 = 32;

const RETENTION_KEY: &str = "log_retention";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Deletes interactions with id <= `last` and everything hanging off them.
fn delete_through(tx: &Transaction<'_>, last: i64, r: &mut PruneReport) -> Result<()> {
    r.feedback += tx.execute(
        "DELETE FROM feedback WHERE interaction_uid IN \
         (SELECT uid FROM interactions WHERE id <= ?1)",
        [last],
    )? as u64;
    r.candidates += tx.execute(
        "DELETE FROM interaction_candidates WHERE interaction_id <= ?1",
        [last],
    )? as u64;
    r.labels += tx.execute(
        "DELETE FROM usage_labels WHERE interaction_id <= ?1",
        [last],
    )? as u64;
    r.interactions += tx.execute("DELETE FROM interactions WHERE id <= ?1", [last])? as u64;
    Ok(())
}

/// Applies `ret` at time `now_ms`. `exact`: find every expired row (a full
/// scan); otherwise (on append) drop the expired prefix in id order, which
/// costs the number of rows dropped.
fn apply_retention(
    tx: &Transaction<'_>,
    ret: &Retention,
    now_ms: i64,
    exact: bool,
) -> Result<PruneReport> {
    let mut r = PruneReport::default();
    if let Some(days) = ret.max_age_days {
        let cutoff = now_ms.saturating_sub(i64::from(days).saturating_mul(86_400_000));
        if exact {
            r.feedback += tx.execute(
                "DELETE FROM feedback WHERE interaction_uid IN \
                 (SELECT uid FROM interactions WHERE ts_ms < ?1)",
                [cutoff],
            )? as u64;
            r.candidates += tx.execute(
                "DELETE FROM interaction_candidates WHERE interaction_id IN \
                 (SELECT id FROM interactions WHERE ts_ms < ?1)",
                [cutoff],
            )? as u64;
            r.labels += tx.execute(
                "DELETE FROM usage_labels WHERE interaction_id IN \
                 (SELECT id FROM interactions WHERE ts_ms < ?1)",
                [cutoff],
            )? as u64;
            r.interactions +=
                tx.execute("DELETE FROM interactions WHERE ts_ms < ?1", [cutoff])? as u64;
        } else {
            // The first interaction young enough to keep, in id order.
            let keep: Option<i64> = tx
                .query_row(
                    "SELECT id FROM interactions WHERE ts_ms >= ?1 ORDER BY id LIMIT 1",
                    [cutoff],
                    |row| row.get(0),
                )
                .optional()?;
            let last = match keep {
                Some(k) => k - 1,
                None => i64::MAX,
            };
            delete_through(tx, last, &mut r)?;
        }
        r.feedback += tx.execute("DELETE FROM feedback WHERE ts_ms < ?1", [cutoff])? as u64;
    }
    if let Some(max) = ret.max_interactions {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        // Ids only grow, so ids <= max_id - max are the oldest beyond the
        // cap (at most `max` ids fit above them).
        let top: Option<i64> =
            tx.query_row("SELECT MAX(id) FROM interactions", [], |row| row.get(0))?;
        if let Some(top) = top {
            if top.saturating_sub(max) > 0 {
                delete_through(tx, top - max, &mut r)?;
            }
        }
        let top: Option<i64> =
            tx.query_row("SELECT MAX(id) FROM feedback", [], |row| row.get(0))?;
        if let Some(top) = top {
            if top.saturating_sub(max) > 0 {
                r.feedback +=
                    tx.execute("DELETE FROM feedback WHERE id <= ?1", [top - max])? as u64;
            }
        }
    }
    Ok(r)
}

fn retention_in(tx: &Transaction<'_>) -> Result<Retention> {
    let s: Option<String> = tx
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [RETENTION_KEY],
            |r| r.get(0),
        )
        .optional()?;
    match s {
        None => Ok(Retention::default()),
        Some(s) => from_json(&s, "retention settings"),
    }
}

/// Ids from here up name candidates of interactions pulled from a shared
/// log that this store could not place: chunks it did not hold. Local chunk
/// ids count up from 1 and never reach it. The schema's partial index
/// `candidates_foreign` holds exactly these rows.
pub const FOREIGN_CHUNK_BASE: u64 = 1 << 62;

impl Db {
    /// Gives candidates that named foreign chunks (`(foreign id, local id)`
    /// pairs: a chunk that has arrived since) their local ids, in one
    /// transaction; the usage labels of the interactions they belong to are
    /// dropped, to be made again with the chunks' text. Returns the number
    /// of candidates placed.
    pub fn place_foreign(&self, pairs: &[(u64, u64)]) -> Result<u64> {
        if pairs.is_empty() {
            return Ok(0);
        }
        self.transaction(|tx| {
            // Almost always there is nothing to place: one probe of the
            // partial index instead of one a chunk (a new replica's first
            // sync writes every chunk of the store).
            let any: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM interaction_candidates \
                     WHERE chunk_id >= 4611686018427387904 LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            if any.is_none() {
                return Ok(0);
            }
            // The literal bound lets SQLite use the partial index.
            let mut find = tx.prepare_cached(
                "SELECT DISTINCT interaction_id FROM interaction_candidates \
                 WHERE chunk_id = ?1 AND chunk_id >= 4611686018427387904",
            )?;
            let mut affected = std::collections::BTreeSet::new();
            let mut placed = 0u64;
            for &(foreign, local) in pairs {
                if foreign < FOREIGN_CHUNK_BASE || local >= FOREIGN_CHUNK_BASE {
                    continue;
                }
                let ids = find
                    .query_map([foreign as i64], |r| r.get::<_, i64>(0))?
                    .collect::<rusqlite::Result<Vec<i64>>>()?;
                if ids.is_empty() {
                    continue;
                }
                placed += tx.execute(
                    "UPDATE interaction_candidates SET chunk_id = ?2 \
                     WHERE chunk_id = ?1 AND chunk_id >= 4611686018427387904",
                    rusqlite::params![foreign as i64, local as i64],
                )? as u64;
                affected.extend(ids);
            }
            for id in affected {
                tx.execute("DELETE FROM usage_labels WHERE interaction_id = ?1", [id])?;
            }
            Ok(placed)
        })
    }
}

pub(crate) const MIGRATION_V2: &str = r#"
    CREATE TABLE interactions (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        uid           TEXT NOT NULL UNIQUE,
        ts_ms         INTEGER NOT NULL,
        kind          TEXT NOT NULL,
        query         TEXT NOT NULL,
        model_version TEXT NOT NULL,
        explored      INTEGER NOT NULL,
        response      TEXT,
        complete      INTEGER NOT NULL,
        meta          TEXT NOT NULL
    );
    -- No foreign key to chunks: a logged chunk may be deleted or re-indexed later.
    CREATE TABLE interaction_candidates (
        interaction_id INTEGER NOT NULL REFERENCES interactions(id),
        ord            INTEGER NOT NULL,
        chunk_id       INTEGER NOT NULL,
        position       INTEGER,
        score          REAL NOT NULL,
        propensity     REAL NOT NULL,
        features       TEXT NOT NULL,
        text           TEXT,
        PRIMARY KEY (interaction_id, ord)
    );
    CREATE TABLE usage_labels (
        interaction_id   INTEGER NOT NULL REFERENCES interactions(id),
        chunk_id         INTEGER NOT NULL,
        analyzer_version TEXT NOT NULL,
        score            REAL NOT NULL,
        used             INTEGER NOT NULL,
        evidence         TEXT NOT NULL,
        PRIMARY KEY (interaction_id, chunk_id, analyzer_version)
    );
    CREATE INDEX usage_labels_version ON usage_labels(analyzer_version);
    CREATE TABLE feedback (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        interaction_uid TEXT NOT NULL,
        ts_ms           INTEGER NOT NULL,
        rating          INTEGER,
        chunk_ids       TEXT NOT NULL,
        comment         TEXT
    );
    CREATE INDEX feedback_uid ON feedback(interaction_uid);
"#;

fn to_json(v: &impl Serialize, what: &str) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Invalid(format!("{what}: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s)
        .map_err(|e| StoreError::Invalid(format!("corrupt {what} in the log: {e}")))
}

fn check_f32(x: f32, what: &str) -> Result<()> {
    if x.is_finite() {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{what} is {x}, not a finite number"
        )))
    }
}

fn validate(i: &LoggedInteraction) -> Result<()> {
    if i.uid.trim().is_empty() {
        return Err(StoreError::Invalid(
            "an interaction needs a non-empty uid".into(),
        ));
    }
    for (n, c) in i.candidates.iter().enumerate() {
        check_f32(c.score, &format!("candidate {n}: score"))?;
        check_f32(c.propensity, &format!("candidate {n}: propensity"))?;
        if !(0.0..=1.0).contains(&c.propensity) {
            return Err(StoreError::Invalid(format!(
                "candidate {n}: propensity {} is not a probability",
                c.propensity
            )));
        }
    }
    Ok(())
}

fn insert_interaction(tx: &Transaction<'_>, i: &LoggedInteraction) -> Result<i64> {
    validate(i)?;
    let meta = to_json(&i.meta, "interaction meta")?;
    let inserted = tx.execute(
        "INSERT INTO interactions(uid, ts_ms, kind, query, model_version, explored, response, \
         complete, meta) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT(uid) DO NOTHING",
        params![
            i.uid,
            i.ts_ms,
            i.kind.as_str(),
            i.query,
            i.model_version,
            i.explored,
            i.response,
            i.complete,
            meta
        ],
    )?;
    if inserted == 0 {
        return Err(StoreError::Invalid(format!(
            "interaction `{}` is already in the log",
            i.uid
        )));
    }
    let id = tx.last_insert_rowid();
    let mut st = tx.prepare_cached(
        "INSERT INTO interaction_candidates(interaction_id, ord, chunk_id, position, score, \
         propensity, features, text) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for (ord, c) in i.candidates.iter().enumerate() {
        st.execute(params![
            id,
            ord as i64,
            c.chunk_id as i64,
            c.position.map(i64::from),
            f64::from(c.score),
            f64::from(c.propensity),
            to_json(&c.features, "candidate features")?,
            c.text
        ])?;
    }
    Ok(id)
}

fn label_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(UsageLabelRow, String)> {
    Ok((
        UsageLabelRow {
            interaction_id: r.get(0)?,
            chunk_id: r.get::<_, i64>(1)? as u64,
            analyzer_version: r.get(2)?,
            score: r.get::<_, f64>(3)? as f32,
            used: r.get(4)?,
            evidence: serde_json::Value::Null,
        },
        r.get(5)?,
    ))
}

fn finish_labels(rows: Vec<(UsageLabelRow, String)>) -> Result<Vec<UsageLabelRow>> {
    rows.into_iter()
        .map(|(mut l, ev)| {
            l.evidence = from_json(&ev, "label evidence")?;
            Ok(l)
        })
        .collect()
}

const LABEL_COLUMNS: &str = "interaction_id, chunk_id, analyzer_version, score, used, evidence";

fn feedback_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Feedback, String)> {
    Ok((
        Feedback {
            interaction_uid: r.get(0)?,
            ts_ms: r.get(1)?,
            rating: r.get(2)?,
            chunk_ids: Vec::new(),
            comment: r.get(4)?,
        },
        r.get(3)?,
    ))
}

fn finish_feedback(rows: Vec<(Feedback, String)>) -> Result<Vec<Feedback>> {
    rows.into_iter()
        .map(|(mut f, ids)| {
            let ids: Vec<i64> = from_json(&ids, "feedback chunk ids")?;
            f.chunk_ids = ids.into_iter().map(|i| i as u64).collect();
            Ok(f)
        })
        .collect()
}

impl Db {
    /// Sets how hard commits are flushed on this connection (see [`Durability`]).
    pub fn set_durability(&self, d: Durability) -> Result<()> {
        let v = match d {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        self.conn().pragma_update(None, "synchronous", v)?;
        Ok(())
    }

    /// Appends one interaction and its candidates in one transaction and
    /// returns its row id. When this returns `Ok` the interaction is
    /// committed (see the module docs for what survives what). A uid that is
    /// already logged, an empty uid or a non-finite score is refused.
    pub fn append_interaction(&self, i: &LoggedInteraction) -> Result<i64> {
        self.transaction(|tx| {
            let id = insert_interaction(tx, i)?;
            apply_retention(tx, &retention_in(tx)?, now_ms(), false)?;
            Ok(id)
        })
    }

    /// Appends several interactions in one transaction (group commit): all
    /// are written or none is. Returns their row ids in order.
    pub fn append_interactions(&self, items: &[LoggedInteraction]) -> Result<Vec<i64>> {
        self.transaction(|tx| {
            let ids = items
                .iter()
                .map(|i| insert_interaction(tx, i))
                .collect::<Result<Vec<_>>>()?;
            apply_retention(tx, &retention_in(tx)?, now_ms(), false)?;
            Ok(ids)
        })
    }

    /// The log's retention settings (the defaults when none were set).
    pub fn retention(&self) -> Result<Retention> {
        self.transaction(retention_in)
    }

    /// Stores retention settings; they apply from the next append (or
    /// [`Db::prune_log`]) on, in every process using this store.
    pub fn set_retention(&self, r: &Retention) -> Result<()> {
        if r.max_interactions == Some(0) {
            return Err(StoreError::Invalid(
                "a log that keeps 0 interactions: pass no limit instead".into(),
            ));
        }
        self.set_meta(RETENTION_KEY, &to_json(r, "retention settings")?)
    }

    /// Applies the stored retention now (every expired row, not just the
    /// oldest ones) and reports what was removed.
    pub fn prune_log(&self) -> Result<PruneReport> {
        self.prune_log_at(now_ms())
    }

    /// [`Db::prune_log`] as if the time were `now_ms`.
    pub fn prune_log_at(&self, now_ms: i64) -> Result<PruneReport> {
        self.transaction(|tx| apply_retention(tx, &retention_in(tx)?, now_ms, true))
    }

    /// Up to `limit` interactions with row id > `after_id`, in id order, with
    /// their candidates (in logged order).
    pub fn interactions(
        &self,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<(i64, LoggedInteraction)>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT id, uid, ts_ms, kind, query, model_version, explored, response, complete, meta \
             FROM interactions WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = st
            .query_map(params![after_id, limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    LoggedInteraction {
                        uid: r.get(1)?,
                        ts_ms: r.get(2)?,
                        kind: InteractionKind::from(r.get::<_, String>(3)?),
                        query: r.get(4)?,
                        model_version: r.get(5)?,
                        explored: r.get(6)?,
                        response: r.get(7)?,
                        complete: r.get(8)?,
                        meta: InteractionMeta::default(),
                        candidates: Vec::new(),
                    },
                    r.get::<_, String>(9)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut cst = conn.prepare_cached(
            "SELECT chunk_id, position, score, propensity, features, text \
             FROM interaction_candidates WHERE interaction_id = ?1 ORDER BY ord",
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, mut i, meta) in rows {
            // Rows from before the typed meta may hold `null`.
            let raw: serde_json::Value = from_json(&meta, "interaction meta")?;
            if !raw.is_null() {
                i.meta = serde_json::from_value(raw).map_err(|e| {
                    StoreError::Invalid(format!("interaction meta of row {id}: {e}"))
                })?;
            }
            let cands = cst
                .query_map([id], |r| {
                    Ok((
                        LoggedCandidate {
                            chunk_id: r.get::<_, i64>(0)? as u64,
                            position: r.get::<_, Option<i64>>(1)?.map(|p| p as u32),
                            score: r.get::<_, f64>(2)? as f32,
                            propensity: r.get::<_, f64>(3)? as f32,
                            features: serde_json::Value::Null,
                            text: r.get(5)?,
                        },
                        r.get::<_, String>(4)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for (mut c, f) in cands {
                c.features = from_json(&f, "candidate features")?;
                i.candidates.push(c);
            }
            out.push((id, i));
        }
        Ok(out)
    }

    /// The row id of the interaction with `uid`, if it is logged.
    pub fn interaction_id(&self, uid: &str) -> Result<Option<i64>> {
        Ok(self
            .conn()
            .query_row("SELECT id FROM interactions WHERE uid = ?1", [uid], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Row id of the newest logged interaction (0 for an empty log): the
    /// watermark a usage memory built now would have.
    pub fn last_interaction_id(&self) -> Result<i64> {
        Ok(self
            .conn()
            .query_row("SELECT COALESCE(MAX(id), 0) FROM interactions", [], |r| {
                r.get::<_, i64>(0)
            })?)
    }

    /// Number of logged interactions.
    pub fn interaction_count(&self) -> Result<u64> {
        Ok(self
            .conn()
            .query_row("SELECT COUNT(*) FROM interactions", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    /// Inserts usage labels in one transaction. A row whose (interaction,
    /// chunk, analyzer version) is already labelled replaces that label
    /// (re-running one analyzer version is idempotent); labels of other
    /// analyzer versions and the interactions themselves are never touched.
    /// Labels must refer to logged interactions.
    pub fn put_labels(&self, rows: &[UsageLabelRow]) -> Result<()> {
        self.transaction(|tx| {
            let mut exists = tx.prepare_cached("SELECT 1 FROM interactions WHERE id = ?1")?;
            let mut st = tx.prepare_cached(
                "INSERT INTO usage_labels(interaction_id, chunk_id, analyzer_version, score, used, \
                 evidence) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT(interaction_id, chunk_id, analyzer_version) DO UPDATE SET \
                 score = excluded.score, used = excluded.used, evidence = excluded.evidence",
            )?;
            for l in rows {
                if l.analyzer_version.trim().is_empty() {
                    return Err(StoreError::Invalid(
                        "a usage label needs a non-empty analyzer version".into(),
                    ));
                }
                check_f32(l.score, "label score")?;
                if exists
                    .query_row([l.interaction_id], |_| Ok(()))
                    .optional()?
                    .is_none()
                {
                    return Err(StoreError::Invalid(format!(
                        "label for interaction {} which is not in the log",
                        l.interaction_id
                    )));
                }
                st.execute(params![
                    l.interaction_id,
                    l.chunk_id as i64,
                    l.analyzer_version,
                    f64::from(l.score),
                    l.used,
                    to_json(&l.evidence, "label evidence")?
                ])?;
            }
            Ok(())
        })
    }

    /// Every label written by `analyzer_version`, by interaction and chunk.
    pub fn labels(&self, analyzer_version: &str) -> Result<Vec<UsageLabelRow>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!(
            "SELECT {LABEL_COLUMNS} FROM usage_labels WHERE analyzer_version = ?1 \
             ORDER BY interaction_id, chunk_id"
        ))?;
        let rows = st
            .query_map([analyzer_version], label_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        finish_labels(rows)
    }

    /// Labels of one interaction, every analyzer version.
    pub fn labels_of(&self, interaction_id: i64) -> Result<Vec<UsageLabelRow>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(&format!(
            "SELECT {LABEL_COLUMNS} FROM usage_labels WHERE interaction_id = ?1 \
             ORDER BY analyzer_version, chunk_id"
        ))?;
        let rows = st
            .query_map([interaction_id], label_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        finish_labels(rows)
    }

    /// The analyzer versions that wrote labels.
    pub fn analyzer_versions(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT DISTINCT analyzer_version FROM usage_labels ORDER BY analyzer_version",
        )?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Stores feedback and returns its id. The rating must be +1 or -1 when
    /// given; the interaction uid must be non-empty (it is not required to be
    /// logged yet: a chat answer is logged when its stream ends).
    pub fn add_feedback(&self, f: &Feedback) -> Result<i64> {
        if f.interaction_uid.trim().is_empty() {
            return Err(StoreError::Invalid(
                "feedback needs the interaction id".into(),
            ));
        }
        if let Some(r) = f.rating {
            if r != 1 && r != -1 {
                return Err(StoreError::Invalid(format!(
                    "a rating is +1 or -1, not {r}"
                )));
            }
        }
        if let Some(c) = &f.comment {
            if c.len() > MAX_FEEDBACK_COMMENT_BYTES {
                return Err(StoreError::Invalid(format!(
                    "the feedback comment is {} bytes, more than the {MAX_FEEDBACK_COMMENT_BYTES} allowed",
                    c.len()
                )));
            }
        }
        if f.chunk_ids.len() > MAX_FEEDBACK_CHUNKS {
            return Err(StoreError::Invalid(format!(
                "the feedback names {} chunks, more than the {MAX_FEEDBACK_CHUNKS} allowed",
                f.chunk_ids.len()
            )));
        }
        let ids: Vec<i64> = f.chunk_ids.iter().map(|&c| c as i64).collect();
        let ids = to_json(&ids, "feedback chunk ids")?;
        self.transaction(|tx| {
            let n: i64 = tx.query_row(
                "SELECT COUNT(*) FROM feedback WHERE interaction_uid = ?1",
                [&f.interaction_uid],
                |r| r.get(0),
            )?;
            if n as u64 >= MAX_FEEDBACK_PER_INTERACTION {
                return Err(StoreError::Invalid(format!(
                    "interaction `{}` already has {n} feedback entries, the most kept",
                    f.interaction_uid
                )));
            }
            tx.execute(
                "INSERT INTO feedback(interaction_uid, ts_ms, rating, chunk_ids, comment) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![f.interaction_uid, f.ts_ms, f.rating, ids, f.comment],
            )?;
            let id = tx.last_insert_rowid();
            apply_retention(tx, &retention_in(tx)?, now_ms(), false)?;
            Ok(id)
        })
    }

    /// All feedback, oldest first.
    pub fn feedback(&self) -> Result<Vec<Feedback>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT interaction_uid, ts_ms, rating, chunk_ids, comment FROM feedback ORDER BY id",
        )?;
        let rows = st
            .query_map([], feedback_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        finish_feedback(rows)
    }

    /// Up to `limit` feedback rows with row id > `after`, oldest first, each
    /// with its row id.
    pub fn feedback_after(&self, after: i64, limit: usize) -> Result<Vec<(i64, Feedback)>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT interaction_uid, ts_ms, rating, chunk_ids, comment, id FROM feedback \
             WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = st
            .query_map(params![after, limit.min(i64::MAX as usize) as i64], |r| {
                Ok((r.get::<_, i64>(5)?, feedback_from_row(r)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let (ids, rows): (Vec<i64>, Vec<_>) = rows.into_iter().unzip();
        Ok(ids.into_iter().zip(finish_feedback(rows)?).collect())
    }

    /// Feedback on one interaction, oldest first.
    pub fn feedback_for(&self, interaction_uid: &str) -> Result<Vec<Feedback>> {
        let conn = self.conn();
        let mut st = conn.prepare_cached(
            "SELECT interaction_uid, ts_ms, rating, chunk_ids, comment FROM feedback \
             WHERE interaction_uid = ?1 ORDER BY id",
        )?;
        let rows = st
            .query_map([interaction_uid], feedback_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        finish_feedback(rows)
    }

    /// Counts over the whole log.
    pub fn log_stats(&self) -> Result<LogStats> {
        let conn = self.conn();
        let one = |sql: &str| -> Result<i64> { Ok(conn.query_row(sql, [], |r| r.get(0))?) };
        let groups = |sql: &str| -> Result<Vec<(String, u64)>> {
            let mut st = conn.prepare(sql)?;
            let rows = st.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        };
        let (first, last): (Option<i64>, Option<i64>) =
            conn.query_row("SELECT MIN(ts_ms), MAX(ts_ms) FROM interactions", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        Ok(LogStats {
            interactions: one("SELECT COUNT(*) FROM interactions")? as u64,
            by_kind: groups("SELECT kind, COUNT(*) FROM interactions GROUP BY kind ORDER BY kind")?,
            by_model_version: groups(
                "SELECT model_version, COUNT(*) FROM interactions GROUP BY model_version \
                 ORDER BY model_version",
            )?,
            explored: one("SELECT COUNT(*) FROM interactions WHERE explored = 1")? as u64,
            with_response: one("SELECT COUNT(*) FROM interactions WHERE response IS NOT NULL")?
                as u64,
            complete: one("SELECT COUNT(*) FROM interactions WHERE complete = 1")? as u64,
            candidates: one("SELECT COUNT(*) FROM interaction_candidates")? as u64,
            shown: one("SELECT COUNT(*) FROM interaction_candidates WHERE position IS NOT NULL")?
                as u64,
            labels: groups(
                "SELECT analyzer_version, COUNT(*) FROM usage_labels GROUP BY analyzer_version \
                 ORDER BY analyzer_version",
            )?,
            feedback: one("SELECT COUNT(*) FROM feedback")? as u64,
            feedback_positive: one("SELECT COUNT(*) FROM feedback WHERE rating = 1")? as u64,
            feedback_negative: one("SELECT COUNT(*) FROM feedback WHERE rating = -1")? as u64,
            first_ts_ms: first,
            last_ts_ms: last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("log.sqlite")).unwrap();
        (dir, db)
    }

    fn interaction(uid: &str, n: usize) -> LoggedInteraction {
        LoggedInteraction {
            uid: uid.into(),
            ts_ms: 1_700_000_000_000,
            kind: "context".into(),
            query: format!("query {uid} — ünïcode"),
            model_version: "fusion-v1".into(),
            explored: n % 2 == 1,
            response: (n > 1).then(|| "it boils at 100 degrees [1]".to_string()),
            complete: true,
            meta: InteractionMeta {
                latency_ms: Some(3),
                mode: Some("bm25".into()),
                ..InteractionMeta::default()
            },
            candidates: (0..n)
                .map(|k| LoggedCandidate {
                    chunk_id: 10 + k as u64,
                    position: (k < 2).then_some(k as u32 + 1),
                    score: 1.0 / (k as f32 + 1.0),
                    propensity: if k < 2 { 0.9 } else { 0.05 },
                    features: json!({"rrf": 0.1 * k as f64, "bm25": null}),
                    text: (k < 2).then(|| format!("chunk text {k}")),
                })
                .collect(),
        }
    }

    #[test]
    fn foreign_candidates_are_placed_once_and_their_labels_dropped() {
        // The SQL (migration v5's partial index and its queries) spells the
        // bound out.
        assert_eq!(FOREIGN_CHUNK_BASE.to_string(), "4611686018427387904");
        assert!(crate::db::MIGRATIONS[4].contains("4611686018427387904"));
        let (_d, db) = db();
        let far = FOREIGN_CHUNK_BASE + 5;
        let mut it = interaction("pulled", 3);
        it.candidates[0].chunk_id = far;
        let row = db.append_interaction(&it).unwrap();
        db.put_labels(&[UsageLabelRow {
            interaction_id: row,
            chunk_id: far,
            analyzer_version: "v".into(),
            score: 0.0,
            used: false,
            evidence: json!(null),
        }])
        .unwrap();
        // Nothing to place for a chunk no candidate names, or a local id.
        assert_eq!(db.place_foreign(&[(far + 1, 7), (11, 7)]).unwrap(), 0);
        assert_eq!(db.labels_of(row).unwrap().len(), 1);
        assert_eq!(db.place_foreign(&[(far, 42)]).unwrap(), 1);
        let (_, back) = db.interactions(row - 1, 1).unwrap().remove(0);
        let ids: Vec<u64> = back.candidates.iter().map(|c| c.chunk_id).collect();
        assert_eq!(ids, vec![42, 11, 12]);
        assert!(db.labels_of(row).unwrap().is_empty());
        assert_eq!(db.place_foreign(&[(far, 42)]).unwrap(), 0);
    }

    #[test]
    fn the_log_stays_bounded_under_a_write_loop() {
        let (_d, db) = db();
        assert_eq!(db.retention().unwrap(), Retention::default());
        db.set_retention(&Retention {
            max_age_days: None,
            max_interactions: Some(500),
        })
        .unwrap();
        for k in 0..2000 {
            let mut i = interaction(&format!("u{k}"), 3);
            i.ts_ms = now_ms();
            let id = db.append_interaction(&i).unwrap();
            db.put_labels(&[UsageLabelRow {
                interaction_id: id,
                chunk_id: 10,
                analyzer_version: "a1".into(),
                score: 1.0,
                used: true,
                evidence: json!(null),
            }])
            .unwrap();
            db.add_feedback(&Feedback {
                interaction_uid: format!("u{k}"),
                ts_ms: now_ms(),
                rating: Some(1),
                chunk_ids: vec![10],
                comment: None,
            })
            .unwrap();
            assert!(db.interaction_count().unwrap() <= 500);
        }
        let s = db.log_stats().unwrap();
        assert_eq!(s.interactions, 500, "{s:?}");
        assert_eq!(s.candidates, 500 * 3, "{s:?}");
        assert!(s.feedback <= 500, "{s:?}");
        assert_eq!(s.labels, vec![("a1".to_string(), 500)], "{s:?}");
        // The oldest were dropped: the first kept is u1500.
        let first = db.interactions(0, 1).unwrap();
        assert_eq!(first[0].1.uid, "u1500");
        assert!(db.feedback_for("u1499").unwrap().is_empty());
        assert_eq!(db.feedback_for("u1500").unwrap().len(), 1);
        assert!(db
            .set_retention(&Retention {
                max_age_days: None,
                max_interactions: Some(0),
            })
            .is_err());
    }

    #[test]
    fn old_interactions_are_dropped_by_age() {
        let (_d, db) = db();
        let day = 86_400_000;
        let now = now_ms();
        // Out of time order on purpose: the prune command finds them all.
        for (k, age_days) in [40, 10, 35, 1, 0].into_iter().enumerate() {
            let mut i = interaction(&format!("a{k}"), 2);
            i.ts_ms = now - age_days * day;
            db.append_interaction(&i).unwrap();
        }
        assert_eq!(db.interaction_count().unwrap(), 5);
        db.set_retention(&Retention {
            max_age_days: Some(30),
            max_interactions: None,
        })
        .unwrap();
        // On append only the expired prefix (a0) goes.
        let mut i = interaction("a5", 2);
        i.ts_ms = now;
        db.append_interaction(&i).unwrap();
        assert_eq!(db.interaction_count().unwrap(), 5);
        assert!(db.interaction_id("a0").unwrap().is_none());
        // The prune finds a2 as well.
        let r = db.prune_log_at(now).unwrap();
        assert_eq!(r.interactions, 1, "{r:?}");
        assert_eq!(r.candidates, 2, "{r:?}");
        assert!(db.interaction_id("a2").unwrap().is_none());
        let left: Vec<String> = db
            .interactions(0, 100)
            .unwrap()
            .into_iter()
            .map(|(_, i)| i.uid)
            .collect();
        assert_eq!(left, ["a1", "a3", "a4", "a5"]);
    }

    #[test]
    fn feedback_size_is_capped() {
        let (_d, db) = db();
        let fb = |comment: usize, chunks: usize| Feedback {
            interaction_uid: "x".into(),
            ts_ms: now_ms(),
            rating: Some(-1),
            chunk_ids: (0..chunks as u64).collect(),
            comment: Some("c".repeat(comment)),
        };
        let e = db
            .add_feedback(&fb(MAX_FEEDBACK_COMMENT_BYTES + 1, 1))
            .unwrap_err();
        assert!(e.to_string().contains("bytes, more than"), "{e}");
        let e = db
            .add_feedback(&fb(1, MAX_FEEDBACK_CHUNKS + 1))
            .unwrap_err();
        assert!(e.to_string().contains("chunks, more than"), "{e}");
        for _ in 0..MAX_FEEDBACK_PER_INTERACTION {
            db.add_feedback(&fb(MAX_FEEDBACK_COMMENT_BYTES, MAX_FEEDBACK_CHUNKS))
                .unwrap();
        }
        let e = db.add_feedback(&fb(1, 1)).unwrap_err();
        assert!(e.to_string().contains("the most kept"), "{e}");
        assert_eq!(
            db.feedback_for("x").unwrap().len() as u64,
            MAX_FEEDBACK_PER_INTERACTION
        );
    }

    #[test]
    fn rows_written_before_the_typed_record_read_back() {
        // What earlier versions wrote: a free-form meta (or `null`) and kind
        // names as text, including ones this version does not know.
        let (_d, db) = db();
        let conn = db.conn();
        for (uid, kind, meta) in [
            (
                "old-1",
                "context",
                r#"{"latency_ms": 7, "mode": "hybrid", "custom": [1, 2]}"#,
            ),
            ("old-2", "chat", "null"),
            ("old-3", "import", r#"{"streamed": true}"#),
        ] {
            conn.execute(
                "INSERT INTO interactions(uid, ts_ms, kind, query, model_version, explored, \
                 response, complete, meta) VALUES (?1, 1, ?2, 'q', '', 0, NULL, 1, ?3)",
                params![uid, kind, meta],
            )
            .unwrap();
        }
        drop(conn);
        let rows = db.interactions(0, 10).unwrap();
        assert_eq!(rows.len(), 3);
        let (_, a) = &rows[0];
        assert_eq!(a.kind, InteractionKind::Context);
        assert_eq!(a.meta.latency_ms, Some(7));
        assert_eq!(a.meta.mode.as_deref(), Some("hybrid"));
        assert_eq!(a.meta.other["custom"], json!([1, 2]));
        let (_, b) = &rows[1];
        assert_eq!(b.kind, InteractionKind::Chat);
        assert_eq!(b.meta, InteractionMeta::default());
        let (_, c) = &rows[2];
        assert_eq!(c.kind, InteractionKind::Other("import".into()));
        assert_eq!(c.meta.streamed, Some(true));
        // Unknown keys survive a round trip through the typed meta.
        let mut again = a.clone();
        again.uid = "again".into();
        db.append_interaction(&again).unwrap();
        let back = db.interactions(rows[2].0, 10).unwrap();
        assert_eq!(back[0].1.meta, a.meta);
        assert_eq!(back[0].1.kind.as_str(), "context");
    }

    #[test]
    fn interactions_round_trip_in_order_with_paging() {
        let (_d, db) = db();
        let a = interaction("a", 3);
        let b = interaction("b", 0);
        let c = interaction("c", 5);
        let ia = db.append_interaction(&a).unwrap();
        let ids = db.append_interactions(&[b.clone(), c.clone()]).unwrap();
        assert_eq!(ids.len(), 2);
        assert!(ia < ids[0] && ids[0] < ids[1]);
        assert_eq!(db.interaction_count().unwrap(), 3);
        let all = db.interactions(0, 100).unwrap();
        assert_eq!(all, vec![(ia, a.clone()), (ids[0], b), (ids[1], c.clone())]);
        // Paging by id.
        let page = db.interactions(ia, 1).unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].0, ids[0]);
        assert_eq!(db.interactions(ids[1], 10).unwrap(), vec![]);
        assert_eq!(db.interaction_id("c").unwrap(), Some(ids[1]));
        assert_eq!(db.interaction_id("zz").unwrap(), None);
        let s = db.log_stats().unwrap();
        assert_eq!(s.interactions, 3);
        assert_eq!(s.candidates, 8);
        assert_eq!(s.shown, 4);
        assert_eq!(s.explored, 2);
        assert_eq!(s.with_response, 2);
    }

    #[test]
    fn refuses_duplicates_and_bad_values_without_partial_writes() {
        let (_d, db) = db();
        db.append_interaction(&interaction("a", 2)).unwrap();
        let err = db.append_interaction(&interaction("a", 2)).unwrap_err();
        assert!(err.to_string().contains("already in the log"), "{err}");
        let mut bad = interaction("nan", 3);
        bad.candidates[2].score = f32::NAN;
        assert!(db.append_interaction(&bad).is_err());
        let mut bad = interaction("p", 3);
        bad.candidates[1].propensity = 1.5;
        assert!(db.append_interaction(&bad).is_err());
        assert!(db.append_interaction(&interaction(" ", 1)).is_err());
        // A batch with one bad item writes nothing.
        let r = db.append_interactions(&[interaction("ok1", 1), interaction("a", 1)]);
        assert!(r.is_err());
        assert_eq!(db.interaction_count().unwrap(), 1);
        assert_eq!(db.log_stats().unwrap().candidates, 2);
    }

    #[test]
    fn relabelling_with_a_new_analyzer_version_leaves_the_old_labels_intact() {
        let (_d, db) = db();
        let id = db.append_interaction(&interaction("a", 3)).unwrap();
        let v1: Vec<UsageLabelRow> = [10u64, 11]
            .iter()
            .map(|&c| UsageLabelRow {
                interaction_id: id,
                chunk_id: c,
                analyzer_version: "usage-v1".into(),
                score: 0.8,
                used: c == 10,
                evidence: json!({"citation": c == 10}),
            })
            .collect();
        db.put_labels(&v1).unwrap();
        let mut v2 = v1.clone();
        for l in &mut v2 {
            l.analyzer_version = "usage-v2".into();
            l.used = !l.used;
            l.score = 0.3;
            l.evidence = json!({"ngrams": 4});
        }
        db.put_labels(&v2).unwrap();
        assert_eq!(db.labels("usage-v1").unwrap(), v1);
        assert_eq!(db.labels("usage-v2").unwrap(), v2);
        assert_eq!(db.labels_of(id).unwrap().len(), 4);
        assert_eq!(
            db.analyzer_versions().unwrap(),
            vec!["usage-v1".to_string(), "usage-v2".to_string()]
        );
        // Re-running v1 is idempotent: same rows, no duplicates.
        db.put_labels(&v1).unwrap();
        assert_eq!(db.labels("usage-v1").unwrap(), v1);
        // The event itself is unchanged.
        assert_eq!(db.interactions(0, 10).unwrap()[0].1, interaction("a", 3));
        // Labels for an unknown interaction are refused, atomically.
        let mut bad = v1.clone();
        bad[1].interaction_id = 999;
        bad[0].analyzer_version = "usage-v3".into();
        bad[1].analyzer_version = "usage-v3".into();
        assert!(db.put_labels(&bad).is_err());
        assert!(db.labels("usage-v3").unwrap().is_empty());
        assert!(db.labels("nope").unwrap().is_empty());
    }

    #[test]
    fn feedback_round_trips_and_bad_ratings_are_refused() {
        let (_d, db) = db();
        let f = Feedback {
            interaction_uid: "a".into(),
            ts_ms: 5,
            rating: Some(-1),
            chunk_ids: vec![3, u64::from(u32::MAX) + 7],
            comment: Some("wrong file".into()),
        };
        let g = Feedback {
            interaction_uid: "b".into(),
            ts_ms: 6,
            rating: None,
            chunk_ids: vec![],
            comment: None,
        };
        let i1 = db.add_feedback(&f).unwrap();
        let i2 = db.add_feedback(&g).unwrap();
        assert!(i2 > i1);
        assert_eq!(db.feedback().unwrap(), vec![f.clone(), g]);
        assert_eq!(db.feedback_for("a").unwrap(), vec![f.clone()]);
        let mut bad = f.clone();
        bad.rating = Some(2);
        assert!(db.add_feedback(&bad).is_err());
        bad.rating = None;
        bad.interaction_uid = String::new();
        assert!(db.add_feedback(&bad).is_err());
        let s = db.log_stats().unwrap();
        assert_eq!(
            (s.feedback, s.feedback_negative, s.feedback_positive),
            (2, 1, 0)
        );
    }

    #[test]
    fn an_empty_log_reads_as_empty() {
        let (_d, db) = db();
        assert_eq!(db.interaction_count().unwrap(), 0);
        assert!(db.interactions(0, 10).unwrap().is_empty());
        assert!(db.labels("usage-v1").unwrap().is_empty());
        assert!(db.feedback().unwrap().is_empty());
        let s = db.log_stats().unwrap();
        assert_eq!(s, LogStats::default());
    }

    #[test]
    fn a_version_1_store_gains_the_log_on_open_and_keeps_its_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("old.sqlite");
        {
            let c = rusqlite::Connection::open(&p).unwrap();
            c.execute_batch(crate::db::MIGRATIONS[0]).unwrap();
            c.execute(
                "INSERT INTO documents(path, content_hash, bytes, kind, indexed_at) \
                 VALUES ('a.md', 'h', 1, 'markdown', 0)",
                [],
            )
            .unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
        }
        let db = Db::open(&p).unwrap();
        assert_eq!(db.schema_version().unwrap(), crate::db::SCHEMA_VERSION);
        assert_eq!(db.document_count().unwrap(), 1);
        db.append_interaction(&interaction("a", 1)).unwrap();
        db.set_durability(Durability::Full).unwrap();
        db.append_interaction(&interaction("b", 1)).unwrap();
        assert_eq!(db.interaction_count().unwrap(), 2);
    }

    #[test]
    fn concurrent_first_opens_of_an_old_store_migrate_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("old.sqlite");
        {
            let c = rusqlite::Connection::open(&p).unwrap();
            c.execute_batch(crate::db::MIGRATIONS[0]).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
        }
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || Db::open(&p).map(|db| db.schema_version().unwrap()))
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap().unwrap(), crate::db::SCHEMA_VERSION);
        }
    }
}
