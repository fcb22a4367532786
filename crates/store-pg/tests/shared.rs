//! The shared store against a real PostgreSQL 16 + pgvector (started per
//! test from the pgserver PyPI package, Unix socket only): migrations from an
//! empty database, the shared interaction log (chunk ids placed in each
//! replica's own numbering), and a writer killed with SIGKILL under load
//! losing no acknowledged interaction.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use anectx_store::{
    Db, InteractionKind, InteractionMeta, LoggedCandidate, LoggedInteraction, NewChunk, Store,
};
use anectx_store_pg::{PgError, PgStore, FOREIGN_CHUNK_BASE, MIGRATIONS};
use anectx_testing::pg::PgServer;

fn interaction(uid: &str) -> LoggedInteraction {
    LoggedInteraction {
        uid: uid.into(),
        ts_ms: 1_700_000_000_000,
        kind: InteractionKind::Context,
        query: format!("question {uid}"),
        model_version: "fusion-v1".into(),
        explored: false,
        response: None,
        complete: true,
        meta: InteractionMeta::default(),
        candidates: Vec::new(),
    }
}

/// A local store with no chunks: what a replica that names no chunk pushes
/// from.
fn no_chunks() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("anectx.sqlite")).unwrap();
    (dir, db)
}

/// Writes documents `(path, content hash, chunk texts)` into `db`, in
/// order; the ids it gave each chunk, by text.
fn write_docs(db: &Db, docs: &[(&str, &str, &[&str])]) -> std::collections::HashMap<String, u64> {
    let mut ids = std::collections::HashMap::new();
    for (path, hash, texts) in docs {
        let chunks: Vec<NewChunk> = texts
            .iter()
            .map(|t| NewChunk {
                text: t.to_string(),
                heading: None,
                byte_start: 0,
                byte_end: t.len(),
                line_start: 1,
                line_end: 1,
                tokens: 3,
                page: None,
            })
            .collect();
        let got = db
            .transaction(|tx| Db::replace_document(tx, path, hash, 10, "text", &chunks))
            .unwrap();
        for (t, id) in texts.iter().zip(got) {
            ids.insert(t.to_string(), id);
        }
    }
    ids
}

const LIGHT: &[&str] = &["the keeper trims the wick", "the lamp turns all night"];
const GARDEN: &[&str] = &["compost for the beds", "seedlings in spring"];

/// Two caches of the same two documents that numbered their chunks
/// differently: A wrote the lighthouse first, B the garden.
struct Twins {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    a: Store,
    b: Db,
    a_ids: std::collections::HashMap<String, u64>,
    b_ids: std::collections::HashMap<String, u64>,
}

fn twins() -> Twins {
    let a_dir = tempfile::tempdir().unwrap();
    let a = Store::open(a_dir.path()).unwrap();
    let (b_dir, b) = no_chunks();
    let a_ids = write_docs(
        &a.db,
        &[
            ("/kb/light.md", "h1", LIGHT),
            ("/kb/garden.md", "h2", GARDEN),
        ],
    );
    let b_ids = write_docs(
        &b,
        &[
            ("/kb/garden.md", "h2", GARDEN),
            ("/kb/light.md", "h1", LIGHT),
        ],
    );
    Twins {
        _dirs: (a_dir, b_dir),
        a,
        b,
        a_ids,
        b_ids,
    }
}

/// Interaction `uid` whose candidates, all shown, are the chunks with
/// `texts`, by the ids `ids` gives them.
fn asked_over(
    uid: &str,
    ids: &std::collections::HashMap<String, u64>,
    texts: &[&str],
) -> LoggedInteraction {
    let mut it = interaction(uid);
    for text in texts {
        it.candidates.push(LoggedCandidate {
            chunk_id: ids[*text],
            position: Some(1),
            score: 1.0,
            propensity: 1.0,
            features: serde_json::Value::Null,
            text: Some(text.to_string()),
        });
    }
    it
}

