//! The shared store on PostgreSQL + pgvector (issue 23, first part).
//!
//! One PostgreSQL database holds what a fleet of `anectx serve` replicas
//! shares: documents, their chunks and vectors (pgvector, with an HNSW index
//! once the embedder is known), a change sequence, and the interaction log.
//! Each replica keeps its local store (SQLite, tantivy, vector file) as a
//! *cache* of this one:
//! - [`PgStore::publish`] writes what a local indexing run produced to the
//!   shared store, one transaction per document (a killed indexer leaves
//!   every document whole or absent);
//! - [`PgStore::sync_into`] brings a local store up to the shared store's
//!   change sequence: new and changed documents with their vectors (no
//!   re-embedding), and deletions. The local watermark is written in the same
//!   SQLite transaction as the documents, so a killed sync resumes cleanly.
//!
//! Changes are numbered by one sequence, and writers take a transaction
//! lock before they draw a number, so numbers commit in order: a replica that
//! has seen change `n` has seen every change below `n`.
//!
//! The schema is versioned like the SQLite one: `anectx_schema` records how
//! many of [`MIGRATIONS`] ran; a database from a newer anectx is refused.

mod error;
mod log;
mod reembed;
mod registry;
mod schema;
mod sync;
mod tls;

pub use error::{PgError, Result};
pub use log::{
    FeedbackChunk, FeedbackPull, PullReport, SharedFeedback, SharedInteraction,
    FEEDBACK_PUSHED_KEY, FEEDBACK_WATERMARK_KEY, FOREIGN_CHUNK_BASE, LOG_PUSHED_KEY,
    LOG_WATERMARK_KEY,
};
pub use reembed::{ChunkToEmbed, SwitchReport};
pub use schema::MIGRATIONS;
pub use sync::{synced_to, PublishReport, SyncReport, STORE_ID_KEY, WATERMARK_KEY};

use std::sync::{Mutex, MutexGuard};

use anectx_store::EmbedderInfo;
use postgres::{Client, NoTls};

/// Advisory-lock key (arbitrary, fixed) taken by migrations.
const MIGRATION_LOCK: i64 = 0x616e_6563_7478_0001;
/// Advisory-lock key taken by every writer before it draws a change number.
const CHANGE_LOCK: i64 = 0x616e_6563_7478_0002;

/// One row when the HNSW index over the vectors exists.
const HNSW_EXISTS: &str = "SELECT 1 FROM pg_indexes WHERE tablename = 'anectx_chunks' \
                           AND indexname = 'anectx_chunks_hnsw'";

/// How often a lost connection is tried again, at most.
const RECONNECT_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a connection attempt may take when the connection string does
/// not say (`connect_timeout`): a request must not hang on a shared store
/// that went away.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Makes a connection's commits return before PostgreSQL flushes them.
const COMMIT_WITHOUT_FLUSH: &str = "SET synchronous_commit = off";

/// The connection, and what was prepared on it.
pub(crate) struct Conn {
    pub(crate) client: Client,
    /// Prepared at the first document write on this connection.
    pub(crate) put: Option<sync::PutStatements>,
    /// When a lost connection was last tried again.
    last_reconnect: Option<std::time::Instant>,
}

/// The locked connection; derefs to the client. Its own statement methods
/// (which calls on the guard reach before the client's) note an error that
/// says the server ended the session, so the next call opens a new
/// connection (see [`session_ended`]).
pub(crate) struct ConnGuard<'a>(
    pub(crate) MutexGuard<'a, Conn>,
    &'a std::sync::atomic::AtomicBool,
);

/// Whether `e` says the session is over: the server ended it (SQLSTATE
/// class 57P: an administrator, a shutdown, a failover; it then closes the
/// socket, but the client notices only when it next reads, so without this
/// the next call fails too), or the connection is closed or broken.
fn session_ended(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| c.code().starts_with("57P"))
        || e.is_closed()
        || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

