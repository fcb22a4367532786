//! One test per command, through the built binary: exit codes and the shape
//! of the JSON each prints. Small inputs throughout (a three-document
//! collection, a synthetic log, the built-in embedder exported at one
//! sequence length, tiny benchmark reports); `simulate` runs BM25-only on
//! the shipped sample.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anectx_engine::Features;
use anectx_learn::analyzer::ANALYZER_VERSION;
use anectx_store::{LoggedCandidate, LoggedInteraction, Store, UsageLabelRow};
use serde_json::Value;

/// Runs `anectx args…` with an empty config file and no model or store
/// from the environment.
fn anectx(tmp: &Path, args: &[&str]) -> Output {
    let config = tmp.join("none.toml");
    if !config.exists() {
        std::fs::write(&config, "").unwrap();
    }
    Command::new(env!("CARGO_BIN_EXE_anectx"))
        .args(args)
        .env_remove("ANECTX_MODEL")
        .env_remove("ANECTX_STORE")
        .env_remove("ANECTX_DTYPE")
        .env("ANECTX_CONFIG", tmp.join("none.toml"))
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts success and parses stdout as JSON.
fn ok_json(out: &Output, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: stdout is not JSON ({e}): {}", text(&out.stdout)))
}

fn failed(out: &Output, what: &str) {
    assert!(
        !out.status.success(),
        "{what} succeeded: {}",
        text(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out.stderr));
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn export_coreml_and_check_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = t.join("model");
    anectx_models::default_model::write_dir(&model).unwrap();
    let pkg = t.join("e.mlpackage");
    let out = anectx(
        t,
        &[
            "export",
            "coreml",
            "-m",
            p(&model),
            "--seq",
            "64",
            "-o",
            p(&pkg),
            "--json",
        ],
    );
    let v = ok_json(&out, "export coreml");
    assert_eq!(v["package"], p(&pkg));
    assert_eq!(v["seq_lengths"], serde_json::json!([64]));
    assert_eq!(v["spec_version"], 7);
    assert!(v["operations"].as_u64().unwrap() > 10, "{v}");
    assert!(v["weight_bytes"].as_u64().unwrap() > 0, "{v}");
    assert!(v["kind"].is_string() && v["input"].is_string(), "{v}");
    assert!(pkg.join("Manifest.json").is_file());
    // Without --force the package is not overwritten.
    let again = anectx(t, &["export", "coreml", "-m", p(&model), "-o", p(&pkg)]);
    failed(&again, "export coreml over an existing package");

    // The exported package passes the check: exit 0, no errors.
    let v = ok_json(
        &anectx(t, &["coreml", "check", p(&pkg), "--json"]),
        "coreml check",
    );
    assert_eq!(v["errors"], 0, "{v}");
    assert!(v["findings"].is_array() && v["ops"].is_array(), "{v}");
    assert!(v["predicted_ane_share"].as_f64().unwrap() > 0.9, "{v}");

    // The same package with a LayerNorm epsilon that underflows in fp16:
    // the report is printed, and the exit code is non-zero.
    let mut m = anectx_coreml::read_package(&pkg).unwrap();
    let ops = &mut m
        .program
        .functions
        .get_mut("main")
        .unwrap()
        .block
        .operations;
    let eps = ops
        .iter()
        .find(|o| o.op_type == "layer_norm")
        .and_then(|o| o.input_var("epsilon").map(str::to_string))
        .expect("a layer_norm with a const epsilon");
    ops.iter_mut()
        .find(|o| o.outputs.first().is_some_and(|v| v.name == eps))
        .unwrap()
        .attributes
        .insert(
            "val".into(),
            anectx_coreml::program::Value::Tensor(anectx_coreml::program::TensorValue::f16_scalar(
                1e-12,
            )),
        );
    let bad = t.join("bad.mlpackage");
    anectx_coreml::write_package(&m, &bad, &anectx_coreml::WriteOptions::default()).unwrap();
    let out = anectx(t, &["coreml", "check", p(&bad), "--json"]);
    failed(&out, "coreml check of a package with an error");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["errors"].as_u64().unwrap() >= 1, "{v}");
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["rule"] == "norm-epsilon" && f["severity"] == "error"),
        "{v}"
    );
    assert!(
        text(&out.stderr).contains("would not stay on the Neural Engine"),
        "{}",
        text(&out.stderr)
    );
    // The text report exits non-zero too.
    failed(
        &anectx(t, &["coreml", "check", p(&bad)]),
        "coreml check (text)",
    );
}

