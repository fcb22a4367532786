//! `anectx bench`: the ANEMLL-comparable benchmark, and `anectx bench compare`.

use std::path::PathBuf;

use anectx_bench::{BackendKind, BenchOptions, ModelSource, ModelSpec, Report, Target};
use anectx_core::ComputeUnits;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

/// Benchmark models: cold load, warm latency p50/p95/p99, throughput,
/// weight GB/s (ANEMLL way), GFLOP/s against the machine's FMA peak,
/// 1/2/4/6 concurrent instances, fp16 parity and a soak. The reference
/// candle BERT always runs in the same process.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Print ratios b / a for every figure two reports share.
    Compare {
        a: PathBuf,
        b: PathBuf,
        /// Print the compared rows as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Latency of a whole `context` call (query embedding, BM25, vector
    /// search, fusion, features, relevance, MMR, packing) against corpus
    /// size, on generated corpora indexed with the embedder. Reports
    /// p50/p95/p99 of the call and of each stage, index build time, RSS,
    /// store size and recall@10 of each vector search against exact search.
    /// Build with `--release` for meaningful figures.
    Context(ContextArgs),
}

#[derive(Debug, Args)]
struct ContextArgs {
    /// Corpus sizes in chunks, e.g. 10000,100000,1000000.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    chunks: Vec<usize>,
    /// Vector searches timed on every corpus, in one run: auto (chosen by
    /// size), exact, int8. The first is reported at the top of each size.
    #[arg(long, value_delimiter = ',', default_value = "auto,exact", value_parser = parse_search)]
    search: Vec<anectx_store::VectorSearch>,
    /// Distinct generated queries (each embedded for real on every call).
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Timed passes over the queries per search.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Untimed calls before each timed series.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Seed of the generated corpus and queries.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Embedder for the corpus and the queries: `default` (the built-in
    /// embedder) or a model directory.
    #[arg(long, short, default_value = "default")]
    model: String,
    /// Compute precision: f32 or f16.
    #[arg(long)]
    dtype: Option<String>,
    /// Build the stores here and keep them (default: a temporary directory,
    /// removed afterwards).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Synthetic corpus vectors instead of the embedder's (each text the
    /// normalised sum of the embedder's vectors of its words; much faster
    /// to build, for large sizes). Timed queries are still embedded for real;
    /// recall is measured with queries embedded the synthetic way.
    #[arg(long)]
    synthetic_vectors: bool,
    /// Also time the usage memory: log this many questions (the timed
    /// queries first, then more from the same vocabulary), label each
    /// answered from its top chunk, build the memory, and time every query
    /// with and without it, interleaved call by call; reports p50/p99 on
    /// and off and the p99 ratio (0: not timed).
    #[arg(long, default_value_t = 0)]
    memory_questions: usize,
    /// Also run the corpus through a shared store (`postgres://…`, an empty
    /// database; one --chunks size): time publishing it, rebuilding a
    /// replica's cache from it, and `context` on the replica beside the
    /// local store, interleaved call by call.
    #[arg(long)]
    shared: Option<String>,
    /// Write context.json and context.html into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the JSON report to standard output.
    #[arg(long)]
    json: bool,
}

pub(crate) fn parse_search(s: &str) -> Result<anectx_store::VectorSearch, String> {
    anectx_store::VectorSearch::parse(s).ok_or_else(|| {
        let names: Vec<&str> = anectx_store::VectorSearch::ALL
            .iter()
            .map(|m| m.as_str())
            .collect();
        format!("unknown vector search {s:?} ({})", names.join(", "))
    })
}

fn run_context(a: ContextArgs) -> Result<()> {
    let embedder =
        super::embedder::resolve_for_store(Some(a.model.clone()), a.dtype.clone(), None)?
            .embedder()?
            .context("bench context needs an embedder: use --model default or a model directory")?;
    let opts = anectx_bench::context::ContextBenchOptions {
        sizes: a.chunks,
        queries: a.queries,
        rounds: a.rounds,
        warmup: a.warmup,
        searches: a.search,
        work_dir: a.work_dir,
        seed: a.seed,
        synthetic_vectors: a.synthetic_vectors,
        memory_questions: a.memory_questions,
        shared: a.shared.clone(),
    };
    let progress = Bar(new_bar());
    let report = anectx_bench::context::run_context(embedder, &opts, &progress)
        .context("context benchmark failed")?;
    progress.0.finish_and_clear();
    if let Some(dir) = &a.out {
        anectx_bench::context::write_context_outputs(&report, dir)
            .with_context(|| format!("writing the report to {}", dir.display()))?;
        eprintln!(
            "wrote {} and {}",
            dir.join("context.json").display(),
            dir.join("context.html").display()
        );
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", anectx_bench::context::render_context_text(&report));
    }
    Ok(())
}

fn new_bar() -> ProgressBar {
    let bar = ProgressBar::new(1);
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Model directory to benchmark (repeatable): an anectx model or a
    /// Hugging Face BERT. Default: all-MiniLM-L6-v2 as AneBert when found,
    /// plus a ConvEmbedder with random weights.
    #[arg(long, short)]
    model: Vec<PathBuf>,
    /// Hugging Face BERT directory for the reference candle BertModel
    /// (default: all-MiniLM-L6-v2 when found, else its shape with random weights).
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Backends besides candle (always run): `coreml` (Apple platforms).
    #[arg(long, value_delimiter = ',', value_parser = parse_backend)]
    backend: Vec<BackendKind>,
    /// Core ML compute units: cpu, gpu, ane, all (default: all four).
    #[arg(long, value_delimiter = ',', value_parser = parse_units)]
    units: Vec<ComputeUnits>,
    /// Short run (well under a minute): fewer calls, a 2×2 grid, short soak.
    #[arg(long)]
    quick: bool,
    /// Timed calls of the latency series (default 100; quick 12).
    #[arg(long)]
    runs: Option<usize>,
    /// Untimed calls before the latency series (default 5, as ANEMLL).
    #[arg(long)]
    warmup: Option<usize>,
    /// Batch sizes of the throughput grid, e.g. 1,8,32.
    #[arg(long, value_delimiter = ',')]
    batch: Vec<usize>,
    /// Sequence buckets of the throughput grid, e.g. 32,128,256.
    #[arg(long, value_delimiter = ',')]
    seq: Vec<usize>,
    /// Sequence length of the latency series (batch 1).
    #[arg(long)]
    latency_seq: Option<usize>,
    /// Concurrent instance counts, e.g. 1,2,4,6.
    #[arg(long, value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Seconds each instance runs per concurrency level.
    #[arg(long)]
    concurrency_secs: Option<f64>,
    /// Soak length per model in seconds (0 turns it off).
    #[arg(long)]
    soak_secs: Option<f64>,
    /// Soak window in seconds.
    #[arg(long)]
    soak_window_secs: Option<f64>,
    /// BEIR-layout collection for the fp16-vs-fp32 nDCG@10 change.
    #[arg(long)]
    eval: Option<PathBuf>,
    /// Documents of the evaluation corpus at most (judged ones first).
    #[arg(long)]
    eval_docs: Option<usize>,
    /// Judged queries at most.
    #[arg(long)]
    eval_queries: Option<usize>,
    /// Tokens per evaluation text at most.
    #[arg(long)]
    eval_seq: Option<usize>,
    /// Print the JSON report to standard output.
    #[arg(long)]
    json: bool,
    /// Write report.json and report.html into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn parse_backend(s: &str) -> Result<BackendKind, String> {
    BackendKind::parse(s).ok_or_else(|| format!("unknown backend {s:?} (candle, coreml)"))
}

fn parse_units(s: &str) -> Result<ComputeUnits, String> {
    ComputeUnits::parse(s)
        .ok_or_else(|| format!("unknown compute units {s:?} (cpu, gpu, ane, all)"))
}

struct Bar(ProgressBar);

impl anectx_bench::Progress for Bar {
    fn stage(&self, step: usize, total: usize, message: &str) {
        self.0.set_length(total as u64);
        self.0.set_position(step.saturating_sub(1) as u64);
        self.0.set_message(message.to_string());
    }

