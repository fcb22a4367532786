//! The usage memory's lifecycle: each registry version (and the built-in
//! model) may carry a memory, so promoting a version serves its memory and
//! `model rollback` rolls the memory back too.
//!
//! ```text
//! <registry>/versions/<version>/memory.json       the spec: watermark, analyzer, embedder, stats, data file
//! <registry>/versions/<version>/memory-<hash>.bin the snapshot (see anectx_engine::memory_file)
//! <registry>/builtin/memory.json, memory-<hash>.bin   the same for the built-in model
//! ```
//!
//! A version without `memory.json` serves without a memory. The snapshot is
//! checked when it is read (format, checksum, analyzer version, embedder,
//! and the spec's checksum of it); a refused snapshot is rebuilt from the
//! log up to the spec's watermark — what the log said when the memory was
//! made — and written again. Files are written atomically (0600): the data
//! file first, under a name of its own, then the spec that names it.

use std::path::{Path, PathBuf};

use anectx_engine::{Engine, MemoryConfig, MemoryFileError, MemoryStats, UsageMemory};
use serde::{Deserialize, Serialize};

use crate::analyzer::{Analyzer, ANALYZER_VERSION};
use crate::registry::{validate_version, write_atomic, Registry};
use crate::{LearnError, Result};

const SPEC: &str = "memory.json";
const BUILTIN: &str = "builtin";
/// Version of `memory.json`'s layout.
pub const MEMORY_SPEC_FORMAT: u32 = 1;

/// `memory.json`: what a version's memory was built from, and where it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemorySpec {
    pub format: u32,
    /// The registry version it belongs to (`None`: the built-in model).
    pub version: Option<String>,
    pub analyzer_version: String,
    /// The embedder its question vectors came from (`none`: terms only).
    pub embedder: String,
    /// Row id of the last interaction it holds (the log watermark).
    pub watermark: i64,
    pub config: MemoryConfig,
    pub created_ms: u64,
    pub stats: MemoryStats,
    /// The snapshot file in the same directory, and its blake3; `None`
    /// when the log had nothing used up to the watermark (the memory is off
    /// until something is).
    pub data: Option<String>,
    pub data_blake3: Option<String>,
    pub bytes: u64,
    /// The store whose chunk ids it holds ([`anectx_store::Db::local_id`]).
    /// Chunk ids are each store's own: a version taken from a shared
    /// registry carries the memory of the machine that trained it, which
    /// another replica refuses and rebuilds from its own log. Absent in
    /// specs written before it was recorded (accepted as this store's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_ids_of: Option<String>,
}

/// Why a stored snapshot was refused (it is then rebuilt from the log).
#[derive(Debug, thiserror::Error)]
pub enum MemoryRefused {
    #[error("{path}: the snapshot named by memory.json is missing")]
    Missing { path: PathBuf },
    #[error("{path}: the snapshot is not the one memory.json names (checksum {found}, expected {expected})")]
    NotTheSpecs {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error(
        "{path}: built in another store, whose chunk ids are not this store's (store {built_in}, \
         this one is {here})"
    )]
    OtherStore {
        path: PathBuf,
        built_in: String,
        here: String,
    },
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: MemoryFileError,
    },
}

/// A version's memory, as loaded.
#[derive(Debug)]
pub enum MemoryLoad {
    /// The version carries no memory: serve without one.
    None,
    /// The stored memory (`memory` is `None` when it remembers nothing yet).
    Loaded {
        spec: MemorySpec,
        memory: Option<UsageMemory>,
    },
    /// The snapshot was refused and rebuilt from the log up to its watermark
    /// (and written again).
    Rebuilt {
        spec: MemorySpec,
        memory: Option<UsageMemory>,
        refused: MemoryRefused,
    },
}

impl MemoryLoad {
    pub fn spec(&self) -> Option<&MemorySpec> {
        match self {
            Self::None => None,
            Self::Loaded { spec, .. } | Self::Rebuilt { spec, .. } => Some(spec),
        }
    }

    pub fn memory(&self) -> Option<&UsageMemory> {
        match self {
            Self::None => None,
            Self::Loaded { memory, .. } | Self::Rebuilt { memory, .. } => memory.as_ref(),
        }
    }

