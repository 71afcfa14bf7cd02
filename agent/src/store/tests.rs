use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn cfg(max_bytes: u64) -> StoreConfig {
    StoreConfig {
        max_bytes,
        ..StoreConfig::default()
    }
}

fn rec<'a>(stream: &'a str, body: &'a [u8]) -> NewRecord<'a> {
    NewRecord {
        stream,
        ts_ms: 1,
        body,
    }
}

fn seqs(s: &Store, stream: &str) -> Vec<u64> {
    s.next_batch(stream, 0, usize::MAX >> 1, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect()
}

#[test]
fn append_batch_ack_and_restart() {
    let d = tempfile::tempdir().unwrap();
    let (mut s, reset) = Store::open(d.path(), cfg(1 << 20)).unwrap();
    assert!(reset.is_none());
    let r = s
        .append(&[
            rec("telemetry", b"a"),
            rec("events", b"b"),
            rec("telemetry", b"c"),
        ])
        .unwrap();
    assert_eq!(r, vec![Ok(1), Ok(2), Ok(3)]);
    assert_eq!(seqs(&s, "telemetry"), vec![1, 3]);
    let b = s.next_batch("telemetry", 1, 10, 1000).unwrap();
    assert_eq!((b.len(), b[0].seq, b[0].body.as_slice()), (1, 3, &b"c"[..]));
    assert_eq!(s.ack("telemetry", 1, 3).unwrap(), 2);
    assert!(matches!(
        s.append(&[rec("nope", b"x")]),
        Err(StoreError::UnknownStream(_))
    ));
    drop(s);
    let (mut s, _) = Store::open(d.path(), cfg(1 << 20)).unwrap();
    assert_eq!(seqs(&s, "events"), vec![2]);
    assert_eq!(
        s.append(&[rec("events", b"d")]).unwrap(),
        vec![Ok(4)],
        "sequence continues"
    );
    let t = &s.stats()["telemetry"];
    assert_eq!((t.appended, t.acked, t.records), (2, 2, 0));
}

#[test]
fn full_budget_evicts_lowest_priority_oldest_and_counts_it() {
    let d = tempfile::tempdir().unwrap();
    let body = vec![7u8; 936]; // 1000 bytes accounted
    let (mut s, _) = Store::open(d.path(), cfg(10_000)).unwrap();
    for _ in 0..4 {
        s.append(&[rec("events", &body)]).unwrap();
    }
    for _ in 0..4 {
        s.append(&[rec("telemetry", &body)]).unwrap();
    }
    for _ in 0..2 {
        s.append(&[rec("captures", &body)]).unwrap();
    }
    assert_eq!(s.used_bytes(), 10_000);
    // Two more telemetry records: the two captures go first.
    s.append(&[rec("telemetry", &body), rec("telemetry", &body)])
        .unwrap();
    assert_eq!(s.stats()["captures"].evicted, 2);
    assert_eq!(s.stats()["captures"].records, 0);
    // A capture now cannot displace telemetry or events: refused and counted.
    assert_eq!(
        s.append(&[rec("captures", &body)]).unwrap(),
        vec![Err(Rejected::Full {
            stream: "captures".into()
        })]
    );
    assert_eq!(s.stats()["captures"].rejected, 1);
    // An event displaces the oldest telemetry.
    let first_tel = seqs(&s, "telemetry")[0];
    s.append(&[rec("events", &body)]).unwrap();
    assert_eq!(s.stats()["telemetry"].evicted, 1);
    assert!(!seqs(&s, "telemetry").contains(&first_tel));
    assert!(s.used_bytes() <= 10_000);
    let ranges = s.evicted_ranges().unwrap();
    assert_eq!(ranges.iter().map(|r| r.3).sum::<u64>(), 3);
    assert!(
        ranges
            .iter()
            .any(|r| r.0 == "telemetry" && r.1 == first_tel)
    );
    // Oversized records are refused outright.
    let huge = vec![0u8; 20_000];
    assert!(matches!(
        s.append(&[rec("events", &huge)]).unwrap()[0],
        Err(Rejected::TooLarge { .. })
    ));
}

#[test]
fn equal_priorities_evict_oldest_across_streams_and_dropped_streams_go_first() {
    let d = tempfile::tempdir().unwrap();
    let body = vec![1u8; 936]; // 1000 bytes accounted
    let two = |extra: &str| StoreConfig {
        max_bytes: 6_000,
        streams: [("a", 1u8), ("b", 1), (extra, 2)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        ..StoreConfig::default()
    };
    let (mut s, _) = Store::open(d.path(), two("old")).unwrap();
    s.append(&[rec("old", &body)]).unwrap(); // seq 1, priority 2 for now
    for st in ["a", "b", "b", "a", "b"] {
        s.append(&[rec(st, &body)]).unwrap(); // seqs 2..=6
    }
    drop(s);
    // "old" is no longer configured: its record is the first to go, whatever its age or
    // former priority; then a and b give up their oldest in sequence order, merged.
    let (mut s, _) = Store::open(d.path(), two("new")).unwrap();
    assert_eq!(s.stats()["old"].records, 1);
    s.append(&[rec("new", &body), rec("new", &body), rec("new", &body)])
        .unwrap();
    assert_eq!(s.stats()["old"].evicted, 1);
    assert_eq!(seqs(&s, "a"), vec![5]);
    assert_eq!(seqs(&s, "b"), vec![4, 6]);
    assert_eq!((s.stats()["a"].evicted, s.stats()["b"].evicted), (1, 1));
    // Appended is derived from what is stored, acked and evicted: it survives restarts.
    drop(s);
    let (s, _) = Store::open(d.path(), two("new")).unwrap();
    assert_eq!((s.stats()["a"].appended, s.stats()["b"].appended), (2, 3));
    assert_eq!(s.next_seq(), 10);
}

#[test]
fn reject_new_policy_keeps_what_is_stored() {
    let d = tempfile::tempdir().unwrap();
    let mut c = cfg(2_000);
    c.when_full = WhenFull::RejectNew;
    let (mut s, _) = Store::open(d.path(), c).unwrap();
    let body = vec![1u8; 936];
    assert!(
        s.append(&[rec("captures", &body), rec("captures", &body)])
            .unwrap()
            .iter()
            .all(Result::is_ok)
    );
    assert!(s.append(&[rec("events", &body)]).unwrap()[0].is_err());
    assert_eq!(
        (s.stats()["captures"].evicted, s.stats()["events"].rejected),
        (0, 1)
    );
}

#[test]
fn corrupt_database_is_moved_aside_and_sequences_never_repeat() {
    let d = tempfile::tempdir().unwrap();
    let (mut s, _) = Store::open(d.path(), cfg(1 << 20)).unwrap();
    for _ in 0..5 {
        s.append(&[rec("events", b"x")]).unwrap();
    }
    drop(s);
    for f in ["store.db-wal", "store.db-shm"] {
        let _ = std::fs::remove_file(d.path().join(f));
    }
    std::fs::write(
        d.path().join("store.db"),
        b"this is not a database, it is garbage".repeat(200),
    )
    .unwrap();
    let (mut s, reset) = Store::open(d.path(), cfg(1 << 20)).unwrap();
    let reset = reset.expect("reset reported");
    assert!(reset.moved_to.exists(), "bad file kept for inspection");
    let seq = s.append(&[rec("events", b"y")]).unwrap()[0]
        .clone()
        .unwrap();
    assert!(seq > 5, "sequence {seq} reuses numbers the bridge may hold");
    assert!(seq > SEQ_BLOCK, "continues above the reservation");
}

#[test]
fn a_full_disk_evicts_and_retries_then_refuses_without_crashing() {
    let d = tempfile::tempdir().unwrap();
    let (mut s, _) = Store::open(d.path(), cfg(64 << 20)).unwrap();
    let body = vec![3u8; 3000];
    for _ in 0..200 {
        s.append(&[rec("captures", &body)]).unwrap();
    }
    // Cap the file at its current size: the next appends hit SQLITE_FULL, as on a full disk.
    let pages: i64 = s
        .conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    s.conn
        .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
        .unwrap();
    let r = s.append(&[rec("events", &body)]).unwrap();
    assert!(r[0].is_ok(), "evicting low-priority data made room: {r:?}");
    assert!(s.stats()["captures"].evicted > 0);
    // Keep writing: the file never grows past the cap, and every attempt is either stored
    // or counted as refused.
    let mut refused = 0;
    for _ in 0..400 {
        if s.append(&[rec("events", &body)]).unwrap()[0].is_err() {
            refused += 1;
        }
    }
    let now: i64 = s
        .conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    assert!(
        now <= pages,
        "file grew past the cap: {now} > {pages} pages"
    );
    let ev = &s.stats()["events"];
    assert_eq!(ev.appended + ev.rejected, 401);
    assert_eq!(ev.rejected, refused);
    assert_eq!(
        s.stats()["captures"].records,
        0,
        "all low-priority data given up before events"
    );
}

// ---- model-based property test ---------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<(usize, usize)>), // (stream index, body length)
    Ack(usize, usize),           // stream index, how many of its oldest
    Restart,
}

const STREAMS: [&str; 3] = ["captures", "telemetry", "events"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((0usize..3, 0usize..600), 1..5).prop_map(Op::Append),
        3 => (0usize..3, 0usize..6).prop_map(|(s, n)| Op::Ack(s, n)),
        1 => Just(Op::Restart),
    ]
}

