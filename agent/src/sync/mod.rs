//! Sync: drains the store to the bridge over MQTT and deletes only what the bridge
//! acknowledged after its durable write.
//!
//! [`machine::SyncMachine`] decides; [`run`] is the IO loop around it: the store (through
//! [`machine::Backlog`]), the link, acks, and a wake-up when new data is stored.

pub mod config;
pub mod machine;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_protocol::Limits;
use outpost_protocol::topics;
use outpost_protocol::uplink::Record;
use outpost_protocol::wire::BatchAck;
use tokio::sync::{Notify, mpsc, watch};

use crate::clock::{mono_ms, unix_ms};
use crate::link::LinkHandle;
use crate::store::Store;
pub use config::{SyncConfig, SyncSection};
pub use machine::{Backlog, SyncAction, SyncMachine, SyncStats};

/// The store shared by writers (recorder, telemetry) and the sync loop.
pub type SharedStore = Arc<Mutex<Store>>;

/// Locks the store, recovering from a poisoned lock (the store's own transactions keep
/// the database consistent whatever a panicking holder was doing).
pub fn lock(s: &SharedStore) -> std::sync::MutexGuard<'_, Store> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

struct StoreBacklog<'a>(&'a Store);

impl Backlog for StoreBacklog<'_> {
    fn next_batch(
        &mut self,
        stream: &str,
        after: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Vec<Record> {
        self.0
            .next_batch(stream, after, max_records, max_bytes)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, stream, "reading the store for sync failed");
                Vec::new()
            })
    }
}

/// Uplink counters (shared with telemetry).
#[derive(Debug, Default)]
pub struct UplinkCounters {
    /// Encoded (compressed) bytes published.
    pub wire_bytes: std::sync::atomic::AtomicU64,
    /// Raw record bytes those carried.
    pub raw_bytes: std::sync::atomic::AtomicU64,
    /// Batches published.
    pub batches: std::sync::atomic::AtomicU64,
    /// Records deleted after acks.
    pub acked_records: std::sync::atomic::AtomicU64,
}

/// Runs the sync loop until shutdown; then keeps going for up to `drain` to flush what
/// it can (the link stays up until this returns).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    store: SharedStore,
    link: LinkHandle,
    cfg: SyncConfig,
    level: i32,
    mut acks: mpsc::Receiver<Vec<u8>>,
    wake: Arc<Notify>,
    counters: Arc<UplinkCounters>,
    drain: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let streams = lock(&store).streams_by_priority();
    let mut m = SyncMachine::new(cfg, streams);
    let mut connected = link.watch_connected();
    if *connected.borrow_and_update() {
        m.on_connected();
    }
    let limits = Limits::default();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let device = link.device_id().to_owned();
    // After shutdown: keep flushing (partial batches too) until nothing is in flight and
    // nothing is left to send, the link drops, or the drain period ends.
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        let mut actions = Vec::new();
        let draining = drain_until.is_some();
        tokio::select! {
            r = shutdown.changed(), if !draining => {
                if r.is_err() || *shutdown.borrow() {
                    drain_until = Some(tokio::time::Instant::now() + drain);
                }
            }
            a = acks.recv() => match a {
                None => break,
                Some(bytes) => match BatchAck::decode(&bytes, &limits) {
                    Ok(ack) => actions = m.on_ack(&ack),
                    Err(e) => tracing::warn!(error = %e, "malformed ack dropped"),
                },
            },
            r = connected.changed() => {
                if r.is_err() { break; }
                if *connected.borrow_and_update() { m.on_connected() } else { m.on_disconnected() }
            }
            _ = tick.tick() => {}
            _ = wake.notified() => {}
        }
        {
            let s = lock(&store);
            actions.extend(m.poll(mono_ms(), unix_ms(), draining, &mut StoreBacklog(&s)));
        }
        if let Some(until) = drain_until {
            let idle =
                m.inflight() == 0 && !actions.iter().any(|a| matches!(a, SyncAction::Send(_)));
            if idle || !link.is_connected() || tokio::time::Instant::now() >= until {
                break;
            }
        }
        for a in actions {
            match a {
                SyncAction::Delete {
                    stream,
                    first,
                    last,
                } => {
                    let r = lock(&store).ack(&stream, first, last);
                    match r {
                        Ok(n) => {
                            counters.acked_records.fetch_add(n, Relaxed);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, %stream, "deleting acked records failed")
                        }
                    }
                }
                SyncAction::Send(batch) => {
                    let raw: u64 = batch.records.iter().map(|r| r.body.len() as u64).sum();
                    let stream = batch.stream.clone();
                    match batch.encode(level) {
                        Ok(bytes) => {
                            let n = bytes.len() as u64;
                            if link
                                .publish(topics::uplink(&device, &stream), bytes, false)
                                .is_ok()
                            {
                                counters.wire_bytes.fetch_add(n, Relaxed);
                                counters.raw_bytes.fetch_add(raw, Relaxed);
                                counters.batches.fetch_add(1, Relaxed);
                            } else {
                                m.on_send_failed(&stream);
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "encoding an uplink batch failed");
                            m.on_send_failed(&stream);
                        }
                    }
                }
            }
        }
    }
}
