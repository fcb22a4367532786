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
//! `CURRENT` is replaced atomically (a uniquely named temporary file,
//! fsynced, renamed over it, then the directory fsynced), so a server
//! polling [`Registry::stamp`] sees either the old or the new version, and
//! a crash leaves one of them. A version is checked (checksum, shapes,
//! finite weights) before it is promoted, and again when a server loads it;
//! a version that fails is refused. An empty or unreadable `CURRENT` is an
//! error, never a silent fallback to the built-in model.
//!
//! Version names are checked everywhere a name comes in (add, load,
//! promote, rollback, `CURRENT`, the history): 1 to 128 of `A-Z a-z 0-9 . _
//! -`, not starting with `.`, so no name can leave `versions/`. On Unix the
//! registry's directories are 0700 and its files 0600.

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

/// Longest version name.
pub const MAX_VERSION_LEN: usize = 128;

/// Checks a version name: 1 to [`MAX_VERSION_LEN`] ASCII letters, digits,
/// `.`, `_` or `-`, not starting with `.` (so not `.`, `..` or hidden), and
/// thus never a path (no `/`, `\\`, drive or root).
pub fn validate_version(version: &str) -> Result<()> {
    let ok = !version.is_empty()
        && version.len() <= MAX_VERSION_LEN
        && !version.starts_with('.')
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(LearnError::Registry(format!(
            "bad version name {version:?}: use 1 to {MAX_VERSION_LEN} letters, digits, `.`, `_` \
             or `-`, not starting with `.`"
        )))
    }
}

