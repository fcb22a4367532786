//! MIL blob storage version 2 (`weights/weight.bin`).
//!
//! Layout: a 64-byte storage header (`count: u32`, `version: u32 = 2`, zeros),
//! then per blob a 64-byte metadata record (`0xDEADBEEF`, type code, size,
//! data offset, …) followed by its data; every record and data region starts
//! on a 64-byte boundary and the file ends right after the last data byte.
//! A `BlobFileValue.offset` points at the metadata record.

use half::f16;

use crate::error::BlobProblem;
use crate::program::{DataType, TensorData, TensorType};

/// Every metadata record and data region starts on this boundary.
pub const BLOB_ALIGNMENT: usize = 64;
/// The first word of every metadata record.
pub const BLOB_SENTINEL: u32 = 0xDEAD_BEEF;
/// The storage format version written and read.
pub const BLOB_VERSION: u32 = 2;
/// `BlobFileValue.fileName` of every blob value.
pub const BLOB_FILE_NAME: &str = "@model_path/weights/weight.bin";

/// Builds a `weight.bin` in memory.
#[derive(Debug, Clone)]
pub struct BlobWriter {
    buf: Vec<u8>,
    count: u32,
}

impl Default for BlobWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl BlobWriter {
    pub fn new() -> Self {
        let mut buf = vec![0u8; BLOB_ALIGNMENT];
        buf[4..8].copy_from_slice(&BLOB_VERSION.to_le_bytes());
        Self { buf, count: 0 }
    }

    /// Appends one blob and returns the offset of its metadata record.
    pub fn append(&mut self, dtype: DataType, data: &[u8]) -> Result<u64, BlobProblem> {
        let code = dtype
            .blob_code()
            .ok_or_else(|| BlobProblem::UnsupportedType(dtype.mil_name().into()))?;
        let pad = (BLOB_ALIGNMENT - self.buf.len() % BLOB_ALIGNMENT) % BLOB_ALIGNMENT;
        self.buf.resize(self.buf.len() + pad, 0);
        let meta = self.buf.len() as u64;
        let mut rec = [0u8; BLOB_ALIGNMENT];
        rec[0..4].copy_from_slice(&BLOB_SENTINEL.to_le_bytes());
        rec[4..8].copy_from_slice(&code.to_le_bytes());
        rec[8..16].copy_from_slice(&(data.len() as u64).to_le_bytes());
        rec[16..24].copy_from_slice(&(meta + BLOB_ALIGNMENT as u64).to_le_bytes());
        self.buf.extend_from_slice(&rec);
        self.buf.extend_from_slice(data);
        self.count += 1;
        self.buf[0..4].copy_from_slice(&self.count.to_le_bytes());
        Ok(meta)
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Reads blobs out of a `weight.bin` image.
#[derive(Debug, Clone, Copy)]
pub struct BlobReader<'a> {
    data: &'a [u8],
}

impl<'a> BlobReader<'a> {
    /// Checks the storage header.
    pub fn new(data: &'a [u8]) -> Result<Self, BlobProblem> {
        if data.len() < BLOB_ALIGNMENT {
            return Err(BlobProblem::TruncatedHeader {
                len: data.len() as u64,
            });
        }
        let version = u32_at(data, 4);
        if version != BLOB_VERSION {
            return Err(BlobProblem::Version(version));
        }
        Ok(Self { data })
    }

    /// The number of blobs the header declares.
    pub fn count(&self) -> u32 {
        u32_at(self.data, 0)
    }

