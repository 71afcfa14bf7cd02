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
    crate::input::InputError
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
}

impl Local {
    /// Opens (creating if needed) the data directory.
    pub fn open(data_dir: &Path) -> Result<Self, CliError> {
        Ok(Self {
            db: Db::open(data_dir)?,
            audit: Audit::new(data_dir),
            bundles: Arc::new(FsBundleStore::new(data_dir)?),
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// The signing key (created on first use).
    pub fn key(&self) -> Result<SigningKey, CliError> {
        Ok(crate::server::signing_key(&self.data_dir)?)
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
            Arc::new(self.key()?),
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