impl ConnGuard<'_> {
    fn noted<T>(
        &self,
        r: std::result::Result<T, postgres::Error>,
    ) -> std::result::Result<T, postgres::Error> {
        note_ended(self.1, r)
    }

    pub(crate) fn query<T: ?Sized + postgres::ToStatement>(
        &mut self,
        query: &T,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> std::result::Result<Vec<postgres::Row>, postgres::Error> {
        let r = self.0.client.query(query, params);
        self.noted(r)
    }

    pub(crate) fn query_one<T: ?Sized + postgres::ToStatement>(
        &mut self,
        query: &T,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> std::result::Result<postgres::Row, postgres::Error> {
        let r = self.0.client.query_one(query, params);
        self.noted(r)
    }

    pub(crate) fn query_opt<T: ?Sized + postgres::ToStatement>(
        &mut self,
        query: &T,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> std::result::Result<Option<postgres::Row>, postgres::Error> {
        let r = self.0.client.query_opt(query, params);
        self.noted(r)
    }

    pub(crate) fn execute<T: ?Sized + postgres::ToStatement>(
        &mut self,
        query: &T,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> std::result::Result<u64, postgres::Error> {
        let r = self.0.client.execute(query, params);
        self.noted(r)
    }

    pub(crate) fn batch_execute(
        &mut self,
        query: &str,
    ) -> std::result::Result<(), postgres::Error> {
        let r = self.0.client.batch_execute(query);
        self.noted(r)
    }

    /// Begins a transaction. Its statements are not watched, and need not
    /// be: a session that ends in the middle of one fails that statement,
    /// and dropping the transaction sends a ROLLBACK that finds the socket
    /// closed, so the next call reconnects (`session_tests`).
    pub(crate) fn transaction(
        &mut self,
    ) -> std::result::Result<postgres::Transaction<'_>, postgres::Error> {
        let ended = self.1;
        note_ended(ended, self.0.client.transaction())
    }
}

/// Sets `ended` when `r` failed because the session is over.
fn note_ended<T>(
    ended: &std::sync::atomic::AtomicBool,
    r: std::result::Result<T, postgres::Error>,
) -> std::result::Result<T, postgres::Error> {
    if let Err(e) = &r {
        if session_ended(e) {
            ended.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    r
}

impl std::ops::Deref for ConnGuard<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.0.client
    }
}

impl std::ops::DerefMut for ConnGuard<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.0.client
    }
}

/// A connection to the shared store. A connection that PostgreSQL closed
/// (a restart, a failover, an administrator) is opened again at the next
/// use, at most every [`RECONNECT_EVERY`]; the call that found it closed
/// fails, and the next one works.
pub struct PgStore {
    conn: Mutex<Conn>,
    /// Set by [`Self::commit_without_flush`], and set again on a new
    /// connection.
    relaxed: std::sync::atomic::AtomicBool,
    /// A call found the session over ([`session_ended`]): the next call
    /// opens a new connection.
    ended: std::sync::atomic::AtomicBool,
    config: postgres::Config,
    /// TLS for every connection, when the connection string asks for it.
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// Where it points, without a password (for messages).
    target: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.target)
            .finish()
    }
}

/// Whether `s` names a PostgreSQL store (`postgres://…`, `postgresql://…`)
/// rather than a local directory.
pub fn is_postgres_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

impl PgStore {
    /// Connects (URL `postgres://user@host/db` or libpq `key=value` form)
    /// and applies pending migrations. TCP or a Unix socket; TLS as
    /// `sslmode` and `sslrootcert` ask (the server's
    /// certificate is always verified).
    pub fn connect(conninfo: &str) -> Result<Self> {
        let split = tls::split(conninfo);
        let mut config: postgres::Config = split
            .rest
            .parse()
            .map_err(|e| PgError::connect(&redact(conninfo), &e, false))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let tls = tls::connector(config.get_ssl_mode(), split.root_cert.as_deref())?;
        let target = describe(&config);
        let client = Self::open(&config, &tls, &target)?;
        let store = Self {
            conn: Mutex::new(Conn {
                client,
                put: None,
                last_reconnect: None,
            }),
            relaxed: std::sync::atomic::AtomicBool::new(false),
            ended: std::sync::atomic::AtomicBool::new(false),
            config,
            tls,
            target,
        };
        schema::migrate(&mut store.client())?;
        Ok(store)
    }

    /// One connection, with TLS when the connection string asks for it.
    fn open(
        config: &postgres::Config,
        tls: &Option<tokio_postgres_rustls::MakeRustlsConnect>,
        target: &str,
    ) -> Result<Client> {
        let got = match tls {
            None => config.connect(NoTls),
            Some(t) => config.connect(t.clone()),
        };
        got.map_err(|e| PgError::connect(target, &e, tls.is_some()))
    }