#[test]
fn an_interaction_names_the_same_chunks_on_every_replica() {
    let Some(pg) = PgServer::start() else { return };
    let st = PgStore::connect(&pg.conninfo("postgres")).unwrap();
    // Two caches of the same documents that numbered their chunks
    // differently (B wrote the garden first, then the lighthouse).
    let Twins {
        _dirs,
        a,
        b,
        a_ids,
        b_ids,
    } = twins();
    assert_ne!(
        a_ids["the keeper trims the wick"],
        b_ids["the keeper trims the wick"]
    );

    // B logs a question whose answer used the wick chunk; the lamp chunk
    // was a candidate too, and one candidate is a chunk B no longer holds.
    let mut it = interaction("b-1");
    for (text, shown) in [
        ("the keeper trims the wick", true),
        ("the lamp turns all night", false),
    ] {
        it.candidates.push(LoggedCandidate {
            chunk_id: b_ids[text],
            position: shown.then_some(1),
            score: 1.0,
            propensity: 1.0,
            features: serde_json::Value::Null,
            text: shown.then(|| text.to_string()),
        });
    }
    let mut gone = it.candidates[1].clone();
    gone.chunk_id = 9_999;
    it.candidates.push(gone);
    st.append_interactions(&b, &[it]).unwrap();

    // A pulls it: every candidate names A's own chunk with that text.
    let p = st.pull_log(&a.db).unwrap();
    assert_eq!((p.pulled, p.unplaced_candidates), (1, 1));
    let row = a.db.interaction_id("b-1").unwrap().unwrap();
    let (_, got) = a.db.interactions(row - 1, 1).unwrap().remove(0);
    assert_eq!(
        got.candidates[0].chunk_id,
        a_ids["the keeper trims the wick"]
    );
    assert_eq!(
        got.candidates[1].chunk_id,
        a_ids["the lamp turns all night"]
    );
    // The chunk B no longer held is placed nowhere here.
    assert!(got.candidates[2].chunk_id >= FOREIGN_CHUNK_BASE, "{got:?}");
}

#[test]
fn a_candidate_pulled_before_its_document_is_placed_when_the_document_arrives() {
    let Some(pg) = PgServer::start() else { return };
    let st = PgStore::connect(&pg.conninfo("postgres")).unwrap();
    let Twins {
        _dirs, a, a_ids, ..
    } = twins();
    // A answers a question from its lighthouse document.
    st.append_interactions(&a.db, &[asked_over("a-1", &a_ids, LIGHT)])
        .unwrap();
    // B takes the fleet's log before it holds any document: nothing to
    // place the candidates on yet.
    let b_dir = tempfile::tempdir().unwrap();
    let b = Store::open(b_dir.path()).unwrap();
    let p = st.pull_log(&b.db).unwrap();
    assert_eq!((p.pulled, p.unplaced_candidates), (1, 2));
    let row = b.db.interaction_id("a-1").unwrap().unwrap();
    let candidates = |db: &Db| db.interactions(row - 1, 1).unwrap().remove(0).1.candidates;
    assert!(candidates(&b.db)
        .iter()
        .all(|c| c.chunk_id >= FOREIGN_CHUNK_BASE));
    // A label made meanwhile, on a chunk B could not read.
    b.db.put_labels(&[anectx_store::UsageLabelRow {
        interaction_id: row,
        chunk_id: candidates(&b.db)[0].chunk_id,
        analyzer_version: "v".into(),
        score: 0.0,
        used: false,
        evidence: serde_json::Value::Null,
    }])
    .unwrap();
    // A publishes; B's sync brings the document, and the candidates name
    // B's own chunks with those texts; the label is to be made again.
    st.publish(&a, None).unwrap();
    let s = st.sync_into(&b, &mut |_, _| {}).unwrap();
    assert_eq!(s.candidates_placed, 2, "{s:?}");
    let placed = candidates(&b.db);
    let texts: Vec<String> =
        b.db.chunks_by_ids(&placed.iter().map(|c| c.chunk_id).collect::<Vec<_>>())
            .unwrap()
            .into_iter()
            .map(|c| c.text)
            .collect();
    assert_eq!(texts, LIGHT);
    assert!(b.db.labels_of(row).unwrap().is_empty());
    // Syncing again places nothing more.
    assert_eq!(
        st.sync_into(&b, &mut |_, _| {}).unwrap().candidates_placed,
        0
    );
}

