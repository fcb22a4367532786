//! TLS to PostgreSQL, as libpq's connection parameters ask for it.
//!
//! - `sslmode=disable`, and `prefer` (the default) without `sslrootcert`:
//!   no TLS, as before (a Unix socket never uses TLS).
//! - `sslmode=require`, `verify-ca` or `verify-full`, or any mode but
//!   `disable` with `sslrootcert`: TLS with rustls, and the server's
//!   certificate is always verified, name included, against the Mozilla root
//!   certificates plus those in the `sslrootcert` PEM file. That is libpq's
//!   `verify-full`; libpq's `require` would accept any certificate, which a
//!   shared store holding a team's documents should not.
//!
//! The postgres crate knows neither `sslrootcert` nor the `verify-*` modes,
//! so [`split`] takes them out of the connection string first.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{PgError, Result};

/// A connection string with the parameters only anectx reads taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Split {
    /// What the postgres crate parses.
    pub rest: String,
    /// `sslrootcert`: a PEM file of certificates to trust besides the
    /// Mozilla roots.
    pub root_cert: Option<PathBuf>,
}

/// `%XX` escapes of a URL query value, decoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied(), b.get(i + 2).copied()) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `key=value` words of a libpq string: whitespace outside single
/// quotes separates them (quotes kept).
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            cur.push(c);
            escaped = true;
        } else if c == '\'' {
            cur.push(c);
            quoted = !quoted;
        } else if c.is_whitespace() && !quoted {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// One parameter, rewritten: `None` drops it (and records what it said).
fn take(key: &str, value: &str, root_cert: &mut Option<PathBuf>) -> Option<String> {
    match key {
        "sslrootcert" => {
            *root_cert = Some(PathBuf::from(value));
            None
        }
        // Verified whatever the mode asks: see the module's comment.
        "sslmode" if value == "verify-full" || value == "verify-ca" => {
            Some("sslmode=require".into())
        }
        _ => Some(format!("{key}={value}")),
    }
}

/// Takes `sslrootcert` out of a URL's query or a `key=value` string, and
/// turns `sslmode=verify-full|verify-ca` into `require`.
pub(crate) fn split(conninfo: &str) -> Split {
    let mut root_cert = None;
    let rest = if conninfo.contains("://") {
        match conninfo.split_once('?') {
            None => conninfo.to_string(),
            Some((head, query)) => {
                let kept: Vec<String> = query
                    .split('&')
                    .filter(|kv| !kv.is_empty())
                    .filter_map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        if k == "sslrootcert" {
                            take(k, &percent_decode(v), &mut root_cert)
                        } else if k == "sslmode" {
                            take(k, v, &mut root_cert)
                        } else {
                            Some(kv.to_string())
                        }
                    })
                    .collect();
                if kept.is_empty() {
                    head.to_string()
                } else {
                    format!("{head}?{}", kept.join("&"))
                }
            }
        }
    } else {
        words(conninfo)
            .iter()
            .filter_map(|kv| match kv.split_once('=') {
                Some((k, v)) if k == "sslrootcert" || k == "sslmode" => {
                    take(k, v.trim_matches('\''), &mut root_cert)
                }
                _ => Some(kv.to_string()),
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    Split { rest, root_cert }
}

/// The TLS connector `mode` and `root_cert` ask for, or `None` for none.
pub(crate) fn connector(
    mode: SslMode,
    root_cert: Option<&Path>,
) -> Result<Option<MakeRustlsConnect>> {
    let wanted = match mode {
        SslMode::Disable => false,
        SslMode::Require => true,
        _ => root_cert.is_some(),
    };
    if !wanted {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = root_cert {
        use rustls::pki_types::pem::PemObject;
        let bad = |e: &dyn std::fmt::Display| {
            PgError::Invalid(format!(
                "sslrootcert {}: {e} (a PEM file of certificates is expected)",
                path.display()
            ))
        };
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(&e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        if certs.is_empty() {
            return Err(bad(&"no certificate in it"));
        }
        for c in certs {
            roots.add(c).map_err(|e| bad(&e))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| PgError::Invalid(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Some(MakeRustlsConnect::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anectx_parameters_are_taken_out_of_urls_and_key_value_strings() {
        let s =
            split("postgres://me@db.example/kb?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem");
        assert_eq!(s.rest, "postgres://me@db.example/kb?sslmode=require");
        assert_eq!(s.root_cert.as_deref(), Some(Path::new("/etc/ca.pem")));
        let s = split("postgresql://me@/kb?host=/tmp&sslrootcert=/ca.pem&port=5433");
        assert_eq!(s.rest, "postgresql://me@/kb?host=/tmp&port=5433");
        assert_eq!(s.root_cert.as_deref(), Some(Path::new("/ca.pem")));
        let s = split("host=db port=5432 sslmode=verify-ca sslrootcert='/a b.pem' user=me");
        assert_eq!(s.rest, "host=db port=5432 sslmode=require user=me");
        assert_eq!(s.root_cert.as_deref(), Some(Path::new("/a b.pem")));
        let plain = "postgres://me@db/kb?sslmode=disable";
        assert_eq!(split(plain).rest, plain);
        assert_eq!(split(plain).root_cert, None);
    }

    #[test]
    fn tls_is_used_when_asked_for_and_a_bad_root_file_is_named() {
        assert!(connector(SslMode::Disable, None).unwrap().is_none());
        assert!(connector(SslMode::Prefer, None).unwrap().is_none());
        assert!(connector(SslMode::Require, None).unwrap().is_some());
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = connector(SslMode::Prefer, Some(&empty)).err().unwrap();
        assert!(err.to_string().contains("empty.pem"), "{err}");
        let err = connector(SslMode::Require, Some(&dir.path().join("missing.pem")))
            .err()
            .unwrap();
        assert!(err.to_string().contains("missing.pem"), "{err}");
    }
}