/// A three-document BEIR-layout collection.
fn tiny_collection(d: &Path) -> PathBuf {
    let c = d.join("coll");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(
        c.join("corpus.jsonl"),
        "{\"_id\": \"d1\", \"title\": \"Wing flutter\", \"text\": \"flutter of swept wings at supersonic speed\"}\n\
         {\"_id\": \"d2\", \"title\": \"\", \"text\": \"heat transfer in laminar boundary layers\"}\n\
         {\"_id\": \"d3\", \"title\": \"Buckling\", \"text\": \"buckling of thin cylindrical shells under pressure\"}\n",
    )
    .unwrap();
    std::fs::write(
        c.join("queries.jsonl"),
        "{\"_id\": \"q1\", \"text\": \"wing flutter\"}\n{\"_id\": \"q2\", \"text\": \"laminar heat transfer\"}\n",
    )
    .unwrap();
    std::fs::write(
        c.join("qrels.tsv"),
        "query-id\tcorpus-id\tscore\nq1\td1\t2\nq2\td2\t1\n",
    )
    .unwrap();
    c
}

#[test]
fn eval_reports_every_mode_as_json() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let coll = tiny_collection(t);
    // The built-in embedder: all four modes.
    let v = ok_json(&anectx(t, &["eval", p(&coll), "--json"]), "eval");
    assert_eq!(
        (v["documents"].as_u64(), v["queries"].as_u64()),
        (Some(3), Some(2))
    );
    assert!(
        v["embedder"]
            .as_str()
            .unwrap()
            .contains("anectx-default-embedder"),
        "{v}"
    );
    let modes: Vec<&str> = v["modes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["bm25", "dense", "hybrid", "full"], "{v}");
    for m in v["modes"].as_array().unwrap() {
        for k in ["ndcg_10", "recall_100", "mrr_10", "map"] {
            let x = m[k].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&x), "{k} = {x} in {m}");
        }
        assert_eq!(m["per_query"].as_array().unwrap().len(), 2, "{m}");
    }
    // Each query's one relevant document shares its terms: BM25 ranks it first.
    assert_eq!(v["modes"][0]["ndcg_10"], 1.0, "{v}");

    // BM25 only, one mode asked for.
    let v = ok_json(
        &anectx(
            t,
            &[
                "eval",
                p(&coll),
                "--model",
                "none",
                "--mode",
                "bm25",
                "--json",
            ],
        ),
        "eval --model none",
    );
    assert!(v["embedder"].is_null(), "{v}");
    assert_eq!(v["modes"].as_array().unwrap().len(), 1);
    // A missing collection and an unknown mode are errors.
    failed(
        &anectx(t, &["eval", p(&t.join("nowhere"))]),
        "eval of nothing",
    );
    failed(
        &anectx(t, &["eval", p(&coll), "--model", "none", "--mode", "bogus"]),
        "eval --mode bogus",
    );
}

