//! The API's typed bodies and query parameters: what the handlers read and write, and
//! what `/openapi.json` describes (`utoipa::ToSchema` / `IntoParams`).
//!
//! Query parameters are parsed by the handlers from the raw query (a repeated `tag=` and
//! an unknown parameter need their own messages); the `*Query` structs here document the
//! same names, and `api::tests` checks every handler refuses a parameter they do not list.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, IntoResponses, ToSchema};

/// Every error: `{"error": "what happened and what to do"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The message (names the field, the cap, or the missing thing).
    pub error: String,
}

/// The errors every authenticated route can answer.
#[derive(IntoResponses)]
#[allow(dead_code)] // Read by the OpenAPI derive only.
pub enum AuthErrors {
    /// No bearer token, or an unknown or revoked one.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The token's role is below the route's.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// The bridge itself failed (database, storage).
    #[response(status = 500)]
    Internal(ErrorBody),
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok` while the API answers.
    pub status: String,
}

/// `DELETE /v1/models/{name}/{version}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Deleted {
    /// `name:version` deleted.
    pub deleted: String,
}

/// `POST /v1/devices` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDevice {
    /// Device id (letters, digits, `-`, `_`, `.`; at most 64 bytes).
    pub id: String,
    /// Tags, key → value.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Rust target triple of the device (default `aarch64-unknown-linux-gnu`).
    #[serde(default)]
    pub target: Option<String>,
}

/// `POST /v1/devices` answer: everything the device needs, once (the password and key
/// are not stored in the clear and cannot be fetched again).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProvisionedDevice {
    /// Device id.
    pub id: String,
    /// The agent's configuration file.
    pub agent_toml: String,
    /// MQTT password.
    pub password: String,
    /// Trust directory: file name (`{key id}.pub`) → contents.
    pub trust: BTreeMap<String, String>,
    /// Client certificate, PEM.
    pub client_cert: String,
    /// Client private key, PEM.
    pub client_key: String,
    /// The device CA, PEM.
    pub ca: String,
}

/// `GET /v1/audit/verify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditVerify {
    /// No problems found.
    pub ok: bool,
    /// Rows checked.
    pub rows: u64,
    /// What is wrong, one line each.
    pub problems: Vec<String>,
}

/// `POST /v1/deployments` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// Model name.
    pub model: String,
    /// Version (default: the latest).
    #[serde(default)]
    pub version: Option<u32>,
    /// Device ids.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Devices with all these tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Waves and gates (`crate::fleet::StrategySpec`; default: one canary, then all).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub strategy: Option<crate::fleet::StrategySpec>,
    /// Why (audited).
    #[serde(default)]
    pub reason: String,
    /// Roll out without the canary gates (needs a reason; audited).
    #[serde(default)]
    pub skip_gates: bool,
}

/// `POST /v1/deployments/{id}/{action}` body (optional).
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// Why (audited).
    #[serde(default)]
    pub reason: String,
    /// `rollback` only: send every device to this version.
    #[serde(default)]
    pub to: Option<u32>,
}

/// `GET /v1/stats`: the running bridge's counters since start.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    /// Bundle serving.
    pub serving: ServingStats,
    /// Uplink ingest.
    pub ingest: IngestCounters,
    /// The embedded broker's connection gate (null with an external broker).
    pub gate: Option<crate::broker::GateCounters>,
    /// The API listener.
    pub http: Option<HttpCounters>,
}

/// Bundle serving counters.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServingStats {
    /// Chunk reads that went to disk.
    pub disk_reads: u64,
    /// Chunk frames sent.
    pub frames: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Requests refused.
    pub refused: u64,
}

/// Uplink ingest counters.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IngestCounters {
    /// Batches received.
    pub batches: u64,
    /// Records stored.
    pub stored: u64,
    /// Records already stored (a device's retry).
    pub duplicates: u64,
    /// Batches refused.
    pub rejected: u64,
    /// Bytes received, compressed.
    pub wire_bytes: u64,
}

/// API listener counters (`outpost_net::ConnCounters`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HttpCounters {
    /// Connections accepted.
    pub accepted: u64,
    /// Open now.
    pub open: u64,
    /// Refused at the connection cap.
    pub refused: u64,
    /// Idle connections closed to admit new ones.
    pub evicted: u64,
    /// Closed for sending headers too slowly.
    pub header_timeouts: u64,
    /// Closed idle.
    pub idle_timeouts: u64,
    /// Requests over the time limit.
    pub request_timeouts: u64,
}

/// `GET /v1/models` query (tag and lineage repeat: all must match).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Documents the names `list_models` parses.
pub struct ModelsQuery {
    /// Name substring.
    pub name: Option<String>,
    /// `key=value` model tag (repeatable).
    pub tag: Option<Vec<String>>,
    /// `key=value` lineage field (repeatable).
    pub lineage: Option<Vec<String>>,
}

/// A reason for the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ReasonQuery {
    /// Why (audited).
    pub reason: Option<String>,
}

/// `GET /v1/devices` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct DevicesQuery {
    /// `key=value` device tag (repeatable; all must match).
    pub tag: Option<Vec<String>>,
}

/// `GET /v1/audit` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct LimitQuery {
    /// Most rows, 1..=10000 (default 100).
    pub limit: Option<u32>,
}

/// `GET /v1/events` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct EventsQuery {
    /// Most rows, 1..=10000 (default 100).
    pub limit: Option<u32>,
    /// Only this kind (`deployment_created`, `drift_detected`, …).
    pub kind: Option<String>,
}

/// `GET /v1/captures/export` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ExportQuery {
    /// `NAME` or `NAME:VERSION` (required; an unregistered one is a 404).
    pub model: String,
    /// From: unix seconds, RFC 3339, or an age like `24h` (inclusive).
    pub since: Option<String>,
    /// Until (exclusive), same forms.
    pub until: Option<String>,
    /// Only this device (repeatable).
    pub device: Option<Vec<String>>,
    /// `jsonl` (default), `csv` or `parquet`.
    pub format: Option<String>,
}

/// `GET /v1/drift` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct DriftQuery {
    /// `NAME` or `NAME:VERSION`.
    pub model: Option<String>,
    /// Only this deployment's devices (and its model version).
    pub deployment: Option<String>,
    /// Group by this device tag.
    pub group_by: Option<String>,
}

/// The parameter names of an `IntoParams` type, for the handlers' unknown-parameter
/// check and its test.
pub fn param_names<T: IntoParams>() -> Vec<String> {
    T::into_params(|| Some(utoipa::openapi::path::ParameterIn::Query))
        .into_iter()
        .map(|p| p.name)
        .collect()
}
