//! `outpost-bridge`: argument parsing over the bridge library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use outpost_bridge::cli::{self, CliError, Local, actor, output, pairs, table};
use outpost_bridge::fleet::{self, StrategySpec};
use outpost_bridge::packaging::{self, PackInput};
use outpost_bridge::registry::{self, ModelFilter, RegisterRequest};
use outpost_bridge::server::{BrokerChoice, ServeConfig};

#[derive(Parser)]
#[command(
    name = "outpost-bridge",
    version,
    about = "Outpost cloud bridge: registry, packaging, rollout, ingest"
)]
struct Cli {
    /// Data directory (database, bundles, keys).
    #[arg(long, global = true, default_value = "./outpost-data")]
    data_dir: PathBuf,
    /// Who is acting (audit trail); default $USER.
    #[arg(long, global = true)]
    actor: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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
    Audit {
        /// Verify the hash chain and every stored checkpoint; exit 1 if it was tampered
        /// with.
        #[arg(long)]
        verify: bool,
        /// With --verify: also check this copy of a checkpoint (the checkpoint JSON, or the
        /// `audit_checkpoint` event a webhook received) against the chain (repeatable).
        #[arg(long = "checkpoint", value_name = "FILE", requires = "verify")]
        checkpoints: Vec<PathBuf>,
        /// With --verify: trust the *.pub keys in DIR for checkpoint signatures (default:
        /// the bridge's own keys in DATA_DIR/keys).
        #[arg(long, value_name = "DIR", requires = "verify")]
        trust: Option<PathBuf>,
        /// Newest N entries.
        #[arg(long, default_value_t = 50)]
        limit: u64,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
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
enum BrokerConfigCmd {
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
struct ServeArgs {
    /// Embedded broker listen address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt_listen: SocketAddr,
    /// Use an external broker instead (mqtt://host:port).
    #[arg(long)]
    broker: Option<String>,
    /// Username for the external broker.
    #[arg(long)]
    broker_user: Option<String>,
    /// File holding the external broker password.
    #[arg(long)]
    broker_password_file: Option<PathBuf>,
    /// Let devices connect to the embedded broker without credentials.
    #[arg(long)]
    no_broker_auth: bool,
    /// Accept device messages that are not sealed with a device key (only for agents
    /// that predate device keys; sealed messages are still verified).
    #[arg(long)]
    no_device_auth: bool,
    /// Embedded broker: mutual-TLS listener (client certificates from the bridge's CA).
    #[arg(long)]
    mqtt_tls_listen: Option<SocketAddr>,
    /// Embedded broker: extra TLS server certificate name (repeatable).
    #[arg(long = "tls-name")]
    tls_names: Vec<String>,
    /// Embedded broker: largest MQTT packet in bytes (AWS IoT Core: 131072).
    #[arg(long, default_value_t = 131_072)]
    max_packet_bytes: usize,
    /// Embedded broker: most connections at once.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// HTTP API listen address ("" disables).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: String,
    /// HTTP API: most connections at once (over it, the longest-waiting idle one gives
    /// way, or the new one is closed).
    #[arg(long, default_value_t = outpost_net::HttpLimits::default().max_connections)]
    http_max_connections: usize,
    /// POST events to this URL (repeatable).
    #[arg(long = "webhook")]
    webhooks: Vec<String>,
    /// Broker URL written into provisioned devices' configs.
    #[arg(long)]
    device_broker_url: Option<String>,
    /// Chunks per second per device.
    #[arg(long, default_value_t = 200.0)]
    chunk_rate: f64,
    /// Sign and publish an audit checkpoint at most every N seconds (when the log grew).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    audit_checkpoint_secs: u64,
    /// Sign with this private key file (kept outside the data directory); it must be the
    /// active key (`keys show`).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

#[derive(Subcommand)]
enum KeysCmd {
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
enum BundleCmd {
    /// Validate a model with tract, run its self-test, and write a signed bundle.
    Pack(Box<PackArgs>),
}

#[derive(Args)]
struct PackArgs {
    /// ONNX model file.
    #[arg(long)]
    model: PathBuf,
    /// Spec file (TOML): feature names, normalisation, task, self-tests (optional).
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Private signing key file (default: the data directory's active key).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Output bundle file.
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
    /// Model name (default: the spec's [model] name).
    #[arg(long)]
    name: Option<String>,
    /// Model version (default: the spec's, else 1).
    #[arg(long)]
    version: Option<u32>,
    /// Payload chunk size in bytes (default 65536, at most 131072).
    #[arg(long)]
    chunk_size: Option<u32>,
    /// Memory the model needs on a device, bytes (as measured on the target; default: the
    /// peak measured here). Devices refuse a model set over their memory budget.
    #[arg(long)]
    memory_bytes: Option<u64>,
    /// Who is packing (default: $USER).
    #[arg(long)]
    created_by: Option<String>,
    /// Why.
    #[arg(long, default_value = "")]
    reason: String,
    /// Source commit of the training code.
    #[arg(long)]
    source_commit: Option<String>,
    /// Training dataset id.
    #[arg(long)]
    dataset_id: Option<String>,
    /// Training dataset SHA-256.
    #[arg(long)]
    dataset_sha256: Option<String>,
    /// Tag k=v (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ModelCmd {
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
struct RegisterArgs {
    /// The ONNX file, then any extra files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Model name.
    #[arg(long)]
    name: String,
    /// Spec file: feature names, normalisation, task, self-tests (default: spec.toml next
    /// to the model, if any; none is needed).
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Tag k=v (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Why.
    #[arg(long, default_value = "")]
    reason: String,
    /// Training-data sample (CSV) for the baseline profile.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Chunk size.
    #[arg(long)]
    chunk_size: Option<u32>,
    /// Memory the model needs on a device, bytes (as measured on the target; default: the
    /// peak measured here). Devices refuse a model set over their memory budget.
    #[arg(long)]
    memory_bytes: Option<u64>,
    /// Source commit.
    #[arg(long)]
    source_commit: Option<String>,
    /// Dataset id.
    #[arg(long)]
    dataset_id: Option<String>,
    /// Dataset SHA-256.
    #[arg(long)]
    dataset_sha256: Option<String>,
    /// Sign with this private key file (kept outside the data directory); it must be the
    /// active key.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum DeviceCmd {
    /// Provision a device: writes agent.toml, password (0600), trust/ and a client
    /// certificate (client.pem, client.key 0600, ca.pem) into --out.
    Add {
        /// Device id.
        id: String,
        /// Tag k=v (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Hardware target.
        #[arg(long, default_value = "aarch64-unknown-linux-gnu")]
        target: String,
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
enum DeployCmd {
    /// Create a deployment (the running bridge rolls it out).
    Create(Box<CreateArgs>),
    /// List / search deployments.
    List {
        /// Model name.
        #[arg(long)]
        model: Option<String>,
        /// Version.
        #[arg(long)]
        version: Option<u32>,
        /// State (running, paused, succeeded, aborted, rolling_back, rolled_back).
        #[arg(long)]
        state: Option<String>,
        /// Containing this device.
        #[arg(long)]
        device: Option<String>,
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
struct RollbackArgs {
    /// Deployment id.
    id: String,
    /// Send every device to this version of the model instead of its previous one.
    #[arg(long)]
    to: Option<u32>,
    /// Why.
    #[arg(long, default_value = "")]
    reason: String,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ActionArgs {
    /// Deployment id.
    id: String,
    /// Why.
    #[arg(long, default_value = "")]
    reason: String,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct AbortArgs {
    #[command(flatten)]
    action: ActionArgs,
    /// Send switched devices back to their previous model instead of pinning them.
    #[arg(long)]
    rollback: bool,
}

#[derive(Args)]
struct CreateArgs {
    /// Model NAME or NAME:VERSION.
    #[arg(long)]
    model: String,
    /// Device id (repeatable).
    #[arg(long = "device")]
    devices: Vec<String>,
    /// Device tag k=v (repeatable, all must match).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Cumulative wave fractions, e.g. 0,0.1,0.5,1 (first = one canary).
    #[arg(long, value_delimiter = ',')]
    waves: Option<Vec<f64>>,
    /// Per-wave timeout, seconds.
    #[arg(long)]
    timeout_secs: Option<u64>,
    /// Share of a wave that must succeed.
    #[arg(long)]
    success_threshold: Option<f64>,
    /// Share of a wave that may fail.
    #[arg(long)]
    error_threshold: Option<f64>,
    /// rollback | pause.
    #[arg(long)]
    on_trip: Option<String>,
    /// Canary gate: largest error rate.
    #[arg(long)]
    max_error_rate: Option<f64>,
    /// Canary gate: largest p99 latency, µs.
    #[arg(long)]
    max_p99_us: Option<u64>,
    /// Canary gate: largest output shift (0..1).
    #[arg(long)]
    max_output_shift: Option<f64>,
    /// Canary gate: predictions needed.
    #[arg(long)]
    min_samples: Option<u64>,
    /// Canary gate: observation period, seconds.
    #[arg(long)]
    observe_secs: Option<u64>,
    /// Roll out without the canary gates (operator role; needs --reason; audited).
    #[arg(long)]
    skip_gates: bool,
    /// Follow it until it ends or pauses, as `deploy watch` (exit code says how).
    #[arg(long)]
    wait: bool,
    /// Why.
    #[arg(long, default_value = "")]
    reason: String,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ExportCmd {
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
        /// parquet | jsonl.
        #[arg(long, default_value = "parquet")]
        format: String,
        /// Output file ("-" for stdout, jsonl only).
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum DriftCmd {
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
enum TelemetryCmd {
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
enum TokenCmd {
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

fn main() -> ExitCode {
    cli::quiet_on_closed_stdout();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn model_arg(s: &str) -> Result<(String, Option<u32>), CliError> {
    outpost_bridge::export::parse_model(s).map_err(|e| CliError(e.to_string()))
}

fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let who = actor(cli.actor.clone());
    match cli.cmd {
        Cmd::Serve(a) => serve(cli.data_dir, *a),
        Cmd::Keys { cmd } => keys(cli.data_dir, who, cmd),
        Cmd::Bundle {
            cmd: BundleCmd::Pack(a),
        } => pack(cli.data_dir, *a),
        Cmd::Model { cmd } => model(cli.data_dir, who, cmd),
        Cmd::Device { cmd } => device(cli.data_dir, who, cmd),
        Cmd::BrokerConfig {
            cmd:
                BrokerConfigCmd::Mosquitto {
                    out,
                    tls,
                    listen,
                    bridge_listen,
                    tls_names,
                },
        } => {
            use outpost_bridge::broker::external::{self, MosquittoOptions};
            let l = Local::open(&cli.data_dir)?;
            let mut opts = MosquittoOptions::new(tls);
            opts.device_listen = listen.unwrap_or(opts.device_listen);
            opts.bridge_listen = bridge_listen;
            opts.tls_names = tls_names;
            let f = external::write_mosquitto(&l.db.lock(), &cli.data_dir, &out, &opts)?;
            println!(
                "wrote {} ({} devices); run the bridge with --broker mqtt://{} --broker-user outpost-bridge --broker-password-file {}",
                f.config.display(),
                f.devices.len(),
                opts.bridge_listen,
                f.bridge_password_file.display()
            );
            if !f.skipped.is_empty() && !tls {
                eprintln!(
                    "warning: no mosquitto password hash for {} (provisioned before it was stored; re-provision them or use --tls)",
                    f.skipped.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Deploy { cmd } => deploy(cli.data_dir, who, cmd),
        Cmd::Audit {
            verify,
            checkpoints,
            trust,
            limit,
            json,
        } => {
            let l = Local::open(&cli.data_dir)?;
            let c = l.db.lock();
            if verify {
                let trust = match trust {
                    Some(dir) => outpost_protocol::TrustStore::load_dir(&dir)
                        .map_err(|e| CliError::from_err(&e))?,
                    None => outpost_bridge::audit::local_trust(&cli.data_dir)
                        .map_err(|e| CliError::from_err(&e))?,
                };
                let r = l
                    .audit
                    .verify_with_checkpoints(&c, &trust, &checkpoints)
                    .map_err(|e| CliError::from_err(&e))?;
                let mut j = cli::verify_json(&r);
                j["checkpoints"] = r.checkpoints.into();
                output(json, &j, || {
                    if r.problems.is_empty() {
                        let cps = match r.checkpoints {
                            0 => "no checkpoints yet".to_owned(),
                            n => format!("{n} checkpoints match"),
                        };
                        format!("audit trail intact: {} entries verified, {cps}", r.rows)
                    } else {
                        format!(
                            "AUDIT TRAIL TAMPERED ({} entries):\n  {}",
                            r.rows,
                            r.problems.join("\n  ")
                        )
                    }
                });
                return Ok(if r.problems.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
            let rows = l.audit.list(&c, Some(limit))?;
            output(json, &rows, || {
                table(
                    &["ID", "WHEN", "ACTOR", "ACTION", "TARGET", "REASON"],
                    &rows
                        .iter()
                        .map(|r| {
                            vec![
                                r.id.to_string(),
                                outpost_protocol::time::rfc3339(r.at),
                                r.actor.clone(),
                                r.action.clone(),
                                r.target.clone(),
                                r.reason.clone(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )
            });
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Export {
            cmd:
                ExportCmd::Captures {
                    model,
                    since,
                    until,
                    devices,
                    format,
                    out,
                },
        } => {
            use outpost_bridge::export::{CaptureQuery, parse_time, write_jsonl, write_parquet};
            let (model, version) = model_arg(&model)?;
            let now = outpost_bridge::db::now();
            let t = |s: Option<String>| s.map(|v| parse_time(&v, now)).transpose();
            let q = CaptureQuery {
                model,
                version,
                since_ms: t(since)?,
                until_ms: t(until)?,
                devices,
            };
            let l = Local::open(&cli.data_dir)?;
            let sp = cli::spinner("exporting captures");
            let rows = q.rows(&l.db.lock())?;
            match format.as_str() {
                "jsonl" if out.as_os_str() == "-" => {
                    write_jsonl(&rows, &mut std::io::stdout().lock())?
                }
                "jsonl" => {
                    let mut f = std::io::BufWriter::new(std::fs::File::create(&out)?);
                    write_jsonl(&rows, &mut f)?;
                }
                "parquet" => write_parquet(&rows, &out)?,
                other => {
                    return Err(CliError(format!(
                        "format {other:?} is not parquet or jsonl"
                    )));
                }
            }
            sp.finish_and_clear();
            eprintln!("exported {} captures to {}", rows.len(), out.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Drift {
            cmd:
                DriftCmd::Show {
                    model,
                    deployment,
                    group_by,
                    json,
                },
        } => {
            let (model, version) = match model {
                Some(m) => {
                    let (n, v) = model_arg(&m)?;
                    (Some(n), v)
                }
                None => (None, None),
            };
            let l = Local::open(&cli.data_dir)?;
            let f = outpost_bridge::drift::DriftFilter {
                model,
                version,
                deployment,
                group_by,
            };
            let groups = outpost_bridge::drift::fleet(
                &l.db.lock(),
                &f,
                outpost_bridge::db::now_ms(),
                120_000,
            )?;
            output(json, &groups, || {
                if groups.is_empty() {
                    return "no drift reports from devices in the last 2 minutes".to_owned();
                }
                let mut s = table(
                    &[
                        "MODEL", "GROUP", "DEVICES", "DRIFTING", "PSI MAX", "KS MAX", "FEATURES",
                    ],
                    &groups
                        .iter()
                        .map(|g| {
                            vec![
                                format!("{} v{}", g.model, g.version),
                                g.group.clone().unwrap_or_default(),
                                g.devices.to_string(),
                                if g.drifting.is_empty() {
                                    "0".into()
                                } else {
                                    format!("{} ({})", g.drifting.len(), g.drifting.join(","))
                                },
                                format!("{:.2}", g.psi_max),
                                format!("{:.2}", g.ks_max),
                                g.features
                                    .iter()
                                    .take(3)
                                    .map(|(f, n)| format!("{f}:{n}"))
                                    .collect::<Vec<_>>()
                                    .join(" "),
                            ]
                        })
                        .collect::<Vec<_>>(),
                );
                for g in groups.iter().filter(|g| g.export.is_some()) {
                    s += &format!("\nretrain from: {}", g.export.clone().unwrap_or_default());
                }
                s
            });
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Telemetry {
            cmd:
                TelemetryCmd::Show {
                    id,
                    kind,
                    limit,
                    json,
                },
        } => {
            use outpost_bridge::telemetry;
            let l = Local::open(&cli.data_dir)?;
            if let Some(k) = &kind
                && !["inference", "system", "agent"].contains(&k.as_str())
            {
                return Err(CliError(format!(
                    "--kind {k:?} is not inference, system or agent"
                )));
            }
            let c = l.db.lock();
            outpost_bridge::devices::show(&c, &id)?;
            let rows = telemetry::recent(&c, &id, kind.as_deref(), limit.min(10_000))?;
            drop(c);
            output(json, &rows, || {
                table(
                    &["TIME", "KIND", "FIGURES"],
                    &rows
                        .iter()
                        .map(|r| {
                            vec![
                                outpost_protocol::time::rfc3339(r.ts_ms / 1000),
                                r.report.kind().into(),
                                telemetry::summary(&r.report),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )
            });
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Token { cmd } => {
            use outpost_bridge::auth;
            let l = Local::open(&cli.data_dir)?;
            let c = l.db.lock();
            match cmd {
                TokenCmd::Add {
                    name,
                    role,
                    replace,
                } => {
                    let role = role.parse().map_err(CliError)?;
                    println!(
                        "{}",
                        auth::issue_token(&c, &l.audit, &name, role, replace, &who)?
                    );
                }
                TokenCmd::List { json } => {
                    let rows = auth::list_tokens(&c)?;
                    output(json, &rows, || {
                        table(
                            &["NAME", "ROLE", "CREATED"],
                            &rows
                                .iter()
                                .map(|t| {
                                    vec![
                                        t.name.clone(),
                                        t.role.as_str().into(),
                                        outpost_protocol::time::rfc3339(t.created_at),
                                    ]
                                })
                                .collect::<Vec<_>>(),
                        )
                    });
                }
                TokenCmd::Revoke { name } => {
                    auth::revoke_token(&c, &l.audit, &name, &who)?;
                    println!("token {name} revoked");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn serve(data_dir: PathBuf, a: ServeArgs) -> Result<ExitCode, CliError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,rumqttd=warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut cfg = ServeConfig::new(data_dir);
    cfg.broker = match a.broker {
        None => BrokerChoice::Embedded {
            listen: a.mqtt_listen,
            auth: !a.no_broker_auth,
        },
        Some(url) => {
            let rest = url
                .strip_prefix("mqtt://")
                .ok_or_else(|| CliError(format!("--broker {url:?} must be mqtt://host:port")))?;
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| CliError(format!("--broker {url:?} needs a port")))?;
            let port = port
                .trim_end_matches('/')
                .parse()
                .map_err(|_| CliError(format!("bad port in --broker {url:?}")))?;
            let credentials = match (a.broker_user, a.broker_password_file) {
                (Some(u), Some(f)) => Some((u, std::fs::read_to_string(&f)?.trim_end().to_owned())),
                (Some(u), None) => Some((u, String::new())),
                _ => None,
            };
            BrokerChoice::External {
                host: host.into(),
                port,
                credentials,
            }
        }
    };
    cfg.http = if a.http.is_empty() {
        None
    } else {
        Some(
            a.http
                .parse()
                .map_err(|_| CliError(format!("--http {:?} is not host:port", a.http)))?,
        )
    };
    cfg.gate.tls_listen = a.mqtt_tls_listen;
    cfg.gate.tls_names = a.tls_names;
    cfg.gate.max_packet_bytes = a.max_packet_bytes;
    cfg.gate.max_connections = a.max_connections;
    cfg.gate.validate().map_err(|e| CliError(e.to_string()))?;
    cfg.webhooks = a.webhooks;
    cfg.http_limits.max_connections = a.http_max_connections;
    cfg.device_broker_url = a.device_broker_url;
    cfg.chunk_rate = a.chunk_rate;
    cfg.device_auth = !a.no_device_auth;
    cfg.audit_checkpoint = std::time::Duration::from_secs(a.audit_checkpoint_secs);
    cfg.key_file = a.key;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let bridge = outpost_bridge::server::start(cfg).await?;
        eprintln!(
            "outpost-bridge serving: MQTT {}:{}, API {}",
            bridge.broker.0,
            bridge.broker.1,
            bridge
                .http_addr
                .map(|a| format!("http://{a} (see /openapi.json)"))
                .unwrap_or_else(|| "off".into())
        );
        let _ = tokio::signal::ctrl_c().await;
        bridge.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

fn keys(data_dir: PathBuf, who: String, cmd: KeysCmd) -> Result<ExitCode, CliError> {
    use outpost_bridge::keys::ring;
    let l = Local::open(&data_dir)?;
    let show = |l: &Local, json: bool| -> Result<(), CliError> {
        let rows = ring::rows(&l.db.lock())?;
        output(json, &rows, || ring::show_text(&rows));
        Ok(())
    };
    match cmd {
        KeysCmd::Init { out } => {
            let f = ring::init(&l.db.lock(), &l.audit, &data_dir, out.as_deref(), &who)?;
            println!(
                "key {} written: private {} (0600), public {}",
                f.key_id,
                f.private.display(),
                f.public.display()
            );
        }
        KeysCmd::Show { json }
        | KeysCmd::Rotate {
            status: true, json, ..
        } => show(&l, json)?,
        KeysCmd::Rotate { out, json, .. } => {
            let ring_ = l.keyring()?;
            let now = outpost_bridge::db::now();
            let r = ring::rotate(
                &mut l.db.lock(),
                &l.audit,
                &ring_,
                &data_dir,
                out.as_deref(),
                &who,
                now,
            )?;
            output(json, &r, || {
                format!(
                    "next key {} written to {} (0600); its public half goes to {} devices in their next directive. `keys show` counts the devices that trust it; then `keys activate`",
                    r.key_id,
                    r.private.display(),
                    r.devices
                )
            });
        }
        KeysCmd::Activate { force, json } => {
            let ring_ = l.keyring()?;
            let now = outpost_bridge::db::now();
            let a = ring::activate(&mut l.db.lock(), &l.audit, &ring_, force, &who, now)?;
            output(json, &a, || {
                let mut s = format!(
                    "key {} is active; key {} is retired and {} devices are told to stop trusting it",
                    a.active, a.retired, a.devices
                );
                if !a.forced.is_empty() {
                    s += &format!(
                        "\nforced: these devices do not trust the new key and must be re-provisioned: {}",
                        a.forced.join(", ")
                    );
                }
                s
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn pack(data_dir: PathBuf, a: PackArgs) -> Result<ExitCode, CliError> {
    let key = match a.key {
        Some(k) => k,
        None => {
            let l = Local::open(&data_dir)?;
            l.keyring()?;
            outpost_bridge::keys::ring::active_path(&l.db.lock())?
        }
    };
    let input = PackInput {
        name: a.name,
        version: a.version,
        chunk_size: a.chunk_size,
        memory_bytes: a.memory_bytes,
        created_by: a
            .created_by
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "unknown".into()),
        created_at: outpost_bridge::db::now(),
        reason: a.reason,
        source_commit: a.source_commit,
        dataset_id: a.dataset_id,
        dataset_sha256: a.dataset_sha256,
        tags: a.tags,
        extra_files: Vec::new(),
    };
    let p =
        packaging::pack_files(&a.model, a.spec.as_deref(), &key, &a.out, input).map_err(|e| {
            CliError(format!(
                "packing {}: {}",
                a.model.display(),
                outpost_agent::cli::error_chain(&e)
            ))
        })?;
    let m = &p.bundle.manifest;
    let v = serde_json::json!({
        "bundle": a.out, "digest": p.bundle.digest.to_hex(), "model": m.model.name,
        "version": m.model.version, "size": p.bundle.bytes.len(),
        "chunks": m.payload.chunks.len(), "self_test_samples": p.profile.self_test_samples,
        "self_test_max_abs_diff": p.profile.max_abs_diff, "contract": m.contract,
    });
    output(a.json, &v, || {
        format!(
            "packed {} v{} -> {} ({} bytes, {} chunks, digest {}); self-test {}/{} passed",
            m.model.name,
            m.model.version,
            a.out.display(),
            p.bundle.bytes.len(),
            m.payload.chunks.len(),
            p.bundle.digest,
            p.profile.self_test_samples,
            p.profile.self_test_samples
        )
    });
    Ok(ExitCode::SUCCESS)
}

fn model(data_dir: PathBuf, who: String, cmd: ModelCmd) -> Result<ExitCode, CliError> {
    if let ModelCmd::Inspect { file, spec, json } = cmd {
        return inspect(&file, spec.as_deref(), json);
    }
    let l = Local::open(&data_dir)?;
    match cmd {
        ModelCmd::Register(a) => {
            let l = l.with_key(a.key);
            let key = l.key()?;
            let req = RegisterRequest {
                name: a.name,
                files: a.files,
                spec: a.spec,
                tags: a.tags,
                reason: a.reason,
                created_by: who,
                baseline_csv: a.baseline,
                chunk_size: a.chunk_size,
                memory_bytes: a.memory_bytes,
                source_commit: a.source_commit,
                dataset_id: a.dataset_id,
                dataset_sha256: a.dataset_sha256,
            };
            let sp = cli::spinner("validating and profiling the model");
            let r = registry::register(&mut l.db.lock(), &l.audit, l.bundles.as_ref(), &key, req);
            sp.finish_and_clear();
            let (rec, v) = r?;
            let ev = l.events();
            let mref = outpost_protocol::manifest::ModelRef {
                name: rec.name.clone(),
                version: rec.version,
            };
            ev.emit(
                outpost_bridge::events::NewEvent::new(
                    outpost_protocol::wire::EventKind::ModelRegistered,
                    format!("{} v{} registered", rec.name, rec.version),
                )
                .model(mref.clone()),
            );
            ev.emit(
                outpost_bridge::events::NewEvent::new(
                    outpost_protocol::wire::EventKind::BundleBuilt,
                    format!(
                        "bundle {} built for {} v{}",
                        &rec.digest[..12],
                        rec.name,
                        rec.version
                    ),
                )
                .model(mref),
            );
            output(a.json, &rec, || {
                format!(
                    "registered {} v{} (bundle {}, {} bytes, {} chunks); self-test {} samples passed; latency p50 {:.0} µs p99 {:.0} µs; peak memory {}",
                    rec.name,
                    rec.version,
                    &rec.digest[..12],
                    rec.bundle_size,
                    rec.chunks,
                    v.self_test_samples,
                    v.p50_us,
                    v.p99_us,
                    v.peak_memory_bytes
                        .map(|b| format!("{:.1} MB", b as f64 / 1e6))
                        .unwrap_or_else(|| "n/a".into())
                )
            });
        }
        ModelCmd::Inspect { .. } => unreachable!("handled above"),
        ModelCmd::List {
            name,
            tags,
            lineage,
            json,
        } => {
            let f = ModelFilter {
                name,
                tags: pairs(&tags, "tag")?,
                lineage: pairs(&lineage, "lineage")?,
            };
            let rows = registry::list(&l.db.lock(), &f)?;
            output(json, &rows, || {
                table(
                    &[
                        "NAME",
                        "VERSION",
                        "BUNDLE",
                        "TAGS",
                        "P50/P99 µs",
                        "CREATED",
                        "BY",
                    ],
                    &rows.iter().map(cli::model_row).collect::<Vec<_>>(),
                )
            });
        }
        ModelCmd::Show { model, json } => {
            let (n, v) = model_arg(&model)?;
            let r = registry::show(&l.db.lock(), &n, v)?;
            output(json, &r, || {
                serde_json::to_string_pretty(&r).unwrap_or_default()
            });
        }
        ModelCmd::Delete {
            model,
            reason,
            json,
        } => {
            let (n, v) = model_arg(&model)?;
            let v = v.ok_or_else(|| CliError("delete needs NAME:VERSION".into()))?;
            registry::delete(
                &mut l.db.lock(),
                &l.audit,
                l.bundles.as_ref(),
                &n,
                v,
                &who,
                &reason,
            )?;
            output(
                json,
                &serde_json::json!({"deleted": format!("{n}:{v}")}),
                || format!("deleted {n}:{v}"),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect(
    file: &std::path::Path,
    spec: Option<&std::path::Path>,
    json: bool,
) -> Result<ExitCode, CliError> {
    let report = outpost_bridge::inspect::inspect_file(file, spec)
        .map_err(|e| CliError(format!("inspecting {}: {e}", file.display())))?;
    output(json, &report, || outpost_bridge::inspect::render(&report));
    Ok(if report.runs() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn device(data_dir: PathBuf, who: String, cmd: DeviceCmd) -> Result<ExitCode, CliError> {
    let l = Local::open(&data_dir)?;
    match cmd {
        DeviceCmd::Add {
            id,
            tags,
            target,
            out,
            broker_url,
            tls,
            key,
            json,
        } => {
            let l = l.with_key(key);
            let trust = l.signer()?.device_trust();
            let out = out.unwrap_or_else(|| data_dir.join("provisioned").join(&id));
            let ca = outpost_bridge::broker::tls::Ca::load_or_create(&data_dir)
                .map_err(|e| CliError(e.to_string()))?;
            let default_url = if tls {
                "mqtts://127.0.0.1:8883"
            } else {
                "mqtt://127.0.0.1:1883"
            };
            let p = outpost_bridge::devices::add_with(
                &l.db.lock(),
                &l.audit,
                &id,
                &tags,
                &target,
                broker_url.as_deref().unwrap_or(default_url),
                &trust,
                &out,
                &who,
                outpost_bridge::devices::CertOptions {
                    ca: Some(&ca),
                    use_tls: tls,
                },
            )?;
            output(json, &serde_json::json!({"id": p.id, "dir": p.dir}), || {
                format!(
                    "provisioned {}: copy {} to the device (agent.toml, password, trust/, client.pem, client.key, ca.pem)",
                    p.id,
                    p.dir.display()
                )
            });
        }
        DeviceCmd::List { tags, json } => {
            let rows = outpost_bridge::devices::list(&l.db.lock(), &pairs(&tags, "tag")?)?;
            output(json, &rows, || {
                table(
                    &["ID", "ONLINE", "TARGET", "MODELS", "HEALTH", "TAGS"],
                    &rows
                        .iter()
                        .map(|d| {
                            vec![
                                d.id.clone(),
                                d.online.to_string(),
                                d.target.clone(),
                                d.state.as_ref().map(cli::models_cell).unwrap_or_default(),
                                d.state
                                    .as_ref()
                                    .map(|s| format!("{:?}", s.health).to_lowercase())
                                    .unwrap_or_default(),
                                d.tags
                                    .iter()
                                    .map(|(k, v)| format!("{k}={v}"))
                                    .collect::<Vec<_>>()
                                    .join(","),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )
            });
        }
        DeviceCmd::Show { id, json } => {
            use outpost_bridge::telemetry;
            let c = l.db.lock();
            let d = cli::DeviceShow {
                view: outpost_bridge::fleet::DeviceView {
                    device: outpost_bridge::devices::show(&c, &id)?,
                    desired: outpost_bridge::fleet::desired::entries(&c, &id)?,
                },
                telemetry: telemetry::latest(&c, &id)?,
                events: telemetry::recent_events(&c, &id, 10)?,
            };
            drop(c);
            output(json, &d, || cli::device_show_text(&d));
        }
        DeviceCmd::RotateKey { id, out } => {
            let key = outpost_bridge::devices::rotate_key(&l.db.lock(), &l.audit, &id, &out, &who)?;
            println!(
                "added key {key} for {id}: install {} on the device (key_file), restart its agent, then retire the old key",
                out.join("device.key").display()
            );
        }
        DeviceCmd::RetireKey { id, key_id } => {
            outpost_bridge::devices::retire_key(&l.db.lock(), &l.audit, &id, &key_id, &who)?;
            println!("retired key {key_id} of {id}");
        }
        DeviceCmd::Keys { id, json } => {
            outpost_bridge::devices::show(&l.db.lock(), &id)?;
            let keys = outpost_bridge::device_auth::list_keys(&l.db.lock(), &id)
                .map_err(|e| CliError(e.to_string()))?;
            output(json, &keys, || {
                table(
                    &["KEY", "ADDED", "RETIRED"],
                    &keys
                        .iter()
                        .map(|(k, a, r)| {
                            vec![
                                k.clone(),
                                outpost_protocol::time::rfc3339(*a),
                                r.map(outpost_protocol::time::rfc3339)
                                    .unwrap_or_else(|| "active".into()),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `deploy watch`: progress on stderr (a bar on a terminal, a line per change otherwise),
/// the final record on stdout, the ending as the exit code.
fn follow(
    f: &fleet::FleetHandle,
    id: &str,
    json: bool,
    show: &dyn Fn(&fleet::DeploymentRecord, bool),
) -> Result<ExitCode, CliError> {
    use outpost_bridge::watch::{Progress, watch};
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut last = String::new();
    let (d, ending) = watch(f, id, std::time::Duration::from_millis(500), |d| {
        let p = Progress::of(d);
        let line = p.line();
        if tty {
            bar.set_length(p.devices as u64);
            bar.set_position(p.succeeded as u64);
            bar.set_message(line);
        } else if line != last {
            eprintln!("{id} {line}");
            last = line;
        }
    })?;
    bar.finish_and_clear();
    show(&d, json);
    Ok(ExitCode::from(ending as u8))
}

fn deploy(data_dir: PathBuf, who: String, cmd: DeployCmd) -> Result<ExitCode, CliError> {
    use fleet::machine::Command;
    let l = Local::open(&data_dir)?;
    let f = l.fleet()?;
    let show = |d: &fleet::DeploymentRecord, json: bool| {
        output(json, d, || {
            let mut s = table(
                &["ID", "MODEL", "STATE", "WAVE", "DONE", "CREATED"],
                &[cli::deployment_row(d)],
            );
            if let fleet::machine::State::Paused { reason }
            | fleet::machine::State::RollingBack { reason }
            | fleet::machine::State::RolledBack { reason }
            | fleet::machine::State::Aborted { reason } = &d.detail
            {
                s += &format!("\nreason: {reason}");
            }
            s
        })
    };
    match cmd {
        DeployCmd::Create(a) => {
            let (model, version) = model_arg(&a.model)?;
            let mut spec = StrategySpec::default();
            if let Some(w) = a.waves {
                spec.waves = w;
            }
            spec.timeout_secs = a.timeout_secs.unwrap_or(spec.timeout_secs);
            spec.success_threshold = a.success_threshold.unwrap_or(spec.success_threshold);
            spec.error_threshold = a.error_threshold.unwrap_or(spec.error_threshold);
            if let Some(t) = a.on_trip {
                spec.on_trip = serde_json::from_value(serde_json::json!(t))
                    .map_err(|_| CliError(format!("--on-trip {t:?} is not rollback or pause")))?;
            }
            spec.gates.max_error_rate = a.max_error_rate.or(spec.gates.max_error_rate);
            spec.gates.max_p99_us = a.max_p99_us.or(spec.gates.max_p99_us);
            spec.gates.max_output_shift = a.max_output_shift.or(spec.gates.max_output_shift);
            spec.gates.min_samples = a.min_samples.unwrap_or(spec.gates.min_samples);
            spec.gates.observe_secs = a.observe_secs.unwrap_or(spec.gates.observe_secs);
            let d = f.create(fleet::CreateDeployment {
                model,
                version,
                selector: fleet::Selector {
                    ids: a.devices,
                    tags: pairs(&a.tags, "tag")?,
                },
                strategy: spec.build()?,
                actor: who,
                reason: a.reason,
                skip_gates: a.skip_gates,
            })?;
            if a.wait {
                return follow(&f, &d.id, a.json, &show);
            }
            show(&d, a.json);
        }
        DeployCmd::List {
            model,
            version,
            state,
            device,
            json,
        } => {
            let rows = f.list(&fleet::DeploymentFilter {
                model,
                version,
                state,
                device,
            })?;
            output(json, &rows, || {
                table(
                    &["ID", "MODEL", "STATE", "WAVE", "DONE", "CREATED"],
                    &rows.iter().map(cli::deployment_row).collect::<Vec<_>>(),
                )
            });
        }
        DeployCmd::Show { id, json } => show(&f.show(&id)?, json),
        DeployCmd::Watch { id, json } => return follow(&f, &id, json, &show),
        DeployCmd::Pause(a) => show(&f.command(&a.id, Command::Pause(a.reason), &who)?, a.json),
        DeployCmd::Resume(a) => show(&f.command(&a.id, Command::Resume, &who)?, a.json),
        DeployCmd::Abort(AbortArgs {
            action: a,
            rollback,
        }) => {
            let cmd = if rollback {
                Command::Rollback(a.reason)
            } else {
                Command::Abort(a.reason)
            };
            show(&f.command(&a.id, cmd, &who)?, a.json)
        }
        DeployCmd::Rollback(a) => show(
            &f.rollback(fleet::RollbackRequest {
                id: a.id,
                to: a.to,
                actor: who,
                reason: a.reason,
            })?,
            a.json,
        ),
        DeployCmd::Remove {
            model,
            devices,
            tags,
            reason,
            json,
        } => {
            let r = f.remove_model(fleet::RemoveModel {
                model: model.clone(),
                selector: fleet::Selector {
                    ids: devices,
                    tags: pairs(&tags, "tag")?,
                },
                actor: who,
                reason,
            })?;
            output(json, &r, || {
                let mut s = format!(
                    "{model} removed from {} device(s): {}",
                    r.devices.len(),
                    r.devices.join(", ")
                );
                if !r.untouched.is_empty() {
                    s += &format!("\nnot in the desired set of: {}", r.untouched.join(", "));
                }
                s
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
