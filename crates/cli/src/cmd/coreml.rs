//! `anectx export coreml` and `anectx coreml run`: Core ML ML Program
//! packages written in pure Rust, and run on CPU through the reference
//! executor (Linux has no Core ML runtime).

use std::path::PathBuf;
use std::time::Instant;

use anectx_coreml::export::{export_model, load_model_dir, write_exported, ExportOptions};
use anectx_coreml::runtime::PackageRunner;
use anectx_models::ModelKind;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Write a model as a Core ML ML Program package (.mlpackage) for the
    /// Neural Engine: fp16, (1, C, 1, S) layout, spec 7 (iOS 16 / macOS 13)
    /// by default. The tokenizer and the embedding tables travel inside the
    /// package under Data/com.anectx/.
    Coreml(ExportCoremlArgs),
}

#[derive(Debug, Args)]
pub struct ExportCoremlArgs {
    /// Model directory (or Hugging Face id in the local cache), or `default`
    /// for the built-in embedder. Env: ANECTX_MODEL. Default: the built-in
    /// embedder.
    #[arg(long, short)]
    model: Option<String>,
    /// Sequence length; repeat for enumerated lengths (one program, each
    /// length can be planned on the ANE).
    #[arg(long = "seq", default_value = "128", value_parser = clap::value_parser!(u32).range(1..=8192))]
    seq: Vec<u32>,
    /// Take int32 token ids and gather embeddings in the graph, instead of
    /// embeddings looked up by the host (keeps the graph integer-free).
    #[arg(long)]
    ids: bool,
    /// Core ML specification version: 7 (iOS 16 / macOS 13), 8 or 9.
    #[arg(long, default_value_t = 7)]
    spec_version: i32,
    /// Output package path (e.g. model.mlpackage).
    #[arg(long, short)]
    output: PathBuf,
    /// Replace an existing package at the output path.
    #[arg(long)]
    force: bool,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CoremlCommand {
    /// Run an exported package on texts with the CPU reference executor.
    Run(RunArgs),
    /// Predict whether a package stays on the Neural Engine: a static
    /// check of any ML Program package (anectx's or coremltools') against
    /// the ANE residency rules. Exits non-zero when a rule fails with an
    /// error or the predicted cost-weighted residency is below --min-residency.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The .mlpackage to check.
    package: PathBuf,
    /// Apple silicon generation whose limits apply: m1, m2, m3, m4, m5.
    #[arg(long, default_value = "m4", value_parser = parse_chip)]
    chip: anectx_coreml::check::Chip,
    /// Fail when less than this share (percent) of the estimated cost is
    /// predicted on the Neural Engine, even with no rule failing.
    #[arg(long, default_value_t = 90.0, value_parser = parse_percent)]
    min_residency: f64,
    /// Print the full report as JSON (findings, per-op prediction, islands,
    /// and the verdict).
    #[arg(long)]
    json: bool,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage"))?;
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside 0..=100"))
    }
}

fn parse_chip(s: &str) -> Result<anectx_coreml::check::Chip, String> {
    anectx_coreml::check::Chip::parse(s)
        .ok_or_else(|| format!("unknown chip {s:?} (m1, m2, m3, m4, m5)"))
}

