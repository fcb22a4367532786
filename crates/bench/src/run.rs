//! The measurements and the run that strings them together.

use std::path::PathBuf;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anectx_core::ComputeUnits;
use anectx_models::WeightDtype;

use crate::models::{
    load_coreml, BackendKind, Inputs, LoadedModel, ModelSpec, Target, RANDOM_NOTE,
};
use crate::report::*;
use crate::stats::{finite, slope, summarize};
use crate::{peak, precision, system, Result};

/// What to measure and for how long.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub quick: bool,
    pub warmup: usize,
    pub runs: usize,
    pub latency_batch: usize,
    pub latency_seq: usize,
    pub batch_sizes: Vec<usize>,
    pub seq_lens: Vec<usize>,
    pub throughput_min_runs: usize,
    pub throughput_min_s: f64,
    pub concurrency: Vec<usize>,
    pub concurrency_batch: usize,
    pub concurrency_seq: usize,
    pub concurrency_s: f64,
    pub soak_s: f64,
    pub soak_window_s: f64,
    pub soak_batch: usize,
    pub soak_seq: usize,
    pub targets: Vec<Target>,
    pub eval_dir: Option<PathBuf>,
    pub eval_docs: usize,
    pub eval_queries: usize,
    pub eval_seq: usize,
    /// Texts (or synthetic sequences) of the fp16-vs-fp32 comparison.
    pub precision_texts: usize,
    pub peak_threads: usize,
    pub peak_run_s: f64,
    pub peak_repeats: usize,
}

impl BenchOptions {
    /// The full run: ANEMLL's 5 warm-up calls, 100 timed calls, a 3×3
    /// throughput grid, 1/2/4/6 instances, a 30 s soak per model.
    pub fn full() -> Self {
        Self {
            quick: false,
            warmup: 5,
            runs: 100,
            latency_batch: 1,
            latency_seq: 128,
            batch_sizes: vec![1, 8, 32],
            seq_lens: vec![32, 128, 256],
            throughput_min_runs: 3,
            throughput_min_s: 1.0,
            concurrency: vec![1, 2, 4, 6],
            concurrency_batch: 1,
            concurrency_seq: 128,
            concurrency_s: 3.0,
            soak_s: 30.0,
            soak_window_s: 2.0,
            soak_batch: 8,
            soak_seq: 128,
            targets: vec![Target::CANDLE_CPU],
            eval_dir: None,
            eval_docs: 1000,
            eval_queries: 200,
            eval_seq: 256,
            precision_texts: 16,
            peak_threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            peak_run_s: 0.5,
            peak_repeats: 3,
        }
    }

    /// A run that finishes in well under a minute on two cores.
    pub fn quick() -> Self {
        Self {
            quick: true,
            warmup: 2,
            runs: 12,
            batch_sizes: vec![1, 8],
            seq_lens: vec![32, 128],
            throughput_min_runs: 2,
            throughput_min_s: 0.2,
            concurrency_seq: 32,
            concurrency_s: 0.4,
            soak_s: 2.0,
            soak_window_s: 0.25,
            soak_batch: 4,
            soak_seq: 32,
            eval_docs: 200,
            eval_queries: 50,
            eval_seq: 128,
            precision_texts: 8,
            peak_run_s: 0.15,
            peak_repeats: 2,
            ..Self::full()
        }
    }

    fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(crate::BenchError::Config(m.into()));
        if self.runs == 0 {
            return bad("runs must be at least 1");
        }
        if self.latency_batch == 0 || self.latency_seq == 0 {
            return bad("the latency shape must be positive");
        }
        if self.batch_sizes.is_empty() || self.batch_sizes.contains(&0) {
            return bad("batch sizes must be positive");
        }
        if self.seq_lens.is_empty() || self.seq_lens.contains(&0) {
            return bad("sequence lengths must be positive");
        }
        if self.concurrency.contains(&0) {
            return bad("concurrency levels must be positive");
        }
        if self.targets.is_empty() {
            return bad("no backend/units selected");
        }
        if !(self.soak_s >= 0.0 && self.soak_window_s > 0.0 && self.concurrency_s >= 0.0) {
            return bad("soak and concurrency durations must be non-negative");
        }
        Ok(())
    }

    fn config(&self) -> RunConfig {
        RunConfig {
            quick: self.quick,
            warmup: self.warmup,
            runs: self.runs,
            latency_batch: self.latency_batch,
            latency_seq: self.latency_seq,
            batch_sizes: self.batch_sizes.clone(),
            seq_lens: self.seq_lens.clone(),
            throughput_min_runs: self.throughput_min_runs,
            throughput_min_s: self.throughput_min_s,
            concurrency: self.concurrency.clone(),
            concurrency_batch: self.concurrency_batch,
            concurrency_seq: self.concurrency_seq,
            concurrency_s: self.concurrency_s,
            soak_s: self.soak_s,
            soak_window_s: self.soak_window_s,
            soak_batch: self.soak_batch,
            soak_seq: self.soak_seq,
            targets: self.targets.iter().map(Target::label).collect(),
            eval_dir: self.eval_dir.as_ref().map(|p| p.display().to_string()),
            eval_docs: self.eval_docs,
            eval_queries: self.eval_queries,
            eval_seq: self.eval_seq,
        }
    }
}

/// Where progress goes (the CLI draws a progress bar on stderr).
pub trait Progress: Sync {
    /// Step `step` of `total` starts.
    fn stage(&self, step: usize, total: usize, message: &str);
    /// Something the user should see (a skipped row, a failure).
    fn note(&self, message: &str);
}

/// Progress that goes nowhere.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn stage(&self, _: usize, _: usize, _: &str) {}
    fn note(&self, _: &str) {}
}

struct Steps<'a> {
    done: usize,
    total: usize,
    progress: &'a dyn Progress,
}