/// A log of `n` answered interactions (distinct questions) whose used
/// chunks are those with high query coverage, labelled by the current
/// analyzer version, so `train` learns a model clearly better than the
/// built-in fusion (which ranks by rrf, unrelated to use here).
fn synthetic_store(dir: &Path, n: usize) {
    let store = Store::open(dir).unwrap();
    let mut rng = anectx_models::weights::Rng::new(3);
    for i in 0..n {
        let mut cands = Vec::new();
        let mut truth = Vec::new();
        for c in 0..20u64 {
            let cov = rng.uniform();
            let f = Features {
                rrf: 1.0 / (60.0 + c as f32),
                bm25: Some(10.0 * rng.uniform()),
                bm25_rank: Some(c as u32 + 1),
                dense: Some(rng.uniform()),
                dense_rank: Some(c as u32 + 1),
                tokens: 50 + (rng.uniform() * 100.0) as u32,
                coverage: cov,
                bigram_coverage: cov * 0.5,
                ..Features::default()
            };
            let shown = (c < 6).then_some(c as u32 + 1);
            cands.push(LoggedCandidate {
                chunk_id: i as u64 * 100 + c,
                position: shown,
                score: 1.0 - c as f32 / 20.0,
                propensity: if shown.is_some() { 0.95 } else { 0.02 },
                features: serde_json::to_value(&f).unwrap(),
                text: shown.map(|_| format!("chunk {c}")),
            });
            truth.push(cov > 0.5);
        }
        let id = store
            .db
            .append_interaction(&LoggedInteraction {
                uid: format!("t-{i}"),
                ts_ms: i as i64,
                kind: "test".into(),
                query: format!("question number {i}"),
                model_version: "fusion-v1".into(),
                explored: false,
                response: Some("an answer".into()),
                complete: true,
                meta: Default::default(),
                candidates: cands,
            })
            .unwrap();
        let rows: Vec<UsageLabelRow> = (0..6u64)
            .map(|c| UsageLabelRow {
                interaction_id: id,
                chunk_id: i as u64 * 100 + c,
                analyzer_version: ANALYZER_VERSION.into(),
                score: truth[c as usize] as u8 as f32,
                used: truth[c as usize],
                evidence: Value::Null,
            })
            .collect();
        store.db.put_labels(&rows).unwrap();
    }
}

