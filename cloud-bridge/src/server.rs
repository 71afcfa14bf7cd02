//! `outpost-bridge serve`: everything the cloud side runs, started together and stopped
//! with one signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use outpost_protocol::SigningKey;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::api::{self, ApiState};
use crate::broker::{self, Authenticator, BrokerError, GateConfig, GateStats, Identity};
use crate::db::{Db, DbError};
use crate::events::{EventBus, MqttOut};
use crate::ingest::{self, IngestStats};
use crate::mqtt::{self, Router};
use crate::ops::Ops;
use crate::serving::BundleServer;

/// Which broker to use.
#[derive(Debug, Clone)]
pub enum BrokerChoice {
    /// Run rumqttd in-process on this address (port 0: any free port).
    Embedded {
        /// Listen address.
        listen: SocketAddr,
        /// Require device credentials.
        auth: bool,
    },
    /// Connect to a standard broker (mosquitto, EMQX, …).
    External {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// Username/password for the bridge.
        credentials: Option<(String, String)>,
    },
}

/// Settings of `serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Broker.
    pub broker: BrokerChoice,
    /// HTTP API listener (None: no API).
    pub http: Option<SocketAddr>,
    /// The HTTP API's connection cap and timeouts.
    pub http_limits: outpost_net::HttpLimits,
    /// Webhook URLs for events.
    pub webhooks: Vec<String>,
    /// Broker URL written into provisioned devices' configs (default: derived).
    pub device_broker_url: Option<String>,
    /// Chunks per second per device.
    pub chunk_rate: f64,
    /// Bundle cache size, bytes.
    pub cache_bytes: usize,
    /// Rollout engine tick.
    pub fleet_tick: Duration,
    /// The embedded broker's gate (limits, optional TLS listener).
    pub gate: GateConfig,
    /// Refuse device messages that are not sealed with one of the device's keys (default
    /// on; off only for a fleet of agents that predate device keys).
    pub device_auth: bool,
    /// Most often the audit chain is checkpointed (only when it has grown).
    pub audit_checkpoint: Duration,
    /// Sign with this private key file (`--key`, kept outside the data directory) instead
    /// of the one recorded in the key ring; it must be the active key.
    pub key_file: Option<PathBuf>,
}

impl ServeConfig {
    /// Defaults: embedded broker on 127.0.0.1:1883 with auth, API on 127.0.0.1:8080.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            broker: BrokerChoice::Embedded {
                listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
                auth: true,
            },
            http: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            http_limits: outpost_net::HttpLimits::default(),
            webhooks: Vec::new(),
            device_broker_url: None,
            chunk_rate: 200.0,
            cache_bytes: 256 << 20,
            fleet_tick: Duration::from_millis(250),
            gate: GateConfig::default(),
            device_auth: true,
            audit_checkpoint: Duration::from_secs(60),
            key_file: None,
        }
    }
}

