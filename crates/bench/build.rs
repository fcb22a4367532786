//! Records the candle version (from the workspace Cargo.lock) and the rustc
//! version for the report's system information.

use std::path::Path;

fn main() {
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let candle = std::fs::read_to_string(&lock)
        .ok()
        .and_then(|text| {
            let mut lines = text.lines();
            while let Some(l) = lines.next() {
                if l.trim() == "name = \"candle-core\"" {
                    return lines.next().and_then(|v| {
                        v.trim()
                            .strip_prefix("version = \"")
                            .and_then(|v| v.strip_suffix('"'))
                            .map(str::to_string)
                    });
                }
            }
            None
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=ANECTX_BENCH_CANDLE_VERSION={candle}");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=ANECTX_BENCH_RUSTC_VERSION={version}");
}
