//! Fuzzing the HTTP JSON bodies: the request bodies in
//! `fuzz/corpus/json/bodies.jsonl`, mutated as bytes or as JSON values
//! (a field replaced by a value of another type, a huge number, a long or
//! deeply nested list, odd Unicode), posted to their route in process. Every
//! answer must be a 2xx or a 4xx with an error body (never a 5xx other than
//! the chat proxy's 502 from its dead upstream and feedback's 503 without an
//! interaction log), and no request may hang. `scripts/fuzz.sh` runs it for a duration (`anectx_testing::fuzz`).

use std::sync::Arc;

use anectx_testing::fuzz::{self, Rng};
use serde_json::{json, Value};

use crate::common::{harness, post_raw, Opts, WAIT};

fn seeds() -> Vec<(String, Value)> {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/corpus/json/bodies.jsonl"
    );
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["route"].as_str().unwrap().to_string(), v["body"].clone())
        })
        .collect()
}

fn odd_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth > 3 { 8 } else { 11 }) {
        0 => Value::Null,
        1 => json!(rng.chance(1, 2)),
        2 => json!(*rng.pick(&[0i64, -1, 1, i64::MAX, i64::MIN, 4096, 100_000_000])),
        3 => json!(*rng.pick(&[0.5f64, -0.0, 1e308, -1e308, 1e-300])),
        4 => json!(""),
        5 => json!(*rng.pick(&[
            "   ",
            "é<é",
            "\u{0}",
            "\u{202e}abc",
            "[1] a.md:1-2",
            "a\nb\r\n",
            "😀😀"
        ])),
        6 => json!("x ".repeat(1 + rng.below(3000))),
        7 => json!(u64::MAX),
        8 => Value::Array(
            (0..rng.below(40))
                .map(|_| odd_value(rng, depth + 1))
                .collect(),
        ),
        9 => {
            let mut v = json!("deep");
            for _ in 0..rng.below(200) {
                v = json!([v]);
            }
            v
        }
        _ => {
            let mut m = serde_json::Map::new();
            for _ in 0..rng.below(5) {
                let k = rng
                    .pick(&[
                        "text", "input", "role", "content", "type", "path", "kind", "x",
                    ])
                    .to_string();
                m.insert(k, odd_value(rng, depth + 1));
            }
            Value::Object(m)
        }
    }
}

/// Replaces, removes or adds one value somewhere in `v`.
fn mutate_value(rng: &mut Rng, v: &mut Value) {
    match v {
        Value::Object(m) if !m.is_empty() && rng.chance(3, 4) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = rng.pick(&keys).clone();
            match rng.below(4) {
                0 => {
                    m.remove(&k);
                }
                1 => {
                    m.insert(k, odd_value(rng, 0));
                }
                _ => mutate_value(rng, m.get_mut(&k).unwrap()),
            }
        }
        Value::Array(a) if !a.is_empty() && rng.chance(3, 4) => {
            let i = rng.below(a.len());
            match rng.below(4) {
                0 => {
                    a.remove(i);
                }
                1 => {
                    let x = a[i].clone();
                    let n = rng.below(1000);
                    a.extend(std::iter::repeat_n(x, n));
                }
                _ => mutate_value(rng, &mut a[i]),
            }
        }
        other => *other = odd_value(rng, 0),
    }
}

#[test]
fn json_bodies_survive_mutation() {
    let seeds = seeds();
    assert!(seeds.len() >= 10);
    let raw: Vec<Vec<u8>> = seeds
        .iter()
        .map(|(_, b)| b.to_string().into_bytes())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Nothing listens on a port just released: the chat proxy answers 502.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let h = rt.block_on(harness(Opts {
        llm: Some(format!("http://{dead}/v1")),
        max_client_batch: 64,
        ..Opts::default()
    }));
    let app = h.app.clone();
    let handle = rt.handle().clone();
    let budget = fuzz::Budget::from_env(300);
    let report = fuzz::run(
        "json",
        budget,
        |rng| {
            let (route, body) = rng.pick(&seeds);
            let bytes = if rng.chance(1, 2) {
                let mut v = body.clone();
                for _ in 0..1 + rng.below(3) {
                    mutate_value(rng, &mut v);
                }
                v.to_string().into_bytes()
            } else {
                fuzz::mutate(rng, &body.to_string().into_bytes(), &raw, 256 << 10)
            };
            (route.clone(), bytes)
        },
        |(route, b)| [route.as_bytes(), b"\n", b].concat(),
        Arc::new(move |(route, body): (String, Vec<u8>)| {
            let r = handle
                .block_on(async {
                    tokio::time::timeout(WAIT, post_raw(&app, &route, body.clone(), None)).await
                })
                .unwrap_or_else(|_| panic!("{route}: no answer"));
            let s = r.status.as_u16();
            let text = String::from_utf8_lossy(&r.body);
            // Expected by this harness's configuration: the chat proxy's
            // upstream is dead and there is no interaction log to take feedback.
            let expected_5xx = (route == "/v1/chat/completions" && s == 502)
                || (route == "/v1/feedback" && s == 503 && text.contains("unavailable_error"));
            assert!(
                r.status.is_success() || r.status.is_client_error() || expected_5xx,
                "{route} answered {s}: {text}\nbody: {}",
                String::from_utf8_lossy(&body[..body.len().min(2000)])
            );
            if r.status.is_client_error() {
                let v: Value = serde_json::from_slice(&r.body)
                    .unwrap_or_else(|e| panic!("{route} {s}: the error is not JSON ({e}): {text}"));
                assert!(v.get("error").is_some(), "{route} {s}: {text}");
            }
        }),
    );
    assert!(report.cases > 0);
}
