//! Wire messages other than directives and uplink batches.
//!
//! Control messages are JSON (small, debuggable with any MQTT client); chunk responses
//! are a binary frame so bundle bytes are not inflated by base64. Every decoder checks
//! the size cap before parsing.

use serde::{Deserialize, Serialize};

use crate::Digest;
use crate::limits::{Limits, MAX_CHUNK_SIZE};
use crate::manifest::ModelRef;

/// Most parts one chunk request may ask for.
pub const MAX_PARTS_PER_REQUEST: usize = 64;

/// Why a wire message was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WireError {
    /// Over the size cap.
    #[error("{what} of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Message kind.
        what: &'static str,
        /// Size.
        size: usize,
        /// Cap.
        limit: usize,
    },
    /// Not the expected JSON.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Message kind.
        what: &'static str,
        /// Parser message.
        reason: String,
    },
    /// Bad binary frame.
    #[error("malformed chunk frame: {0}")]
    BadFrame(String),
}

fn decode_json<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    what: &'static str,
    limit: usize,
) -> Result<T, WireError> {
    if bytes.len() > limit {
        return Err(WireError::TooLarge {
            what,
            size: bytes.len(),
            limit,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| WireError::Malformed {
        what,
        reason: e.to_string(),
    })
}

/// Retained presence message; the Last-Will publishes `{"online":false}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// Whether the device is connected.
    pub online: bool,
    /// When the device last (re)connected, unix seconds (absent in the Last-Will).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
}

impl Presence {
    /// Encodes as JSON.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("presence serialises")
    }
    /// Decodes with the control-message cap.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, WireError> {
        decode_json(bytes, "presence", limits.max_control_message)
    }
}

/// A model installed on the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledModel {
    /// Bundle digest.
    pub bundle: Digest,
    /// Model name and version.
    pub model: ModelRef,
}

/// Where the device's update process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdatePhase {
    /// Nothing to do.
    Idle,
    /// Fetching chunks.
    Downloading,
    /// Verifying, installing, self-testing.
    Installing,
    /// Switched; watching the health window.
    Probation,
    /// The directive's model is active and healthy.
    Succeeded,
    /// The directive failed (see `last_error`); the previous model is active.
    Failed,
    /// The new model failed its health window and was rolled back.
    RolledBack,
    /// The model is being unloaded (removed from the desired set).
    Removing,
}

/// Overall health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Serving normally.
    Ok,
    /// Serving, with problems (see `last_error`).
    Degraded,
    /// No model can serve.
    NoModel,
}

/// One model slot on the device: what it runs, what it is being told to run, and how far
/// it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelState {
    /// Model name (the slot).
    pub name: String,
    /// Where its update is.
    pub phase: UpdatePhase,
    /// What it serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<InstalledModel>,
    /// What its other slot holds (the rollback target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<InstalledModel>,
    /// What the accepted directive asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<InstalledModel>,
    /// Deployment of the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// Sequence of the directive the phase is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// Chunks verified and persisted.
    #[serde(default)]
    pub chunks_done: u32,
    /// Chunks in the bundle.
    #[serde(default)]
    pub chunks_total: u32,
    /// Health of this model.
    pub health: Health,
    /// Most recent error of this model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A directive the device refused, and why (reported so the bridge can act: re-issue an
/// expired one, show a clock problem).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectiveRejection {
    /// Its sequence, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// Short reason (`expired`, `not_yet_valid`, `budget`, …).
    pub kind: String,
    /// The full reason.
    pub reason: String,
    /// The device clock when it refused, unix seconds.
    pub now: u64,
    /// The directive's issue time, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<u64>,
    /// The directive's expiry, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// Resource budgets of the models (configured on the device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BudgetState {
    /// Memory budget for models, bytes (None: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_budget: Option<u64>,
    /// Memory the running set needs (per registration), bytes.
    pub memory_used: u64,
    /// Disk budget for model slots, bytes (None: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_budget: Option<u64>,
    /// Disk the slots use, bytes.
    pub disk_used: u64,
}

