//! The bridge's MQTT connection: subscribes to every device's state, presence, chunk
//! requests and uplinks, and routes them; publishes directives, chunk frames, acks and
//! events from an outbound queue (so no handler ever blocks the event loop).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use outpost_protocol::Limits;
use outpost_protocol::topics::{self, DeviceTopic};
use outpost_protocol::wire::{ChunkRequest, EventKind, Presence, ReportedState};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{Notify, mpsc, watch};

use crate::audit::Audit;
use crate::db::Db;
use crate::events::{EventBus, NewEvent};
use crate::ingest::IngestJob;
use crate::serving::BundleServer;

/// One outgoing MQTT message (QoS 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// Whether the broker retains it (directives are retained; frames, acks and events
    /// are not).
    pub retain: bool,
}

/// Why a message was not queued.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OutError {
    /// The queue holds [`MqttOut::CAPACITY`] messages: the broker link is slower than what
    /// the bridge produces (or down).
    #[error("the outgoing MQTT queue is full")]
    Full,
    /// Nothing drains the queue: no MQTT connection (CLI use) or the bridge is stopping.
    #[error("no MQTT connection drains the outgoing queue")]
    Closed,
}

/// The bridge's outgoing MQTT queue: bounded, so a slow or absent broker link turns into
/// back-pressure or a counted refusal rather than unbounded memory. Producers that can
/// wait (chunk answers, ingest acks) use [`MqttOut::send`]; synchronous ones (the rollout
/// engine, events) use [`MqttOut::try_publish`] and handle a refusal — the engine keeps
/// a refused directive unpublished and sends it on its next pass.
#[derive(Debug, Clone)]
pub struct MqttOut {
    tx: mpsc::Sender<Publish>,
    refused: Arc<AtomicU64>,
}

/// The receiving end, drained by the MQTT task.
pub type MqttOutRx = mpsc::Receiver<Publish>;

impl MqttOut {
    /// Messages the queue holds: with 128 KiB packets at most 128 MiB; a rollout to 1 000
    /// devices queues about one frame per device at a time.
    pub const CAPACITY: usize = 1024;

    /// A queue and its receiver.
    pub fn channel() -> (Self, MqttOutRx) {
        Self::with_capacity(Self::CAPACITY)
    }

    /// A queue of `cap` messages (tests).
    pub fn with_capacity(cap: usize) -> (Self, MqttOutRx) {
        let (tx, rx) = mpsc::channel(cap.max(1));
        (
            Self {
                tx,
                refused: Arc::default(),
            },
            rx,
        )
    }

    /// A queue nothing drains (commands run without a broker connection): every
    /// message is refused with [`OutError::Closed`].
    pub fn detached() -> Self {
        Self::with_capacity(1).0
    }

    /// Queues a message without waiting.
    pub fn try_publish(
        &self,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), OutError> {
        use mpsc::error::TrySendError;
        self.tx
            .try_send(Publish {
                topic,
                payload,
                retain,
            })
            .map_err(|e| {
                self.refused.fetch_add(1, Relaxed);
                match e {
                    TrySendError::Full(_) => OutError::Full,
                    TrySendError::Closed(_) => OutError::Closed,
                }
            })
    }

    /// Queues a message, waiting while the queue is full.
    pub async fn send(
        &self,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), OutError> {
        self.tx
            .send(Publish {
                topic,
                payload,
                retain,
            })
            .await
            .map_err(|_| {
                self.refused.fetch_add(1, Relaxed);
                OutError::Closed
            })
    }

    /// Messages refused so far (full or closed).
    pub fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }
}

/// Everything inbound messages are routed to.
#[derive(Clone)]
pub struct Router {
    /// Database.
    pub db: Db,
    /// Audit log.
    pub audit: Audit,
    /// Event bus.
    pub events: EventBus,
    /// Ingest queue.
    pub ingest: mpsc::Sender<IngestJob>,
    /// Bundle server.
    pub server: Arc<BundleServer>,
    /// Outbound queue (topic, payload, retain).
    pub out: MqttOut,
    /// Woken when a device reports state (the rollout engine re-evaluates).
    pub state_changed: Arc<Notify>,
    /// Called on every (re)connect, e.g. to re-publish retained directives.
    pub on_connect: Arc<dyn Fn(&MqttOut) + Send + Sync>,
    /// Device authentication.
    pub auth: Arc<crate::device_auth::DeviceAuth>,
    /// Publish and connection counters (for `/metrics`).
    pub stats: Arc<MqttStats>,
    /// The broker's packet limit, bytes.
    pub max_packet_bytes: usize,
}

