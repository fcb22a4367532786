//! A self-contained HTML report with SVG charts drawn by plotters.

use plotters::prelude::*;

use crate::report::{BenchRow, Report, Status};
use crate::{BenchError, Result};

const W: u32 = 760;
const H: u32 = 360;

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

fn chart_err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Chart(e.to_string())
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A series of a bar chart: a name and one value per category.
pub type BarSeries = (String, Vec<Option<f64>>);

/// Grouped bars: one group per category, one bar per series; an optional
/// horizontal reference line (e.g. the machine's peak).
pub fn bar_chart(
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[BarSeries],
    hline: Option<(&str, f64)>,
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_err)?;
        let n = categories.len().max(1);
        let m = series.len().max(1);
        let mut ymax = series
            .iter()
            .flat_map(|s| s.1.iter().flatten())
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max);
        if let Some((_, v)) = hline {
            ymax = ymax.max(v);
        }
        let ymax = if ymax > 0.0 { ymax * 1.15 } else { 1.0 };
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..n as f64, 0f64..ymax)
            .map_err(chart_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(y_label)
            .draw()
            .map_err(chart_err)?;
        let slot = 0.8 / m as f64;
        for (j, (name, values)) in series.iter().enumerate() {
            let c = color(j);
            let bars = values.iter().enumerate().filter_map(move |(i, v)| {
                let v = (*v)?;
                let x0 = i as f64 + 0.1 + j as f64 * slot;
                Some(Rectangle::new(
                    [(x0, 0.0), (x0 + slot * 0.92, v.max(0.0))],
                    c.filled(),
                ))
            });
            chart
                .draw_series(bars)
                .map_err(chart_err)?
                .label(name.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
        }
        if let Some((name, v)) = hline {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(0.0, v), (n as f64, v)],
                    BLACK.stroke_width(2),
                )))
                .map_err(chart_err)?
                .label(name)
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 12, y)], BLACK.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(chart_err)?;
        // Category names under the groups.
        let style = ("sans-serif", 13).into_font().color(&BLACK);
        for (i, c) in categories.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            let shift = (c.len() as i32 * 3).min(60);
            root.draw(&Text::new(c.clone(), (px - shift, py + 8), style.clone()))
                .map_err(chart_err)?;
        }
        root.present().map_err(chart_err)?;
    }
    Ok(svg)
}

/// A series of a line chart: a name and its points.
pub type Line = (String, Vec<(f64, f64)>);

/// Lines with point markers over a numeric x axis.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Line]) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_err)?;
        let pts = series.iter().flat_map(|s| s.1.iter());
        let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
        for &(x, y) in pts {
            x0 = x0.min(x);
            x1 = x1.max(x);
            if y.is_finite() {
                y1 = y1.max(y);
            }
        }
        if !x0.is_finite() || !x1.is_finite() {
            (x0, x1) = (0.0, 1.0);
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        let y1 = if y1 > 0.0 { y1 * 1.15 } else { 1.0 };
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, 0f64..y1)
            .map_err(chart_err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()
            .map_err(chart_err)?;
        for (j, (name, points)) in series.iter().enumerate() {
            let c = color(j);
            chart
                .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))
                .map_err(chart_err)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 12, y)], c.stroke_width(2))
                });
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(chart_err)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(chart_err)?;
        root.present().map_err(chart_err)?;
    }
    Ok(svg)
}

fn row_name(r: &BenchRow) -> String {
    format!("{} ({}:{})", r.model, r.backend, r.units)
}

fn ok_rows(report: &Report) -> Vec<&BenchRow> {
    report
        .rows
        .iter()
        .filter(|r| r.status == Status::Ok)
        .collect()
}

fn figure(id: &str, caption: &str, svg: &str) -> String {
    format!(
        "<figure id=\"{id}\">\n{svg}\n<figcaption>{}</figcaption>\n</figure>\n",
        esc(caption)
    )
}

