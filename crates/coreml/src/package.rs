//! `.mlpackage` directories: `Manifest.json`, `Data/com.apple.CoreML/model.mlmodel`
//! and `Data/com.apple.CoreML/weights/weight.bin`, laid out exactly as
//! coremltools 9 writes them.

use std::path::{Path, PathBuf};

use prost::Message;
use serde_json::{json, Value as Json};

use crate::blob::BlobReader;
use crate::convert::{assign_blobs, model_from_proto, model_to_proto, ReadCtx};
use crate::error::{io_err, CoremlError, Result};
use crate::program::Model;
use crate::proto;
use crate::validate::{check_description, check_program, check_versions, Strictness};

pub const MANIFEST_FILE: &str = "Manifest.json";
/// The data folder of the package, relative to its root.
pub const DATA_DIR: &str = "Data";
/// Where coremltools puts the model, relative to `Data/`.
pub const MODEL_PATH: &str = "com.apple.CoreML/model.mlmodel";
/// The weights folder, relative to `Data/`.
pub const WEIGHTS_PATH: &str = "com.apple.CoreML/weights";
pub const WEIGHT_FILE: &str = "weight.bin";
pub const AUTHOR: &str = "com.apple.CoreML";

/// Options for [`write_package`].
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Replace an existing package at the path (only if it has a Manifest.json).
    pub overwrite: bool,
    /// Extra files written into the package, as paths relative to its root
    /// (e.g. `Data/com.anectx/tokenizer.json`). They are not listed in the
    /// manifest, which keeps coremltools' two entries.
    pub extra_files: Vec<(PathBuf, Vec<u8>)>,
}

/// What [`write_package`] wrote.
#[derive(Debug, Clone)]
pub struct WrittenPackage {
    /// The model as written, with blob offsets assigned: reading the
    /// package back gives exactly this.
    pub model: Model,
    pub model_bytes: usize,
    pub weight_bytes: usize,
}

