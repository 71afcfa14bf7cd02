//! The accept loop and the per-connection task.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::Router;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tower::ServiceExt;

use crate::conns::{Admission, Slot, Table, Tracked};
use crate::{ConnStats, HttpLimits, LimitsError};

/// How often at most the "cap reached" warning is logged while connections are refused.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` within `limits` until `shutdown` turns true (or its
/// sender is dropped), then drains: requests in progress get [`HttpLimits::drain_grace`]
/// to finish. Counts into `stats`. Fails only if `limits` are invalid.
pub async fn serve<L: Listener>(
    mut listener: L,
    router: Router,
    limits: HttpLimits,
    stats: Arc<ConnStats>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), LimitsError> {
    limits.validate()?;
    let table = Table::new(limits.max_connections, limits.evict_after(), stats.clone());
    let mut http = http1::Builder::new();
    // hyper starts the header timer whenever it waits for a request head: at connection
    // start and, between requests, for the next one.
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut last_warning: Option<Instant> = None;
    loop {
        let io = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            (io, _) = listener.accept() => io,
        };
        let slot = match table.admit() {
            Admission::Open(s) => s,
            Admission::Evicted(s) => {
                stats.evicted.fetch_add(1, Relaxed);
                s
            }
            Admission::Refused => {
                // Closing at once keeps the accept loop (and everyone else) moving.
                drop(io);
                let refused = stats.refused.fetch_add(1, Relaxed) + 1;
                if last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(
                        refused,
                        max_connections = limits.max_connections,
                        "HTTP connection cap reached with every connection busy; refusing connections"
                    );
                }
                continue;
            }
        };
        stats.accepted.fetch_add(1, Relaxed);
        tokio::spawn(connection(
            io,
            slot,
            http.clone(),
            router.clone(),
            limits,
            stats.clone(),
            shutdown.clone(),
        ));
    }
    drop(listener);
    // Every connection cuts itself off at the grace; the margin lets them get there.
    let grace = limits.drain_grace + Duration::from_millis(100);
    if tokio::time::timeout(grace, table.drained()).await.is_err() {
        tracing::warn!(
            open = stats.open.load(Relaxed),
            "HTTP connections still open after the drain grace"
        );
    }
    Ok(())
}

/// How a connection ended.
enum End {
    Closed,
    Failed(hyper::Error),
    HeaderTimeout,
    Idle,
    Evicted,
    Cut,
}

async fn connection<I>(
    io: I,
    slot: Slot,
    http: http1::Builder,
    router: Router,
    limits: HttpLimits,
    stats: Arc<ConnStats>,
    mut shutdown: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let state = slot.conn.clone();
    let svc = {
        let state = state.clone();
        let stats = stats.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let (router, state, stats) = (router.clone(), state.clone(), stats.clone());
            async move {
                let _running = state.handler();
                let r = tokio::time::timeout(limits.request_timeout, router.oneshot(req)).await;
                Ok::<_, Infallible>(match r {
                    Ok(Ok(resp)) => resp,
                    Ok(Err(never)) => match never {},
                    Err(_) => {
                        stats.request_timeouts.fetch_add(1, Relaxed);
                        timed_out(limits.request_timeout)
                    }
                })
            }
        })
    };
    let conn = http.serve_connection(TokioIo::new(Tracked::new(io, state.clone())), svc);
    tokio::pin!(conn);
    let mut cut_at: Option<Instant> = None;
    let end = loop {
        // A handler in progress is bounded by the request timeout, not the idle one.
        let idle_at = if state.busy() {
            Instant::now() + limits.idle_timeout
        } else {
            state.last_activity() + limits.idle_timeout
        };
        tokio::select! {
            r = conn.as_mut() => break match r {
                Ok(()) => End::Closed,
                Err(e) if e.is_timeout() => End::HeaderTimeout,
                Err(e) => End::Failed(e),
            },
            _ = state.evict.notified() => break End::Evicted,
            _ = sleep_until(idle_at), if cut_at.is_none() => {
                if !state.busy() && state.last_activity() + limits.idle_timeout <= Instant::now() {
                    break End::Idle;
                }
            }
            _ = shutdown.wait_for(|s| *s), if cut_at.is_none() => {
                // Finishes the request in progress, if any, then closes.
                conn.as_mut().graceful_shutdown();
                cut_at = Some(Instant::now() + limits.drain_grace);
            }
            _ = sleep_until(cut_at.unwrap_or_else(Instant::now)), if cut_at.is_some() => break End::Cut,
        }
    };
    match end {
        End::Closed | End::Evicted | End::Cut => {}
        End::HeaderTimeout => {
            stats.header_timeouts.fetch_add(1, Relaxed);
        }
        End::Idle => {
            stats.idle_timeouts.fetch_add(1, Relaxed);
        }
        // Client resets, malformed requests: the client's problem, not an operator's.
        End::Failed(e) => tracing::debug!(error = %e, "HTTP connection failed"),
    }
    drop(slot);
}

/// The answer to a request whose handler took too long.
fn timed_out(after: Duration) -> Response {
    let body = format!(
        "{{\"error\":\"request took longer than {} ms\"}}",
        after.as_millis()
    );
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}
