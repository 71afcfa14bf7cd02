//! The uplink sync as a sans-IO machine.
//!
//! Per stream it keeps a cursor (highest sequence sent) and a window of batches in flight.
//! `poll` fills the windows, highest-priority stream first, from the [`Backlog`] (the
//! store, behind a trait: the storage IO seam), cutting batches by records, bytes and
//! linger time; `on_ack` turns an end-to-end ack into a delete of exactly that range.
//! Timeouts and disconnects rewind the stream to its oldest unacked batch (go-back-N):
//! the bridge deduplicates by (device, stream, seq), so resending is always safe, and
//! nothing is deleted without an ack.

use std::collections::BTreeMap;

use outpost_protocol::uplink::{Record, UplinkBatch};
use outpost_protocol::wire::BatchAck;

pub use super::config::SyncConfig;

/// Where unsent records come from.
pub trait Backlog {
    /// Up to the limits of `stream`'s records with `seq > after`, oldest first.
    fn next_batch(
        &mut self,
        stream: &str,
        after: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Vec<Record>;
}

/// What the IO loop must do.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncAction {
    /// Publish this batch.
    Send(UplinkBatch),
    /// Delete the acked range from the store.
    Delete {
        /// Stream.
        stream: String,
        /// First sequence.
        first: u64,
        /// Last sequence.
        last: u64,
    },
}

#[derive(Debug, Default)]
struct StreamState {
    cursor: u64,
    inflight: BTreeMap<u64, (u64, u64)>, // batch id (= first seq) → (last seq, deadline)
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Batches handed out for sending.
    pub batches: u64,
    /// Records in them.
    pub records: u64,
    /// Acks applied.
    pub acks: u64,
    /// Rewinds after a timeout or failed publish.
    pub resends: u64,
}

/// The machine.
pub struct SyncMachine {
    cfg: SyncConfig,
    streams: Vec<(String, StreamState)>,
    connected: bool,
    stats: SyncStats,
}

impl SyncMachine {
    /// `streams` in descending priority.
    pub fn new(cfg: SyncConfig, streams: Vec<String>) -> Self {
        Self {
            cfg,
            streams: streams
                .into_iter()
                .map(|s| (s, StreamState::default()))
                .collect(),
            connected: false,
            stats: SyncStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> SyncStats {
        self.stats
    }

    /// Batches in flight, all streams.
    pub fn inflight(&self) -> usize {
        self.streams.iter().map(|(_, s)| s.inflight.len()).sum()
    }

    fn rewind(st: &mut StreamState) {
        if let Some((&first, _)) = st.inflight.iter().next() {
            st.cursor = first - 1;
        }
        st.inflight.clear();
    }

    /// The link came up.
    pub fn on_connected(&mut self) {
        self.connected = true;
    }

    /// The link went down: whatever was in flight is resent after reconnecting.
    pub fn on_disconnected(&mut self) {
        self.connected = false;
        for (_, st) in &mut self.streams {
            Self::rewind(st);
        }
    }

    /// A publish failed (client queue full): rewind that stream.
    pub fn on_send_failed(&mut self, stream: &str) {
        if let Some((_, st)) = self.streams.iter_mut().find(|(s, _)| s == stream) {
            Self::rewind(st);
            self.stats.resends += 1;
        }
    }

    /// An end-to-end ack arrived.
    pub fn on_ack(&mut self, ack: &BatchAck) -> Vec<SyncAction> {
        if let Some((_, st)) = self.streams.iter_mut().find(|(s, _)| *s == ack.stream) {
            st.inflight.remove(&ack.batch_id);
            self.stats.acks += 1;
            // The range is durably at the bridge whether or not we still track the batch
            // (e.g. acked after a rewind), so it is always safe to delete.
            return vec![SyncAction::Delete {
                stream: ack.stream.clone(),
                first: ack.first_seq,
                last: ack.last_seq,
            }];
        }
        Vec::new()
    }

    /// Expires unacked batches and fills the windows. `now_ms` is monotonic (deadlines),
    /// `wall_ms` is unix time (record age for linger); `flush` sends partial batches now.
    pub fn poll(
        &mut self,
        now_ms: u64,
        wall_ms: u64,
        flush: bool,
        backlog: &mut dyn Backlog,
    ) -> Vec<SyncAction> {
        let mut out = Vec::new();
        for (_, st) in &mut self.streams {
            if st
                .inflight
                .values()
                .any(|(_, deadline)| *deadline <= now_ms)
            {
                Self::rewind(st);
                self.stats.resends += 1;
            }
        }
        if !self.connected {
            return out;
        }
        let cfg = self.cfg;
        for (name, st) in &mut self.streams {
            while st.inflight.len() < cfg.window {
                let records = backlog.next_batch(name, st.cursor, cfg.max_records, cfg.max_bytes);
                let Some(first) = records.first() else { break };
                let raw: usize = records.iter().map(|r| r.body.len() + 20).sum();
                let full = records.len() >= cfg.max_records || raw >= cfg.max_bytes;
                let ripe = wall_ms.saturating_sub(first.ts_ms) >= cfg.linger_ms;
                if !(full || ripe || flush) {
                    break;
                }
                let first_seq = first.seq;
                let last_seq = records.last().map(|r| r.seq).unwrap_or(first_seq);
                st.inflight
                    .insert(first_seq, (last_seq, now_ms + cfg.ack_timeout_ms));
                st.cursor = last_seq;
                self.stats.batches += 1;
                self.stats.records += records.len() as u64;
                out.push(SyncAction::Send(UplinkBatch {
                    stream: name.clone(),
                    batch_id: first_seq,
                    records,
                }));
            }
        }
        out
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
