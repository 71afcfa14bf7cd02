//! Agent configuration: defaults, then the TOML file, then `OUTPOST_*` environment
//! variables; validated once at start-up into typed values. A bad config is one clear
//! error naming the field, and `outpost-agent run` exits 2.
//!
//! ```toml
//! device_id = "gw-0001"
//! data_dir = "/var/lib/outpost"
//! trust_dir = "/etc/outpost/trust"
//! key_file = "/etc/outpost/device.key"   # seals every message (issued by `device add`)
//! tags = { target = "aarch64-unknown-linux-gnu" }
//!
//! [broker]
//! url = "mqtt://127.0.0.1:1883"        # or mqtts://host:8883
//! keep_alive_secs = 30
//! # username = "gw-0001"; password_file = "/etc/outpost/password"
//! # ca_file = "ca.pem"; client_cert = "gw.pem"; client_key = "gw.key"
//! reconnect_min_ms = 250
//! reconnect_max_ms = 30000
//! max_packet_bytes = 131072  # AWS IoT Core's limit; raise for brokers that allow more
//!
//! [update]
//! window = 8                 # chunk requests in flight
//! request_timeout_ms = 5000
//! health_inferences = 20     # probation passes after this many good inferences...
//! health_secs = 60           # ...or this long without an error, whichever first
//! max_probation_boots = 2    # restarts during probation before rolling back
//!
//! [api]
//! http = "127.0.0.1:8089"    # "" disables
//! unix_socket = "/run/outpost/agent.sock"
//! max_body_bytes = 8388608  # requests (JSON or OIP binary tensors) up to this size
//! max_connections = 256      # per listener; over it the longest-waiting idle one gives way
//! header_read_timeout_ms = 10000   # a request head must arrive within this
//! idle_timeout_ms = 30000    # no request running, no byte moving (keep-alive: the shorter
//!                            # of this and the header timeout)
//! request_timeout_ms = 60000 # longer requests are answered 503
//!
//! [store]
//! max_bytes = 67108864       # one budget across all streams, for the store's files on
//!                            # disk (database, WAL, …: at most max_bytes + 352 KiB)
//! when_full = "evict_lowest_oldest"   # or "reject_new"
//! durability = "normal"      # or "full"
//! priority = { captures = 0, telemetry = 1, events = 2 }   # higher is kept longer
//!
//! [sync]
//! batch_records = 500
//! batch_bytes = 98304       # raw bytes; must fit broker.max_packet_bytes - 4 KiB
//! linger_ms = 500
//! window = 4                 # batches in flight per stream
//! ack_timeout_ms = 10000
//! zstd_level = 3
//!
//! [telemetry]
//! interval_secs = 60
//!
//! [capture]                  # default policy; [capture.models.NAME] overrides per model
//! sample_rate = 0.01
//! on_anomaly = true
//! # low_confidence = 0.6     # default: the spec's min_confidence
//! max_per_hour = 600
//!
//! [drift]                    # thresholds default to the bundle's spec, then built-ins
//! enabled = true
//! window = 256               # samples per class window
//! check_every = 32
//! mode = "exact"             # or "sketch" (bounded memory, KS within ~1/256)
//! # psi = 0.5; ks = 0.35; output_shift = 0.3
//!
//! [sensor]
//! kind = "simulated"         # none | adxl345 | simulated
//! i2c_bus = "/dev/i2c-1"
//! address = 0x53
//! interval_ms = 1000         # one window every interval
//! # model = "vibration"      # the model it feeds (default: the only active one)
//! seed = 1                   # simulated only
//! mode = "normal"            # simulated only: normal | imbalance | bearing_fault
//! drift = 0.0                # simulated only
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use outpost_protocol::topics::valid_device_id;
use serde::Deserialize;

use crate::capture::CapturePolicy;
use crate::sensors::vibration::MachineMode;
use crate::store::{Durability, StoreConfig, WhenFull};
use crate::sync::SyncConfig;

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// TOML syntax or schema error.
    #[error("config {path}: {message}")]
    Parse {
        /// Path.
        path: PathBuf,
        /// Parser message with line and column.
        message: String,
    },
    /// An `OUTPOST_*` variable that looks like a setting but is not one (a misspelling,
    /// or a setting only the file can give).
    #[error("environment: {name} is not a setting{hint}; the environment can set {known}")]
    UnknownVariable {
        /// The variable.
        name: String,
        /// ` (did you mean X?)` when one is close.
        hint: String,
        /// The variables the agent reads.
        known: String,
    },
    /// A value is out of range or inconsistent.
    #[error("config: {field}: {message}")]
    Invalid {
        /// Field path.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        message: message.into(),
    }
}

