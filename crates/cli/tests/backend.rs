//! `--backend` (issue 22) as a user meets it: `auto` is the default of
//! embed, index, context and serve; off Apple platforms it is candle and
//! says so (`embed --json`, `serve`'s `/info`); `coreml` off a Mac is an
//! error naming macOS; a bad value names where it came from. (The Core ML
//! side of `auto`, export, cache, probe and fallback, is tested in
//! `crates/coreml/tests/auto.rs` with the MIL executor standing in.)

mod common;

use common::anectx;

#[cfg(not(target_vendor = "apple"))]
mod off_apple {
    use std::process::Stdio;

    use super::common::{anectx, start_server};
    use serde_json::Value;

    fn json_of(out: std::process::Output) -> Value {
        let out = anectx_testing::succeeded(out);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    #[test]
    fn auto_is_the_default_and_is_candle_off_apple_platforms() {
        let tmp = tempfile::tempdir().unwrap();
        let v = json_of(
            anectx(tmp.path())
                .args(["embed", "--json", "hello"])
                .output()
                .unwrap(),
        );
        let c = &v["backend_choice"];
        assert_eq!(c["requested"], "auto", "{c}");
        assert_eq!(c["used"], "candle-cpu", "{c}");
        assert!(
            c["reason"].as_str().unwrap().contains("Apple"),
            "the reason does not say why: {c}"
        );
        // Asked for candle: the same vectors, and the choice says so.
        let v2 = json_of(
            anectx(tmp.path())
                .args(["embed", "--json", "--backend", "candle", "hello"])
                .output()
                .unwrap(),
        );
        assert_eq!(v2["backend_choice"]["requested"], "candle");
        assert_eq!(v["data"][0]["embedding"], v2["data"][0]["embedding"]);

        // serve: /info shows the decision.
        std::fs::create_dir(tmp.path().join("docs")).unwrap();
        std::fs::write(
            tmp.path().join("docs/a.md"),
            "# Tides\nThe moon's gravity raises the tides twice a day.\n",
        )
        .unwrap();
        let out = anectx(tmp.path())
            .args(["index", "docs", "--store", "st"])
            .output()
            .unwrap();
        anectx_testing::succeeded(out);
        let mut cmd = anectx(tmp.path());
        cmd.args(["serve", "--store", "st", "--port", "0"])
            .stderr(Stdio::null());
        let (_server, addr) = start_server(&mut cmd);
        let (status, body) = anectx_testing::http(&addr, "GET", "/info", None, "");
        assert_eq!(status, 200, "{body}");
        let info: Value = serde_json::from_str(&body).unwrap();
        let c = &info["backend"]["choice"];
        assert_eq!(c["requested"], "auto", "{info}");
        assert_eq!(c["used"], "candle-cpu", "{info}");
        assert_eq!(info["backend"]["name"], "candle-cpu", "{info}");
    }

    #[test]
    fn coreml_off_apple_platforms_is_an_error_naming_macos() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("docs")).unwrap();
        std::fs::write(tmp.path().join("docs/a.txt"), "some words to index\n").unwrap();
        for args in [
            &["embed", "--backend", "coreml", "hello"][..],
            &["index", "docs", "--store", "st", "--backend", "coreml"][..],
        ] {
            let out = anectx(tmp.path()).args(args).output().unwrap();
            assert!(!out.status.success(), "{args:?} succeeded");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("--backend coreml") && err.contains("macOS"),
                "{args:?}: {err}"
            );
        }
        assert!(
            !tmp.path().join("st").join("anectx.sqlite").exists(),
            "index created a store before refusing the backend"
        );
    }
}

#[test]
fn a_bad_backend_names_where_it_came_from() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("docs")).unwrap();
    std::fs::write(tmp.path().join("docs/a.txt"), "some words to index\n").unwrap();
    let out = anectx(tmp.path())
        .env("ANECTX_BACKEND", "metal")
        .args(["index", "docs", "--store", "st"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("metal") && err.contains("ANECTX_BACKEND"),
        "{err}"
    );
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(&cfg, "backend = \"tpu\"\n").unwrap();
    let out = anectx(tmp.path())
        .env("ANECTX_CONFIG", &cfg)
        .args(["embed", "hello"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tpu") && err.contains("config file"), "{err}");
}
