//! The connection loop: HTTP/1 on a TCP listener with the limits a local
//! server still needs against a hostile page or client.
//!
//! - **A cap on open connections** ([`Limits::max_connections`]): past it,
//!   new connections wait in the kernel's accept queue.
//! - **A header-read timeout** ([`Limits::header_read_timeout`]): a client
//!   that does not finish its request headers in time is disconnected (slow
//!   headers cannot hold a connection slot forever).
//! - **Graceful shutdown with a bound** ([`Limits::shutdown_grace`]): on the
//!   shutdown signal no new connection is accepted, in-flight requests get
//!   the grace period to finish (a hung upstream cannot hold the process),
//!   then the remaining connections are dropped.
//!
//! Request-level limits (in-flight requests with load shedding, a request
//! timeout) are middleware ([`crate::middleware`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

/// Connection limits of [`crate::serve_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; more wait to be accepted.
    pub max_connections: usize,
    /// Longest time a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// Longest wait for in-flight requests after the shutdown signal.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Accepts connections on `listener` and serves `app` on each until
/// `shutdown` completes; then drains as [`Limits`] says.
pub(crate) async fn run(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Dropped on shutdown: every connection task sees it and starts its
    // graceful close.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let mut stop = stop_rx.clone();
        let header_timeout = limits.header_read_timeout;
        tasks.spawn(async move {
            let _permit = permit;
            let service =
                TowerToHyperService::new(app.map_request(|r: Request<Incoming>| r.map(Body::new)));
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("connection closed: {e}");
                    }
                    return;
                }
                _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
            }
            if let Err(e) = conn.await {
                tracing::debug!("connection closed during shutdown: {e}");
            }
        });
        // Reap finished connections so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "{} connections still open {:.0} s after the shutdown signal; closing them",
            tasks.len(),
            limits.shutdown_grace.as_secs_f64()
        );
        tasks.abort_all();
    }
    Ok(())
}
