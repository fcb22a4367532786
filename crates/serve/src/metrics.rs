//! Prometheus metrics, written in the text exposition format (version 0.0.4)
//! without a metrics library: a few counters, gauges and fixed-bucket
//! histograms behind mutexes, which is plenty for a local server.
//!
//! Exposed series (all prefixed `anectx_`):
//! - `http_requests_total{route,status}` — requests by matched route and status;
//! - `http_request_duration_seconds{route}` — whole-request latency;
//! - `embed_queue_duration_seconds{op}` — time a job waited for the backend thread;
//! - `tokenize_duration_seconds{op}` — tokenisation time per request;
//! - `inference_duration_seconds{op}` — backend time per (merged) batch;
//! - `batch_size{op}` — rows per backend batch; `batch_tokens{op}` — padded tokens per batch;
//! - `queue_requests`, `queue_tokens` — jobs and padded tokens waiting now (gauges);
//! - `rejected_total{reason}` — requests refused by backpressure;
//! - `model_info{model,kind,backend,version}` — always 1, carries the model version;
//! - `relevance_model_info{version}` — always 1, the relevance model serving now;
//! - `relevance_reloads_total{result="ok"|"failed"}` — hot swaps done and refused;
//! - `requests_shed_total` — requests answered 503 by load shedding or the request timeout;
//! - `log_write_duration_seconds{kind}` — time from handing an interaction to
//!   the log writer to its commit; `log_writes_total{result}` — outcomes.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Latency buckets in seconds (0.5 ms … 30 s).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Batch-size buckets (rows).
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// Padded-token buckets per batch.
pub const TOKEN_BUCKETS: &[f64] = &[
    32.0, 128.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0,
];

#[derive(Debug, Clone)]
struct HistData {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// A histogram with fixed buckets and one label.
#[derive(Debug)]
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    buckets: &'static [f64],
    data: Mutex<BTreeMap<String, HistData>>,
}