#[test]
fn feedback_given_on_one_replica_reaches_the_others_in_their_chunk_ids() {
    let Some(pg) = PgServer::start() else { return };
    let st = PgStore::connect(&pg.conninfo("postgres")).unwrap();
    let Twins {
        _dirs,
        a,
        b,
        a_ids,
        b_ids,
    } = twins();

    // B answers a question and is told the lamp chunk (a candidate) and the
    // compost chunk (not one) were what helped.
    let it = asked_over("b-1", &b_ids, LIGHT);
    b.append_interaction(&it).unwrap();
    b.add_feedback(&anectx_store::Feedback {
        interaction_uid: "b-1".into(),
        ts_ms: 5,
        rating: Some(1),
        chunk_ids: vec![
            b_ids["the lamp turns all night"],
            b_ids["compost for the beds"],
        ],
        comment: Some("the lamp part".into()),
    })
    .unwrap();
    assert_eq!(st.push_log(&b).unwrap(), 1);
    assert_eq!(st.push_feedback(&b).unwrap(), 1);
    assert_eq!(st.push_feedback(&b).unwrap(), 0, "sent once");

    // A cannot place it before it holds the interaction: it waits.
    let p = st.pull_feedback(&a.db).unwrap();
    assert_eq!((p.pulled, p.waiting), (0, true));
    st.pull_log(&a.db).unwrap();
    let p = st.pull_feedback(&a.db).unwrap();
    assert_eq!((p.pulled, p.waiting), (1, false));
    let got = a.db.feedback().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].chunk_ids,
        vec![
            a_ids["the lamp turns all night"],
            a_ids["compost for the beds"]
        ]
    );
    assert_eq!(
        (got[0].rating, got[0].comment.as_deref()),
        (Some(1), Some("the lamp part"))
    );
    // A does not send it back: its push starts after it.
    assert_eq!(
        a.db.meta(anectx_store_pg::FEEDBACK_PUSHED_KEY)
            .unwrap()
            .as_deref(),
        Some("1")
    );
    assert_eq!(st.push_feedback(&a.db).unwrap(), 0);
    // Sent again all the same (a push that ran before the pull was
    // recorded), the shared log keeps one: it is keyed by content.
    a.db.set_meta(anectx_store_pg::FEEDBACK_PUSHED_KEY, "0")
        .unwrap();
    assert_eq!(st.push_feedback(&a.db).unwrap(), 0);
    // B does not take its own feedback again.
    let p = st.pull_feedback(&b).unwrap();
    assert_eq!((p.pulled, p.skipped), (0, 1));
    assert_eq!(b.feedback().unwrap().len(), 1);

    // Feedback on an interaction that never reached the shared log (kept
    // only in B's log) cannot hold up the feedback after it.
    let mut lost = interaction("b-local");
    lost.candidates = it.candidates.clone();
    b.append_interaction(&lost).unwrap();
    b.set_meta(anectx_store_pg::LOG_PUSHED_KEY, "99").unwrap();
    for uid in ["b-local", "b-1"] {
        b.add_feedback(&anectx_store::Feedback {
            interaction_uid: uid.into(),
            ts_ms: 6,
            rating: Some(-1),
            chunk_ids: Vec::new(),
            comment: None,
        })
        .unwrap();
    }
    assert_eq!(st.push_feedback(&b).unwrap(), 2);
    let p = st.pull_feedback(&a.db).unwrap();
    assert_eq!((p.pulled, p.skipped, p.waiting), (1, 1, false), "{p:?}");
    assert_eq!(a.db.feedback().unwrap().len(), 2);
}