/// Every chart of the report, as `(id, caption, svg)`.
pub fn charts(report: &Report) -> Result<Vec<(String, String, String)>> {
    let rows = ok_rows(report);
    let mut out = Vec::new();

    // Latency percentiles per model.
    let cats: Vec<String> = rows.iter().map(|r| row_name(r)).collect();
    let pick = |f: fn(&crate::report::Latency) -> f64| -> Vec<Option<f64>> {
        rows.iter().map(|r| r.latency.as_ref().map(f)).collect()
    };
    let lat_shape = format!(
        "b{}×s{}",
        report.config.latency_batch, report.config.latency_seq
    );
    out.push((
        "chart-latency".into(),
        format!("Warm latency at {lat_shape}: p50, p95, p99 (ms, lower is better)"),
        bar_chart(
            &format!("Warm latency, {lat_shape}"),
            "ms",
            &cats,
            &[
                ("p50".into(), pick(|l| l.p50_ms)),
                ("p95".into(), pick(|l| l.p95_ms)),
                ("p99".into(), pick(|l| l.p99_ms)),
            ],
            None,
        )?,
    ));

    // Throughput and GFLOP/s per grid cell.
    let mut cells: Vec<(usize, usize)> = rows
        .iter()
        .flat_map(|r| r.throughput.iter().map(|p| (p.seq, p.batch)))
        .collect();
    cells.sort_unstable();
    cells.dedup();
    let cell_names: Vec<String> = cells.iter().map(|(s, b)| format!("b{b}×s{s}")).collect();
    let per_cell = |f: fn(&crate::report::ThroughputPoint) -> f64| -> Vec<BarSeries> {
        rows.iter()
            .map(|r| {
                let v = cells
                    .iter()
                    .map(|&(s, b)| {
                        r.throughput
                            .iter()
                            .find(|p| (p.seq, p.batch) == (s, b))
                            .map(f)
                    })
                    .collect();
                (row_name(r), v)
            })
            .collect()
    };
    out.push((
        "chart-throughput".into(),
        "Throughput per batch × sequence cell (sequences per second, higher is better)".into(),
        bar_chart(
            "Throughput",
            "sequences/s",
            &cell_names,
            &per_cell(|p| p.items_per_s),
            None,
        )?,
    ));
    out.push((
        "chart-gflops".into(),
        format!(
            "Achieved GFLOP/s (analytic FLOPs / time) against this machine's measured FMA peak \
             ({:.1} GFLOP/s, {} threads, {})",
            report.peak.gflops_all_threads, report.peak.threads, report.peak.isa
        ),
        bar_chart(
            "Achieved GFLOP/s vs FMA peak",
            "GFLOP/s",
            &cell_names,
            &per_cell(|p| p.gflops),
            Some(("FMA peak", report.peak.gflops_all_threads)),
        )?,
    ));

    // Concurrency.
    let conc: Vec<&&BenchRow> = rows.iter().filter(|r| !r.concurrency.is_empty()).collect();
    let agg: Vec<Line> = conc
        .iter()
        .map(|r| {
            (
                row_name(r),
                r.concurrency
                    .iter()
                    .map(|c| (c.instances as f64, c.aggregate_items_per_s))
                    .collect(),
            )
        })
        .collect();
    out.push((
        "chart-concurrency".into(),
        format!(
            "Aggregate throughput with N instances at once (b{}×s{}, one thread each)",
            report.config.concurrency_batch, report.config.concurrency_seq
        ),
        line_chart(
            "Aggregate throughput vs instances",
            "instances",
            "sequences/s",
            &agg,
        )?,
    ));
    let util: Vec<Line> = conc
        .iter()
        .map(|r| {
            (
                row_name(r),
                r.concurrency
                    .iter()
                    .map(|c| (c.instances as f64, c.utilization_factor))
                    .collect(),
            )
        })
        .collect();
    out.push((
        "chart-utilization".into(),
        "Utilization factor: aggregate / (N × single-instance throughput), as ANEMLL's \
         dual-model test reports it (1 = perfect scaling)"
            .into(),
        line_chart("Utilization factor", "instances", "factor", &util)?,
    ));

    // Soak.
    let soak: Vec<Line> = rows
        .iter()
        .filter_map(|r| {
            let s = r.soak.as_ref()?;
            Some((
                row_name(r),
                s.windows
                    .iter()
                    .map(|w| (w.start_s, w.items_per_s))
                    .collect(),
            ))
        })
        .collect();
    if !soak.is_empty() {
        out.push((
            "chart-soak".into(),
            "Soak: throughput per window over time".into(),
            line_chart("Soak", "seconds", "sequences/s", &soak)?,
        ));
    }
    Ok(out)
}

fn f(v: f64, digits: usize) -> String {
    format!("{v:.digits$}")
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| f(x, digits)).unwrap_or_else(|| "–".into())
}

fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<table>\n<tr>");
    for h in head {
        s.push_str(&format!("<th>{}</th>", esc(h)));
    }
    s.push_str("</tr>\n");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            s.push_str(&format!("<td>{}</td>", esc(c)));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");
    s
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,sans-serif;margin:2em auto;\
max-width:1100px;color:#222}table{border-collapse:collapse;margin:0.5em 0 1.5em}\
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}\
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}\
figure{margin:1em 0}figcaption{font-size:13px;color:#555}.note{color:#a60}";

/// Renders the whole report as one HTML file (inline CSS and SVG, no scripts).
pub fn render(report: &Report) -> Result<String> {
    let sys = &report.system;
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
    h.push_str("<title>anectx bench report</title>\n");
    h.push_str(&format!("<style>{STYLE}</style></head><body>\n"));
    h.push_str(&format!(
        "<h1>anectx bench</h1>\n<p>{} · anectx {} · schema {} · {} mode · {:.1} s</p>\n",
        esc(&report.created_utc),
        esc(&report.anectx_version),
        report.schema_version,
        if report.config.quick { "quick" } else { "full" },
        report.duration_s
    ));
    for n in &report.notes {
        h.push_str(&format!("<p class=\"note\">{}</p>\n", esc(n)));
    }

    h.push_str("<h2>System</h2>\n");
    let gib = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
    h.push_str(&table(
        &["field", "value"],
        &[
            vec![
                "CPU / chip".into(),
                sys.cpu_model.clone().unwrap_or_default(),
            ],
            vec![
                "cores".into(),
                format!(
                    "{} logical, {} physical",
                    sys.logical_cores,
                    sys.physical_cores
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "?".into())
                ),
            ],
            vec![
                "memory".into(),
                sys.memory_bytes.map(gib).unwrap_or_default(),
            ],
            vec![
                "OS".into(),
                format!(
                    "{} {} ({})",
                    sys.os,
                    sys.os_version.clone().unwrap_or_default(),
                    sys.kernel.clone().unwrap_or_default()
                ),
            ],
            vec![
                "load average at start".into(),
                sys.load_average
                    .map(|l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]))
                    .unwrap_or_default(),
            ],
            vec![
                "candle".into(),
                format!(
                    "{} ({} threads; {})",
                    sys.candle_version,
                    sys.candle_threads,
                    sys.candle_features.join(", ")
                ),
            ],
            vec!["rustc".into(), sys.rustc_version.clone()],
            vec!["build".into(), sys.build_profile.clone()],
            vec![
                "FMA peak".into(),
                format!(
                    "{:.1} GFLOP/s on {} threads, {:.1} on one ({}, {} f32 lanes)",
                    report.peak.gflops_all_threads,
                    report.peak.threads,
                    report.peak.gflops_one_thread,
                    report.peak.isa,
                    report.peak.simd_lanes
                ),
            ],
        ],
    ));

    h.push_str("<h2>Models</h2>\n");
    let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
    h.push_str(&table(
        &[
            "id",
            "model",
            "role",
            "weights",
            "parameters",
            "graph weights (f32)",
            "lookup tables (f32)",
        ],
        &report
            .models
            .iter()
            .map(|m| {
                vec![
                    m.id.clone(),
                    m.label.clone(),
                    format!("{:?}", m.role).to_lowercase(),
                    match &m.note {
                        Some(n) => n.clone(),
                        None => m.weights.clone(),
                    },
                    format!("{:.2} M", m.parameters as f64 / 1e6),
                    mb(m.graph_weight_bytes),
                    mb(m.embedding_table_bytes),
                ]
            })
            .collect::<Vec<_>>(),
    ));

    h.push_str("<h2>Headlines</h2>\n");
    h.push_str(&table(
        &["model", "metric", "at", "value"],
        &report
            .summary
            .headlines
            .iter()
            .map(|x| {
                vec![
                    x.model.clone(),
                    x.metric.clone(),
                    x.at.clone(),
                    f(x.value, 3),
                ]
            })
            .collect::<Vec<_>>(),
    ));

    h.push_str("<h2>Load and latency</h2>\n");
    h.push_str(
        "<p>Weight GB/s is computed the ANEMLL way: weight bytes / mean latency \
         (graph weights in f32 on candle; the package's weight files on Core ML). \
         Speed-up = reference mean / this mean.</p>\n",
    );
    h.push_str(&table(
        &[
            "model",
            "backend:units",
            "status",
            "cold load ms",
            "first call ms",
            "mean ms",
            "p50",
            "p95",
            "p99",
            "weight GB/s (ANEMLL way)",
            "GFLOP/s",
            "× reference",
        ],
        &report
            .rows
            .iter()
            .map(|r| {
                let l = r.latency.as_ref();
                vec![
                    r.model.clone(),
                    format!("{}:{}", r.backend, r.units),
                    match r.status {
                        Status::Ok => "ok".into(),
                        _ => r.message.clone().unwrap_or_default(),
                    },
                    opt(r.load.as_ref().map(|x| x.cold_load_ms), 1),
                    opt(r.load.as_ref().map(|x| x.first_call_ms), 1),
                    opt(l.map(|x| x.mean_ms), 2),
                    opt(l.map(|x| x.p50_ms), 2),
                    opt(l.map(|x| x.p95_ms), 2),
                    opt(l.map(|x| x.p99_ms), 2),
                    opt(l.map(|x| x.weight_gb_s_anemll), 2),
                    opt(l.map(|x| x.gflops), 1),
                    opt(l.and_then(|x| x.speedup_vs_reference), 2),
                ]
            })
            .collect::<Vec<_>>(),
    ));

    h.push_str("<h2>Throughput</h2>\n");
    let mut tp = Vec::new();
    for r in ok_rows(report) {
        for p in &r.throughput {
            tp.push(vec![
                row_name(r),
                format!("b{}×s{}", p.batch, p.seq),
                p.runs.to_string(),
                f(p.mean_ms, 2),
                f(p.items_per_s, 1),
                f(p.tokens_per_s, 0),
                f(p.gflops, 1),
                format!("{:.1} %", p.peak_fraction * 100.0),
                opt(p.ratio_vs_reference, 2),
            ]);
        }
    }
    h.push_str(&table(
        &[
            "model",
            "cell",
            "runs",
            "mean ms",
            "sequences/s",
            "tokens/s",
            "GFLOP/s",
            "of peak",
            "× reference",
        ],
        &tp,
    ));

    h.push_str("<h2>Concurrency</h2>\n");
    let mut cc = Vec::new();
    for r in ok_rows(report) {
        for c in &r.concurrency {
            cc.push(vec![
                row_name(r),
                c.instances.to_string(),
                c.calls.to_string(),
                f(c.latency_p50_ms, 2),
                f(c.latency_p95_ms, 2),
                f(c.aggregate_items_per_s, 1),
                f(c.aggregate_weight_gb_s, 2),
                f(c.utilization_factor, 3),
            ]);
        }
    }
    h.push_str(&table(
        &[
            "model",
            "instances",
            "calls",
            "p50 ms",
            "p95 ms",
            "aggregate sequences/s",
            "combined GB/s",
            "utilization factor",
        ],
        &cc,
    ));

    let soaks: Vec<Vec<String>> = ok_rows(report)
        .iter()
        .filter_map(|r| {
            let s = r.soak.as_ref()?;
            Some(vec![
                row_name(r),
                format!("b{}×s{}", s.batch, s.seq),
                f(s.duration_s, 1),
                s.windows.len().to_string(),
                f(s.mean_items_per_s, 1),
                format!("{:+.2} %", s.drift_pct),
                format!("{:+.2} %/min", s.slope_pct_per_min),
                f(s.min_over_max, 3),
            ])
        })
        .collect();
    if !soaks.is_empty() {
        h.push_str("<h2>Soak</h2>\n");
        h.push_str(&table(
            &[
                "model",
                "shape",
                "seconds",
                "windows",
                "mean sequences/s",
                "drift (last vs first)",
                "slope",
                "min / max",
            ],
            &soaks,
        ));
    }

    h.push_str("<h2>Precision: fp16 against fp32</h2>\n");
    h.push_str(&table(
        &[
            "model",
            "status",
            "inputs",
            "texts",
            "seq",
            "cosine mean",
            "cosine min",
            "PSNR dB",
            "f32 ms",
            "f16 ms",
            "nDCG@10 f32",
            "nDCG@10 f16",
            "Δ nDCG@10",
        ],
        &report
            .precision
            .iter()
            .map(|p| {
                let e = p.eval.as_ref();
                vec![
                    p.model.clone(),
                    match p.status {
                        Status::Ok => p.message.clone().unwrap_or_else(|| "ok".into()),
                        _ => p.message.clone().unwrap_or_default(),
                    },
                    p.inputs.clone(),
                    p.texts.to_string(),
                    p.seq.to_string(),
                    f(p.cosine_mean, 6),
                    f(p.cosine_min, 6),
                    opt(p.psnr_db, 1),
                    f(p.f32_ms, 1),
                    f(p.f16_ms, 1),
                    opt(e.map(|x| x.ndcg10_f32), 4),
                    opt(e.map(|x| x.ndcg10_f16), 4),
                    opt(e.map(|x| x.ndcg10_delta), 4),
                ]
            })
            .collect::<Vec<_>>(),
    ));

    h.push_str("<h2>Charts</h2>\n");
    for (id, caption, svg) in charts(report)? {
        h.push_str(&figure(&id, &caption, &svg));
    }
    h.push_str("</body></html>\n");
    Ok(h)
}
