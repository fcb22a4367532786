//! `anectx train`, `anectx simulate` and the registry commands
//! (`anectx model list|promote|rollback`).

use std::path::{Path, PathBuf};

use anectx_engine::eval::Collection;
use anectx_engine::{index_texts, ChunkConfig, Engine, IndexOptions, Progress};
use anectx_learn::analyzer::Analyzer;
use anectx_learn::gate::GateConfig;
use anectx_learn::simulate::{
    simulate, simulate_stream, SimProgress, SimulateConfig, SimulateReport, StreamConfig,
    StreamReport,
};
use anectx_learn::train::TrainConfig;
use anectx_learn::{round, Registry, RoundConfig};
use anectx_store::Store;
use anyhow::{Context, Result};
use clap::Args;

use super::index::{Bars, StoreArgs};

/// The registry of a store: `--registry` or `<store>/registry`.
pub fn registry_dir(store: &Path, registry: Option<&PathBuf>) -> PathBuf {
    registry.cloned().unwrap_or_else(|| store.join("registry"))
}

/// Train a new relevance model from the store's interaction log.
///
/// Labels every logged answer with the usage analyzer (from the answer text
/// alone), builds an inverse-propensity-weighted pairwise dataset, trains a
/// small feature model, gates it against the serving model on held-out
/// interactions and writes it to the registry. With `--promote` a model that
/// passes the gate becomes current; a running `anectx serve` picks it up.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Store directory, or a shared store `postgres://…` (the fleet's log
    /// is pulled into this machine's cache first). Env: ANECTX_STORE;
    /// config `store`; default ./.anectx
    #[arg(long)]
    store: Option<PathBuf>,
    /// Model registry directory (default: <store>/registry).
    #[arg(long)]
    registry: Option<PathBuf>,
    /// Make the new version current when it passes the gate.
    #[arg(long)]
    promote: bool,
    /// Fewer informative training interactions than this is an error.
    #[arg(long, default_value_t = 20)]
    min_interactions: usize,
    /// Share of interactions held out for early stopping and the gate.
    #[arg(long, default_value_t = 0.3)]
    held_out: f32,
    /// Allowed held-out drop versus the current model (0: not worse).
    #[arg(long, default_value_t = 0.0)]
    tolerance: f64,
    /// Experimental: fine-tuning steps of an adapter — a copy of the
    /// built-in embedder tuned on (query, used chunk) pairs whose cosine
    /// becomes a feature (0: retrieval features only). Costs minutes per
    /// training run and an embedding of each candidate when serving.
    #[arg(long, default_value_t = 0)]
    adapter_steps: usize,
    #[arg(long, default_value_t = 17)]
    seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run_train(args: TrainArgs) -> Result<()> {
    let store_args = StoreArgs {
        store: args.store.clone(),
        model: None,
        dtype: None,
        backend: None,
        units: None,
        vector_search: None,
    };
    let store_dir = store_args.store_dir()?;
    let shared = store_args.shared()?;
    if shared.is_none() && !store_dir.join("anectx.sqlite").exists() {
        anyhow::bail!(
            "no store at {} (index documents and serve them first, or pass --store)",
            store_dir.display()
        );
    }
    // The store's embedder builds the new version's usage memory.
    let engine = anectx_engine::Engine::open(&store_dir, store_args.embedder()?)
        .with_context(|| format!("opening the store in {}", store_dir.display()))?;
    crate::settings::apply_vector_search(&engine, None)?;
    if let Some(pg) = &shared {
        // Train on the whole fleet's traffic: the shared log into this
        // cache, after the cache has caught up, so the chunks the log names
        // are found here (their ids are this cache's own) and the usage
        // memory is built with the store's embedder.
        super::shared::catch_up_for_learning(&engine, pg)?;
    }
    let store = engine.store();
    let registry = Registry::open(&registry_dir(&store_dir, args.registry.as_ref()))?;
    let stats = store.db.interaction_count()?;
    if stats == 0 {
        anyhow::bail!(
            "the interaction log in {} is empty: serve the store (`anectx serve`) and send \
             queries through /v1/chat/completions or /v1/context first, or try `anectx simulate`",
            store_dir.display()
        );
    }
    let current = registry
        .load_current()
        .context("loading the current model for the gate")?;
    let cfg = RoundConfig {
        train: TrainConfig {
            min_interactions: args.min_interactions,
            held_out: args.held_out,
            seed: args.seed,
            adapter_steps: args.adapter_steps,
            ..TrainConfig::default()
        },
        gate: GateConfig {
            tolerance: args.tolerance,
            ..GateConfig::default()
        },
        // Promotion waits until the new version carries its usage memory.
        promote: false,
    };
    let outcome = round(
        &store.db,
        &registry,
        current.as_ref(),
        &Analyzer::default(),
        &cfg,
        None,
    )?;
    let Some(t) = outcome.trained else {
        // Not an error: the log is young. Say so and keep the current model.
        let reason = outcome.not_trained.unwrap_or_default();
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "trained": false,
                    "reason": reason,
                    "interactions": stats,
                    "promoted": false,
                }))?
            );
        } else {
            println!(
                "not trained: {reason}\nthe current model keeps serving; log more questions \
                 and run `anectx train --store {}` again",
                store_args.typed()?
            );
        }
        return Ok(());
    };
    // The new version's usage memory: the whole log as it is now, with the
    // store's embedder (so `model rollback` also returns to the memory the
    // previous version had).
    let mem = anectx_learn::memory::rebuild(
        &engine,
        &registry,
        Some(&t.version),
        &Analyzer::default(),
        &anectx_engine::MemoryConfig::default(),
        &|_| {},
    )
    .with_context(|| {
        format!(
            "building the usage memory of {} (the version is registered, not promoted)",
            t.version
        )
    })?;
    let promoted = args.promote && t.gate.passed;
    if promoted {
        registry.promote(&t.version)?;
        if let Some(pg) = &shared {
            super::shared::publish_registry(pg, &registry)?;
            eprintln!(
                "shared store {}: {} is the fleet's relevance model",
                pg.target(),
                t.version
            );
        }
    }
    let (g, report) = (&t.gate, &t.train);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "trained": true,
                "version": t.version,
                "registry": registry.dir(),
                "train": report,
                "gate": g,
                "memory": mem.spec.stats,
                "promoted": promoted,
            }))?
        );
    } else {
        println!(
            "trained {} on {} interactions ({} pairs; {} held out), best epoch {}/{}",
            t.version,
            report.train_interactions,
            report.train_pairs,
            report.held_out_interactions,
            report.best_epoch,
            report.epochs
        );
        println!(
            "gate: {} — {}",
            if g.passed { "passed" } else { "refused" },
            g.reason
        );
        println!(
            "usage memory of {}: {} questions, {} (question, chunk) pairs, up to interaction {}",
            t.version, mem.spec.stats.questions, mem.spec.stats.pairs, mem.spec.watermark
        );
        if promoted {
            println!("promoted: {} is current", t.version);
        } else if g.passed {
            println!(
                "not promoted (run `anectx model promote {} --store {}`)",
                t.version,
                store_args.typed()?
            );
        } else {
            println!("not promoted: {} keeps serving", g.current_version);
        }
    }
    Ok(())
}