impl Steps<'_> {
    fn next(&mut self, msg: &str) {
        self.done += 1;
        self.progress
            .stage(self.done.min(self.total), self.total, msg);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn time_call(m: &LoadedModel, x: &Inputs) -> Result<f64> {
    let t = Instant::now();
    std::hint::black_box(m.net.run(x)?);
    Ok(ms(t.elapsed()))
}

/// Runs the benchmark over `models` (the reference among them) on every
/// target of `opts`.
pub fn run(models: &[ModelSpec], opts: &BenchOptions, progress: &dyn Progress) -> Result<Report> {
    opts.check()?;
    if models.is_empty() {
        return Err(crate::BenchError::Config("no models to benchmark".into()));
    }
    let started = Instant::now();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let system = system::collect();
    let mut notes = Vec::new();
    if let Some(l) = system.load_average {
        if l[0] > system.logical_cores as f64 * 0.5 {
            notes.push(format!(
                "the machine was busy when the run started (load average {:.2} on {} logical \
                 cores): absolute figures are pessimistic; ratios taken in the same run are \
                 more trustworthy",
                l[0], system.logical_cores
            ));
        }
    }
    if system.build_profile == "debug" {
        notes.push("debug build of the bench crate: use --release for real figures".into());
    }

    let per_target = 4 + usize::from(opts.soak_s > 0.0);
    let total = 1 + models.len() * opts.targets.len() * per_target + models.len();
    let mut steps = Steps {
        done: 0,
        total,
        progress,
    };

    steps.next("measuring the FMA peak");
    let peak = peak::measure(
        opts.peak_threads,
        Duration::from_secs_f64(opts.peak_run_s),
        opts.peak_repeats,
    );

    let mut entries = Vec::new();
    let mut rows = Vec::new();
    for spec in models {
        let mut meta = None;
        for target in &opts.targets {
            let row = bench_target(spec, *target, opts, &peak, &mut steps, &mut meta);
            if row.status != Status::Ok {
                let msg = format!(
                    "{} on {}: {}",
                    spec.id,
                    target.label(),
                    row.message.as_deref().unwrap_or("failed")
                );
                progress.note(&msg);
            }
            rows.push(row);
        }
        if meta.is_none() {
            // Every target failed or was skipped: still describe the model.
            meta = spec.load(WeightDtype::F32).ok().map(|m| m.meta);
        }
        entries.push(model_entry(spec, meta.as_ref()));
    }

    let mut precision_rows = Vec::new();
    for spec in models {
        steps.next(&format!("{}: fp16 vs fp32", spec.id));
        let row = precision::compare_dtypes(spec, opts);
        if row.status != Status::Ok {
            progress.note(&format!(
                "{} precision: {}",
                spec.id,
                row.message.as_deref().unwrap_or("failed")
            ));
        }
        precision_rows.push(row);
    }

    for e in &entries {
        if let Some(n) = &e.note {
            notes.push(format!("{}: {n}", e.label));
        }
    }
    let mut report = Report {
        schema_version: SCHEMA_VERSION,
        tool: "anectx-bench".into(),
        anectx_version: env!("CARGO_PKG_VERSION").into(),
        created_unix_s: now,
        created_utc: utc_string(now),
        duration_s: started.elapsed().as_secs_f64(),
        config: opts.config(),
        system,
        peak,
        models: entries,
        rows,
        precision: precision_rows,
        summary: Summary::default(),
        notes,
    };
    fill_reference_ratios(&mut report);
    report.summary = summarize_report(&report);
    Ok(report)
}

fn model_entry(spec: &ModelSpec, meta: Option<&crate::models::ModelMeta>) -> ModelEntry {
    let random = spec.source.is_random();
    ModelEntry {
        id: spec.id.clone(),
        label: spec.label.clone(),
        role: spec.role(),
        kind: meta.map(|m| m.kind).unwrap_or("unknown").to_string(),
        source: spec.source_label(),
        weights: if random { "random" } else { "pretrained" }.into(),
        note: random.then(|| RANDOM_NOTE.to_string()),
        parameters: meta.map(|m| m.parameters).unwrap_or(0),
        graph_weight_bytes: meta.map(|m| m.graph_weight_bytes).unwrap_or(0),
        embedding_table_bytes: meta.map(|m| m.embedding_table_bytes).unwrap_or(0),
        architecture: meta
            .map(|m| m.arch.to_json())
            .unwrap_or(serde_json::Value::Null),
    }
}

fn empty_row(spec: &ModelSpec, target: Target, status: Status, message: String) -> BenchRow {
    BenchRow {
        model: spec.id.clone(),
        backend: target.backend.name().into(),
        units: target.units.short_name().into(),
        dtype: "f32".into(),
        status,
        message: Some(message),
        load: None,
        latency: None,
        throughput: Vec::new(),
        concurrency: Vec::new(),
        soak: None,
    }
}

/// Every sequence length the run feeds a model (Core ML exports them all).
fn all_seqs(opts: &BenchOptions) -> Vec<usize> {
    let mut v = opts.seq_lens.clone();
    v.extend([opts.latency_seq, opts.concurrency_seq, opts.soak_seq]);
    v.sort_unstable();
    v.dedup();
    v
}

fn load_for(spec: &ModelSpec, target: Target, opts: &BenchOptions) -> Result<(LoadedModel, u64)> {
    match target.backend {
        BackendKind::Candle => {
            if target.units != ComputeUnits::CpuOnly {
                return Err(crate::BenchError::Other(format!(
                    "skipped: candle runs on the CPU only (asked for {})",
                    target.units.short_name()
                )));
            }
            let m = spec.load(WeightDtype::F32)?;
            let bytes = m.meta.graph_weight_bytes;
            Ok((m, bytes))
        }
        BackendKind::CoreMl => load_coreml(spec, target.units, &all_seqs(opts)),
    }
}

fn bench_target(
    spec: &ModelSpec,
    target: Target,
    opts: &BenchOptions,
    peak: &PeakInfo,
    steps: &mut Steps,
    meta_out: &mut Option<crate::models::ModelMeta>,
) -> BenchRow {
    let per_target = 4 + usize::from(opts.soak_s > 0.0);
    let label = format!("{} on {}", spec.id, target.label());
    let base = steps.done;
    steps.next(&format!("{label}: loading"));
    let (model, weight_bytes) = match load_for(spec, target, opts) {
        Ok(m) => m,
        Err(e) => {
            steps.done = base + per_target;
            let msg = e.to_string();
            let status = if msg.starts_with("skipped") {
                Status::Skipped
            } else {
                Status::Failed
            };
            return empty_row(spec, target, status, msg);
        }
    };
    *meta_out = Some(model.meta.clone());
    match measure_loaded(spec, target, opts, peak, steps, &model, weight_bytes) {
        Ok(row) => row,
        Err(e) => {
            steps.done = base + per_target;
            empty_row(spec, target, Status::Failed, e.to_string())
        }
    }
}

fn measure_loaded(
    spec: &ModelSpec,
    target: Target,
    opts: &BenchOptions,
    peak: &PeakInfo,
    steps: &mut Steps,
    model: &LoadedModel,
    weight_bytes: u64,
) -> Result<BenchRow> {
    let label = format!("{} on {}", spec.id, target.label());
    let vocab = model.meta.vocab;
    let lat_x = Inputs::synthetic(opts.latency_batch, opts.latency_seq, vocab, 11)?;
    let first_call_ms = time_call(model, &lat_x)?;
    let load = LoadTiming {
        cold_load_ms: model.load_ms,
        first_call_ms,
    };

    // Warm latency.
    steps.next(&format!("{label}: latency"));
    for _ in 0..opts.warmup {
        time_call(model, &lat_x)?;
    }
    let samples = (0..opts.runs)
        .map(|_| time_call(model, &lat_x))
        .collect::<Result<Vec<f64>>>()?;
    let s = summarize(&samples);
    let flops = model.meta.arch.flops(opts.latency_batch, opts.latency_seq);
    let latency = Latency {
        batch: opts.latency_batch,
        seq: opts.latency_seq,
        warmup: opts.warmup,
        runs: opts.runs,
        mean_ms: s.mean,
        p50_ms: s.p50,
        p95_ms: s.p95,
        p99_ms: s.p99,
        min_ms: s.min,
        max_ms: s.max,
        stddev_ms: s.stddev,
        weight_bytes,
        weight_gb_s_anemll: weight_bytes as f64 / 1e9 / (s.mean / 1e3),
        gflops: flops / 1e9 / (s.mean / 1e3),
        speedup_vs_reference: None,
    };

    // Throughput grid.
    steps.next(&format!("{label}: throughput"));
    let mut throughput = Vec::new();
    for &seq in &opts.seq_lens {
        for &batch in &opts.batch_sizes {
            let x = Inputs::synthetic(batch, seq, vocab, 13)?;
            time_call(model, &x)?;
            let start = Instant::now();
            let mut t = Vec::new();
            while t.len() < opts.throughput_min_runs.max(1)
                || start.elapsed().as_secs_f64() < opts.throughput_min_s
            {
                t.push(time_call(model, &x)?);
            }
            let mean = t.iter().sum::<f64>() / t.len() as f64;
            let flops = model.meta.arch.flops(batch, seq);
            let gflops = flops / 1e9 / (mean / 1e3);
            throughput.push(ThroughputPoint {
                batch,
                seq,
                runs: t.len(),
                mean_ms: mean,
                items_per_s: batch as f64 / (mean / 1e3),
                tokens_per_s: (batch * seq) as f64 / (mean / 1e3),
                flops_per_call: flops,
                gflops,
                peak_fraction: gflops / peak.gflops_all_threads.max(1e-9),
                ratio_vs_reference: None,
            });
        }
    }

    // Concurrency.
    steps.next(&format!("{label}: concurrency"));
    let concurrency = concurrency(spec, target, opts, vocab, weight_bytes)?;

    // Soak.
    let soak = if opts.soak_s > 0.0 {
        steps.next(&format!("{label}: soak {:.0} s", opts.soak_s));
        Some(soak(model, opts, vocab)?)
    } else {
        None
    };

    Ok(BenchRow {
        model: spec.id.clone(),
        backend: target.backend.name().into(),
        units: target.units.short_name().into(),
        dtype: "f32".into(),
        status: Status::Ok,
        message: None,
        load: Some(load),
        latency: Some(latency),
        throughput,
        concurrency,
        soak,
    })
}

struct InstanceRun {
    start: Instant,
    end: Instant,
    latencies_ms: Vec<f64>,
}

fn concurrency(
    spec: &ModelSpec,
    target: Target,
    opts: &BenchOptions,
    vocab: usize,
    weight_bytes: u64,
) -> Result<Vec<ConcurrencyPoint>> {
    let mut levels = opts.concurrency.clone();
    if levels.is_empty() {
        return Ok(Vec::new());
    }
    if !levels.contains(&1) {
        levels.push(1);
    }
    levels.sort_unstable();
    levels.dedup();
    let (batch, seq) = (opts.concurrency_batch, opts.concurrency_seq);
    let x = Inputs::synthetic(batch, seq, vocab, 17)?;
    let duration = Duration::from_secs_f64(opts.concurrency_s);
    let mut points: Vec<ConcurrencyPoint> = Vec::new();
    let mut solo = 0.0;
    for &n in &levels {
        let barrier = Barrier::new(n);
        let runs: Vec<Result<InstanceRun>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|_| {
                    let (barrier, x) = (&barrier, &x);
                    s.spawn(move || -> Result<InstanceRun> {
                        // Each thread loads its own instance before the common start.
                        let loaded = load_for(spec, target, opts).map(|m| m.0);
                        barrier.wait();
                        let m = loaded?;
                        time_call(&m, x)?;
                        let start = Instant::now();
                        let mut lat = Vec::new();
                        while lat.len() < 2 || start.elapsed() < duration {
                            lat.push(time_call(&m, x)?);
                        }
                        Ok(InstanceRun {
                            start,
                            end: Instant::now(),
                            latencies_ms: lat,
                        })
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(crate::BenchError::Other(
                            "a benchmark thread panicked".into(),
                        ))
                    })
                })
                .collect()
        });
        let runs = runs.into_iter().collect::<Result<Vec<_>>>()?;
        let first = runs.iter().map(|r| r.start).min();
        let last = runs.iter().map(|r| r.end).max();
        let wall = match (first, last) {
            (Some(a), Some(b)) => (b - a).as_secs_f64().max(1e-9),
            _ => continue,
        };
        let all: Vec<f64> = runs.iter().flat_map(|r| r.latencies_ms.clone()).collect();
        let calls = all.len();
        let s = summarize(&all);
        let agg = (calls * batch) as f64 / wall;
        if n == 1 {
            solo = agg;
        }
        points.push(ConcurrencyPoint {
            instances: n,
            batch,
            seq,
            calls,
            wall_s: wall,
            latency_mean_ms: s.mean,
            latency_p50_ms: s.p50,
            latency_p95_ms: s.p95,
            aggregate_items_per_s: agg,
            aggregate_weight_gb_s: weight_bytes as f64 * calls as f64 / wall / 1e9,
            utilization_factor: if solo > 0.0 {
                agg / (n as f64 * solo)
            } else {
                0.0
            },
        });
    }
    Ok(points)
}

