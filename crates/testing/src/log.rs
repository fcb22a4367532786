//! Interaction-log fixtures (`log` feature): interactions with usage labels
//! written straight into a store, for usage-memory and learning tests.

use anectx_store::{Db, LoggedCandidate, LoggedInteraction, UsageLabelRow};

/// Logs `query` (interaction `uid`, kind `test`) as shown the chunks
/// `shown` in that order, and labels (with `analyzer_version`) which of them
/// the answer used: those in `used`. Returns the interaction's row id.
pub fn log_used(
    db: &Db,
    uid: &str,
    query: &str,
    shown: &[u64],
    used: &[u64],
    analyzer_version: &str,
) -> i64 {
    let id = db
        .append_interaction(&LoggedInteraction {
            uid: uid.into(),
            ts_ms: 0,
            kind: "test".into(),
            query: query.into(),
            model_version: "fusion".into(),
            explored: false,
            response: Some("an answer".into()),
            complete: true,
            meta: Default::default(),
            candidates: shown
                .iter()
                .enumerate()
                .map(|(i, &c)| LoggedCandidate {
                    chunk_id: c,
                    position: Some(i as u32 + 1),
                    score: 1.0,
                    propensity: 1.0,
                    features: serde_json::json!({}),
                    text: Some("shown".into()),
                })
                .collect(),
        })
        .unwrap_or_else(|e| panic!("logging {uid}: {e}"));
    let rows: Vec<UsageLabelRow> = shown
        .iter()
        .map(|&c| UsageLabelRow {
            interaction_id: id,
            chunk_id: c,
            analyzer_version: analyzer_version.into(),
            score: f32::from(u8::from(used.contains(&c))),
            used: used.contains(&c),
            evidence: serde_json::Value::Null,
        })
        .collect();
    db.put_labels(&rows)
        .unwrap_or_else(|e| panic!("labelling {uid}: {e}"));
    id
}