/// `model list --json` as `(version, current)` pairs.
fn versions(t: &Path, store: &Path) -> Vec<(String, bool)> {
    let v = ok_json(
        &anectx(t, &["model", "list", "--store", p(store), "--json"]),
        "model list",
    );
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["manifest"]["version"].as_str().unwrap().to_string(),
                x["current"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn train_promote_then_model_promote_and_rollback() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let store = t.join("store");
    // No store, then an empty log: errors that say what to do.
    let out = anectx(t, &["train", "--store", p(&store), "--json"]);
    failed(&out, "train without a store");
    assert!(
        text(&out.stderr).contains("no store"),
        "{}",
        text(&out.stderr)
    );
    Store::open(&store).unwrap();
    let out = anectx(t, &["train", "--store", p(&store), "--json"]);
    failed(&out, "train on an empty log");
    assert!(text(&out.stderr).contains("empty"), "{}", text(&out.stderr));

    synthetic_store(&store, 120);
    let v = ok_json(
        &anectx(t, &["train", "--store", p(&store), "--promote", "--json"]),
        "train --promote",
    );
    let version = v["version"].as_str().unwrap().to_string();
    assert!(v["train"]["train_pairs"].as_u64().unwrap() > 0, "{v}");
    assert!(v["train"]["best_epoch"].as_u64().unwrap() > 0, "{v}");
    let g = &v["gate"];
    assert_eq!(g["metric"], "ips_ndcg10_pool");
    assert!(
        g["candidate"].as_f64().unwrap() > g["current"].as_f64().unwrap(),
        "{g}"
    );
    assert_eq!(g["passed"], true, "{g}");
    assert!(g["current_version"]
        .as_str()
        .unwrap()
        .starts_with("fusion-v2"));
    assert_eq!(v["promoted"], true, "{v}");
    // The new version carries the usage memory of the whole log.
    assert_eq!(v["memory"]["questions"], 120, "{v}");
    assert_eq!(v["memory"]["watermark"], 120, "{v}");
    assert!(v["memory"]["pairs"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(versions(t, &store), vec![(version.clone(), true)]);

    // Rollback: back to the built-in model.
    let out = anectx(t, &["model", "rollback", "--store", p(&store)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("the built-in fusion model is current")
            && text(&out.stdout).contains("it has no usage memory"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(versions(t, &store), vec![(version.clone(), false)]);
    // Nothing left to roll back.
    let out = anectx(t, &["model", "rollback", "--store", p(&store)]);
    failed(&out, "model rollback with the built-in model current");
    assert!(
        text(&out.stderr).contains("nothing to roll back"),
        "{}",
        text(&out.stderr)
    );
    // Promote it again by name.
    let out = anectx(t, &["model", "promote", &version, "--store", p(&store)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with(&format!(
            "{version} is current (its usage memory: 120 questions"
        )),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(versions(t, &store), vec![(version.clone(), true)]);

    // `memory stats` of the current version: its size and watermark, and
    // no interaction logged since.
    let m = ok_json(
        &anectx(t, &["memory", "stats", "--store", p(&store), "--json"]),
        "memory stats",
    );
    assert_eq!(m["version"], version.as_str(), "{m}");
    assert_eq!(m["current"], true, "{m}");
    assert_eq!(m["memory"]["watermark"], 120, "{m}");
    assert!(m["memory"]["bytes"].as_u64().unwrap() > 0, "{m}");
    assert_eq!(m["hits"]["interactions"], 0, "{m}");
    assert_eq!(m["hits"]["any_rate"], Value::Null, "{m}");
    // The built-in model has none until `memory rebuild builtin` makes one.
    let m = ok_json(
        &anectx(
            t,
            &["memory", "stats", "builtin", "--store", p(&store), "--json"],
        ),
        "memory stats builtin",
    );
    assert_eq!(
        (&m["memory"], &m["current"]),
        (&Value::Null, &Value::Bool(false)),
        "{m}"
    );
    let r = ok_json(
        &anectx(
            t,
            &[
                "memory",
                "rebuild",
                "builtin",
                "--store",
                p(&store),
                "--model",
                "none",
                "--json",
            ],
        ),
        "memory rebuild builtin",
    );
    assert_eq!(r["version"], Value::Null, "{r}");
    assert_eq!(r["spec"]["stats"]["questions"], 120, "{r}");
    assert_eq!(r["newly_labelled"], 0, "{r}");
    let out = anectx(t, &["memory", "stats", "builtin", "--store", p(&store)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("questions      120"),
        "{}",
        text(&out.stdout)
    );
    // Unknown and malformed version names are refused.
    let out = anectx(t, &["memory", "stats", "rel-nope", "--store", p(&store)]);
    failed(&out, "memory stats of an unknown version");
    assert!(
        text(&out.stderr).contains("no version"),
        "{}",
        text(&out.stderr)
    );
    let out = anectx(t, &["memory", "rebuild", "../x", "--store", p(&store)]);
    failed(&out, "memory rebuild of a bad name");
    assert!(
        text(&out.stderr).contains("bad version name"),
        "{}",
        text(&out.stderr)
    );
    // An unknown version is refused and the current one stays.
    let out = anectx(t, &["model", "promote", "rel-nope", "--store", p(&store)]);
    failed(&out, "model promote of an unknown version");
    assert!(
        text(&out.stderr).contains("keeps serving"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(versions(t, &store), vec![(version.clone(), true)]);

    // Without --promote a passing model is added, not made current.
    let v = ok_json(
        &anectx(t, &["train", "--store", p(&store), "--seed", "5", "--json"]),
        "train",
    );
    assert_eq!(v["promoted"], false, "{v}");
    let second = v["version"].as_str().unwrap().to_string();
    assert_ne!(second, version);
    let list = versions(t, &store);
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.contains(&(version, true)) && list.contains(&(second, false)));
}

#[test]
fn simulate_reports_rounds_and_the_analyzer_beats_all_used() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let sample = anectx_testing::workspace_root().join("samples/quickstart");
    let work = t.join("work");
    let v = ok_json(
        &anectx(
            t,
            &[
                "simulate",
                p(&sample),
                "--bm25-only",
                "--work",
                p(&work),
                "--json",
            ],
        ),
        "simulate",
    );
    assert_eq!(v["documents"], 600);
    assert_eq!(v["dense"], false);
    let (train_q, test_q) = (
        v["train_queries"].as_u64().unwrap(),
        v["test_queries"].as_u64().unwrap(),
    );
    assert_eq!(train_q + test_q, 60, "{v}");
    let rounds = v["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 1);
    let r = &rounds[0];
    assert_eq!(r["round"], 1);
    // Two asks per train query (the default).
    assert_eq!(r["interactions_logged"].as_u64(), Some(2 * train_q));
    let before = r["test_ndcg_before"].as_f64().unwrap();
    let after = r["test_ndcg_after"].as_f64().unwrap();
    assert!(before > 0.2 && before <= 1.0, "{r}");
    match r["promoted"].as_str() {
        Some(version) => assert_eq!(r["gate"]["passed"], true, "{version}: {r}"),
        None => assert_eq!(after, before, "{r}"),
    }
    assert!(r["gate"].is_object() || r["train_error"].is_string(), "{r}");
    // The analyzer against what the simulated LLM really used, and the
    // analyzer that calls every shown chunk used, scored on the same shown
    // chunks (their number from the simulation's log).
    let prf = |k: &str| {
        let x = &r[k];
        (
            x["tp"].as_u64().unwrap(),
            x["fp"].as_u64().unwrap(),
            x["fn_"].as_u64().unwrap(),
            x["f1"].as_f64().unwrap(),
        )
    };
    let db = anectx_store::Db::open(&work.join("store").join("anectx.sqlite")).unwrap();
    let shown: u64 = db
        .interactions(0, 100_000)
        .unwrap()
        .iter()
        .map(|(_, i)| i.candidates.iter().filter(|c| c.position.is_some()).count() as u64)
        .sum();
    for k in ["analyzer_vs_simulator", "analyzer_vs_judgments"] {
        let (tp, fp, fn_, f1) = prf(k);
        assert!(
            tp + fp + fn_ <= shown,
            "{k}: {tp}+{fp}+{fn_} > {shown} shown"
        );
        // All used: every truly used chunk is found, every other one is a
        // false positive.
        let positives = (tp + fn_) as f64;
        let all_used = 2.0 * positives / (positives + shown as f64);
        eprintln!("{k}: analyzer F1 {f1:.3}, every-shown-chunk-used F1 {all_used:.3}");
        assert!(
            f1 >= all_used + 0.1,
            "{k}: analyzer F1 {f1:.3} vs {all_used:.3} for every shown chunk used"
        );
    }
    assert!(prf("analyzer_vs_simulator").3 >= 0.8, "{r}");
}

/// A tiny benchmark report (one random conv model, candle only).
fn tiny_report() -> anectx_bench::report::Report {
    let model = anectx_bench::ModelSpec::new(
        "conv",
        "tiny conv",
        anectx_bench::ModelSource::RandomConv(anectx_models::ConvEmbedderConfig {
            vocab_size: 120,
            embed_dim: 16,
            widths: vec![24, 24],
            kernel_sizes: vec![3, 5],
            output_dim: 8,
            max_seq: 64,
            ..Default::default()
        }),
    );
    let opts = anectx_bench::BenchOptions {
        warmup: 1,
        runs: 4,
        latency_batch: 1,
        latency_seq: 16,
        batch_sizes: vec![1, 2],
        seq_lens: vec![8],
        throughput_min_runs: 2,
        throughput_min_s: 0.0,
        concurrency: vec![1],
        concurrency_batch: 1,
        concurrency_seq: 8,
        concurrency_s: 0.02,
        soak_s: 0.0,
        targets: vec![anectx_bench::Target::CANDLE_CPU],
        precision_texts: 2,
        peak_threads: 1,
        peak_run_s: 0.01,
        peak_repeats: 1,
        ..anectx_bench::BenchOptions::quick()
    };
    anectx_bench::run(&[model], &opts, &anectx_bench::NoProgress).unwrap()
}

#[test]
fn bench_compare_prints_ratios_as_json() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let a = tiny_report();
    let mut b = a.clone();
    let row = b.rows.iter_mut().find(|r| r.model == "conv").unwrap();
    row.latency.as_mut().unwrap().mean_ms *= 2.0;
    let (ja, jb) = (t.join("a.json"), t.join("b.json"));
    std::fs::write(&ja, a.to_json().unwrap()).unwrap();
    std::fs::write(&jb, b.to_json().unwrap()).unwrap();
    let v = ok_json(
        &anectx(t, &["bench", "compare", p(&ja), p(&jb), "--json"]),
        "bench compare",
    );
    let rows = v.as_array().unwrap();
    assert!(!rows.is_empty());
    for r in rows {
        assert!(r["key"].is_string() && r["metric"].is_string(), "{r}");
        assert!(r["a"].is_number() && r["b"].is_number(), "{r}");
        assert!(r["higher_is_better"].is_boolean(), "{r}");
    }
    let mean = rows
        .iter()
        .find(|r| r["metric"] == "latency_mean_ms" && r["key"].as_str().unwrap().contains("conv"))
        .unwrap_or_else(|| panic!("no conv latency_mean_ms in {v}"));
    assert!(
        (mean["ratio"].as_f64().unwrap() - 2.0).abs() < 1e-9,
        "{mean}"
    );
    assert_eq!(mean["higher_is_better"], false);
    // The text form exits 0 too; a missing or malformed report does not.
    let out = anectx(t, &["bench", "compare", p(&ja), p(&jb)]);
    assert!(out.status.success() && text(&out.stdout).contains("b / a"));
    failed(
        &anectx(t, &["bench", "compare", p(&ja), p(&t.join("none.json"))]),
        "bench compare with a missing report",
    );
    std::fs::write(t.join("bad.json"), "{}").unwrap();
    failed(
        &anectx(t, &["bench", "compare", p(&ja), p(&t.join("bad.json"))]),
        "bench compare with a malformed report",
    );
}

/// `anectx context --path/--kind/--modified-after/--modified-before`:
/// the filters select inside retrieval (the one allowed document is found
/// even with `--k 1`, where the unfiltered top candidate is another file),
/// and bad values are clear errors.
#[test]
fn context_filters_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let docs = t.join("docs");
    std::fs::create_dir_all(docs.join("old")).unwrap();
    for i in 0..5 {
        std::fs::write(
            docs.join(format!("lamp{i}.md")),
            format!("# Lamp {i}\n\nThe lighthouse lamp, lighthouse keeper, lighthouse {i}.\n"),
        )
        .unwrap();
    }
    let old = docs.join("old/garden.txt");
    std::fs::write(
        &old,
        "Soil and compost; a lighthouse postcard in the shed.\n",
    )
    .unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_577_923_200))
        .unwrap();
    let store = t.join("store");
    let out = anectx(
        t,
        &["index", p(&docs), "--store", p(&store), "--model", "none"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ctx = |extra: &[&str]| {
        let mut a = vec![
            "context",
            "lighthouse",
            "--store",
            p(&store),
            "--k",
            "1",
            "--json",
        ];
        a.extend_from_slice(extra);
        anectx(t, &a)
    };
    let paths = |v: &Value| -> Vec<String> {
        v["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["path"].as_str().unwrap().to_string())
            .collect()
    };
    let all = ok_json(&ctx(&[]), "context");
    assert!(
        !paths(&all).iter().any(|p| p.ends_with("garden.txt")),
        "{:?}",
        paths(&all)
    );
    for extra in [
        &["--path", "old/**"][..],
        &["--kind", "txt"],
        &["--modified-before", "2021-01-01"],
        &[
            "--modified-after",
            "2020-01-01T00:00:00Z",
            "--modified-before",
            "2020-01-03",
        ],
    ] {
        let v = ok_json(&ctx(extra), "context with filters");
        let got = paths(&v);
        assert_eq!(got.len(), 1, "{extra:?}: {got:?}");
        assert!(got[0].ends_with("old/garden.txt"), "{extra:?}: {got:?}");
    }
    let v = ok_json(&ctx(&["--kind", "pdf,docx"]), "context --kind pdf,docx");
    assert!(paths(&v).is_empty());

    // Bad values: clap's usage error (2) naming the flag and the forms, or
    // a clear error (1) for a bad glob or an empty range.
    for (extra, code, needle) in [
        (&["--modified-after", "last week"][..], 2, "YYYY-MM-DD"),
        (&["--modified-before", "2024-02-30"], 2, "no such day"),
        (&["--kind", "pdf,,md"], 2, "empty entry"),
        (&["--path", "old/["], 1, "--path"),
        (
            &[
                "--modified-after",
                "2024-05-02",
                "--modified-before",
                "2024-05-01",
            ],
            1,
            "--modified-before",
        ),
    ] {
        let out = ctx(extra);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{extra:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(needle),
            "{extra:?}: {}",
            text(&out.stderr)
        );
    }
    let help = anectx(t, &["context", "--help"]);
    let h = text(&help.stdout);
    for flag in ["--path", "--kind", "--modified-after", "--modified-before"] {
        assert!(h.contains(flag), "{h}");
    }
}
