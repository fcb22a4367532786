//! Conversions between the protobuf messages and the in-memory program.

use std::collections::BTreeMap;

use half::f16;

use crate::blob::{self, BlobReader, BLOB_FILE_NAME};
use crate::error::{BlobProblem, CoremlError, Result};
use crate::program::*;
use crate::proto;

fn invalid(msg: impl Into<String>) -> CoremlError {
    CoremlError::InvalidProgram(msg.into())
}

// ------------------------------------------------------------ to protobuf

pub(crate) fn dim_to_proto(d: &Dim) -> proto::Dimension {
    use proto::dimension::{ConstantDimension, Dimension as D, UnknownDimension};
    proto::Dimension {
        dimension: Some(match d {
            Dim::Fixed(n) => D::Constant(ConstantDimension { size: *n }),
            Dim::Unknown { variadic } => D::Unknown(UnknownDimension {
                variadic: *variadic,
            }),
        }),
    }
}

pub(crate) fn tensor_type_to_proto(t: &TensorType) -> proto::TensorType {
    proto::TensorType {
        data_type: t.dtype.mil_code(),
        rank: t.rank() as i64,
        dimensions: t.shape.iter().map(dim_to_proto).collect(),
        attributes: BTreeMap::new(),
    }
}

pub(crate) fn value_type_to_proto(t: &ValueType) -> proto::ValueType {
    use proto::value_type::Type as T;
    proto::ValueType {
        r#type: Some(match t {
            ValueType::Tensor(t) => T::TensorType(tensor_type_to_proto(t)),
            ValueType::List { element, length } => T::ListType(Box::new(proto::ListType {
                r#type: Some(Box::new(value_type_to_proto(element))),
                length: length.as_ref().map(dim_to_proto),
            })),
            ValueType::Tuple(ts) => T::TupleType(proto::TupleType {
                types: ts.iter().map(value_type_to_proto).collect(),
            }),
            ValueType::Dictionary { key, value } => {
                T::DictionaryType(Box::new(proto::DictionaryType {
                    key_type: Some(Box::new(value_type_to_proto(key))),
                    value_type: Some(Box::new(value_type_to_proto(value))),
                }))
            }
            ValueType::State(w) => T::StateType(Box::new(proto::StateType {
                wrapped_type: Some(Box::new(value_type_to_proto(w))),
            })),
        }),
    }
}

fn tensor_data_to_proto(d: &TensorData) -> proto::TensorValue {
    use proto::tensor_value::*;
    proto::TensorValue {
        value: Some(match d {
            TensorData::F16(v) => Value::Bytes(RepeatedBytes {
                values: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            }),
            TensorData::F32(v) => Value::Floats(RepeatedFloats { values: v.clone() }),
            TensorData::F64(v) => Value::Doubles(RepeatedDoubles { values: v.clone() }),
            TensorData::Ints(v) => Value::Ints(RepeatedInts { values: v.clone() }),
            TensorData::I64(v) => Value::LongInts(RepeatedLongInts { values: v.clone() }),
            TensorData::Bools(v) => Value::Bools(RepeatedBools { values: v.clone() }),
            TensorData::Strings(v) => Value::Strings(RepeatedStrings { values: v.clone() }),
            TensorData::Bytes(v) => Value::Bytes(RepeatedBytes { values: v.clone() }),
        }),
    }
}

