//! Ingest: uplink batches → durable rows → end-to-end acks.
//!
//! One writer task owns a database connection. It takes every batch queued so far, and in
//! one transaction inserts each record with `INSERT OR IGNORE` on the primary key
//! (device, stream, seq) — so a re-sent batch stores nothing twice — and derives the
//! `captures`, `telemetry` and `device_events` rows of newly stored records. Only after
//! the commit (`synchronous = FULL`) does it send each batch's ack, with how many records
//! were new and how many were duplicates. A batch that fails to decode (size caps,
//! corrupt zstd, bad frame) is counted and dropped without an ack.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use outpost_protocol::Limits;
use outpost_protocol::records::{
    self, AgentEventKind, CaptureRecord, EventRecord, RecordError, Telemetry,
};
use outpost_protocol::topics;
use outpost_protocol::uplink::UplinkBatch;
use outpost_protocol::wire::{BatchAck, EventKind};
use rusqlite::{Connection, Transaction, params};
use tokio::sync::{mpsc, watch};

use crate::db::{Db, now_ms};
use crate::events::{EventBus, MqttOut, NewEvent};

/// One received uplink message.
#[derive(Debug)]
pub struct IngestJob {
    /// Device (from the topic: the broker authenticated it).
    pub device: String,
    /// Stream (from the topic).
    pub stream: String,
    /// The batch frame.
    pub payload: Vec<u8>,
}

/// Counters.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Batches acked.
    pub batches: AtomicU64,
    /// Records newly stored.
    pub stored: AtomicU64,
    /// Records received again.
    pub duplicates: AtomicU64,
    /// Batches refused (malformed).
    pub rejected: AtomicU64,
    /// Compressed bytes received.
    pub wire_bytes: AtomicU64,
    /// Records stored whose body could not be derived into captures/telemetry/events.
    pub underivable: AtomicU64,
}

/// A device event to publish after commit.
#[derive(Debug, Clone)]
pub struct DeviceEvent {
    /// Device.
    pub device: String,
    /// The event as the agent sent it.
    pub event: EventRecord,
}

/// Result of writing a group of batches.
#[derive(Debug, Default)]
pub struct Written {
    /// Acks to send.
    pub acks: Vec<(String, BatchAck)>,
    /// Device events newly stored.
    pub events: Vec<DeviceEvent>,
}

/// Why a stored record's body did not reach the derived tables.
#[derive(Debug, thiserror::Error)]
enum DeriveError {
    #[error(transparent)]
    Db(#[from] rusqlite::Error),
    #[error(transparent)]
    Body(#[from] RecordError),
}

fn derive(
    tx: &Transaction<'_>,
    device: &str,
    stream: &str,
    seq: u64,
    ts_ms: u64,
    body: &[u8],
    events: &mut Vec<DeviceEvent>,
) -> Result<(), DeriveError> {
    match stream {
        records::CAPTURES => {
            let c: CaptureRecord = records::decode(body)?;
            tx.execute(
                "INSERT OR IGNORE INTO captures (device, seq, ts_ms, model, version, bundle, reason, label, confidence, input, output)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    device,
                    seq as i64,
                    ts_ms as i64,
                    c.model.name,
                    c.model.version,
                    c.bundle.to_hex(),
                    c.reason.as_str(),
                    c.label,
                    c.confidence,
                    serde_json::to_string(&c.inputs).unwrap_or_default(),
                    serde_json::to_string(&c.outputs).unwrap_or_default()
                ],
            )?;
        }
        records::TELEMETRY => {
            let t: Telemetry = records::decode(body)?;
            let model = t.model();
            tx.execute(
                "INSERT OR IGNORE INTO telemetry (device, seq, ts_ms, kind, model, version, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    device,
                    seq as i64,
                    ts_ms as i64,
                    t.kind(),
                    model.map(|m| m.name.clone()),
                    model.map(|m| m.version),
                    // As sent: a newer agent's extra fields stay readable.
                    String::from_utf8_lossy(body)
                ],
            )?;
        }
        records::EVENTS => {
            let e: EventRecord = records::decode(body)?;
            tx.execute(
                "INSERT OR IGNORE INTO device_events (device, seq, ts_ms, kind, message, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    device,
                    seq as i64,
                    ts_ms as i64,
                    e.kind.as_str(),
                    e.message,
                    String::from_utf8_lossy(body)
                ],
            )?;
            events.push(DeviceEvent {
                device: device.into(),
                event: e,
            });
        }
        _ => {}
    }
    Ok(())
}

