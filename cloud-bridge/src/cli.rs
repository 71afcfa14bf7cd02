//! Command implementations for `outpost-bridge` (the binary only parses arguments).
//!
//! Commands work on the local data directory; while `serve` runs, it picks up what they
//! change (new deployments' directives are published on the engine's next pass).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use outpost_protocol::SigningKey;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::audit::Audit;
use crate::bundles::{BundleStore, FsBundleStore};
use crate::db::Db;
use crate::events::EventBus;
use crate::fleet::FleetHandle;

/// A CLI error (message already explains it).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(pub String);

impl CliError {
    /// Wraps any error's full chain.
    pub fn from_err(e: &(dyn std::error::Error + 'static)) -> Self {
        Self(outpost_agent::cli::error_chain(e))
    }
}

macro_rules! cli_err {
    ($($t:ty),*) => {$(
        impl From<$t> for CliError {
            fn from(e: $t) -> Self {
                CliError::from_err(&e)
            }
        }
    )*};
}
cli_err!(
    rusqlite::Error,
    std::io::Error,
    crate::db::DbError,
    crate::registry::RegistryError,
    crate::devices::DeviceError,
    crate::fleet::FleetError,
    crate::export::ExportError,
    crate::server::ServeError,
    crate::broker::tls::TlsError,
    crate::broker::external::ExternalError,
    crate::auth::AuthError,
    crate::input::InputError,
    crate::keys::KeysError
);

/// The local data directory opened for commands.
pub struct Local {
    /// Database.
    pub db: Db,
    /// Audit log.
    pub audit: Audit,
    /// Bundles.
    pub bundles: Arc<dyn BundleStore>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// `--key FILE`: sign with this key file instead of the ring's recorded path.
    pub key_file: Option<PathBuf>,
}

impl Local {
    /// Opens (creating if needed) the data directory.
    pub fn open(data_dir: &Path) -> Result<Self, CliError> {
        Ok(Self {
            db: Db::open(data_dir)?,
            audit: Audit::new(data_dir),
            bundles: Arc::new(FsBundleStore::new(data_dir)?),
            data_dir: data_dir.to_path_buf(),
            key_file: None,
        })
    }

    /// Signs with `key_file` (`--key FILE`, which must be the active key) when given.
    pub fn with_key(mut self, key_file: Option<PathBuf>) -> Self {
        self.key_file = key_file;
        self
    }

    /// The key ring (a first key is created on first use).
    pub fn keyring(&self) -> Result<crate::keys::Keyring, CliError> {
        Ok(crate::keys::Keyring::open(
            &self.db.lock(),
            &self.audit,
            &self.data_dir,
            self.key_file.as_deref(),
        )?)
    }

    /// What the bridge signs with now: the active key and the rotation under way.
    pub fn signer(&self) -> Result<Arc<crate::keys::Signer>, CliError> {
        let ring = self.keyring()?;
        Ok(ring.signer(&self.db.lock())?)
    }

    /// The active signing key.
    pub fn key(&self) -> Result<Arc<SigningKey>, CliError> {
        Ok(self.signer()?.shared())
    }

    /// A fleet handle without an MQTT connection.
    pub fn fleet(&self) -> Result<FleetHandle, CliError> {
        // No broker here: directives are recorded unpublished and the running bridge
        // publishes them; the channel's receiver is dropped on purpose.
        let (out, _) = tokio::sync::mpsc::unbounded_channel();
        let events = EventBus::new(self.db.clone(), None);
        Ok(FleetHandle::new(
            self.db.clone(),
            self.audit.clone(),
            events,
            self.keyring()?,
            self.bundles.clone(),
            out,
            Arc::new(Notify::new()),
        ))
    }

