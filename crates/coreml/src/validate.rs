//! Structural checks shared by the writer and the reader: known ops, defined
//! variables, identifiers, and description ↔ program agreement (which Core ML
//! enforces but coremltools on Linux does not).

use std::collections::{BTreeMap, HashSet};

use crate::error::{CoremlError, Result};
use crate::ops::is_known_op;
use crate::program::*;

fn invalid(msg: impl Into<String>) -> CoremlError {
    CoremlError::InvalidProgram(msg.into())
}

/// How strict the structural check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// What every readable package must satisfy: known ops, variables
    /// defined before use, block outputs defined.
    Read,
    /// Additionally what this crate's writer guarantees: valid, unique
    /// identifiers, every op named, every function input used (Core ML
    /// rejects unused inputs).
    Write,
}

/// Checks every function of `program`.
pub fn check_program(program: &Program, strictness: Strictness) -> Result<()> {
    if program.version != 1 {
        return Err(invalid(format!(
            "Program.version is {} (must be 1)",
            program.version
        )));
    }
    if program.functions.is_empty() {
        return Err(invalid("the program has no functions"));
    }
    for (fname, f) in &program.functions {
        if strictness == Strictness::Write && !is_identifier(fname) {
            return Err(invalid(format!(
                "function name {fname:?} is not a MIL identifier"
            )));
        }
        let mut defined: HashSet<String> = HashSet::new();
        for i in &f.inputs {
            if strictness == Strictness::Write && !is_identifier(&i.name) {
                return Err(invalid(format!(
                    "input name {:?} is not a MIL identifier",
                    i.name
                )));
            }
            if !defined.insert(i.name.clone()) {
                return Err(invalid(format!(
                    "function {fname:?} declares input {:?} twice",
                    i.name
                )));
            }
        }
        let mut used = HashSet::new();
        check_block(&f.block, &mut defined, &mut used, strictness)?;
        if strictness == Strictness::Write {
            for i in &f.inputs {
                if !used.contains(&i.name) {
                    return Err(invalid(format!(
                        "function {fname:?}: input {:?} is never used (Core ML rejects unused inputs)",
                        i.name
                    )));
                }
            }
        }
    }
    Ok(())
}

fn check_block(
    b: &Block,
    defined: &mut HashSet<String>,
    used: &mut HashSet<String>,
    strictness: Strictness,
) -> Result<()> {
    for i in &b.inputs {
        defined.insert(i.name.clone());
    }
    for op in &b.operations {
        let name = op.display_name().to_string();
        if !is_known_op(&op.op_type) {
            return Err(CoremlError::UnknownOp {
                op_type: op.op_type.clone(),
                op_name: name,
            });
        }
        for (param, bs) in &op.inputs {
            for bnd in bs {
                if let Binding::Var(v) = bnd {
                    if !defined.contains(v) {
                        return Err(invalid(format!(
                            "op {name:?} ({}): parameter {param:?} uses undefined variable {v:?}",
                            op.op_type
                        )));
                    }
                    used.insert(v.clone());
                }
            }
        }
        if op.op_type == "const" && op.const_value().is_none() {
            return Err(invalid(format!("const op {name:?} has no `val` attribute")));
        }
        if strictness == Strictness::Write {
            match &op.name {
                Some(n) if is_identifier(n) => {}
                other => {
                    return Err(invalid(format!(
                        "op of type {} has name {other:?}, not a MIL identifier",
                        op.op_type
                    )))
                }
            }
        }
        for nb in &op.blocks {
            let mut inner = defined.clone();
            check_block(nb, &mut inner, used, strictness)?;
        }
        for o in &op.outputs {
            if strictness == Strictness::Write && !is_identifier(&o.name) {
                return Err(invalid(format!(
                    "output name {:?} is not a MIL identifier",
                    o.name
                )));
            }
            if !defined.insert(o.name.clone()) && strictness == Strictness::Write {
                return Err(invalid(format!("variable {:?} is defined twice", o.name)));
            }
        }
    }
    for o in &b.outputs {
        if !defined.contains(o) {
            return Err(invalid(format!(
                "block output {o:?} is not defined in the block"
            )));
        }
        used.insert(o.clone());
    }
    Ok(())
}

/// The types of every variable of a block (and its function inputs).
pub fn var_types(f: &Function) -> BTreeMap<String, ValueType> {
    fn walk(b: &Block, out: &mut BTreeMap<String, ValueType>) {
        for i in &b.inputs {
            out.insert(i.name.clone(), i.ty.clone());
        }
        for op in &b.operations {
            for o in &op.outputs {
                out.insert(o.name.clone(), o.ty.clone());
            }
            for nb in &op.blocks {
                walk(nb, out);
            }
        }
    }
    let mut out: BTreeMap<String, ValueType> = f
        .inputs
        .iter()
        .map(|i| (i.name.clone(), i.ty.clone()))
        .collect();
    walk(&f.block, &mut out);
    out
}

