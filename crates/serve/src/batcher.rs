//! Dynamic batching in front of a synchronous [`Backend`].
//!
//! The backend lives on its own OS thread (created there by a factory, so
//! runtimes with thread-affine objects, such as Core ML, work). Async callers
//! send jobs over a channel; each job carries an already tokenised
//! [`TokenBatch`] and a oneshot reply. The thread drains whatever is queued,
//! merges queued jobs of the same kind and sequence bucket into one batch (bounded in
//! rows and in padded tokens), runs it, and splits the result back out.
//! There is no wait window: a batch is whatever queued while the backend was
//! busy (continuous batching, as in TEI).
//!
//! Admission is bounded: a request reserves a slot and its padded tokens; when
//! either queue bound would be exceeded it is refused at once
//! ([`BatchError::Overloaded`], HTTP 429) instead of waiting without bound.
//! A panic inside the backend fails only the batch that caused it.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anectx_core::{Backend, BackendError, BackendHealth, Embeddings, SupportedShapes, TokenBatch};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// Limits of the batching queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatcherConfig {
    /// Rows per merged backend batch (also capped by the backend's `max_batch`).
    pub max_batch_rows: usize,
    /// Padded tokens (rows × sequence bucket) per merged backend batch.
    pub max_batch_tokens: usize,
    /// Requests admitted (queued or running) at once; more get 429.
    pub max_queue_requests: usize,
    /// Padded tokens admitted at once; more get 429.
    pub max_queue_tokens: usize,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        Self {
            max_batch_rows: 64,
            max_batch_tokens: 16_384,
            max_queue_requests: 512,
            max_queue_tokens: 262_144,
        }
    }
}

/// What the backend reported when it started.
#[derive(Debug, Clone)]
pub struct BackendInfo {
    pub name: String,
    pub shapes: SupportedShapes,
    pub embedding_dim: Option<usize>,
    pub health: BackendHealth,
}

/// Why a job did not produce a result.
#[derive(Debug, Clone, Error)]
pub enum BatchError {
    #[error(
        "the server is busy: {pending_requests} requests and {pending_tokens} tokens are queued \
         (limits {max_requests} and {max_tokens}); retry later"
    )]
    Overloaded {
        pending_requests: usize,
        pending_tokens: usize,
        max_requests: usize,
        max_tokens: usize,
    },
    #[error("{0}")]
    TooLarge(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("the backend thread has stopped")]
    Stopped,
}

/// The two things a backend computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Embed,
    Score,
}

impl Op {
    pub fn label(self) -> &'static str {
        match self {
            Op::Embed => "embed",
            Op::Score => "score",
        }
    }
}

/// Timings of one job.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobTimings {
    pub queue: Duration,
    pub inference: Duration,
    /// Rows of the merged batch the job ran in.
    pub batch_rows: usize,
}

enum Output {
    Embed(Embeddings),
    Score(Vec<f32>),
}

type JobResult = (Result<Output, BackendError>, JobTimings);
type Reply = oneshot::Sender<JobResult>;

struct Job {
    op: Op,
    batch: TokenBatch,
    enqueued: Instant,
    reply: Reply,
    permit: Arc<Permit>,
}

#[derive(Debug, Default)]
struct Load {
    requests: usize,
    tokens: usize,
}

/// A reservation in the queue; released when every job holding it is done.
struct Permit {
    tokens: usize,
    load: Arc<Mutex<Load>>,
    metrics: Arc<Metrics>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut l = self.load.lock().unwrap_or_else(|p| p.into_inner());
        l.requests = l.requests.saturating_sub(1);
        l.tokens = l.tokens.saturating_sub(self.tokens);
        self.metrics
            .queue_requests
            .store(l.requests as u64, Ordering::Relaxed);
        self.metrics
            .queue_tokens
            .store(l.tokens as u64, Ordering::Relaxed);
    }
}

/// A cheap, cloneable handle to the backend thread.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::UnboundedSender<Job>,
    load: Arc<Mutex<Load>>,
    alive: Arc<AtomicBool>,
    config: BatcherConfig,
    info: Arc<BackendInfo>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("config", &self.config)
            .field("backend", &self.info.name)
            .finish()
    }
}

