//! The in-memory form of an ML Program package.
//!
//! These types mirror Core ML's `Model` / `ModelDescription` and MIL's
//! `Program` / `Function` / `Block` / `Operation` closely enough that every
//! package this crate writes, and every package coremltools 9 writes for the
//! ops it knows, can be read into them and written back. They are the
//! representation that checkers (e.g. a static ANE-residency check) walk:
//!
//! - [`Model`]: specification version, [`Description`] (the public inputs and
//!   outputs with their array types and enumerated shapes) and the [`Program`];
//! - [`Function`]: typed inputs, the opset (`"CoreML6"` = iOS 16) and its
//!   [`Block`];
//! - [`Block`]: [`Operation`]s in topological order and the names of the
//!   block's output variables;
//! - [`Operation`]: op type (`"conv"`), name, inputs (parameter → bindings to
//!   variables or inline values), typed outputs, nested blocks and attributes
//!   (a `const` op's value is its `val` attribute, see [`Operation::const_value`]).

use std::collections::BTreeMap;

use half::f16;
use serde::Serialize;

/// MIL element types (`MILSpec.DataType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    Bool,
    String,
    F16,
    F32,
    F64,
    BF16,
    I8,
    I16,
    I32,
    I64,
    I4,
    U8,
    U16,
    U32,
    U64,
    U4,
    U2,
    U1,
    U6,
    U3,
    F8E4M3FN,
    F8E5M2,
}

impl DataType {
    /// All types, for table-driven conversions and tests.
    pub const ALL: [DataType; 22] = [
        Self::Bool,
        Self::String,
        Self::F16,
        Self::F32,
        Self::F64,
        Self::BF16,
        Self::I8,
        Self::I16,
        Self::I32,
        Self::I64,
        Self::I4,
        Self::U8,
        Self::U16,
        Self::U32,
        Self::U64,
        Self::U4,
        Self::U2,
        Self::U1,
        Self::U6,
        Self::U3,
        Self::F8E4M3FN,
        Self::F8E5M2,
    ];

    /// The `MILSpec.DataType` enum value.
    pub fn mil_code(self) -> i32 {
        match self {
            Self::Bool => 1,
            Self::String => 2,
            Self::F16 => 10,
            Self::F32 => 11,
            Self::F64 => 12,
            Self::BF16 => 13,
            Self::I8 => 21,
            Self::I16 => 22,
            Self::I32 => 23,
            Self::I64 => 24,
            Self::I4 => 25,
            Self::U8 => 31,
            Self::U16 => 32,
            Self::U32 => 33,
            Self::U64 => 34,
            Self::U4 => 35,
            Self::U2 => 36,
            Self::U1 => 37,
            Self::U6 => 38,
            Self::U3 => 39,
            Self::F8E4M3FN => 40,
            Self::F8E5M2 => 41,
        }
    }

    pub fn from_mil_code(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.mil_code() == code)
    }

    /// The blob-storage (`weight.bin`) type code, for types that may live there.
    pub fn blob_code(self) -> Option<u32> {
        Some(match self {
            Self::F16 => 1,
            Self::F32 => 2,
            Self::U8 => 3,
            Self::I8 => 4,
            Self::BF16 => 5,
            Self::I16 => 6,
            Self::U16 => 7,
            Self::I4 => 8,
            Self::U1 => 9,
            Self::U2 => 10,
            Self::U4 => 11,
            Self::U3 => 12,
            Self::U6 => 13,
            Self::I32 => 14,
            Self::U32 => 15,
            Self::F8E4M3FN => 16,
            Self::F8E5M2 => 17,
            _ => return None,
        })
    }

    /// Bits per element in packed storage (`None` for strings).
    pub fn bits(self) -> Option<usize> {
        Some(match self {
            Self::Bool | Self::I8 | Self::U8 | Self::F8E4M3FN | Self::F8E5M2 => 8,
            Self::F16 | Self::BF16 | Self::I16 | Self::U16 => 16,
            Self::F32 | Self::I32 | Self::U32 => 32,
            Self::F64 | Self::I64 | Self::U64 => 64,
            Self::I4 | Self::U4 => 4,
            Self::U2 => 2,
            Self::U1 => 1,
            Self::U6 => 6,
            Self::U3 => 3,
            Self::String => return None,
        })
    }

    /// The name MIL text and coremltools use (`fp16`, `int32`, …).
    pub fn mil_name(self) -> &'static str {
        match self {
            Self::Bool => "bool",
            Self::String => "string",
            Self::F16 => "fp16",
            Self::F32 => "fp32",
            Self::F64 => "fp64",
            Self::BF16 => "bf16",
            Self::I8 => "int8",
            Self::I16 => "int16",
            Self::I32 => "int32",
            Self::I64 => "int64",
            Self::I4 => "int4",
            Self::U8 => "uint8",
            Self::U16 => "uint16",
            Self::U32 => "uint32",
            Self::U64 => "uint64",
            Self::U4 => "uint4",
            Self::U2 => "uint2",
            Self::U1 => "uint1",
            Self::U6 => "uint6",
            Self::U3 => "uint3",
            Self::F8E4M3FN => "fp8e4m3fn",
            Self::F8E5M2 => "fp8e5m2",
        }
    }

    pub fn is_float(self) -> bool {
        matches!(
            self,
            Self::F16 | Self::F32 | Self::F64 | Self::BF16 | Self::F8E4M3FN | Self::F8E5M2
        )
    }
}