/// `[api]`'s connection limits over [`outpost_net::HttpLimits`]' defaults.
fn api_limits(a: &RawApi) -> Result<outpost_net::HttpLimits, ConfigError> {
    use outpost_net::LimitsError;
    let d = outpost_net::HttpLimits::default();
    let ms = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_millis);
    let limits = outpost_net::HttpLimits {
        max_connections: a.max_connections.unwrap_or(d.max_connections),
        header_read_timeout: ms(a.header_read_timeout_ms, d.header_read_timeout),
        idle_timeout: ms(a.idle_timeout_ms, d.idle_timeout),
        request_timeout: ms(a.request_timeout_ms, d.request_timeout),
        ..d
    };
    limits.validate().map_err(|e| {
        let field = match &e {
            LimitsError::MaxConnections(_) => "api.max_connections",
            LimitsError::Timeout { field, .. } => match *field {
                "header_read_timeout" => "api.header_read_timeout_ms",
                "idle_timeout" => "api.idle_timeout_ms",
                _ => "api.request_timeout_ms",
            },
        };
        invalid(field, e.to_string())
    })?;
    Ok(limits)
}

/// How to reach the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerConfig {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS (`mqtts://`).
    pub tls: bool,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// Username.
    pub username: Option<String>,
    /// Password (read from `password_file`; never logged).
    pub password: Option<String>,
    /// CA certificate (PEM) for TLS; system roots are not used.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    pub client_key: Option<PathBuf>,
    /// First reconnect delay.
    pub reconnect_min: Duration,
    /// Reconnect delay cap.
    pub reconnect_max: Duration,
    /// Largest MQTT packet sent or accepted (default 131072: AWS IoT Core's and many
    /// hosted brokers' limit; the bridge registers no bundle whose chunks would not fit).
    pub max_packet_bytes: usize,
}

/// Update behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateConfig {
    /// Chunk requests in flight.
    pub window: u32,
    /// A requested part not answered within this is requested again.
    pub request_timeout: Duration,
    /// Probation passes after this many successful inferences...
    pub health_inferences: u32,
    /// ...or after this long without an error.
    pub health_window: Duration,
    /// Agent restarts during probation tolerated before rolling back.
    pub max_probation_boots: u32,
    /// How far ahead of the device clock a directive's issue time may be, seconds
    /// (`u64::MAX`: unchecked, for devices without a real-time clock).
    pub max_clock_skew_secs: u64,
}

/// Resource budgets for the models a device runs (`[models]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelsConfig {
    /// Memory the running set may need (sum of each model's peak measured at
    /// registration), bytes; `None`: unlimited.
    pub max_memory_bytes: Option<u64>,
    /// Disk the model slots may use (two slots per model), bytes; `None`: unlimited.
    pub max_disk_bytes: Option<u64>,
}

/// Local inference API.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    /// TCP listener (loopback by default).
    pub http: Option<SocketAddr>,
    /// Unix socket path.
    pub unix_socket: Option<PathBuf>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Connection cap and timeouts of each listener.
    pub limits: outpost_net::HttpLimits,
}

/// Which sensor feeds the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum SensorKind {
    /// No sensor; the agent serves the API only.
    None,
    /// An ADXL345 on a Linux I2C bus.
    Adxl345 {
        /// `/dev/i2c-N`.
        bus: PathBuf,
        /// 7-bit address (0x53 or 0x1D).
        address: u8,
    },
    /// The register-level simulated ADXL345.
    Simulated {
        /// RNG seed.
        seed: u64,
        /// Machine behaviour.
        mode: MachineMode,
        /// Drift, 0..=1.
        drift: f64,
    },
}

