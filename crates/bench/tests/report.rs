//! End to end on tiny random models: the run fills every section, the
//! report round-trips through JSON, the HTML carries its charts, Core ML
//! rows are skipped with a clear message off Apple platforms, and compare
//! computes b / a.

use anectx_bench::compare::compare;
use anectx_bench::report::{Report, Role, Status};
use anectx_bench::{
    BackendKind, BenchOptions, ModelSource, ModelSpec, NoProgress, Target, COREML_SKIP,
};
use anectx_core::ComputeUnits;
use anectx_models::{BertConfig, ConvEmbedderConfig};

fn tiny_bert() -> BertConfig {
    BertConfig {
        vocab_size: 120,
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 64,
        max_position_embeddings: 64,
        ..anectx_bench::models::minilm_config()
    }
}

fn tiny_conv() -> ConvEmbedderConfig {
    ConvEmbedderConfig {
        vocab_size: 120,
        embed_dim: 16,
        widths: vec![24, 24],
        kernel_sizes: vec![3, 5],
        output_dim: 8,
        max_seq: 64,
        ..ConvEmbedderConfig::default()
    }
}

fn tiny_models() -> Vec<ModelSpec> {
    vec![
        ModelSpec::new(
            "reference",
            "tiny reference",
            ModelSource::ReferenceRandom(tiny_bert()),
        ),
        ModelSpec::new(
            "ane-bert",
            "tiny AneBert",
            ModelSource::RandomAneBert(tiny_bert()),
        ),
        ModelSpec::new("conv", "tiny conv", ModelSource::RandomConv(tiny_conv())),
    ]
}

fn tiny_options() -> BenchOptions {
    BenchOptions {
        warmup: 1,
        runs: 4,
        latency_batch: 1,
        latency_seq: 16,
        batch_sizes: vec![1, 2],
        seq_lens: vec![8, 16],
        throughput_min_runs: 2,
        throughput_min_s: 0.0,
        concurrency: vec![1, 2],
        concurrency_batch: 1,
        concurrency_seq: 8,
        concurrency_s: 0.02,
        soak_s: 0.06,
        soak_window_s: 0.02,
        soak_batch: 1,
        soak_seq: 8,
        targets: vec![
            Target::CANDLE_CPU,
            Target {
                backend: BackendKind::CoreMl,
                units: ComputeUnits::CpuAndNeuralEngine,
            },
        ],
        precision_texts: 4,
        peak_threads: 1,
        peak_run_s: 0.01,
        peak_repeats: 1,
        ..BenchOptions::quick()
    }
}