impl Histogram {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        label: &'static str,
        buckets: &'static [f64],
    ) -> Self {
        Self {
            name,
            help,
            label,
            buckets,
            data: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn observe(&self, label: &str, value: f64) {
        let mut map = self.data.lock().unwrap_or_else(|p| p.into_inner());
        let h = map.entry(label.to_string()).or_insert_with(|| HistData {
            counts: vec![0; self.buckets.len()],
            sum: 0.0,
            count: 0,
        });
        for (i, &b) in self.buckets.iter().enumerate() {
            if value <= b {
                h.counts[i] += 1;
            }
        }
        h.sum += value;
        h.count += 1;
    }

    pub fn observe_duration(&self, label: &str, d: Duration) {
        self.observe(label, d.as_secs_f64());
    }

    /// Number of observations for `label`.
    pub fn count(&self, label: &str) -> u64 {
        let map = self.data.lock().unwrap_or_else(|p| p.into_inner());
        map.get(label).map_or(0, |h| h.count)
    }

    fn render(&self, out: &mut String) {
        let map = self.data.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} histogram", self.name);
        for (label, h) in map {
            let l = escape(&label);
            for (i, b) in self.buckets.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{}_bucket{{{}=\"{l}\",le=\"{b}\"}} {}",
                    self.name, self.label, h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "{}_bucket{{{}=\"{l}\",le=\"+Inf\"}} {}",
                self.name, self.label, h.count
            );
            let _ = writeln!(out, "{}_sum{{{}=\"{l}\"}} {}", self.name, self.label, h.sum);
            let _ = writeln!(
                out,
                "{}_count{{{}=\"{l}\"}} {}",
                self.name, self.label, h.count
            );
        }
    }
}

/// Every metric the server keeps.
#[derive(Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    pub request_duration: Histogram,
    pub queue_duration: Histogram,
    pub tokenize_duration: Histogram,
    pub inference_duration: Histogram,
    pub batch_size: Histogram,
    pub batch_tokens: Histogram,
    pub queue_requests: AtomicU64,
    pub queue_tokens: AtomicU64,
    model_info: Mutex<Vec<(String, String)>>,
    pub log_write_duration: Histogram,
    log_writes: [AtomicU64; 2],
    reloads: [AtomicU64; 2],
    shed: AtomicU64,
    relevance_version: Mutex<String>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            requests: Mutex::new(BTreeMap::new()),
            rejected: Mutex::new(BTreeMap::new()),
            request_duration: Histogram::new(
                "anectx_http_request_duration_seconds",
                "Whole-request latency by route.",
                "route",
                LATENCY_BUCKETS,
            ),
            queue_duration: Histogram::new(
                "anectx_embed_queue_duration_seconds",
                "Time a job waited in the batching queue before the backend took it.",
                "op",
                LATENCY_BUCKETS,
            ),
            tokenize_duration: Histogram::new(
                "anectx_tokenize_duration_seconds",
                "Tokenisation time per request.",
                "op",
                LATENCY_BUCKETS,
            ),
            inference_duration: Histogram::new(
                "anectx_inference_duration_seconds",
                "Backend time per merged batch.",
                "op",
                LATENCY_BUCKETS,
            ),
            batch_size: Histogram::new(
                "anectx_batch_size",
                "Rows (sequences) per backend batch.",
                "op",
                BATCH_BUCKETS,
            ),
            batch_tokens: Histogram::new(
                "anectx_batch_tokens",
                "Padded tokens (rows x bucket length) per backend batch.",
                "op",
                TOKEN_BUCKETS,
            ),
            queue_requests: AtomicU64::new(0),
            queue_tokens: AtomicU64::new(0),
            model_info: Mutex::new(Vec::new()),
            log_write_duration: Histogram::new(
                "anectx_log_write_duration_seconds",
                "Time from handing an interaction to the log writer until its commit.",
                "kind",
                LATENCY_BUCKETS,
            ),
            log_writes: [AtomicU64::new(0), AtomicU64::new(0)],
            reloads: [AtomicU64::new(0), AtomicU64::new(0)],
            shed: AtomicU64::new(0),
            relevance_version: Mutex::new(String::new()),
        }
    }

    /// Counts one interaction-log write (`ok` or failed).
    pub fn record_log_write(&self, ok: bool) {
        self.log_writes[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request refused by load shedding or its timeout.
    pub fn record_shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests shed so far.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// Counts one relevance-model reload (`ok` = swapped, else refused).
    pub fn record_reload(&self, ok: bool) {
        self.reloads[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    /// Reloads so far: (ok, failed).
    pub fn reloads(&self) -> (u64, u64) {
        (
            self.reloads[0].load(Ordering::Relaxed),
            self.reloads[1].load(Ordering::Relaxed),
        )
    }

    /// The relevance model version serving now.
    pub fn set_relevance_version(&self, v: &str) {
        *self
            .relevance_version
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = v.to_string();
    }

    pub fn record_request(&self, route: &str, status: u16, elapsed: Duration) {
        let mut m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((route.to_string(), status)).or_insert(0) += 1;
        drop(m);
        self.request_duration.observe_duration(route, elapsed);
    }

    /// Requests seen for `route` with `status`.
    pub fn requests(&self, route: &str, status: u16) -> u64 {
        let m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&(route.to_string(), status)).copied().unwrap_or(0)
    }

    pub fn record_rejection(&self, reason: &'static str) {
        let mut m = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(reason).or_insert(0) += 1;
    }

    /// Sets the labels of `anectx_model_info` (model, kind, backend, version, …).
    pub fn set_model_info(&self, labels: Vec<(String, String)>) {
        *self.model_info.lock().unwrap_or_else(|p| p.into_inner()) = labels;
    }

    /// The whole exposition, `text/plain; version=0.0.4`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP anectx_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE anectx_http_requests_total counter\n");
        let reqs = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for ((route, status), n) in reqs {
            let _ = writeln!(
                out,
                "anectx_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                escape(&route)
            );
        }
        out.push_str("# HELP anectx_rejected_total Requests refused by backpressure.\n");
        out.push_str("# TYPE anectx_rejected_total counter\n");
        let rej = self
            .rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (reason, n) in rej {
            let _ = writeln!(out, "anectx_rejected_total{{reason=\"{reason}\"}} {n}");
        }
        self.request_duration.render(&mut out);
        self.queue_duration.render(&mut out);
        self.tokenize_duration.render(&mut out);
        self.inference_duration.render(&mut out);
        self.batch_size.render(&mut out);
        self.batch_tokens.render(&mut out);
        out.push_str("# HELP anectx_queue_requests Jobs waiting for the backend thread.\n");
        out.push_str("# TYPE anectx_queue_requests gauge\n");
        let _ = writeln!(
            out,
            "anectx_queue_requests {}",
            self.queue_requests.load(Ordering::Relaxed)
        );
        out.push_str("# HELP anectx_queue_tokens Padded tokens waiting for the backend thread.\n");
        out.push_str("# TYPE anectx_queue_tokens gauge\n");
        let _ = writeln!(
            out,
            "anectx_queue_tokens {}",
            self.queue_tokens.load(Ordering::Relaxed)
        );
        let info = self
            .model_info
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        out.push_str("# HELP anectx_model_info The served model; the value is always 1.\n");
        out.push_str("# TYPE anectx_model_info gauge\n");
        let labels: Vec<String> = info
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = writeln!(out, "anectx_model_info{{{}}} 1", labels.join(","));
        let rv = self
            .relevance_version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if !rv.is_empty() {
            out.push_str(
                "# HELP anectx_relevance_model_info The relevance model serving now; always 1.\n",
            );
            out.push_str("# TYPE anectx_relevance_model_info gauge\n");
            let _ = writeln!(
                out,
                "anectx_relevance_model_info{{version=\"{}\"}} 1",
                escape(&rv)
            );
        }
        let (ok, failed) = self.reloads();
        out.push_str(
            "# HELP anectx_relevance_reloads_total Relevance-model hot swaps: ok = swapped, failed = refused.\n",
        );
        out.push_str("# TYPE anectx_relevance_reloads_total counter\n");
        let _ = writeln!(out, "anectx_relevance_reloads_total{{result=\"ok\"}} {ok}");
        let _ = writeln!(
            out,
            "anectx_relevance_reloads_total{{result=\"failed\"}} {failed}"
        );
        out.push_str(
            "# HELP anectx_requests_shed_total Requests answered 503 by load shedding or the request timeout.\n",
        );
        out.push_str("# TYPE anectx_requests_shed_total counter\n");
        let _ = writeln!(out, "anectx_requests_shed_total {}", self.shed());
        out.push_str("# HELP anectx_log_writes_total Interaction-log writes by outcome.\n");
        out.push_str("# TYPE anectx_log_writes_total counter\n");
        for (i, r) in ["ok", "failed"].iter().enumerate() {
            let _ = writeln!(
                out,
                "anectx_log_writes_total{{result=\"{r}\"}} {}",
                self.log_writes[i].load(Ordering::Relaxed)
            );
        }
        self.log_write_duration.render(&mut out);
        out
    }
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new("x", "help", "op", &[1.0, 2.0]);
        h.observe("a", 0.5);
        h.observe("a", 1.5);
        h.observe("a", 3.0);
        let mut s = String::new();
        h.render(&mut s);
        assert!(s.contains("x_bucket{op=\"a\",le=\"1\"} 1"), "{s}");
        assert!(s.contains("x_bucket{op=\"a\",le=\"2\"} 2"), "{s}");
        assert!(s.contains("x_bucket{op=\"a\",le=\"+Inf\"} 3"), "{s}");
        assert!(s.contains("x_sum{op=\"a\"} 5"), "{s}");
        assert!(s.contains("x_count{op=\"a\"} 3"), "{s}");
    }

    #[test]
    fn renders_counters_and_escapes_labels() {
        let m = Metrics::new();
        m.record_request("/v1/embeddings", 200, Duration::from_millis(3));
        m.record_request("/v1/embeddings", 200, Duration::from_millis(3));
        m.set_model_info(vec![("model".into(), "a\"b".into())]);
        let s = m.render();
        assert!(
            s.contains("anectx_http_requests_total{route=\"/v1/embeddings\",status=\"200\"} 2"),
            "{s}"
        );
        assert!(s.contains("anectx_model_info{model=\"a\\\"b\"} 1"), "{s}");
    }
}