impl Batcher {
    /// Starts the backend thread. `factory` runs on that thread and builds
    /// the backend; its error is returned here.
    pub fn spawn<F>(
        factory: F,
        mut config: BatcherConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BackendError>
    where
        F: FnOnce() -> Result<Box<dyn Backend>, BackendError> + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel::<Job>();
        let (info_tx, info_rx) = std::sync::mpsc::channel();
        let alive = Arc::new(AtomicBool::new(true));
        let alive_thread = alive.clone();
        let metrics_thread = metrics.clone();
        let thread_config = config.clone();
        std::thread::Builder::new()
            .name("anectx-backend".into())
            .spawn(move || {
                let backend = match factory() {
                    Ok(b) => b,
                    Err(e) => {
                        alive_thread.store(false, Ordering::SeqCst);
                        let _ = info_tx.send(Err(e));
                        return;
                    }
                };
                let info = BackendInfo {
                    name: backend.name().to_string(),
                    shapes: backend.shapes(),
                    embedding_dim: backend.embedding_dim(),
                    health: backend.health(),
                };
                let max_rows = thread_config
                    .max_batch_rows
                    .min(info.shapes.max_batch)
                    .max(1);
                let _ = info_tx.send(Ok(info));
                run_loop(
                    backend.as_ref(),
                    rx,
                    max_rows,
                    thread_config.max_batch_tokens,
                    &metrics_thread,
                );
                alive_thread.store(false, Ordering::SeqCst);
                tracing::debug!("backend thread stopped");
            })
            .map_err(|e| BackendError::Start(format!("could not spawn the backend thread: {e}")))?;
        let info = info_rx
            .recv()
            .map_err(|_| BackendError::Start("the backend thread died while starting".into()))??;
        config.max_batch_rows = config.max_batch_rows.min(info.shapes.max_batch).max(1);
        Ok(Self {
            tx,
            load: Arc::new(Mutex::new(Load::default())),
            alive,
            config,
            info: Arc::new(info),
            metrics,
        })
    }

    pub fn info(&self) -> &BackendInfo {
        &self.info
    }

    pub fn config(&self) -> &BatcherConfig {
        &self.config
    }

    /// Health: the backend's own report, and whether its thread still runs.
    pub fn health(&self) -> BackendHealth {
        if !self.alive.load(Ordering::SeqCst) {
            return BackendHealth {
                ok: false,
                detail: "the backend thread has stopped".into(),
            };
        }
        self.info.health.clone()
    }

    /// How many rows of sequence length `seq` one job may carry.
    pub fn rows_per_job(&self, seq: usize) -> usize {
        (self.config.max_batch_tokens / seq.max(1))
            .min(self.config.max_batch_rows)
            .max(1)
    }

    /// Reserves room for one request of `tokens` padded tokens.
    fn admit(&self, tokens: usize) -> Result<Arc<Permit>, BatchError> {
        if !self.alive.load(Ordering::SeqCst) {
            return Err(BatchError::Stopped);
        }
        if tokens > self.config.max_queue_tokens {
            return Err(BatchError::TooLarge(format!(
                "the request needs {tokens} padded tokens, more than the queue holds ({}); \
                 send fewer or shorter inputs",
                self.config.max_queue_tokens
            )));
        }
        let mut l = self.load.lock().unwrap_or_else(|p| p.into_inner());
        if l.requests >= self.config.max_queue_requests
            || l.tokens + tokens > self.config.max_queue_tokens
        {
            let err = BatchError::Overloaded {
                pending_requests: l.requests,
                pending_tokens: l.tokens,
                max_requests: self.config.max_queue_requests,
                max_tokens: self.config.max_queue_tokens,
            };
            drop(l);
            self.metrics.record_rejection("queue_full");
            return Err(err);
        }
        l.requests += 1;
        l.tokens += tokens;
        self.metrics
            .queue_requests
            .store(l.requests as u64, Ordering::Relaxed);
        self.metrics
            .queue_tokens
            .store(l.tokens as u64, Ordering::Relaxed);
        Ok(Arc::new(Permit {
            tokens,
            load: self.load.clone(),
            metrics: self.metrics.clone(),
        }))
    }

    fn submit(
        &self,
        op: Op,
        batches: Vec<TokenBatch>,
    ) -> Result<Vec<oneshot::Receiver<JobResult>>, BatchError> {
        for b in &batches {
            if b.batch * b.seq > self.config.max_batch_tokens
                || b.batch > self.config.max_batch_rows
            {
                return Err(BatchError::TooLarge(format!(
                    "a batch of {} inputs × {} tokens exceeds the batch limits \
                     ({} rows, {} padded tokens)",
                    b.batch, b.seq, self.config.max_batch_rows, self.config.max_batch_tokens
                )));
            }
        }
        let tokens = batches.iter().map(|b| b.batch * b.seq).sum();
        let permit = self.admit(tokens)?;
        let mut rxs = Vec::with_capacity(batches.len());
        for batch in batches {
            let (reply, rx) = oneshot::channel();
            self.tx
                .send(Job {
                    op,
                    batch,
                    enqueued: Instant::now(),
                    reply,
                    permit: permit.clone(),
                })
                .map_err(|_| BatchError::Stopped)?;
            rxs.push(rx);
        }
        Ok(rxs)
    }

