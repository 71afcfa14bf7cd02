//! The HTTP API (axum). Bearer-token auth with roles: no or unknown token → 401, a role
//! too low → 403. Bodies are JSON of at most [`MAX_BODY`] bytes (413 over it). Errors are
//! JSON `{"error": ..}`, from the operations' typed errors: malformed input or a string
//! over its cap ([`crate::input`], the message names the field and the cap) → 400, a
//! request the operation refuses → 422, an unknown model, version, device or deployment
//! → 404, a conflict with the current state → 409; 500 only when the bridge itself
//! failed. The OpenAPI document (`GET /openapi.json`) is generated from [`ROUTES`], the
//! same table the tests check the router against.
//!
//! [`serve`] runs it through [`outpost_net::serve`]: a connection cap (`serve
//! --http-max-connections`), header-read, idle and request timeouts.

mod handlers;
mod openapi;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use outpost_net::{ConnStats, HttpLimits};
use serde_json::json;
use tokio::sync::watch;

use crate::audit::Audit;
use crate::auth::{self, Role};
use crate::bundles::BundleStore;
use crate::db::Db;
use crate::events::EventBus;
use crate::input::InputError;

pub use openapi::document;

/// What handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Database.
    pub db: Db,
    /// Audit log.
    pub audit: Audit,
    /// Events.
    pub events: EventBus,
    /// Bundles.
    pub bundles: Arc<dyn BundleStore>,
    /// The key ring: a provisioned device trusts its active key and the next one.
    pub keys: crate::keys::Keyring,
    /// Broker URL written into provisioned devices' configs.
    pub device_broker_url: String,
    /// Where provisioning files go.
    pub data_dir: PathBuf,
    /// The rollout engine.
    pub fleet: crate::fleet::FleetHandle,
    /// Serving and ingest counters (None outside `serve`).
    pub counters: Option<(
        std::sync::Arc<crate::serving::BundleServer>,
        std::sync::Arc<crate::ingest::IngestStats>,
    )>,
    /// The embedded broker's gate counters (None outside `serve` or with an external
    /// broker).
    pub gate: Option<std::sync::Arc<crate::broker::GateStats>>,
    /// The API listener's connection counters (None outside `serve`).
    pub http: Option<Arc<ConnStats>>,
    /// `GET /metrics` (None outside `serve`).
    pub metrics: Option<Arc<crate::metrics::BridgeMetrics>>,
    /// The dashboard's live-update feed (None outside `serve`).
    pub live: Option<crate::ui::LiveHub>,
}

/// Largest request body (no route uploads files).
pub const MAX_BODY: usize = 1 << 20;

/// Longest bearer token looked up (issued ones are 68 bytes).
const MAX_TOKEN: usize = 256;

/// An API error response.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

impl ApiError {
    /// 400.
    pub fn bad(m: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, m.into())
    }
    /// 404.
    pub fn not_found(m: impl Into<String>) -> Self {
        Self(StatusCode::NOT_FOUND, m.into())
    }
    /// 409.
    pub fn conflict(m: impl Into<String>) -> Self {
        Self(StatusCode::CONFLICT, m.into())
    }
    /// 422.
    pub fn invalid(m: impl Into<String>) -> Self {
        Self(StatusCode::UNPROCESSABLE_ENTITY, m.into())
    }
    /// 500.
    pub fn internal(m: impl std::fmt::Display) -> Self {
        Self(StatusCode::INTERNAL_SERVER_ERROR, m.to_string())
    }
}

impl From<InputError> for ApiError {
    fn from(e: InputError) -> Self {
        match e {
            InputError::BadName { .. } => Self::invalid(e.to_string()),
            e => Self::bad(e.to_string()),
        }
    }
}

/// Checks the bearer token; returns the actor name for the audit log.
pub fn authorize(st: &ApiState, headers: &HeaderMap, need: Role) -> Result<String, ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "missing bearer token".into()))?;
    if token.len() > MAX_TOKEN {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "unknown or revoked token".into(),
        ));
    }
    let found = auth::lookup(&st.db.lock(), token.trim()).map_err(ApiError::internal)?;
    let (name, role) = found
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "unknown or revoked token".into()))?;
    if role < need {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "token {name:?} has role {}; this needs {}",
                role.as_str(),
                need.as_str()
            ),
        ));
    }
    Ok(format!("token:{name}"))
}

/// One documented route.
#[derive(Debug, Clone, Copy)]
pub struct RouteDoc {
    /// HTTP method.
    pub method: &'static str,
    /// Path (axum syntax).
    pub path: &'static str,
    /// Required role (None: public).
    pub role: Option<Role>,
    /// Summary.
    pub summary: &'static str,
}