/// Run the whole learning loop offline on a BEIR-layout collection.
///
/// Splits the judged queries into train and test; for each train query asks
/// the engine for context, lets a simulated LLM answer from the shown chunks
/// judged relevant (quoting and paraphrasing; sometimes using a non-relevant
/// one, sometimes ignoring a relevant one), labels usage with the analyzer
/// from the answer text only, trains, gates, promotes and hot-swaps; reports
/// test-query nDCG@10 before and after every round and the analyzer's
/// precision/recall against the judgments.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Collection directory (corpus.jsonl, queries.jsonl, qrels.tsv).
    collection: PathBuf,
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Embedder directory (default: the built-in embedder). `--bm25-only` disables dense retrieval.
    #[arg(long, short)]
    model: Option<String>,
    /// No embedder: BM25 candidates only.
    #[arg(long, conflicts_with = "model")]
    bm25_only: bool,
    /// Work directory for the index, log and registry (default: a temporary one).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Exploration rate while logging train queries.
    #[arg(long, default_value_t = 0.3)]
    explore: f32,
    /// Share of judged queries used for training.
    #[arg(long, default_value_t = 0.5)]
    train_share: f32,
    /// Times each train query is asked per round.
    #[arg(long, default_value_t = 2)]
    asks: usize,
    /// Token budget per context.
    #[arg(long, default_value_t = 1200)]
    budget: usize,
    /// Simulated LLM: probability of using a shown relevant chunk.
    #[arg(long, default_value_t = 0.85)]
    use_relevant: f32,
    /// Simulated LLM: probability of using a shown non-relevant chunk.
    #[arg(long, default_value_t = 0.1)]
    use_irrelevant: f32,
    /// Simulated LLM: probability of quoting (vs paraphrasing) a sentence.
    #[arg(long, default_value_t = 0.5)]
    quote_rate: f32,
    /// Simulated LLM: probability of citing a used chunk's [n].
    #[arg(long, default_value_t = 0.3)]
    cite_rate: f32,
    /// Training: inverse-propensity weights are clipped at this value.
    #[arg(long, default_value_t = TrainConfig::default().ips_clip)]
    ips_clip: f32,
    /// Training: weight of used-over-unshown pairs (weak negatives).
    #[arg(long, default_value_t = TrainConfig::default().unshown_weight)]
    unshown_weight: f32,
    /// MMR trade-off (1 = pure relevance order, lower = more diversity).
    #[arg(long, default_value_t = 0.7)]
    mmr_lambda: f32,
    /// Training: hidden units of the MLP (0 = linear model).
    #[arg(long, default_value_t = TrainConfig::default().hidden)]
    hidden: usize,
    /// Experimental: fine-tuning steps of an adapter — a copy of the
    /// built-in embedder tuned on (query, used chunk) pairs whose cosine
    /// becomes a feature (0: retrieval features only). Costs minutes per
    /// training run and an embedding of each candidate when serving.
    #[arg(long, default_value_t = 0)]
    adapter_steps: usize,
    /// Do not gate on the judged train queries (held-out interactions only).
    #[arg(long)]
    no_eval_gate: bool,
    /// Stream evaluation instead of training rounds: ask the train questions,
    /// build the usage memory from the log, and report nDCG@10 before → after
    /// on new, repeated and reworded questions (see `--seeds`, `--repeat-share`).
    #[arg(long)]
    stream: bool,
    /// Stream: number of seeds (each a new split, asks and rewordings).
    #[arg(long, default_value_t = 10)]
    seeds: usize,
    /// Stream: share of the evaluation mix asked before (half verbatim, half reworded).
    #[arg(long, default_value_t = 0.35)]
    repeat_share: f32,
    /// Stream: RRF weight of the memory's "asked as" ranking.
    #[arg(long, default_value_t = anectx_engine::ContextOptions::default().memory_weight)]
    memory_weight: f32,
    /// Stream: RRF weight of the near-duplicate ranking.
    #[arg(long, default_value_t = anectx_engine::ContextOptions::default().memory_dup_weight)]
    memory_dup_weight: f32,
    /// Stream: negative evidence; a chunk near duplicates were shown and never
    /// used loses this × 1/(rrf_k + 1) per such showing (times the similarity).
    #[arg(long, default_value_t = anectx_engine::ContextOptions::default().memory_unused_weight)]
    memory_unused_weight: f32,
    /// Stream: similarity from which a logged question is a near duplicate.
    #[arg(long, default_value_t = anectx_engine::ContextOptions::default().memory_dup_threshold)]
    memory_dup_threshold: f32,
    /// Stream: leave the loop open. By default, from the second ask on,
    /// train questions are asked with the memory built from the asks before,
    /// as `serve` reloads it; with this flag every ask runs without memory
    /// (the protocol of earlier reports).
    #[arg(long)]
    open_loop: bool,
    /// Stream: also train a relevance model on each seed's log, whose
    /// features include the memory's, so it learns how far to trust the
    /// memory; "after" uses it when the held-out gate passes. Closes the
    /// loop even with `--open-loop`.
    #[arg(long)]
    learn: bool,
    /// Write the JSON report here too.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Indexes a BEIR collection's documents (one document per id, chunks of
