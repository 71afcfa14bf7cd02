//! The `outpost-bridge` command line: its grammar ([`args`]) and one module per group
//! of commands, each a thin face over the operations layer ([`crate::ops::Ops`]): it
//! parses, calls the library, renders. The binary only calls [`run`].
//!
//! Commands work on the local data directory; while `serve` runs, it picks up what they
//! change (new deployments' directives are published on the engine's next pass).

use std::process::ExitCode;

use serde::Serialize;

mod admin;
pub mod args;
mod data;
mod deploy;
mod device;
mod model;
mod render;
mod serve;

pub use render::*;

use args::{BundleCmd, Cli, Cmd};

/// A command's failure, typed by the library module that failed (the binary prints the
/// whole chain). `Usage` is for arguments clap cannot check on its own.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// An argument clap cannot check (its form depends on another, or on the data).
    #[error("{0}")]
    Usage(String),
    /// The operations context.
    #[error(transparent)]
    Ops(#[from] crate::ops::OpsError),
    /// Database.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    /// SQL.
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// Files.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The registry.
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    /// Devices.
    #[error(transparent)]
    Device(#[from] crate::devices::DeviceError),
    /// Deployments.
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    /// Exports.
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
    /// `serve`.
    #[error(transparent)]
    Serve(#[from] crate::server::ServeError),
    /// The bridge's CA.
    #[error(transparent)]
    Tls(#[from] crate::broker::tls::TlsError),
    /// External broker configuration.
    #[error(transparent)]
    External(#[from] crate::broker::external::ExternalError),
    /// API tokens.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// Input over a cap or not of its form.
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    /// Signing keys.
    #[error(transparent)]
    Keys(#[from] crate::keys::KeysError),
    /// A trust directory.
    #[error(transparent)]
    Trust(#[from] outpost_protocol::keys::KeyError),
    /// Packing a bundle.
    #[error("packing {model}: {source}")]
    Pack {
        /// The model file.
        model: std::path::PathBuf,
        /// Cause.
        source: crate::packaging::PackError,
    },
    /// Inspecting a model.
    #[error("inspecting {file}: {source}")]
    Inspect {
        /// The model file.
        file: std::path::PathBuf,
        /// Cause.
        source: crate::packaging::PackError,
    },
    /// Audit checkpoints.
    #[error(transparent)]
    Checkpoint(#[from] crate::audit::CheckpointError),
}

impl CliError {
    /// A usage error.
    pub fn usage(msg: impl Into<String>) -> Self {
        Self::Usage(msg.into())
    }
}

/// Runs a parsed command line; the exit code says how it ended (commands that watch a
/// deployment use several, see [`crate::watch`]).
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let who = actor(cli.actor.clone());
    let dir = cli.data_dir;
    match cli.cmd {
        Cmd::Serve(a) => serve::serve(dir, *a),
        Cmd::Bundle {
            cmd: BundleCmd::Pack(a),
        } => serve::pack(&dir, *a),
        Cmd::Model { cmd } => model::run(&dir, who, cmd),
        Cmd::Device { cmd } => device::run(&dir, who, cmd),
        Cmd::Deploy { cmd } => deploy::run(&dir, who, cmd),
        Cmd::Keys { cmd } => admin::keys(&dir, &who, cmd),
        Cmd::BrokerConfig { cmd } => admin::broker_config(&dir, cmd),
        Cmd::Audit(a) => admin::audit(&dir, a),
        Cmd::Token { cmd } => admin::token(&dir, &who, cmd),
        Cmd::Export { cmd } => data::export(&dir, cmd),
        Cmd::Drift { cmd } => data::drift(&dir, cmd),
        Cmd::Telemetry { cmd } => data::telemetry(&dir, cmd),
    }
}

/// `NAME` or `NAME:VERSION`.
pub fn model_arg(s: &str) -> Result<(String, Option<u32>), CliError> {
    crate::export::parse_model(s).map_err(|e| CliError::usage(e.to_string()))
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

/// Makes writing to a closed stdout (`outpost-bridge … | head`) end quietly with status 0
/// (the agent's hook, shared by every binary).
pub use outpost_agent::cli::quiet_on_closed_stdout;

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