/// Writes a group of batches in one transaction; returns the acks (sent only after this
/// returns, i.e. after the commit).
pub fn write(
    c: &mut Connection,
    jobs: &[IngestJob],
    limits: &Limits,
    stats: &IngestStats,
) -> rusqlite::Result<Written> {
    let mut out = Written::default();
    let tx = c.transaction()?;
    let received = now_ms() as i64;
    for job in jobs {
        let batch = match UplinkBatch::decode(&job.payload, limits) {
            Ok(b) if b.stream == job.stream => b,
            Ok(b) => {
                stats.rejected.fetch_add(1, Relaxed);
                tracing::warn!(device = %job.device, topic_stream = %job.stream, frame_stream = %b.stream, "uplink stream mismatch; dropped");
                continue;
            }
            Err(e) => {
                stats.rejected.fetch_add(1, Relaxed);
                tracing::warn!(device = %job.device, error = %e, "malformed uplink batch dropped");
                continue;
            }
        };
        stats
            .wire_bytes
            .fetch_add(job.payload.len() as u64, Relaxed);
        let (mut stored, mut dup) = (0u32, 0u32);
        for r in &batch.records {
            let n = tx.execute(
                "INSERT OR IGNORE INTO records (device, stream, seq, ts_ms, received_ms, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![job.device, batch.stream, r.seq as i64, r.ts_ms as i64, received, r.body],
            )?;
            if n == 1 {
                stored += 1;
                // The record itself is stored; a body the derived tables cannot take must
                // not block the device's stream (SQLite rolls back only the statement).
                if let Err(e) = derive(
                    &tx,
                    &job.device,
                    &batch.stream,
                    r.seq,
                    r.ts_ms,
                    &r.body,
                    &mut out.events,
                ) {
                    stats.underivable.fetch_add(1, Relaxed);
                    tracing::warn!(device = %job.device, stream = %batch.stream, seq = r.seq, error = %e, "record stored but not derived");
                }
            } else {
                dup += 1;
            }
        }
        out.acks.push((
            job.device.clone(),
            BatchAck {
                stream: batch.stream.clone(),
                batch_id: batch.batch_id,
                first_seq: batch.first_seq().unwrap_or(0),
                last_seq: batch.last_seq().unwrap_or(0),
                stored,
                duplicates: dup,
            },
        ));
    }
    tx.commit()?;
    for (_, a) in &out.acks {
        stats.batches.fetch_add(1, Relaxed);
        stats.stored.fetch_add(u64::from(a.stored), Relaxed);
        stats.duplicates.fetch_add(u64::from(a.duplicates), Relaxed);
    }
    Ok(out)
}

fn event_kind(agent_kind: &AgentEventKind) -> Option<EventKind> {
    match agent_kind {
        AgentEventKind::RolledBack => Some(EventKind::RolledBack),
        AgentEventKind::UpdateFailed => Some(EventKind::UpdateFailed),
        AgentEventKind::DriftDetected => Some(EventKind::DriftDetected),
        _ => None,
    }
}