/// up to 512 tokens) with progress bars, as `simulate` and `quickstart` do.
pub fn index_collection(
    engine: &Engine,
    embedder: Option<&dyn anectx_engine::TextEmbedder>,
    coll: &Collection,
) -> Result<anectx_engine::IndexReport> {
    let bars = Bars::new();
    let rep = index_texts(
        engine.store(),
        embedder,
        &coll.docs,
        &IndexOptions {
            chunk: ChunkConfig {
                max_tokens: 512,
                overlap: 64,
            },
            ..IndexOptions::default()
        },
        &bars,
    )?;
    bars.finish();
    engine.store().db.set_meta(
        anectx_engine::LAST_INDEX_META,
        &std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
            .to_string(),
    )?;
    Ok(rep)
}

/// Simulation progress drawn with the index command's bars.
pub struct SimBars(pub Bars);
impl SimProgress for SimBars {
    fn stage(&self, name: &str, total: u64) {
        self.0.stage(name, Some(total));
    }
    fn inc(&self) {
        self.0.inc(1);
    }
}

pub fn run_simulate(args: SimulateArgs) -> Result<()> {
    let coll = Collection::load(&args.collection)?;
    let tmp;
    let work = match &args.work {
        Some(w) => w.clone(),
        None => {
            tmp = super::eval::tempdir()?;
            tmp.0.clone()
        }
    };
    let store_dir = work.join("store");
    if store_dir.join("anectx.sqlite").exists() {
        let s = Store::open(&store_dir)?;
        if s.db.interaction_count()? > 0 {
            anyhow::bail!(
                "{} already holds a simulation log; use a new --work directory",
                work.display()
            );
        }
    }
    let embedder = if args.bm25_only {
        None
    } else {
        super::default_or_given_embedder(args.model.clone())?
    };
    let engine = Engine::open(&store_dir, embedder.clone())
        .with_context(|| format!("opening the store in {}", store_dir.display()))?;
    let rep = index_collection(&engine, embedder.as_deref(), &coll)?;
    eprintln!(
        "indexed {} documents ({} chunks) in {:.1}s{}",
        rep.documents_total,
        rep.chunks_total,
        rep.seconds,
        match &embedder {
            Some(e) => format!(" with {}", e.info().description),
            None => " (BM25 only)".into(),
        }
    );
    let registry = Registry::open(&work.join("registry"))?;
    let cfg = SimulateConfig {
        rounds: args.rounds,
        seed: args.seed,
        train_share: args.train_share,
        explore: args.explore,
        budget: args.budget,
        asks_per_query: args.asks,
        mmr_lambda: args.mmr_lambda,
        eval_gate: !args.no_eval_gate,
        sim: anectx_learn::simllm::SimLlmConfig {
            use_relevant: args.use_relevant,
            use_irrelevant: args.use_irrelevant,
            quote_rate: args.quote_rate,
            cite_rate: args.cite_rate,
            ..Default::default()
        },
        train: TrainConfig {
            ips_clip: args.ips_clip,
            unshown_weight: args.unshown_weight,
            hidden: args.hidden,
            adapter_steps: args.adapter_steps,
            ..TrainConfig::default()
        },
        gate: GateConfig {
            ips_clip: args.ips_clip,
            ..GateConfig::default()
        },
        ..SimulateConfig::default()
    };
    let analyzer = Analyzer::default();
    let progress = SimBars(Bars::new());
    if args.stream {
        let scfg = StreamConfig {
            base: cfg,
            seeds: args.seeds,
            repeat_share: args.repeat_share,
            memory_weight: args.memory_weight,
            memory_dup_weight: args.memory_dup_weight,
            memory_unused_weight: args.memory_unused_weight,
            memory_dup_threshold: args.memory_dup_threshold,
            closed_loop: !args.open_loop,
            learn: args.learn,
            ..StreamConfig::default()
        };
        let t0 = std::time::Instant::now();
        let report = simulate_stream(&engine, &coll, &analyzer, &scfg, &progress)?;
        progress.0.finish();
        eprintln!("stream evaluation took {:.0}s", t0.elapsed().as_secs_f64());
        if let Some(out) = &args.out {
            std::fs::write(out, serde_json::to_vec_pretty(&report)?)
                .with_context(|| format!("writing {}", out.display()))?;
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_stream(&args.collection, &report);
        }
        return Ok(());
    }
    let report = simulate(&engine, &coll, &registry, &analyzer, &cfg, &progress)?;
    progress.0.finish();
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_sim(&args.collection, &report);
    }
    Ok(())
}

