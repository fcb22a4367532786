//! A throwaway PostgreSQL 16 + pgvector per test, from the PyPI package
//! `pgserver` that `scripts/fixtures.sh` installs into `.fixtures/venv`.
//!
//! [`PgServer::start`] runs `scripts/pg-test-server.py`, which starts the
//! server on a Unix socket only (no TCP port) in a fresh data directory. The
//! server lives as long as the `PgServer`: dropping it (or the test process
//! dying, even by SIGKILL) closes the helper's stdin, and the helper stops the
//! server and deletes its data.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// A running test server.
pub struct PgServer {
    child: Child,
    stdin: Option<ChildStdin>,
    /// `host=<socket dir> port=<port>`.
    location: String,
}

impl std::fmt::Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer")
            .field("location", &self.location)
            .finish()
    }
}

impl PgServer {
    /// Starts a server, or returns `None` (with a note) when the pgserver
    /// fixture is missing outside CI. Panics when it is missing under CI, or
    /// when the server does not start.
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// A server that also takes TLS connections on 127.0.0.1 (see
    /// [`Self::tls_url`]), with a certificate from a throwaway CA
    /// ([`Self::ca_file`]). `None` as for [`Self::start`].
    pub fn start_tls() -> Option<Self> {
        Self::start_with(&["--tls"])
    }

    fn start_with(args: &[&str]) -> Option<Self> {
        // The fixtures venv, when scripts/fixtures.sh installed pgserver in it.
        let venv = crate::fixture("ANECTX_FIXTURE_VENV", "venv", ".anectx-pg")?;
        let py = venv.join("bin").join("python");
        let script = crate::workspace_root()
            .join("scripts")
            .join("pg-test-server.py");
        let mut child = Command::new(py)
            .arg(&script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let stdin = child.stdin.take();
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the test server's address");
        let location = line.trim().to_string();
        assert!(
            location.starts_with("host="),
            "the PostgreSQL test server did not start (printed {line:?})"
        );
        Some(Self {
            child,
            stdin,
            location,
        })
    }

    /// One server for the whole test process, started on first use; tests
    /// that share it each take their own database ([`Self::fresh_database`]).
    /// A static is never dropped: the server stops when the process exits,
    /// which closes the helper's stdin. `None` as for [`Self::start`].
    pub fn shared() -> Option<&'static PgServer> {
        static SHARED: OnceLock<Option<PgServer>> = OnceLock::new();
        SHARED.get_or_init(PgServer::start).as_ref()
    }

    /// Creates a new, empty database on this server and returns its name.
    /// Panics when the server refuses.
    pub fn fresh_database(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.admin("postgres")
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
        name
    }

    /// A superuser connection to `database`; panics when the server refuses.
    fn admin(&self, database: &str) -> postgres::Client {
        postgres::Client::connect(&self.conninfo(database), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connecting to the test server: {e}"))
    }

    /// The value of `key=` in the server's address line.
    fn location_value(&self, key: &str) -> Option<&str> {
        self.location
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    }

    /// With [`Self::start_tls`]: a URL for `database` over TCP on 127.0.0.1,
    /// where the server takes TLS, with `params` as its query.
    pub fn tls_url(&self, database: &str, params: &str) -> String {
        let port = self
            .location_value("tls_port")
            .expect("a server started with start_tls");
        format!("postgresql://postgres@127.0.0.1:{port}/{database}?{params}")
    }

    /// With [`Self::start_tls`]: the PEM file of the CA that signed the
    /// server's certificate.
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.location_value("ca")
            .expect("a server started with start_tls")
            .into()
    }

    /// Ends every session on `database` but this call's own, as a restart
    /// or a failover would; returns how many it ended.
    pub fn end_sessions(&self, database: &str) -> usize {
        let mut admin = self.admin(database);
        let pids: Vec<i32> = admin
            .query(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE pid <> pg_backend_pid() AND datname = current_database()",
                &[],
            )
            .unwrap_or_else(|e| panic!("ending sessions: {e:?}"))
            .iter()
            .map(|r| r.get(0))
            .collect();
        // pg_terminate_backend only signals: wait until the sessions are
        // gone, as after a restart, so the client finds its socket closed
        // rather than racing the backend's shutdown.
        for _ in 0..500 {
            let left: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)",
                    &[&pids],
                )
                .unwrap_or_else(|e| panic!("waiting for ended sessions: {e}"))
                .get(0);
            if left == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        pids.len()
    }

    /// A `postgresql://` URL for `database` as the superuser (the socket
    /// directory and port as query parameters).
    pub fn url(&self, database: &str) -> String {
        let host = self.location_value("host").unwrap_or_default();
        let port = self.location_value("port").unwrap_or_default();
        format!("postgresql://postgres@/{database}?host={host}&port={port}")
    }

    /// A libpq-style connection string for `database` as the superuser.
    pub fn conninfo(&self, database: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={database}",
            self.location_value("host").unwrap_or_default(),
            self.location_value("port").unwrap_or_default()
        )
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Closing stdin tells the helper to stop the server and clean up.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
