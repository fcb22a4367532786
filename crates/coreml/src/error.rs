use std::path::PathBuf;

use thiserror::Error;

/// What is wrong with a blob in `weights/weight.bin`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BlobProblem {
    #[error("the file is {len} bytes, shorter than its 64-byte storage header")]
    TruncatedHeader { len: u64 },
    #[error("storage version {0} (only version 2 is supported)")]
    Version(u32),
    #[error("offset {offset} is past the end of the {len}-byte file")]
    OffsetPastEnd { offset: u64, len: u64 },
    #[error("offset {0} is not 64-byte aligned")]
    Misaligned(u64),
    #[error("bad sentinel {found:#010x} (expected 0xdeadbeef): the offset does not point at a blob metadata record")]
    BadSentinel { found: u32 },
    #[error("the blob holds type code {found} but the value is declared {expected}")]
    DtypeMismatch { found: u32, expected: String },
    #[error("the blob has {found} bytes but its declared type needs {expected}")]
    SizeMismatch { found: u64, expected: u64 },
    #[error("the data ({size} bytes at {data_offset}) runs past the end of the {len}-byte file: weight.bin is truncated")]
    Truncated {
        data_offset: u64,
        size: u64,
        len: u64,
    },
    #[error("the program refers to weight blobs but weights/weight.bin is missing")]
    MissingFile,
    #[error("{0} values cannot be stored in weight.bin")]
    UnsupportedType(String),
}

/// Errors from writing, reading, exporting and executing ML Program packages.
#[derive(Debug, Error)]
pub enum CoremlError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not an .mlpackage: Manifest.json is missing")]
    MissingManifest(PathBuf),
    #[error("invalid Manifest.json in {path}: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("Manifest.json in {path}: rootModelIdentifier {identifier:?} names no entry of itemInfoEntries")]
    RootModelMissing { path: PathBuf, identifier: String },
    #[error("{path} is not a valid Core ML model protobuf: {message}")]
    Protobuf { path: PathBuf, message: String },
    #[error("{path} is not an ML Program (model type: {found})")]
    NotMlProgram { path: PathBuf, found: String },
    #[error("weight blob at offset {offset} in {path}: {problem}")]
    Blob {
        path: PathBuf,
        offset: u64,
        problem: BlobProblem,
    },
    #[error("unknown MIL op type {op_type:?} (op {op_name:?})")]
    UnknownOp { op_type: String, op_name: String },
    #[error("model description and program disagree: {0}")]
    DescriptionMismatch(String),
    #[error("invalid program: {0}")]
    InvalidProgram(String),
    #[error("{path} already exists; not replacing it (`anectx export coreml --force` or `WriteOptions::overwrite` replaces an existing package)")]
    Exists { path: PathBuf },
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("export: {0}")]
    Export(String),
    #[error("executing op {op:?} ({op_type}): {message}")]
    Exec {
        op: String,
        op_type: String,
        message: String,
    },
    #[error("input: {0}")]
    Input(String),
    #[error(transparent)]
    Model(#[from] anectx_models::ModelError),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias for this crate.
pub type Result<T, E = CoremlError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CoremlError {
    let path = path.into();
    move |source| CoremlError::Io { path, source }
}
