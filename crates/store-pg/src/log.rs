//! The fleet's interaction log in the shared store.
//!
//! Every replica appends its interactions here (an append is acknowledged
//! only after PostgreSQL commits it), and a learner pulls them into its
//! local log, where `anectx train` and the usage memory read them as today.

use anectx_store::{LoggedInteraction, Store};
use serde::Serialize;

use crate::{PgError, PgStore, Result};

/// Local meta key: the last shared interaction pulled into this local log.
pub const LOG_WATERMARK_KEY: &str = "shared_log_watermark";

/// Local meta key: the last local interaction row pushed to the shared log.
pub const LOG_PUSHED_KEY: &str = "shared_log_pushed";

/// What [`PgStore::pull_log`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PullReport {
    pub from: i64,
    pub to: i64,
    /// Interactions copied into the local log.
    pub pulled: u64,
    /// Interactions the local log already had (same uid).
    pub already_local: u64,
}

impl PgStore {
    /// Appends interactions in one transaction; returns their shared ids.
    /// An interaction whose uid is already in the shared log is not written
    /// twice (its existing id is returned), so a retried append is safe.
    pub fn append_interactions(&self, items: &[LoggedInteraction]) -> Result<Vec<i64>> {
        let mut c = self.client();
        let mut tx = c.transaction()?;
        let mut ids = Vec::with_capacity(items.len());
        for it in items {
            let record = serde_json::to_value(it)
                .map_err(|e| PgError::Invalid(format!("interaction {}: {e}", it.uid)))?;
            let row = tx.query_opt(
                "INSERT INTO anectx_interactions(uid, record) VALUES ($1, $2) \
                 ON CONFLICT (uid) DO NOTHING RETURNING id",
                &[&it.uid, &record],
            )?;
            let id = match row {
                Some(r) => r.get(0),
                None => tx
                    .query_one(
                        "SELECT id FROM anectx_interactions WHERE uid = $1",
                        &[&it.uid],
                    )?
                    .get(0),
            };
            ids.push(id);
        }
        tx.commit()?;
        Ok(ids)
    }

    /// Number of interactions in the shared log.
    pub fn interaction_count(&self) -> Result<u64> {
        let r = self
            .client()
            .query_one("SELECT COUNT(*) FROM anectx_interactions", &[])?;
        Ok(r.get::<_, i64>(0) as u64)
    }

    /// Up to `limit` interactions with shared id > `after`, in id order.
    pub fn interactions_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, LoggedInteraction)>> {
        let rows = self.client().query(
            "SELECT id, record FROM anectx_interactions WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after, &(limit.min(i64::MAX as usize) as i64)],
        )?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.get(0);
                let v: serde_json::Value = r.get(1);
                serde_json::from_value(v)
                    .map(|it| (id, it))
                    .map_err(|e| PgError::Invalid(format!("shared interaction {id}: {e}")))
            })
            .collect()
    }

    /// Sends `local`'s interactions logged since the last push that the
    /// shared log lacks (by uid):
    /// the catch-up for interactions a replica logged while the shared
    /// store was unreachable. Returns how many were sent.
    pub fn push_log(&self, local: &Store) -> Result<u64> {
        let mut after: i64 = local
            .db
            .meta(LOG_PUSHED_KEY)?
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut sent = 0u64;
        loop {
            let batch = local.db.interactions(after, 500)?;
            let Some(last) = batch.last().map(|b| b.0) else {
                break;
            };
            // Most rows are already there: the server's mirror wrote them
            // before acknowledging, and rows pulled from other replicas came
            // from there. One lookup a batch instead of a write a row.
            let uids: Vec<&str> = batch.iter().map(|(_, it)| it.uid.as_str()).collect();
            let known: std::collections::HashSet<String> = self
                .client()
                .query(
                    "SELECT uid FROM anectx_interactions WHERE uid = ANY($1)",
                    &[&uids],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let items: Vec<LoggedInteraction> = batch
                .into_iter()
                .map(|(_, it)| it)
                .filter(|it| !known.contains(&it.uid))
                .collect();
            if !items.is_empty() {
                self.append_interactions(&items)?;
            }
            sent += items.len() as u64;
            local.db.set_meta(LOG_PUSHED_KEY, &last.to_string())?;
            after = last;
        }
        Ok(sent)
    }

    /// Copies the shared log's new interactions into `local`'s log (those
    /// it lacks, by uid), so training and the usage memory see the whole
    /// fleet's traffic. Safe to interrupt and rerun.
    pub fn pull_log(&self, local: &Store) -> Result<PullReport> {
        let from: i64 = local
            .db
            .meta(LOG_WATERMARK_KEY)?
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut report = PullReport {
            from,
            to: from,
            ..PullReport::default()
        };
        loop {
            let batch = self.interactions_after(report.to, 1000)?;
            let Some(last) = batch.last().map(|b| b.0) else {
                break;
            };
            let mut fresh = Vec::with_capacity(batch.len());
            for (_, it) in batch {
                if local.db.interaction_id(&it.uid)?.is_some() {
                    report.already_local += 1;
                } else {
                    fresh.push(it);
                }
            }
            local.db.append_interactions(&fresh)?;
            report.pulled += fresh.len() as u64;
            local.db.set_meta(LOG_WATERMARK_KEY, &last.to_string())?;
            report.to = last;
        }
        Ok(report)
    }
}