/// Why `serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Database.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Signing key.
    #[error(transparent)]
    Key(#[from] crate::keys::KeysError),
    /// The operations context.
    #[error(transparent)]
    Ops(#[from] crate::ops::OpsError),
    /// Broker.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The HTTP API's limits.
    #[error("HTTP API: {0}")]
    HttpLimits(#[from] outpost_net::LimitsError),
    /// A URL over its cap.
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    /// Filesystem.
    #[error("{what}: {source}")]
    Io {
        /// What.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// What a running `serve` tells commands on the same data directory, in
/// `DATA_DIR/serve.json` (`device add --local` points new local agents at its broker).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunInfo {
    /// The serving process.
    pub pid: u32,
    /// The broker devices connect to, `host:port`.
    pub mqtt: String,
    /// The HTTP API, `host:port`.
    pub api: Option<String>,
}

/// File name of [`RunInfo`] in the data directory.
pub const RUN_INFO_FILE: &str = "serve.json";

impl RunInfo {
    /// The running bridge's record, if one is running on `data_dir` (a record left by a
    /// process that is gone is ignored).
    pub fn read(data_dir: &std::path::Path) -> Option<Self> {
        let text = std::fs::read(data_dir.join(RUN_INFO_FILE)).ok()?;
        if text.len() > 4096 {
            return None;
        }
        let info: Self = serde_json::from_slice(&text).ok()?;
        std::path::Path::new(&format!("/proc/{}", info.pid))
            .exists()
            .then_some(info)
    }
}

/// The data directory's active signing key, created on first use (see
/// [`crate::keys::Keyring::open`]).
///
/// # Errors
/// The database, or [`crate::keys::KeysError`] (a key file missing, open to others, not a
/// key).
pub fn signing_key(data_dir: &std::path::Path) -> Result<Arc<SigningKey>, ServeError> {
    let db = Db::open(data_dir)?;
    let c = db.lock();
    let ring = crate::keys::Keyring::open(&c, &crate::audit::Audit::new(data_dir), data_dir, None)?;
    Ok(ring.active(&c)?)
}

/// A running bridge: its operations context (through `Deref`, so `bridge.db` is
/// `bridge.ops.db`) and what only a running bridge has.
pub struct Bridge {
    /// The operations layer every face shares.
    pub ops: Ops,
    /// Bundle server.
    pub server: Arc<BundleServer>,
    /// Ingest counters.
    pub ingest: Arc<IngestStats>,
    /// The signing key active when the bridge started (`keyring` has the current one).
    pub key: Arc<SigningKey>,
    /// The key ring: what directives, bundles and checkpoints are signed with now.
    pub keyring: crate::keys::Keyring,
    /// Broker address (host, port).
    pub broker: (String, u16),
    /// The embedded broker's TLS listener, if any.
    pub broker_tls: Option<SocketAddr>,
    /// The embedded broker's gate counters (None with an external broker).
    pub gate: Option<Arc<GateStats>>,
    /// Where the API listens.
    pub http_addr: Option<SocketAddr>,
    /// The API listener's connection counters.
    pub http_conns: Arc<outpost_net::ConnStats>,
    /// Whether the bridge's MQTT client is connected.
    pub connected: watch::Receiver<bool>,
    /// Outbound MQTT queue.
    pub out: MqttOut,
    /// The rollout engine.
    pub fleet: crate::fleet::FleetHandle,
    /// Device authentication (counters).
    pub device_auth: Arc<crate::device_auth::DeviceAuth>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::ops::Deref for Bridge {
    type Target = Ops;
    fn deref(&self) -> &Ops {
        &self.ops
    }
}

impl Bridge {
    /// Stops everything (ingest drains what is queued), then checkpoints the audit trail
    /// once more so the last checkpoint covers whatever the drained tasks appended (its
    /// webhook copies wait in the outbox for the next start).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let (ops, keyring, key) = (self.ops.clone(), self.keyring.clone(), self.key.clone());
        let done = ops
            .db
            .run(move |c| {
                let key = keyring.active(c).unwrap_or(key);
                ops.audit.checkpoint(c, &key, &ops.events)
            })
            .await;
        if let Err(e) = done
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            tracing::error!(error = %e, "cannot checkpoint the audit trail at shutdown");
        }
    }
}

/// Starts the bridge.
pub async fn start(cfg: ServeConfig) -> Result<Bridge, ServeError> {
    cfg.http_limits.validate()?;
    for url in cfg.webhooks.iter().chain(&cfg.device_broker_url) {
        crate::input::url("URL", url)?;
    }
    let db = Db::open(&cfg.data_dir)?;
    // Registration checks chunk sizes against the limit the bridge serves with.
    let max_packet = cfg.gate.max_packet_bytes;
    db.run(move |c| crate::db::set_max_packet_bytes(c, max_packet))
        .await?
        .map_err(|e| ServeError::Db(e.into()))?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (out_tx, out_rx) = MqttOut::channel();
    let mut gate_tasks = Vec::new();

    let secret = crate::devices::random_secret();
    let mut gate_stats = None;
    let mut broker_tls = None;
    let (conn, device_url) = match &cfg.broker {
        BrokerChoice::Embedded { listen, auth } => {
            let check: Option<Arc<dyn Authenticator>> = auth.then(|| {
                Arc::new(RegistryAuth {
                    db: db.clone(),
                    bridge_secret: secret.clone(),
                }) as Arc<dyn Authenticator>
            });
            let ca = match cfg.gate.tls_listen {
                Some(_) => Some(
                    crate::broker::tls::Ca::load_or_create(&cfg.data_dir)
                        .map_err(BrokerError::from)?,
                ),
                None => None,
            };
            let b =
                broker::start(*listen, &cfg.gate, check, ca.as_ref(), shutdown_rx.clone()).await?;
            tracing::info!(addr = %b.addr, tls = ?b.tls_addr, auth, "embedded MQTT broker listening");
            gate_stats = Some(b.stats.clone());
            broker_tls = b.tls_addr;
            gate_tasks = b.tasks;
            let creds = auth.then(|| (broker::BRIDGE_ID.to_owned(), secret.clone()));
            (
                mqtt::Connection {
                    host: b.addr.ip().to_string(),
                    port: b.addr.port(),
                    credentials: creds,
                    max_packet_bytes: cfg.gate.max_packet_bytes,
                },
                format!("mqtt://{}", b.addr),
            )
        }
        BrokerChoice::External {
            host,
            port,
            credentials,
        } => (
            mqtt::Connection {
                host: host.clone(),
                port: *port,
                credentials: credentials.clone(),
                max_packet_bytes: cfg.gate.max_packet_bytes,
            },
            format!("mqtt://{host}:{port}"),
        ),
    };

    let events = EventBus::new(db.clone(), Some(out_tx.clone()));
    let state_changed = Arc::new(Notify::new());
    let ops = Ops::new(
        db.clone(),
        &cfg.data_dir,
        events.clone(),
        out_tx.clone(),
        state_changed.clone(),
    )?
    .with_key_file(cfg.key_file.clone());
    let keyring = ops.keyring()?;
    let key = ops.key()?;
    let (audit, bundles) = (ops.audit.clone(), ops.bundles.clone());
    for url in &cfg.webhooks {
        events
            .add_webhook(url)
            .map_err(|e| ServeError::Db(e.into()))?;
    }
    let server = Arc::new(BundleServer::new(
        bundles.clone(),
        cfg.cache_bytes,
        cfg.chunk_rate,
        32.0,
    ));
    let ingest_stats = Arc::new(IngestStats::default());
    let (ingest_tx, ingest_rx) = mpsc::channel(4096);
    let fleet = ops.fleet()?;

    let mut tasks = gate_tasks;
    tasks.push(tokio::spawn(ingest::run(
        db.clone(),
        ingest_rx,
        out_tx.clone(),
        events.clone(),
        ingest_stats.clone(),
        shutdown_rx.clone(),
    )));
    let webhook_secret = crate::webhook_sign::WebhookSecret::load_or_create(&cfg.data_dir)
        .map_err(|e| ServeError::Io {
            what: "webhook secret".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
    tasks.push(tokio::spawn(crate::events::run_webhooks(
        db.clone(),
        webhook_secret,
        shutdown_rx.clone(),
    )));
    let republish = fleet.clone();
    let device_auth = Arc::new(crate::device_auth::DeviceAuth::new(
        db.clone(),
        cfg.device_auth,
    ));
    let mqtt_stats = Arc::new(mqtt::MqttStats::default());
    let router = Router {
        stats: mqtt_stats.clone(),
        auth: device_auth.clone(),
        db: db.clone(),
        audit: audit.clone(),
        events: events.clone(),
        ingest: ingest_tx,
        server: server.clone(),
        out: out_tx.clone(),
        state_changed,
        on_connect: Arc::new(move |_out| {
            // Database work: off the MQTT task.
            let f = republish.clone();
            tokio::task::spawn_blocking(move || f.republish_directives());
        }),
        max_packet_bytes: cfg.gate.max_packet_bytes,
    };
    let (connected, mqtt_task) = mqtt::start(&conn, router, out_rx, shutdown_rx.clone());
    tasks.push(tokio::spawn(mqtt_task));
    tasks.push(tokio::spawn(
        fleet.clone().run(cfg.fleet_tick, shutdown_rx.clone()),
    ));
    tasks.push(tokio::spawn(crate::audit::run_checkpoints(
        db.clone(),
        audit.clone(),
        keyring.clone(),
        events.clone(),
        cfg.audit_checkpoint,
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(drift_alerts(
        db.clone(),
        events.clone(),
        shutdown_rx.clone(),
    )));

    let mut http_addr = None;
    let http_conns = Arc::new(outpost_net::ConnStats::default());
    if let Some(addr) = cfg.http {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Io {
                what: format!("HTTP API listen address {addr}"),
                source,
            })?;
        http_addr = l.local_addr().ok();
        let st = ApiState {
            ops: ops.clone(),
            device_broker_url: cfg.device_broker_url.clone().unwrap_or(device_url),
            fleet: fleet.clone(),
            counters: Some((server.clone(), ingest_stats.clone())),
            gate: gate_stats.clone(),
            http: Some(http_conns.clone()),
            metrics: Some(Arc::new(crate::metrics::BridgeMetrics::new(
                crate::metrics::Sources {
                    db: db.clone(),
                    serving: server.clone(),
                    ingest: ingest_stats.clone(),
                    gate: gate_stats.clone(),
                    device_auth: device_auth.clone(),
                    mqtt: mqtt_stats.clone(),
                    out: out_tx.clone(),
                    connected: connected.clone(),
                    http: http_conns.clone(),
                },
            ))),
            live: Some(crate::ui::LiveHub::new(db.clone(), shutdown_rx.clone())),
        };
        tasks.push(tokio::spawn(api::serve(
            l,
            st,
            cfg.http_limits,
            http_conns.clone(),
            shutdown_rx.clone(),
        )));
    }
    let info = RunInfo {
        pid: std::process::id(),
        mqtt: format!("{}:{}", conn.host, conn.port),
        api: http_addr.map(|a| a.to_string()),
    };
    if let Err(e) = crate::fsutil::write_atomic(
        &cfg.data_dir.join(RUN_INFO_FILE),
        &serde_json::to_vec_pretty(&info).unwrap_or_default(),
    ) {
        tracing::warn!(error = %e, "cannot write {RUN_INFO_FILE}");
    }
    Ok(Bridge {
        ops,
        server,
        ingest: ingest_stats,
        key,
        keyring,
        broker: (conn.host, conn.port),
        broker_tls,
        gate: gate_stats,
        http_addr,
        http_conns,
        connected,
        out: out_tx,
        fleet,
        device_auth,
        shutdown,
        tasks,
    })
}

/// Who may connect to the embedded broker: provisioned devices (password, or a client
/// certificate from the bridge's CA on the TLS listener) and the bridge itself (a secret
/// made at start-up).
pub struct RegistryAuth {
    db: Db,
    bridge_secret: String,
}

impl RegistryAuth {
    /// Devices from `db`; the bridge (user [`broker::BRIDGE_ID`]) with `bridge_secret`.
    pub fn new(db: Db, bridge_secret: String) -> Self {
        Self { db, bridge_secret }
    }
}

impl Authenticator for RegistryAuth {
    fn authenticate(
        &self,
        _client_id: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
        cert_identity: Option<&str>,
    ) -> Option<Identity> {
        if let Some(cn) = cert_identity {
            // The certificate is the credential; a username, if sent, must agree with it.
            if username.is_some_and(|u| u != cn) {
                return None;
            }
            return crate::devices::is_provisioned(&self.db.lock(), cn)
                .then(|| Identity::Device(cn.to_owned()));
        }
        let user = username?;
        let pass = std::str::from_utf8(password?).ok()?;
        if user == broker::BRIDGE_ID {
            return broker::ct_eq(pass.as_bytes(), self.bridge_secret.as_bytes())
                .then_some(Identity::Bridge);
        }
        crate::devices::check_credentials(&self.db.lock(), user, pass)
            .then(|| Identity::Device(user.to_owned()))
    }
}

/// Checks fleet drift every two seconds and raises alerts (see [`crate::drift::Alerter`]).
async fn drift_alerts(db: Db, events: EventBus, mut shutdown: watch::Receiver<bool>) {
    let mut alerter = crate::drift::Alerter::default();
    let mut t = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = t.tick() => {}
        }
        let ev = events.clone();
        let checked = db
            .run(move |c| {
                let r = alerter.check(c, &ev, crate::db::now_ms());
                (alerter, r)
            })
            .await;
        match checked {
            Ok((a, r)) => {
                alerter = a;
                if let Err(e) = r {
                    tracing::error!(error = %e, "fleet drift check failed");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "fleet drift check failed");
                break;
            }
        }
    }
}
