//! `--backend auto`'s decision (issue 22), on Linux: the built-in embedder
//! is exported into a cache folder once, loaded by a stand-in for Core ML
//! (this crate's MIL executor over the same package), compared with candle
//! on the probe set, and used only when it matches. A loader whose output
//! drifts, or that cannot load, leaves candle in charge with the reason.

use std::path::Path;
use std::sync::Arc;

use anectx_core::{
    Backend, BackendError, BackendHealth, BackendRequest, ComputeUnits, Embeddings,
    SupportedShapes, TokenBatch,
};
use anectx_coreml::auto::{self, probe_texts, Loaded, ModelSource, Outcome, Request, MIN_COSINE};
use anectx_coreml::runtime::PackageRunner;
use anectx_models::{default_model, CandleBackend, TextTokenizer, WeightDtype};

struct Fixture {
    _tmp: tempfile::TempDir,
    model_dir: std::path::PathBuf,
    cache: std::path::PathBuf,
    candle: CandleBackend,
    tokenizer: TextTokenizer,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("model");
    default_model::write_dir(&model_dir).unwrap();
    let (model, tokenizer) = default_model::load_with_tokenizer(WeightDtype::F32).unwrap();
    Fixture {
        cache: tmp.path().join("cache"),
        model_dir,
        _tmp: tmp,
        candle: CandleBackend::new(Some(model), None),
        tokenizer,
    }
}

fn request<'a>(f: &'a Fixture, requested: BackendRequest) -> Request<'a> {
    Request {
        requested,
        model: ModelSource::Builtin,
        model_identity: "builtin-test-identity",
        reference: &f.candle,
        tokenizer: &f.tokenizer,
        units: ComputeUnits::CpuAndNeuralEngine,
        cache_root: Some(f.cache.clone()),
    }
}

fn mil_loader(package: &Path, _units: ComputeUnits) -> Result<Loaded, String> {
    let runner = PackageRunner::open(package).map_err(|e| e.to_string())?;
    Ok(Loaded {
        backend: Box::new(runner),
        ane_share: Some(0.99),
        ops_by_device: Some([("ANE".to_string(), 40), ("CPU".to_string(), 1)].into()),
    })
}

/// A backend whose embeddings drift from the model's: each row gets a
/// deterministic perturbation of relative size `eps`.
struct Drifting {
    inner: PackageRunner,
    eps: f32,
}

impl Backend for Drifting {
    fn name(&self) -> &str {
        "drifting"
    }
    fn health(&self) -> BackendHealth {
        self.inner.health()
    }
    fn shapes(&self) -> SupportedShapes {
        self.inner.shapes()
    }
    fn embedding_dim(&self) -> Option<usize> {
        self.inner.embedding_dim()
    }
    fn embed(&self, batch: &TokenBatch) -> Result<Embeddings, BackendError> {
        let mut e = self.inner.embed(batch)?;
        for (i, x) in e.data.iter_mut().enumerate() {
            *x += self.eps * if i % 3 == 0 { 1.0 } else { -0.5 } / (e.dim as f32).sqrt();
        }
        Ok(e)
    }
    fn score(&self, pairs: &TokenBatch) -> Result<Vec<f32>, BackendError> {
        self.inner.score(pairs)
    }
}

