//! The model registry: trained relevance-model versions on disk, one of
//! which is current.
//!
//! ```text
//! <registry>/versions/<version>/model.json      weights (FeatureModelFile)
//! <registry>/versions/<version>/manifest.json   checksum, metrics, data hash, config
//! <registry>/versions/<version>/relevance.mlpackage  Core ML export (when written)
//! <registry>/CURRENT                            the promoted version (absent: built-in fusion)
//! <registry>/history.jsonl                      every promotion and rollback
//! ```
//!
//! `CURRENT` is replaced atomically (write + rename), so a server polling
//! [`Registry::stamp`] sees either the old or the new version. A version is
//! checked (checksum, shapes, finite weights) before it is promoted, and
//! again when a server loads it; a version that fails is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anectx_engine::{FusionRelevance, RelevanceModel};
use serde::{Deserialize, Serialize};

use crate::model::FeatureModel;
use crate::{LearnError, Result};

const CURRENT: &str = "CURRENT";
const HISTORY: &str = "history.jsonl";
const MODEL: &str = "model.json";
const MANIFEST: &str = "manifest.json";
/// The Core ML export of every version (fixed candidate count).
pub const COREML_PACKAGE: &str = "relevance.mlpackage";
/// Candidates scored per Core ML call (pad with zeros, ignore the extra scores).
pub const COREML_CANDIDATES: usize = 128;

/// What the registry knows about one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: String,
    pub created_ms: u64,
    /// blake3 of `model.json`.
    pub model_blake3: String,
    /// blake3 of the training dataset.
    pub data_hash: String,
    /// Training report, gate report, anything the trainer wants to keep.
    pub metrics: serde_json::Value,
    /// Relative path of the Core ML package, when one was exported.
    #[serde(default)]
    pub coreml: Option<String>,
    /// blake3 of `adapter/model.safetensors`, when the model has a
    /// fine-tuned embedder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_blake3: Option<String>,
}

/// A promotion or rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub ts_ms: u64,
    pub action: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// A version as listed.
#[derive(Debug, Clone, Serialize)]
pub struct VersionInfo {
    pub manifest: Manifest,
    pub current: bool,
}

/// A registry directory.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

/// blake3 of an adapter directory's weights file.
fn weights_hash(dir: &Path) -> Result<String> {
    let p = dir.join(crate::adapter::WEIGHTS);
    let bytes = std::fs::read(&p).map_err(|e| LearnError::io(&p, e))?;
    Ok(blake3::hash(&bytes).to_hex().to_string())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| LearnError::io(&tmp, e))?;
    if let Ok(f) = std::fs::File::open(&tmp) {
        let _ = f.sync_all();
    }
    std::fs::rename(&tmp, path).map_err(|e| LearnError::io(path, e))
}