#[test]
fn tiny_run_round_trips_and_renders() {
    let report = anectx_bench::run(&tiny_models(), &tiny_options(), &NoProgress).unwrap();

    // Models: the reference and two labelled random candidates.
    assert_eq!(report.models.len(), 3);
    assert_eq!(report.reference_id(), Some("reference"));
    for m in &report.models {
        assert_eq!(m.weights, "random");
        assert_eq!(m.note.as_deref(), Some("random weights (timing only)"));
        assert!(m.parameters > 0 && m.graph_weight_bytes > 0);
    }
    assert_eq!(report.model("reference").unwrap().role, Role::Reference);
    assert_eq!(report.model("conv").unwrap().kind, "conv_embedder");
    assert_eq!(report.model("ane-bert").unwrap().kind, "ane_bert");
    // AneBert and the reference share the shape, so the same weight bytes.
    assert_eq!(
        report.model("ane-bert").unwrap().graph_weight_bytes,
        report.model("reference").unwrap().graph_weight_bytes
    );

    // candle rows are complete.
    for id in ["reference", "ane-bert", "conv"] {
        let row = report.row(id, "candle", "cpu").expect("candle row");
        let l = row.latency.as_ref().unwrap();
        assert_eq!(l.runs, 4);
        assert!(l.p50_ms <= l.p95_ms && l.p95_ms <= l.p99_ms && l.p99_ms <= l.max_ms);
        assert!(l.min_ms > 0.0);
        // ANEMLL way: bytes / mean latency.
        let expect = l.weight_bytes as f64 / 1e9 / (l.mean_ms / 1e3);
        assert!((l.weight_gb_s_anemll - expect).abs() <= 1e-9 * expect.max(1.0));
        assert_eq!(row.throughput.len(), 4);
        for p in &row.throughput {
            assert!(p.runs >= 2);
            assert!((p.tokens_per_s / p.items_per_s - p.seq as f64).abs() < 1e-6);
            assert!(p.gflops > 0.0 && p.peak_fraction > 0.0);
            assert!(p.ratio_vs_reference.is_some());
        }
        let levels: Vec<usize> = row.concurrency.iter().map(|c| c.instances).collect();
        assert_eq!(levels, vec![1, 2]);
        assert!((row.concurrency[0].utilization_factor - 1.0).abs() < 1e-12);
        assert!(row.concurrency[1].utilization_factor > 0.0);
        let soak = row.soak.as_ref().unwrap();
        assert!(!soak.windows.is_empty());
        assert!(soak.min_over_max > 0.0 && soak.min_over_max <= 1.0);
    }
    // The reference against itself is exactly 1.
    let r = report.row("reference", "candle", "cpu").unwrap();
    assert_eq!(r.latency.as_ref().unwrap().speedup_vs_reference, Some(1.0));
    assert!(r
        .throughput
        .iter()
        .all(|p| p.ratio_vs_reference == Some(1.0)));

    // Core ML: skipped with a clear message off Apple platforms.
    if !cfg!(target_vendor = "apple") {
        let skipped: Vec<_> = report
            .rows
            .iter()
            .filter(|r| r.backend == "coreml")
            .collect();
        assert_eq!(skipped.len(), 3);
        for row in skipped {
            assert_eq!(row.status, Status::Skipped);
            assert_eq!(row.message.as_deref(), Some(COREML_SKIP));
            assert!(row.latency.is_none());
        }
    }

    // fp16 vs fp32 on the same weights.
    assert_eq!(report.precision.len(), 3);
    for p in &report.precision {
        if p.model == "reference" && p.status != Status::Ok {
            // candle-transformers' BertModel overflows its mask in fp16.
            let msg = p.message.as_deref().unwrap_or_default();
            assert!(msg.contains("fp16 output has non-finite values"), "{msg}");
            continue;
        }
        assert_eq!(p.status, Status::Ok, "{:?}", p.message);
        assert_eq!(p.texts, 4);
        assert!(p.cosine_min > 0.99, "{}: {}", p.model, p.cosine_min);
        assert!(p.cosine_mean + 1e-9 >= p.cosine_min, "{p:?}");
        // fp16 differs from fp32 (the PSNR is finite), by rounding only.
        let psnr = p
            .psnr_db
            .unwrap_or_else(|| panic!("{}: no PSNR (fp16 identical to fp32?)", p.model));
        assert!(psnr >= 50.0, "{}: PSNR {psnr:.1} dB < 50 dB", p.model);
    }

    // Headlines carry ratios against the reference and utilization factors.
    let metrics: Vec<&str> = report
        .summary
        .headlines
        .iter()
        .map(|h| h.metric.as_str())
        .collect();
    for m in [
        "latency_speedup_vs_reference",
        "throughput_ratio_vs_reference",
        "best_peak_fraction",
        "utilization_factor",
    ] {
        assert!(metrics.contains(&m), "missing headline {m}");
    }

    // JSON round trip: serialize → parse → equal.
    let json = report.to_json().unwrap();
    let back = Report::from_json(&json, std::path::Path::new("mem")).unwrap();
    assert_eq!(back, report);

    // HTML: self-contained, with every chart as inline SVG.
    let html = anectx_bench::html::render(&report).unwrap();
    for id in [
        "chart-latency",
        "chart-throughput",
        "chart-gflops",
        "chart-concurrency",
        "chart-utilization",
        "chart-soak",
    ] {
        assert!(html.contains(&format!("<figure id=\"{id}\">")), "{id}");
    }
    assert_eq!(html.matches("<svg").count(), 6);
    assert!(html.contains("ANEMLL way"));
    assert!(html.contains(COREML_SKIP));
    assert!(!html.contains("<script"));

    // Files on disk.
    let dir = tempfile::tempdir().unwrap();
    anectx_bench::write_outputs(&report, dir.path()).unwrap();
    let read = Report::read(&dir.path().join("report.json")).unwrap();
    assert_eq!(read, report);
    assert!(std::fs::read_to_string(dir.path().join("report.html"))
        .unwrap()
        .contains("<svg"));

    // Text summary names every model and the skipped rows.
    let text = anectx_bench::render_text(&report);
    assert!(text.contains("conv") && text.contains("ane-bert"));
}