    /// From now on, commits on this connection return before PostgreSQL
    /// has flushed them to disk (`synchronous_commit = off`): they survive
    /// this process's crash, and the last fraction of a second of them can
    /// be lost if PostgreSQL or its machine crashes. What `serve
    /// --log-sync normal` asks of the local log, asked of the shared one.
    pub fn commit_without_flush(&self) -> Result<()> {
        self.client().batch_execute(COMMIT_WITHOUT_FLUSH)?;
        self.relaxed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// This connection's `synchronous_commit` (`on` unless
    /// [`Self::commit_without_flush`] or the server's settings say otherwise).
    pub fn synchronous_commit(&self) -> Result<String> {
        Ok(self
            .client()
            .query_one("SHOW synchronous_commit", &[])?
            .get(0))
    }

    /// A second connection that waits for new changes (LISTEN/NOTIFY).
    pub fn listener(&self) -> Result<ChangeListener> {
        let mut client = Self::open(&self.config, &self.tls, &self.target)?;
        client.batch_execute("LISTEN anectx_changes")?;
        Ok(ChangeListener { client })
    }

    /// Where this store points (host, port, database; never a password).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The connection, opened again first when PostgreSQL closed it.
    pub(crate) fn client(&self) -> ConnGuard<'_> {
        let mut g = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if g.client.is_closed() || self.ended.load(std::sync::atomic::Ordering::Relaxed) {
            self.reconnect(&mut g);
        }
        ConnGuard(g, &self.ended)
    }

    fn reconnect(&self, conn: &mut Conn) {
        if conn
            .last_reconnect
            .is_some_and(|t| t.elapsed() < RECONNECT_EVERY)
        {
            return;
        }
        conn.last_reconnect = Some(std::time::Instant::now());
        let opened = Self::open(&self.config, &self.tls, &self.target).and_then(|mut c| {
            if self.relaxed.load(std::sync::atomic::Ordering::Relaxed) {
                c.batch_execute(COMMIT_WITHOUT_FLUSH)?;
            }
            Ok(c)
        });
        match opened {
            Ok(c) => {
                conn.client = c;
                conn.put = None;
                self.ended
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                tracing::info!("shared store {}: connected again", self.target);
            }
            Err(e) => tracing::warn!("shared store {}: connecting again failed: {e}", self.target),
        }
    }

    /// How many migrations the database has run.
    pub fn schema_version(&self) -> Result<i64> {
        schema::version(&mut self.client())
    }

    /// The embedder whose vectors the store holds, if any.
    pub fn embedder(&self) -> Result<Option<EmbedderInfo>> {
        let row = self
            .client()
            .query_opt("SELECT value FROM anectx_meta WHERE key = 'embedder'", &[])?;
        match row {
            None => Ok(None),
            Some(r) => {
                let s: String = r.get(0);
                serde_json::from_str(&s)
                    .map(Some)
                    .map_err(|e| PgError::Invalid(format!("corrupt embedder record: {e}")))
            }
        }
    }

    /// Records the embedder (first publish with vectors); refuses a
    /// different embedder than the one recorded, because vectors of two
    /// embedders cannot be compared.
    pub fn set_embedder(&self, info: &EmbedderInfo) -> Result<()> {
        if let Some(have) = self.embedder()? {
            if have.fingerprint != info.fingerprint || have.dim != info.dim {
                return Err(PgError::Embedder {
                    store: format!("{} ({} dims)", have.description, have.dim),
                    given: format!("{} ({} dims)", info.description, info.dim),
                });
            }
            return Ok(());
        }
        let s = serde_json::to_string(info)
            .map_err(|e| PgError::Invalid(format!("embedder record: {e}")))?;
        self.client().execute(
            "INSERT INTO anectx_meta(key, value) VALUES ('embedder', $1) \
             ON CONFLICT (key) DO NOTHING",
            &[&s],
        )?;
        Ok(())
    }

    /// Builds the HNSW index over the vectors (inner product, on a cast to
    /// the embedder's dimension) when it does not exist yet; returns whether
    /// it built one. `publish` calls it after writing, so a first bulk load
    /// inserts rows without the index and builds the graph once, which is
    /// far cheaper than growing it row by row; later publishes then update
    /// it as they write.
    pub fn ensure_vector_index(&self) -> Result<bool> {
        let Some(info) = self.embedder()? else {
            return Ok(false);
        };
        let mut c = self.client();
        let mut tx = c.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        let exists = tx.query_opt(HNSW_EXISTS, &[])?.is_some();
        if exists {
            return Ok(false);
        }
        // The build is much faster when the graph fits in
        // maintenance_work_mem (pgvector's advice); raise it for this
        // transaction to 512 MB unless the server allows more already.
        let mem: i64 = tx
            .query_one(
                "SELECT pg_size_bytes(current_setting('maintenance_work_mem'))",
                &[],
            )?
            .get(0);
        if mem < 512 << 20 {
            tx.batch_execute("SET LOCAL maintenance_work_mem = '512MB'")?;
        }
        // The column has no fixed dimension (the embedder is chosen at the
        // first publish); the index is built on a cast to this one.
        tx.batch_execute(&format!(
            "CREATE INDEX anectx_chunks_hnsw ON anectx_chunks \
             USING hnsw ((embedding::vector({dim})) vector_ip_ops)",
            dim = info.dim
        ))?;
        tx.commit()?;
        Ok(true)
    }

