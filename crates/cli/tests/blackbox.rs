//! Runs `scripts/blackbox.py` against this build's binary: `anectx serve` on
//! loopback refuses a foreign Host and Origin, slow headers, a hung upstream,
//! an oversized body and `/admin/reload` without the token.

use std::process::Command;

#[test]
fn the_black_box_script_sees_every_hostile_request_refused() {
    let root = anectx_testing::workspace_root();
    let out = Command::new("python3")
        .arg(root.join("scripts/blackbox.py"))
        .arg(env!("CARGO_BIN_EXE_anectx"))
        .output()
        .expect("python3 runs scripts/blackbox.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "black-box checks failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(stdout.matches("PASS ").count(), 6, "{stdout}");
}
