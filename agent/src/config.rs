//! Agent configuration: defaults, then the TOML file, then `OUTPOST_*` environment
//! variables; validated once at start-up into typed values. A bad config is one clear
//! error naming the field, and `outpost-agent run` exits 2.
//!
//! Each section belongs to the module that uses it, with its defaults and its validator:
//!
//! | section | struct | module |
//! |---|---|---|
//! | `[broker]` | [`BrokerConfig`] | [`crate::link::config`] |
//! | `[update]`, `[models]` | [`UpdateConfig`], [`ModelsConfig`] | [`crate::update::config`] |
//! | `[api]` | [`ApiConfig`] | [`crate::api::config`] |
//! | `[store]` | [`StoreConfig`] | [`crate::store::config`] |
//! | `[sync]` | [`SyncConfig`] + zstd level | [`crate::sync::config`] |
//! | `[telemetry]` | interval | [`crate::telemetry`] |
//! | `[capture]` | [`CapturePolicy`] | [`crate::capture`] |
//! | `[drift]` | [`DriftSettings`] | [`crate::drift`] |
//! | `[sensor]` | [`SensorConfig`] | [`crate::sensors::config`] |
//!
//! This module parses the file (unknown keys are errors, in every section), applies the
//! environment (a misspelt `OUTPOST_*` setting is an error), checks what spans sections
//! (a sync batch must fit a broker packet) and composes the result. The whole file:
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
use std::path::{Path, PathBuf};
use std::time::Duration;

use outpost_protocol::topics::valid_device_id;
use serde::Deserialize;

pub use crate::api::ApiConfig;
use crate::api::ApiSection;
pub use crate::capture::CapturePolicy;
use crate::capture::CaptureSection;
use crate::drift::DriftSection;
pub use crate::drift::DriftSettings;
pub use crate::link::BrokerConfig;
use crate::link::BrokerSection;
use crate::sensors::config::SensorSection;
pub use crate::sensors::{SensorConfig, SensorKind};
use crate::settings::InvalidSetting;
pub use crate::store::StoreConfig;
use crate::store::StoreSection;
pub use crate::sync::SyncConfig;
use crate::sync::SyncSection;
use crate::telemetry::TelemetrySection;
pub use crate::update::{ModelsConfig, UpdateConfig};
use crate::update::{ModelsSection, UpdateSection};

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

impl From<InvalidSetting> for ConfigError {
    fn from(e: InvalidSetting) -> Self {
        ConfigError::Invalid {
            field: e.field,
            message: e.message,
        }
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    InvalidSetting::new(field, message).into()
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

/// The file as written: top-level keys, and each section in its owner's file form.
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
    broker: BrokerSection,
    #[serde(default)]
    update: UpdateSection,
    #[serde(default)]
    models: ModelsSection,
    #[serde(default)]
    api: ApiSection,
    #[serde(default)]
    sensor: SensorSection,
    #[serde(default)]
    store: StoreSection,
    #[serde(default)]
    sync: SyncSection,
    #[serde(default)]
    telemetry: TelemetrySection,
    #[serde(default)]
    capture: CaptureSection,
    #[serde(default)]
    drift: DriftSection,
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

    /// Checks the top-level keys, resolves each section (sections resolve paths relative
    /// to the config file's directory) and composes them.
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

        let broker = raw.broker.resolve(rel)?;
        let update = raw.update.resolve()?;
        let api = raw.api.resolve(rel)?;
        let sensor = raw.sensor.resolve()?;
        let store = raw.store.resolve()?;
        // The one setting that spans sections: a sync batch is sent whole in one packet.
        let (sync, zstd_level) = raw.sync.resolve(broker.max_packet_bytes)?;
        let telemetry_interval = raw.telemetry.resolve()?;
        let drift = raw.drift.resolve()?;
        let (capture, capture_models) = raw.capture.resolve()?;

        Ok(Self {
            device_id,
            data_dir,
            trust_dir,
            key_file: raw.key_file.map(rel),
            tags: raw.tags,
            broker,
            update,
            models: raw.models.resolve()?,
            api,
            sensor,
            store,
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
    use std::net::SocketAddr;

    use super::*;
    use crate::sensors::vibration::MachineMode;

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

    /// The TOML blocks of a file's doc comments (`//! ```toml` … `//! ````).
    fn doc_examples(src: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur: Option<String> = None;
        for l in src.lines() {
            let l = l.trim_start();
            let Some(doc) = l.strip_prefix("//!").or_else(|| l.strip_prefix("///")) else {
                continue;
            };
            let doc = doc.strip_prefix(' ').unwrap_or(doc);
            match (&mut cur, doc.trim_end()) {
                (None, "```toml") => cur = Some(String::new()),
                (Some(_), "```") => out.extend(cur.take()),
                (Some(c), _) => {
                    c.push_str(doc);
                    c.push('\n');
                }
                (None, _) => {}
            }
        }
        out
    }

    #[test]
    fn the_documented_examples_load() {
        // The whole file in this module's doc, and each section's example in its owner's.
        let whole = doc_examples(include_str!("config.rs"));
        assert_eq!(whole.len(), 1);
        let c = AgentConfig::from_toml(&whole[0]).unwrap();
        assert_eq!(c.device_id, "gw-0001");
        assert!(matches!(c.sensor.kind, SensorKind::Simulated { .. }));
        for src in [
            include_str!("link/config.rs"),
            include_str!("update/config.rs"),
            include_str!("api/config.rs"),
            include_str!("store/config.rs"),
            include_str!("sync/config.rs"),
            include_str!("sensors/config.rs"),
            include_str!("capture.rs"),
            include_str!("drift.rs"),
        ] {
            let examples = doc_examples(src);
            assert!(!examples.is_empty());
            for e in examples {
                cfg(&e).unwrap_or_else(|err| panic!("{err}:\n{e}"));
            }
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