impl Registry {
    /// Opens (creating when missing) a registry directory.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir.join("versions")).map_err(|e| LearnError::io(dir, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn version_dir(&self, version: &str) -> PathBuf {
        self.dir.join("versions").join(version)
    }

    /// A new, unused version name for a model trained on `data_hash`.
    pub fn new_version_name(&self, data_hash: &str) -> String {
        let base = format!("rel-{}-{}", now_ms(), &data_hash[..data_hash.len().min(8)]);
        let mut name = base.clone();
        let mut n = 1;
        while self.version_dir(&name).exists() {
            n += 1;
            name = format!("{base}-{n}");
        }
        name
    }

    /// Stores a trained model as a new (not yet current) version.
    pub fn add(
        &self,
        model: &FeatureModel,
        data_hash: &str,
        metrics: serde_json::Value,
    ) -> Result<Manifest> {
        let version = model.file().version.clone();
        if version.is_empty() || version.contains(['/', '\\']) || version.starts_with('.') {
            return Err(LearnError::Registry(format!(
                "bad version name {version:?}"
            )));
        }
        let dir = self.version_dir(&version);
        if dir.exists() {
            return Err(LearnError::Registry(format!(
                "version {version} already exists in {}",
                self.dir.display()
            )));
        }
        std::fs::create_dir_all(&dir).map_err(|e| LearnError::io(&dir, e))?;
        let bytes = serde_json::to_vec_pretty(model.file())
            .map_err(|e| LearnError::Invalid(e.to_string()))?;
        write_atomic(&dir.join(MODEL), &bytes)?;
        let adapter_blake3 = match model.adapter() {
            Some(a) => {
                let adir = dir.join(crate::model::ADAPTER_DIR);
                a.save(&adir)?;
                Some(weights_hash(&adir)?)
            }
            None => None,
        };
        // The Core ML package for the Neural Engine (fp16, fixed shape).
        let f = model.file();
        let mlp = anectx_coreml::export::FeatureMlp {
            w1: f.w1.clone(),
            b1: f.b1.clone(),
            w2: f.w2.clone(),
            skip: f.skip.clone(),
            mean: f.mean.clone(),
            std: f.std.clone(),
        };
        anectx_coreml::export::export_feature_mlp(&mlp, COREML_CANDIDATES, 7)
            .and_then(|m| {
                anectx_coreml::export::write_feature_mlp(&m, &dir.join(COREML_PACKAGE), false)
            })
            .map_err(|e| LearnError::Registry(format!("Core ML export of {version}: {e}")))?;
        let manifest = Manifest {
            version,
            created_ms: now_ms(),
            model_blake3: blake3::hash(&bytes).to_hex().to_string(),
            data_hash: data_hash.to_string(),
            metrics,
            coreml: Some(COREML_PACKAGE.into()),
            adapter_blake3,
        };
        self.write_manifest(&manifest)?;
        Ok(manifest)
    }

    pub fn write_manifest(&self, m: &Manifest) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(m).map_err(|e| LearnError::Invalid(e.to_string()))?;
        write_atomic(&self.version_dir(&m.version).join(MANIFEST), &bytes)
    }

    pub fn manifest(&self, version: &str) -> Result<Manifest> {
        let path = self.version_dir(version).join(MANIFEST);
        let bytes = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                LearnError::Registry(format!("no version {version:?} in {}", self.dir.display()))
            } else {
                LearnError::io(&path, e)
            }
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| LearnError::Registry(format!("{}: corrupt manifest: {e}", path.display())))
    }

    /// All versions, oldest first.
    pub fn list(&self) -> Result<Vec<VersionInfo>> {
        let current = self.current()?;
        let dir = self.dir.join("versions");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(|e| LearnError::io(&dir, e))? {
            let e = e.map_err(|e| LearnError::io(&dir, e))?;
            let name = e.file_name().to_string_lossy().to_string();
            match self.manifest(&name) {
                Ok(m) => out.push(VersionInfo {
                    current: current.as_deref() == Some(m.version.as_str()),
                    manifest: m,
                }),
                Err(err) => tracing::warn!("skipping {name}: {err}"),
            }
        }
        out.sort_by(|a, b| {
            (a.manifest.created_ms, &a.manifest.version)
                .cmp(&(b.manifest.created_ms, &b.manifest.version))
        });
        Ok(out)
    }

    /// The current version (`None`: the built-in fusion model serves).
    pub fn current(&self) -> Result<Option<String>> {
        let path = self.dir.join(CURRENT);
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LearnError::io(&path, e)),
        }
    }

    /// Changes whenever the current version changes (servers poll it).
    pub fn stamp(&self) -> Result<String> {
        Ok(self.current()?.unwrap_or_else(|| "builtin".into()))
    }

    /// Loads and checks one version.
    pub fn load(&self, version: &str) -> Result<FeatureModel> {
        let m = self.manifest(version)?;
        let path = self.version_dir(version).join(MODEL);
        let bytes = std::fs::read(&path).map_err(|e| LearnError::io(&path, e))?;
        let got = blake3::hash(&bytes).to_hex().to_string();
        if got != m.model_blake3 {
            return Err(LearnError::Registry(format!(
                "version {version}: model.json checksum {} does not match the manifest's {} \
                 (the file is corrupt or was edited)",
                &got[..12],
                &m.model_blake3[..m.model_blake3.len().min(12)]
            )));
        }
        if let Some(want) = &m.adapter_blake3 {
            let got = weights_hash(&self.version_dir(version).join(crate::model::ADAPTER_DIR))?;
            if &got != want {
                return Err(LearnError::Registry(format!(
                    "version {version}: adapter weights checksum {} does not match the manifest's {}",
                    &got[..12],
                    &want[..want.len().min(12)]
                )));
            }
        }
        let model = FeatureModel::load(&path)?;
        if model.file().version != version {
            return Err(LearnError::Registry(format!(
                "version {version}: model.json names itself {:?}",
                model.file().version
            )));
        }
        Ok(model)
    }

    /// The model that should serve now: the current version, or the
    /// built-in fusion model when none was promoted.
    pub fn load_current(&self) -> Result<Arc<dyn RelevanceModel>> {
        match self.current()? {
            Some(v) => Ok(Arc::new(self.load(&v)?)),
            None => Ok(Arc::new(FusionRelevance::default())),
        }
    }

    /// Makes `version` current after checking that it loads.
    pub fn promote(&self, version: &str) -> Result<()> {
        self.load(version)?;
        let from = self.current()?;
        write_atomic(&self.dir.join(CURRENT), version.as_bytes())?;
        self.append_history("promote", from, Some(version.to_string()))
    }

    /// Returns to the version that was current before the last promotion
    /// (or the built-in model). Returns the version now current.
    pub fn rollback(&self) -> Result<Option<String>> {
        let cur = self.current()?;
        let Some(cur_v) = cur.clone() else {
            return Err(LearnError::Registry(
                "nothing to roll back: the built-in model is current".into(),
            ));
        };
        // Walk the history back to the promotion that made `cur` current.
        let history = self.history()?;
        let prev = history
            .iter()
            .rev()
            .find(|h| h.action == "promote" && h.to.as_deref() == Some(cur_v.as_str()))
            .and_then(|h| h.from.clone());
        match &prev {
            Some(p) => {
                self.load(p)?;
                write_atomic(&self.dir.join(CURRENT), p.as_bytes())?;
            }
            None => {
                let path = self.dir.join(CURRENT);
                std::fs::remove_file(&path).map_err(|e| LearnError::io(&path, e))?;
            }
        }
        self.append_history("rollback", cur, prev.clone())?;
        Ok(prev)
    }

    pub fn history(&self) -> Result<Vec<HistoryEntry>> {
        let path = self.dir.join(HISTORY);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(LearnError::io(&path, e)),
        };
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    fn append_history(&self, action: &str, from: Option<String>, to: Option<String>) -> Result<()> {
        use std::io::Write;
        let path = self.dir.join(HISTORY);
        let entry = HistoryEntry {
            ts_ms: now_ms(),
            action: action.into(),
            from,
            to,
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| LearnError::io(&path, e))?;
        let line = serde_json::to_string(&entry).map_err(|e| LearnError::Invalid(e.to_string()))?;
        writeln!(f, "{line}").map_err(|e| LearnError::io(&path, e))?;
        f.sync_all().map_err(|e| LearnError::io(&path, e))
    }
}
