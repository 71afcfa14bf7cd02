//! The MQTT link: one connection to the broker, kept up with jittered exponential
//! backoff, routing inbound messages to the updater and the sync engine.
//!
//! On every ConnAck (clean session) the link re-subscribes to the device's directive,
//! chunk-response and ack topics, publishes `presence = online` (retained) and the latest
//! reported state (retained). The Last-Will publishes `presence = offline` (retained) if
//! the connection dies; a clean shutdown publishes it explicitly first.
//!
//! Delivery is never trusted to MQTT alone: everything published while the link is down
//! is dropped, and the protocols above (chunk request timeouts, uplink end-to-end acks,
//! state re-published at connect) recover on their own.

pub mod config;
pub mod status;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_protocol::topics::{self, DeviceTopic};
use outpost_protocol::wire::{Presence, ReportedState};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rumqttc::{
    AsyncClient, ConnectionError, Event, LastWill, MqttOptions, Packet, QoS, TlsConfiguration,
    Transport,
};
use tokio::sync::{mpsc, watch};

use crate::identity::DeviceIdentity;
pub use config::{BrokerConfig, BrokerSection};
pub use status::{Failure, FailureKind, LinkState};
use status::{FailureLog, Verdict};

/// An inbound message for the updater.
#[derive(Debug)]
pub enum UpdateInbound {
    /// A directive message.
    Directive(Vec<u8>),
    /// A chunk frame.
    Frame(Vec<u8>),
    /// The link is up.
    Connected,
    /// The link is down.
    Disconnected,
}

/// Why the link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// TLS material could not be loaded.
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// Why a publish did not happen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublishError {
    /// The link is down; nothing was queued.
    #[error("not connected")]
    NotConnected,
    /// The client's queue is full; try again later.
    #[error("client queue full")]
    Busy,
}

/// Counters.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Successful connections after the first.
    pub reconnects: AtomicU64,
    /// Connection attempts that failed.
    pub connect_failures: AtomicU64,
    /// Inbound messages dropped as malformed or for unknown topics.
    pub dropped_inbound: AtomicU64,
    /// Connection attempts that failed in TLS (a certificate the other side refused).
    pub tls_failures: AtomicU64,
    /// Connection attempts the broker refused for the credentials or the client id.
    pub auth_failures: AtomicU64,
}

/// What the updater needs from the link: a seam so the update loop is driven in tests by
/// an in-process bundle server instead of a broker.
pub trait Publish: Send + Sync {
    /// Publishes with QoS 1 if connected; never blocks.
    fn publish(&self, topic: String, payload: Vec<u8>, retain: bool) -> Result<(), PublishError>;
}

impl Publish for LinkHandle {
    fn publish(&self, topic: String, payload: Vec<u8>, retain: bool) -> Result<(), PublishError> {
        LinkHandle::publish(self, topic, payload, retain)
    }
}

/// Handle for publishing from other tasks.
#[derive(Clone)]
pub struct LinkHandle {
    client: AsyncClient,
    connected: watch::Receiver<bool>,
    device_id: Arc<str>,
    identity: Option<Arc<DeviceIdentity>>,
    /// Counters.
    pub stats: Arc<LinkStats>,
    state: Arc<Mutex<LinkState>>,
}

/// Seals `payload` for `topic` when the device has an identity and the topic is one the
/// device publishes (the bridge refuses unsealed device messages).
fn sealed(identity: Option<&DeviceIdentity>, topic: &str, payload: Vec<u8>) -> Vec<u8> {
    match (identity, topics::parse(topic)) {
        (Some(id), Some((_, kind))) if kind.from_device() => id.seal(&kind.tail(), &payload),
        _ => payload,
    }
}

impl LinkHandle {
    /// Whether the link is up.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// A receiver that changes when the link goes up or down.
    pub fn watch_connected(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// The link's state: connected or not, the last failure and the next retry.
    pub fn state(&self) -> LinkState {
        lock(&self.state).clone()
    }

    /// This device's id.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// Publishes with QoS 1 if connected; never blocks.
    pub fn publish(
        &self,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), PublishError> {
        if !self.is_connected() {
            return Err(PublishError::NotConnected);
        }
        let payload = sealed(self.identity.as_deref(), &topic, payload);
        self.client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
            .map_err(|_| PublishError::Busy)
    }
}

/// Where inbound messages go.
pub struct Routes {
    /// Directives, frames and link status for the updater.
    pub update: mpsc::Sender<UpdateInbound>,
    /// Batch acks for the sync engine.
    pub acks: Option<mpsc::Sender<Vec<u8>>>,
}

/// Jittered exponential backoff: delay_n = min(max, min·2^n) · U(0.5, 1].
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
    rng: ChaCha8Rng,
}