#[test]
fn a_package_that_matches_candle_is_used_and_cached() {
    let f = fixture();
    let out = auto::choose_with(&request(&f, BackendRequest::Auto), mil_loader);
    let (backend, tokenizer, choice) = match out {
        Outcome::CoreMl {
            backend,
            tokenizer,
            choice,
        } => (backend, tokenizer, choice),
        Outcome::Candle { choice } => panic!("fell back to candle: {}", choice.reason),
    };
    assert_eq!(choice.used, "mil-cpu");
    assert_eq!(choice.requested, BackendRequest::Auto);
    assert_eq!(choice.compute_units, Some(ComputeUnits::CpuAndNeuralEngine));
    assert_eq!(choice.ane_share, Some(0.99));
    assert_eq!(choice.ops_by_device.as_ref().unwrap()["ANE"], 40);
    let parity = choice.parity.unwrap();
    assert_eq!(parity.texts, probe_texts().len());
    assert!(
        parity.min_cosine >= MIN_COSINE,
        "lowest cosine {}",
        parity.min_cosine
    );
    eprintln!(
        "auto: MIL package vs candle on {} probe texts: lowest cosine {:.6}, mean {:.6}",
        parity.texts, parity.min_cosine, parity.mean_cosine
    );
    let package = choice.package.unwrap();
    assert!(package.starts_with(f.cache.join("auto")), "{package:?}");
    assert!(package.join("Manifest.json").is_file());
    // The probe's longest text is cut at the largest length both use.
    assert_eq!(tokenizer.buckets(), f.tokenizer.buckets());
    let texts = probe_texts();
    let long = tokenizer
        .encode_batch(&[texts[texts.len() - 1].as_str()])
        .unwrap();
    assert_eq!(long.seq, *f.tokenizer.buckets().last().unwrap());
    assert!(!long.truncations.is_empty(), "the long probe was not cut");
    assert_eq!(backend.name(), "mil-cpu");

    // Asked again: the cached package is reused, not exported again.
    let modified = std::fs::metadata(package.join("Manifest.json"))
        .unwrap()
        .modified()
        .unwrap();
    let opts = auto::export_options(f.tokenizer.buckets());
    let (again, exported) = auto::cached_package(
        &ModelSource::Builtin,
        "builtin-test-identity",
        &f.cache,
        &opts,
    )
    .unwrap();
    assert_eq!((again.as_path(), exported), (package.as_path(), false));
    let after = std::fs::metadata(package.join("Manifest.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(modified, after);
    // The pass is remembered for this package, OS build and units: the next
    // start does not run the probe again (a loader that would now fail it
    // is still used), while other compute units are probed afresh.
    let verdict = auto::verdict_path(&package, ComputeUnits::CpuAndNeuralEngine);
    assert!(verdict.is_file(), "no verdict at {verdict:?}");
    let drifting_now = |p: &Path, _u: ComputeUnits| -> Result<Loaded, String> {
        Ok(Loaded {
            backend: Box::new(Drifting {
                inner: PackageRunner::open(p).map_err(|e| e.to_string())?,
                eps: 0.2,
            }),
            ane_share: None,
            ops_by_device: None,
        })
    };
    match auto::choose_with(&request(&f, BackendRequest::Auto), drifting_now) {
        Outcome::CoreMl { choice, .. } => assert_eq!(choice.parity, Some(parity)),
        Outcome::Candle { choice } => panic!("the remembered pass was not used: {}", choice.reason),
    }
    let mut cpu = request(&f, BackendRequest::Auto);
    cpu.units = ComputeUnits::CpuOnly;
    assert!(matches!(
        auto::choose_with(&cpu, drifting_now),
        Outcome::Candle { .. }
    ));
    // Another identity is another package.
    let other = auto::package_key("another-model", &opts);
    assert_ne!(
        other,
        auto::package_key("builtin-test-identity", &opts),
        "the key ignores the model"
    );
}

#[test]
fn a_package_that_drifts_from_candle_is_refused_with_the_reason() {
    let f = fixture();
    let drifting = |eps: f32| {
        move |p: &Path, _u: ComputeUnits| -> Result<Loaded, String> {
            Ok(Loaded {
                backend: Box::new(Drifting {
                    inner: PackageRunner::open(p).map_err(|e| e.to_string())?,
                    eps,
                }),
                ane_share: None,
                ops_by_device: None,
            })
        }
    };
    // A drift of ~20 % of the vector's length (cosine ≈ 0.98) is refused.
    match auto::choose_with(&request(&f, BackendRequest::Auto), drifting(0.2)) {
        Outcome::Candle { choice } => {
            assert_eq!(choice.used, "candle-cpu");
            assert!(
                choice.reason.contains("differs from candle"),
                "{}",
                choice.reason
            );
            let p = choice.parity.unwrap();
            assert!(p.min_cosine < MIN_COSINE && p.min_cosine > 0.9, "{p:?}");
            let package = choice.package.unwrap();
            let verdict = auto::verdict_path(&package, ComputeUnits::CpuAndNeuralEngine);
            assert!(!verdict.exists(), "a refusal was remembered as a pass");
        }
        Outcome::CoreMl { choice, .. } => {
            panic!("a drifting backend was used: {:?}", choice.parity)
        }
    }
    // A drift far below the threshold passes (the check is not all-or-nothing).
    assert!(matches!(
        auto::choose_with(&request(&f, BackendRequest::Auto), drifting(1e-4)),
        Outcome::CoreMl { .. }
    ));
}

#[test]
fn a_package_that_cannot_load_leaves_candle_with_the_reason() {
    let f = fixture();
    let out = auto::choose_with(&request(&f, BackendRequest::Auto), |_, _| {
        Err("Core ML could not compile it: unsupported op".to_string())
    });
    let choice = out.choice().clone();
    assert!(matches!(out, Outcome::Candle { .. }));
    assert_eq!(choice.used, "candle-cpu");
    assert!(
        choice.reason.contains("unsupported op"),
        "{}",
        choice.reason
    );
    // Asked for candle: nothing is exported.
    let f2 = fixture();
    let out = auto::choose_with(&request(&f2, BackendRequest::Candle), mil_loader);
    assert!(matches!(out, Outcome::Candle { .. }));
    assert!(!f2.cache.exists(), "candle exported a package");
}

#[cfg(not(target_vendor = "apple"))]
#[test]
fn off_apple_platforms_auto_is_candle_without_exporting() {
    let f = fixture();
    let out = auto::choose(&request(&f, BackendRequest::Auto));
    let choice = out.choice();
    assert_eq!(choice.used, "candle-cpu");
    assert!(
        choice.reason.contains("Apple platforms"),
        "{}",
        choice.reason
    );
    assert!(!f.cache.exists(), "a package was exported off macOS");
    // Asked for Core ML explicitly: the reason names macOS.
    let out = auto::choose(&request(&f, BackendRequest::CoreMl));
    assert!(
        out.choice().reason.contains("Core ML needs macOS"),
        "{}",
        out.choice().reason
    );
}

#[test]
fn concurrent_first_uses_export_one_complete_package() {
    // (From a model folder, as `--model DIR` exports.)
    let f = fixture();
    let opts = auto::export_options(f.tokenizer.buckets());
    let dirs = Arc::new((f.model_dir.clone(), f.cache.clone()));
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let dirs = dirs.clone();
            let opts = opts.clone();
            std::thread::spawn(move || {
                auto::cached_package(&ModelSource::Dir(&dirs.0), "same-model", &dirs.1, &opts)
                    .unwrap()
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let path = &results[0].0;
    assert!(results.iter().all(|(p, _)| p == path));
    assert!(path.join("Manifest.json").is_file());
    // Whoever lost the race removed its staging copy.
    let left: Vec<String> = std::fs::read_dir(f.cache.join("auto"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 1, "left behind: {left:?}");
    PackageRunner::open(path).expect("the package is complete");
}