    /// The raw bytes of the blob whose metadata is at `offset`, checked
    /// against the type the program declares for it.
    pub fn raw(&self, offset: u64, expected: DataType) -> Result<&'a [u8], BlobProblem> {
        let len = self.data.len() as u64;
        if offset.saturating_add(BLOB_ALIGNMENT as u64) > len {
            return Err(BlobProblem::OffsetPastEnd { offset, len });
        }
        if !offset.is_multiple_of(BLOB_ALIGNMENT as u64) {
            return Err(BlobProblem::Misaligned(offset));
        }
        let at = offset as usize;
        let sentinel = u32_at(self.data, at);
        if sentinel != BLOB_SENTINEL {
            return Err(BlobProblem::BadSentinel { found: sentinel });
        }
        let code = u32_at(self.data, at + 4);
        if Some(code) != expected.blob_code() {
            return Err(BlobProblem::DtypeMismatch {
                found: code,
                expected: expected.mil_name().into(),
            });
        }
        let size = u64_at(self.data, at + 8);
        let data_offset = u64_at(self.data, at + 16);
        if data_offset > len || size > len - data_offset {
            return Err(BlobProblem::Truncated {
                data_offset,
                size,
                len,
            });
        }
        Ok(&self.data[data_offset as usize..(data_offset + size) as usize])
    }

    /// Reads a blob as tensor data of type `ty` (whose shape must be fixed).
    pub fn read(&self, offset: u64, ty: &TensorType) -> Result<TensorData, BlobProblem> {
        let raw = self.raw(offset, ty.dtype)?;
        if let (Some(n), Some(bits)) = (ty.elem_count(), ty.dtype.bits()) {
            let expected = (n as u128 * bits as u128).div_ceil(8) as u64;
            if raw.len() as u64 != expected {
                return Err(BlobProblem::SizeMismatch {
                    found: raw.len() as u64,
                    expected,
                });
            }
        }
        Ok(decode(ty.dtype, raw))
    }
}

/// Packs tensor data as blob bytes (little-endian).
pub fn encode(dtype: DataType, data: &TensorData) -> Result<Vec<u8>, BlobProblem> {
    let unsupported = || BlobProblem::UnsupportedType(dtype.mil_name().into());
    Ok(match (dtype, data) {
        (DataType::F16, TensorData::F16(v)) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        (DataType::F32, TensorData::F32(v)) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        (DataType::I32 | DataType::U32, TensorData::Ints(v)) => {
            v.iter().flat_map(|x| x.to_le_bytes()).collect()
        }
        (DataType::I16 | DataType::U16, TensorData::Ints(v)) => {
            v.iter().flat_map(|&x| (x as u16).to_le_bytes()).collect()
        }
        (_, TensorData::Bytes(v)) if dtype.blob_code().is_some() => v.clone(),
        _ => return Err(unsupported()),
    })
}

/// Unpacks blob bytes into the in-memory encoding of `dtype`.
pub fn decode(dtype: DataType, raw: &[u8]) -> TensorData {
    match dtype {
        DataType::F16 => TensorData::F16(
            raw.chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        DataType::F32 => TensorData::F32(
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        DataType::I32 | DataType::U32 => TensorData::Ints(
            raw.chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        DataType::I16 => TensorData::Ints(
            raw.chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i32)
                .collect(),
        ),
        DataType::U16 => TensorData::Ints(
            raw.chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as i32)
                .collect(),
        ),
        _ => TensorData::Bytes(raw.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_coremltools_reference() {
        // Four fp16 blobs of the note's reference package: 2048, 3072, 64, 256 bytes.
        let mut w = BlobWriter::new();
        let offs: Vec<u64> = [2048usize, 3072, 64, 256]
            .iter()
            .map(|&n| w.append(DataType::F16, &vec![0u8; n]).unwrap())
            .collect();
        assert_eq!(offs, vec![64, 2176, 5312, 5440]);
        let bytes = w.finish();
        assert_eq!(bytes.len(), 5760);
        assert_eq!(&bytes[0..8], &[4, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(
            &bytes[64..88],
            &[
                0xef, 0xbe, 0xad, 0xde, 1, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0,
                0
            ]
        );
        let r = BlobReader::new(&bytes).unwrap();
        assert_eq!(r.count(), 4);
        assert_eq!(r.raw(2176, DataType::F16).unwrap().len(), 3072);
        assert!(matches!(
            r.raw(2176, DataType::F32),
            Err(BlobProblem::DtypeMismatch { found: 1, .. })
        ));
        assert!(matches!(
            r.raw(128, DataType::F16),
            Err(BlobProblem::BadSentinel { .. })
        ));
    }
}