fn check_feature(f: &Feature, ty: &ValueType, role: &str, is_input: bool) -> Result<()> {
    let mismatch =
        |m: String| CoremlError::DescriptionMismatch(format!("{role} {:?}: {m}", f.name));
    let (a, t) = match (&f.ty, ty) {
        (FeatureType::MultiArray(a), ValueType::Tensor(t)) => (a, t),
        (FeatureType::State(_), ValueType::State(_)) => return Ok(()),
        (FeatureType::MultiArray(_), other) => {
            return Err(mismatch(format!(
                "described as a multi-array, typed {other:?} in the program"
            )))
        }
        // Other feature kinds (images, scalars) are not modelled in detail.
        _ => return Ok(()),
    };
    let want = a.dtype.mil();
    if want != Some(t.dtype) {
        return Err(mismatch(format!(
            "described as {:?}, typed {} in the program",
            a.dtype,
            t.dtype.mil_name()
        )));
    }
    // coremltools leaves output shapes empty when they are flexible.
    if a.shape.is_empty() && !is_input {
        return Ok(());
    }
    let shapes = match &a.flexibility {
        Some(ShapeFlexibility::Enumerated(s)) => {
            let mut v = s.clone();
            v.push(a.shape.clone());
            v
        }
        Some(ShapeFlexibility::Range(r)) => {
            if r.len() != t.rank() {
                return Err(mismatch(format!(
                    "shape range has {} dimensions, the program's type is {t}",
                    r.len()
                )));
            }
            vec![a.shape.clone()]
        }
        None => vec![a.shape.clone()],
    };
    for s in &shapes {
        if s.len() != t.rank() {
            return Err(mismatch(format!(
                "described with shape {s:?}, typed {t} in the program"
            )));
        }
        for (i, (&d, pd)) in s.iter().zip(&t.shape).enumerate() {
            if let Dim::Fixed(n) = pd {
                if d != *n as i64 {
                    return Err(mismatch(format!(
                        "dimension {i} is {d} in the description (shape {s:?}) but {n} in the program ({t})"
                    )));
                }
            }
        }
    }
    if is_input && a.flexibility.is_none() && t.shape.iter().any(|d| d.fixed().is_none()) {
        return Err(mismatch(format!(
            "the program's type {t} has unknown dimensions but the description lists no flexible shapes"
        )));
    }
    Ok(())
}

fn check_pair(inputs: &[Feature], outputs: &[Feature], fname: &str, f: &Function) -> Result<()> {
    let mm = |m: String| CoremlError::DescriptionMismatch(m);
    let prog_in: Vec<&str> = f.inputs.iter().map(|i| i.name.as_str()).collect();
    let desc_in: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
    let (mut a, mut b) = (prog_in.clone(), desc_in.clone());
    a.sort_unstable();
    b.sort_unstable();
    if a != b {
        return Err(mm(format!(
            "function {fname:?} takes inputs {prog_in:?} but the description lists {desc_in:?}"
        )));
    }
    let prog_out = &f.block.outputs;
    let desc_out: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
    let (mut a, mut b) = (
        prog_out.iter().map(String::as_str).collect::<Vec<_>>(),
        desc_out.clone(),
    );
    a.sort_unstable();
    b.sort_unstable();
    if a != b {
        return Err(mm(format!(
            "function {fname:?} returns {prog_out:?} but the description lists outputs {desc_out:?}"
        )));
    }
    let types = var_types(f);
    for i in inputs {
        if let Some(t) = types.get(&i.name) {
            check_feature(i, t, "input", true)?;
        }
    }
    for o in outputs {
        if let Some(t) = types.get(&o.name) {
            check_feature(o, t, "output", false)?;
        }
    }
    Ok(())
}

/// Checks that the model description and the program describe the same
/// inputs and outputs (names, element types, shapes).
pub fn check_description(m: &Model) -> Result<()> {
    let d = &m.description;
    if d.functions.is_empty() {
        let (name, f) = m.main_function().ok_or_else(|| {
            CoremlError::DescriptionMismatch(format!(
                "the program has no function {:?} (has {:?})",
                if d.default_function_name.is_empty() {
                    "main"
                } else {
                    &d.default_function_name
                },
                m.program.functions.keys().collect::<Vec<_>>()
            ))
        })?;
        check_pair(&d.inputs, &d.outputs, name, f)
    } else {
        for fd in &d.functions {
            let f = m.program.functions.get(&fd.name).ok_or_else(|| {
                CoremlError::DescriptionMismatch(format!(
                    "the description lists function {:?}, which the program lacks",
                    fd.name
                ))
            })?;
            check_pair(&fd.inputs, &fd.outputs, &fd.name, f)?;
        }
        Ok(())
    }
}

/// Checks the opset names against the specification version.
pub fn check_versions(m: &Model) -> Result<()> {
    if m.spec_version < 6 {
        return Err(invalid(format!(
            "specificationVersion {} is below 6, the first with ML Programs",
            m.spec_version
        )));
    }
    for (name, f) in &m.program.functions {
        let known = ["CoreML5", "CoreML6", "CoreML7", "CoreML8", "CoreML9"];
        if !known.contains(&f.opset.as_str()) {
            return Err(invalid(format!(
                "function {name:?} has unknown opset {:?}",
                f.opset
            )));
        }
    }
    Ok(())
}
