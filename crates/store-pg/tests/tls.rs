//! TLS to the shared store: a server that takes TLS on 127.0.0.1 with a
//! certificate from a throwaway CA (scripts/pg-test-server.py --tls). The
//! certificate is verified whatever `sslmode` says, name included; without
//! the CA the connection is refused, naming the certificate.

use anectx_store_pg::PgStore;
use anectx_testing::pg::PgServer;

/// `path` escaped for a URL query value.
fn escaped(path: &std::path::Path) -> String {
    path.to_string_lossy()
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn a_store_behind_tls_is_reached_with_its_ca_and_refused_without() {
    let Some(pg) = PgServer::start_tls() else {
        return;
    };
    let ca = escaped(&pg.ca_file());
    // The CA given: the store works, over TLS (sslmode=require fails when
    // the server does not take TLS; the proxy ends TLS before PostgreSQL).
    for mode in ["require", "verify-full", "verify-ca"] {
        let url = pg.tls_url("postgres", &format!("sslmode={mode}&sslrootcert={ca}"));
        let store = PgStore::connect(&url).unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert!(store.schema_version().unwrap() >= 1);
        assert!(store.listener().is_ok(), "{mode}");
    }
    // In libpq's key=value form too, with the name in the certificate.
    let url = pg.tls_url("postgres", "");
    let port = url.split(':').nth(2).unwrap().split('/').next().unwrap();
    let kv = format!(
        "host=localhost port={port} user=postgres dbname=postgres sslmode=verify-full \
         sslrootcert={}",
        pg.ca_file().display()
    );
    PgStore::connect(&kv).unwrap_or_else(|e| panic!("{kv}: {e}"));

    // Without the CA, the server's certificate is not trusted.
    let err = PgStore::connect(&pg.tls_url("postgres", "sslmode=require")).unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    // Plain text is still there for who asks for it.
    PgStore::connect(&pg.tls_url("postgres", "sslmode=disable")).unwrap();
    // A root file that is not one is named.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "junk").unwrap();
    let err = PgStore::connect(&pg.tls_url(
        "postgres",
        &format!("sslmode=require&sslrootcert={}", escaped(&junk)),
    ))
    .unwrap_err();
    assert!(err.to_string().contains("junk.pem"), "{err}");
}