fn run_check(a: CheckArgs) -> Result<()> {
    let model = anectx_coreml::read_package(&a.package)
        .with_context(|| format!("reading {}", a.package.display()))?;
    let report = anectx_coreml::check::check_model(&model, a.chip);
    let min = a.min_residency / 100.0;
    let verdict = report.verdict(min);
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["verdict"] = serde_json::to_value(&verdict)?;
        emit(&serde_json::to_string_pretty(&v)?)?;
    } else {
        let name = a.package.display().to_string();
        emit(anectx_coreml::check::render(&report, &name, min).trim_end())?;
    }
    if !verdict.passed {
        anyhow::bail!(
            "{} would not stay on the Neural Engine: {}",
            a.package.display(),
            verdict.summary
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Package written by `anectx export coreml`.
    package: PathBuf,
    /// For a relevance classifier: the query each text is scored against.
    #[arg(long)]
    query: Option<String>,
    /// Print JSON with every output in full.
    #[arg(long)]
    json: bool,
    /// Texts to run.
    #[arg(required = true)]
    texts: Vec<String>,
}

/// Prints to stdout; a closed pipe (`| head`) ends output quietly.
fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

#[derive(Serialize)]
struct ExportSummary {
    package: String,
    kind: ModelKind,
    input: String,
    seq_lengths: Vec<usize>,
    spec_version: i32,
    opset: String,
    operations: usize,
    model_bytes: usize,
    weight_bytes: usize,
    load_ms: f64,
    export_ms: f64,
}

pub fn run_export(cmd: ExportCommand) -> Result<()> {
    let ExportCommand::Coreml(a) = cmd;
    let (dir, _tmp) = super::resolve_model(a.model)?.as_dir()?;
    let opts = ExportOptions {
        seq_lengths: a.seq.iter().map(|&s| s as usize).collect(),
        ids_input: a.ids,
        spec_version: a.spec_version,
    };
    let t0 = Instant::now();
    let (model, tokenizer) =
        load_model_dir(&dir).with_context(|| format!("loading {}", dir.display()))?;
    let load = t0.elapsed();
    let t1 = Instant::now();
    let mut exported =
        export_model(&model, &opts).with_context(|| format!("exporting {}", dir.display()))?;
    exported.tokenizer_json = Some(tokenizer);
    let written = write_exported(&exported, &a.output, a.force)
        .with_context(|| format!("writing {}", a.output.display()))?;
    let export = t1.elapsed();
    let (_, main) = written
        .model
        .main_function()
        .context("the exported model has no main function")?;
    // Model loading (safetensors → f32 candle) is reported apart from the export.
    let summary = ExportSummary {
        package: a.output.display().to_string(),
        kind: exported.side.kind,
        input: exported.side.input.clone(),
        seq_lengths: opts.seq_lengths.clone(),
        spec_version: written.model.spec_version,
        opset: main.opset.clone(),
        operations: written.model.operations().len(),
        model_bytes: written.model_bytes,
        weight_bytes: written.weight_bytes,
        load_ms: load.as_secs_f64() * 1e3,
        export_ms: export.as_secs_f64() * 1e3,
    };
    if a.json {
        emit(&serde_json::to_string_pretty(&summary)?)?;
    } else {
        emit(&format!(
            "wrote {} ({:?}, input {}, seq {:?}, spec {} / {}, {} ops, weights {:.1} MB): \
             export (graph build + package write) {:.0} ms, model load {:.0} ms",
            summary.package,
            summary.kind,
            summary.input,
            summary.seq_lengths,
            summary.spec_version,
            summary.opset,
            summary.operations,
            summary.weight_bytes as f64 / 1e6,
            summary.export_ms,
            summary.load_ms,
        ))?;
    }
    Ok(())
}

#[derive(Serialize)]
struct RunOutput {
    package: String,
    kind: ModelKind,
    rows: Vec<anectx_coreml::runtime::RunRow>,
}

pub fn run(cmd: CoremlCommand) -> Result<()> {
    let a = match cmd {
        CoremlCommand::Run(a) => a,
        CoremlCommand::Check(a) => return run_check(a),
    };
    let runner = PackageRunner::open(&a.package)
        .with_context(|| format!("opening {}", a.package.display()))?;
    let texts: Vec<&str> = a.texts.iter().map(String::as_str).collect();
    let rows = match (runner.side.kind, &a.query) {
        (ModelKind::ConvClassifier, Some(q)) => runner.run_pairs(q, &texts)?,
        (ModelKind::ConvClassifier, None) => {
            anyhow::bail!("this package is a relevance classifier: pass --query QUERY")
        }
        (_, Some(_)) => anyhow::bail!("--query only applies to relevance classifiers"),
        _ => runner.run_texts(&texts)?,
    };
    for (i, r) in rows.iter().enumerate() {
        if r.truncated {
            eprintln!("warning: text {i} was cut to {} tokens", r.tokens);
        }
    }
    let out = RunOutput {
        package: a.package.display().to_string(),
        kind: runner.side.kind,
        rows,
    };
    if a.json {
        return emit(&serde_json::to_string(&out)?);
    }
    emit(&format!("package {} ({:?})", out.package, out.kind))?;
    for (i, r) in out.rows.iter().enumerate() {
        let shown: Vec<String> = r
            .outputs
            .iter()
            .filter(|(k, _)| k.as_str() != "hidden_states")
            .map(|(k, v)| {
                let head: Vec<String> = v.iter().take(6).map(|x| format!("{x:+.4}")).collect();
                let more = if v.len() > 6 { ", …" } else { "" };
                format!("{k} [{}{more}]", head.join(", "))
            })
            .collect();
        emit(&format!(
            "[{i}] {:>3} tokens (seq {})  {}",
            r.tokens,
            r.seq,
            shown.join("  ")
        ))?;
    }
    Ok(())
}