fn soak(model: &LoadedModel, opts: &BenchOptions, vocab: usize) -> Result<Soak> {
    let (batch, seq) = (opts.soak_batch, opts.soak_seq);
    let x = Inputs::synthetic(batch, seq, vocab, 19)?;
    time_call(model, &x)?;
    let total = Duration::from_secs_f64(opts.soak_s);
    let window = Duration::from_secs_f64(opts.soak_window_s);
    let start = Instant::now();
    let mut windows = Vec::new();
    while start.elapsed() < total || windows.is_empty() {
        let w0 = Instant::now();
        let mut calls = 0usize;
        while calls == 0 || w0.elapsed() < window {
            time_call(model, &x)?;
            calls += 1;
        }
        let secs = w0.elapsed().as_secs_f64();
        windows.push(SoakWindow {
            start_s: (w0 - start).as_secs_f64(),
            calls,
            items_per_s: (calls * batch) as f64 / secs,
        });
    }
    let n = windows.len() as f64;
    let mean = windows.iter().map(|w| w.items_per_s).sum::<f64>() / n;
    let first = windows.first().map(|w| w.items_per_s).unwrap_or(0.0);
    let last = windows.last().map(|w| w.items_per_s).unwrap_or(0.0);
    let max = windows.iter().map(|w| w.items_per_s).fold(0.0, f64::max);
    let min = windows
        .iter()
        .map(|w| w.items_per_s)
        .fold(f64::INFINITY, f64::min);
    let pts: Vec<(f64, f64)> = windows.iter().map(|w| (w.start_s, w.items_per_s)).collect();
    Ok(Soak {
        batch,
        seq,
        duration_s: start.elapsed().as_secs_f64(),
        window_s: opts.soak_window_s,
        mean_items_per_s: mean,
        drift_pct: if first > 0.0 {
            (last - first) / first * 100.0
        } else {
            0.0
        },
        slope_pct_per_min: if mean > 0.0 {
            slope(&pts) * 60.0 / mean * 100.0
        } else {
            0.0
        },
        min_over_max: if max > 0.0 { min / max } else { 0.0 },
        windows,
    })
}

