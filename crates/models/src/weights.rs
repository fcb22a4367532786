//! Weight files: deterministic initialisation, safetensors save and load in
//! f32 or f16.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::{ModelError, Result, WeightDtype};

/// The workspace's small deterministic generator (splitmix64), for
/// reproducible weight initialisation and tests.
pub use anectx_core::rng::Rng;

/// A tensor of normal values with standard deviation `std`.
pub fn randn(shape: &[usize], std: f32, rng: &mut Rng) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.normal() * std).collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// Saves named tensors as safetensors, converted to `dtype`.
pub fn save(tensors: &[(String, Tensor)], path: &Path, dtype: WeightDtype) -> Result<()> {
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_dtype(dtype.into())?)))
        .collect::<Result<_>>()?;
    candle_core::safetensors::save(&map, path).map_err(|e| ModelError::Weights {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Loads every tensor of a safetensors file, keeping the stored dtype.
pub fn load(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| ModelError::Weights {
        path: path.to_path_buf(),
        message: format!("not a readable safetensors file ({e})"),
    })
}

/// The dtype most floating tensors of a weight map are stored in.
pub fn stored_dtype(tensors: &HashMap<String, Tensor>) -> Option<WeightDtype> {
    let (mut f16, mut f32) = (0usize, 0usize);
    for t in tensors.values() {
        match t.dtype() {
            DType::F16 => f16 += t.elem_count(),
            DType::F32 => f32 += t.elem_count(),
            _ => {}
        }
    }
    match (f16, f32) {
        (0, 0) => None,
        (a, b) if a >= b => Some(WeightDtype::F16),
        _ => Some(WeightDtype::F32),
    }
}

/// Total number of elements in named tensors.
pub fn param_count(tensors: &[(String, Tensor)]) -> usize {
    tensors.iter().map(|(_, t)| t.elem_count()).sum()
}