/// Retained reported state of a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportedState {
    /// Device id.
    pub device_id: String,
    /// Agent version.
    pub agent_version: String,
    /// Time of this report, unix seconds.
    pub at: u64,
    /// Last accepted directive sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directive_sequence: Option<u64>,
    /// The last directive refused (cleared when one is accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directive_rejected: Option<DirectiveRejection>,
    /// Every model slot, by name.
    #[serde(default)]
    pub models: Vec<ModelState>,
    /// Overall health (ok when every model is).
    pub health: Health,
    /// Most recent device-level error, human-readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Budgets.
    #[serde(default)]
    pub budget: BudgetState,
    /// Device tags (hardware target etc.).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
    /// Ids of the bridge signing keys the device trusts now (its trust directory, after
    /// any rotation a directive carried). The bridge's `keys activate` waits until every
    /// device lists the next key. Empty from agents that predate key rotation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_keys: Vec<crate::KeyId>,
}

impl ReportedState {
    /// The slot of model `name`.
    pub fn model(&self, name: &str) -> Option<&ModelState> {
        self.models.iter().find(|m| m.name == name)
    }

    /// Encodes as JSON.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("state serialises")
    }
    /// Decodes with the control-message cap.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, WireError> {
        decode_json(bytes, "reported state", limits.max_control_message)
    }
}

/// An agent's request for parts of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRequest {
    /// Bundle digest.
    pub bundle: Digest,
    /// Head pieces wanted (each [`crate::limits::HEAD_PIECE_SIZE`] bytes but the last).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub head: Vec<u32>,
    /// Payload chunks wanted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<u32>,
}

impl ChunkRequest {
    /// Encodes as JSON.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("request serialises")
    }
    /// Decodes with the control-message cap and the parts cap.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, WireError> {
        let r: Self = decode_json(bytes, "chunk request", limits.max_control_message)?;
        let n = r.head.len() + r.chunks.len();
        if n == 0 || n > MAX_PARTS_PER_REQUEST {
            return Err(WireError::Malformed {
                what: "chunk request",
                reason: format!("asks for {n} parts (allowed 1..={MAX_PARTS_PER_REQUEST})"),
            });
        }
        Ok(r)
    }
}

/// What a chunk frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartKind {
    /// A piece of the bundle head.
    Head,
    /// A payload chunk.
    Chunk,
    /// The bridge cannot serve the bundle; data is a UTF-8 reason.
    Error,
}

/// A bridge response carrying one part of a bundle.
///
/// Layout: `"OPCK"`, version u8 (1), kind u8 (0 head, 1 chunk, 2 error), bundle digest
/// (32), index u32 LE, data length u32 LE, data. Data is at most 128 KiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkFrame {
    /// Bundle digest.
    pub bundle: Digest,
    /// Part kind.
    pub kind: PartKind,
    /// Part index.
    pub index: u32,
    /// Bytes (untrusted until checked against the verified manifest).
    pub data: Vec<u8>,
}

const FRAME_MAGIC: &[u8; 4] = b"OPCK";
/// Bytes of a chunk frame before its data (magic, version, kind, digest, index, length).
pub const CHUNK_FRAME_HEADER: usize = 4 + 1 + 1 + 32 + 4 + 4;
const FRAME_HEADER: usize = CHUNK_FRAME_HEADER;