    fn note(&self, message: &str) {
        self.0.suspend(|| eprintln!("{message}"));
    }
}

fn options(a: &RunArgs) -> BenchOptions {
    let mut o = if a.quick {
        BenchOptions::quick()
    } else {
        BenchOptions::full()
    };
    let set = |dst: &mut Vec<usize>, v: &Vec<usize>| {
        if !v.is_empty() {
            *dst = v.clone();
        }
    };
    set(&mut o.batch_sizes, &a.batch);
    set(&mut o.seq_lens, &a.seq);
    set(&mut o.concurrency, &a.concurrency);
    if let Some(v) = a.runs {
        o.runs = v;
    }
    if let Some(v) = a.warmup {
        o.warmup = v;
    }
    if let Some(v) = a.latency_seq {
        o.latency_seq = v;
    }
    if let Some(v) = a.concurrency_secs {
        o.concurrency_s = v;
    }
    if let Some(v) = a.soak_secs {
        o.soak_s = v;
    }
    if let Some(v) = a.soak_window_secs {
        o.soak_window_s = v;
    }
    o.eval_dir = a.eval.clone();
    if let Some(v) = a.eval_docs {
        o.eval_docs = v;
    }
    if let Some(v) = a.eval_queries {
        o.eval_queries = v;
    }
    if let Some(v) = a.eval_seq {
        o.eval_seq = v;
    }
    // candle always runs (on the CPU); Core ML on the units asked for.
    let mut targets = vec![Target::CANDLE_CPU];
    if a.backend.contains(&BackendKind::CoreMl) {
        let units = if a.units.is_empty() {
            vec![
                ComputeUnits::CpuAndNeuralEngine,
                ComputeUnits::CpuAndGpu,
                ComputeUnits::All,
                ComputeUnits::CpuOnly,
            ]
        } else {
            a.units.clone()
        };
        for units in units {
            let t = Target {
                backend: BackendKind::CoreMl,
                units,
            };
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
    }
    o.targets = targets;
    o
}

fn models(a: &RunArgs) -> Result<Vec<ModelSpec>> {
    let minilm = anectx_bench::find_minilm();
    let mut v = vec![match &a.reference {
        Some(dir) => ModelSpec::new(
            "reference",
            format!("reference candle BertModel ({})", dir.display()),
            ModelSource::ReferenceDir(dir.clone()),
        ),
        None => ModelSpec::reference(minilm.as_deref()),
    }];
    if a.model.is_empty() {
        v.extend(ModelSpec::defaults(minilm.as_deref()).into_iter().skip(1));
    } else {
        for (i, dir) in a.model.iter().enumerate() {
            let dir = anectx_models::io::resolve_model_dir(&dir.to_string_lossy())
                .with_context(|| format!("--model {}", dir.display()))?;
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| format!("model-{i}"));
            let id = if a.model.len() > 1 || name.is_empty() {
                format!("{i}-{name}")
            } else {
                name.clone()
            };
            v.push(ModelSpec::new(id, name, ModelSource::Dir(dir)));
        }
    }
    Ok(v)
}

pub fn run(args: BenchArgs) -> Result<()> {
    if let Some(BenchCommand::Context(c)) = args.command {
        return run_context(c);
    }
    if let Some(BenchCommand::Compare { a, b, json }) = args.command {
        let ra = Report::read(&a)?;
        let rb = Report::read(&b)?;
        let rows = anectx_bench::compare::compare(&ra, &rb);
        if json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            print!(
                "{}",
                anectx_bench::compare::render(
                    &rows,
                    &a.display().to_string(),
                    &b.display().to_string()
                )
            );
        }
        return Ok(());
    }
    let a = args.run;
    let opts = options(&a);
    let specs = models(&a)?;
    let progress = Bar(new_bar());
    let report = anectx_bench::run(&specs, &opts, &progress).context("benchmark failed")?;
    progress.0.finish_and_clear();
    if let Some(dir) = &a.out {
        anectx_bench::write_outputs(&report, dir)
            .with_context(|| format!("writing the report to {}", dir.display()))?;
        eprintln!(
            "wrote {} and {}",
            dir.join("report.json").display(),
            dir.join("report.html").display()
        );
    }
    if a.json {
        println!("{}", report.to_json()?);
    } else {
        print!("{}", anectx_bench::render_text(&report));
    }
    Ok(())
}