/// Fills `speedup_vs_reference` and `ratio_vs_reference` from the
/// reference's candle CPU row.
pub fn fill_reference_ratios(report: &mut Report) {
    let Some(ref_id) = report.reference_id().map(str::to_string) else {
        return;
    };
    let Some(reference) = report
        .rows
        .iter()
        .find(|r| r.model == ref_id && r.status == Status::Ok)
        .cloned()
    else {
        return;
    };
    for row in report.rows.iter_mut().filter(|r| r.status == Status::Ok) {
        if let (Some(l), Some(rl)) = (row.latency.as_mut(), reference.latency.as_ref()) {
            if (l.batch, l.seq) == (rl.batch, rl.seq) && l.mean_ms > 0.0 {
                l.speedup_vs_reference = finite(rl.mean_ms / l.mean_ms);
            }
        }
        for p in &mut row.throughput {
            p.ratio_vs_reference = reference
                .throughput
                .iter()
                .find(|q| (q.batch, q.seq) == (p.batch, p.seq))
                .and_then(|q| finite(p.items_per_s / q.items_per_s));
        }
    }
}

/// The headline figures: ratios against the reference, GFLOP/s against the
/// peak and utilization factors.
pub fn summarize_report(report: &Report) -> Summary {
    let mut h = Vec::new();
    for row in report.rows.iter().filter(|r| r.status == Status::Ok) {
        let model = format!("{} ({}:{})", row.model, row.backend, row.units);
        if let Some(l) = &row.latency {
            if let Some(v) = l.speedup_vs_reference {
                h.push(Headline {
                    model: model.clone(),
                    metric: "latency_speedup_vs_reference".into(),
                    at: format!("b{}×s{}", l.batch, l.seq),
                    value: v,
                });
            }
            h.push(Headline {
                model: model.clone(),
                metric: "weight_gb_s_anemll".into(),
                at: format!("b{}×s{}", l.batch, l.seq),
                value: l.weight_gb_s_anemll,
            });
        }
        if let Some(p) = row
            .throughput
            .iter()
            .max_by_key(|p| (p.batch * p.seq, p.batch))
        {
            if let Some(v) = p.ratio_vs_reference {
                h.push(Headline {
                    model: model.clone(),
                    metric: "throughput_ratio_vs_reference".into(),
                    at: format!("b{}×s{}", p.batch, p.seq),
                    value: v,
                });
            }
        }
        if let Some(p) = row
            .throughput
            .iter()
            .max_by(|a, b| a.gflops.total_cmp(&b.gflops))
        {
            h.push(Headline {
                model: model.clone(),
                metric: "best_gflops".into(),
                at: format!("b{}×s{}", p.batch, p.seq),
                value: p.gflops,
            });
            h.push(Headline {
                model: model.clone(),
                metric: "best_peak_fraction".into(),
                at: format!("b{}×s{}", p.batch, p.seq),
                value: p.peak_fraction,
            });
        }
        for c in row.concurrency.iter().filter(|c| c.instances > 1) {
            h.push(Headline {
                model: model.clone(),
                metric: "utilization_factor".into(),
                at: format!("{} instances", c.instances),
                value: c.utilization_factor,
            });
        }
    }
    Summary { headlines: h }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (civil-from-days).
pub fn utc_string(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(utc_string(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_string(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_string(1_795_838_645), "2026-11-28T04:04:05Z");
    }

    #[test]
    fn options_are_checked() {
        let mut o = BenchOptions::quick();
        assert!(o.check().is_ok());
        o.batch_sizes = vec![0];
        assert!(o.check().is_err());
        let o = BenchOptions {
            targets: vec![],
            ..BenchOptions::quick()
        };
        assert!(o.check().is_err());
    }
}
