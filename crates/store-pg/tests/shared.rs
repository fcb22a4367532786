//! The shared store against a real PostgreSQL 16 + pgvector (started per
//! test from the pgserver PyPI package, Unix socket only): migrations from an
//! empty database, the shared interaction log, and a writer killed with
//! SIGKILL under load losing no acknowledged interaction.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use anectx_store::{InteractionKind, InteractionMeta, LoggedInteraction, Store};
use anectx_store_pg::{PgError, PgStore, MIGRATIONS};
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
                for i in 0..20 {
                    st.append_interactions(&[interaction(&format!("r{r}-{i}"))])
                        .unwrap();
                }
            });
        }
    });
    let st = PgStore::connect(&url).unwrap();
    assert_eq!(st.interaction_count().unwrap(), 40);
    // A retried append is not written twice.
    let first = st.interactions_after(0, 1).unwrap()[0].clone();
    let again = st
        .append_interactions(std::slice::from_ref(&first.1))
        .unwrap();
    assert_eq!(again, vec![first.0]);
    assert_eq!(st.interaction_count().unwrap(), 40);

    let dir = tempfile::tempdir().unwrap();
    let local = Store::open(dir.path()).unwrap();
    // This replica logged one of them itself.
    local.db.append_interaction(&interaction("r1-7")).unwrap();
    let p = st.pull_log(&local).unwrap();
    assert_eq!((p.pulled, p.already_local), (39, 1));
    assert_eq!(local.db.interaction_count().unwrap(), 40);
    let p = st.pull_log(&local).unwrap();
    assert_eq!((p.pulled, p.already_local), (0, 0));
    st.append_interactions(&[interaction("late")]).unwrap();
    let p = st.pull_log(&local).unwrap();
    assert_eq!(p.pulled, 1);
    assert!(local.db.interaction_id("late").unwrap().is_some());
    // Pushing the local log sends only what the shared log lacks: none of
    // the pulled rows, and one interaction logged only here.
    assert_eq!(st.push_log(&local).unwrap(), 0);
    local
        .db
        .append_interaction(&interaction("only-here"))
        .unwrap();
    assert_eq!(st.push_log(&local).unwrap(), 1);
    assert_eq!(st.interaction_count().unwrap(), 42);
    assert_eq!(st.push_log(&local).unwrap(), 0);
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
    let out = std::io::stdout();
    for i in 0.. {
        let uid = format!("w-{i}");
        st.append_interactions(&[interaction(&uid)]).unwrap();
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
        .map(|(_, it)| it.uid)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|u| !stored.contains(*u)).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert!(stored.len() >= acked.len());
}