fn print_stream(coll: &Path, r: &StreamReport) {
    println!(
        "{} — {} documents, {}, {} seed(s), {:.0} % of the mix asked before",
        coll.display(),
        r.documents,
        if r.dense { "hybrid" } else { "BM25 only" },
        r.seeds.len(),
        100.0 * r.config.repeat_share
    );
    println!(
        "{:>8} {:>6} {:>8} {:>8} {:>8}  {:>19} {:>7} {:>8} {:>8}",
        "kind", "n", "before", "after", "Δ", "95 % interval", "p", "own", "ceiling"
    );
    let s = &r.strata;
    for (name, x) in [
        ("new", &s.new),
        ("repeat", &s.repeat),
        ("variant", &s.variant),
        ("mix", &s.mix),
    ] {
        // The most a memory built from the shown chunks could add: from
        // each question's own history, and from everything shown.
        let gain =
            |c: Option<f64>| c.map_or_else(|| "—".to_string(), |c| format!("{:+.4}", c - x.before));
        let (own, ceiling) = (gain(x.ceiling_own), gain(x.ceiling));
        println!(
            "{:>8} {:>6} {:>8.4} {:>8.4} {:>+8.4}  [{:>+8.4}, {:>+8.4}] {:>7.4} {:>8} {:>8}",
            name,
            x.questions,
            x.before,
            x.after,
            x.delta,
            x.ci95_low,
            x.ci95_high,
            x.p_value,
            own,
            ceiling
        );
    }
    println!(
        "(own: what each question's own shown chunks could add; ceiling: the most a usage \
         memory built from every shown chunk could add)"
    );
    let learned: Vec<_> = r
        .seeds
        .iter()
        .filter_map(|s| Some((s.seed, s.learned.as_ref()?)))
        .collect();
    if !learned.is_empty() {
        let used = learned.iter().filter(|l| l.1.used).count();
        println!(
            "learned trust: {used} of {} seed(s) passed the gate and used the trained model",
            learned.len()
        );
        for (seed, l) in &learned {
            if let Some(why) = l
                .not_trained
                .as_ref()
                .or(l.gate.as_ref().map(|g| &g.reason))
            {
                println!("  seed {seed}: {why}");
            }
        }
    }
    println!(
        "memory gate: {} — {}",
        if r.gate.passed { "passes" } else { "refuses" },
        r.gate.reason
    );
}