/// One dimension of a tensor type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dim {
    /// A fixed size.
    Fixed(u64),
    /// A size known only at run time (enumerated or ranged input shapes).
    Unknown { variadic: bool },
}

impl Dim {
    pub fn fixed(self) -> Option<u64> {
        match self {
            Dim::Fixed(n) => Some(n),
            Dim::Unknown { .. } => None,
        }
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Unknown { .. } => f.write_str("?"),
        }
    }
}

/// A tensor type: element type and shape (rank = `shape.len()`; rank 0 is a scalar).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct TensorType {
    pub dtype: DataType,
    pub shape: Vec<Dim>,
}

impl TensorType {
    pub fn new(dtype: DataType, shape: Vec<Dim>) -> Self {
        Self { dtype, shape }
    }

    /// A tensor type whose every dimension is fixed.
    pub fn fixed(dtype: DataType, shape: &[u64]) -> Self {
        Self {
            dtype,
            shape: shape.iter().map(|&n| Dim::Fixed(n)).collect(),
        }
    }

    pub fn scalar(dtype: DataType) -> Self {
        Self {
            dtype,
            shape: Vec::new(),
        }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The shape when every dimension is fixed.
    pub fn fixed_shape(&self) -> Option<Vec<usize>> {
        self.shape
            .iter()
            .map(|d| d.fixed().map(|n| n as usize))
            .collect()
    }

    /// Number of elements when the shape is fixed.
    pub fn elem_count(&self) -> Option<usize> {
        self.fixed_shape()?
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }
}

impl std::fmt::Display for TensorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dims: Vec<String> = self.shape.iter().map(Dim::to_string).collect();
        write!(
            f,
            "tensor<{}, [{}]>",
            self.dtype.mil_name(),
            dims.join(", ")
        )
    }
}

/// The type of a MIL value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    Tensor(TensorType),
    List {
        element: Box<ValueType>,
        length: Option<Dim>,
    },
    Tuple(Vec<ValueType>),
    Dictionary {
        key: Box<ValueType>,
        value: Box<ValueType>,
    },
    State(Box<ValueType>),
}

impl ValueType {
    pub fn as_tensor(&self) -> Option<&TensorType> {
        match self {
            ValueType::Tensor(t) => Some(t),
            _ => None,
        }
    }
}

impl From<TensorType> for ValueType {
    fn from(t: TensorType) -> Self {
        ValueType::Tensor(t)
    }
}

/// Tensor elements, in the encoding the protobuf uses for the element type
/// (coremltools' `_tensor_field_by_type`): fp16 as half floats, fp32 as
/// floats, int32/int16/uint16/uint32 as `Ints`, int64 as `I64`, int8, uint8
/// and packed (sub-byte, bf16, fp8) types as raw `Bytes`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorData {
    F16(Vec<f16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Ints(Vec<i32>),
    I64(Vec<i64>),
    Bools(Vec<bool>),
    Strings(Vec<String>),
    Bytes(Vec<u8>),
}