    pub fn into_memory(self) -> Option<UsageMemory> {
        match self {
            Self::None => None,
            Self::Loaded { memory, .. } | Self::Rebuilt { memory, .. } => memory,
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The directory holding the memory of `version` (`None`: the built-in
/// model). A named version must exist.
pub fn memory_dir(registry: &Registry, version: Option<&str>) -> Result<PathBuf> {
    match version {
        None => Ok(registry.dir().join(BUILTIN)),
        Some(v) => {
            validate_version(v)?;
            let d = registry.version_dir(v);
            if !d.is_dir() {
                return Err(LearnError::Registry(format!(
                    "no version {v:?} in {}",
                    registry.dir().display()
                )));
            }
            Ok(d)
        }
    }
}

/// The spec of `version`'s memory (`None`: it has none).
pub fn read_spec(registry: &Registry, version: Option<&str>) -> Result<Option<MemorySpec>> {
    let path = memory_dir(registry, version)?.join(SPEC);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LearnError::io(&path, e)),
    };
    let spec: MemorySpec = serde_json::from_slice(&bytes).map_err(|e| {
        LearnError::Registry(format!(
            "{}: corrupt memory spec ({e}); run `anectx memory rebuild` to write it again",
            path.display()
        ))
    })?;
    if spec.format != MEMORY_SPEC_FORMAT {
        return Err(LearnError::Registry(format!(
            "{}: memory spec format {}, but this build reads {MEMORY_SPEC_FORMAT}; run \
             `anectx memory rebuild`",
            path.display(),
            spec.format
        )));
    }
    if spec.version.as_deref() != version {
        return Err(LearnError::Registry(format!(
            "{}: the memory spec belongs to {:?}, not {:?}",
            path.display(),
            spec.version,
            version
        )));
    }
    if let Some(d) = &spec.data {
        if !is_data_name(d) {
            return Err(LearnError::Registry(format!(
                "{}: bad snapshot name {d:?}",
                path.display()
            )));
        }
    }
    Ok(Some(spec))
}

fn is_data_name(n: &str) -> bool {
    n.strip_prefix("memory-")
        .and_then(|r| r.strip_suffix(".bin"))
        .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A stamp that changes whenever `version`'s memory is written again
/// (empty when it has none): its data checksum and watermark.
pub fn memory_stamp(registry: &Registry, version: Option<&str>) -> Result<String> {
    Ok(match read_spec(registry, version)? {
        None => String::new(),
        Some(s) => format!(
            "memory:{}:{}",
            s.watermark,
            s.data_blake3
                .as_deref()
                .map_or("empty", |h| &h[..h.len().min(12)])
        ),
    })
}

/// Writes `memory` (or "nothing remembered up to `watermark`") as the
/// memory of `version`, replacing what was there.
pub fn save(
    registry: &Registry,
    version: Option<&str>,
    memory: Option<&UsageMemory>,
    embedder: &str,
    chunk_ids_of: &str,
    cfg: &MemoryConfig,
    watermark: i64,
) -> Result<MemorySpec> {
    let dir = memory_dir(registry, version)?;
    anectx_store::private::create_private_dir(&dir)?;
    let (data, data_blake3, bytes, stats) = match memory {
        Some(m) => {
            let b = m.to_bytes(embedder);
            let h = blake3::hash(&b).to_hex().to_string();
            let name = format!("memory-{}.bin", &h[..16]);
            write_atomic(&dir.join(&name), &b)?;
            (Some(name), Some(h), b.len() as u64, m.stats().clone())
        }
        None => (
            None,
            None,
            0,
            MemoryStats {
                analyzer_version: ANALYZER_VERSION.into(),
                watermark,
                ..MemoryStats::default()
            },
        ),
    };
    let spec = MemorySpec {
        format: MEMORY_SPEC_FORMAT,
        version: version.map(str::to_string),
        analyzer_version: stats.analyzer_version.clone(),
        embedder: embedder.to_string(),
        watermark: memory.map_or(watermark, |m| m.stats().watermark),
        config: cfg.clone(),
        created_ms: now_ms(),
        stats,
        data: data.clone(),
        data_blake3,
        bytes,
        chunk_ids_of: Some(chunk_ids_of.to_string()),
    };
    let json = serde_json::to_vec_pretty(&spec).map_err(|e| LearnError::Invalid(e.to_string()))?;
    write_atomic(&dir.join(SPEC), &json)?;
    remove_stale(&dir, data.as_deref());
    Ok(spec)
}

/// Removes snapshots the spec no longer names (best effort: a reader that
/// read the old spec and misses its file rebuilds from the log).
fn remove_stale(dir: &Path, keep: Option<&str>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if is_data_name(&name) && Some(name.as_str()) != keep {
            if let Err(err) = std::fs::remove_file(e.path()) {
                tracing::debug!("keeping {}: {err}", e.path().display());
            }
        }
    }
}

/// Reads and checks the snapshot a spec names.
fn read_data(
    dir: &Path,
    spec: &MemorySpec,
    engine: &Engine,
) -> std::result::Result<Option<UsageMemory>, MemoryRefused> {
    let (Some(name), Some(want)) = (&spec.data, &spec.data_blake3) else {
        return Ok(None);
    };
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(|_| MemoryRefused::Missing { path: path.clone() })?;
    let got = blake3::hash(&bytes).to_hex().to_string();
    if &got != want {
        // Say what the file itself is first (truncated, corrupt, foreign).
        if let Err(source) = anectx_engine::memory_file::memory_file_info(&bytes) {
            return Err(MemoryRefused::File { path, source });
        }
        return Err(MemoryRefused::NotTheSpecs {
            path,
            found: got[..12].into(),
            expected: want[..want.len().min(12)].into(),
        });
    }
    let embedder = engine
        .memory_embedder_id()
        .map_err(|e| MemoryRefused::File {
            path: path.clone(),
            source: MemoryFileError::Corrupt(e.to_string()),
        })?;
    UsageMemory::from_bytes(&bytes, ANALYZER_VERSION, &embedder)
        .map(Some)
        .map_err(|source| MemoryRefused::File { path, source })
}

/// Loads the memory of `version` for `engine`. A snapshot that is missing,
/// corrupt, truncated, foreign, or built with another analyzer version or
/// embedder is refused (logged as a warning) and rebuilt from the log up
/// to the spec's watermark, then written again. One built in another store
/// (its chunk ids are that store's) is rebuilt from this store's whole log.
pub fn load(
    engine: &Engine,
    registry: &Registry,
    version: Option<&str>,
    analyzer: &Analyzer,
) -> Result<MemoryLoad> {
    let Some(spec) = read_spec(registry, version)? else {
        return Ok(MemoryLoad::None);
    };
    let dir = memory_dir(registry, version)?;
    let here = engine.store().db.local_id()?;
    if let Some(built_in) = spec.chunk_ids_of.clone().filter(|b| *b != here) {
        // Its chunk ids are another store's: rebuilt from this store's log,
        // all of it (the spec's watermark counts the other store's rows).
        let refused = MemoryRefused::OtherStore {
            path: dir.join(SPEC),
            built_in,
            here,
        };
        let until = engine.store().db.last_interaction_id()?;
        return rebuild_refused(engine, registry, version, analyzer, &spec, refused, until);
    }
    let refused = match read_data(&dir, &spec, engine) {
        Ok(memory) if spec.analyzer_version == ANALYZER_VERSION => {
            return Ok(MemoryLoad::Loaded { spec, memory });
        }
        // A spec with nothing remembered, from another analyzer version.
        Ok(_) => MemoryRefused::File {
            path: dir.join(SPEC),
            source: MemoryFileError::Analyzer {
                found: spec.analyzer_version.clone(),
                expected: ANALYZER_VERSION.into(),
            },
        },
        Err(refused) => refused,
    };
    let until = spec.watermark;
    rebuild_refused(engine, registry, version, analyzer, &spec, refused, until)
}

fn rebuild_refused(
    engine: &Engine,
    registry: &Registry,
    version: Option<&str>,
    analyzer: &Analyzer,
    spec: &MemorySpec,
    refused: MemoryRefused,
    until: i64,
) -> Result<MemoryLoad> {
    tracing::warn!(
        "usage memory of {} refused: {refused}; rebuilding it from the interaction log up to \
         interaction {until}",
        version.unwrap_or("the built-in model"),
    );
    crate::train::label_log(&engine.store().db, analyzer)?;
    let memory = engine.build_memory_until(ANALYZER_VERSION, &spec.config, &|_| true, until)?;
    let spec = save(
        registry,
        version,
        memory.as_ref(),
        &engine.memory_embedder_id()?,
        &engine.store().db.local_id()?,
        &spec.config,
        until,
    )?;
    tracing::warn!(
        "usage memory of {} rebuilt: {} questions, {} (question, chunk) pairs",
        version.unwrap_or("the built-in model"),
        spec.stats.questions,
        spec.stats.pairs
    );
    Ok(MemoryLoad::Rebuilt {
        spec,
        memory,
        refused,
    })
}

/// What [`rebuild`] did.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildReport {
    pub version: Option<String>,
    /// Interactions the analyzer labelled now (the rest were labelled).
    pub newly_labelled: usize,
    pub spec: MemorySpec,
    pub seconds: f64,
}

/// Labels the whole log, builds the memory from it (up to the newest
/// interaction) with `cfg`, and writes it as the memory of `version`.
/// `step` is told what happens, for progress output.
pub fn rebuild(
    engine: &Engine,
    registry: &Registry,
    version: Option<&str>,
    analyzer: &Analyzer,
    cfg: &MemoryConfig,
    step: &dyn Fn(&str),
) -> Result<RebuildReport> {
    let t0 = std::time::Instant::now();
    memory_dir(registry, version)?;
    let db = &engine.store().db;
    let watermark = db.last_interaction_id()?;
    step(&format!(
        "labelling usage in {} logged interactions",
        db.interaction_count()?
    ));
    let newly_labelled = crate::train::label_log(db, analyzer)?;
    step(&format!(
        "building the memory from the log up to interaction {watermark}"
    ));
    let memory = engine.build_memory_until(ANALYZER_VERSION, cfg, &|_| true, watermark)?;
    step("writing it");
    let spec = save(
        registry,
        version,
        memory.as_ref(),
        &engine.memory_embedder_id()?,
        &engine.store().db.local_id()?,
        cfg,
        watermark,
    )?;
    Ok(RebuildReport {
        version: version.map(str::to_string),
        newly_labelled,
        spec,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// How often the memory was used by the selections logged after it was
/// built (see [`hit_rates`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HitRates {
    /// Interactions logged after the memory's watermark that have a
    /// candidate pool.
    pub interactions: u64,
    /// Of them, those with a candidate carrying near-duplicate usage
    /// evidence (a logged question within the similarity threshold used it).
    pub near_duplicate: u64,
    /// Of them, those with a candidate the "asked as" field matched.
    pub asked_as: u64,
    /// Of them, those with either.
    pub any: u64,
    /// The three shares (`None` when no interaction was logged since).
    pub near_duplicate_rate: Option<f64>,
    pub asked_as_rate: Option<f64>,
    pub any_rate: Option<f64>,
}

/// Hit rates over the interactions logged after row `after`: for each
/// logged candidate pool, whether a candidate's logged features carry
/// near-duplicate evidence (`dup_used` > 0) or an "asked as" score.
pub fn hit_rates(db: &anectx_store::Db, after: i64) -> Result<HitRates> {
    let mut h = HitRates::default();
    let mut at = after;
    loop {
        let page = db.interactions(at, 500)?;
        let Some(last) = page.last() else { break };
        at = last.0;
        for (_, it) in &page {
            if it.candidates.is_empty() {
                continue;
            }
            h.interactions += 1;
            let (mut dup, mut asked) = (false, false);
            for c in &it.candidates {
                let Ok(f) = serde_json::from_value::<anectx_engine::Features>(c.features.clone())
                else {
                    continue;
                };
                dup |= f.dup_used.is_some_and(|u| u > 0.0);
                asked |= f.memory.is_some();
            }
            h.near_duplicate += dup as u64;
            h.asked_as += asked as u64;
            h.any += (dup || asked) as u64;
        }
    }
    let rate = |n: u64| (h.interactions > 0).then(|| n as f64 / h.interactions as f64);
    h.near_duplicate_rate = rate(h.near_duplicate);
    h.asked_as_rate = rate(h.asked_as);
    h.any_rate = rate(h.any);
    Ok(h)
}