/// Sensor pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorConfig {
    /// Sensor.
    pub kind: SensorKind,
    /// Time between the starts of two windows.
    pub interval: Duration,
    /// The model the pipeline feeds (None: the only active model).
    pub model: Option<String>,
}

/// Drift settings from the config; unset thresholds fall back to the bundle's spec.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftSettings {
    /// Window, check cadence and mode (thresholds here are the built-in defaults).
    pub base: crate::drift::DriftConfig,
    /// PSI override.
    pub psi: Option<f64>,
    /// KS override.
    pub ks: Option<f64>,
    /// Output-shift override.
    pub output_shift: Option<f64>,
}

impl DriftSettings {
    /// The effective settings for a model whose spec carries `spec` thresholds.
    pub fn resolve(
        &self,
        spec: Option<&outpost_protocol::contract::DriftSpec>,
    ) -> crate::drift::DriftConfig {
        let s = spec.cloned().unwrap_or_default();
        crate::drift::DriftConfig {
            psi: self.psi.or(s.psi).unwrap_or(self.base.psi),
            ks: self.ks.or(s.ks).unwrap_or(self.base.ks),
            output_shift: self.output_shift.or(s.output_shift),
            ..self.base.clone()
        }
    }
}

/// The validated agent configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Device id (MQTT client id and topic segment).
    pub device_id: String,
    /// Data directory (slots, downloads, store).
    pub data_dir: PathBuf,
    /// Directory of trusted public keys.
    pub trust_dir: PathBuf,
    /// The device's own signing key (seals every message it publishes); issued by
    /// `outpost-bridge device add`.
    pub key_file: Option<PathBuf>,
    /// Device tags reported to the bridge.
    pub tags: BTreeMap<String, String>,
    /// Broker.
    pub broker: BrokerConfig,
    /// Updates.
    pub update: UpdateConfig,
    /// Model budgets.
    pub models: ModelsConfig,
    /// Local API.
    pub api: ApiConfig,
    /// Sensor pipeline.
    pub sensor: SensorConfig,
    /// Offline store.
    pub store: StoreConfig,
    /// Uplink sync.
    pub sync: SyncConfig,
    /// zstd level for uplink batches.
    pub zstd_level: i32,
    /// Telemetry period.
    pub telemetry_interval: Duration,
    /// Default capture policy.
    pub capture: CapturePolicy,
    /// Per-model capture policies.
    pub capture_models: std::collections::HashMap<String, CapturePolicy>,
    /// Drift monitoring (None: off).
    pub drift: Option<DriftSettings>,
    /// Log filter (`info`, `outpost_agent=debug`, …).
    pub log: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    device_id: Option<String>,
    data_dir: Option<PathBuf>,
    trust_dir: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    log: Option<String>,
    #[serde(default)]
    broker: RawBroker,
    #[serde(default)]
    update: RawUpdate,
    #[serde(default)]
    models: RawModels,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    sensor: RawSensor,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    sync: RawSync,
    #[serde(default)]
    telemetry: RawTelemetry,
    #[serde(default)]
    capture: RawCapture,
    #[serde(default)]
    drift: RawDrift,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDrift {
    enabled: Option<bool>,
    window: Option<usize>,
    check_every: Option<usize>,
    mode: Option<String>,
    psi: Option<f64>,
    ks: Option<f64>,
    output_shift: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    max_bytes: Option<u64>,
    when_full: Option<String>,
    durability: Option<String>,
    priority: Option<BTreeMap<String, u8>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSync {
    batch_records: Option<usize>,
    batch_bytes: Option<usize>,
    linger_ms: Option<u64>,
    window: Option<usize>,
    ack_timeout_ms: Option<u64>,
    zstd_level: Option<i32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    interval_secs: Option<u64>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    sample_rate: Option<f64>,
    on_anomaly: Option<bool>,
    low_confidence: Option<f32>,
    max_per_hour: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCapture {
    #[serde(flatten)]
    default: RawPolicy,
    #[serde(default)]
    models: BTreeMap<String, RawPolicy>,
}

fn policy(
    raw: &RawPolicy,
    base: &CapturePolicy,
    field: &'static str,
) -> Result<CapturePolicy, ConfigError> {
    let p = CapturePolicy {
        sample_rate: raw.sample_rate.unwrap_or(base.sample_rate),
        on_anomaly: raw.on_anomaly.unwrap_or(base.on_anomaly),
        low_confidence: raw.low_confidence.or(base.low_confidence),
        max_per_hour: raw.max_per_hour.unwrap_or(base.max_per_hour),
    };
    if !(0.0..=1.0).contains(&p.sample_rate) {
        return Err(invalid(field, "sample_rate must be within 0..=1"));
    }
    if p.low_confidence.is_some_and(|c| !(0.0..=1.0).contains(&c)) {
        return Err(invalid(field, "low_confidence must be within 0..=1"));
    }
    Ok(p)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBroker {
    url: Option<String>,
    keep_alive_secs: Option<u64>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    reconnect_min_ms: Option<u64>,
    reconnect_max_ms: Option<u64>,
    max_packet_bytes: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUpdate {
    window: Option<u32>,
    request_timeout_ms: Option<u64>,
    health_inferences: Option<u32>,
    health_secs: Option<u64>,
    max_probation_boots: Option<u32>,
    max_clock_skew_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawModels {
    max_memory_bytes: Option<u64>,
    max_disk_bytes: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    http: Option<String>,
    unix_socket: Option<PathBuf>,
    max_body_bytes: Option<usize>,
    max_connections: Option<usize>,
    header_read_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSensor {
    kind: Option<String>,
    i2c_bus: Option<PathBuf>,
    address: Option<u8>,
    interval_ms: Option<u64>,
    model: Option<String>,
    seed: Option<u64>,
    mode: Option<String>,
    drift: Option<f64>,
}

/// The variables [`AgentConfig::load`] reads.
pub const ENV_VARS: [&str; 7] = [
    "OUTPOST_DEVICE_ID",
    "OUTPOST_DATA_DIR",
    "OUTPOST_TRUST_DIR",
    "OUTPOST_KEY_FILE",
    "OUTPOST_BROKER_URL",
    "OUTPOST_API_HTTP",
    "OUTPOST_LOG",
];

/// Config sections: `OUTPOST_{SECTION}_…` can only mean a setting of that section.
const SECTIONS: [&str; 11] = [
    "BROKER",
    "UPDATE",
    "MODELS",
    "API",
    "SENSOR",
    "STORE",
    "SYNC",
    "TELEMETRY",
    "CAPTURE",
    "DRIFT",
    "TAGS",
];

/// Refuses an `OUTPOST_*` variable that is meant as a setting but is not one: it names a
/// config section (`OUTPOST_BROKER_USERNAME`), or is within two edits of a variable the
/// agent reads (`OUTPOST_DEVICEID`). Other `OUTPOST_*` variables (test and CI switches
/// such as `OUTPOST_REQUIRE_MOSQUITTO`) are not the agent's and are left alone.
fn check_variable(name: &str) -> Result<(), ConfigError> {
    let Some(rest) = name.strip_prefix("OUTPOST_") else {
        return Ok(());
    };
    if ENV_VARS.contains(&name) {
        return Ok(());
    }
    let nearest = ENV_VARS
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .min()
        .filter(|(d, _)| *d <= 2);
    let section = SECTIONS
        .iter()
        .any(|s| rest.strip_prefix(s).is_some_and(|r| r.starts_with('_')));
    if nearest.is_none() && !section {
        return Ok(());
    }
    Err(ConfigError::UnknownVariable {
        name: name.into(),
        hint: nearest
            .map(|(_, k)| format!(" (did you mean {k}?)"))
            .unwrap_or_default(),
        known: ENV_VARS.join(", "),
    })
}

/// Levenshtein distance (insertions, deletions, substitutions), on bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

impl AgentConfig {
    /// Loads `path` (if given), applies `OUTPOST_*` overrides from `env`, validates.
    /// A misspelt `OUTPOST_*` setting is an error, as a misspelt file key is.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut raw = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                toml::from_str::<RawConfig>(&text).map_err(|e| ConfigError::Parse {
                    path: p.to_path_buf(),
                    message: e.to_string().trim_end().replace('\n', " "),
                })?
            }
            None => RawConfig::default(),
        };
        for (k, v) in env {
            check_variable(&k)?;
            match k.as_str() {
                "OUTPOST_DEVICE_ID" => raw.device_id = Some(v),
                "OUTPOST_DATA_DIR" => raw.data_dir = Some(v.into()),
                "OUTPOST_TRUST_DIR" => raw.trust_dir = Some(v.into()),
                "OUTPOST_KEY_FILE" => raw.key_file = Some(v.into()),
                "OUTPOST_BROKER_URL" => raw.broker.url = Some(v),
                "OUTPOST_API_HTTP" => raw.api.http = Some(v),
                "OUTPOST_LOG" => raw.log = Some(v),
                _ => {}
            }
        }
        Self::validate(raw, path)
    }

    /// Parses a config from TOML text (tests, the simulator).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw = toml::from_str::<RawConfig>(text).map_err(|e| ConfigError::Parse {
            path: "<inline>".into(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        Self::validate(raw, None)
    }

    fn validate(raw: RawConfig, path: Option<&Path>) -> Result<Self, ConfigError> {
        let base = path.and_then(Path::parent).unwrap_or(Path::new("."));
        let rel = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };

        let device_id = raw
            .device_id
            .ok_or_else(|| invalid("device_id", "is required"))?;
        if !valid_device_id(&device_id) {
            return Err(invalid("device_id", "use 1..=64 of [A-Za-z0-9._-]"));
        }
        let data_dir = rel(raw
            .data_dir
            .ok_or_else(|| invalid("data_dir", "is required"))?);
        let trust_dir = rel(raw
            .trust_dir
            .ok_or_else(|| invalid("trust_dir", "is required"))?);

        let b = raw.broker;
        let url = b.url.unwrap_or_else(|| "mqtt://127.0.0.1:1883".into());
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(invalid(
                "broker.url",
                format!("{url:?} must start with mqtt:// or mqtts://"),
            ));
        };
        let (host, port) = match rest.trim_end_matches('/').rsplit_once(':') {
            Some((h, p)) => (
                h.to_owned(),
                p.parse::<u16>()
                    .map_err(|_| invalid("broker.url", format!("bad port in {url:?}")))?,
            ),
            None => (
                rest.trim_end_matches('/').to_owned(),
                if tls { 8883 } else { 1883 },
            ),
        };
        if host.is_empty() {
            return Err(invalid("broker.url", format!("no host in {url:?}")));
        }
        let password = match b.password_file {
            Some(p) => Some(
                std::fs::read_to_string(rel(p.clone()))
                    .map_err(|e| invalid("broker.password_file", format!("{}: {e}", p.display())))?
                    .trim_end()
                    .to_owned(),
            ),
            None => None,
        };
        if b.client_cert.is_some() != b.client_key.is_some() {
            return Err(invalid(
                "broker.client_cert",
                "client_cert and client_key go together",
            ));
        }
        if !tls && (b.ca_file.is_some() || b.client_cert.is_some()) {
            return Err(invalid(
                "broker.ca_file",
                "TLS files given but the URL is not mqtts://",
            ));
        }
        let max_packet_bytes = b.max_packet_bytes.unwrap_or(128 * 1024);
        if !(16 * 1024..=16 << 20).contains(&max_packet_bytes) {
            return Err(invalid(
                "broker.max_packet_bytes",
                "must be within 16 KiB..=16 MiB",
            ));
        }
        let keep_alive = Duration::from_secs(b.keep_alive_secs.unwrap_or(30));
        if keep_alive < Duration::from_secs(5) {
            return Err(invalid("broker.keep_alive_secs", "must be at least 5"));
        }
        let reconnect_min = Duration::from_millis(b.reconnect_min_ms.unwrap_or(250));
        let reconnect_max = Duration::from_millis(b.reconnect_max_ms.unwrap_or(30_000));
        if reconnect_min.is_zero() || reconnect_max < reconnect_min {
            return Err(invalid(
                "broker.reconnect_max_ms",
                "need 0 < reconnect_min_ms <= reconnect_max_ms",
            ));
        }

        let u = raw.update;
        let window = u.window.unwrap_or(8);
        if !(1..=64).contains(&window) {
            return Err(invalid("update.window", "must be within 1..=64"));
        }
        let request_timeout = Duration::from_millis(u.request_timeout_ms.unwrap_or(5_000));
        if request_timeout < Duration::from_millis(50) {
            return Err(invalid("update.request_timeout_ms", "must be at least 50"));
        }

        let a = raw.api;
        let http = match a.http.as_deref() {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 8089))),
            Some("") => None,
            Some(s) => Some(s.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "api.http",
                    format!("{s:?} is not an address like 127.0.0.1:8089"),
                )
            })?),
        };
        let max_body_bytes = a.max_body_bytes.unwrap_or(8 << 20);
        if !(1024..=64 << 20).contains(&max_body_bytes) {
            return Err(invalid(
                "api.max_body_bytes",
                "must be within 1 KiB..=64 MiB",
            ));
        }
        let limits = api_limits(&a)?;

        let s = raw.sensor;
        let kind = match s.kind.as_deref().unwrap_or("none") {
            "none" => SensorKind::None,
            "adxl345" => SensorKind::Adxl345 {
                bus: s.i2c_bus.unwrap_or_else(|| "/dev/i2c-1".into()),
                address: s.address.unwrap_or(0x53),
            },
            "simulated" => {
                let drift = s.drift.unwrap_or(0.0);
                if !(0.0..=1.0).contains(&drift) {
                    return Err(invalid("sensor.drift", "must be within 0..=1"));
                }
                let mode = s.mode.as_deref().unwrap_or("normal");
                SensorKind::Simulated {
                    seed: s.seed.unwrap_or(1),
                    mode: mode
                        .parse()
                        .map_err(|e: String| invalid("sensor.mode", e))?,
                    drift,
                }
            }
            k => {
                return Err(invalid(
                    "sensor.kind",
                    format!("{k:?} is not one of none, adxl345, simulated"),
                ));
            }
        };
        let interval = Duration::from_millis(s.interval_ms.unwrap_or(1_000));
        if interval < Duration::from_millis(10) {
            return Err(invalid("sensor.interval_ms", "must be at least 10"));
        }
        if let Some(m) = &s.model
            && !outpost_protocol::manifest::valid_name(m)
        {
            return Err(invalid(
                "sensor.model",
                format!("{m:?} is not a model name ([A-Za-z0-9._-], 1..=128)"),
            ));
        }
        let sensor_model = s.model.clone();

        let st = raw.store;
        let max_bytes = st.max_bytes.unwrap_or(64 << 20);
        if max_bytes < 64 * 1024 {
            return Err(invalid("store.max_bytes", "must be at least 65536"));
        }
        let when_full = match st.when_full.as_deref().unwrap_or("evict_lowest_oldest") {
            "evict_lowest_oldest" => WhenFull::EvictLowestOldest,
            "reject_new" => WhenFull::RejectNew,
            o => {
                return Err(invalid(
                    "store.when_full",
                    format!("{o:?} is not evict_lowest_oldest or reject_new"),
                ));
            }
        };
        let durability = match st.durability.as_deref().unwrap_or("normal") {
            "normal" => Durability::Normal,
            "full" => Durability::Full,
            o => {
                return Err(invalid(
                    "store.durability",
                    format!("{o:?} is not normal or full"),
                ));
            }
        };
        let mut streams = crate::store::default_streams();
        for (k, v) in st.priority.unwrap_or_default() {
            if !outpost_protocol::topics::valid_stream(&k) {
                return Err(invalid(
                    "store.priority",
                    format!("{k:?} is not a valid stream name ([a-z0-9_])"),
                ));
            }
            streams.insert(k, v);
        }
        let y = raw.sync;
        let sync = SyncConfig {
            max_records: y.batch_records.unwrap_or(500),
            max_bytes: y.batch_bytes.unwrap_or(96 * 1024),
            linger_ms: y.linger_ms.unwrap_or(500),
            window: y.window.unwrap_or(4),
            ack_timeout_ms: y.ack_timeout_ms.unwrap_or(10_000),
        };
        // A batch is sent whole; zstd never grows data by more than a few hundred bytes,
        // so raw size + 4 KiB (frame, seal, MQTT header) must fit the packet limit.
        if !(1..=10_000).contains(&sync.max_records)
            || !(1024..=max_packet_bytes.saturating_sub(4096)).contains(&sync.max_bytes)
        {
            return Err(invalid(
                "sync.batch_records",
                format!(
                    "batch_records must be 1..=10000 and batch_bytes 1 KiB..={} (broker.max_packet_bytes - 4 KiB)",
                    max_packet_bytes.saturating_sub(4096)
                ),
            ));
        }
        if !(1..=64).contains(&sync.window) || sync.ack_timeout_ms < 100 {
            return Err(invalid(
                "sync.window",
                "window must be 1..=64 and ack_timeout_ms >= 100",
            ));
        }
        let zstd_level = y.zstd_level.unwrap_or(3);
        if !(1..=19).contains(&zstd_level) {
            return Err(invalid("sync.zstd_level", "must be within 1..=19"));
        }
        let telemetry_interval = Duration::from_secs(raw.telemetry.interval_secs.unwrap_or(60));
        if telemetry_interval.is_zero() {
            return Err(invalid("telemetry.interval_secs", "must be at least 1"));
        }
        let dr = raw.drift;
        let drift = if dr.enabled.unwrap_or(true) {
            let d = crate::drift::DriftConfig::default();
            let base = crate::drift::DriftConfig {
                window: dr.window.unwrap_or(d.window),
                check_every: dr.check_every.unwrap_or(d.check_every),
                mode: match dr.mode.as_deref().unwrap_or("exact") {
                    "exact" => crate::drift::DriftMode::Exact,
                    "sketch" => crate::drift::DriftMode::Sketch,
                    o => {
                        return Err(invalid(
                            "drift.mode",
                            format!("{o:?} is not exact or sketch"),
                        ));
                    }
                },
                ..d
            };
            if !(16..=65_536).contains(&base.window)
                || base.check_every == 0
                || base.check_every > base.window
            {
                return Err(invalid(
                    "drift.window",
                    "window must be 16..=65536 and 1 <= check_every <= window",
                ));
            }
            for (v, f) in [
                (dr.psi, "drift.psi"),
                (dr.ks, "drift.ks"),
                (dr.output_shift, "drift.output_shift"),
            ] {
                if v.is_some_and(|x| !(x.is_finite() && x > 0.0)) {
                    return Err(invalid(f, "must be a positive number"));
                }
            }
            Some(DriftSettings {
                base,
                psi: dr.psi,
                ks: dr.ks,
                output_shift: dr.output_shift,
            })
        } else {
            None
        };
        let capture = policy(&raw.capture.default, &CapturePolicy::default(), "capture")?;
        let mut capture_models = std::collections::HashMap::new();
        for (name, p) in &raw.capture.models {
            capture_models.insert(name.clone(), policy(p, &capture, "capture.models")?);
        }

        Ok(Self {
            device_id,
            data_dir,
            trust_dir,
            key_file: raw.key_file.map(rel),
            tags: raw.tags,
            broker: BrokerConfig {
                host,
                port,
                tls,
                keep_alive,
                username: b.username,
                password,
                ca_file: b.ca_file.map(rel),
                client_cert: b.client_cert.map(rel),
                client_key: b.client_key.map(rel),
                reconnect_min,
                reconnect_max,
                max_packet_bytes,
            },
            update: UpdateConfig {
                window,
                request_timeout,
                health_inferences: u.health_inferences.unwrap_or(20),
                health_window: Duration::from_secs(u.health_secs.unwrap_or(60)),
                max_probation_boots: u.max_probation_boots.unwrap_or(2),
                max_clock_skew_secs: u.max_clock_skew_secs.unwrap_or(24 * 3600),
            },
            models: ModelsConfig {
                max_memory_bytes: raw.models.max_memory_bytes,
                max_disk_bytes: raw.models.max_disk_bytes,
            },
            api: ApiConfig {
                http,
                unix_socket: a.unix_socket.map(rel),
                max_body_bytes,
                limits,
            },
            sensor: SensorConfig {
                kind,
                interval,
                model: sensor_model,
            },
            store: StoreConfig {
                max_bytes,
                when_full,
                durability,
                streams,
            },
            sync,
            zstd_level,
            telemetry_interval,
            capture,
            capture_models,
            drift,
            log: raw.log.unwrap_or_else(|| "info".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::from_toml(&format!(
            "device_id = \"gw-1\"\ndata_dir = \"/tmp/d\"\ntrust_dir = \"/tmp/t\"\n{extra}"
        ))
    }

    #[test]
    fn misspelt_outpost_variables_are_errors_and_foreign_ones_are_ignored() {
        let load = |k: &str| {
            AgentConfig::load(
                None,
                [
                    ("OUTPOST_DEVICE_ID".to_string(), "gw-1".to_string()),
                    ("OUTPOST_DATA_DIR".into(), "/tmp/d".into()),
                    ("OUTPOST_TRUST_DIR".into(), "/tmp/t".into()),
                    (k.to_string(), "x".to_string()),
                ],
            )
        };
        let e = load("OUTPOST_DEVICEID").unwrap_err().to_string();
        assert!(e.contains("did you mean OUTPOST_DEVICE_ID?"), "{e}");
        let e = load("OUTPOST_BROKER_USERNAME").unwrap_err().to_string();
        assert!(
            e.contains("OUTPOST_BROKER_USERNAME is not a setting")
                && e.contains("OUTPOST_BROKER_URL"),
            "{e}"
        );
        // Not the agent's: CI and test switches, other tools' variables.
        for k in [
            "OUTPOST_REQUIRE_MOSQUITTO",
            "OUTPOST_PYTHON",
            "OUTPOST_TEST_RUNNER",
            "PATH",
        ] {
            assert!(load(k).is_ok(), "{k}");
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let c = cfg("").unwrap();
        assert_eq!(
            (c.broker.host.as_str(), c.broker.port, c.broker.tls),
            ("127.0.0.1", 1883, false)
        );
        assert_eq!(c.api.http, Some(SocketAddr::from(([127, 0, 0, 1], 8089))));
        assert_eq!(c.sensor.kind, SensorKind::None);
        assert_eq!(c.api.limits, outpost_net::HttpLimits::default());
        let c = cfg("[api]\nmax_connections = 8\nheader_read_timeout_ms = 500").unwrap();
        assert_eq!(
            (
                c.api.limits.max_connections,
                c.api.limits.header_read_timeout
            ),
            (8, Duration::from_millis(500))
        );
        let c = cfg("[broker]\nurl = \"mqtts://broker.example:8884\"\n[api]\nhttp = \"\"").unwrap();
        assert!(c.broker.tls && c.broker.port == 8884 && c.api.http.is_none());
        let c = cfg("[sensor]\nkind = \"simulated\"\nmode = \"imbalance\"\ndrift = 0.3").unwrap();
        assert!(matches!(
            c.sensor.kind,
            SensorKind::Simulated {
                mode: MachineMode::Imbalance,
                ..
            }
        ));
    }

    #[test]
    fn bad_values_name_the_field() {
        for (extra, field) in [
            ("[broker]\nurl = \"http://x\"", "broker.url"),
            ("[broker]\nurl = \"mqtt://x:99999\"", "broker.url"),
            ("[update]\nwindow = 0", "update.window"),
            ("[sensor]\nkind = \"lidar\"", "sensor.kind"),
            (
                "[sensor]\nkind = \"simulated\"\ndrift = 2.0",
                "sensor.drift",
            ),
            ("[api]\nhttp = \"localhost\"", "api.http"),
            ("[api]\nmax_connections = 0", "api.max_connections"),
            ("[api]\nidle_timeout_ms = 0", "api.idle_timeout_ms"),
            ("[api]\nrequest_timeout_ms = 0", "api.request_timeout_ms"),
            ("[store]\nmax_bytes = 10", "store.max_bytes"),
            ("[store]\nwhen_full = \"panic\"", "store.when_full"),
            ("[sync]\nzstd_level = 40", "sync.zstd_level"),
            ("[capture]\nsample_rate = 2.0", "capture"),
            (
                "[capture.models.m]\nlow_confidence = -1.0",
                "capture.models",
            ),
        ] {
            let e = cfg(extra).unwrap_err().to_string();
            assert!(e.contains(field), "{extra}: {e}");
        }
        let e = AgentConfig::from_toml("data_dir = \"x\"\ntrust_dir = \"y\"").unwrap_err();
        assert!(e.to_string().contains("device_id"), "{e}");
        let e = AgentConfig::from_toml("device_id = \"a\"\nbogus = 1").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }
}
