//! The store's budget bounds its files on disk: an offline flood (nothing is ever acked)
//! far larger than the budget never takes the database, WAL, wal-index, journal and
//! sequence file past `max_bytes + DISK_OVERHEAD`; every record offered is stored,
//! evicted or refused, and counted; acking everything shrinks the files again.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use outpost_agent::store::{
    DISK_OVERHEAD, Durability, NewRecord, Rejected, Store, StoreConfig, WhenFull,
};
use rand::{Rng, SeedableRng};

const BUDGET: u64 = 1 << 20;

/// Every file in the store's directory (it holds nothing else), so a file the store did
/// not expect to create is counted too.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// What one stream was offered and what became of it.
#[derive(Debug, Default)]
struct Offered {
    records: u64,
    stored: u64,
    full: u64,
    other_refusals: Vec<String>,
}

struct Flood {
    offered: BTreeMap<&'static str, Offered>,
    /// The largest total seen after a batch.
    peak: u64,
    /// The largest total a thread polling the directory saw while batches ran.
    peak_polled: u64,
    batches: u64,
}

/// Polls the directory's total size from another thread until dropped; keeps the maximum.
struct Poller {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Poller {
    fn start(dir: &Path) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, dir) = (stop.clone(), dir.to_path_buf());
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !s.load(Ordering::Relaxed) {
                peak = peak.max(dir_bytes(&dir));
                std::thread::yield_now();
            }
            peak
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn peak(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Appends mixed batches (telemetry reports, captures of 0.5–16 KiB, events) until
/// `total` body bytes were offered, sampling the store's files after every batch.
fn flood(dir: &Path, cfg: StoreConfig, total: u64, seed: u64) -> (Store, Flood) {
    let bound = cfg.max_bytes + DISK_OVERHEAD;
    let (mut s, _) = Store::open(dir, cfg).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut f = Flood {
        offered: BTreeMap::new(),
        peak: 0,
        peak_polled: 0,
        batches: 0,
    };
    let poller = Poller::start(dir);
    let mut written = 0;
    while written < total {
        let bodies: Vec<(&'static str, Vec<u8>)> = (0..rng.random_range(1..=60))
            .map(|_| {
                let (stream, len) = match rng.random_range(0..100) {
                    0..60 => ("telemetry", rng.random_range(150..900)),
                    60..90 => ("captures", rng.random_range(500..16_000)),
                    _ => ("events", rng.random_range(80..600)),
                };
                // JSON-ish, partly compressible, like the agent's bodies.
                let body = (0..len).map(|i| b"{\"k\":0.123,}"[i % 12] ^ (rng.random::<u8>() & 1));
                (stream, body.collect())
            })
            .collect();
        let recs: Vec<NewRecord<'_>> = bodies
            .iter()
            .map(|(stream, body)| NewRecord {
                stream,
                ts_ms: 1,
                body,
            })
            .collect();
        let outcomes = s.append(&recs).unwrap();
        for ((stream, body), o) in bodies.iter().zip(&outcomes) {
            written += body.len() as u64;
            let e = f.offered.entry(stream).or_default();
            e.records += 1;
            match o {
                Ok(_) => e.stored += 1,
                Err(Rejected::Full { .. }) => e.full += 1,
                Err(other) => e.other_refusals.push(other.to_string()),
            }
        }
        f.batches += 1;
        let on_disk = dir_bytes(dir);
        f.peak = f.peak.max(on_disk);
        assert!(
            on_disk <= bound,
            "batch {}: {on_disk} bytes on disk > {bound}",
            f.batches
        );
    }
    f.peak_polled = poller.peak();
    assert!(
        f.peak_polled <= bound,
        "{} bytes on disk while appending > {bound}",
        f.peak_polled
    );
    (s, f)
}

/// Every record offered is held, evicted or refused, and the store's counters agree.
fn check_accounting(s: &Store, f: &Flood) {
    for (stream, o) in &f.offered {
        let st = &s.stats()[*stream];
        assert!(
            o.other_refusals.is_empty(),
            "{stream}: {:?}",
            o.other_refusals
        );
        assert_eq!(st.appended, o.stored, "{stream}: appended");
        assert_eq!(st.rejected, o.full, "{stream}: refused");
        assert_eq!(
            st.appended,
            st.records + st.evicted,
            "{stream}: held + evicted"
        );
        assert_eq!(o.records, st.records + st.evicted + st.rejected, "{stream}");
        assert_eq!(st.acked, 0);
    }
    assert!(s.used_bytes() <= s.layout().records);
}

/// Acks everything; the files shrink to an empty store's.
fn ack_all_and_shrink(dir: &Path, mut s: Store) {
    let before = dir_bytes(dir);
    let next = s.next_seq();
    for stream in s.streams_by_priority() {
        s.ack(&stream, 1, next).unwrap();
        assert!(dir_bytes(dir) <= BUDGET + DISK_OVERHEAD);
    }
    assert_eq!(s.used_bytes(), 0);
    assert_eq!(s.oldest_seq().unwrap(), None);
    let after = dir_bytes(dir);
    assert!(
        after < before / 2 && after <= DISK_OVERHEAD,
        "files did not shrink: {before} -> {after} bytes"
    );
    drop(s);
    assert!(dir_bytes(dir) <= DISK_OVERHEAD);
}

fn cfg(durability: Durability) -> StoreConfig {
    StoreConfig {
        max_bytes: BUDGET,
        durability,
        ..StoreConfig::default()
    }
}

fn evicting_flood(durability: Durability) {
    let d = tempfile::tempdir().unwrap();
    let (s, f) = flood(d.path(), cfg(durability), 50 << 20, 1);
    check_accounting(&s, &f);
    let evicted: u64 = s.stats().values().map(|v| v.evicted).sum();
    assert!(evicted > 5_000, "only {evicted} evictions");
    // Under evict_lowest_oldest a record is refused only when the records it may
    // displace (its priority or lower) hold too little: never events, the highest.
    assert_eq!(f.offered["events"].full, 0);
    eprintln!(
        "{durability:?}: {} batches, {evicted} evicted, peak on disk {} after a batch and {} \
         polled (budget {BUDGET} + {DISK_OVERHEAD})",
        f.batches, f.peak, f.peak_polled
    );
    ack_all_and_shrink(d.path(), s);
}

#[test]
fn an_offline_flood_stays_within_the_budget_on_disk() {
    evicting_flood(Durability::Normal);
}

#[test]
fn an_offline_flood_stays_within_the_budget_on_disk_with_full_durability() {
    evicting_flood(Durability::Full);
}

#[test]
fn with_equal_priorities_a_flood_evicts_and_never_refuses() {
    let d = tempfile::tempdir().unwrap();
    let mut c = cfg(Durability::Normal);
    c.streams.values_mut().for_each(|p| *p = 1);
    let (s, f) = flood(d.path(), c, 20 << 20, 2);
    check_accounting(&s, &f);
    assert!(f.offered.values().all(|o| o.full == 0), "{:?}", f.offered);
    ack_all_and_shrink(d.path(), s);
}

#[test]
fn under_reject_new_a_flood_is_refused_and_nothing_evicted() {
    let d = tempfile::tempdir().unwrap();
    let mut c = cfg(Durability::Normal);
    c.when_full = WhenFull::RejectNew;
    let (s, f) = flood(d.path(), c, 20 << 20, 3);
    check_accounting(&s, &f);
    assert!(s.stats().values().all(|v| v.evicted == 0));
    assert!(f.offered.values().all(|o| o.full > 0), "{:?}", f.offered);
    ack_all_and_shrink(d.path(), s);
}

#[test]
fn a_store_reopened_with_a_smaller_budget_is_trimmed_to_it() {
    let d = tempfile::tempdir().unwrap();
    let big = StoreConfig {
        max_bytes: 8 << 20,
        ..StoreConfig::default()
    };
    let (s, _) = flood(d.path(), big, 6 << 20, 4);
    drop(s);
    assert!(dir_bytes(d.path()) > 4 * BUDGET);
    let (s, _) = Store::open(d.path(), cfg(Durability::Normal)).unwrap();
    assert!(s.used_bytes() <= s.layout().records);
    assert!(
        dir_bytes(d.path()) <= BUDGET + DISK_OVERHEAD,
        "{} bytes on disk after reopening",
        dir_bytes(d.path())
    );
    let ev = &s.stats()["events"];
    assert_eq!(ev.appended, ev.records + ev.evicted);
}
