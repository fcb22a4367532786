//! Where a model's operations run: devices, and "islands" of consecutive
//! operations on one device. Shared by the static ANE-residency checker
//! (predicted placement) and the Core ML runtime (placement reported by
//! `MLComputePlan`).

use serde::{Deserialize, Serialize};

/// A compute device of an Apple SoC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    Cpu,
    Gpu,
    NeuralEngine,
    /// Constants and other ops that run nowhere in particular.
    None,
}

impl Device {
    pub fn label(self) -> &'static str {
        match self {
            Device::Cpu => "CPU",
            Device::Gpu => "GPU",
            Device::NeuralEngine => "ANE",
            Device::None => "-",
        }
    }
}

/// Where an island sits in the op sequence. A `Middle` island off the ANE
/// forces two round trips between processors and is the costly case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IslandPosition {
    /// The whole program runs on one device.
    Whole,
    Begin,
    Middle,
    End,
}

/// A run of consecutive (non-`None`) operations on one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Island {
    pub device: Device,
    /// Index of the first and last op of the island (inclusive), in the
    /// indices of the input slice.
    pub first: usize,
    pub last: usize,
    /// Number of ops in the island (ops placed on `Device::None` are skipped).
    pub ops: usize,
    pub position: IslandPosition,
}

/// Groups a per-op device sequence into islands. Ops on `Device::None`
/// (constants) neither start nor break an island.
pub fn islands(devices: &[Device]) -> Vec<Island> {
    let mut out: Vec<Island> = Vec::new();
    for (i, &d) in devices.iter().enumerate() {
        if d == Device::None {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.device == d => {
                last.last = i;
                last.ops += 1;
            }
            _ => out.push(Island {
                device: d,
                first: i,
                last: i,
                ops: 1,
                position: IslandPosition::Middle,
            }),
        }
    }
    let n = out.len();
    for (i, isl) in out.iter_mut().enumerate() {
        isl.position = match (i, n) {
            (_, 1) => IslandPosition::Whole,
            (0, _) => IslandPosition::Begin,
            (i, n) if i == n - 1 => IslandPosition::End,
            _ => IslandPosition::Middle,
        };
    }
    out
}

/// Share of the total cost spent on the Neural Engine. `costs` pairs each
/// op's device with its estimated cost (weights need not sum to one); ops
/// without a cost are skipped. `None` when nothing has a cost.
pub fn ane_residency(costs: &[(Device, Option<f64>)]) -> Option<f64> {
    let total: f64 = costs.iter().filter_map(|(_, c)| *c).sum();
    if total <= 0.0 {
        return None;
    }
    let ane: f64 = costs
        .iter()
        .filter(|(d, _)| *d == Device::NeuralEngine)
        .filter_map(|(_, c)| *c)
        .sum();
    Some(ane / total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Device::*;

    #[test]
    fn groups_islands_and_classifies_positions() {
        let seq = [
            Cpu,
            None,
            Cpu,
            NeuralEngine,
            None,
            NeuralEngine,
            Cpu,
            NeuralEngine,
        ];
        let isl = islands(&seq);
        let got: Vec<_> = isl
            .iter()
            .map(|i| (i.device, i.first, i.last, i.ops, i.position))
            .collect();
        assert_eq!(
            got,
            vec![
                (Cpu, 0, 2, 2, IslandPosition::Begin),
                (NeuralEngine, 3, 5, 2, IslandPosition::Middle),
                (Cpu, 6, 6, 1, IslandPosition::Middle),
                (NeuralEngine, 7, 7, 1, IslandPosition::End),
            ]
        );
        let whole = islands(&[NeuralEngine, None, NeuralEngine]);
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].position, IslandPosition::Whole);
        assert!(islands(&[None, None]).is_empty());
    }

    #[test]
    fn residency_is_cost_weighted() {
        let r = ane_residency(&[
            (NeuralEngine, Some(3.0)),
            (Cpu, Some(1.0)),
            (None, Option::None),
        ]);
        assert_eq!(r, Some(0.75));
        assert_eq!(ane_residency(&[(Cpu, Option::None)]), Option::None);
    }
}