fn print_sim(coll: &Path, r: &SimulateReport) {
    println!(
        "{} — {} documents, {} train / {} test queries, {}",
        coll.display(),
        r.documents,
        r.train_queries,
        r.test_queries,
        if r.dense { "hybrid" } else { "BM25 only" }
    );
    println!(
        "{:>5} {:>6} {:>9} {:>9} {:>7} {:>9} {:>9} {:>8}  gate",
        "round", "logged", "nDCG@10", "→ after", "Δ", "anl P/R", "anl F1", "sim F1"
    );
    for x in &r.rounds {
        let a = &x.analyzer_vs_judgments;
        println!(
            "{:>5} {:>6} {:>9.4} {:>9.4} {:>+7.4} {:>4.2}/{:<4.2} {:>9.3} {:>8.3}  {}",
            x.round,
            x.interactions_logged,
            x.test_ndcg_before,
            x.test_ndcg_after,
            x.test_ndcg_after - x.test_ndcg_before,
            a.precision,
            a.recall,
            a.f1,
            x.analyzer_vs_simulator.f1,
            match (&x.gate, &x.train_error) {
                (Some(g), _) => format!(
                    "{}: {}",
                    if g.passed { "promoted" } else { "refused" },
                    g.reason
                ),
                (None, Some(e)) => format!("no training: {e}"),
                _ => String::new(),
            }
        );
    }
}