/// The bridge's MQTT client counters.
#[derive(Debug, Default)]
pub struct MqttStats {
    /// Messages handed to the client for publishing.
    pub published: AtomicU64,
    /// Publishes the client refused (its event loop is gone: the message is lost).
    pub publish_failures: AtomicU64,
    /// Messages dropped before publishing because they exceed the broker's packet limit
    /// (publishing one would make the broker drop the bridge's connection).
    pub oversize_dropped: AtomicU64,
    /// Broker connection errors (each is followed by a reconnect attempt).
    pub connection_errors: AtomicU64,
}

/// Messages refused for size or failed to publish: counted, and logged once per kind of
/// topic (the topic with the device id elided) so a misconfiguration cannot flood the log.
#[derive(Default)]
struct Oversize {
    logged: std::collections::HashSet<String>,
    count: u64,
}

impl Oversize {
    fn kind(topic: &str) -> String {
        match topics::parse(topic) {
            Some((_, k)) => k.tail(),
            None => topic.to_owned(),
        }
    }

    fn note(&mut self, topic: &str, len: usize, max: usize) {
        self.count += 1;
        if self.logged.len() < 64 && self.logged.insert(format!("size {}", Self::kind(topic))) {
            tracing::error!(%topic, bytes = len, max_packet = max, total = self.count, "message over the broker's packet limit not published (further ones on this kind of topic are counted, not logged)");
        }
    }

    fn failed(&mut self, topic: &str, error: &str) {
        self.count += 1;
        if self.logged.len() < 64 && self.logged.insert(format!("fail {}", Self::kind(topic))) {
            tracing::error!(%topic, %error, "publish failed (further failures on this kind of topic are counted, not logged)");
        }
    }
}

/// Broker location and credentials.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Username/password.
    pub credentials: Option<(String, String)>,
    /// Largest packet the broker accepts, bytes: nothing larger is ever published (it
    /// would make the broker drop the connection, cutting off every device).
    pub max_packet_bytes: usize,
}

/// Starts the connection; returns whether-connected and the two tasks' futures.
pub fn start(
    conn: &Connection,
    router: Router,
    mut out_rx: MqttOutRx,
    mut shutdown: watch::Receiver<bool>,
) -> (
    watch::Receiver<bool>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let mut o = MqttOptions::new(crate::broker::BRIDGE_ID, &conn.host, conn.port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(conn.max_packet_bytes, conn.max_packet_bytes);
    let max_packet = conn.max_packet_bytes;
    o.set_clean_session(true);
    o.set_inflight(500);
    if let Some((u, p)) = &conn.credentials {
        o.set_credentials(u, p);
    }
    let (client, mut el) = AsyncClient::new(o, 4096);
    let (conn_tx, conn_rx) = watch::channel(false);
    let task = async move {
        let publisher = client.clone();
        let stats = router.stats.clone();
        let mut pub_shutdown = shutdown.clone();
        let out_task = tokio::spawn(async move {
            let mut refused = Oversize::default();
            loop {
                tokio::select! {
                    m = out_rx.recv() => match m {
                        Some(Publish { topic, payload, retain }) => {
                            let len = outpost_protocol::limits::mqtt_publish_len(topic.len(), payload.len());
                            if len > max_packet {
                                // Isolated to this message: dropped, counted, logged once
                                // per kind of topic.
                                stats.oversize_dropped.fetch_add(1, Relaxed);
                                refused.note(&topic, len, max_packet);
                                continue;
                            }
                            stats.published.fetch_add(1, Relaxed);
                            if let Err(e) = publisher.publish(topic.clone(), QoS::AtLeastOnce, retain, payload).await {
                                stats.publish_failures.fetch_add(1, Relaxed);
                                refused.failed(&topic, &e.to_string());
                            }
                        }
                        None => break,
                    },
                    _ = pub_shutdown.changed() => break,
                }
            }
        });
        let limits = Limits::default();
        // State and presence are recorded by one blocking writer, in arrival order, so
        // this loop never waits for the database (a rollout transaction may hold it).
        let (reports, reports_rx) = mpsc::channel(REPORT_QUEUE);
        let writer = {
            let r = router.clone();
            tokio::task::spawn_blocking(move || record_reports(&r, reports_rx))
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                ev = el.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for f in topics::BRIDGE_SUBSCRIPTIONS {
                            let _ = client.try_subscribe(f, QoS::AtLeastOnce);
                        }
                        let _ = conn_tx.send(true);
                        (router.on_connect)(&router.out);
                        tracing::info!("bridge connected to the broker");
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => route(&router, &limits, &reports, p.topic, p.payload.to_vec()).await,
                    Ok(_) => {}
                    Err(e) => {
                        router.stats.connection_errors.fetch_add(1, Relaxed);
                        if *conn_tx.borrow() {
                            tracing::warn!(error = %e, "bridge lost the broker; reconnecting");
                        }
                        let _ = conn_tx.send(false);
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                },
            }
        }
        let _ = client.try_disconnect();
        out_task.abort();
        drop(reports);
        let _ = writer.await;
    };
    (conn_rx, task)
}

