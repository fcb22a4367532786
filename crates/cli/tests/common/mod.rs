//! Helpers shared by the CLI's process tests: the binary under test with a
//! clean environment, and `anectx serve` started on a free loopback port.
#![allow(dead_code)] // each test binary uses a part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// An empty config file in `dir`, so a developer's config is not read.
pub fn empty_config(dir: &Path) -> PathBuf {
    let p = dir.join("config.toml");
    std::fs::write(&p, "").unwrap();
    p
}

/// The binary under test, run in `dir`, with no `ANECTX_*` setting from the
/// environment and an empty config file.
pub fn anectx(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_anectx"));
    c.env_remove("ANECTX_MODEL")
        .env_remove("ANECTX_STORE")
        .env_remove("ANECTX_API_KEY")
        .env_remove("ANECTX_LLM_URL")
        .env_remove("ANECTX_BACKEND")
        .env("ANECTX_CONFIG", empty_config(dir))
        .current_dir(dir);
    c
}

/// Runs `cmd` to the end and returns its output; fails the test with its
/// stderr when it did not succeed.
pub fn succeed(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A server process, killed when dropped (also when a test fails first).
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` (an `anectx serve …` with `--port 0`; the caller chooses
/// what happens to stderr) and reads the address from the first line it
/// prints; returns the server and its `127.0.0.1:port`.
pub fn start_server(cmd: &mut Command) -> (Server, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("anectx listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    (server, addr)
}