pub(crate) fn value_to_proto(v: &Value) -> proto::Value {
    use proto::value::{immediate_value::Value as IV, BlobFileValue, ImmediateValue, Value as V};
    let imm = |iv: IV| Some(V::ImmediateValue(ImmediateValue { value: Some(iv) }));
    let (ty, value) = match v {
        Value::Tensor(t) => (
            ValueType::Tensor(t.ty.clone()),
            match t.blob_offset {
                Some(offset) => Some(V::BlobFileValue(BlobFileValue {
                    file_name: BLOB_FILE_NAME.into(),
                    offset,
                })),
                None => imm(IV::Tensor(tensor_data_to_proto(&t.data))),
            },
        ),
        Value::Tuple { ty, items } => (
            ty.clone(),
            imm(IV::Tuple(proto::TupleValue {
                values: items.iter().map(value_to_proto).collect(),
            })),
        ),
        Value::List { ty, items } => (
            ty.clone(),
            imm(IV::List(proto::ListValue {
                values: items.iter().map(value_to_proto).collect(),
            })),
        ),
        Value::Dictionary { ty, entries } => (
            ty.clone(),
            imm(IV::Dictionary(proto::DictionaryValue {
                values: entries
                    .iter()
                    .map(|(k, v)| proto::dictionary_value::KeyValuePair {
                        key: Some(value_to_proto(k)),
                        value: Some(value_to_proto(v)),
                    })
                    .collect(),
            })),
        ),
    };
    proto::Value {
        doc_string: String::new(),
        r#type: Some(value_type_to_proto(&ty)),
        value,
    }
}

fn named_to_proto(n: &NamedType) -> proto::NamedValueType {
    proto::NamedValueType {
        name: n.name.clone(),
        r#type: Some(value_type_to_proto(&n.ty)),
    }
}

fn attrs_to_proto(a: &BTreeMap<String, Value>) -> BTreeMap<String, proto::Value> {
    a.iter()
        .map(|(k, v)| (k.clone(), value_to_proto(v)))
        .collect()
}

fn block_to_proto(b: &Block) -> proto::Block {
    use proto::argument::{binding::Binding as PB, Binding};
    proto::Block {
        inputs: b.inputs.iter().map(named_to_proto).collect(),
        outputs: b.outputs.clone(),
        operations: b
            .operations
            .iter()
            .map(|op| {
                let mut attributes = attrs_to_proto(&op.attributes);
                if let Some(n) = &op.name {
                    attributes.insert(
                        "name".into(),
                        value_to_proto(&TensorValue::string(n).into()),
                    );
                }
                proto::Operation {
                    r#type: op.op_type.clone(),
                    inputs: op
                        .inputs
                        .iter()
                        .map(|(k, bs)| {
                            (
                                k.clone(),
                                proto::Argument {
                                    arguments: bs
                                        .iter()
                                        .map(|b| Binding {
                                            binding: Some(match b {
                                                crate::program::Binding::Var(n) => {
                                                    PB::Name(n.clone())
                                                }
                                                crate::program::Binding::Value(v) => {
                                                    PB::Value(value_to_proto(v))
                                                }
                                            }),
                                        })
                                        .collect(),
                                },
                            )
                        })
                        .collect(),
                    outputs: op.outputs.iter().map(named_to_proto).collect(),
                    blocks: op.blocks.iter().map(block_to_proto).collect(),
                    attributes,
                }
            })
            .collect(),
        attributes: attrs_to_proto(&b.attributes),
    }
}

fn program_to_proto(p: &Program) -> proto::Program {
    proto::Program {
        version: p.version,
        functions: p
            .functions
            .iter()
            .map(|(name, f)| {
                (
                    name.clone(),
                    proto::Function {
                        inputs: f.inputs.iter().map(named_to_proto).collect(),
                        opset: f.opset.clone(),
                        block_specializations: [(f.opset.clone(), block_to_proto(&f.block))]
                            .into_iter()
                            .collect(),
                        attributes: attrs_to_proto(&f.attributes),
                    },
                )
            })
            .collect(),
        doc_string: p.doc_string.clone(),
        attributes: attrs_to_proto(&p.attributes),
    }
}