impl Backoff {
    /// A backoff seeded from `seed` (the device id's hash: devices spread out instead of
    /// reconnecting in lockstep after a broker restart).
    pub fn new(min: Duration, max: Duration, seed: u64) -> Self {
        Self {
            min,
            max,
            attempt: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let base = self
            .min
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        base.mul_f64(self.rng.random_range(0.5..=1.0))
    }

    /// After a successful connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

fn seed_of(s: &str) -> u64 {
    // FNV-1a: stable across runs and platforms (std's hasher is randomised).
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The Last-Will for a connection whose presence messages carry `counter`.
fn last_will(device_id: &str, identity: Option<&DeviceIdentity>, counter: u64) -> LastWill {
    let body = Presence {
        online: false,
        since: None,
    }
    .encode();
    let payload = match identity {
        Some(id) => id.seal_with("presence", counter, &body),
        None => body,
    };
    LastWill::new(topics::presence(device_id), payload, QoS::AtLeastOnce, true)
}

fn mqtt_options(
    device_id: &str,
    cfg: &BrokerConfig,
    identity: Option<&DeviceIdentity>,
) -> Result<MqttOptions, LinkError> {
    let mut o = MqttOptions::new(device_id, &cfg.host, cfg.port);
    o.set_keep_alive(cfg.keep_alive);
    o.set_clean_session(true);
    o.set_max_packet_size(cfg.max_packet_bytes, cfg.max_packet_bytes);
    o.set_last_will(last_will(device_id, identity, 0));
    if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
        o.set_credentials(u, p);
    } else if let Some(u) = &cfg.username {
        o.set_credentials(u, "");
    }
    if cfg.tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls_config(cfg)?),
        )));
    }
    Ok(o)
}

