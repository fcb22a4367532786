//! Core ML export for anectx, in pure Rust: no Python, no Mac.
//!
//! - [`program`]: the in-memory ML Program ([`Model`], [`Program`],
//!   [`Function`], [`Block`], [`Operation`], typed values and the model
//!   description), public so that checkers can walk it;
//! - [`builder`]: a typed MIL builder with shape inference for the ops the
//!   exporters emit;
//! - [`write_package`] / [`read_package`]: `.mlpackage` directories exactly as
//!   coremltools 9 lays them out (`Manifest.json`, `model.mlmodel`, blob
//!   storage v2 `weight.bin` with 64-byte alignment); the reader also takes
//!   packages written by coremltools;
//! - [`export`]: exporters for `ConvEmbedder`, `ConvClassifier` and `AneBert`
//!   following Apple's ANE recipe (fp16, `(1, C, 1, S)`, 1×1/1×k convs,
//!   channel layer norm, per-head attention, `-1e4` masks);
//! - [`exec`]: a reference executor for the MIL ops the exporters emit,
//!   computing in f32 on CPU, so numeric parity is testable on Linux;
//! - [`runtime`]: runs an exported package on text (tokenizer and embedding
//!   tables travel inside the package, see [`runtime::SIDE_DIR`]).

pub mod auto;
pub mod blob;
pub mod builder;
pub mod check;
mod convert;
mod error;
pub mod exec;
pub mod export;
pub mod ops;
pub mod package;
pub mod program;
pub mod proto;
pub mod runtime;
pub mod validate;

pub use error::{BlobProblem, CoremlError, Result};
pub use package::{read_package, write_package, WriteOptions, WrittenPackage};
pub use program::{
    ArrayDataType, ArrayFeature, Binding, Block, DataType, Description, Dim, Feature, FeatureType,
    Function, Metadata, Model, NamedType, Operation, Program, ShapeFlexibility, TensorData,
    TensorType, TensorValue, Value, ValueType,
};
