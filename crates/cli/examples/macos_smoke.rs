//! Mac smoke test for the Core ML backend (run it on a Mac; on other systems
//! it reports that Core ML needs macOS and exits non-zero).
//!
//! ```sh
//! ./scripts/fixtures.sh
//! cargo run --release -p anectx --example macos_smoke -- [MODEL_DIR…]
//! ```
//!
//! For each model directory (default: the all-MiniLM-L6-v2 fixture and a
//! seed-default ConvEmbedder), it exports a Core ML package with in-graph
//! token lookup, loads it on all four compute-unit settings, embeds the same
//! sentences as the CPU (candle) backend and prints the worst cosine against
//! it, then prints the MLComputePlan placement report (ops per device,
//! cost-weighted ANE residency, islands).

use std::path::PathBuf;

use anectx_core::{Backend, ComputeUnits};
use anectx_coreml::export::{export_model_dir, write_exported, ExportOptions};
use anectx_coreml_runtime::{CoreMlBackend, CoreMlConfig};
use anectx_models::io::save_model_dir;
use anectx_models::metrics::cosine;
use anectx_models::{load_embedder, CandleBackend, ConvEmbedder, ConvEmbedderConfig, WeightDtype};

const SEQ: usize = 128;

fn main() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut dirs: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if dirs.is_empty() {
        let minilm = anectx_testing::workspace_root().join(".fixtures/all-minilm-l6-v2");
        anyhow::ensure!(
            minilm.is_dir(),
            "run ./scripts/fixtures.sh first (or pass model dirs)"
        );
        let conv_dir = tmp.path().join("conv-embedder");
        let cfg = ConvEmbedderConfig::default();
        let m = ConvEmbedder::new_random(cfg.clone(), 1, candle_core::DType::F32)?;
        save_model_dir(
            &conv_dir,
            &cfg,
            &m.named_tensors(),
            WeightDtype::F32,
            &minilm.join("tokenizer.json"),
        )?;
        dirs = vec![minilm, conv_dir];
    }
    let texts: Vec<&str> = anectx_testing::SENTENCES.iter().take(8).copied().collect();
    let mut failures = 0;
    for dir in &dirs {
        println!("== {}", dir.display());
        let opts = ExportOptions {
            seq_lengths: vec![SEQ],
            ids_input: true,
            ..Default::default()
        };
        let pkg = tmp.path().join(format!(
            "{}.mlpackage",
            dir.file_name().and_then(|n| n.to_str()).unwrap_or("model")
        ));
        let exported = export_model_dir(dir, &opts)?;
        write_exported(&exported, &pkg, true)?;
        let (model, tok) = load_embedder(dir, WeightDtype::F32)?;
        let tok = tok.with_buckets(vec![SEQ]);
        let batch = tok.encode_batch(&texts)?;
        let cpu = CandleBackend::new(Some(model), None).embed(&batch)?;
        for units in ComputeUnits::ALL {
            print!("  {:<4} ", units.short_name());
            let backend = match CoreMlBackend::load(CoreMlConfig::new(&pkg, units)) {
                Ok(b) => b,
                Err(e) => {
                    println!("load failed: {e}");
                    failures += 1;
                    continue;
                }
            };
            match backend.embed(&batch) {
                Ok(e) => {
                    let worst = (0..texts.len())
                        .map(|i| cosine(e.row(i), cpu.row(i)))
                        .fold(1f32, f32::min);
                    print!(
                        "worst cosine vs CPU {worst:.5}{} ",
                        if worst >= 0.999 { "" } else { " (LOW)" }
                    );
                    if worst < 0.999 {
                        failures += 1;
                    }
                }
                Err(e) => {
                    print!("predict failed: {e} ");
                    failures += 1;
                }
            }
            match backend.model().placement() {
                Ok(p) => println!(
                    "| placement {:?}, ANE residency {}, islands {}",
                    p.by_device,
                    p.ane_residency
                        .map(|r| format!("{:.1}%", r * 100.0))
                        .unwrap_or_else(|| "n/a".into()),
                    p.islands
                        .iter()
                        .map(|i| format!("{}:{:?}x{}", i.device.label(), i.position, i.ops))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                Err(e) => println!("| placement unavailable: {e}"),
            }
        }
    }
    anyhow::ensure!(failures == 0, "{failures} check(s) failed");
    Ok(())
}
