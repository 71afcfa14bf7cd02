//! The local inference API for apps on the gateway: HTTP on 127.0.0.1 and a Unix socket,
//! the same routes on both.
//!
//! The main protocol is the **Open Inference Protocol v2** (REST), the protocol of Triton,
//! KServe, Seldon, MLServer and ONNX Runtime server, so existing clients (e.g.
//! `tritonclient[http]`) work unchanged — see [`oip`]. The `/v1` routes are a
//! convenience for single-input models ([`v1`]).
//!
//! | route | |
//! |---|---|
//! | `GET /v2/health/live`, `/v2/health/ready` | server liveness / readiness (ready: a model is active) |
//! | `GET /v2` | server metadata (`extensions: ["binary_tensor_data"]`) |
//! | `GET /v2/models` | the active models (name, version, state) |
//! | `GET /v2/models/{name}[/versions/{v}]` | model metadata: inputs and outputs with OIP datatypes and shapes |
//! | `GET /v2/models/{name}[/versions/{v}]/ready` | model readiness |
//! | `POST /v2/models/{name}[/versions/{v}]/infer` | inference: JSON tensors, or the binary tensor data extension |
//! | `POST /v1/predict[?model=NAME]` | named features or arrays → the task's answer |
//! | `GET /v1/model[?model=NAME]`, `/v1/health`, `/v1/metrics` | model info, health, counters |
//! | `GET /metrics` | Prometheus exposition (merged in by the runtime: [`crate::metrics`]) |
//! | `GET /v1/status` | link state, models, store backlog for `outpost-agent status` (merged in by the runtime: [`crate::status`]) |
//!
//! Errors are JSON `{"error": "..."}` (the OIP error body): 400 malformed request or a
//! request the model's contract refuses, 404 unknown model or version, 413 body too large,
//! 503 no model (or a request over `api.request_timeout_ms`), 500 the model itself failed.
//! Only 500s count against a model's health. Inference runs on the blocking pool, at most
//! [`MAX_CONCURRENT`] at a time per CPU.
//!
//! Both listeners are served by [`outpost_net::serve`] within `[api]`'s limits: a
//! connection cap per listener, header-read, idle and request timeouts (see
//! [`config::ApiConfig`]).

pub mod config;
pub mod oip;
pub mod v1;

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use outpost_net::{ConnStats, HttpLimits};
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc, watch};

pub use config::{ApiConfig, ApiSection};

use crate::models::{ActiveModel, ModelHandle};
use crate::recorder::{RecorderStats, Served};

/// Inferences running at once per CPU (more wait for a slot).
pub const MAX_CONCURRENT: usize = 2;

/// Largest measured model cost run inline on an async worker, µs (tokio's guidance: a task
/// should not run more than 10–100 µs between awaits).
pub const INLINE_BUDGET_US: f64 = 50.0;

/// Where served answers go for capture and drift.
#[derive(Clone)]
pub struct ServedSink {
    /// The recorder's queue.
    pub tx: mpsc::Sender<Arc<Served>>,
    /// Counts answers the recorder could not take.
    pub stats: Arc<RecorderStats>,
}

impl ServedSink {
    fn send(&self, s: Served) {
        if self.tx.try_send(Arc::new(s)).is_err() {
            // The recorder is behind: the answer went out, only its capture is skipped,
            // and counted (telemetry `served_dropped`).
            self.stats
                .served_dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The active models.
    pub models: ModelHandle,
    /// Largest request body.
    pub max_body: usize,
    /// Served answers for the recorder (None: not recorded).
    pub served: Option<ServedSink>,
    slots: Arc<Semaphore>,
}

impl ApiState {
    /// State over `models`.
    pub fn new(models: ModelHandle, max_body: usize, served: Option<ServedSink>) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            models,
            max_body,
            served,
            slots: Arc::new(Semaphore::new(cpus * MAX_CONCURRENT)),
        }
    }

    /// Runs a model call `f` on `samples` samples of `model`: inline on the async worker
    /// when the model's measured cost for them is under [`INLINE_BUDGET_US`] (handing it to
    /// another thread and back costs more than that: two cross-thread wake-ups, ~50 µs
    /// each on a virtualised gateway), else on the blocking pool once a slot is free. A
    /// model not yet measured runs on the pool.
    async fn run_model<T: Send + 'static>(
        &self,
        model: &ActiveModel,
        samples: u64,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let cheap = model
            .stats
            .mean_sample_us()
            .is_some_and(|us| us * samples.max(1) as f64 <= INLINE_BUDGET_US);
        if cheap {
            return Ok(f());
        }
        self.blocking(f).await
    }

    /// Runs `f` on the blocking pool once a slot is free.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let _permit = self
            .slots
            .acquire()
            .await
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
        tokio::task::spawn_blocking(f).await.map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("inference task failed: {e}"),
            )
        })
    }

    /// The model `name`, or 404 naming the active ones.
    fn model(&self, name: &str) -> Result<Arc<ActiveModel>, ApiError> {
        self.models.get(name).ok_or_else(|| {
            let names: Vec<String> = self
                .models
                .list()
                .iter()
                .map(|m| m.name().to_owned())
                .collect();
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "model {name:?} is not loaded (loaded: {})",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                ),
            )
        })
    }
}

/// An error response with the OIP error body.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl ApiError {
    /// An error with a status.
    pub fn new(status: StatusCode, m: impl Into<String>) -> Self {
        Self(status, m.into())
    }

    /// 400.
    pub fn bad(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(ErrorBody { error: &self.1 })).into_response()
    }
}

/// The router (exposed for tests).
pub fn router(state: ApiState) -> Router {
    Router::new()
        .merge(oip::routes())
        .merge(v1::routes())
        .with_state(state)
}

/// Serves the API on a TCP listener within `limits` until `shutdown`, counting
/// connections into `stats`.
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: HttpLimits,
    stats: Arc<ConnStats>,
    shutdown: watch::Receiver<bool>,
) {
    if let Err(e) = outpost_net::serve(listener, router, limits, stats, shutdown).await {
        tracing::error!(error = %e, "HTTP API not started");
    }
}

/// Binds the Unix socket, replacing a stale one, readable by owner and group only.
pub fn bind_unix(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Local apps in the same group may call the API; others may not.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    }
    Ok(listener)
}

/// Serves the API on a Unix socket within `limits` until `shutdown`, counting
/// connections into `stats`.
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    router: Router,
    limits: HttpLimits,
    stats: Arc<ConnStats>,
    shutdown: watch::Receiver<bool>,
) {
    if let Err(e) = outpost_net::serve(listener, router, limits, stats, shutdown).await {
        tracing::error!(error = %e, "Unix-socket API not started");
    }
}