    /// Whether the HNSW index over the vectors exists.
    pub fn has_vector_index(&self) -> Result<bool> {
        Ok(self.client().query_opt(HNSW_EXISTS, &[])?.is_some())
    }

    /// Records folders documents were published from (see [`Self::roots`]).
    pub fn add_roots(&self, roots: &[String]) -> Result<()> {
        if roots.is_empty() {
            return Ok(());
        }
        self.client().execute(
            "INSERT INTO anectx_roots(path) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
            &[&roots],
        )?;
        Ok(())
    }

    /// The folders documents were published from, as their publishers named
    /// them: what sources are shown relative to and path filters match.
    pub fn roots(&self) -> Result<Vec<String>> {
        Ok(self
            .client()
            .query("SELECT path FROM anectx_roots ORDER BY path", &[])?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// The last change number committed (0 when none).
    pub fn head(&self) -> Result<i64> {
        let r = self
            .client()
            .query_one("SELECT COALESCE(MAX(seq), 0) FROM anectx_changes", &[])?;
        Ok(r.get(0))
    }

    /// Number of documents and chunks in the shared store.
    pub fn counts(&self) -> Result<(u64, u64)> {
        let r = self.client().query_one(
            "SELECT (SELECT COUNT(*) FROM anectx_documents), (SELECT COUNT(*) FROM anectx_chunks)",
            &[],
        )?;
        Ok((r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64))
    }

    /// Each shared document's path and number of chunks, by path.
    pub fn document_chunk_counts(&self) -> Result<Vec<(String, u64)>> {
        let rows = self.client().query(
            "SELECT d.path, COUNT(c.doc_id) FROM anectx_documents d \
             LEFT JOIN anectx_chunks c ON c.doc_id = d.id GROUP BY d.path ORDER BY d.path",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    /// Bytes the shared database takes on disk (`pg_database_size`).
    pub fn database_bytes(&self) -> Result<u64> {
        let r = self
            .client()
            .query_one("SELECT pg_database_size(current_database())", &[])?;
        Ok(r.get::<_, i64>(0).max(0) as u64)
    }

    /// The `k` chunks nearest to `query` by inner product, through the HNSW
    /// index: `(document path, chunk order, score)`, best first.
    pub fn nearest(&self, query: &[f32], k: usize) -> Result<Vec<(String, u32, f32)>> {
        let Some(info) = self.embedder()? else {
            return Ok(Vec::new());
        };
        if query.len() != info.dim {
            return Err(PgError::Invalid(format!(
                "query has {} dimensions, the store {}",
                query.len(),
                info.dim
            )));
        }
        let v = pgvector::Vector::from(query.to_vec());
        let rows = self.client().query(
            &format!(
                "SELECT d.path, c.ord, -(c.embedding::vector({dim}) <#> $1) \
                 FROM anectx_chunks c JOIN anectx_documents d ON d.id = c.doc_id \
                 WHERE c.embedding IS NOT NULL \
                 ORDER BY c.embedding::vector({dim}) <#> $1 LIMIT $2",
                dim = info.dim
            ),
            &[&v, &(k as i64)],
        )?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    r.get::<_, i32>(1) as u32,
                    r.get::<_, f64>(2) as f32,
                )
            })
            .collect())
    }
}

/// Waits for the shared store's change notifications.
pub struct ChangeListener {
    client: Client,
}

impl std::fmt::Debug for ChangeListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangeListener")
    }
}