fn tls_config(cfg: &BrokerConfig) -> Result<rustls::ClientConfig, LinkError> {
    let tls = |m: String| LinkError::Tls(m);
    let read =
        |p: &std::path::Path| std::fs::read(p).map_err(|e| tls(format!("{}: {e}", p.display())));
    let ca_path = cfg
        .ca_file
        .as_ref()
        .ok_or_else(|| tls("mqtts:// needs broker.ca_file".into()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &read(ca_path)?[..]) {
        let cert = cert.map_err(|e| tls(format!("{}: {e}", ca_path.display())))?;
        roots
            .add(cert)
            .map_err(|e| tls(format!("{}: {e}", ca_path.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(e.to_string()))?
        .with_root_certificates(roots);
    match (&cfg.client_cert, &cfg.client_key) {
        (Some(c), Some(k)) => {
            let certs = rustls_pemfile::certs(&mut &read(c)?[..])
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls(format!("{}: {e}", c.display())))?;
            let key = rustls_pemfile::private_key(&mut &read(k)?[..])
                .map_err(|e| tls(format!("{}: {e}", k.display())))?
                .ok_or_else(|| tls(format!("{}: no private key", k.display())))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| tls(e.to_string()))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// Creates the link. The returned future runs it until `shutdown` flips to true.
pub fn start(
    device_id: &str,
    cfg: &BrokerConfig,
    identity: Option<Arc<DeviceIdentity>>,
    routes: Routes,
    state: watch::Receiver<Option<ReportedState>>,
    shutdown: watch::Receiver<bool>,
) -> Result<
    (
        LinkHandle,
        impl std::future::Future<Output = ()> + Send + 'static,
    ),
    LinkError,
> {
    let opts = mqtt_options(device_id, cfg, identity.as_deref())?;
    let (client, eventloop) = AsyncClient::new(opts, 256);
    let (conn_tx, conn_rx) = watch::channel(false);
    let handle = LinkHandle {
        client: client.clone(),
        connected: conn_rx,
        device_id: device_id.into(),
        identity: identity.clone(),
        stats: Arc::new(LinkStats::default()),
        state: Arc::new(Mutex::new(LinkState {
            broker: cfg.url(),
            connected: false,
            failed_attempts: 0,
            last_error: None,
            last_error_at: None,
            retry_in_ms: None,
        })),
    };
    let task = run(
        device_id.to_owned(),
        identity,
        client,
        eventloop,
        Backoff::new(cfg.reconnect_min, cfg.reconnect_max, seed_of(device_id)),
        routes,
        state,
        conn_tx,
        handle.stats.clone(),
        handle.state.clone(),
        shutdown,
    );
    Ok((handle, task))
}

#[allow(clippy::too_many_arguments)]
async fn run(
    device_id: String,
    identity: Option<Arc<DeviceIdentity>>,
    client: AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    mut backoff: Backoff,
    routes: Routes,
    mut state: watch::Receiver<Option<ReportedState>>,
    connected: watch::Sender<bool>,
    stats: Arc<LinkStats>,
    link_state: Arc<Mutex<LinkState>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ever_connected = false;
    // A broker that keeps refusing us is one line per distinct reason, then ever rarer
    // reminders, not one line per retry.
    let mut failures = FailureLog::default();
    let id = identity.as_deref();
    let publish_state = |s: &Option<ReportedState>| {
        if let Some(s) = s {
            let topic = topics::state(&device_id);
            let payload = sealed(id, &topic, s.encode());
            let _ = client.try_publish(topic, QoS::AtLeastOnce, true, payload);
        }
    };
    // Presence of one connection (online at ConnAck, the Last-Will when it dies) carries
    // one counter, set before connecting.
    let mut session = id.map_or(0, DeviceIdentity::next);
    eventloop
        .mqtt_options
        .set_last_will(last_will(&device_id, id, session));
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            ev = eventloop.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff.reset();
                    let failed = failures.on_connected();
                    {
                        let mut st = lock(&link_state);
                        st.connected = true;
                        st.failed_attempts = 0;
                        st.retry_in_ms = None;
                    }
                    if ever_connected {
                        stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    ever_connected = true;
                    for t in [topics::directive(&device_id), topics::chunk_response(&device_id), topics::ack(&device_id)] {
                        let _ = client.try_subscribe(t, QoS::AtLeastOnce);
                    }
                    let online = Presence { online: true, since: Some(crate::clock::unix_now()) }.encode();
                    let online = match id {
                        Some(i) => i.seal_with("presence", session, &online),
                        None => online,
                    };
                    let _ = client.try_publish(topics::presence(&device_id), QoS::AtLeastOnce, true, online);
                    publish_state(&state.borrow_and_update());
                    let _ = connected.send(true);
                    let _ = routes.update.send(UpdateInbound::Connected).await;
                    if failed > 0 {
                        tracing::info!(device = %device_id, failed_attempts = failed, "link up");
                    } else {
                        tracing::info!(device = %device_id, "link up");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => route(&device_id, p, &routes, &stats).await,
                Ok(_) => {}
                Err(e) => {
                    let delay = backoff.next_delay();
                    let failure = status::classify(&e, is_tls_failure(&e));
                    let was_connected = *connected.borrow();
                    if was_connected {
                        let _ = connected.send(false);
                        let _ = routes.update.send(UpdateInbound::Disconnected).await;
                        tracing::warn!(device = %device_id, error = %e, "link down; reconnecting in {}", secs(delay));
                    } else {
                        stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                        connect_failed(&device_id, &failure, failures.on_failure(&failure), delay, &stats);
                    }
                    {
                        let mut st = lock(&link_state);
                        st.connected = false;
                        if !was_connected {
                            st.failed_attempts = st.failed_attempts.saturating_add(1);
                        }
                        st.last_error = Some(failure);
                        st.last_error_at = Some(crate::clock::unix_now());
                        st.retry_in_ms = Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
                    }
                    session = id.map_or(0, DeviceIdentity::next);
                    eventloop.mqtt_options.set_last_will(last_will(&device_id, id, session));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => break,
                    }
                }
            },
            // Only while connected: taking this branch drops the `poll` future, and a
            // poll dropped while it is connecting abandons that connection after its
            // CONNECT went out. The broker then publishes that connection's Last-Will,
            // and this loop — which saw no error — would reuse the session counter for
            // the next connection, whose `online` the bridge then refuses as older than
            // the Last-Will (the device shown offline while connected). At ConnAck the
            // latest state is published anyway.
            r = state.changed(), if *connected.borrow() => {
                if r.is_err() { break; }
                if *connected.borrow() {
                    publish_state(&state.borrow_and_update());
                }
            }
        }
    }
    // Clean shutdown: say offline ourselves (a clean DISCONNECT suppresses the Last-Will),
    // then give the event loop a moment to flush.
    if *connected.borrow() {
        let offline = Presence {
            online: false,
            since: None,
        }
        .encode();
        let offline = match id {
            Some(i) => i.seal_with("presence", session, &offline),
            None => offline,
        };
        let _ = client.try_publish(
            topics::presence(&device_id),
            QoS::AtLeastOnce,
            true,
            offline,
        );
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while eventloop.poll().await.is_ok() {}
        })
        .await;
    }
    let _ = connected.send(false);
    lock(&link_state).connected = false;
}

/// Locks the link state, recovering from a poisoned lock (it holds plain values).
fn lock(s: &Mutex<LinkState>) -> std::sync::MutexGuard<'_, LinkState> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// A delay as an operator reads it: `250ms`, `4s`, `1m30s`.
fn secs(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{}s", (ms + 500) / 1000),
        _ => format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// Whether a connection error is TLS refusing a certificate (ours or the broker's), as
/// opposed to the broker being unreachable. rumqttc reports a failed handshake as `Tls`;
/// an alert the broker sends after the handshake (TLS 1.3 checks client certificates
/// then) surfaces while reading the ConnAck, as a rustls error inside an I/O error some
/// levels down the error chain.
fn is_tls_failure(e: &ConnectionError) -> bool {
    if matches!(e, ConnectionError::Tls(_)) {
        return true;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        // io::Error's `source` skips the error it wraps, so look inside it explicitly.
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        if err.is::<rustls::Error>() || inner.is_some_and(|i| i.is::<rustls::Error>()) {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Logs a failed connection attempt as [`status::FailureLog`] decides: a new reason at
/// ERROR when it will not heal by retrying (credentials, certificates: the message says
/// what to check) or WARN when it may (the broker away), with the delay before the next
/// attempt; reminders of the same reason at WARN; the rest at DEBUG.
fn connect_failed(
    device_id: &str,
    f: &Failure,
    verdict: Verdict,
    delay: Duration,
    stats: &LinkStats,
) {
    match f.kind {
        FailureKind::Tls => stats.tls_failures.fetch_add(1, Ordering::Relaxed),
        FailureKind::Auth => stats.auth_failures.fetch_add(1, Ordering::Relaxed),
        _ => 0,
    };
    let retry = secs(delay);
    let reason = &f.reason;
    match (verdict, f.kind) {
        (Verdict::First, FailureKind::Tls) => tracing::error!(
            device = %device_id,
            error = %reason,
            "TLS connection to the broker refused; check broker.ca_file (the broker's CA) and \
             broker.client_cert/client_key (a certificate the broker trusts); retrying in {retry}"
        ),
        (Verdict::First, FailureKind::Auth) => tracing::error!(
            device = %device_id,
            error = %reason,
            "the broker refused the device's login; check broker.username and \
             broker.password_file (as issued by `outpost-bridge device add`) and the broker's \
             ACL; retrying in {retry}"
        ),
        (Verdict::First, _) => tracing::warn!(
            device = %device_id,
            error = %reason,
            "cannot connect to the broker; retrying in {retry}"
        ),
        (Verdict::StillFailing(n), _) => tracing::warn!(
            device = %device_id,
            error = %reason,
            attempts = n,
            "still cannot connect to the broker; retrying in {retry}"
        ),
        (Verdict::Quiet, _) => tracing::debug!(
            device = %device_id,
            error = %reason,
            "connect failed again; retrying in {retry}"
        ),
    }
}

async fn route(device_id: &str, p: rumqttc::Publish, routes: &Routes, stats: &LinkStats) {
    let payload = p.payload.to_vec();
    let sent = match topics::parse(&p.topic) {
        Some((dev, kind)) if dev == device_id => match kind {
            DeviceTopic::Directive => routes
                .update
                .send(UpdateInbound::Directive(payload))
                .await
                .is_ok(),
            DeviceTopic::ChunkResponse => routes
                .update
                .send(UpdateInbound::Frame(payload))
                .await
                .is_ok(),
            DeviceTopic::Ack => match &routes.acks {
                Some(tx) => tx.send(payload).await.is_ok(),
                None => false,
            },
            _ => false,
        },
        _ => false,
    };
    if !sent {
        stats.dropped_inbound.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_jittered_and_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2), 7);
        let d: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d[3] >= Duration::from_millis(400) && d[3] <= Duration::from_millis(800));
        assert!(d.iter().all(|x| *x <= Duration::from_secs(2)));
        assert!(
            d[7] >= Duration::from_secs(1),
            "capped at max, jitter >= half"
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
        assert_eq!(seed_of("gw-1"), seed_of("gw-1"));
        assert_ne!(seed_of("gw-1"), seed_of("gw-2"));
    }
}
