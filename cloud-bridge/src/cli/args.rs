//! The command line's grammar (clap): one type per command, parsed once; the command
//! modules beside this one carry them out. Doc comments here are the `--help` text.
#![allow(missing_docs)]

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "outpost-bridge",
    version,
    about = "Outpost cloud bridge: registry, packaging, rollout, ingest"
)]
pub struct Cli {
    /// Data directory (database, bundles, keys).
    #[arg(long, global = true, default_value = "./outpost-data")]
    pub data_dir: PathBuf,
    /// Who is acting (audit trail); default $USER.
    #[arg(long, global = true)]
    pub actor: Option<String>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run the bridge: broker, ingest, bundle serving, rollout engine, HTTP API.
    Serve(Box<ServeArgs>),
    /// Signing keys.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Bundles.
    Bundle {
        #[command(subcommand)]
        cmd: BundleCmd,
    },
    /// The model registry.
    Model {
        #[command(subcommand)]
        cmd: ModelCmd,
    },
    /// Devices.
    Device {
        #[command(subcommand)]
        cmd: DeviceCmd,
    },
    /// Deployments.
    Deploy {
        #[command(subcommand)]
        cmd: DeployCmd,
    },
    /// Show (or verify) the audit trail.
    Audit(AuditArgs),
    /// Export captured data for retraining.
    Export {
        #[command(subcommand)]
        cmd: ExportCmd,
    },
    /// Fleet drift.
    Drift {
        #[command(subcommand)]
        cmd: DriftCmd,
    },
    /// What devices sent.
    Telemetry {
        #[command(subcommand)]
        cmd: TelemetryCmd,
    },
    /// API tokens.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Write a configuration for an external broker (devices confined to their topics).
    BrokerConfig {
        #[command(subcommand)]
        cmd: BrokerConfigCmd,
    },
}

