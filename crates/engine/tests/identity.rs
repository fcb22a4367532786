//! One identity per model: a store made with the built-in embedder opens
//! with the same model loaded from a directory, and stores that recorded the
//! built-in model's earlier id still open (their record is upgraded).

mod common;

use std::sync::Arc;

use anectx_engine::{
    ContextOptions, Engine, EngineError, IndexOptions, ModelEmbedder, ModelIdentity, NoProgress,
    TextEmbedder,
};
use anectx_models::WeightDtype;
use anectx_store::EmbedderInfo;

fn index_one(engine: &Engine, root: &std::path::Path) {
    common::write(
        root,
        "wing.md",
        "# Wings\n\nA swept wing delays the drag rise at transonic speed.\n",
    );
    engine
        .index(&[root.to_path_buf()], &IndexOptions::default(), &NoProgress)
        .unwrap();
}

#[test]
fn a_builtin_store_opens_with_the_same_model_from_a_directory() {
    let root = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let model_dir = tempfile::tempdir().unwrap();
    anectx_models::default_model::write_dir(model_dir.path()).unwrap();

    let builtin: Arc<dyn TextEmbedder> =
        Arc::new(ModelEmbedder::embedded_default(WeightDtype::F32).unwrap());
    let engine = Engine::open(store.path(), Some(builtin)).unwrap();
    index_one(&engine, root.path());
    drop(engine);

    let from_dir: Arc<dyn TextEmbedder> =
        Arc::new(ModelEmbedder::load(model_dir.path(), WeightDtype::F32).unwrap());
    let engine = Engine::open(store.path(), Some(from_dir)).unwrap();
    assert!(engine.dense_enabled());
    let r = engine
        .context("drag rise of swept wings", &ContextOptions::default())
        .unwrap();
    assert!(r.chunks[0].path.ends_with("wing.md"));
    // Indexing through the directory's model is accepted too.
    index_one(&engine, root.path());
}

#[test]
fn a_store_with_the_earlier_builtin_id_opens_and_is_upgraded() {
    let root = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let builtin = || -> Arc<dyn TextEmbedder> {
        Arc::new(ModelEmbedder::embedded_default(WeightDtype::F32).unwrap())
    };
    let engine = Engine::open(store.path(), Some(builtin())).unwrap();
    index_one(&engine, root.path());
    // Rewrite the record as anectx wrote it before identities were unified.
    let legacy = format!("{}:F32", anectx_models::default_model::id());
    let info = EmbedderInfo {
        fingerprint: legacy.clone(),
        description: "built-in (earlier id)".into(),
        dim: 384,
    };
    engine.store().set_embedder(&info).unwrap();
    drop(engine);

    let engine = Engine::open(store.path(), Some(builtin())).unwrap();
    let now = engine.store().db.embedder().unwrap().unwrap();
    assert_eq!(
        now.fingerprint,
        ModelIdentity::builtin(WeightDtype::F32).fingerprint
    );
    drop(engine);

    // Another model's record is still refused.
    let engine = Engine::open(store.path(), Some(builtin())).unwrap();
    engine
        .store()
        .set_embedder(&EmbedderInfo {
            fingerprint: "0123456789abcdef".into(),
            description: "some other model".into(),
            dim: 384,
        })
        .unwrap();
    drop(engine);
    match Engine::open(store.path(), Some(builtin())) {
        Err(EngineError::EmbedderMismatch { .. }) => {}
        other => panic!("expected a mismatch, got {other:?}"),
    }
}