fn feature_to_proto(f: &Feature) -> proto::FeatureDescription {
    use proto::feature_type::Type as T;
    let array = |a: &ArrayFeature| {
        use proto::array_feature_type::*;
        proto::ArrayFeatureType {
            shape: a.shape.clone(),
            data_type: a.dtype.code(),
            shape_flexibility: a.flexibility.as_ref().map(|fl| match fl {
                crate::program::ShapeFlexibility::Enumerated(s) => {
                    ShapeFlexibility::EnumeratedShapes(EnumeratedShapes {
                        shapes: s.iter().map(|s| Shape { shape: s.clone() }).collect(),
                    })
                }
                crate::program::ShapeFlexibility::Range(r) => {
                    ShapeFlexibility::ShapeRange(ShapeRange {
                        size_ranges: r
                            .iter()
                            .map(|&(lower_bound, upper_bound)| proto::SizeRange {
                                lower_bound,
                                upper_bound,
                            })
                            .collect(),
                    })
                }
            }),
            default_optional_value: None,
        }
    };
    let o = proto::Opaque {};
    proto::FeatureDescription {
        name: f.name.clone(),
        short_description: f.short_description.clone(),
        r#type: Some(proto::FeatureType {
            r#type: Some(match &f.ty {
                FeatureType::MultiArray(a) => T::MultiArrayType(array(a)),
                FeatureType::State(a) => T::StateType(proto::StateFeatureType {
                    array_type: a.as_ref().map(array),
                }),
                FeatureType::Int64 => T::Int64Type(o),
                FeatureType::Double => T::DoubleType(o),
                FeatureType::String => T::StringType(o),
                FeatureType::Image => T::ImageType(o),
                FeatureType::Dictionary => T::DictionaryType(o),
                FeatureType::Sequence => T::SequenceType(o),
            }),
            is_optional: f.optional,
        }),
    }
}

/// The protobuf `Model` of an in-memory model whose blob offsets are assigned.
pub fn model_to_proto(m: &Model) -> proto::Model {
    let d = &m.description;
    let md = &d.metadata;
    proto::Model {
        specification_version: m.spec_version,
        description: Some(proto::ModelDescription {
            input: d.inputs.iter().map(feature_to_proto).collect(),
            output: d.outputs.iter().map(feature_to_proto).collect(),
            predicted_feature_name: d.predicted_feature_name.clone(),
            predicted_probabilities_name: d.predicted_probabilities_name.clone(),
            state: d.states.iter().map(feature_to_proto).collect(),
            functions: d
                .functions
                .iter()
                .map(|f| proto::FunctionDescription {
                    name: f.name.clone(),
                    input: f.inputs.iter().map(feature_to_proto).collect(),
                    output: f.outputs.iter().map(feature_to_proto).collect(),
                    predicted_feature_name: String::new(),
                    predicted_probabilities_name: String::new(),
                    state: f.states.iter().map(feature_to_proto).collect(),
                })
                .collect(),
            default_function_name: d.default_function_name.clone(),
            training_input: Vec::new(),
            metadata: Some(proto::Metadata {
                short_description: md.short_description.clone(),
                version_string: md.version.clone(),
                author: md.author.clone(),
                license: md.license.clone(),
                user_defined: md.user_defined.clone(),
            }),
        }),
        is_updatable: m.is_updatable,
        r#type: Some(proto::model::Type::MlProgram(program_to_proto(&m.program))),
    }
}

/// Moves every const value that qualifies into blob storage (coremltools'
/// rule: 10 or more elements of fp16, fp32, uint8 or int8) and returns the
/// `weight.bin` image. Values already marked keep their place in order.
pub fn assign_blobs(m: &mut Model) -> std::result::Result<Vec<u8>, (String, BlobProblem)> {
    fn walk(
        b: &mut Block,
        w: &mut blob::BlobWriter,
    ) -> std::result::Result<(), (String, BlobProblem)> {
        for op in &mut b.operations {
            let name = op.display_name().to_string();
            if op.op_type == "const" {
                if let Some(Value::Tensor(t)) = op.attributes.get_mut("val") {
                    let eligible = matches!(
                        t.ty.dtype,
                        DataType::F16 | DataType::F32 | DataType::U8 | DataType::I8
                    ) && t.ty.elem_count().is_some_and(|n| n >= 10);
                    if eligible || t.blob_offset.is_some() {
                        let bytes =
                            blob::encode(t.ty.dtype, &t.data).map_err(|e| (name.clone(), e))?;
                        t.blob_offset = Some(
                            w.append(t.ty.dtype, &bytes)
                                .map_err(|e| (name.clone(), e))?,
                        );
                    }
                }
            }
            for nb in &mut op.blocks {
                walk(nb, w)?;
            }
        }
        Ok(())
    }
    let mut w = blob::BlobWriter::new();
    for f in m.program.functions.values_mut() {
        walk(&mut f.block, &mut w)?;
    }
    Ok(w.finish())
}