impl TensorData {
    /// Number of stored items (for `Bytes`, the number of bytes).
    pub fn len(&self) -> usize {
        match self {
            TensorData::F16(v) => v.len(),
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::Ints(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::Bools(v) => v.len(),
            TensorData::Strings(v) => v.len(),
            TensorData::Bytes(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A constant tensor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorValue {
    pub ty: TensorType,
    pub data: TensorData,
    /// Where the value lives in `weights/weight.bin` (the offset of its
    /// metadata record), or `None` for an inline (immediate) value. The writer
    /// decides this (coremltools' rule: 10 or more elements of fp16, fp32,
    /// int8 or uint8) and the reader records what it found.
    pub blob_offset: Option<u64>,
}

impl TensorValue {
    /// An inline value; the writer moves it to the blob file if it qualifies.
    pub fn new(ty: TensorType, data: TensorData) -> Self {
        Self {
            ty,
            data,
            blob_offset: None,
        }
    }

    pub fn f16(shape: &[u64], values: Vec<f16>) -> Self {
        Self::new(
            TensorType::fixed(DataType::F16, shape),
            TensorData::F16(values),
        )
    }

    pub fn f16_scalar(v: f32) -> Self {
        Self::new(
            TensorType::scalar(DataType::F16),
            TensorData::F16(vec![f16::from_f32(v)]),
        )
    }

    pub fn i32s(values: Vec<i32>) -> Self {
        Self::new(
            TensorType::fixed(DataType::I32, &[values.len() as u64]),
            TensorData::Ints(values),
        )
    }

    pub fn i32_scalar(v: i32) -> Self {
        Self::new(TensorType::scalar(DataType::I32), TensorData::Ints(vec![v]))
    }

    pub fn bools(values: Vec<bool>) -> Self {
        Self::new(
            TensorType::fixed(DataType::Bool, &[values.len() as u64]),
            TensorData::Bools(values),
        )
    }

    pub fn bool_scalar(v: bool) -> Self {
        Self::new(
            TensorType::scalar(DataType::Bool),
            TensorData::Bools(vec![v]),
        )
    }

    pub fn string(s: &str) -> Self {
        Self::new(
            TensorType::scalar(DataType::String),
            TensorData::Strings(vec![s.to_string()]),
        )
    }

    /// The elements as f32, for numeric types stored unpacked.
    pub fn to_f32_vec(&self) -> Option<Vec<f32>> {
        Some(match &self.data {
            TensorData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            TensorData::F32(v) => v.clone(),
            TensorData::F64(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::Ints(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::Bools(v) => v.iter().map(|&b| b as u8 as f32).collect(),
            TensorData::Bytes(v) => match self.ty.dtype {
                DataType::I8 => v.iter().map(|&b| b as i8 as f32).collect(),
                DataType::U8 => v.iter().map(|&b| b as f32).collect(),
                _ => return None,
            },
            TensorData::Strings(_) => return None,
        })
    }

    /// The elements as i64, for integer and bool types.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        Some(match &self.data {
            TensorData::Ints(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::I64(v) => v.clone(),
            TensorData::Bools(v) => v.iter().map(|&b| b as i64).collect(),
            TensorData::Bytes(v) => match self.ty.dtype {
                DataType::I8 => v.iter().map(|&b| b as i8 as i64).collect(),
                DataType::U8 => v.iter().map(|&b| b as i64).collect(),
                _ => return None,
            },
            _ => return None,
        })
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.data {
            TensorData::Strings(v) if v.len() == 1 => Some(&v[0]),
            _ => None,
        }
    }
}

/// A MIL value: a tensor (scalars are rank-0 tensors) or a container.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    Tensor(TensorValue),
    Tuple {
        ty: ValueType,
        items: Vec<Value>,
    },
    List {
        ty: ValueType,
        items: Vec<Value>,
    },
    Dictionary {
        ty: ValueType,
        entries: Vec<(Value, Value)>,
    },
}

impl Value {
    pub fn as_tensor(&self) -> Option<&TensorValue> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// The value's type.
    pub fn ty(&self) -> ValueType {
        match self {
            Value::Tensor(t) => ValueType::Tensor(t.ty.clone()),
            Value::Tuple { ty, .. } | Value::List { ty, .. } | Value::Dictionary { ty, .. } => {
                ty.clone()
            }
        }
    }
}

impl From<TensorValue> for Value {
    fn from(t: TensorValue) -> Self {
        Value::Tensor(t)
    }
}

/// One binding of an operation parameter: a variable or an inline value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Binding {
    Var(String),
    Value(Value),
}

/// A variable (or block output) with its type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NamedType {
    pub name: String,
    pub ty: ValueType,
}

impl NamedType {
    pub fn tensor(name: impl Into<String>, ty: TensorType) -> Self {
        Self {
            name: name.into(),
            ty: ValueType::Tensor(ty),
        }
    }
}

/// One MIL operation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Operation {
    /// The op type, e.g. `"conv"`, `"const"`, `"layer_norm"`.
    pub op_type: String,
    /// The op's `name` attribute (coremltools always sets it).
    pub name: Option<String>,
    /// Parameter name → bindings. Most parameters have one binding; variadic
    /// ones (`concat`'s `values`) have several.
    pub inputs: BTreeMap<String, Vec<Binding>>,
    pub outputs: Vec<NamedType>,
    /// Nested blocks (control flow only).
    pub blocks: Vec<Block>,
    /// Attributes other than `name`; a const op's value is `val`.
    pub attributes: BTreeMap<String, Value>,
}

impl Operation {
    /// The value of a `const` op.
    pub fn const_value(&self) -> Option<&Value> {
        if self.op_type == "const" {
            self.attributes.get("val")
        } else {
            None
        }
    }

