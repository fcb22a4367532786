//! `anectx quickstart`: the whole product, offline, in one command.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anectx_engine::eval::Collection;
use anectx_engine::{ContextOptions, Engine, ModelEmbedder};
use anectx_learn::analyzer::Analyzer;
use anectx_learn::simulate::{simulate, simulate_stream, SimulateConfig, Strata, StreamConfig};
use anectx_learn::Registry;
use anectx_models::WeightDtype;
use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use super::index::Bars;
use super::learn::SimBars;
use anectx_engine::Progress;

const CORPUS: &str = include_str!("../../../../samples/quickstart/corpus.jsonl");
const QUERIES: &str = include_str!("../../../../samples/quickstart/queries.jsonl");
const QRELS: &str = include_str!("../../../../samples/quickstart/qrels.tsv");

/// A question about the sample corpus for the printed `next:` lines.
const SAMPLE_QUESTION: &str = "how does a swept wing behave at supersonic speed";

/// `path` as one shell word: unchanged when it needs no quoting, otherwise
/// in single quotes (so every printed command runs as written).
pub fn shell_word(path: &Path) -> String {
    let s = path.display().to_string();
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c));
    if safe {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Index a built-in sample corpus with the built-in embedder, answer a few
/// questions with selected context, run one simulated learning round (log,
/// label, train, gate, promote, hot-swap), export the Core ML packages and
/// check their Neural Engine residency. Offline; writes into --dir.
#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Where to write the store, registry and Core ML packages.
    #[arg(long, default_value = "anectx-quickstart")]
    dir: PathBuf,
    /// Replace an existing quickstart directory.
    #[arg(long)]
    force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// The embedder's runtime: `auto` (on a Mac, Core ML on the Neural
    /// Engine when it matches candle; candle elsewhere), `candle` or
    /// `coreml`. Env: ANECTX_BACKEND; config `backend`; default: auto.
    #[arg(long)]
    backend: Option<String>,
}

#[derive(Debug, Serialize)]
struct Answer {
    question: String,
    chunks: Vec<String>,
    tokens: usize,
}

#[derive(Debug, Serialize)]
struct Summary {
    dir: PathBuf,
    documents: u64,
    chunks: u64,
    embedder: String,
    /// Which runtime embedded, and why (`--backend auto`'s decision).
    backend: anectx_core::BackendChoice,
    answers: Vec<Answer>,
    interactions_logged: usize,
    analyzer_f1_vs_judgments: f64,
    gate: String,
    promoted: Option<String>,
    serving_model: String,
    test_ndcg_before: f64,
    test_ndcg_after: f64,
    memory: MemorySummary,
    packages: Vec<PackageSummary>,
    seconds: f64,
}

/// The usage memory's round: questions asked, then asked again (word for
/// word and reworded), nDCG@10 before and after per kind.
#[derive(Debug, Serialize)]
struct MemorySummary {
    strata: Strata,
    gate_passed: bool,
    gate: String,
    /// Whether the memory serves now (only when the gate passed).
    on: bool,
    /// Remembered (question, chunk) pairs.
    pairs: u64,
    /// A logged question asked again: its top documents without and with
    /// the memory (`*` = judged relevant).
    example: Option<MemoryExample>,
}

#[derive(Debug, Serialize)]
struct MemoryExample {
    question: String,
    without: Vec<String>,
    with: Vec<String>,
}

#[derive(Debug, Serialize)]
struct PackageSummary {
    path: PathBuf,
    operations: usize,
    errors: usize,
    warnings: usize,
    predicted_ane_share: f64,
}

struct Steps {
    n: usize,
    total: usize,
    quiet: bool,
}

impl Steps {
    fn next(&mut self, what: &str) {
        self.n += 1;
        if !self.quiet {
            eprintln!("[{}/{}] {what}", self.n, self.total);
        }
    }
}