// ---------------------------------------------------------- from protobuf

fn dim_from_proto(d: &proto::Dimension) -> Result<Dim> {
    use proto::dimension::Dimension as D;
    match &d.dimension {
        Some(D::Constant(c)) => Ok(Dim::Fixed(c.size)),
        Some(D::Unknown(u)) => Ok(Dim::Unknown {
            variadic: u.variadic,
        }),
        None => Err(invalid(
            "a tensor dimension is neither constant nor unknown",
        )),
    }
}

fn tensor_type_from_proto(t: &proto::TensorType) -> Result<TensorType> {
    let dtype = DataType::from_mil_code(t.data_type)
        .ok_or_else(|| invalid(format!("unknown MIL data type code {}", t.data_type)))?;
    if t.rank != t.dimensions.len() as i64 {
        return Err(invalid(format!(
            "tensor rank {} does not match its {} dimensions",
            t.rank,
            t.dimensions.len()
        )));
    }
    Ok(TensorType {
        dtype,
        shape: t
            .dimensions
            .iter()
            .map(dim_from_proto)
            .collect::<Result<_>>()?,
    })
}

fn value_type_from_proto(t: &proto::ValueType) -> Result<ValueType> {
    use proto::value_type::Type as T;
    let sub = |o: &Option<Box<proto::ValueType>>, what: &str| -> Result<Box<ValueType>> {
        Ok(Box::new(value_type_from_proto(o.as_deref().ok_or_else(
            || invalid(format!("{what} type is missing")),
        )?)?))
    };
    Ok(match &t.r#type {
        Some(T::TensorType(t)) => ValueType::Tensor(tensor_type_from_proto(t)?),
        Some(T::ListType(l)) => ValueType::List {
            element: sub(&l.r#type, "list element")?,
            length: l.length.as_ref().map(dim_from_proto).transpose()?,
        },
        Some(T::TupleType(tt)) => ValueType::Tuple(
            tt.types
                .iter()
                .map(value_type_from_proto)
                .collect::<Result<_>>()?,
        ),
        Some(T::DictionaryType(d)) => ValueType::Dictionary {
            key: sub(&d.key_type, "dictionary key")?,
            value: sub(&d.value_type, "dictionary value")?,
        },
        Some(T::StateType(s)) => ValueType::State(sub(&s.wrapped_type, "state")?),
        None => return Err(invalid("a value type is empty")),
    })
}

fn tensor_data_from_proto(ty: &TensorType, t: &proto::TensorValue) -> Result<TensorData> {
    use proto::tensor_value::Value as V;
    let data = match &t.value {
        Some(V::Floats(f)) if ty.dtype == DataType::F16 => {
            TensorData::F16(f.values.iter().map(|&x| f16::from_f32(x)).collect())
        }
        Some(V::Floats(f)) => TensorData::F32(f.values.clone()),
        Some(V::Doubles(f)) => TensorData::F64(f.values.clone()),
        Some(V::Ints(f)) => TensorData::Ints(f.values.clone()),
        Some(V::LongInts(f)) => TensorData::I64(f.values.clone()),
        Some(V::Bools(f)) => TensorData::Bools(f.values.clone()),
        Some(V::Strings(f)) => TensorData::Strings(f.values.clone()),
        Some(V::Bytes(b)) if ty.dtype == DataType::F16 => {
            if b.values.len() % 2 != 0 {
                return Err(invalid("fp16 immediate value has an odd number of bytes"));
            }
            blob::decode(DataType::F16, &b.values)
        }
        Some(V::Bytes(b)) => TensorData::Bytes(b.values.clone()),
        None => TensorData::Bytes(Vec::new()),
    };
    Ok(data)
}

