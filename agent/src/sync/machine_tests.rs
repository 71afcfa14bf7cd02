use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

/// In-memory backlog (test double for the store).
#[derive(Default)]
struct Mem {
    records: BTreeMap<String, Vec<Record>>,
    next: u64,
}

impl Mem {
    fn add(&mut self, stream: &str, n: usize, ts_ms: u64) {
        for _ in 0..n {
            self.next += 1;
            let r = Record {
                seq: self.next,
                ts_ms,
                body: vec![b'x'; 10],
            };
            self.records.entry(stream.into()).or_default().push(r);
        }
    }
    fn delete(&mut self, stream: &str, first: u64, last: u64) {
        if let Some(v) = self.records.get_mut(stream) {
            v.retain(|r| r.seq < first || r.seq > last);
        }
    }
    fn len(&self) -> usize {
        self.records.values().map(Vec::len).sum()
    }
}

impl Backlog for Mem {
    fn next_batch(
        &mut self,
        stream: &str,
        after: u64,
        max_records: usize,
        _max_bytes: usize,
    ) -> Vec<Record> {
        self.records
            .get(stream)
            .map(|v| {
                v.iter()
                    .filter(|r| r.seq > after)
                    .take(max_records)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn cfg() -> SyncConfig {
    SyncConfig {
        max_records: 10,
        max_bytes: 1 << 20,
        linger_ms: 500,
        window: 2,
        ack_timeout_ms: 1000,
    }
}

fn ack_for(b: &UplinkBatch) -> BatchAck {
    BatchAck {
        stream: b.stream.clone(),
        batch_id: b.batch_id,
        first_seq: b.first_seq().unwrap(),
        last_seq: b.last_seq().unwrap(),
        stored: b.records.len() as u32,
        duplicates: 0,
    }
}

fn sends(a: &[SyncAction]) -> Vec<&UplinkBatch> {
    a.iter()
        .filter_map(|x| match x {
            SyncAction::Send(b) => Some(b),
            _ => None,
        })
        .collect()
}

#[test]
fn priority_order_window_linger_and_ack_deletes() {
    let mut m = SyncMachine::new(cfg(), vec!["events".into(), "telemetry".into()]);
    let mut mem = Mem::default();
    mem.add("telemetry", 35, 0);
    mem.add("events", 3, 0);
    assert!(
        m.poll(0, 1000, false, &mut mem).is_empty(),
        "disconnected: nothing sent"
    );
    m.on_connected();
    let a = m.poll(0, 1000, false, &mut mem);
    let s = sends(&a);
    assert_eq!(s[0].stream, "events", "highest priority first");
    assert_eq!(
        s.iter().filter(|b| b.stream == "telemetry").count(),
        2,
        "window of 2"
    );
    assert_eq!(m.inflight(), 3);
    // Acks delete exactly the acked ranges and free the window.
    let acks: Vec<BatchAck> = s.iter().map(|b| ack_for(b)).collect();
    for ack in &acks {
        for act in m.on_ack(ack) {
            if let SyncAction::Delete {
                stream,
                first,
                last,
            } = act
            {
                mem.delete(&stream, first, last);
            }
        }
    }
    assert_eq!(mem.len(), 15);
    // A fresh, partial batch lingers until it is old enough (or a flush).
    mem.add("events", 1, 900);
    let a = m.poll(10, 1000, false, &mut mem);
    assert!(
        sends(&a).iter().all(|b| b.stream == "telemetry"),
        "young partial event batch waits"
    );
    assert!(
        sends(&m.poll(20, 1400, false, &mut mem))
            .iter()
            .any(|b| b.stream == "events")
    );
}

#[test]
fn disconnect_and_timeout_resend_and_nothing_is_deleted_without_ack() {
    let mut m = SyncMachine::new(cfg(), vec!["telemetry".into()]);
    let mut mem = Mem::default();
    mem.add("telemetry", 15, 0);
    m.on_connected();
    let first = sends(&m.poll(0, 1000, true, &mut mem))
        .iter()
        .map(|b| b.batch_id)
        .collect::<Vec<_>>();
    assert_eq!(first, vec![1, 11]);
    m.on_disconnected();
    m.on_connected();
    let again = sends(&m.poll(0, 1000, true, &mut mem))
        .iter()
        .map(|b| b.batch_id)
        .collect::<Vec<_>>();
    assert_eq!(again, first, "same batches again after reconnect");
    // No ack within the timeout → resend.
    let later = m.poll(5000, 6000, true, &mut mem);
    assert_eq!(sends(&later).len(), 2);
    assert!(m.stats().resends >= 1);
    assert_eq!(mem.len(), 15, "nothing deleted without an ack");
}

proptest! {
    /// Under random losses, disconnects and timeouts, every record is eventually
    /// delivered and deleted, and only after its ack.
    #[test]
    fn eventually_everything_is_delivered_and_only_acked_records_deleted(
        steps in prop::collection::vec((0u8..10, any::<bool>()), 50..300),
    ) {
        let mut m = SyncMachine::new(cfg(), vec!["events".into(), "telemetry".into()]);
        let mut mem = Mem::default();
        let mut delivered: BTreeSet<u64> = BTreeSet::new();
        let mut deleted: BTreeSet<u64> = BTreeSet::new();
        let mut now = 0u64;
        m.on_connected();
        for (kind, lose) in steps {
            now += 100;
            match kind {
                0..=3 => mem.add(if kind == 0 { "events" } else { "telemetry" }, 3, now),
                4 => m.on_disconnected(),
                5 => m.on_connected(),
                _ => {
                    for act in m.poll(now, now, false, &mut mem) {
                        if let SyncAction::Send(b) = act {
                            if lose {
                                continue; // batch or its ack lost
                            }
                            delivered.extend(b.records.iter().map(|r| r.seq));
                            for d in m.on_ack(&ack_for(&b)) {
                                if let SyncAction::Delete { stream, first, last } = d {
                                    for r in mem.records.get(&stream).into_iter().flatten() {
                                        if r.seq >= first && r.seq <= last {
                                            prop_assert!(delivered.contains(&r.seq), "deleted before delivery");
                                            deleted.insert(r.seq);
                                        }
                                    }
                                    mem.delete(&stream, first, last);
                                }
                            }
                        }
                    }
                }
            }
        }
        // Drain with a healthy link.
        m.on_connected();
        for _ in 0..1000 {
            now += 2000;
            let acts = m.poll(now, now, true, &mut mem);
            if acts.is_empty() && mem.len() == 0 {
                break;
            }
            for act in acts {
                if let SyncAction::Send(b) = act {
                    delivered.extend(b.records.iter().map(|r| r.seq));
                    for d in m.on_ack(&ack_for(&b)) {
                        if let SyncAction::Delete { stream, first, last } = d {
                            mem.delete(&stream, first, last);
                            deleted.extend(first..=last);
                        }
                    }
                }
            }
        }
        prop_assert_eq!(mem.len(), 0);
        let all: BTreeSet<u64> = (1..=mem.next).collect();
        prop_assert_eq!(&delivered, &all);
    }
}