/// Where the registry is.
#[derive(Debug, Clone, Args)]
pub struct RegistryOpts {
    /// Store directory, or a shared store `postgres://…` (a promotion or
    /// rollback then applies to the whole fleet). Env: ANECTX_STORE;
    /// config `store`; default ./.anectx
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Model registry directory (default: <store>/registry).
    #[arg(long)]
    pub registry: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl RegistryOpts {
    fn store_args(&self) -> StoreArgs {
        StoreArgs {
            store: self.store.clone(),
            model: None,
            dtype: None,
            backend: None,
            units: None,
            vector_search: None,
        }
    }

    /// With a shared store: this machine's registry follows the fleet's
    /// first, and `after` publishes what the command made current.
    fn shared(&self) -> Result<Option<anectx_store_pg::PgStore>> {
        self.store_args().shared()
    }

    fn open(&self) -> Result<Registry> {
        let store = self.store_args().store_dir()?;
        Ok(Registry::open(&registry_dir(
            &store,
            self.registry.as_ref(),
        ))?)
    }
}

/// `anectx model list`.
pub fn run_list(opts: RegistryOpts) -> Result<()> {
    let registry = opts.open()?;
    let list = registry.list()?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        println!(
            "no trained versions in {} (the built-in fusion model serves)",
            registry.dir().display()
        );
    }
    for v in &list {
        let g = v.manifest.metrics.get("gate");
        println!(
            "{} {}  data {}  gate: {}",
            if v.current { "*" } else { " " },
            v.manifest.version,
            &v.manifest.data_hash[..v.manifest.data_hash.len().min(12)],
            g.and_then(|g| g.get("reason"))
                .and_then(|r| r.as_str())
                .unwrap_or("-"),
        );
    }
    if registry.current()?.is_none() && !list.is_empty() {
        println!("  (no version promoted: the built-in fusion model serves)");
    }
    Ok(())
}

/// `anectx model promote VERSION`.
pub fn run_promote(version: &str, opts: RegistryOpts) -> Result<()> {
    let registry = opts.open()?;
    let shared = opts.shared()?;
    if let Some(pg) = &shared {
        super::shared::follow_registry(pg, &registry)?;
        if !registry.version_dir(version).exists() && pg.has_version(version)? {
            pg.fetch_version(version, &registry.version_dir(version))?;
        }
    }
    registry
        .promote(version)
        .with_context(|| format!("promoting {version}; the current model keeps serving"))?;
    if let Some(pg) = &shared {
        super::shared::publish_registry(pg, &registry)?;
    }
    println!(
        "{version} is current ({})",
        memory_note(&registry, Some(version))
    );
    Ok(())
}

/// What a version's usage memory holds, for the promote and rollback output.
fn memory_note(registry: &Registry, version: Option<&str>) -> String {
    match anectx_learn::memory::read_spec(registry, version) {
        Ok(Some(s)) => format!(
            "its usage memory: {} questions, {} (question, chunk) pairs, up to interaction {}",
            s.stats.questions, s.stats.pairs, s.watermark
        ),
        Ok(None) => "it has no usage memory: it serves without one".into(),
        Err(e) => format!("its usage memory cannot be read: {e}"),
    }
}

/// `anectx model rollback`.
pub fn run_rollback(opts: RegistryOpts) -> Result<()> {
    let registry = opts.open()?;
    let shared = opts.shared()?;
    if let Some(pg) = &shared {
        super::shared::follow_registry(pg, &registry)?;
    }
    let now = registry.rollback()?;
    if let Some(pg) = &shared {
        super::shared::publish_registry(pg, &registry)?;
    }
    println!(
        "rolled back: {} is current ({})",
        now.as_deref().unwrap_or("the built-in fusion model"),
        memory_note(&registry, now.as_deref())
    );
    Ok(())
}
