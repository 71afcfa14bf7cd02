//! Typed bodies of the records an agent sends in uplink batches (`uplink::Record::body`):
//! one contract for the agent that writes them and the bridge (ingest, rollout gates,
//! drift, export) and simulator that read them.
//!
//! Each body is one JSON object. Decoding is forward-compatible: unknown fields are
//! ignored, an unknown telemetry kind decodes as [`Telemetry::Unknown`] and an unknown
//! event kind as [`AgentEventKind::Other`], so a newer agent never breaks an older
//! bridge. Bodies arrive inside an uplink batch, whose decoder caps every size
//! (`Limits::max_uplink_*`); [`decode`] adds its own cap so a body read from elsewhere
//! (the bridge's tables) is bounded too.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Digest;
use crate::contract::Interpretation;
use crate::manifest::ModelRef;
use crate::tensor::Tensor;

/// Stream of periodic reports ([`Telemetry`]).
pub const TELEMETRY: &str = "telemetry";
/// Stream of captured inputs and answers ([`CaptureRecord`]).
pub const CAPTURES: &str = "captures";
/// Stream of agent events ([`EventRecord`]).
pub const EVENTS: &str = "events";

/// Largest record body [`decode`] reads, bytes (the uplink batch caps a record lower).
pub const MAX_RECORD_BODY: usize = 4 << 20;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Over [`MAX_RECORD_BODY`].
    #[error("record body of {size} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// Size.
        size: usize,
        /// Limit.
        limit: usize,
    },
    /// Not the expected JSON object.
    #[error("malformed record body: {0}")]
    Malformed(String),
}

/// Decodes a record body (capped at [`MAX_RECORD_BODY`]).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, RecordError> {
    if body.len() > MAX_RECORD_BODY {
        return Err(RecordError::TooLarge {
            size: body.len(),
            limit: MAX_RECORD_BODY,
        });
    }
    serde_json::from_slice(body).map_err(|e| RecordError::Malformed(e.to_string()))
}

/// Encodes a record body.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Serialising these types cannot fail: every map key is a string and every float is
    // written as a number or null.
    serde_json::to_vec(record).unwrap_or_default()
}

/// A telemetry report, by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Telemetry {
    /// One model's inference counters over the last interval.
    Inference(InferenceReport),
    /// The host.
    System(SystemReport),
    /// The agent itself (store, link, pipeline, uplink).
    Agent(AgentReport),
    /// A kind this build does not know.
    #[serde(other)]
    Unknown,
}

impl Telemetry {
    /// The `kind` tag as sent.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Inference(_) => "inference",
            Self::System(_) => "system",
            Self::Agent(_) => "agent",
            Self::Unknown => "unknown",
        }
    }

    /// The model it is about, if any.
    pub fn model(&self) -> Option<&ModelRef> {
        match self {
            Self::Inference(r) => Some(&r.model),
            _ => None,
        }
    }
}

/// One model's inference counters since the previous report (deltas).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceReport {
    /// When, unix ms.
    pub ts_ms: u64,
    /// Length of the interval, seconds.
    #[serde(default)]
    pub window_s: f64,
    /// The model.
    pub model: ModelRef,
    /// Its bundle.
    pub bundle: Digest,
    /// Requests answered or failed.
    #[serde(default)]
    pub requests: u64,
    /// Samples in them (a batch counts each row).
    #[serde(default)]
    pub samples: u64,
    /// Model failures (tract errors, non-finite or uninterpretable outputs).
    #[serde(default)]
    pub errors: u64,
    /// Requests the contract refused (never count against the model).
    #[serde(default)]
    pub rejected: u64,
    /// Sum of latencies, µs.
    #[serde(default)]
    pub latency_sum_us: u64,
    /// Upper bounds of the latency histogram's buckets, µs (`None`: +∞).
    #[serde(default)]
    pub latency_buckets_us: Vec<Option<u64>>,
    /// Requests per latency bucket.
    #[serde(default)]
    pub latency_counts: Vec<u64>,
    /// Median latency, µs.
    #[serde(default)]
    pub p50_us: Option<u64>,
    /// 99th percentile latency, µs.
    #[serde(default)]
    pub p99_us: Option<u64>,
    /// Answers per label (the task's label; see `Interpretation::label`).
    #[serde(default)]
    pub labels: BTreeMap<String, u64>,
    /// The latest drift evaluation, when the model is monitored.
    #[serde(default)]
    pub drift: Option<DriftSummary>,
}

/// The host's resources (a field an older agent did not send reads as its default).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SystemReport {
    /// When, unix ms.
    pub ts_ms: u64,
    /// CPU use over all cores, percent.
    pub cpu_pct: f32,
    /// Memory used, bytes.
    pub mem_used: u64,
    /// Memory in all, bytes.
    pub mem_total: u64,
    /// The agent's resident set, bytes.
    pub rss_bytes: Option<u64>,
    /// Free bytes on the data directory's disk.
    pub disk_free: Option<u64>,
    /// Size of that disk, bytes.
    pub disk_total: Option<u64>,
    /// Hottest temperature sensor, °C.
    pub temperature_c: Option<f32>,
}

