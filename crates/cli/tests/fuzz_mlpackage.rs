//! Fuzzing the `.mlpackage` reader: a package written by the exporter (a
//! feature MLP with its weights in `weight.bin`), its `model.mlmodel`
//! protobuf and weight image mutated, parsed by `parse_model` (the reader
//! `read_package` uses after reading the files). Each case must end
//! without a panic; a bad package is a typed `CoremlError`.
//! `scripts/fuzz.sh` runs it for a duration (see `anectx_testing::fuzz`).

use std::path::Path;
use std::sync::Arc;

use anectx_coreml::export::{export_feature_mlp, write_feature_mlp, FeatureMlp};
use anectx_coreml::package::{parse_model, read_layout};
use anectx_testing::fuzz;

/// (model.mlmodel, weight.bin) of exported packages.
fn seeds() -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    for (i, (features, hidden, cands, spec)) in [
        (3usize, 2usize, 8usize, 7i32),
        (12, 40, 16, 8),
        (5, 64, 4, 9),
    ]
    .into_iter()
    .enumerate()
    {
        let mlp = FeatureMlp {
            w1: (0..hidden * features)
                .map(|k| (k as f32 * 0.37).sin())
                .collect(),
            b1: vec![0.01; hidden],
            w2: (0..hidden).map(|k| (k as f32 * 0.11).cos()).collect(),
            skip: vec![0.2; features],
            mean: vec![0.0; features],
            std: vec![1.0; features],
        };
        let model = export_feature_mlp(&mlp, cands, spec).unwrap();
        let path = dir.path().join(format!("m{i}.mlpackage"));
        write_feature_mlp(&model, &path, false).unwrap();
        let layout = read_layout(&path).unwrap();
        let m = std::fs::read(&layout.model_file).unwrap();
        let w = std::fs::read(&layout.weight_file).ok();
        out.push((m, w));
    }
    out
}

#[test]
fn the_mlpackage_reader_survives_mutated_packages() {
    let seeds = seeds();
    let models: Vec<Vec<u8>> = seeds.iter().map(|s| s.0.clone()).collect();
    let weights: Vec<Vec<u8>> = seeds.iter().filter_map(|s| s.1.clone()).collect();
    assert!(!weights.is_empty(), "no exported package has a weight.bin");
    let budget = fuzz::Budget::from_env(300);
    let report = fuzz::run(
        "mlpackage",
        budget,
        |rng| {
            let (m, w) = rng.pick(&seeds);
            let m = if rng.chance(2, 3) {
                fuzz::mutate(rng, m, &models, 1 << 20)
            } else {
                m.clone()
            };
            let w = match w {
                Some(w) if rng.chance(1, 2) => Some(fuzz::mutate(rng, w, &weights, 1 << 20)),
                Some(w) if rng.chance(1, 8) => None,
                other => other.clone(),
            };
            (m, w)
        },
        |(m, w)| {
            let mut b = (m.len() as u64).to_le_bytes().to_vec();
            b.extend_from_slice(m);
            b.extend_from_slice(w.as_deref().unwrap_or_default());
            b
        },
        Arc::new(|(m, w): (Vec<u8>, Option<Vec<u8>>)| {
            let _ = parse_model(
                &m,
                w.as_deref(),
                Path::new("fuzz.mlpackage/model.mlmodel"),
                Path::new("fuzz.mlpackage/weight.bin"),
            );
        }),
    );
    assert!(report.cases > 0);
}