    /// Embeds every batch (one request, admitted as a whole) and returns the
    /// rows in order, with the slowest job's timings.
    pub async fn embed(
        &self,
        batches: Vec<TokenBatch>,
    ) -> Result<(Embeddings, JobTimings), BatchError> {
        let rxs = self.submit(Op::Embed, batches)?;
        let mut out: Option<Embeddings> = None;
        let mut timings = JobTimings::default();
        for rx in rxs {
            let (res, t) = rx.await.map_err(|_| BatchError::Stopped)?;
            merge_timings(&mut timings, t);
            match res? {
                Output::Embed(e) => append_rows(&mut out, e),
                Output::Score(_) => return Err(BatchError::Stopped),
            }
        }
        Ok((
            out.unwrap_or(Embeddings {
                rows: 0,
                dim: 0,
                data: Vec::new(),
            }),
            timings,
        ))
    }

    /// Scores every batch of (query, document) pairs, in order.
    pub async fn score(
        &self,
        batches: Vec<TokenBatch>,
    ) -> Result<(Vec<f32>, JobTimings), BatchError> {
        let rxs = self.submit(Op::Score, batches)?;
        let mut out = Vec::new();
        let mut timings = JobTimings::default();
        for rx in rxs {
            let (res, t) = rx.await.map_err(|_| BatchError::Stopped)?;
            merge_timings(&mut timings, t);
            match res? {
                Output::Score(s) => out.extend(s),
                Output::Embed(_) => return Err(BatchError::Stopped),
            }
        }
        Ok((out, timings))
    }

    /// [`Batcher::embed`] for synchronous callers (e.g. a context provider
    /// running on a blocking thread). Must not be called from an async task.
    pub fn embed_blocking(&self, batches: Vec<TokenBatch>) -> Result<Embeddings, BatchError> {
        let rxs = self.submit(Op::Embed, batches)?;
        let mut out: Option<Embeddings> = None;
        for rx in rxs {
            let (res, _) = rx.blocking_recv().map_err(|_| BatchError::Stopped)?;
            match res? {
                Output::Embed(e) => append_rows(&mut out, e),
                Output::Score(_) => return Err(BatchError::Stopped),
            }
        }
        Ok(out.unwrap_or(Embeddings {
            rows: 0,
            dim: 0,
            data: Vec::new(),
        }))
    }
}

fn merge_timings(acc: &mut JobTimings, t: JobTimings) {
    acc.queue = acc.queue.max(t.queue);
    acc.inference = acc.inference.max(t.inference);
    acc.batch_rows = acc.batch_rows.max(t.batch_rows);
}

fn append_rows(out: &mut Option<Embeddings>, e: Embeddings) {
    match out {
        None => *out = Some(e),
        Some(acc) => {
            acc.rows += e.rows;
            acc.data.extend(e.data);
        }
    }
}

fn run_loop(
    backend: &dyn Backend,
    mut rx: mpsc::UnboundedReceiver<Job>,
    max_rows: usize,
    max_tokens: usize,
    metrics: &Metrics,
) {
    let mut pending: VecDeque<Job> = VecDeque::new();
    loop {
        if pending.is_empty() {
            match rx.blocking_recv() {
                Some(j) => pending.push_back(j),
                None => return,
            }
        }
        while let Ok(j) = rx.try_recv() {
            pending.push_back(j);
        }
        // Work for clients that have gone away is dropped (with its permit).
        pending.retain(|j| !j.reply.is_closed());
        let Some(first) = pending.pop_front() else {
            continue;
        };
        let op = first.op;
        let mut rows = first.batch.batch;
        let seq = first.batch.seq;
        let mut group = vec![first];
        let mut i = 0;
        while i < pending.len() {
            let j = &pending[i];
            // Only jobs of the same sequence bucket are merged: re-padding a
            // short job to a longer bucket costs more compute than merging
            // saves on a CPU, and static-shape runtimes want one bucket anyway.
            if j.op == op
                && j.batch.seq == seq
                && rows + j.batch.batch <= max_rows
                && (rows + j.batch.batch) * seq <= max_tokens
            {
                rows += j.batch.batch;
                if let Some(j) = pending.remove(i) {
                    group.push(j);
                }
            } else {
                i += 1;
            }
        }
        run_group(backend, op, group, rows, seq, metrics);
    }
}