#[derive(Default, Debug)]
struct Model {
    next: u64,
    records: Vec<(u64, usize, u64)>, // (seq, stream, size), seq order
    evicted: [u64; 3],
    rejected: [u64; 3],
}

impl Model {
    fn used(&self) -> u64 {
        self.records.iter().map(|r| r.2).sum()
    }
    fn append(&mut self, s: usize, len: usize, budget: u64) {
        let size = len as u64 + ROW_OVERHEAD;
        let prio = s; // captures 0, telemetry 1, events 2
        if size > budget {
            self.rejected[s] += 1;
            return;
        }
        let need = (self.used() + size).saturating_sub(budget);
        if need > 0 {
            let eligible: u64 = self
                .records
                .iter()
                .filter(|r| r.1 <= prio)
                .map(|r| r.2)
                .sum();
            if eligible < need {
                self.rejected[s] += 1;
                return;
            }
            let mut order: Vec<(usize, u64)> = self
                .records
                .iter()
                .filter(|r| r.1 <= prio)
                .map(|r| (r.1, r.0))
                .collect();
            order.sort();
            let mut freed = 0;
            for (st, seq) in order {
                if freed >= need {
                    break;
                }
                let i = self.records.iter().position(|r| r.0 == seq).unwrap();
                freed += self.records[i].2;
                self.evicted[st] += 1;
                self.records.remove(i);
            }
        }
        self.next += 1;
        self.records.push((self.next, s, size));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn store_behaves_like_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let budget = 4_000;
        let d = tempfile::tempdir().unwrap();
        let (mut s, _) = Store::open(d.path(), cfg(budget)).unwrap();
        let mut m = Model::default();
        for o in ops {
            match o {
                Op::Append(items) => {
                    let bodies: Vec<Vec<u8>> = items.iter().map(|(_, l)| vec![9u8; *l]).collect();
                    let recs: Vec<NewRecord<'_>> = items.iter().zip(&bodies).map(|((st, _), b)| rec(STREAMS[*st], b)).collect();
                    s.append(&recs).unwrap();
                    for (st, l) in items {
                        m.append(st, l, budget);
                    }
                }
                Op::Ack(st, n) => {
                    let mine: Vec<u64> = m.records.iter().filter(|r| r.1 == st).map(|r| r.0).take(n).collect();
                    if let (Some(first), Some(last)) = (mine.first(), mine.last()) {
                        let removed = s.ack(STREAMS[st], *first, *last).unwrap();
                        let before = m.records.len();
                        m.records.retain(|r| !(r.1 == st && r.0 >= *first && r.0 <= *last));
                        prop_assert_eq!(removed as usize, before - m.records.len());
                    }
                }
                Op::Restart => {
                    drop(s);
                    s = Store::open(d.path(), cfg(budget)).unwrap().0;
                }
            }
            prop_assert!(s.used_bytes() <= budget);
            prop_assert_eq!(s.used_bytes(), m.used());
            let mut counted = BTreeMap::new();
            for (i, name) in STREAMS.iter().enumerate() {
                let want: Vec<u64> = m.records.iter().filter(|r| r.1 == i).map(|r| r.0).collect();
                prop_assert_eq!(seqs(&s, name), want, "stream {}", name);
                let st = &s.stats()[*name];
                prop_assert_eq!((st.evicted, st.rejected), (m.evicted[i], m.rejected[i]), "counters of {}", name);
                counted.insert(*name, st.records);
            }
        }
    }
}