#[test]
fn an_empty_database_migrates_once_even_with_replicas_starting_together() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.conninfo("postgres");
    // Four replicas start at once on an empty database.
    let ids: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let st = PgStore::connect(&url).unwrap();
                    assert_eq!(st.schema_version().unwrap(), MIGRATIONS.len() as i64);
                    st.store_id().unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ids.iter().all(|i| i == &ids[0] && !i.is_empty()), "{ids:?}");
    let st = PgStore::connect(&url).unwrap();
    assert_eq!(st.counts().unwrap(), (0, 0));
    assert_eq!(st.head().unwrap(), 0);
    assert_eq!(st.interaction_count().unwrap(), 0);
    assert_eq!(st.embedder().unwrap(), None);
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let v: i64 = c
        .query_one(
            "SELECT COUNT(*) FROM pg_extension WHERE extname = 'vector'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(v, 1, "pgvector is enabled");

    // A database from a newer anectx is refused, not downgraded.
    c.execute("UPDATE anectx_schema SET version = 99", &[])
        .unwrap();
    let err = PgStore::connect(&url).unwrap_err();
    assert!(
        matches!(err, PgError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
}

#[test]
fn the_shared_log_takes_every_replica_and_pulls_into_a_local_log_once() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.conninfo("postgres");
    std::thread::scope(|s| {
        for r in 0..2 {
            let url = &url;
            s.spawn(move || {
                let st = PgStore::connect(url).unwrap();
                let (_dir, db) = no_chunks();
                for i in 0..20 {
                    st.append_interactions(&db, &[interaction(&format!("r{r}-{i}"))])
                        .unwrap();
                }
            });
        }
    });
    let st = PgStore::connect(&url).unwrap();
    let (_dir, db) = no_chunks();
    assert_eq!(st.interaction_count().unwrap(), 40);
    // A retried append is not written twice.
    let first = st.interactions_after(0, 1).unwrap()[0].clone();
    let again = st
        .append_interactions(&db, std::slice::from_ref(&first.interaction))
        .unwrap();
    assert_eq!(again, vec![first.id]);
    assert_eq!(st.interaction_count().unwrap(), 40);

    let dir = tempfile::tempdir().unwrap();
    let local = Store::open(dir.path()).unwrap();
    // This replica logged one of them itself.
    local.db.append_interaction(&interaction("r1-7")).unwrap();
    let p = st.pull_log(&local.db).unwrap();
    assert_eq!((p.pulled, p.already_local), (39, 1));
    assert_eq!(local.db.interaction_count().unwrap(), 40);
    let p = st.pull_log(&local.db).unwrap();
    assert_eq!((p.pulled, p.already_local), (0, 0));
    st.append_interactions(&db, &[interaction("late")]).unwrap();
    let p = st.pull_log(&local.db).unwrap();
    assert_eq!(p.pulled, 1);
    assert!(local.db.interaction_id("late").unwrap().is_some());
    // Pushing the local log sends only what the shared log lacks: none of
    // the pulled rows, and one interaction logged only here.
    assert_eq!(st.push_log(&local.db).unwrap(), 0);
    local
        .db
        .append_interaction(&interaction("only-here"))
        .unwrap();
    assert_eq!(st.push_log(&local.db).unwrap(), 1);
    assert_eq!(st.interaction_count().unwrap(), 42);
    assert_eq!(st.push_log(&local.db).unwrap(), 0);
}

const CHILD_ENV: &str = "ANECTX_PG_LOG_WRITER";

/// Run as a child process by the test below: appends interactions one at a
/// time and prints `ack <uid>` after each append returns.
#[test]
fn log_writer_child() {
    let Ok(url) = std::env::var(CHILD_ENV) else {
        return; // only meaningful as the child of the test below
    };
    let st = PgStore::connect(&url).unwrap();
    let (_dir, db) = no_chunks();
    let out = std::io::stdout();
    for i in 0.. {
        let uid = format!("w-{i}");
        st.append_interactions(&db, &[interaction(&uid)]).unwrap();
        let mut o = out.lock();
        writeln!(o, "ack {uid}").unwrap();
        o.flush().unwrap();
    }
}

#[test]
fn a_writer_killed_under_load_loses_no_acknowledged_interaction() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.conninfo("postgres");
    PgStore::connect(&url).unwrap(); // migrate first
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "log_writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acked.len() < 200 {
        let line = lines.next().expect("the writer stopped early").unwrap();
        if let Some(uid) = line.strip_prefix("ack ") {
            acked.push(uid.to_string());
        }
    }
    child.kill().unwrap(); // SIGKILL, mid-stream
    child.wait().unwrap();
    let st = PgStore::connect(&url).unwrap();
    let stored: std::collections::HashSet<String> = st
        .interactions_after(0, 100_000)
        .unwrap()
        .into_iter()
        .map(|r| r.interaction.uid)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|u| !stored.contains(*u)).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert!(stored.len() >= acked.len());
}