/// Runs the writer until shutdown, then drains what is queued.
pub async fn run(
    db: Db,
    mut rx: mpsc::Receiver<IngestJob>,
    mqtt: MqttOut,
    events: EventBus,
    stats: Arc<IngestStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conn = match db.connect() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "ingest cannot open the database; uplinks will not be acked");
            return;
        }
    };
    let limits = Limits::default();
    loop {
        let first = tokio::select! {
            j = rx.recv() => j,
            _ = shutdown.changed() => None,
        };
        let Some(first) = first else { break };
        let mut jobs = vec![first];
        while jobs.len() < 512 {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let st = stats.clone();
        let lim = limits.clone();
        let r = tokio::task::spawn_blocking(move || {
            let r = write(&mut conn, &jobs, &lim, &st);
            (conn, r)
        })
        .await;
        let written = match r {
            Ok((c, w)) => {
                conn = c;
                w
            }
            Err(e) => {
                tracing::error!(error = %e, "ingest task failed");
                break;
            }
        };
        match written {
            Ok(w) => {
                for (device, ack) in w.acks {
                    let _ = mqtt.send(topics::ack(&device), ack.encode(), false).await;
                }
                let raised: Vec<NewEvent> = w
                    .events
                    .into_iter()
                    .filter_map(|e| {
                        let kind = event_kind(&e.event.kind)?;
                        let mut ne =
                            NewEvent::new(kind, format!("{}: {}", e.device, e.event.message))
                                .device(&e.device)
                                .details(serde_json::to_value(&e.event).unwrap_or_default());
                        if let Some(m) = e.event.model() {
                            ne = ne.model(m);
                        }
                        Some(ne)
                    })
                    .collect();
                if !raised.is_empty() {
                    // Recording events writes to the database: off the async workers.
                    let events = events.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        for ne in raised {
                            events.emit(ne);
                        }
                    })
                    .await;
                }
            }
            // Nothing was committed, so nothing is acked: the agents will resend.
            Err(e) => tracing::error!(error = %e, "ingest commit failed; batches will be re-sent"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::uplink::Record;

    #[test]
    fn the_same_batch_three_times_is_stored_once_and_acked_each_time() {
        let d = tempfile::tempdir().unwrap();
        let db = Db::open(d.path()).unwrap();
        let mut c = db.connect().unwrap();
        let batch = UplinkBatch {
            stream: "telemetry".into(),
            batch_id: 5,
            records: (5..10)
                .map(|s| Record {
                    seq: s,
                    ts_ms: s * 10,
                    body: br#"{"kind":"agent"}"#.to_vec(),
                })
                .collect(),
        };
        let job = || IngestJob {
            device: "gw".into(),
            stream: "telemetry".into(),
            payload: batch.encode(3).unwrap(),
        };
        let stats = IngestStats::default();
        let mut acks = Vec::new();
        for _ in 0..3 {
            acks.extend(
                write(&mut c, &[job()], &Limits::default(), &stats)
                    .unwrap()
                    .acks,
            );
        }
        assert_eq!(acks.len(), 3, "acked each time");
        assert_eq!((acks[0].1.stored, acks[0].1.duplicates), (5, 0));
        assert_eq!((acks[2].1.stored, acks[2].1.duplicates), (0, 5));
        assert_eq!((acks[1].1.first_seq, acks[1].1.last_seq), (5, 9));
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM records", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 5);
        let t: i64 = c
            .query_row("SELECT COUNT(*) FROM telemetry", [], |r| r.get(0))
            .unwrap();
        assert_eq!(t, 5);
        // Malformed and mismatched batches are refused, not acked.
        let bad = IngestJob {
            device: "gw".into(),
            stream: "telemetry".into(),
            payload: b"OPUBjunk".to_vec(),
        };
        let other = IngestJob {
            device: "gw".into(),
            stream: "events".into(),
            payload: batch.encode(3).unwrap(),
        };
        assert!(
            write(&mut c, &[bad, other], &Limits::default(), &stats)
                .unwrap()
                .acks
                .is_empty()
        );
        assert_eq!(stats.rejected.load(Relaxed), 2);
    }
}