/// The agent's own counters (a field an older agent did not send reads as its default).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentReport {
    /// When, unix ms.
    pub ts_ms: u64,
    /// Store size on disk, bytes.
    pub store_bytes: u64,
    /// Store budget, bytes.
    pub store_budget: u64,
    /// Unsent records per stream.
    pub backlog: BTreeMap<String, u64>,
    /// Records evicted per stream (since start).
    pub evicted: BTreeMap<String, u64>,
    /// Records refused per stream (since start).
    pub rejected: BTreeMap<String, u64>,
    /// Whether the MQTT link is up.
    pub connected: bool,
    /// Reconnects since start.
    pub reconnects: u64,
    /// Sensor windows processed.
    pub pipeline_windows: Option<u64>,
    /// Sensor read errors.
    pub sensor_errors: Option<u64>,
    /// Pipeline inference errors.
    pub inference_errors: Option<u64>,
    /// Captures stored.
    pub captures: u64,
    /// Captures skipped by the hourly cap.
    pub captures_skipped_by_cap: u64,
    /// Served answers the recorder could not take (full queue).
    #[serde(default)]
    pub served_dropped: u64,
    /// Uplink batches sent.
    #[serde(default)]
    pub uplink_batches: u64,
    /// Uplink bytes on the wire (compressed).
    #[serde(default)]
    pub uplink_wire_bytes: u64,
    /// Uplink bytes before compression.
    #[serde(default)]
    pub uplink_raw_bytes: u64,
}

/// Why a sample was captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureReason {
    /// The answer is flagged (anomaly label, out of range, anomalous score).
    Anomaly,
    /// The model was unsure.
    LowConfidence,
    /// Random sample.
    Sampled,
}

impl CaptureReason {
    /// The name as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anomaly => "anomaly",
            Self::LowConfidence => "low_confidence",
            Self::Sampled => "sampled",
        }
    }
}

/// Where an answer was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The sensor pipeline.
    Pipeline,
    /// The local inference API.
    Api,
}

/// One captured sample: the model's named input and output tensors for it and what the
/// task made of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureRecord {
    /// When, unix ms.
    pub ts_ms: u64,
    /// The model.
    pub model: ModelRef,
    /// Its bundle.
    pub bundle: Digest,
    /// Why it was captured.
    pub reason: CaptureReason,
    /// Who asked.
    pub source: Source,
    /// The sample's input tensors (OIP JSON form).
    pub inputs: Vec<Tensor>,
    /// The sample's output tensors.
    pub outputs: Vec<Tensor>,
    /// The task's reading.
    pub interpretation: Option<Interpretation>,
    /// Named raw feature values, when the model has a feature input.
    pub features: Option<BTreeMap<String, f64>>,
    /// The task's label (empty for raw models).
    #[serde(default)]
    pub label: String,
    /// Confidence or value, when the task gives one.
    pub confidence: Option<f64>,
}

/// What an agent event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentEventKind {
    /// The store was unusable and moved aside.
    StoreReset,
    /// A model update failed.
    UpdateFailed,
    /// A model was rolled back on the device.
    RolledBack,
    /// A model left the desired set and was unloaded.
    ModelRemoved,
    /// A directive was refused.
    DirectiveRejected,
    /// Drift raised.
    DriftDetected,
    /// Drift cleared.
    DriftCleared,
    /// A kind this build does not know.
    #[serde(other)]
    Other,
}

impl AgentEventKind {
    /// The name as sent.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::StoreReset => "store_reset",
            Self::UpdateFailed => "update_failed",
            Self::RolledBack => "rolled_back",
            Self::ModelRemoved => "model_removed",
            Self::DirectiveRejected => "directive_rejected",
            Self::DriftDetected => "drift_detected",
            Self::DriftCleared => "drift_cleared",
            Self::Other => "other",
        }
    }
}

/// One agent event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// When, unix ms.
    pub ts_ms: u64,
    /// What.
    pub kind: AgentEventKind,
    /// For people.
    pub message: String,
    /// Kind-specific details (a drift summary, a rejected directive, …).
    #[serde(default)]
    pub details: Value,
}

impl EventRecord {
    /// The model the details name (`details.model`), if any.
    pub fn model(&self) -> Option<ModelRef> {
        serde_json::from_value(self.details.get("model")?.clone()).ok()
    }
}

/// Details of a `drift_detected` / `drift_cleared` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftEventDetails {
    /// The model.
    pub model: ModelRef,
    /// Its bundle.
    pub bundle: Digest,
    /// The evaluation that raised or cleared it.
    pub summary: DriftSummary,
}

/// One feature's drift in one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDrift {
    /// Class (predicted label).
    pub class: String,
    /// Feature.
    pub feature: String,
    /// Population stability index.
    pub psi: f64,
    /// Two-sample Kolmogorov–Smirnov statistic (in sketch mode, the estimate).
    pub ks: f64,
    /// Largest error of `ks` (0 in exact mode; the sketch bound otherwise).
    pub ks_error: f64,
}

/// A drift evaluation of one model on one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftSummary {
    /// Whether drift is raised.
    pub drifting: bool,
    /// Samples seen since the model became active.
    pub samples: u64,
    /// Largest PSI over features and classes.
    pub psi_max: f64,
    /// Largest KS.
    pub ks_max: f64,
    /// Output mix distance from the training mix (total variation).
    pub output_shift: Option<f64>,
    /// The worst features (up to 5), worst first.
    pub top: Vec<FeatureDrift>,
    /// What crossed a threshold.
    pub reasons: Vec<String>,
    /// When the current state began, unix ms.
    pub since_ms: u64,
    /// Timestamp of the oldest sample in the evaluated windows, unix ms: the drifting
    /// window starts here.
    pub window_start_ms: u64,
}

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;
