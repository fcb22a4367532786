//! Weight files: deterministic initialisation, safetensors save and load in
//! f32 or f16.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::{ModelError, Result, WeightDtype};

/// A small deterministic generator (splitmix64) for reproducible weight
/// initialisation and tests; no global RNG state is involved.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }

    /// Uniform integer in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

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
