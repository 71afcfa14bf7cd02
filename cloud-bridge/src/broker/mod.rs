//! The embedded MQTT broker, so `outpost-bridge serve` needs nothing else: rumqttd
//! behind an authorising **gate**.
//!
//! rumqttd authenticates but has no per-topic authorization, so a device holding valid
//! credentials could publish on other devices' topics, subscribe to `#`, or take another
//! device's client id. The gate is the public listener; rumqttd listens only on a
//! loopback port the gate picks and accepts only the gate's per-process secret.
//!
//! ```text
//! device ──TCP/TLS──▶ gate (CONNECT: authenticate, client id, will; every packet: ACL,
//!                      size cap) ──loopback, internal secret──▶ rumqttd
//! device ◀────────── gate (size cap only) ◀────────────────────── rumqttd
//! ```
//!
//! - [`session`]: the per-connection decisions, sans IO; [`acl`]: the topic rules (pure);
//!   [`frame`]: packet framing with the size cap; [`gate`]: the IO loops and counters;
//!   [`tls`]: the device CA and the TLS listener; [`external`]: configs for mosquitto;
//!   `inner`: the rumqttd instance.
//! - With `--no-broker-auth` ([`Mode::Open`]) the gate admits anyone and checks nothing
//!   but the hardening limits (connect timeout, connection cap, packet size).
//!
//! See `docs/brokers.md` for the same rules on mosquitto, EMQX and HiveMQ.

pub mod acl;
pub mod external;
pub mod frame;
pub mod gate;
mod inner;
pub mod session;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

pub use acl::Identity;
pub use gate::{GateCounters, GateStats};
pub(crate) use inner::ct_eq;
pub use session::Mode;

/// The bridge's own client id and username; no device may use it.
pub const BRIDGE_ID: &str = "outpost-bridge";

/// Decides who a connecting client is. The server implements it over the device
/// registry; the gate calls it once per CONNECT (on a blocking thread).
pub trait Authenticator: Send + Sync + 'static {
    /// The identity proven by these credentials, or `None`. `cert_identity` is the CN of
    /// a verified client certificate (TLS listener only).
    fn authenticate(
        &self,
        client_id: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
        cert_identity: Option<&str>,
    ) -> Option<Identity>;
}

/// Settings of the embedded broker's gate (the `serve` flags map onto these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateConfig {
    /// Connections open at once (further ones are closed at accept).
    pub max_connections: usize,
    /// Largest MQTT packet, whole, in either direction. The default (131072) matches AWS
    /// IoT Core's 128 KB limit, so a fleet that works here works behind it too.
    pub max_packet_bytes: usize,
    /// Time for the TLS handshake and the CONNECT.
    pub connect_timeout: Duration,
    /// Optional mutual-TLS listener.
    pub tls_listen: Option<SocketAddr>,
    /// Extra names (DNS or IP) for the TLS server certificate, besides 127.0.0.1 and
    /// localhost.
    pub tls_names: Vec<String>,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_packet_bytes: 131_072,
            connect_timeout: Duration::from_secs(10),
            tls_listen: None,
            tls_names: Vec::new(),
        }
    }
}

impl GateConfig {
    /// Checks the values once, at start-up.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let bad = |m: &str| Err(BrokerError::Config(m.into()));
        if self.max_connections == 0 {
            return bad("max_connections must be at least 1");
        }
        // 1 KiB: below that even a CONNECT with a will does not fit; 256 MiB is MQTT's own
        // maximum.
        if !(1024..=268_435_455).contains(&self.max_packet_bytes) {
            return bad("max_packet_bytes must be 1024..=268435455");
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout must be positive");
        }
        Ok(())
    }
}

/// Broker start errors.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The address cannot be bound.
    #[error("MQTT listen address {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The broker did not come up.
    #[error("embedded broker did not start on {0}")]
    NotStarted(SocketAddr),
    /// A setting is out of range.
    #[error("embedded broker configuration: {0}")]
    Config(String),
    /// The TLS listener could not be set up.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// A running embedded broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    /// The gate's plain listener.
    pub addr: SocketAddr,
    /// The gate's TLS listener, if configured.
    pub tls_addr: Option<SocketAddr>,
    /// Gate counters.
    pub stats: Arc<GateStats>,
    /// The accept loops (they end when `shutdown` changes).
    pub tasks: Vec<JoinHandle<()>>,
}

/// Starts rumqttd on loopback and the gate on `listen` (port 0 picks a free port) and,
/// if configured, on the TLS address (`ca` is then required). `auth: None` runs an
/// open broker ([`Mode::Open`]).
pub async fn start(
    listen: SocketAddr,
    cfg: &GateConfig,
    auth: Option<Arc<dyn Authenticator>>,
    ca: Option<&tls::Ca>,
    shutdown: watch::Receiver<bool>,
) -> Result<EmbeddedBroker, BrokerError> {
    cfg.validate()?;
    let secret: Arc<str> = crate::devices::random_secret().into();
    let upstream = inner::start(secret.clone(), cfg.max_connections)?;
    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| BrokerError::Bind { addr, source })
    };
    let plain = bind(listen).await?;
    let tls = match cfg.tls_listen {
        None => None,
        Some(addr) => {
            let ca = ca.ok_or_else(|| {
                BrokerError::Config("a TLS listener needs the bridge's CA".into())
            })?;
            let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&cfg.tls_names)?);
            Some((bind(addr).await?, acceptor))
        }
    };
    let gate = Arc::new(gate::Gate {
        mode: if auth.is_some() {
            Mode::Enforce
        } else {
            Mode::Open
        },
        auth,
        upstream,
        secret,
        max_packet: cfg.max_packet_bytes,
        connect_timeout: cfg.connect_timeout,
        slots: Arc::new(Semaphore::new(cfg.max_connections)),
        stats: Arc::default(),
        saturated: AtomicBool::new(false),
    });
    let local = |l: &tokio::net::TcpListener, addr| {
        l.local_addr()
            .map_err(|source| BrokerError::Bind { addr, source })
    };
    let addr = local(&plain, listen)?;
    let mut tasks = vec![tokio::spawn(gate::serve(
        plain,
        None,
        gate.clone(),
        shutdown.clone(),
    ))];
    let mut tls_addr = None;
    if let Some((l, acceptor)) = tls {
        tls_addr = Some(local(&l, addr)?);
        tasks.push(tokio::spawn(gate::serve(
            l,
            Some(acceptor),
            gate.clone(),
            shutdown,
        )));
    }
    Ok(EmbeddedBroker {
        addr,
        tls_addr,
        stats: gate.stats.clone(),
        tasks,
    })
}