fn write_sample(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in [
        ("corpus.jsonl", CORPUS),
        ("queries.jsonl", QUERIES),
        ("qrels.tsv", QRELS),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Runs the stream evaluation of the usage memory (one seed), turns the
/// memory on when its gate passes and asks a logged question again.
fn memory_round(
    engine: &Engine,
    registry: &Registry,
    coll: &Collection,
    quiet: bool,
) -> Result<MemorySummary> {
    let analyzer = Analyzer::default();
    let cfg = StreamConfig {
        seeds: 1,
        bootstrap: 1000,
        ..StreamConfig::default()
    };
    let progress = SimBars(Bars::new());
    let rep = simulate_stream(engine, coll, &analyzer, &cfg, &progress)?;
    progress.0.finish();
    let s = &rep.strata;
    if !quiet {
        for (name, st) in [
            ("new", &s.new),
            ("repeat", &s.repeat),
            ("variant", &s.variant),
            ("mix", &s.mix),
        ] {
            eprintln!(
                "  {name:<8} nDCG@10 {:.4} → {:.4} ({:+.4}, 95 % [{:+.4}, {:+.4}], {} questions)",
                st.before, st.after, st.delta, st.ci95_low, st.ci95_high, st.questions
            );
        }
        eprintln!(
            "  memory gate {}: {}",
            if rep.gate.passed { "passed" } else { "refused" },
            rep.gate.reason
        );
    }
    let mut on = false;
    let mut pairs = 0;
    let mut example = None;
    if rep.gate.passed {
        // The memory belongs to the version serving now: written beside it
        // in the registry (so `anectx serve` loads it, and `model rollback`
        // past a later version returns to it), then turned on here.
        let version = registry.current()?;
        anectx_learn::memory::rebuild(
            engine,
            registry,
            version.as_deref(),
            &analyzer,
            &anectx_engine::MemoryConfig::default(),
            &|_| {},
        )?;
        let memory = anectx_learn::memory::load(engine, registry, version.as_deref(), &analyzer)?
            .into_memory()
            .filter(|m| m.stats().pairs > 0);
        if let Some(m) = memory {
            on = true;
            pairs = m.stats().pairs;
            engine.set_memory(Some(std::sync::Arc::new(m)));
        }
    }
    if on {
        example = repeated_question(engine, coll)?;
        if let (Some(e), false) = (&example, quiet) {
            eprintln!(
                "  the memory is on ({pairs} question–chunk pairs); the first logged question \
                 it lifts a relevant document for (* = judged relevant), asked again:\n     {}",
                e.question
            );
            eprintln!("     without: {}", e.without.join("  "));
            eprintln!("     with:    {}", e.with.join("  "));
        }
    } else if !quiet {
        eprintln!("  the memory stays off");
    }
    Ok(MemorySummary {
        strata: rep.strata,
        gate_passed: rep.gate.passed,
        gate: rep.gate.reason.clone(),
        on,
        pairs,
        example,
    })
}

/// The first logged question for which the memory brings a judged-relevant
/// document into the top 3, asked again with and without the memory.
fn repeated_question(engine: &Engine, coll: &Collection) -> Result<Option<MemoryExample>> {
    let memory = engine.memory();
    let top = |q: &str| -> Result<Vec<String>> {
        let r = engine.context(q, &ContextOptions::default())?;
        let judged = coll
            .queries
            .iter()
            .find(|(_, t)| t == q)
            .and_then(|(id, _)| coll.qrels.get(id));
        Ok(r.chunks
            .iter()
            .take(3)
            .map(|c| {
                let rel = judged.and_then(|j| j.get(&c.path)).is_some_and(|&g| g > 0);
                format!("doc {}{}", c.path, if rel { "*" } else { "" })
            })
            .collect())
    };
    let mut seen = std::collections::HashSet::new();
    for (_, it) in engine.store().db.interactions(0, 500)? {
        if !seen.insert(it.query.clone()) {
            continue;
        }
        engine.set_memory(None);
        let without = top(&it.query);
        engine.set_memory(memory.clone());
        let without = without?;
        let with = top(&it.query)?;
        let relevant = |v: &[String]| v.iter().filter(|d| d.ends_with('*')).count();
        if relevant(&with) > relevant(&without) {
            return Ok(Some(MemoryExample {
                question: it.query,
                without,
                with,
            }));
        }
    }
    Ok(None)
}

pub fn run(args: QuickstartArgs) -> Result<()> {
    let t0 = Instant::now();
    let dir = args.dir.clone();
    if dir.exists() {
        let marker = dir.join(".anectx-quickstart");
        if !args.force {
            anyhow::bail!(
                "{} exists; pass --force to replace it or --dir to choose another place",
                dir.display()
            );
        }
        if !marker.exists() && std::fs::read_dir(&dir)?.next().is_some() {
            anyhow::bail!(
                "{} is not empty and was not written by `anectx quickstart`; refusing to replace it",
                dir.display()
            );
        }
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join(".anectx-quickstart"), "")?;
    let mut steps = Steps {
        n: 0,
        total: 6,
        quiet: args.json,
    };

    steps.next("indexing the sample corpus (600 Cranfield abstracts) with the built-in embedder");
    let sample = dir.join("sample");
    write_sample(&sample)?;
    let coll = Collection::load(&sample)?;
    let requested = crate::settings::Layers::get()?
        .backend(args.backend.clone())?
        .value;
    let prepared = super::embedder::ModelChoice::Builtin.prepare(
        WeightDtype::F32,
        requested,
        anectx_core::ComputeUnits::CpuAndNeuralEngine,
    )?;
    let backend = prepared.choice.clone();
    if !args.json {
        eprintln!("  runtime: {} ({})", backend.used, backend.reason);
    }
    let embedder = std::sync::Arc::new(
        ModelEmbedder::new(prepared.backend, prepared.tokenizer, prepared.info)
            .with_legacy(prepared.legacy),
    );
    let embedder_desc = anectx_engine::TextEmbedder::info(embedder.as_ref())
        .description
        .clone();
    let store_dir = dir.join("store");
    let engine = Engine::open(&store_dir, Some(embedder.clone()))?;
    let rep = super::learn::index_collection(&engine, Some(embedder.as_ref()), &coll)?;

    steps.next("answering three questions with selected context");
    let mut answers = Vec::new();
    for (_, q) in coll.queries.iter().take(3) {
        let r = engine.context(
            q,
            &ContextOptions {
                budget: 600,
                ..ContextOptions::default()
            },
        )?;
        let chunks: Vec<String> = r
            .chunks
            .iter()
            .map(|c| {
                let first = c.text.lines().next().unwrap_or("").trim();
                let first: String = first.chars().take(70).collect();
                format!("[{}] doc {}: {first}", c.marker, c.path)
            })
            .collect();
        if !args.json {
            eprintln!("  Q: {q}");
            for c in &chunks {
                eprintln!("     {c}");
            }
        }
        answers.push(Answer {
            question: q.clone(),
            chunks,
            tokens: r.used_tokens,
        });
    }

    steps.next(
        "one simulated learning round: answer, log, label usage, train, gate, promote, hot-swap",
    );
    let registry = Registry::open(&store_dir.join("registry"))?;
    let cfg = SimulateConfig {
        rounds: 1,
        asks_per_query: 4,
        ..SimulateConfig::default()
    };
    let progress = SimBars(Bars::new());
    let sim = simulate(
        &engine,
        &coll,
        &registry,
        &Analyzer::default(),
        &cfg,
        &progress,
    )?;
    progress.0.finish();
    let round = sim.rounds.first().context("the simulation ran no round")?;
    let gate = match (&round.gate, &round.train_error) {
        (Some(g), _) => format!(
            "{}: {}",
            if g.passed { "passed" } else { "refused" },
            g.reason
        ),
        (None, Some(e)) => format!("not trained: {e}"),
        _ => "not run".into(),
    };
    if !args.json {
        eprintln!(
            "  logged {} interactions; analyzer F1 vs judgments {:.3}; gate {gate}",
            round.interactions_logged, round.analyzer_vs_judgments.f1
        );
        match &round.promoted {
            Some(v) => eprintln!(
                "  promoted {v} and swapped it into the running engine; test nDCG@10 {:.4} → {:.4}",
                round.test_ndcg_before, round.test_ndcg_after
            ),
            None => eprintln!(
                "  the serving model stays {} (test nDCG@10 {:.4})",
                engine.relevance_model().version(),
                round.test_ndcg_before
            ),
        }
    }

    steps.next("usage memory: ask questions, then ask some again, word for word and reworded");
    let memory = memory_round(&engine, &registry, &coll, args.json)?;

    steps.next("exporting Core ML packages and checking Neural Engine residency (M4 rules)");
    let coreml_dir = dir.join("coreml");
    let model_dir = coreml_dir.join("default-embedder");
    anectx_models::default_model::write_dir(&model_dir)?;
    let mut packages = Vec::new();
    for (name, ids) in [
        ("embedder-ids.mlpackage", true),
        ("embedder.mlpackage", false),
    ] {
        let opts = anectx_coreml::export::ExportOptions {
            seq_lengths: vec![64, 128, 256],
            ids_input: ids,
            spec_version: 7,
        };
        let exported = anectx_coreml::export::export_model_dir(&model_dir, &opts)
            .with_context(|| format!("exporting {name}"))?;
        let path = coreml_dir.join(name);
        let written = anectx_coreml::export::write_exported(&exported, &path, true)
            .with_context(|| format!("writing {}", path.display()))?;
        let report =
            anectx_coreml::check::check_model(&written.model, anectx_coreml::check::Chip::M4);
        if !args.json {
            eprintln!(
                "  {}: {} ops, predicted on the Neural Engine {:.0}%, {} errors, {} warnings",
                path.display(),
                written.model.operations().len(),
                report.predicted_ane_share * 100.0,
                report.errors,
                report.warnings
            );
        }
        packages.push(PackageSummary {
            path,
            operations: written.model.operations().len(),
            errors: report.errors,
            warnings: report.warnings,
            predicted_ane_share: report.predicted_ane_share,
        });
    }

    steps.next("done");
    let summary = Summary {
        dir: dir.clone(),
        documents: rep.documents_total,
        chunks: rep.chunks_total,
        embedder: embedder_desc,
        backend,
        answers,
        interactions_logged: round.interactions_logged,
        analyzer_f1_vs_judgments: round.analyzer_vs_judgments.f1,
        gate,
        promoted: round.promoted.clone(),
        serving_model: engine.relevance_model().version(),
        test_ndcg_before: round.test_ndcg_before,
        test_ndcg_after: round.test_ndcg_after,
        memory,
        packages,
        seconds: t0.elapsed().as_secs_f64(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let store = shell_word(&store_dir);
        let package = shell_word(&coreml_dir.join("embedder-ids.mlpackage"));
        println!(
            "\nanectx quickstart finished in {:.0}s\n\
             store      {}   ({} documents, {} chunks)\n\
             registry   {}\n\
             relevance  {}\n\
             coreml     {}\n\
             next:\n  \
             anectx context \"{SAMPLE_QUESTION}\" --store {store}\n  \
             anectx status --store {store}\n  \
             anectx model list --store {store}\n  \
             anectx coreml check {package}\n  \
             anectx serve --store {store}\n\
             (then point your LLM client at http://127.0.0.1:8181/v1; add --llm URL to proxy chat)",
            summary.seconds,
            store_dir.display(),
            summary.documents,
            summary.chunks,
            registry.dir().display(),
            summary.serving_model,
            coreml_dir.display(),
        );
    }
    Ok(())
}
