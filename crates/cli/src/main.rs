//! The `anectx` command line. Thin: argument parsing, settings resolution and
//! output formatting; the work happens in the library crates.

mod cmd;
mod settings;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// anectx — a local context engine for LLMs, with small models built for the
/// Apple Neural Engine.
///
/// Settings are resolved as: command line > environment (ANECTX_*) > config
/// file ($ANECTX_CONFIG or ~/.config/anectx/config.toml, `key = value` lines)
/// > built-in defaults.
#[derive(Debug, Parser)]
#[command(
    name = "anectx",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// See the whole product work offline in one command: index a sample,
    /// answer questions, learn from simulated answers, export for Core ML.
    Quickstart(cmd::quickstart::QuickstartArgs),
    /// Embed texts with a sentence embedder and print the vectors.
    Embed(cmd::embed::EmbedArgs),
    /// Inspect model directories.
    #[command(subcommand)]
    Model(cmd::model::ModelCommand),
    /// Export models (Core ML ML Program packages for the Neural Engine).
    #[command(subcommand)]
    Export(cmd::coreml::ExportCommand),
    /// Work with exported Core ML packages.
    #[command(subcommand)]
    Coreml(cmd::coreml::CoremlCommand),
    /// Index files and folders into a store (incremental).
    Index(cmd::index::IndexArgs),
    Reembed(cmd::reembed::ReembedArgs),
    /// Select and pack context for a question from a store.
    Context(cmd::context::ContextArgs),
    /// Evaluate retrieval on a BEIR-layout collection.
    Eval(cmd::eval::EvalArgs),
    // `serve`, `mcp` and `reembed` take their help from their argument
    // structs: a one-line summary in the command list, the whole text in
    // `--help`.
    Serve(cmd::serve::ServeArgs),
    Mcp(cmd::mcp::McpArgs),
    /// Show a store: documents, embedder, relevance model, log, last runs.
    Status(cmd::status::StatusArgs),
    /// Benchmark models (ANEMLL-comparable; JSON and HTML reports).
    Bench(cmd::bench::BenchArgs),
    /// Read the interaction log (export as JSON Lines, stats).
    #[command(subcommand)]
    Log(cmd::log::LogCommand),
    /// The usage memory of a registry version: rebuild it from the log, show
    /// its size and hit rates.
    #[command(subcommand)]
    Memory(cmd::memory::MemoryCommand),
    /// Train a relevance model from the interaction log (learning loop).
    Train(cmd::learn::TrainArgs),
    /// Run the learning loop offline on a BEIR-layout collection.
    Simulate(cmd::learn::SimulateArgs),
    /// Distil a BERT sentence embedder into a small conv embedder.
    Distill(cmd::distill::DistillArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Embed(a) => cmd::embed::run(a),
        Command::Model(c) => cmd::model::run(c),
        Command::Export(c) => cmd::coreml::run_export(c),
        Command::Coreml(c) => cmd::coreml::run(c),
        Command::Index(a) => cmd::index::run(a),
        Command::Reembed(a) => cmd::reembed::run(a),
        Command::Context(a) => cmd::context::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Serve(a) => cmd::serve::run(a),
        Command::Mcp(a) => cmd::mcp::run(a),
        Command::Status(a) => cmd::status::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Log(c) => cmd::log::run(c),
        Command::Memory(c) => cmd::memory::run(c),
        Command::Train(a) => cmd::learn::run_train(a),
        Command::Quickstart(a) => cmd::quickstart::run(a),
        Command::Simulate(a) => cmd::learn::run_simulate(a),
        Command::Distill(a) => cmd::distill::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}