/// Checks that immediate data holds as many elements as its type declares.
fn check_len(ty: &TensorType, data: &TensorData) -> Result<()> {
    let Some(n) = ty.elem_count() else {
        return Ok(());
    };
    let expected = match (data, ty.dtype.bits()) {
        (TensorData::Bytes(_), Some(bits)) => (n as u128 * bits as u128).div_ceil(8),
        _ => n as u128,
    };
    if data.len() as u128 != expected {
        return Err(invalid(format!(
            "an immediate {ty} value holds {} items, its type needs {expected}",
            data.len()
        )));
    }
    Ok(())
}

/// Context for reading values: the blob file, if the package has one.
pub(crate) struct ReadCtx<'a> {
    pub blobs: Option<BlobReader<'a>>,
    pub blob_path: std::path::PathBuf,
}

impl ReadCtx<'_> {
    fn value(&self, v: &proto::Value) -> Result<Value> {
        use proto::value::{immediate_value::Value as IV, Value as V};
        let ty = value_type_from_proto(
            v.r#type
                .as_ref()
                .ok_or_else(|| invalid("a value has no type"))?,
        )?;
        match (&v.value, ty) {
            (Some(V::BlobFileValue(b)), ValueType::Tensor(tt)) => {
                let reader = self.blobs.as_ref().ok_or_else(|| CoremlError::Blob {
                    path: self.blob_path.clone(),
                    offset: b.offset,
                    problem: BlobProblem::MissingFile,
                })?;
                if tt.elem_count().is_none() {
                    return Err(invalid(format!(
                        "blob value at offset {} has a non-fixed shape {tt}",
                        b.offset
                    )));
                }
                let data = reader
                    .read(b.offset, &tt)
                    .map_err(|problem| CoremlError::Blob {
                        path: self.blob_path.clone(),
                        offset: b.offset,
                        problem,
                    })?;
                Ok(Value::Tensor(TensorValue {
                    ty: tt,
                    data,
                    blob_offset: Some(b.offset),
                }))
            }
            (Some(V::BlobFileValue(_)), other) => Err(invalid(format!(
                "a blob value must be a tensor, found {other:?}"
            ))),
            (Some(V::ImmediateValue(iv)), ty) => match (&iv.value, ty) {
                (Some(IV::Tensor(t)), ValueType::Tensor(tt)) => {
                    let data = tensor_data_from_proto(&tt, t)?;
                    check_len(&tt, &data)?;
                    Ok(Value::Tensor(TensorValue::new(tt, data)))
                }
                (Some(IV::Tuple(t)), ty) => Ok(Value::Tuple {
                    ty,
                    items: t
                        .values
                        .iter()
                        .map(|v| self.value(v))
                        .collect::<Result<_>>()?,
                }),
                (Some(IV::List(t)), ty) => Ok(Value::List {
                    ty,
                    items: t
                        .values
                        .iter()
                        .map(|v| self.value(v))
                        .collect::<Result<_>>()?,
                }),
                (Some(IV::Dictionary(d)), ty) => Ok(Value::Dictionary {
                    ty,
                    entries: d
                        .values
                        .iter()
                        .map(|kv| {
                            let k = kv
                                .key
                                .as_ref()
                                .ok_or_else(|| invalid("dictionary key missing"))?;
                            let v = kv
                                .value
                                .as_ref()
                                .ok_or_else(|| invalid("dictionary value missing"))?;
                            Ok((self.value(k)?, self.value(v)?))
                        })
                        .collect::<Result<_>>()?,
                }),
                (Some(IV::Tensor(_)), other) => Err(invalid(format!(
                    "a tensor immediate value is typed {other:?}"
                ))),
                (None, _) => Err(invalid("an immediate value is empty")),
            },
            (None, _) => Err(invalid("a value has neither an immediate nor a blob value")),
        }
    }

    fn attrs(&self, a: &BTreeMap<String, proto::Value>) -> Result<BTreeMap<String, Value>> {
        a.iter()
            .map(|(k, v)| Ok((k.clone(), self.value(v)?)))
            .collect()
    }

    fn named(&self, n: &proto::NamedValueType) -> Result<NamedType> {
        Ok(NamedType {
            name: n.name.clone(),
            ty: value_type_from_proto(
                n.r#type
                    .as_ref()
                    .ok_or_else(|| invalid(format!("variable {:?} has no type", n.name)))?,
            )?,
        })
    }

    fn block(&self, b: &proto::Block) -> Result<Block> {
        use proto::argument::binding::Binding as PB;
        let mut ops = Vec::with_capacity(b.operations.len());
        for op in &b.operations {
            let mut attributes = self.attrs(&op.attributes)?;
            let name = match attributes.remove("name") {
                Some(Value::Tensor(t)) if t.as_str().is_some() => t.as_str().map(str::to_string),
                Some(other) => {
                    return Err(invalid(format!(
                        "op {:?}: the name attribute is not a string ({:?})",
                        op.r#type,
                        other.ty()
                    )))
                }
                None => None,
            };
            let mut inputs = BTreeMap::new();
            for (param, arg) in &op.inputs {
                let mut bs = Vec::with_capacity(arg.arguments.len());
                for a in &arg.arguments {
                    bs.push(match &a.binding {
                        Some(PB::Name(n)) => Binding::Var(n.clone()),
                        Some(PB::Value(v)) => Binding::Value(self.value(v)?),
                        None => {
                            return Err(invalid(format!(
                                "op {:?}: parameter {param:?} has an empty binding",
                                name.as_deref().unwrap_or(&op.r#type)
                            )))
                        }
                    });
                }
                inputs.insert(param.clone(), bs);
            }
            ops.push(Operation {
                op_type: op.r#type.clone(),
                name,
                inputs,
                outputs: op
                    .outputs
                    .iter()
                    .map(|o| self.named(o))
                    .collect::<Result<_>>()?,
                blocks: op
                    .blocks
                    .iter()
                    .map(|nb| self.block(nb))
                    .collect::<Result<_>>()?,
                attributes,
            });
        }
        Ok(Block {
            inputs: b
                .inputs
                .iter()
                .map(|i| self.named(i))
                .collect::<Result<_>>()?,
            outputs: b.outputs.clone(),
            operations: ops,
            attributes: self.attrs(&b.attributes)?,
        })
    }

    pub(crate) fn program(&self, p: &proto::Program) -> Result<Program> {
        let mut functions = BTreeMap::new();
        for (name, f) in &p.functions {
            let block = match f.block_specializations.get(&f.opset) {
                Some(b) if f.block_specializations.len() == 1 => self.block(b)?,
                Some(_) => {
                    return Err(CoremlError::Unsupported(format!(
                        "function {name:?} has {} block specialisations; only one (its opset's) is supported",
                        f.block_specializations.len()
                    )))
                }
                None => {
                    return Err(invalid(format!(
                        "function {name:?} has no block for its opset {:?} (has: {:?})",
                        f.opset,
                        f.block_specializations.keys().collect::<Vec<_>>()
                    )))
                }
            };
            functions.insert(
                name.clone(),
                Function {
                    inputs: f
                        .inputs
                        .iter()
                        .map(|i| self.named(i))
                        .collect::<Result<_>>()?,
                    opset: f.opset.clone(),
                    block,
                    attributes: self.attrs(&f.attributes)?,
                },
            );
        }
        Ok(Program {
            version: p.version,
            functions,
            doc_string: p.doc_string.clone(),
            attributes: self.attrs(&p.attributes)?,
        })
    }
}