#[derive(Subcommand)]
pub enum BrokerConfigCmd {
    /// mosquitto.conf, ACL and password files for every provisioned device.
    Mosquitto {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Mutual TLS for devices (client certificates from the bridge's CA).
        #[arg(long)]
        tls: bool,
        /// Devices' listener (default 0.0.0.0:1883, or :8883 with --tls).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// The bridge's listener.
        #[arg(long, default_value = "127.0.0.1:1884")]
        bridge_listen: SocketAddr,
        /// Extra server certificate name (repeatable).
        #[arg(long = "tls-name")]
        tls_names: Vec<String>,
    },
}

#[derive(Args)]
pub struct ServeArgs {
    /// Embedded broker listen address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt_listen: SocketAddr,
    /// Use an external broker instead (mqtt://host:port).
    #[arg(long)]
    pub broker: Option<String>,
    /// Username for the external broker.
    #[arg(long)]
    pub broker_user: Option<String>,
    /// File holding the external broker password.
    #[arg(long)]
    pub broker_password_file: Option<PathBuf>,
    /// Let devices connect to the embedded broker without credentials.
    #[arg(long)]
    pub no_broker_auth: bool,
    /// Accept device messages that are not sealed with a device key (only for agents
    /// that predate device keys; sealed messages are still verified).
    #[arg(long)]
    pub no_device_auth: bool,
    /// Embedded broker: mutual-TLS listener (client certificates from the bridge's CA).
    #[arg(long)]
    pub mqtt_tls_listen: Option<SocketAddr>,
    /// Embedded broker: extra TLS server certificate name (repeatable).
    #[arg(long = "tls-name")]
    pub tls_names: Vec<String>,
    /// Embedded broker: largest MQTT packet in bytes (AWS IoT Core: 131072).
    #[arg(long, default_value_t = 131_072)]
    pub max_packet_bytes: usize,
    /// Embedded broker: most connections at once.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,
    /// HTTP API listen address ("" disables).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: String,
    /// HTTP API: most connections at once (over it, the longest-waiting idle one gives
    /// way, or the new one is closed).
    #[arg(long, default_value_t = outpost_net::HttpLimits::default().max_connections)]
    pub http_max_connections: usize,
    /// POST events to this URL (repeatable).
    #[arg(long = "webhook")]
    pub webhooks: Vec<String>,
    /// Broker URL written into provisioned devices' configs.
    #[arg(long)]
    pub device_broker_url: Option<String>,
    /// Chunks per second per device.
    #[arg(long, default_value_t = 200.0)]
    pub chunk_rate: f64,
    /// Sign and publish an audit checkpoint at most every N seconds (when the log grew).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub audit_checkpoint_secs: u64,
    /// Sign with this private key file (kept outside the data directory); it must be the
    /// active key (`keys show`).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum KeysCmd {
    /// Generate the bridge's first signing key: DATA_DIR/keys/signing.key (0600) and
    /// {key_id}.pub, where `serve`, `model register` and `device add` look for it.
    Init {
        /// Write the private key to DIR/signing.key instead (its path is recorded).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// List the signing keys: id, state (active / next / retired), times, devices that
    /// trust each, path.
    Show {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Start a rotation: make the next key (DATA_DIR/keys/{key_id}.key, 0600) and send its
    /// public half to every device in a directive signed by the active key.
    Rotate {
        /// Write the private key to DIR/{key_id}.key instead.
        #[arg(long, value_name = "DIR", conflicts_with = "status")]
        out: Option<PathBuf>,
        /// Only show how many devices trust the next key (as `keys show`).
        #[arg(long)]
        status: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Finish a rotation: sign with the next key and retire the active one (devices are
    /// told to stop trusting it). Refused while any device does not trust the next key.
    Activate {
        /// Activate even though the devices named do not trust the next key (they can then
        /// verify nothing until re-provisioned).
        #[arg(long)]
        force: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum BundleCmd {
    /// Validate a model with tract, run its self-test, and write a signed bundle.
    Pack(Box<PackArgs>),
}

#[derive(Args)]
pub struct PackArgs {
    /// ONNX model file.
    #[arg(long)]
    pub model: PathBuf,
    /// Spec file (TOML): feature names, normalisation, task, self-tests (optional).
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// Private signing key file (default: the data directory's active key).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Output bundle file.
    #[arg(short = 'o', long = "out")]
    pub out: PathBuf,
    /// Model name (default: the spec's [model] name).
    #[arg(long)]
    pub name: Option<String>,
    /// Model version (default: the spec's, else 1).
    #[arg(long)]
    pub version: Option<u32>,
    /// Who is packing (default: $USER).
    #[arg(long)]
    pub created_by: Option<String>,
    /// Tag k=v (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    #[command(flatten)]
    pub bundle: BundleArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum ModelCmd {
    /// Register a model (next version for its name), validated and profiled.
    Register(Box<RegisterArgs>),
    /// Show what an ONNX file declares and what tract can and cannot run in it.
    Inspect {
        /// The ONNX file.
        file: PathBuf,
        /// Spec file to apply (optional).
        #[arg(long)]
        spec: Option<PathBuf>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// List / search models.
    List {
        /// Exact name.
        #[arg(long)]
        name: Option<String>,
        /// Tag k=v (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Lineage field=value (source_commit, dataset_id, dataset_sha256, training_run, created_by).
        #[arg(long = "lineage")]
        lineage: Vec<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show one version (NAME or NAME:VERSION).
    Show {
        /// Model.
        model: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Delete a version (NAME:VERSION); refused while a deployment uses it.
    Delete {
        /// Model.
        model: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct RegisterArgs {
    /// The ONNX file, then any extra files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Model name.
    #[arg(long)]
    pub name: String,
    /// Spec file: feature names, normalisation, task, self-tests (default: spec.toml next
    /// to the model, if any; none is needed).
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// Tag k=v (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Training-data sample (CSV) for the baseline profile.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Sign with this private key file (kept outside the data directory); it must be the
    /// active key.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    #[command(flatten)]
    pub bundle: BundleArgs,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum DeviceCmd {
    /// Provision a device: writes agent.toml, password (0600), trust/ and a client
    /// certificate (client.pem, client.key 0600, ca.pem) into --out.
    Add {
        /// Device id.
        id: String,
        /// Tag k=v (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Hardware target (default aarch64-unknown-linux-gnu; with --local this machine's).
        #[arg(long)]
        target: Option<String>,
        /// Output directory (default DATA_DIR/provisioned/ID).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Broker URL for the device (default mqtt://127.0.0.1:1883, or
        /// mqtts://127.0.0.1:8883 with --tls).
        #[arg(long)]
        broker_url: Option<String>,
        /// Connect with mutual TLS (the device certificate is the credential).
        #[arg(long)]
        tls: bool,
        /// Run the agent on this machine: data, trust and keys inside --out, the simulated
        /// sensor, a free local API port, the running bridge's broker (see README, "Run a
        /// gateway locally").
        #[arg(long)]
        local: bool,
        /// With --local: the agent's local API port (default: one free now).
        #[arg(long, requires = "local")]
        api_port: Option<u16>,
        /// The bridge's key as a file kept outside the data directory (must be the active
        /// key); trust/ gets it and, during a rotation, the next key.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// List devices.
    List {
        /// Tag k=v (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show one device: reported state, desired models, latest telemetry, recent events.
    Show {
        /// Device id.
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Add a new device key (written to OUT/device.key, 0600, to install on the device);
    /// the old key stays valid until retired.
    RotateKey {
        /// Device id.
        id: String,
        /// Where to write the new key.
        #[arg(long)]
        out: PathBuf,
    },
    /// Retire one of a device's keys (messages sealed with it are refused from then on).
    RetireKey {
        /// Device id.
        id: String,
        /// Key id (see `device keys`).
        key_id: String,
    },
    /// List a device's keys.
    Keys {
        /// Device id.
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum DeployCmd {
    /// Create a deployment (the running bridge rolls it out).
    Create(Box<CreateArgs>),
    /// List / search deployments.
    List {
        #[command(flatten)]
        filter: crate::fleet::DeploymentFilter,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Follow a deployment until it ends or pauses (progress on stderr). Exit code: 0
    /// succeeded, 3 rolled back, 4 aborted, 5 paused.
    Watch {
        /// Id.
        id: String,
        /// JSON output (the final record, on stdout).
        #[arg(long)]
        json: bool,
    },
    /// Show one deployment.
    Show {
        /// Id.
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Pause a running deployment.
    Pause(ActionArgs),
    /// Resume a paused deployment.
    Resume(ActionArgs),
    /// Abort: devices that finished keep the new model, the others are pinned to what
    /// they run (a download in progress is cancelled); --rollback sends every switched
    /// device back to its previous model instead.
    Abort(AbortArgs),
    /// Roll back: an unfinished deployment sends its switched devices back; a finished one
    /// gets a new deployment returning each device to its previous version (or --to).
    Rollback(RollbackArgs),
    /// Take a model off devices (unloaded, slots freed).
    Remove {
        /// Model name.
        #[arg(long)]
        model: String,
        /// Device id (repeatable).
        #[arg(long = "device")]
        devices: Vec<String>,
        /// Device tag k=v (repeatable, all must match).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct RollbackArgs {
    /// Deployment id.
    pub id: String,
    /// Send every device to this version of the model instead of its previous one.
    #[arg(long)]
    pub to: Option<u32>,
    /// Why.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ActionArgs {
    /// Deployment id.
    pub id: String,
    /// Why.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct AbortArgs {
    #[command(flatten)]
    pub action: ActionArgs,
    /// Send switched devices back to their previous model instead of pinning them.
    #[arg(long)]
    pub rollback: bool,
}

#[derive(Args)]
pub struct CreateArgs {
    /// Model NAME or NAME:VERSION.
    #[arg(long)]
    pub model: String,
    /// Device id (repeatable).
    #[arg(long = "device")]
    pub devices: Vec<String>,
    /// Device tag k=v (repeatable, all must match).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    #[command(flatten)]
    pub strategy: crate::fleet::StrategySpec,
    /// Roll out without the canary gates (operator role; needs --reason; audited).
    #[arg(long)]
    pub skip_gates: bool,
    /// Follow it until it ends or pauses, as `deploy watch` (exit code says how).
    #[arg(long)]
    pub wait: bool,
    /// Why.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum ExportCmd {
    /// Captured model inputs and outputs.
    Captures {
        /// Model NAME or NAME:VERSION.
        #[arg(long)]
        model: String,
        /// From (unix seconds, RFC 3339, or an age like 24h).
        #[arg(long)]
        since: Option<String>,
        /// Until.
        #[arg(long)]
        until: Option<String>,
        /// Only this device (repeatable).
        #[arg(long = "device")]
        devices: Vec<String>,
        /// parquet | csv | jsonl (columns: docs/architecture.md, "Capture exports").
        #[arg(long, default_value = "parquet")]
        format: String,
        /// Output file ("-" for stdout; Parquet only into a pipe or file).
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum DriftCmd {
    /// Drift by model version (latest device reports of the last 2 minutes).
    Show {
        /// Model NAME or NAME:VERSION.
        #[arg(long)]
        model: Option<String>,
        /// Only this deployment's devices.
        #[arg(long)]
        deployment: Option<String>,
        /// Group by this device tag.
        #[arg(long)]
        group_by: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum TelemetryCmd {
    /// A device's telemetry reports, newest first.
    Show {
        /// Device id.
        id: String,
        /// Only this kind: inference | system | agent.
        #[arg(long)]
        kind: Option<String>,
        /// At most N reports.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create an API token (printed once).
    Add {
        /// Token name.
        name: String,
        /// viewer | operator | admin.
        #[arg(long)]
        role: String,
        /// Replace an existing token of that name (its old secret stops working).
        #[arg(long)]
        replace: bool,
    },
    /// List tokens (names, roles, creation times; never secrets).
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token (it stops working at once).
    Revoke {
        /// Token name.
        name: String,
    },
}

/// `audit`.
#[derive(Args)]
pub struct AuditArgs {
    /// Verify the hash chain and every stored checkpoint; exit 1 if it was tampered
    /// with.
    #[arg(long)]
    pub verify: bool,
    /// With --verify: also check this copy of a checkpoint (the checkpoint JSON, or the
    /// `audit_checkpoint` event a webhook received) against the chain (repeatable).
    #[arg(long = "checkpoint", value_name = "FILE", requires = "verify")]
    pub checkpoints: Vec<PathBuf>,
    /// With --verify: trust the *.pub keys in DIR for checkpoint signatures (default:
    /// the bridge's own keys in DATA_DIR/keys).
    #[arg(long, value_name = "DIR", requires = "verify")]
    pub trust: Option<PathBuf>,
    /// Newest N entries.
    #[arg(long, default_value_t = 50)]
    pub limit: u64,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// What `bundle pack` and `model register` both record in a bundle: chunking, the memory
/// a device must have, and the lineage (one definition, so the two cannot drift).
#[derive(Args)]
pub struct BundleArgs {
    /// Why (recorded in the manifest and the audit trail).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Payload chunk size in bytes (default 65536, at most 131072).
    #[arg(long)]
    pub chunk_size: Option<u32>,
    /// Memory the model needs on a device, bytes (as measured on the target; default: the
    /// peak measured here). Devices refuse a model set over their memory budget.
    #[arg(long)]
    pub memory_bytes: Option<u64>,
    /// Source commit of the training code.
    #[arg(long)]
    pub source_commit: Option<String>,
    /// Training dataset id.
    #[arg(long)]
    pub dataset_id: Option<String>,
    /// Training dataset SHA-256.
    #[arg(long)]
    pub dataset_sha256: Option<String>,
}
