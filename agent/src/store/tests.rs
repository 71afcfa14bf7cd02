use std::collections::BTreeMap;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};

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
    // One event first: its table's only page is now too full for a second one.
    s.append(&[rec("events", &body)]).unwrap();
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
    assert_eq!(ev.appended + ev.rejected, 402);
    assert_eq!(ev.rejected, refused);
    assert_eq!(
        s.stats()["captures"].records,
        0,
        "all low-priority data given up before events"
    );
    // Captures cannot displace events, even at the file cap: they take the room of older
    // captures or are refused, and either way it is counted.
    let events = (s.stats()["events"].records, s.stats()["events"].evicted);
    for _ in 0..20 {
        s.append(&[rec("captures", &body)]).unwrap();
    }
    let c = &s.stats()["captures"];
    assert_eq!((c.appended - 200) + c.rejected, 20);
    assert_eq!(c.appended, c.records + c.evicted);
    let c_rejected = c.rejected;
    assert_eq!(
        (s.stats()["events"].records, s.stats()["events"].evicted),
        events
    );
    // With no capture left to give up, a capture too large for the pages left free is
    // refused, counted, and nothing else is touched.
    let held = seqs(&s, "captures");
    if let (Some(a), Some(b)) = (held.first(), held.last()) {
        s.ack("captures", *a, *b).unwrap();
    }
    let big = vec![4u8; 12_000];
    let r = s.append(&[rec("captures", &big)]).unwrap();
    assert!(matches!(r[0], Err(Rejected::DiskFull(_))), "{r:?}");
    assert_eq!(s.stats()["captures"].rejected, c_rejected + 1);
    assert_eq!(s.stats()["events"].evicted, events.1);
}

#[test]
fn at_the_file_cap_reject_new_refuses_without_evicting() {
    let d = tempfile::tempdir().unwrap();
    let mut c = cfg(64 << 20);
    c.when_full = WhenFull::RejectNew;
    let (mut s, _) = Store::open(d.path(), c).unwrap();
    let body = vec![3u8; 3000];
    s.append(&[rec("captures", &body), rec("events", &body)])
        .unwrap();
    let pages: i64 = s
        .conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    s.conn
        .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
        .unwrap();
    let r = s
        .append(&[rec("events", &body), rec("events", &body)])
        .unwrap();
    assert!(
        r.iter().all(|r| matches!(r, Err(Rejected::DiskFull(_)))),
        "{r:?}"
    );
    assert_eq!(
        (s.stats()["events"].rejected, s.stats()["captures"].evicted),
        (2, 0)
    );
    assert_eq!(
        s.stats()["captures"].records,
        1,
        "nothing evicted under reject_new"
    );
}

#[test]
fn tools_reading_the_file_still_see_one_records_table() {
    let d = tempfile::tempdir().unwrap();
    let (mut s, _) = Store::open(d.path(), cfg(10_000)).unwrap();
    let body = vec![7u8; 936];
    for st in ["events", "telemetry", "captures", "captures", "telemetry"] {
        s.append(&[rec(st, &body)]).unwrap();
    }
    for _ in 0..8 {
        s.append(&[rec("events", &body)]).unwrap();
    }
    s.ack("events", 1, 1).unwrap();
    // Another connection, while the store is open (as the bridge's durability test does).
    let c = rusqlite::Connection::open(d.path().join("store.db")).unwrap();
    let n: i64 = c
        .query_row("SELECT COUNT(*) FROM records", [], |r| r.get(0))
        .unwrap();
    let held: u64 = s.stats().values().map(|v| v.records).sum();
    assert_eq!(n as u64, held);
    let by_stream: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM records WHERE stream = 'events' AND size = 1000",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(by_stream as u64, s.stats()["events"].records);
    let logged: i64 = c
        .query_row("SELECT SUM(count) FROM evicted_log", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        logged as u64,
        s.stats().values().map(|v| v.evicted).sum::<u64>()
    );
    let next: i64 = c
        .query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(next as u64, s.next_seq());
}

// ---- eviction log volume -----------------------------------------------------------------

thread_local! {
    static FAKE_MS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn fake_now() -> u64 {
    FAKE_MS.with(|c| c.get())
}

/// Formatted WARN-and-above output of every test in this binary, each line tagged with its
/// thread. Global: a scoped subscriber can miss events when another thread registers the
/// same callsite at the same time.
fn captured_logs() -> &'static std::sync::Mutex<Vec<u8>> {
    static LOGS: std::sync::OnceLock<&'static std::sync::Mutex<Vec<u8>>> =
        std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buf: &'static std::sync::Mutex<Vec<u8>> = Box::leak(Box::default());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Captured(buf))
            .with_ansi(false)
            .with_thread_ids(true)
            .with_max_level(tracing::Level::WARN)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
        buf
    })
}