fn feature_from_proto(f: &proto::FeatureDescription) -> Result<Feature> {
    use proto::feature_type::Type as T;
    let array = |a: &proto::ArrayFeatureType| {
        use proto::array_feature_type::ShapeFlexibility as S;
        ArrayFeature {
            shape: a.shape.clone(),
            dtype: ArrayDataType::from_code(a.data_type),
            flexibility: a.shape_flexibility.as_ref().map(|s| match s {
                S::EnumeratedShapes(e) => crate::program::ShapeFlexibility::Enumerated(
                    e.shapes.iter().map(|s| s.shape.clone()).collect(),
                ),
                S::ShapeRange(r) => crate::program::ShapeFlexibility::Range(
                    r.size_ranges
                        .iter()
                        .map(|s| (s.lower_bound, s.upper_bound))
                        .collect(),
                ),
            }),
        }
    };
    let ft = f
        .r#type
        .as_ref()
        .ok_or_else(|| invalid(format!("feature {:?} has no type", f.name)))?;
    Ok(Feature {
        name: f.name.clone(),
        short_description: f.short_description.clone(),
        optional: ft.is_optional,
        ty: match &ft.r#type {
            Some(T::MultiArrayType(a)) => FeatureType::MultiArray(array(a)),
            Some(T::StateType(s)) => FeatureType::State(s.array_type.as_ref().map(array)),
            Some(T::Int64Type(_)) => FeatureType::Int64,
            Some(T::DoubleType(_)) => FeatureType::Double,
            Some(T::StringType(_)) => FeatureType::String,
            Some(T::ImageType(_)) => FeatureType::Image,
            Some(T::DictionaryType(_)) => FeatureType::Dictionary,
            Some(T::SequenceType(_)) => FeatureType::Sequence,
            None => return Err(invalid(format!("feature {:?} has an empty type", f.name))),
        },
    })
}