fn run_group(
    backend: &dyn Backend,
    op: Op,
    group: Vec<Job>,
    rows: usize,
    seq: usize,
    metrics: &Metrics,
) {
    let start = Instant::now();
    for j in &group {
        metrics
            .queue_duration
            .observe_duration(op.label(), start - j.enqueued);
    }
    let merged = if group.len() == 1 {
        Ok(group[0].batch.clone())
    } else {
        merge(group.iter().map(|j| &j.batch), rows, seq)
    };
    let result = merged.and_then(|batch| {
        catch_unwind(AssertUnwindSafe(|| match op {
            Op::Embed => backend.embed(&batch).map(Output::Embed),
            Op::Score => backend.score(&batch).map(Output::Score),
        }))
        .unwrap_or_else(|_| {
            tracing::error!("the backend panicked; failing this batch only");
            Err(BackendError::Inference(
                "the backend panicked on this batch".into(),
            ))
        })
    });
    let inference = start.elapsed();
    metrics
        .inference_duration
        .observe_duration(op.label(), inference);
    metrics.batch_size.observe(op.label(), rows as f64);
    metrics
        .batch_tokens
        .observe(op.label(), (rows * seq) as f64);
    let mut offset = 0;
    for j in group {
        let n = j.batch.batch;
        let timings = JobTimings {
            queue: start - j.enqueued,
            inference,
            batch_rows: rows,
        };
        let part = match &result {
            Err(e) => Err(e.clone()),
            Ok(Output::Embed(e)) => {
                if e.rows < offset + n {
                    Err(BackendError::Inference(format!(
                        "the backend returned {} rows for a batch of {rows}",
                        e.rows
                    )))
                } else {
                    Ok(Output::Embed(Embeddings {
                        rows: n,
                        dim: e.dim,
                        data: e.data[offset * e.dim..(offset + n) * e.dim].to_vec(),
                    }))
                }
            }
            Ok(Output::Score(s)) => s
                .get(offset..offset + n)
                .map(|s| Output::Score(s.to_vec()))
                .ok_or_else(|| {
                    BackendError::Inference(format!(
                        "the backend returned {} scores for a batch of {rows}",
                        s.len()
                    ))
                }),
        };
        offset += n;
        // Release the queue reservation before replying, so a client that
        // sees its answer also sees the queue without it.
        let Job { reply, permit, .. } = j;
        drop(permit);
        let _ = reply.send((part, timings));
    }
}

/// Concatenates batches, re-padding every row to `seq` (a bucket: the
/// longest of the inputs' buckets). Padding positions have mask 0.
fn merge<'a>(
    batches: impl Iterator<Item = &'a TokenBatch>,
    rows: usize,
    seq: usize,
) -> Result<TokenBatch, BackendError> {
    let mut ids = Vec::with_capacity(rows * seq);
    let mut type_ids = Vec::with_capacity(rows * seq);
    let mut mask = Vec::with_capacity(rows * seq);
    for b in batches {
        let pad = pad_id(b);
        for r in 0..b.batch {
            let row = r * b.seq..(r + 1) * b.seq;
            ids.extend_from_slice(&b.ids[row.clone()]);
            type_ids.extend_from_slice(&b.type_ids[row.clone()]);
            mask.extend_from_slice(&b.mask[row]);
            let extra = seq - b.seq;
            ids.extend(std::iter::repeat_n(pad, extra));
            type_ids.extend(std::iter::repeat_n(0, extra));
            mask.extend(std::iter::repeat_n(0, extra));
        }
    }
    TokenBatch::new(rows, seq, ids, type_ids, mask).map_err(|e| BackendError::Input(e.to_string()))
}

/// The pad id a tokenised batch used (the id at its first masked position),
/// or 0 when it has no padding.
fn pad_id(b: &TokenBatch) -> u32 {
    b.mask
        .iter()
        .position(|&m| m == 0)
        .map(|i| b.ids[i])
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_repads_rows_to_the_longest_bucket() {
        let a = TokenBatch::new(1, 2, vec![5, 9], vec![0, 0], vec![1, 0]).unwrap();
        let b = TokenBatch::new(1, 4, vec![1, 2, 3, 4], vec![0, 0, 1, 1], vec![1; 4]).unwrap();
        let m = merge([&a, &b].into_iter(), 2, 4).unwrap();
        assert_eq!(m.ids, vec![5, 9, 9, 9, 1, 2, 3, 4]);
        assert_eq!(m.mask, vec![1, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(m.type_ids, vec![0, 0, 0, 0, 0, 0, 1, 1]);
    }
}