fn fnv1a(seed: u64, data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A lowercase, version-4-formatted UUID derived from `data`, so the same
/// model always gets the same manifest.
fn content_uuid(data: &[u8], label: &str) -> String {
    let a = fnv1a(fnv1a(1, label.as_bytes()), data);
    let b = fnv1a(fnv1a(2, label.as_bytes()), data);
    let mut x = [0u8; 16];
    x[..8].copy_from_slice(&a.to_be_bytes());
    x[8..].copy_from_slice(&b.to_be_bytes());
    x[6] = (x[6] & 0x0f) | 0x40;
    x[8] = (x[8] & 0x3f) | 0x80;
    let h: String = x.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn manifest(model_bytes: &[u8]) -> Json {
    let model_id = content_uuid(model_bytes, "model");
    let weights_id = content_uuid(model_bytes, "weights");
    json!({
        "fileFormatVersion": "1.0.0",
        "itemInfoEntries": {
            model_id.clone(): {
                "author": AUTHOR,
                "description": "CoreML Model Specification",
                "name": "model.mlmodel",
                "path": MODEL_PATH,
            },
            weights_id: {
                "author": AUTHOR,
                "description": "CoreML Model Weights",
                "name": "weights",
                "path": WEIGHTS_PATH,
            },
        },
        "rootModelIdentifier": model_id,
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    std::fs::write(path, bytes).map_err(io_err(path))
}

/// Checks `model` and writes it as an `.mlpackage` directory at `path`.
pub fn write_package(model: &Model, path: &Path, opts: &WriteOptions) -> Result<WrittenPackage> {
    check_versions(model)?;
    check_program(&model.program, Strictness::Write)?;
    check_description(model)?;
    let mut m = model.clone();
    let weights = assign_blobs(&mut m).map_err(|(op, problem)| CoremlError::Blob {
        path: PathBuf::from(format!("{WEIGHTS_PATH}/{WEIGHT_FILE} (const op {op})")),
        offset: 0,
        problem,
    })?;
    let bytes = model_to_proto(&m).encode_to_vec();

    if path.exists() {
        if opts.overwrite && path.join(MANIFEST_FILE).is_file() {
            std::fs::remove_dir_all(path).map_err(io_err(path))?;
        } else {
            return Err(CoremlError::Exists {
                path: path.to_path_buf(),
            });
        }
    }
    let data = path.join(DATA_DIR);
    write_file(&data.join(MODEL_PATH), &bytes)?;
    write_file(&data.join(WEIGHTS_PATH).join(WEIGHT_FILE), &weights)?;
    let mut text = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut text, fmt);
    serde::Serialize::serialize(&manifest(&bytes), &mut ser).map_err(|e| {
        CoremlError::Manifest {
            path: path.join(MANIFEST_FILE),
            message: e.to_string(),
        }
    })?;
    write_file(&path.join(MANIFEST_FILE), &text)?;
    for (rel, content) in &opts.extra_files {
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(CoremlError::Export(format!(
                "extra file path {} must be relative and stay inside the package",
                rel.display()
            )));
        }
        write_file(&path.join(rel), content)?;
    }
    tracing::debug!(
        path = %path.display(),
        model_bytes = bytes.len(),
        weight_bytes = weights.len(),
        "wrote ML Program package"
    );
    Ok(WrittenPackage {
        model: m,
        model_bytes: bytes.len(),
        weight_bytes: weights.len(),
    })
}

/// Where the parts of a package are, from its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageLayout {
    pub root: PathBuf,
    /// The root model file (`model.mlmodel`).
    pub model_file: PathBuf,
    /// `weights/weight.bin` next to the model file (`@model_path/weights/weight.bin`).
    pub weight_file: PathBuf,
}

fn version_ok(v: &str) -> bool {
    let parts: Vec<Option<u64>> = v.split('.').map(|p| p.parse().ok()).collect();
    match parts.as_slice() {
        [Some(a), Some(b), Some(c)] => (*a, *b, *c) <= (1, 0, 0),
        _ => false,
    }
}

/// Reads `Manifest.json` and locates the root model.
pub fn read_layout(root: &Path) -> Result<PackageLayout> {
    let mpath = root.join(MANIFEST_FILE);
    if !mpath.is_file() {
        return Err(CoremlError::MissingManifest(root.to_path_buf()));
    }
    let bad = |message: String| CoremlError::Manifest {
        path: root.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(&mpath).map_err(io_err(&mpath))?;
    let j: Json = serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let version = j
        .get("fileFormatVersion")
        .and_then(Json::as_str)
        .ok_or_else(|| bad("fileFormatVersion is missing".into()))?;
    if !version_ok(version) {
        return Err(bad(format!(
            "fileFormatVersion {version:?} is not supported (at most 1.0.0)"
        )));
    }
    let entries = j
        .get("itemInfoEntries")
        .and_then(Json::as_object)
        .ok_or_else(|| bad("itemInfoEntries is missing or not an object".into()))?;
    let id = j
        .get("rootModelIdentifier")
        .and_then(Json::as_str)
        .ok_or_else(|| bad("rootModelIdentifier is missing".into()))?;
    let entry = entries
        .get(id)
        .ok_or_else(|| CoremlError::RootModelMissing {
            path: root.to_path_buf(),
            identifier: id.to_string(),
        })?;
    let rel = entry
        .get("path")
        .and_then(Json::as_str)
        .ok_or_else(|| bad(format!("entry {id:?} has no path")))?;
    let rel_path = Path::new(rel);
    if rel_path.is_absolute()
        || rel_path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(bad(format!(
            "entry {id:?} has path {rel:?} outside the package"
        )));
    }
    let model_file = root.join(DATA_DIR).join(rel_path);
    if !model_file.is_file() {
        return Err(bad(format!(
            "the root model {} does not exist",
            model_file.display()
        )));
    }
    let weight_file = model_file
        .parent()
        .unwrap_or(root)
        .join("weights")
        .join(WEIGHT_FILE);
    Ok(PackageLayout {
        root: root.to_path_buf(),
        model_file,
        weight_file,
    })
}

/// Decodes a `model.mlmodel` protobuf image (no weights resolved).
pub fn decode_model_proto(bytes: &[u8], path: &Path) -> Result<proto::Model> {
    proto::Model::decode(bytes).map_err(|e| CoremlError::Protobuf {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Parses an in-memory package: the model protobuf and the `weight.bin`
/// image (if any). `path` names the model in errors.
pub fn parse_model(
    model_bytes: &[u8],
    weights: Option<&[u8]>,
    path: &Path,
    weight_path: &Path,
) -> Result<Model> {
    let p = decode_model_proto(model_bytes, path)?;
    let blobs = match weights {
        Some(w) => Some(BlobReader::new(w).map_err(|problem| CoremlError::Blob {
            path: weight_path.to_path_buf(),
            offset: 0,
            problem,
        })?),
        None => None,
    };
    let ctx = ReadCtx {
        blobs,
        blob_path: weight_path.to_path_buf(),
    };
    let m = model_from_proto(&p, path, &ctx)?;
    check_program(&m.program, Strictness::Read)?;
    check_description(&m)?;
    Ok(m)
}

/// Reads an `.mlpackage` directory into a [`Model`], resolving weight blobs
/// and checking the program (known ops, defined variables) and that the
/// description agrees with it.
pub fn read_package(root: &Path) -> Result<Model> {
    let layout = read_layout(root)?;
    let bytes = std::fs::read(&layout.model_file).map_err(io_err(&layout.model_file))?;
    let weights = if layout.weight_file.is_file() {
        Some(std::fs::read(&layout.weight_file).map_err(io_err(&layout.weight_file))?)
    } else {
        None
    };
    parse_model(
        &bytes,
        weights.as_deref(),
        &layout.model_file,
        &layout.weight_file,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_look_like_coremltools_and_are_stable() {
        let a = content_uuid(b"abc", "model");
        assert_eq!(a.len(), 36);
        assert_eq!(a, content_uuid(b"abc", "model"));
        assert_ne!(a, content_uuid(b"abc", "weights"));
        assert_eq!(&a[14..15], "4");
        assert!(a
            .chars()
            .all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn manifest_versions() {
        assert!(version_ok("1.0.0"));
        assert!(version_ok("0.9.1"));
        assert!(!version_ok("1.0.1"));
        assert!(!version_ok("2.0.0"));
        assert!(!version_ok("x"));
    }
}
