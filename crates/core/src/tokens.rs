use crate::CoreError;
use serde::{Deserialize, Serialize};

/// Fixed sequence buckets. Inputs are padded up to the smallest bucket that
/// holds them so that every model sees a small, static set of shapes (the
/// Neural Engine compiles one program per shape).
pub const SEQ_BUCKETS: [usize; 5] = [32, 64, 128, 256, 512];

/// A padded batch of token sequences, row-major `(batch, seq)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBatch {
    pub batch: usize,
    pub seq: usize,
    /// Token ids, `batch * seq`, padded with the tokenizer's pad id.
    pub ids: Vec<u32>,
    /// Segment ids (0 for the first text, 1 for the second of a pair).
    pub type_ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding.
    pub mask: Vec<u32>,
    /// Inputs that did not fit and were cut, in batch order.
    pub truncations: Vec<Truncation>,
}

/// Records that input `index` had `original_len` tokens and only `kept` were kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncation {
    pub index: usize,
    pub original_len: usize,
    pub kept: usize,
}

impl TokenBatch {
    /// Builds a batch and checks that every buffer has `batch * seq` entries.
    pub fn new(
        batch: usize,
        seq: usize,
        ids: Vec<u32>,
        type_ids: Vec<u32>,
        mask: Vec<u32>,
    ) -> Result<Self, CoreError> {
        let n = batch * seq;
        if batch == 0 || seq == 0 {
            return Err(CoreError::Batch(format!(
                "empty batch (batch={batch}, seq={seq})"
            )));
        }
        for (name, len) in [
            ("ids", ids.len()),
            ("type_ids", type_ids.len()),
            ("mask", mask.len()),
        ] {
            if len != n {
                return Err(CoreError::Batch(format!(
                    "{name} has {len} entries, expected batch*seq = {n}"
                )));
            }
        }
        Ok(Self {
            batch,
            seq,
            ids,
            type_ids,
            mask,
            truncations: Vec::new(),
        })
    }

    /// Number of real (non-padding) tokens in row `i`.
    pub fn len_of(&self, i: usize) -> usize {
        self.mask[i * self.seq..(i + 1) * self.seq]
            .iter()
            .filter(|&&m| m != 0)
            .count()
    }

    /// Total real tokens in the batch.
    pub fn real_tokens(&self) -> usize {
        self.mask.iter().filter(|&&m| m != 0).count()
    }

    /// Splits the batch into consecutive batches of at most `rows` rows (same
    /// sequence length). Truncation records follow their rows, re-indexed.
    pub fn split_rows(self, rows: usize) -> Vec<TokenBatch> {
        let rows = rows.max(1);
        if self.batch <= rows {
            return vec![self];
        }
        let seq = self.seq;
        (0..self.batch)
            .step_by(rows)
            .map(|r0| {
                let r1 = (r0 + rows).min(self.batch);
                let span = r0 * seq..r1 * seq;
                TokenBatch {
                    batch: r1 - r0,
                    seq,
                    ids: self.ids[span.clone()].to_vec(),
                    type_ids: self.type_ids[span.clone()].to_vec(),
                    mask: self.mask[span].to_vec(),
                    truncations: self
                        .truncations
                        .iter()
                        .filter(|t| (r0..r1).contains(&t.index))
                        .map(|t| Truncation {
                            index: t.index - r0,
                            ..t.clone()
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// The smallest bucket in `buckets` that holds `len` tokens, or `None` when
    /// `len` exceeds the largest one.
    pub fn bucket_for(len: usize, buckets: &[usize]) -> Option<usize> {
        buckets.iter().copied().filter(|&b| b >= len).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_mismatched_buffers() {
        let err = TokenBatch::new(2, 3, vec![0; 6], vec![0; 6], vec![1; 5]).unwrap_err();
        assert!(err.to_string().contains("mask has 5 entries"), "{err}");
        assert!(TokenBatch::new(0, 3, vec![], vec![], vec![]).is_err());
    }

    #[test]
    fn splits_rows_keeping_order_and_truncations() {
        let mut b = TokenBatch::new(5, 2, (0..10).collect(), vec![0; 10], vec![1; 10]).unwrap();
        b.truncations.push(Truncation {
            index: 3,
            original_len: 9,
            kept: 2,
        });
        let parts = b.clone().split_rows(2);
        assert_eq!(
            parts.iter().map(|p| p.batch).collect::<Vec<_>>(),
            vec![2, 2, 1]
        );
        let ids: Vec<u32> = parts.iter().flat_map(|p| p.ids.clone()).collect();
        assert_eq!(ids, b.ids);
        assert_eq!(
            parts[1].truncations,
            vec![Truncation {
                index: 1,
                original_len: 9,
                kept: 2
            }]
        );
        assert!(parts[0].truncations.is_empty() && parts[2].truncations.is_empty());
        assert_eq!(b.clone().split_rows(8), vec![b]);
    }

    #[test]
    fn counts_real_tokens_and_picks_buckets() {
        let b =
            TokenBatch::new(2, 4, vec![1; 8], vec![0; 8], vec![1, 1, 0, 0, 1, 1, 1, 0]).unwrap();
        assert_eq!(b.len_of(0), 2);
        assert_eq!(b.len_of(1), 3);
        assert_eq!(b.real_tokens(), 5);
        assert_eq!(TokenBatch::bucket_for(1, &SEQ_BUCKETS), Some(32));
        assert_eq!(TokenBatch::bucket_for(33, &SEQ_BUCKETS), Some(64));
        assert_eq!(TokenBatch::bucket_for(512, &SEQ_BUCKETS), Some(512));
        assert_eq!(TokenBatch::bucket_for(513, &SEQ_BUCKETS), None);
    }
}