struct Captured(&'static std::sync::Mutex<Vec<u8>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn field(line: &str, name: &str) -> u64 {
    let at = line.find(&format!(" {name}=")).expect(name) + name.len() + 2;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn evictions_are_logged_once_per_interval_not_once_per_eviction() {
    let logs = captured_logs();
    let me = format!("{:?} ", std::thread::current().id());
    let d = tempfile::tempdir().unwrap();
    let step_ms = 50;
    let batches = 4_000u64;
    let (mut s, _) = Store::open(d.path(), cfg(64 << 10)).unwrap();
    s.clock = fake_now;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for i in 0..batches {
        FAKE_MS.with(|c| c.set(i * step_ms));
        let bodies: Vec<(&str, Vec<u8>)> = (0..rng.random_range(1..8))
            .map(|_| {
                let st = STREAMS[rng.random_range(0..3)];
                (st, vec![1u8; rng.random_range(50..3000)])
            })
            .collect();
        let recs: Vec<NewRecord<'_>> = bodies.iter().map(|(st, b)| rec(st, b)).collect();
        s.append(&recs).unwrap();
    }
    let evicted: u64 = s.stats().values().map(|v| v.evicted).sum();
    let refused: u64 = s.stats().values().map(|v| v.rejected).sum();
    drop(s); // logs what is pending
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let mine: Vec<&str> = text.lines().filter(|l| l.contains(&me)).collect();
    let lines: Vec<&str> = mine
        .iter()
        .copied()
        .filter(|l| l.contains("store full"))
        .collect();
    let intervals = batches * step_ms / SUMMARY_INTERVAL_MS;
    assert!(evicted > 1_000, "the flood evicted only {evicted} records");
    // One line per interval, the first at once, and the one left at close.
    assert!(
        !lines.is_empty() && lines.len() as u64 <= intervals + 2,
        "{} lines for {intervals} intervals",
        lines.len()
    );
    assert!(lines.iter().all(|l| l.contains("WARN")));
    // The summaries account for every eviction and refusal.
    let sum = |f: &str| lines.iter().map(|l| field(l, f)).sum::<u64>();
    assert_eq!((sum("evicted"), sum("refused")), (evicted, refused));
    assert_eq!(mine.len(), lines.len(), "nothing else logged: {mine:#?}");
}

#[test]
fn a_schema_1_database_is_upgraded_in_place() {
    let d = tempfile::tempdir().unwrap();
    {
        let c = rusqlite::Connection::open(d.path().join("store.db")).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE records (seq INTEGER PRIMARY KEY, stream TEXT NOT NULL,
                 ts_ms INTEGER NOT NULL, body BLOB NOT NULL, size INTEGER NOT NULL);
             CREATE INDEX records_stream_seq ON records (stream, seq);
             CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE evicted_log (id INTEGER PRIMARY KEY, stream TEXT NOT NULL,
                 first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
                 count INTEGER NOT NULL, at_ms INTEGER NOT NULL);
             INSERT INTO meta VALUES ('schema', 1), ('next_seq', 9);
             INSERT INTO counters VALUES ('acked:telemetry', 3), ('evicted:captures', 2);
             INSERT INTO records VALUES (6, 'telemetry', 1, x'aa', 65),
                 (7, 'captures', 1, zeroblob(5000), 5064), (8, 'events', 1, x'bb', 65);",
        )
        .unwrap();
    }
    let (mut s, reset) = Store::open(d.path(), cfg(1 << 20)).unwrap();
    assert!(reset.is_none(), "upgraded, not replaced");
    assert_eq!(seqs(&s, "telemetry"), vec![6]);
    assert_eq!(
        s.next_batch("captures", 0, 10, 1 << 20).unwrap()[0]
            .body
            .len(),
        5000
    );
    let t = &s.stats()["telemetry"];
    assert_eq!((t.records, t.acked, t.appended), (1, 3, 4));
    assert_eq!(
        s.stats()["captures"].bytes,
        8192,
        "re-accounted in whole pages"
    );
    assert_eq!(s.next_seq(), 9);
    let v: i64 = s
        .conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, 2, "incremental vacuum enabled");
    assert_eq!(s.append(&[rec("events", b"c")]).unwrap(), vec![Ok(9)]);
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