#[test]
fn compare_computes_b_over_a() {
    let report = anectx_bench::run(
        &tiny_models()[2..],
        &BenchOptions {
            targets: vec![Target::CANDLE_CPU],
            concurrency: vec![1],
            soak_s: 0.0,
            ..tiny_options()
        },
        &NoProgress,
    )
    .unwrap();
    let mut b = report.clone();
    {
        let row = b.rows.iter_mut().find(|r| r.model == "conv").unwrap();
        let l = row.latency.as_mut().unwrap();
        l.mean_ms *= 2.0;
        l.p50_ms *= 2.0;
        for p in &mut row.throughput {
            p.items_per_s *= 0.5;
        }
    }
    b.peak.gflops_all_threads *= 3.0;
    let rows = compare(&report, &b);
    let find = |key_part: &str, metric: &str| {
        rows.iter()
            .find(|r| r.key.contains(key_part) && r.metric == metric)
            .unwrap_or_else(|| panic!("no {key_part} {metric}"))
    };
    let mean = find("conv candle:cpu b1×s16", "latency_mean_ms");
    assert!((mean.ratio.unwrap() - 2.0).abs() < 1e-12);
    assert!(!mean.higher_is_better);
    let tp = find("conv candle:cpu b2×s8", "items_per_s");
    assert!((tp.ratio.unwrap() - 0.5).abs() < 1e-12);
    assert!((find("machine", "peak_gflops_all_threads").ratio.unwrap() - 3.0).abs() < 1e-12);
    // Unchanged figures compare as 1.
    assert_eq!(
        find("conv candle:cpu b1×s16", "latency_p95_ms").ratio,
        Some(1.0)
    );
    let text = anectx_bench::compare::render(&rows, "a.json", "b.json");
    assert!(text.contains("b / a") && text.contains("2.000") && text.contains("0.500"));

    // A report of another schema version is refused with a clear error.
    let mut v: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
    v["schema_version"] = serde_json::json!(999);
    let err = Report::from_json(&v.to_string(), std::path::Path::new("x.json")).unwrap_err();
    assert!(err.to_string().contains("schema_version 999"));
    assert!(Report::from_json("{}", std::path::Path::new("y.json")).is_err());
}

#[test]
fn minilm_fixture_reference_and_ane_bert_agree() {
    let Some(dir) = anectx_testing::minilm_dir() else {
        return;
    };
    let reference = ModelSpec::new("r", "r", ModelSource::ReferenceDir(dir.clone()));
    let ane = ModelSpec::new("a", "a", ModelSource::Dir(dir));
    let x = anectx_bench::models::Inputs::synthetic(2, 16, 30522, 3).unwrap();
    let r = reference.load(anectx_models::WeightDtype::F32).unwrap();
    let a = ane.load(anectx_models::WeightDtype::F32).unwrap();
    let (er, ea) = (r.net.run(&x).unwrap(), a.net.run(&x).unwrap());
    assert_eq!(er.len(), 2 * 384);
    for row in 0..2 {
        let s = row * 384..(row + 1) * 384;
        let cos = anectx_models::metrics::cosine(&er[s.clone()], &ea[s]);
        assert!(cos > 0.9999, "row {row}: cosine {cos}");
    }
    // Same architecture, nearly the same counted bytes (the two loaders keep
    // one 512-value buffer differently: 2 KiB of 42.6 MB); MiniLM has ~22.6 M
    // parameters without its pooler.
    let (rb, ab) = (r.meta.graph_weight_bytes, a.meta.graph_weight_bytes);
    assert!(rb.abs_diff(ab) <= 4096, "{rb} vs {ab}");
    assert!(
        r.meta.parameters.abs_diff(a.meta.parameters) <= 512,
        "{} vs {}",
        r.meta.parameters,
        a.meta.parameters
    );
    // 22.7 M with the pooler, which sentence embedding does not use.
    assert!(
        (r.meta.parameters as f64 / 1e6 - 22.57).abs() < 0.05,
        "{}",
        r.meta.parameters
    );
}