fn features(fs: &[proto::FeatureDescription]) -> Result<Vec<Feature>> {
    fs.iter().map(feature_from_proto).collect()
}

/// Converts a decoded protobuf model. `path` names the model file in errors.
pub(crate) fn model_from_proto(
    p: &proto::Model,
    path: &std::path::Path,
    ctx: &ReadCtx<'_>,
) -> Result<Model> {
    use proto::model::Type as T;
    let program = match &p.r#type {
        Some(T::MlProgram(prog)) => ctx.program(prog)?,
        other => {
            let found = match other {
                None => "none or unknown",
                Some(T::NeuralNetwork(_)) => "neuralNetwork",
                Some(T::NeuralNetworkRegressor(_)) => "neuralNetworkRegressor",
                Some(T::Pipeline(_)) => "pipeline",
                Some(T::PipelineClassifier(_)) => "pipelineClassifier",
                Some(T::PipelineRegressor(_)) => "pipelineRegressor",
                Some(T::MlProgram(_)) => "mlProgram",
            };
            return Err(CoremlError::NotMlProgram {
                path: path.to_path_buf(),
                found: found.into(),
            });
        }
    };
    let d = p.description.clone().unwrap_or_default();
    let md = d.metadata.clone().unwrap_or_default();
    Ok(Model {
        spec_version: p.specification_version,
        is_updatable: p.is_updatable,
        program,
        description: Description {
            inputs: features(&d.input)?,
            outputs: features(&d.output)?,
            states: features(&d.state)?,
            predicted_feature_name: d.predicted_feature_name.clone(),
            predicted_probabilities_name: d.predicted_probabilities_name.clone(),
            functions: d
                .functions
                .iter()
                .map(|f| {
                    Ok(FunctionDescription {
                        name: f.name.clone(),
                        inputs: features(&f.input)?,
                        outputs: features(&f.output)?,
                        states: features(&f.state)?,
                    })
                })
                .collect::<Result<_>>()?,
            default_function_name: d.default_function_name.clone(),
            metadata: Metadata {
                short_description: md.short_description,
                version: md.version_string,
                author: md.author,
                license: md.license,
                user_defined: md.user_defined,
            },
        },
    })
}