/// A message refused by device authentication: counted on the device, logged, and raised
/// as an event at most once per device per minute.
async fn rejected(r: &Router, rej: crate::device_auth::Rejection) {
    tracing::debug!(device = %rej.device, kind = %rej.kind, error = %rej.error, "device message refused");
    if !r.auth.should_report(&rej.device) {
        return;
    }
    tracing::warn!(device = %rej.device, kind = %rej.kind, error = %rej.error,
        "device message refused by device authentication (further ones this minute are only counted)");
    let db = r.db.clone();
    let events = r.events.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let c = db.lock();
        let known = crate::devices::show(&c, &rej.device).is_ok();
        if known {
            let _ = crate::devices::count_rejected(&c, &rej.device);
        }
        events.emit_with(
            &c,
            NewEvent::new(
                EventKind::DeviceAuthFailed,
                format!(
                    "a message on {}'s {} topic failed device authentication: {}",
                    rej.device, rej.kind, rej.error
                ),
            )
            .device(&rej.device)
            .details(serde_json::json!({"kind": rej.kind, "reason": rej.error.reason(), "known_device": known})),
        );
    })
    .await;
}

/// Most device reports queued for the writer; past this, routing waits (back-pressure
/// from a database far behind, not from one long transaction).
const REPORT_QUEUE: usize = 4096;

/// A device's state or presence, verified, waiting to be recorded.
enum Report {
    State(Box<ReportedState>, Option<u64>),
    Presence(String, bool, Option<u64>),
}

/// Records reports in arrival order until the queue closes (blocking: runs on tokio's
/// blocking pool).
fn record_reports(r: &Router, mut rx: mpsc::Receiver<Report>) {
    while let Some(report) = rx.blocking_recv() {
        match report {
            Report::State(s, counter) => {
                let dev = s.device_id.clone();
                let c = r.db.lock();
                let before = crate::fleet::desired::reported(&c, &dev)
                    .ok()
                    .flatten()
                    .and_then(|s| s.directive_rejected);
                match crate::devices::on_state(&c, &r.audit, &s, counter) {
                    Ok(true) => {
                        if let Some(rej) = &s.directive_rejected
                            && before
                                .as_ref()
                                .is_none_or(|b| b.sequence != rej.sequence || b.kind != rej.kind)
                        {
                            let clocks = match (rej.issued_at, rej.expires_at) {
                                (Some(i), Some(e)) => format!(
                                    " (device clock {}, directive valid {}..{})",
                                    rej.now, i, e
                                ),
                                _ => String::new(),
                            };
                            r.events.emit_with(
                                &c,
                                NewEvent::new(
                                    EventKind::DirectiveRejected,
                                    format!(
                                        "{dev} refused directive {}: {}{clocks}",
                                        rej.sequence
                                            .map(|q| q.to_string())
                                            .unwrap_or_else(|| "?".into()),
                                        rej.reason
                                    ),
                                )
                                .device(&dev)
                                .details(serde_json::to_value(rej).unwrap_or_default()),
                            );
                        }
                    }
                    Ok(false) => {
                        r.auth.replayed();
                        tracing::warn!(device = %dev, "reported state older than the last one: ignored (replay)");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, device = %dev, "cannot record device state")
                    }
                }
                drop(c);
            }
            Report::Presence(dev, online, counter) => {
                let c = r.db.lock();
                match crate::devices::on_presence(&c, &r.audit, &dev, online, counter) {
                    Ok(crate::devices::PresenceOutcome::Recorded(before))
                        if before != Some(online) =>
                    {
                        let (kind, word) = if online {
                            (EventKind::DeviceOnline, "online")
                        } else {
                            (EventKind::DeviceOffline, "offline")
                        };
                        r.events.emit_with(
                            &c,
                            NewEvent::new(kind, format!("{dev} is {word}")).device(&dev),
                        );
                    }
                    Ok(crate::devices::PresenceOutcome::Stale) => r.auth.replayed(),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, device = %dev, "cannot record presence"),
                }
                drop(c);
            }
        }
        r.state_changed.notify_one();
    }
}

