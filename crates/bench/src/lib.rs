//! `anectx bench`: an ANEMLL-comparable benchmark of anectx's models.
//!
//! For each model × backend × compute units it measures cold load, warm
//! latency percentiles, throughput over a batch × sequence grid, weight GB/s
//! computed the ANEMLL way (weight bytes / mean latency), achieved GFLOP/s
//! against this machine's measured FMA peak, 1–6 concurrent instances with
//! ANEMLL's utilization factor, fp16-vs-fp32 parity (cosine, PSNR and
//! optionally the nDCG@10 change) and a sustained soak. The reference
//! candle-transformers BERT always runs in the same process, so every ratio
//! compares like with like. Results are a JSON [`Report`] (documented in
//! `docs/bench.md`) and a self-contained HTML page with SVG charts.
//!
//! Metric definitions follow `ane-rules.md` §6 and §9: ANEMLL-Bench reports
//! the arithmetic mean over timed calls after warm-up, GB/s as
//! (weight bytes / 1e9) / mean seconds, and the dual-model "bandwidth
//! utilization factor" as combined throughput / the sum of solo throughputs.

pub mod compare;
pub mod context;
mod error;
pub mod html;
pub mod models;
pub mod peak;
pub mod precision;
pub mod report;
pub mod run;
pub mod stats;
pub mod system;

use std::path::Path;

pub use error::{BenchError, Result};
pub use models::{find_minilm, BackendKind, ModelSource, ModelSpec, Target, COREML_SKIP};
pub use report::{Report, SCHEMA_VERSION};
pub use run::{run, BenchOptions, NoProgress, Progress};

/// Writes `report.json` and `report.html` into `dir` (created if needed).
pub fn write_outputs(report: &Report, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| BenchError::io(dir, e))?;
    let json = dir.join("report.json");
    std::fs::write(&json, report.to_json()? + "\n").map_err(|e| BenchError::io(&json, e))?;
    let html = dir.join("report.html");
    std::fs::write(&html, html::render(report)?).map_err(|e| BenchError::io(&html, e))?;
    Ok(())
}

/// A plain-text summary of a report for the terminal.
pub fn render_text(report: &Report) -> String {
    use report::Status;
    let mut s = String::new();
    let sys = &report.system;
    s.push_str(&format!(
        "anectx bench ({} mode, {:.1} s) on {} · {} logical cores · {}\n",
        if report.config.quick { "quick" } else { "full" },
        report.duration_s,
        sys.cpu_model.as_deref().unwrap_or("unknown CPU"),
        sys.logical_cores,
        sys.os_version.as_deref().unwrap_or(&sys.os),
    ));
    s.push_str(&format!(
        "FMA peak: {:.1} GFLOP/s on {} threads ({:.1} on one; {})\n\n",
        report.peak.gflops_all_threads,
        report.peak.threads,
        report.peak.gflops_one_thread,
        report.peak.isa
    ));
    s.push_str(&format!(
        "{:<16} {:<12} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>8}\n",
        "model", "target", "load ms", "mean ms", "p50 ms", "p95 ms", "GB/s*", "GFLOP/s", "× ref"
    ));
    for r in &report.rows {
        let target = format!("{}:{}", r.backend, r.units);
        match (&r.status, &r.latency) {
            (Status::Ok, Some(l)) => s.push_str(&format!(
                "{:<16} {:<12} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>10.2} {:>9.1} {:>8}\n",
                r.model,
                target,
                r.load.as_ref().map(|x| x.cold_load_ms).unwrap_or(0.0),
                l.mean_ms,
                l.p50_ms,
                l.p95_ms,
                l.weight_gb_s_anemll,
                l.gflops,
                l.speedup_vs_reference
                    .map(|v| format!("{v:.2}"))
                    .unwrap_or_else(|| "-".into()),
            )),
            _ => s.push_str(&format!(
                "{:<16} {:<12} {}\n",
                r.model,
                target,
                r.message.as_deref().unwrap_or("failed")
            )),
        }
    }
    s.push_str(&format!(
        "* weight GB/s computed the ANEMLL way (weight bytes / mean latency) at b{}×s{}\n\n",
        report.config.latency_batch, report.config.latency_seq
    ));
    s.push_str("headlines:\n");
    for h in &report.summary.headlines {
        s.push_str(&format!(
            "  {:<28} {:<32} {:<14} {:.3}\n",
            h.model, h.metric, h.at, h.value
        ));
    }
    s.push_str("\nfp16 vs fp32:\n");
    for p in &report.precision {
        if p.status == Status::Ok {
            s.push_str(&format!(
                "  {:<16} cosine mean {:.6} min {:.6}  PSNR {} dB{}\n",
                p.model,
                p.cosine_mean,
                p.cosine_min,
                p.psnr_db
                    .map(|v| format!("{v:.1}"))
                    .unwrap_or_else(|| "inf".into()),
                p.eval
                    .as_ref()
                    .map(|e| format!(
                        "  nDCG@10 {:.4} → {:.4} (Δ {:+.4})",
                        e.ndcg10_f32, e.ndcg10_f16, e.ndcg10_delta
                    ))
                    .unwrap_or_default()
            ));
        } else {
            s.push_str(&format!(
                "  {:<16} {}\n",
                p.model,
                p.message.as_deref().unwrap_or("failed")
            ));
        }
    }
    for n in &report.notes {
        s.push_str(&format!("note: {n}\n"));
    }
    s
}
