//! The CPU backend: anectx models on candle.

use anectx_core::{
    Backend, BackendError, BackendHealth, Embeddings, SupportedShapes, TokenBatch, SEQ_BUCKETS,
};
use candle_core::DType;

use crate::io::{batch_tensors, Embedder};
use crate::ConvClassifier;

/// Runs an embedder and/or a relevance classifier on the CPU with candle.
#[derive(Debug, Clone)]
pub struct CandleBackend {
    embedder: Option<Embedder>,
    classifier: Option<ConvClassifier>,
    max_batch: usize,
}

impl CandleBackend {
    pub fn new(embedder: Option<Embedder>, classifier: Option<ConvClassifier>) -> Self {
        Self {
            embedder,
            classifier,
            max_batch: 256,
        }
    }

    pub fn with_max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    pub fn embedder(&self) -> Option<&Embedder> {
        self.embedder.as_ref()
    }

    fn max_seq(&self) -> usize {
        let e = self.embedder.as_ref().map(Embedder::max_seq);
        let c = self.classifier.as_ref().map(|c| c.config.max_seq);
        match (e, c) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => 0,
        }
    }

    fn check(&self, batch: &TokenBatch) -> Result<(), BackendError> {
        if batch.batch > self.max_batch {
            return Err(BackendError::Input(format!(
                "batch of {} exceeds the backend's maximum of {}",
                batch.batch, self.max_batch
            )));
        }
        if batch.seq > self.max_seq() {
            return Err(BackendError::Input(format!(
                "sequence length {} exceeds the model's maximum of {}",
                batch.seq,
                self.max_seq()
            )));
        }
        Ok(())
    }
}

impl Backend for CandleBackend {
    fn name(&self) -> &str {
        "candle-cpu"
    }

    fn health(&self) -> BackendHealth {
        let ok = self.embedder.is_some() || self.classifier.is_some();
        BackendHealth {
            ok,
            detail: if ok {
                "ready".into()
            } else {
                "no model loaded".into()
            },
        }
    }

    fn shapes(&self) -> SupportedShapes {
        let max_seq = self.max_seq();
        SupportedShapes {
            max_batch: self.max_batch,
            seq_buckets: SEQ_BUCKETS
                .iter()
                .copied()
                .filter(|&b| b <= max_seq)
                .collect(),
            max_seq,
        }
    }

    fn embedding_dim(&self) -> Option<usize> {
        self.embedder.as_ref().map(Embedder::dim)
    }

    fn embed(&self, batch: &TokenBatch) -> Result<Embeddings, BackendError> {
        let e = self.embedder.as_ref().ok_or_else(|| {
            BackendError::NotSupported("this backend has no embedder loaded".into())
        })?;
        self.check(batch)?;
        Ok(e.embed(batch)?)
    }

    fn score(&self, pairs: &TokenBatch) -> Result<Vec<f32>, BackendError> {
        let c = self.classifier.as_ref().ok_or_else(|| {
            BackendError::NotSupported("this backend has no relevance classifier loaded".into())
        })?;
        self.check(pairs)?;
        let (ids, type_ids, mask) = batch_tensors(pairs, c.config.vocab_size)?;
        let s = c
            .scores(&ids, &type_ids, &mask)
            .and_then(|t| Ok(t.to_dtype(DType::F32)?.to_vec1::<f32>()?))?;
        Ok(s)
    }
}