#[test]
fn a_connection_told_not_to_wait_for_the_flush_still_writes_the_log() {
    let Some(pg) = PgServer::start() else { return };
    let (_dir, db) = no_chunks();
    let relaxed = PgStore::connect(&pg.conninfo("postgres")).unwrap();
    let other = PgStore::connect(&pg.conninfo("postgres")).unwrap();
    assert_eq!(relaxed.synchronous_commit().unwrap(), "on");
    relaxed.commit_without_flush().unwrap();
    assert_eq!(relaxed.synchronous_commit().unwrap(), "off");
    // Only that connection: the rest of the fleet keeps the server's setting.
    assert_eq!(other.synchronous_commit().unwrap(), "on");
    relaxed
        .append_interactions(&db, &[interaction("relaxed-1")])
        .unwrap();
    assert_eq!(other.interaction_count().unwrap(), 1);
}

#[test]
fn a_connection_postgresql_closed_is_opened_again_with_its_settings() {
    let Some(pg) = PgServer::start() else { return };
    let (_dir, db) = no_chunks();
    let store = PgStore::connect(&pg.conninfo("postgres")).unwrap();
    store.commit_without_flush().unwrap();
    store
        .append_interactions(&db, &[interaction("before")])
        .unwrap();
    let doc = |path: &str| anectx_store::SharedDocument {
        path: path.into(),
        content_hash: format!("hash of {path}"),
        bytes: 5,
        kind: "txt".into(),
        modified: None,
        chunks: vec![anectx_store::NewChunk {
            text: "hello".into(),
            heading: None,
            byte_start: 0,
            byte_end: 5,
            line_start: 1,
            line_end: 1,
            tokens: 1,
            page: None,
        }],
    };
    // The first document write prepares its statements on the connection.
    store.put_document(&doc("/a.txt"), None).unwrap();
    // As a restart or a failover would: PostgreSQL ends the store's session.
    assert_eq!(pg.end_sessions("postgres"), 1);
    // The call that finds the connection gone fails; the next one works on
    // a new connection, with the same settings.
    assert!(store.interaction_count().is_err());
    assert_eq!(store.interaction_count().unwrap(), 1);
    assert_eq!(store.synchronous_commit().unwrap(), "off");
    store
        .append_interactions(&db, &[interaction("after")])
        .unwrap();
    // Statements prepared on the old connection are prepared again.
    store.put_document(&doc("/b.txt"), None).unwrap();
    let admin = PgStore::connect(&pg.conninfo("postgres")).unwrap();
    assert_eq!(admin.interaction_count().unwrap(), 2);
    assert_eq!(admin.counts().unwrap().0, 2);
}