    /// The single variable bound to parameter `param`, if it is one.
    pub fn input_var(&self, param: &str) -> Option<&str> {
        match self.inputs.get(param).map(Vec::as_slice) {
            Some([Binding::Var(v)]) => Some(v),
            _ => None,
        }
    }

    /// A display name: the `name` attribute or the first output.
    pub fn display_name(&self) -> &str {
        self.name
            .as_deref()
            .or_else(|| self.outputs.first().map(|o| o.name.as_str()))
            .unwrap_or("")
    }
}

/// A block: operations in topological order and its output variables.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Block {
    /// Block inputs (empty for a function's top-level block).
    pub inputs: Vec<NamedType>,
    pub outputs: Vec<String>,
    pub operations: Vec<Operation>,
    pub attributes: BTreeMap<String, Value>,
}

/// A function: typed inputs, its opset and the block specialised for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Function {
    pub inputs: Vec<NamedType>,
    /// `"CoreML5"` … `"CoreML9"`; also the key of the block specialisation.
    pub opset: String,
    pub block: Block,
    pub attributes: BTreeMap<String, Value>,
}

/// A MIL program (`Program.version` is 1).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Program {
    pub version: i64,
    pub functions: BTreeMap<String, Function>,
    pub doc_string: String,
    pub attributes: BTreeMap<String, Value>,
}

/// Core ML `ArrayFeatureType.ArrayDataType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArrayDataType {
    F32,
    F64,
    F16,
    I32,
    I8,
    /// A code this crate does not know.
    Other(i32),
}

impl ArrayDataType {
    pub fn code(self) -> i32 {
        use crate::proto::array_data_type as a;
        match self {
            Self::F32 => a::FLOAT32,
            Self::F64 => a::DOUBLE,
            Self::F16 => a::FLOAT16,
            Self::I32 => a::INT32,
            Self::I8 => a::INT8,
            Self::Other(c) => c,
        }
    }

    pub fn from_code(c: i32) -> Self {
        use crate::proto::array_data_type as a;
        match c {
            a::FLOAT32 => Self::F32,
            a::DOUBLE => Self::F64,
            a::FLOAT16 => Self::F16,
            a::INT32 => Self::I32,
            a::INT8 => Self::I8,
            other => Self::Other(other),
        }
    }

    /// The MIL element type of the same width and kind.
    pub fn mil(self) -> Option<DataType> {
        Some(match self {
            Self::F32 => DataType::F32,
            Self::F64 => DataType::F64,
            Self::F16 => DataType::F16,
            Self::I32 => DataType::I32,
            Self::I8 => DataType::I8,
            Self::Other(_) => return None,
        })
    }

    pub fn from_mil(d: DataType) -> Option<Self> {
        Some(match d {
            DataType::F32 => Self::F32,
            DataType::F64 => Self::F64,
            DataType::F16 => Self::F16,
            DataType::I32 => Self::I32,
            DataType::I8 => Self::I8,
            _ => return None,
        })
    }
}

/// Flexible shapes of a multi-array feature.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShapeFlexibility {
    /// Each listed shape is allowed (each can be planned on the ANE).
    Enumerated(Vec<Vec<i64>>),
    /// Per-dimension `(lower, upper)` bounds; `upper < 0` is unbounded.
    Range(Vec<(u64, i64)>),
}