/// Every route.
pub const ROUTES: &[RouteDoc] = &[
    RouteDoc {
        method: "get",
        path: "/openapi.json",
        role: None,
        summary: "This document",
    },
    RouteDoc {
        method: "get",
        path: "/v1/health",
        role: None,
        summary: "Liveness",
    },
    RouteDoc {
        method: "get",
        path: "/metrics",
        role: Some(Role::Viewer),
        summary: "Prometheus metrics (text format 0.0.4; OpenMetrics by Accept)",
    },
    RouteDoc {
        method: "get",
        path: "/v1/models",
        role: Some(Role::Viewer),
        summary: "List/search models (?name=, ?tag=k=v, ?lineage=k=v)",
    },
    RouteDoc {
        method: "get",
        path: "/v1/models/{name}/{version}",
        role: Some(Role::Viewer),
        summary: "One model version",
    },
    RouteDoc {
        method: "delete",
        path: "/v1/models/{name}/{version}",
        role: Some(Role::Operator),
        summary: "Delete a version (refused while deployed; ?reason=)",
    },
    RouteDoc {
        method: "get",
        path: "/v1/devices",
        role: Some(Role::Viewer),
        summary: "List devices (?tag=k=v)",
    },
    RouteDoc {
        method: "post",
        path: "/v1/devices",
        role: Some(Role::Admin),
        summary: "Provision a device: {id, tags, target}",
    },
    RouteDoc {
        method: "get",
        path: "/v1/devices/{id}",
        role: Some(Role::Viewer),
        summary: "One device with its reported state",
    },
    RouteDoc {
        method: "get",
        path: "/v1/audit",
        role: Some(Role::Viewer),
        summary: "Audit trail (?limit=)",
    },
    RouteDoc {
        method: "get",
        path: "/v1/audit/verify",
        role: Some(Role::Viewer),
        summary: "Verify the hash chain",
    },
    RouteDoc {
        method: "get",
        path: "/v1/events",
        role: Some(Role::Viewer),
        summary: "Recent events (?limit=, ?kind=)",
    },
    RouteDoc {
        method: "get",
        path: "/v1/captures/export",
        role: Some(Role::Operator),
        summary: "Captured inputs/outputs as JSONL (?model=N[:V], ?since=, ?until=)",
    },
    RouteDoc {
        method: "get",
        path: "/v1/deployments",
        role: Some(Role::Viewer),
        summary: "List/search deployments (?model=, ?version=, ?state=, ?device=)",
    },
    RouteDoc {
        method: "post",
        path: "/v1/deployments",
        role: Some(Role::Operator),
        summary: "Create a deployment: {model, version?, devices?, tags?, strategy?, reason}",
    },
    RouteDoc {
        method: "get",
        path: "/v1/deployments/{id}",
        role: Some(Role::Viewer),
        summary: "One deployment with per-device status",
    },
    RouteDoc {
        method: "post",
        path: "/v1/deployments/{id}/{action}",
        role: Some(Role::Operator),
        summary: "pause | resume | abort | rollback, body {reason}",
    },
];

/// The router.
pub fn router(st: ApiState) -> Router {
    use handlers as h;
    Router::new()
        .route("/openapi.json", get(|| async { axum::Json(document()) }))
        .route(
            "/v1/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/v1/stats", get(h::stats))
        .route("/metrics", get(crate::metrics::scrape))
        .route("/v1/models", get(h::list_models))
        .route(
            "/v1/models/{name}/{version}",
            get(h::show_model).delete(h::delete_model),
        )
        .route("/v1/devices", get(h::list_devices).post(h::add_device))
        .route("/v1/devices/{id}", get(h::show_device))
        .route(
            "/v1/devices/{id}/models/{model}",
            axum::routing::delete(h::remove_device_model),
        )
        .route("/v1/audit", get(h::audit))
        .route("/v1/audit/verify", get(h::audit_verify))
        .route("/v1/events", get(h::events))
        .route("/v1/captures/export", get(h::export_captures))
        .route(
            "/v1/deployments",
            get(h::list_deployments).post(h::create_deployment),
        )
        .route("/v1/deployments/{id}", get(h::show_deployment))
        .route(
            "/v1/deployments/{id}/{action}",
            axum::routing::post(h::deployment_action),
        )
        .route("/v1/drift", get(h::drift))
        .merge(crate::ui::routes())
        .fallback(|| async { ApiError::not_found("no such route; see /openapi.json") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(st)
}

/// Serves until shutdown within `limits`, counting connections into `stats`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    st: ApiState,
    limits: HttpLimits,
    stats: Arc<ConnStats>,
    shutdown: watch::Receiver<bool>,
) {
    if let Err(e) = outpost_net::serve(listener, router(st), limits, stats, shutdown).await {
        tracing::error!(error = %e, "HTTP API not started");
    }
}