/// Fsyncs a directory so that a rename or removal in it is durable
/// (a no-op where directories cannot be opened, as on Windows).
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let d = std::fs::File::open(dir).map_err(|e| LearnError::io(dir, e))?;
        d.sync_all().map_err(|e| LearnError::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// A temporary name beside `path` that no other writer uses: process id,
/// a per-process counter and the time.
fn temp_path(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    path.with_file_name(format!(
        ".{name}.{}.{}.{nanos}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Writes `bytes` to `path` atomically: a new uniquely named file (0600 on
/// Unix), fsynced, renamed over `path`, then the directory fsynced. Every
/// error is returned; the temporary file is removed on failure.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = temp_path(path);
    let write = || -> Result<()> {
        let mut f = anectx_store::private::private_file_options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| LearnError::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| LearnError::io(&tmp, e))?;
        f.sync_all().map_err(|e| LearnError::io(&tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| LearnError::io(path, e))
    };
    if let Err(e) = write() {
        // Best effort: the write already failed, and that error is returned.
        std::fs::remove_file(&tmp).ok();
        return Err(e);
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

impl Registry {
    /// Opens (creating when missing) a registry directory.
    pub fn open(dir: &Path) -> Result<Self> {
        anectx_store::private::create_private_dir(dir)?;
        anectx_store::private::create_private_dir(&dir.join("versions"))?;
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
        let tag: String = data_hash
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(8)
            .collect();
        let base = format!("rel-{}-{tag}", now_ms());
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
        validate_version(&version)?;
        let dir = self.version_dir(&version);
        if dir.exists() {
            return Err(LearnError::Registry(format!(
                "version {version} already exists in {}",
                self.dir.display()
            )));
        }
        anectx_store::private::create_private_dir(&dir)?;
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
        // The adapter and the Core ML package are written by other code.
        anectx_store::private::tighten(&dir)?;
        self.write_manifest(&manifest)?;
        Ok(manifest)
    }

    pub fn write_manifest(&self, m: &Manifest) -> Result<()> {
        validate_version(&m.version)?;
        let bytes = serde_json::to_vec_pretty(m).map_err(|e| LearnError::Invalid(e.to_string()))?;
        write_atomic(&self.version_dir(&m.version).join(MANIFEST), &bytes)
    }

    pub fn manifest(&self, version: &str) -> Result<Manifest> {
        validate_version(version)?;
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
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LearnError::io(&path, e)),
        };
        let corrupt = |why: &str| {
            LearnError::Registry(format!(
                "{} is {why}; it should name one version (or be absent for the built-in \
                 model): promote a version again, or delete the file",
                path.display()
            ))
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| corrupt("not text"))?;
        let v = text.trim();
        if v.is_empty() {
            return Err(corrupt("empty"));
        }
        validate_version(v).map_err(|e| corrupt(&format!("corrupt ({e})")))?;
        Ok(Some(v.to_string()))
    }

    /// Changes whenever the current version changes (servers poll it).
    pub fn stamp(&self) -> Result<String> {
        Ok(self.current()?.unwrap_or_else(|| "builtin".into()))
    }

    /// Loads and checks one version.
    pub fn load(&self, version: &str) -> Result<FeatureModel> {
        validate_version(version)?;
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
        validate_version(version)?;
        self.load(version)?;
        let from = self.current()?;
        write_atomic(&self.dir.join(CURRENT), version.as_bytes())?;
        self.append_history("promote", from, Some(version.to_string()))
    }

    /// Makes `version` current (`None`: the built-in model) because a
    /// shared registry says so; recorded in the history as `follow`. A
    /// version is checked as for [`Registry::promote`].
    pub fn follow(&self, version: Option<&str>) -> Result<()> {
        let from = self.current()?;
        match version {
            Some(v) => {
                validate_version(v)?;
                self.load(v)?;
                write_atomic(&self.dir.join(CURRENT), v.as_bytes())?;
            }
            None => {
                let path = self.dir.join(CURRENT);
                match std::fs::remove_file(&path) {
                    Ok(()) => sync_dir(&self.dir)?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(LearnError::io(&path, e)),
                }
            }
        }
        self.append_history("follow", from, version.map(str::to_string))
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
            .find(|h| {
                (h.action == "promote" || h.action == "follow")
                    && h.to.as_deref() == Some(cur_v.as_str())
            })
            .and_then(|h| h.from.clone());
        match &prev {
            Some(p) => {
                validate_version(p)?;
                self.load(p)?;
                write_atomic(&self.dir.join(CURRENT), p.as_bytes())?;
            }
            None => {
                let path = self.dir.join(CURRENT);
                std::fs::remove_file(&path).map_err(|e| LearnError::io(&path, e))?;
                sync_dir(&self.dir)?;
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
        let mut f = anectx_store::private::private_file_options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| LearnError::io(&path, e))?;
        let line = serde_json::to_string(&entry).map_err(|e| LearnError::Invalid(e.to_string()))?;
        writeln!(f, "{line}").map_err(|e| LearnError::io(&path, e))?;
        f.sync_all().map_err(|e| LearnError::io(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{FEATURE_NAMES, N_FEATURES};
    use crate::model::{FeatureModelFile, FORMAT};

    fn tiny(version: &str) -> FeatureModel {
        FeatureModel::from_file(FeatureModelFile {
            format: FORMAT.into(),
            version: version.into(),
            feature_names: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
            mean: vec![0.0; N_FEATURES],
            std: vec![1.0; N_FEATURES],
            w1: vec![0.1; 2 * N_FEATURES],
            b1: vec![0.0; 2],
            w2: vec![1.0; 2],
            skip: vec![0.5; N_FEATURES],
            adapter: false,
        })
        .unwrap()
    }

    const BAD: &[&str] = &[
        "",
        ".",
        "..",
        "../x",
        "../../etc",
        "a/b",
        "a\\b",
        "/abs",
        "/tmp/evil",
        "C:evil",
        ".hidden",
        "a b",
        "é",
        "a\n",
    ];

    #[test]
    fn bad_version_names_are_refused_everywhere() {
        let t = tempfile::tempdir().unwrap();
        let reg = Registry::open(&t.path().join("reg")).unwrap();
        // A version directory outside `versions/` that a `..` name would reach.
        let outside = Registry::open(&t.path().join("other")).unwrap();
        outside
            .add(&tiny("v1"), "h", serde_json::Value::Null)
            .unwrap();
        let escape = "../../other/versions/v1";
        assert!(reg.load(escape).is_err());
        assert!(reg.promote(escape).is_err());
        assert!(!reg.dir().join(CURRENT).exists());
        for bad in BAD.iter().chain([&escape]) {
            let e = reg
                .add(&tiny(bad), "h", serde_json::Value::Null)
                .unwrap_err();
            assert!(e.to_string().contains("bad version name"), "{bad:?}: {e}");
            let e = reg.load(bad).unwrap_err();
            assert!(e.to_string().contains("bad version name"), "{bad:?}: {e}");
            let e = reg.promote(bad).unwrap_err();
            assert!(e.to_string().contains("bad version name"), "{bad:?}: {e}");
            let e = reg.manifest(bad).unwrap_err();
            assert!(e.to_string().contains("bad version name"), "{bad:?}: {e}");
        }
        let long = "v".repeat(MAX_VERSION_LEN + 1);
        assert!(validate_version(&long).is_err());
        for good in ["v1", "rel-1764000000000-1a2b3c4d", "a.b_c-D"] {
            validate_version(good).unwrap();
        }
        // Only `v1` of the other registry exists, and nothing was written here.
        assert_eq!(
            std::fs::read_dir(reg.dir().join("versions"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn rollback_refuses_a_forged_history_entry() {
        let t = tempfile::tempdir().unwrap();
        let reg = Registry::open(t.path()).unwrap();
        reg.add(&tiny("v1"), "h", serde_json::Value::Null).unwrap();
        reg.promote("v1").unwrap();
        // A history line claiming v1 replaced a version outside the registry.
        let forged = HistoryEntry {
            ts_ms: 1,
            action: "promote".into(),
            from: Some("../../../tmp/evil".into()),
            to: Some("v1".into()),
        };
        let mut h = std::fs::read_to_string(t.path().join(HISTORY)).unwrap();
        h.push_str(&serde_json::to_string(&forged).unwrap());
        h.push('\n');
        std::fs::write(t.path().join(HISTORY), h).unwrap();
        let e = reg.rollback().unwrap_err();
        assert!(e.to_string().contains("bad version name"), "{e}");
        assert_eq!(reg.current().unwrap().as_deref(), Some("v1"));
    }

    #[test]
    fn an_empty_or_corrupt_current_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let reg = Registry::open(t.path()).unwrap();
        assert_eq!(reg.current().unwrap(), None);
        assert_eq!(
            reg.load_current().unwrap().version(),
            FusionRelevance::default().version()
        );
        let cur = t.path().join(CURRENT);
        for (bytes, why) in [
            (&b""[..], "is empty"),
            (b"  \n", "is empty"),
            (b"../../etc/passwd", "corrupt"),
            (b"\xff\xfe", "not text"),
        ] {
            std::fs::write(&cur, bytes).unwrap();
            let e = reg.current().unwrap_err().to_string();
            assert!(e.contains(why), "{bytes:?}: {e}");
            assert!(reg.stamp().is_err());
            assert!(reg.load_current().is_err());
        }
        // A valid name with a trailing newline (as `echo v1 > CURRENT` writes) reads back.
        std::fs::write(&cur, "v1\n").unwrap();
        assert_eq!(reg.current().unwrap().as_deref(), Some("v1"));
    }

    #[test]
    fn writes_are_atomic_unique_and_propagate_errors() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("CURRENT");
        // Two temporary names for one target never collide.
        assert_ne!(temp_path(&target), temp_path(&target));
        write_atomic(&target, b"v1").unwrap();
        write_atomic(&target, b"v2").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"v2");
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["CURRENT"]);
        // An unwritable destination is an error, not a silent success.
        let e = write_atomic(&t.path().join("missing-dir/CURRENT"), b"v1").unwrap_err();
        assert!(e.to_string().contains("missing-dir"), "{e}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&target).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let reg = Registry::open(&t.path().join("reg")).unwrap();
            reg.add(&tiny("v1"), "h", serde_json::Value::Null).unwrap();
            reg.promote("v1").unwrap();
            let mut stack = vec![reg.dir().to_path_buf()];
            while let Some(p) = stack.pop() {
                let m = std::fs::symlink_metadata(&p).unwrap();
                assert_eq!(m.permissions().mode() & 0o077, 0, "{}", p.display());
                if m.is_dir() {
                    stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
                }
            }
        }
    }
}