/// A multi-array feature's type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArrayFeature {
    /// The default shape.
    pub shape: Vec<i64>,
    pub dtype: ArrayDataType,
    pub flexibility: Option<ShapeFlexibility>,
}

impl ArrayFeature {
    /// Every shape the feature accepts when they are enumerable (a fixed
    /// shape, or the enumerated list).
    pub fn enumerated_shapes(&self) -> Option<Vec<Vec<i64>>> {
        match &self.flexibility {
            None => Some(vec![self.shape.clone()]),
            Some(ShapeFlexibility::Enumerated(s)) => Some(s.clone()),
            Some(ShapeFlexibility::Range(_)) => None,
        }
    }
}

/// A feature's type. Only multi-arrays (and state) are modelled in detail.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureType {
    MultiArray(ArrayFeature),
    State(Option<ArrayFeature>),
    Int64,
    Double,
    String,
    Image,
    Dictionary,
    Sequence,
}

/// A public input or output of the model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Feature {
    pub name: String,
    pub short_description: String,
    pub ty: FeatureType,
    pub optional: bool,
}

impl Feature {
    pub fn array(name: &str, doc: &str, a: ArrayFeature) -> Self {
        Self {
            name: name.into(),
            short_description: doc.into(),
            ty: FeatureType::MultiArray(a),
            optional: false,
        }
    }

    pub fn as_array(&self) -> Option<&ArrayFeature> {
        match &self.ty {
            FeatureType::MultiArray(a) => Some(a),
            _ => None,
        }
    }
}

/// Per-function description of a multi-function model (spec 9 and later).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionDescription {
    pub name: String,
    pub inputs: Vec<Feature>,
    pub outputs: Vec<Feature>,
    pub states: Vec<Feature>,
}

/// Model metadata.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Metadata {
    pub short_description: String,
    pub version: String,
    pub author: String,
    pub license: String,
    pub user_defined: BTreeMap<String, String>,
}

/// The public interface of the model.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Description {
    pub inputs: Vec<Feature>,
    pub outputs: Vec<Feature>,
    pub states: Vec<Feature>,
    pub predicted_feature_name: String,
    pub predicted_probabilities_name: String,
    pub functions: Vec<FunctionDescription>,
    pub default_function_name: String,
    pub metadata: Metadata,
}

/// A whole ML Program model (`model.mlmodel` with its weights resolved).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Model {
    /// `specificationVersion`: 7 = iOS 16 / macOS 13 (opset `CoreML6`).
    pub spec_version: i32,
    pub description: Description,
    pub program: Program,
    pub is_updatable: bool,
}

impl Model {
    /// The function a prediction runs: the description's default function,
    /// else `main`.
    pub fn main_function(&self) -> Option<(&str, &Function)> {
        let want = if self.description.default_function_name.is_empty() {
            "main"
        } else {
            self.description.default_function_name.as_str()
        };
        self.program
            .functions
            .get_key_value(want)
            .map(|(k, f)| (k.as_str(), f))
    }

    /// Every operation of every function, nested blocks included, with the
    /// name of the function it belongs to.
    pub fn operations(&self) -> Vec<(&str, &Operation)> {
        fn walk<'a>(f: &'a str, b: &'a Block, out: &mut Vec<(&'a str, &'a Operation)>) {
            for op in &b.operations {
                out.push((f, op));
                for nb in &op.blocks {
                    walk(f, nb, out);
                }
            }
        }
        let mut out = Vec::new();
        for (name, f) in &self.program.functions {
            walk(name, &f.block, &mut out);
        }
        out
    }
}

/// Opset names by specification version.
pub fn opset_for_spec(spec_version: i32) -> Option<&'static str> {
    Some(match spec_version {
        6 => "CoreML5",
        7 => "CoreML6",
        8 => "CoreML7",
        9 => "CoreML8",
        10 => "CoreML9",
        _ => return None,
    })
}

/// Whether `s` is a valid MIL identifier (`[A-Za-z_][A-Za-z0-9_@]*`).
pub fn is_identifier(s: &str) -> bool {
    let mut c = s.chars();
    match c.next() {
        Some(ch) if ch.is_ascii_alphabetic() || ch == '_' => {}
        _ => return false,
    }
    c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '@')
}
