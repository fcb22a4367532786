//! Stand-in for non-Apple platforms: every call says Core ML needs macOS.

use std::collections::BTreeMap;

use crate::{CoreMlConfig, CoreMlError, HostArray, OpPlacement, NEEDS_MACOS};

pub(crate) struct Model;

fn unsupported<T>() -> Result<T, CoreMlError> {
    Err(CoreMlError::Unsupported(NEEDS_MACOS.into()))
}

impl Model {
    pub(crate) fn load(_config: &CoreMlConfig) -> Result<Self, CoreMlError> {
        unsupported()
    }

    pub(crate) fn input_shapes(&self) -> Result<BTreeMap<String, Vec<Vec<usize>>>, CoreMlError> {
        unsupported()
    }

    pub(crate) fn predict(
        &self,
        _inputs: &[(&str, HostArray)],
    ) -> Result<BTreeMap<String, HostArray>, CoreMlError> {
        unsupported()
    }

    pub(crate) fn output_shape(&self, _name: &str) -> Option<Vec<usize>> {
        None
    }

    pub(crate) fn placement(
        &self,
        _config: &CoreMlConfig,
    ) -> Result<Vec<OpPlacement>, CoreMlError> {
        unsupported()
    }
}

pub(crate) fn os_build() -> String {
    std::env::consts::OS.to_string()
}