impl ChangeListener {
    /// Waits until a writer commits a change or `timeout` passes (the
    /// polling fallback: a notification can be missed while reconnecting);
    /// returns whether a notification came. Pending notifications are
    /// drained, so one wake-up covers a burst of changes.
    pub fn wait(&mut self, timeout: std::time::Duration) -> Result<bool> {
        use postgres::fallible_iterator::FallibleIterator;
        let mut n = self.client.notifications();
        let mut it = n.timeout_iter(timeout);
        let got = it.next()?.is_some();
        drop(it);
        let mut it = n.iter();
        while it.next()?.is_some() {}
        Ok(got)
    }
}

/// `conninfo` without its password: `user:secret@` becomes `user@` in a
/// URL, and `password=…` is dropped from a URL's query or a `key=value`
/// string. For messages and for keys derived from a connection string.
pub fn redact(conninfo: &str) -> String {
    let Some(scheme_end) = conninfo.find("://").map(|i| i + 3) else {
        return conninfo
            .split_whitespace()
            .filter(|kv| !kv.starts_with("password="))
            .collect::<Vec<_>>()
            .join(" ");
    };
    let (head, rest) = conninfo.split_at(scheme_end);
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let rest = match rest.rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{user}{}", &rest[at..])
        }
        None => rest.to_string(),
    };
    let query = query
        .map(|q| {
            q.split('&')
                .filter(|kv| !kv.starts_with("password="))
                .collect::<Vec<_>>()
                .join("&")
        })
        .filter(|q| !q.is_empty())
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    format!("{head}{rest}{query}")
}

fn describe(c: &postgres::Config) -> String {
    let ports = c.get_ports();
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                postgres::config::Host::Tcp(s) => s.clone(),
                postgres::config::Host::Unix(p) => p.display().to_string(),
            };
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            format!("{host}:{port}")
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "localhost:5432".to_string()
    } else {
        hosts.join(",")
    };
    format!("postgres {hosts}/{}", c.get_dbname().unwrap_or("(default)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_a_message() {
        assert_eq!(
            redact("postgres://me:secret@db.example:5432/kb"),
            "postgres://me@db.example:5432/kb"
        );
        assert_eq!(
            redact("postgresql://me@/kb?host=/tmp/s&password=secret&port=5"),
            "postgresql://me@/kb?host=/tmp/s&port=5"
        );
        assert_eq!(
            redact("postgresql://db.example/kb"),
            "postgresql://db.example/kb"
        );
        assert_eq!(
            redact("host=/tmp/s password=secret user=me"),
            "host=/tmp/s user=me"
        );
        assert!(is_postgres_url("postgres://h/db") && !is_postgres_url("./.anectx"));
    }
}

#[cfg(test)]
mod session_tests {
    use super::*;

    /// Ends the store's own session three times through `end` (which
    /// returns the error of the statement that ended it), each time
    /// checking that the next call works.
    fn the_call_after_works(end: impl Fn(&PgStore, u32) -> postgres::Error) {
        let Some(pg) = anectx_testing::pg::PgServer::start() else {
            return;
        };
        let store = PgStore::connect(&pg.conninfo("postgres")).unwrap();
        for round in 0..3 {
            let e = end(&store, round);
            assert!(session_ended(&e), "round {round}: {e}");
            if let Err(e) = store.head() {
                panic!("round {round}: the call after the session ended failed: {e}");
            }
            // New connections are opened at most every RECONNECT_EVERY.
            std::thread::sleep(RECONNECT_EVERY + std::time::Duration::from_millis(100));
        }
    }

    const END_SESSION: &str = "SELECT pg_terminate_backend(pg_backend_pid())";

    /// A session the server ends (here the store's own, as an
    /// administrator's `pg_terminate_backend`, a shutdown or a failover
    /// would) fails the call that finds it; the next call works, on a new
    /// connection. Before, the client noticed the closed socket only when
    /// that next call failed too.
    #[test]
    fn the_call_after_the_server_ended_the_session_works() {
        the_call_after_works(|store, _| store.client().batch_execute(END_SESSION).unwrap_err());
    }

    /// The same inside a transaction (publishing, the log, the registry,
    /// a catch-up's snapshot), whose statements the guard does not watch:
    /// dropping the failed transaction sends its ROLLBACK, which finds the
    /// socket closed, so the next call opens a new connection too.
    #[test]
    fn the_call_after_a_session_ended_inside_a_transaction_works() {
        the_call_after_works(|store, round| {
            let mut c = store.client();
            let mut tx = if round == 1 {
                c.build_transaction()
                    .isolation_level(postgres::IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .unwrap()
            } else {
                c.transaction().unwrap()
            };
            tx.batch_execute(END_SESSION).unwrap_err()
        });
    }
}