async fn route(
    r: &Router,
    limits: &Limits,
    reports: &mpsc::Sender<Report>,
    topic: String,
    payload: Vec<u8>,
) {
    let Some((dev, kind)) = topics::parse(&topic) else {
        return;
    };
    if !kind.from_device() || payload.is_empty() {
        // Our own topics echoed back, or a retained message being cleared.
        return;
    }
    let dev = dev.to_owned();
    // Nothing below sees a message before its seal verified for the device the topic
    // names: the topic itself proves nothing.
    let (payload, counter) = match r.auth.open(&dev, &kind, &payload).await {
        Ok(x) => x,
        Err(rej) => return rejected(r, rej).await,
    };
    match kind {
        DeviceTopic::Uplink(stream) => {
            let _ = r
                .ingest
                .send(IngestJob {
                    device: dev,
                    stream,
                    payload,
                })
                .await;
        }
        DeviceTopic::ChunkRequest => {
            let Ok(req) = ChunkRequest::decode(&payload, limits) else {
                tracing::debug!(device = %dev, "malformed chunk request dropped");
                return;
            };
            let server = r.server.clone();
            let out = r.out.clone();
            let max_packet = r.max_packet_bytes;
            tokio::spawn(async move {
                let topic = topics::chunk_response(&dev);
                for f in server.answer(&dev, &req).await {
                    let mut bytes = f.encode();
                    let len = outpost_protocol::limits::mqtt_publish_len(topic.len(), bytes.len());
                    if len > max_packet {
                        // A bundle registered with chunks too large for this broker: tell
                        // the device why, so its update fails with the reason instead of
                        // timing out.
                        let reason = format!(
                            "part {} is a {len}-byte message, over the broker's {max_packet}-byte packet limit: register the model again with --chunk-size {} or less",
                            f.index,
                            outpost_protocol::limits::largest_chunk_for(max_packet)
                        );
                        bytes = outpost_protocol::serve::fatal_frame(f.bundle, f.index, &reason)
                            .encode();
                    }
                    let _ = out.send(topic.clone(), bytes, false).await;
                }
            });
        }
        DeviceTopic::State => match ReportedState::decode(&payload, limits) {
            Ok(s) if s.device_id == dev => {
                let _ = reports.send(Report::State(Box::new(s), counter)).await;
            }
            Ok(_) => tracing::warn!(device = %dev, "state names another device; dropped"),
            Err(e) => tracing::debug!(device = %dev, error = %e, "malformed state dropped"),
        },
        DeviceTopic::Presence => {
            let Ok(p) = Presence::decode(&payload, limits) else {
                return;
            };
            let _ = reports.send(Report::Presence(dev, p.online, counter)).await;
        }
        _ => {}
    }
}

#[cfg(test)]
mod out_tests {
    use super::*;

    #[tokio::test]
    async fn the_queue_is_bounded_and_counts_what_it_refuses() {
        let (out, mut rx) = MqttOut::with_capacity(2);
        out.try_publish("a".into(), vec![1], false).unwrap();
        out.send("b".into(), vec![2], true).await.unwrap();
        assert_eq!(
            out.try_publish("c".into(), vec![3], false),
            Err(OutError::Full)
        );
        assert_eq!(out.refused(), 1);
        let first = rx.recv().await.unwrap();
        assert_eq!((first.topic.as_str(), first.retain), ("a", false));
        // Room again: a waiting sender gets in.
        out.send("d".into(), vec![4], false).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().topic, "b");
        assert_eq!(rx.recv().await.unwrap().topic, "d");
    }

    #[tokio::test]
    async fn a_detached_queue_refuses_as_closed() {
        let out = MqttOut::detached();
        assert_eq!(
            out.try_publish("t".into(), vec![], true),
            Err(OutError::Closed)
        );
        assert_eq!(
            out.send("t".into(), vec![], true).await,
            Err(OutError::Closed)
        );
        assert_eq!(out.refused(), 2);
    }
}
