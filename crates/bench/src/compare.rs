//! `anectx bench compare a.json b.json`: ratios b / a for every figure the
//! two reports share.

use serde::{Deserialize, Serialize};

use crate::report::{Report, Status};

/// One compared figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareRow {
    /// What was matched, e.g. `ane-bert candle:cpu b8×s128`.
    pub key: String,
    pub metric: String,
    pub a: f64,
    pub b: f64,
    /// b / a (null when a is 0).
    pub ratio: Option<f64>,
    /// Whether a larger value is better (throughput) or worse (latency).
    pub higher_is_better: bool,
}

fn push(out: &mut Vec<CompareRow>, key: &str, metric: &str, a: f64, b: f64, higher: bool) {
    out.push(CompareRow {
        key: key.to_string(),
        metric: metric.to_string(),
        a,
        b,
        ratio: (a != 0.0).then(|| b / a).filter(|r| r.is_finite()),
        higher_is_better: higher,
    });
}

/// Matches rows by model, backend, units and shape, and returns b / a.
pub fn compare(a: &Report, b: &Report) -> Vec<CompareRow> {
    let mut out = Vec::new();
    push(
        &mut out,
        "machine",
        "peak_gflops_all_threads",
        a.peak.gflops_all_threads,
        b.peak.gflops_all_threads,
        true,
    );
    for ra in a.rows.iter().filter(|r| r.status == Status::Ok) {
        let Some(rb) = b.row(&ra.model, &ra.backend, &ra.units) else {
            continue;
        };
        let base = format!("{} {}:{}", ra.model, ra.backend, ra.units);
        if let (Some(la), Some(lb)) = (&ra.load, &rb.load) {
            push(
                &mut out,
                &base,
                "cold_load_ms",
                la.cold_load_ms,
                lb.cold_load_ms,
                false,
            );
        }
        if let (Some(la), Some(lb)) = (&ra.latency, &rb.latency) {
            if (la.batch, la.seq) == (lb.batch, lb.seq) {
                let key = format!("{base} b{}×s{}", la.batch, la.seq);
                push(
                    &mut out,
                    &key,
                    "latency_mean_ms",
                    la.mean_ms,
                    lb.mean_ms,
                    false,
                );
                push(
                    &mut out,
                    &key,
                    "latency_p50_ms",
                    la.p50_ms,
                    lb.p50_ms,
                    false,
                );
                push(
                    &mut out,
                    &key,
                    "latency_p95_ms",
                    la.p95_ms,
                    lb.p95_ms,
                    false,
                );
                push(
                    &mut out,
                    &key,
                    "weight_gb_s_anemll",
                    la.weight_gb_s_anemll,
                    lb.weight_gb_s_anemll,
                    true,
                );
            }
        }
        for pa in &ra.throughput {
            if let Some(pb) = rb
                .throughput
                .iter()
                .find(|p| (p.batch, p.seq) == (pa.batch, pa.seq))
            {
                let key = format!("{base} b{}×s{}", pa.batch, pa.seq);
                push(
                    &mut out,
                    &key,
                    "items_per_s",
                    pa.items_per_s,
                    pb.items_per_s,
                    true,
                );
                push(&mut out, &key, "gflops", pa.gflops, pb.gflops, true);
            }
        }
        for ca in &ra.concurrency {
            if let Some(cb) = rb
                .concurrency
                .iter()
                .find(|c| (c.instances, c.batch, c.seq) == (ca.instances, ca.batch, ca.seq))
            {
                let key = format!("{base} {}×b{}×s{}", ca.instances, ca.batch, ca.seq);
                push(
                    &mut out,
                    &key,
                    "aggregate_items_per_s",
                    ca.aggregate_items_per_s,
                    cb.aggregate_items_per_s,
                    true,
                );
                push(
                    &mut out,
                    &key,
                    "utilization_factor",
                    ca.utilization_factor,
                    cb.utilization_factor,
                    true,
                );
            }
        }
        if let (Some(sa), Some(sb)) = (&ra.soak, &rb.soak) {
            push(
                &mut out,
                &format!("{base} soak"),
                "mean_items_per_s",
                sa.mean_items_per_s,
                sb.mean_items_per_s,
                true,
            );
        }
    }
    for pa in a.precision.iter().filter(|p| p.status == Status::Ok) {
        if let Some(pb) = b
            .precision
            .iter()
            .find(|p| p.model == pa.model && p.status == Status::Ok)
        {
            let key = format!("{} fp16 vs fp32", pa.model);
            push(
                &mut out,
                &key,
                "cosine_mean",
                pa.cosine_mean,
                pb.cosine_mean,
                true,
            );
        }
    }
    out
}

/// A plain-text table of compared figures.
pub fn render(rows: &[CompareRow], a_name: &str, b_name: &str) -> String {
    let mut s = format!("ratios b / a   (a = {a_name}, b = {b_name})\n");
    let kw = rows.iter().map(|r| r.key.len()).max().unwrap_or(3).max(3);
    let mw = rows
        .iter()
        .map(|r| r.metric.len())
        .max()
        .unwrap_or(6)
        .max(6);
    s.push_str(&format!(
        "{:kw$}  {:mw$}  {:>12}  {:>12}  {:>8}\n",
        "row", "metric", "a", "b", "b/a"
    ));
    for r in rows {
        let ratio = r
            .ratio
            .map(|v| format!("{v:.3}"))
            .unwrap_or_else(|| "-".into());
        let better = match r.ratio {
            Some(v) if (v > 1.0) == r.higher_is_better && (v - 1.0).abs() > 0.02 => "  better",
            Some(v) if (v - 1.0).abs() > 0.02 => "  worse",
            _ => "",
        };
        s.push_str(&format!(
            "{:kw$}  {:mw$}  {:>12.3}  {:>12.3}  {:>8}{better}\n",
            r.key, r.metric, r.a, r.b, ratio
        ));
    }
    if rows.len() <= 1 {
        s.push_str("(no matching rows besides the machine peak)\n");
    }
    s
}