impl ChunkFrame {
    /// Encodes the frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(FRAME_HEADER + self.data.len());
        v.extend_from_slice(FRAME_MAGIC);
        v.push(1);
        v.push(match self.kind {
            PartKind::Head => 0,
            PartKind::Chunk => 1,
            PartKind::Error => 2,
        });
        v.extend_from_slice(&self.bundle.0);
        v.extend_from_slice(&self.index.to_le_bytes());
        v.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        v.extend_from_slice(&self.data);
        v
    }

    /// Decodes a frame; the data length must match exactly and be ≤ 128 KiB.
    pub fn decode(b: &[u8]) -> Result<Self, WireError> {
        let bad = |m: &str| WireError::BadFrame(m.to_owned());
        if b.len() < FRAME_HEADER {
            return Err(bad("shorter than the frame header"));
        }
        if &b[..4] != FRAME_MAGIC {
            return Err(bad("bad magic"));
        }
        if b[4] != 1 {
            return Err(WireError::BadFrame(format!("unsupported version {}", b[4])));
        }
        let kind = match b[5] {
            0 => PartKind::Head,
            1 => PartKind::Chunk,
            2 => PartKind::Error,
            k => return Err(WireError::BadFrame(format!("unknown part kind {k}"))),
        };
        let bundle = Digest::from_slice(&b[6..38]).expect("32 bytes");
        let index = u32::from_le_bytes(b[38..42].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(b[42..46].try_into().expect("4 bytes"));
        if len > MAX_CHUNK_SIZE {
            return Err(WireError::BadFrame(format!(
                "data length {len} exceeds {MAX_CHUNK_SIZE}"
            )));
        }
        if b.len() - FRAME_HEADER != len as usize {
            return Err(WireError::BadFrame(format!(
                "declares {len} data bytes, carries {}",
                b.len() - FRAME_HEADER
            )));
        }
        Ok(Self {
            bundle,
            kind,
            index,
            data: b[FRAME_HEADER..].to_vec(),
        })
    }
}

/// The bridge's end-to-end acknowledgement of an uplink batch, sent only after the
/// batch's records are durably stored. The agent deletes exactly the acked range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAck {
    /// Stream.
    pub stream: String,
    /// Batch id being acknowledged.
    pub batch_id: u64,
    /// First sequence in the batch.
    pub first_seq: u64,
    /// Last sequence in the batch.
    pub last_seq: u64,
    /// Records newly stored.
    pub stored: u32,
    /// Records already held (re-sent batch).
    pub duplicates: u32,
}

impl BatchAck {
    /// Encodes as JSON.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("ack serialises")
    }
    /// Decodes with the control-message cap.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, WireError> {
        decode_json(bytes, "batch ack", limits.max_control_message)
    }
}

/// Kinds of events the bridge publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A model version was registered.
    ModelRegistered,
    /// A bundle was built and signed.
    BundleBuilt,
    /// A deployment was created.
    DeploymentCreated,
    /// A deployment changed state (wave advanced, paused, resumed, aborted, finished).
    DeploymentChanged,
    /// A deployment was rolled back.
    RolledBack,
    /// Drift was detected.
    DriftDetected,
    /// A device went offline.
    DeviceOffline,
    /// A device came online.
    DeviceOnline,
    /// A device failed to apply an update.
    UpdateFailed,
    /// A message on a device's topics failed device authentication.
    DeviceAuthFailed,
    /// The bridge signed a checkpoint of its audit trail (details: the checkpoint).
    AuditCheckpoint,
    /// A device refused a directive (details: the refusal: kind, reason, both clocks).
    DirectiveRejected,
    /// Any kind this build does not know (forward compatibility).
    #[serde(other)]
    Unknown,
}

impl EventKind {
    /// The topic segment for this kind.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ModelRegistered => "model_registered",
            Self::BundleBuilt => "bundle_built",
            Self::DeploymentCreated => "deployment_created",
            Self::DeploymentChanged => "deployment_changed",
            Self::RolledBack => "rolled_back",
            Self::DriftDetected => "drift_detected",
            Self::DeviceOffline => "device_offline",
            Self::DeviceOnline => "device_online",
            Self::UpdateFailed => "update_failed",
            Self::DeviceAuthFailed => "device_auth_failed",
            Self::AuditCheckpoint => "audit_checkpoint",
            Self::DirectiveRejected => "directive_rejected",
            Self::Unknown => "unknown",
        }
    }
}

/// An event on `outpost/v1/events/{kind}` (and to webhooks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// Unique id.
    pub id: String,
    /// Kind.
    pub kind: EventKind,
    /// When, unix seconds.
    pub at: u64,
    /// Human-readable summary.
    pub message: String,
    /// Device concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Model concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelRef>,
    /// Deployment concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// Kind-specific details.
    #[serde(default)]
    pub details: serde_json::Value,
}

impl Event {
    /// Encodes as JSON.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("event serialises")
    }
    /// Decodes with the control-message cap.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, WireError> {
        decode_json(bytes, "event", limits.max_control_message)
    }
}