    /// The event bus (no MQTT).
    pub fn events(&self) -> EventBus {
        EventBus::new(self.db.clone(), None)
    }
}

/// The acting user for the audit log: `--actor`, else `$USER`, else `cli`.
pub fn actor(explicit: Option<String>) -> String {
    explicit
        .or_else(|| std::env::var("USER").ok())
        .map(|u| format!("cli:{u}"))
        .unwrap_or_else(|| "cli".into())
}

/// Prints `v` as JSON, or `text` otherwise.
pub fn output<T: Serialize>(json_out: bool, v: &T, text: impl FnOnce() -> String) {
    if json_out {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        println!("{}", text());
    }
}

/// Makes writing to a closed stdout (`outpost-bridge … | head`) end the process quietly
/// with status 0, as other Unix tools do. Rust ignores SIGPIPE, so `println!` panics on
/// EPIPE instead; the hook recognises that panic and exits, and leaves every other panic
/// to the default hook.
pub fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// Renders rows as an aligned text table.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(header.iter().map(|s| s.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

/// A spinner on stderr for long work (hidden when stderr is not a terminal).
pub fn spinner(msg: &str) -> indicatif::ProgressBar {
    let p = indicatif::ProgressBar::new_spinner();
    p.set_message(msg.to_owned());
    p.enable_steady_tick(std::time::Duration::from_millis(120));
    p
}

/// `k=v` list → pairs, within the tag caps (the API's filters use the same check).
pub fn pairs(v: &[String], what: &'static str) -> Result<Vec<(String, String)>, CliError> {
    Ok(crate::input::tag_pairs(what, v)?)
}

/// Summary JSON of a model record for lists.
pub fn model_row(m: &crate::registry::ModelRecord) -> Vec<String> {
    let p50 = m.validation["p50_us"]
        .as_f64()
        .map(|v| format!("{v:.0}"))
        .unwrap_or_default();
    let p99 = m.validation["p99_us"]
        .as_f64()
        .map(|v| format!("{v:.0}"))
        .unwrap_or_default();
    vec![
        m.name.clone(),
        m.version.to_string(),
        m.digest[..12].to_owned(),
        m.tags
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
        format!("{p50}/{p99}"),
        outpost_protocol::time::rfc3339(m.created_at),
        m.created_by.clone(),
    ]
}

/// Deployment summary line.
pub fn deployment_row(d: &crate::fleet::DeploymentRecord) -> Vec<String> {
    let done = d
        .devices
        .iter()
        .filter(|x| x.2 == crate::fleet::machine::DeviceStatus::Succeeded)
        .count();
    vec![
        d.id.clone(),
        format!("{}:{}", d.model, d.version),
        d.state.clone(),
        d.wave.to_string(),
        format!("{done}/{}", d.devices.len()),
        outpost_protocol::time::rfc3339(d.created_at),
    ]
}

/// `audit --verify` as JSON.
pub fn verify_json(r: &crate::audit::VerifyReport) -> Value {
    json!({"ok": r.problems.is_empty(), "rows": r.rows, "problems": r.problems})
}

/// Every model on a device, short: `vibration:2 (succeeded), audio:1 (downloading)`.
pub fn models_cell(s: &outpost_protocol::wire::ReportedState) -> String {
    s.models
        .iter()
        .map(|m| {
            let v = m
                .active
                .as_ref()
                .map(|a| format!("v{}", a.model.version))
                .unwrap_or_else(|| "-".into());
            format!("{}:{v} ({})", m.name, phase(m.phase))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn phase(p: outpost_protocol::wire::UpdatePhase) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `device show` as text: the device, then one row per model — what it runs, its rollback
/// version, what the bridge wants, where its update is — and any refused directive.
/// `device show`: the device view, its latest telemetry and its recent events.
#[derive(Debug, Serialize)]
pub struct DeviceShow {
    /// Reported state and desired set.
    #[serde(flatten)]
    pub view: crate::fleet::DeviceView,
    /// The latest report of each kind (inference: per model).
    pub telemetry: Vec<crate::telemetry::TelemetryRow>,
    /// The newest events, newest first.
    pub events: Vec<crate::telemetry::EventRow>,
}

/// `device show` as text.
pub fn device_show_text(d: &DeviceShow) -> String {
    let mut s = device_text(&d.view);
    s += "

latest telemetry:";
    if d.telemetry.is_empty() {
        s += " none";
    }
    for t in &d.telemetry {
        s += &format!(
            "
  {}  {:<9} {}",
            outpost_protocol::time::rfc3339(t.ts_ms / 1000),
            t.report.kind(),
            crate::telemetry::summary(&t.report)
        );
    }
    s += "
recent events:";
    if d.events.is_empty() {
        s += " none";
    }
    for e in &d.events {
        s += &format!(
            "
  {}  {}: {}",
            outpost_protocol::time::rfc3339(e.ts_ms / 1000),
            e.kind,
            e.message
        );
    }
    s
}

/// `device show`'s device and model table.
pub fn device_text(v: &crate::fleet::DeviceView) -> String {
    let d = &v.device;
    let mut out = format!(
        "device {}  online={}  target={}  last_seen={}\ntags: {}\n",
        d.id,
        d.online,
        d.target,
        d.last_seen
            .map(outpost_protocol::time::rfc3339)
            .unwrap_or_else(|| "never".into()),
        d.tags
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let s = d.state.as_ref();
    let mut names: Vec<&str> = v.desired.iter().map(|m| m.name.as_str()).collect();
    if let Some(s) = s {
        names.extend(s.models.iter().map(|m| m.name.as_str()));
    }
    names.sort_unstable();
    names.dedup();
    let rows: Vec<Vec<String>> = names
        .iter()
        .map(|n| {
            let m = s.and_then(|s| s.model(n));
            let ver = |a: Option<&outpost_protocol::wire::InstalledModel>| {
                a.map(|a| format!("v{}", a.model.version))
                    .unwrap_or_else(|| "-".into())
            };
            vec![
                (*n).to_owned(),
                ver(m.and_then(|m| m.active.as_ref())),
                ver(m.and_then(|m| m.previous.as_ref())),
                v.desired
                    .iter()
                    .find(|t| t.name == *n)
                    .map(|t| format!("v{} ({})", t.version, t.deployment_id))
                    .unwrap_or_else(|| "(remove)".into()),
                m.map(|m| phase(m.phase)).unwrap_or_else(|| "-".into()),
                m.map(|m| format!("{:?}", m.health).to_lowercase())
                    .unwrap_or_default(),
                m.and_then(|m| m.last_error.clone()).unwrap_or_default(),
            ]
        })
        .collect();
    out += &table(
        &[
            "MODEL",
            "ACTIVE",
            "PREVIOUS",
            "DESIRED",
            "PHASE",
            "HEALTH",
            "LAST ERROR",
        ],
        &rows,
    );
    if let Some(r) = s.and_then(|s| s.directive_rejected.as_ref()) {
        out += &format!(
            "\nrefused directive {}: {} ({})",
            r.sequence
                .map(|q| q.to_string())
                .unwrap_or_else(|| "?".into()),
            r.reason,
            r.kind
        );
    }
    if let Some(s) = s {
        out += &format!(
            "\nagent {}  directive {}  memory {}/{}  disk {}/{}",
            s.agent_version,
            s.directive_sequence
                .map(|q| q.to_string())
                .unwrap_or_else(|| "-".into()),
            s.budget.memory_used,
            s.budget
                .memory_budget
                .map(|b| b.to_string())
                .unwrap_or_else(|| "∞".into()),
            s.budget.disk_used,
            s.budget
                .disk_budget
                .map(|b| b.to_string())
                .unwrap_or_else(|| "∞".into()),
        );
    }
    out
}
