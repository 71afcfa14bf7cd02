//! The offline store: everything the agent produces waits here, through any outage,
//! until the bridge acknowledges it.
//!
//! # On-disk format
//!
//! One SQLite database (`{data_dir}/store.db`, WAL journal `store.db-wal` with its index
//! `store.db-shm`) and one small file (`{data_dir}/store.seq`):
//!
//! ```sql
//! meta(key TEXT PRIMARY KEY, value INTEGER)   -- 'schema' = 2, 'next_seq' (see below)
//! stream_{name}(seq INTEGER PRIMARY KEY,      -- one table per stream; per-device
//!               ts_ms INTEGER,                --   sequence, never reused
//!               size INTEGER,                 -- accounted size (see invariant 3)
//!               body BLOB)
//! counters(name TEXT PRIMARY KEY, value INTEGER)   -- acked/rejected/evicted per stream
//! evicted_log(id INTEGER PRIMARY KEY, stream TEXT, first_seq INTEGER, last_seq INTEGER,
//!             count INTEGER, at_ms INTEGER)        -- last 1000 eviction runs, for audits
//! VIEW records(seq, stream, ts_ms, body, size)     -- all stream tables (schema 1's
//!                                                  --   table), for tools reading the file
//! ```
//!
//! Each stream has its own table, so its records are contiguous in the file: acks and
//! evictions take a stream's oldest records and empty whole pages, which later appends
//! reuse. (Schema 1 kept all streams in one table; evicting one stream left every page
//! part-full, and the file grew well past the data it held.) `size` precedes `body` so
//! reading it never walks a large body's overflow pages. A schema 1 file is upgraded at
//! open, once: one transaction moves each stream to its table, then a `VACUUM` rewrites
//! the file (it needs room for a second copy of the file while it runs).
//!
//! An append touches only its stream's table: everything else is derived or written
//! when records are deleted. *Appended* per stream is `records + acked + evicted` (by
//! invariant 1), and the next sequence is `max(MAX(seq) + 1 over the tables,
//! meta.next_seq)`, where `meta.next_seq` is written by every transaction that deletes
//! records (acks, evictions) so an emptied store still resumes where it was. Eviction
//! order comes from the configured stream priorities.
//!
//! `store.seq` holds the upper end of the block of sequence numbers reserved so far
//! (blocks of 10 000, written atomically *before* a sequence from a new block is
//! committed). If the database is ever lost or reset, numbering resumes above that
//! reservation, so a sequence is never reused and the bridge's deduplication by
//! (device, stream, seq) can never mistake a new record for an old one.
//!
//! # Invariants
//!
//! 1. A record is deleted only when acked (the bridge stored it durably) or evicted; every
//!    eviction is counted per stream (`evicted:{stream}`), recorded by sequence range in
//!    `evicted_log` and summarised in the log (see *Logging*).
//! 2. Sequences strictly increase in commit order; a record's sequence is assigned in the
//!    transaction that commits it.
//! 3. **The budget bounds the files on disk.** With `B = max_bytes`, the store's files
//!    (`store.db`, `-wal`, `-shm`, a rollback `-journal` if any, and `store.seq`) never
//!    add up to more than `B + C`, where `C` = [`DISK_OVERHEAD`] = 352 KiB. [`Layout`]
//!    splits `B` with a step `S = clamp(B / 32, 16 KiB, 4 MiB)`:
//!    - *Records*: their accounted size (Σ [`accounted`]: body + [`ROW_OVERHEAD`], in
//!      whole pages once a record spills past a leaf page) never exceeds the record
//!      budget `R ≈ B − 3·(S − 16 KiB)` (`R = B` up to `B` = 512 KiB). When an append
//!      would exceed it, [`WhenFull`] decides: evict the lowest-priority, oldest records
//!      whose priority is not above the new one's, or refuse the new record. A record
//!      larger than `min(R, S)` is refused outright. Refusals are counted
//!      (`rejected:{stream}`), never silent.
//!    - *Database file*: capped by SQLite itself (`max_page_count`) at `R + 128 KiB`: the
//!      records (contiguous per stream, so their pages hold about what they account for)
//!      plus fixed pages (schema, counters, the eviction log, each stream table's root
//!      and part-full first and last page). `auto_vacuum = INCREMENTAL`: when acks leave
//!      at least `S` and a quarter of the file free, the free pages are returned to the
//!      file system in small steps and the WAL is truncated, so a drained store shrinks.
//!    - *WAL*: auto-checkpointed as soon as it holds `S` of frames, and no transaction
//!      writes more than `S` of new records plus `S` of deleted ones (an append or ack
//!      larger than that is split into several transactions), so it never holds more than
//!      `3·S` of frames plus one transaction's fixed pages (32 frames: enough for the
//!      three built-in streams, measured at most 17; each further stream written in the
//!      same transaction may add 4); `journal_size_limit` cuts it back to `S` after each
//!      checkpoint. Deleted content is not overwritten (`secure_delete` off), so a deleted
//!      record's overflow pages cost no frames.
//!    - `C` covers the fixed database pages (128 KiB), the WAL's floor (`3 × 16 KiB` plus
//!      32 frames), the wal-index (32 KiB) and `store.seq`; the WAL above its floor
//!      (`3·(S − 16 KiB)`) comes out of `R`, so `C` does not grow with the budget.
//!
//!    The bound assumes no other process keeps a read transaction open on the database
//!    (checkpoints could not finish). A file over its cap at open (from an older build, or
//!    a budget lowered since) is trimmed: down to `R` by eviction under
//!    `evict_lowest_oldest` (under `reject_new`, as acks drain it), then vacuumed.
//! 4. A write that hits the file cap — records taking more pages than they account for,
//!    or a really full disk — is retried record by record: under `evict_lowest_oldest`
//!    each retry first evicts, in its own transaction, a slice of the records the policy
//!    allows (lowest priority, oldest, never above the record's priority); once none is
//!    left, and always under `reject_new`, the record is refused ([`Rejected::DiskFull`])
//!    and counted.
//! 5. A database that fails to open or fails `PRAGMA quick_check` is moved aside
//!    (`store.db.corrupt-{unix}`) and replaced by an empty one; [`Store::open`] reports it
//!    so the agent raises an event. A corrupt file never causes a crash loop.
//!
//! An append is one transaction when its records account for at most `S` bytes (2 MiB
//! with the default 64 MiB budget); a larger batch is committed in `S`-sized
//! transactions, in order, and an error part-way returns `Err` with the earlier ones kept.
//!
//! # Logging
//!
//! A store at its budget may evict on every append, so evictions and refusals are not
//! logged one by one: they are counted (`counters`, `evicted_log`, [`Store::stats`]) and
//! summarised at WARN in one line per [`SUMMARY_INTERVAL_MS`] (10 s) at most — the first
//! eviction or refusal after a quiet interval at once, then, at the first append or ack
//! once the interval has passed, what accumulated: per stream, records and bytes evicted,
//! the sequence range, and records refused. Whatever is pending is logged when the store
//! is dropped.
//!
//! # Durability
//!
//! `synchronous = NORMAL` (default): a committed append survives a process crash (SIGKILL)
//! but a power cut may lose the transactions since the last WAL sync — at most the WAL's
//! un-checkpointed tail, bounded by the auto-checkpoint at `S` (16 KiB to 4 MiB). `FULL`
//! syncs the WAL on every commit: nothing committed is lost on power cut, at a cost in
//! ingest rate (see `docs/benchmarks.md`). Checkpoints sync the WAL and the database in
//! both modes.

mod append;
mod budget;
pub mod config;
mod sql;
mod summary;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use outpost_protocol::uplink::Record;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

pub use budget::{DISK_OVERHEAD, Layout, PAGE, ROW_OVERHEAD, accounted};
pub use config::{Durability, StoreConfig, StoreSection, WhenFull, default_streams};
pub use sql::SCHEMA_VERSION;
pub use summary::SUMMARY_INTERVAL_MS;

use append::stream_stats;
use sql::{Need, StreamSql};
use summary::SummaryLog;

/// Sequence numbers reserved per `store.seq` write.
const SEQ_BLOCK: u64 = 10_000;
/// Eviction log rows kept.
const EVICTED_LOG_KEEP: i64 = 1000;
/// The store's files, for [`Store::file_bytes`].
const FILES: [&str; 5] = [
    "store.db",
    "store.db-wal",
    "store.db-shm",
    "store.db-journal",
    "store.seq",
];

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("store database: {0}")]
    Db(#[from] rusqlite::Error),
    /// Filesystem failed.
    #[error("store file {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Unknown stream name.
    #[error("unknown stream {0:?}")]
    UnknownStream(String),
    /// A configured stream name that cannot name a table (`[a-z0-9_]`, 1 to 32 bytes).
    #[error("invalid stream name {0:?}")]
    InvalidStream(String),
}

/// Why one record was not stored (counted in `rejected:{stream}`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The record alone is larger than the largest record the budget takes.
    #[error("record of {size} bytes exceeds the largest the store takes ({budget})")]
    TooLarge {
        /// Accounted size.
        size: u64,
        /// The largest accounted size taken ([`Layout::max_record`]).
        budget: u64,
    },
    /// The budget is full and the policy refused it.
    #[error("store full: no room for a {stream} record")]
    Full {
        /// Stream.
        stream: String,
    },
    /// The file cap (or the disk) is full even after evicting what the policy allows.
    #[error("disk full: {0}")]
    DiskFull(String),
}

/// A record to append.
#[derive(Debug, Clone)]
pub struct NewRecord<'a> {
    /// Stream name.
    pub stream: &'a str,
    /// Creation time, unix ms.
    pub ts_ms: u64,
    /// Body (JSON by convention).
    pub body: &'a [u8],
}

/// Per-stream figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StreamStats {
    /// Records held.
    pub records: u64,
    /// Accounted bytes held.
    pub bytes: u64,
    /// Records ever appended.
    pub appended: u64,
    /// Records deleted on ack.
    pub acked: u64,
    /// Records evicted for space.
    pub evicted: u64,
    /// Records refused.
    pub rejected: u64,
}

/// Why the store was reset at open.
#[derive(Debug, Clone)]
pub struct ResetReport {
    /// What was wrong.
    pub reason: String,
    /// Where the bad file went.
    pub moved_to: PathBuf,
}

/// The store.
pub struct Store {
    conn: Connection,
    cfg: StoreConfig,
    layout: Layout,
    seq_file: PathBuf,
    next_seq: u64,
    reserved_until: u64,
    streams: BTreeMap<String, StreamStats>,
    /// Statements of every stream that has a table.
    sql: BTreeMap<String, StreamSql>,
    used: u64,
    summary: SummaryLog,
    /// Monotonic milliseconds, for the summary interval.
    clock: fn() -> u64,
}

impl Store {
    /// Opens (or creates) the store in `dir`. A corrupt database is moved aside and
    /// replaced; the report says so.
    pub fn open(dir: &Path, cfg: StoreConfig) -> Result<(Self, Option<ResetReport>), StoreError> {
        if let Some(bad) = cfg.streams.keys().find(|s| !sql::valid_name(s)) {
            return Err(StoreError::InvalidStream(bad.clone()));
        }
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let layout = Layout::new(cfg.max_bytes);
        let db = dir.join("store.db");
        let seq_file = dir.join("store.seq");
        let (conn, reset) = match sql::open_checked(&db, &cfg, &layout) {
            Ok(c) => (c, None),
            Err(reason) => {
                let moved_to = dir.join(format!("store.db.corrupt-{}", crate::clock::unix_now()));
                let _ = std::fs::rename(&db, &moved_to);
                for ext in ["-wal", "-shm", "-journal"] {
                    let _ = std::fs::remove_file(dir.join(format!("store.db{ext}")));
                }
                tracing::error!(%reason, moved_to = %moved_to.display(), "store database unusable; starting a fresh one");
                let c = sql::open_checked(&db, &cfg, &layout).map_err(|e| StoreError::Io {
                    path: db.clone(),
                    source: std::io::Error::other(e),
                })?;
                (c, Some(ResetReport { reason, moved_to }))
            }
        };
        let mut tables = BTreeMap::new();
        for s in cfg.streams.keys() {
            tables.insert(s.clone(), sql::create_stream(&conn, s)?);
        }
        for s in sql::stream_tables(&conn)? {
            if !tables.contains_key(&s) {
                tables.insert(s.clone(), sql::create_stream(&conn, &s)?);
            }
        }
        let reserved = read_seq_file(&seq_file);
        let meta_next: u64 = conn
            .query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .unwrap_or(1) as u64;
        let mut s = Self {
            conn,
            cfg,
            layout,
            seq_file,
            next_seq: 0,
            reserved_until: 0,
            streams: BTreeMap::new(),
            sql: tables,
            used: 0,
            summary: SummaryLog::new(SUMMARY_INTERVAL_MS),
            clock: crate::clock::mono_ms,
        };
        let max_seq = s.load_stats()?;
        // A stream that is no longer configured and has nothing left keeps no table.
        let idle: Vec<String> = s
            .sql
            .keys()
            .filter(|k| !s.cfg.streams.contains_key(*k))
            .filter(|k| s.streams.get(*k).is_none_or(|st| st.records == 0))
            .cloned()
            .collect();
        sql::drop_records_view(&s.conn)?;
        for k in idle {
            sql::drop_stream(&s.conn, &k)?;
            s.sql.remove(&k);
        }
        let names: Vec<&str> = s.sql.keys().map(String::as_str).collect();
        sql::replace_records_view(&s.conn, &names)?;
        let db_next = meta_next.max(max_seq + 1);
        // After a reset the database starts at 1, but sequences up to the reservation may
        // already be at the bridge: continue above it.
        s.next_seq = if reset.is_some() {
            db_next.max(reserved + 1)
        } else {
            db_next.max(1)
        };
        s.reserved_until = reserved.max(s.next_seq - 1);
        s.trim()?;
        Ok((s, reset))
    }

    /// Records and accounted bytes held per stream in the store under `dir`, read without
    /// changing anything (for `outpost-agent status` while the agent is stopped: no table
    /// is created, no corrupt file moved aside). A missing database is an empty store.
    pub fn backlog_read_only(dir: &Path) -> Result<BTreeMap<String, (u64, u64)>, StoreError> {
        let db = dir.join("store.db");
        if !db.exists() {
            return Ok(BTreeMap::new());
        }
        let conn = Connection::open_with_flags(
            &db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let mut out = BTreeMap::new();
        for stream in sql::stream_tables(&conn)? {
            let q = StreamSql::for_stream(&stream);
            let (n, b, _): (i64, i64, i64) =
                conn.query_row(&q.stats, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            out.insert(stream, (n.max(0) as u64, b.max(0) as u64));
        }
        Ok(out)
    }

    /// Reads per-stream figures; returns the highest sequence held.
    fn load_stats(&mut self) -> Result<u64, StoreError> {
        let mut st: BTreeMap<String, StreamStats> = self
            .cfg
            .streams
            .keys()
            .map(|k| (k.clone(), StreamStats::default()))
            .collect();
        let mut max_seq = 0u64;
        for (name, q) in &self.sql {
            let (n, b, m): (i64, i64, i64) = self
                .conn
                .query_row(&q.stats, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            let e = st.entry(name.clone()).or_default();
            e.records = n as u64;
            e.bytes = b as u64;
            max_seq = max_seq.max(m as u64);
        }
        {
            let mut q = self.conn.prepare("SELECT name, value FROM counters")?;
            let rows = q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (name, v) = row?;
                if let Some((kind, stream)) = name.split_once(':') {
                    let e = st.entry(stream.to_owned()).or_default();
                    match kind {
                        "acked" => e.acked = v as u64,
                        "evicted" => e.evicted = v as u64,
                        "rejected" => e.rejected = v as u64,
                        _ => {}
                    }
                }
            }
        }
        for e in st.values_mut() {
            e.appended = e.records + e.acked + e.evicted;
        }
        self.used = st.values().map(|s| s.bytes).sum();
        self.streams = st;
        Ok(max_seq)
    }

    /// Brings a store opened over its budget back within it (evicting, if the policy
    /// allows), returns free pages to the file system, and sets the file cap.
    fn trim(&mut self) -> Result<(), StoreError> {
        if self.cfg.when_full == WhenFull::EvictLowestOldest {
            while self.used > self.layout.records {
                let over = (self.used - self.layout.records).min(self.layout.step);
                if self.evict_tx(Need::UpTo(over), u8::MAX)? == 0 {
                    break;
                }
            }
        }
        self.reclaim(true)?;
        self.log_summary_if_due();
        Ok(())
    }

    /// Returns free pages to the file system once at least `S` and a quarter of the file
    /// are free (or always, with `force`), in steps that keep each transaction small; then
    /// truncates the WAL and sets the file cap again (it cannot be set below the size the
    /// file had).
    fn reclaim(&mut self, force: bool) -> Result<(), StoreError> {
        let (pages, free) = sql::page_counts(&self.conn)?;
        let worth = free * PAGE >= self.layout.step && free * 4 >= pages;
        if free > 0 && (force || worth) {
            let step = (self.layout.step / PAGE / 4).max(2);
            let mut left = free;
            while left > 0 {
                sql::incremental_vacuum(&self.conn, step)?;
                let now = sql::page_counts(&self.conn)?.1;
                if now >= left {
                    break;
                }
                left = now;
            }
            sql::checkpoint_truncate(&self.conn)?;
        }
        if force || worth || pages > self.layout.max_pages {
            sql::set_max_pages(&self.conn, self.layout.max_pages)?;
        }
        Ok(())
    }

    fn log_summary_if_due(&mut self) {
        if let Some(s) = self.summary.due((self.clock)()) {
            summary::log(&s);
        }
    }

    /// Up to `max_records` / `max_bytes` records of `stream` with `seq > after`, oldest
    /// first (at least one record if any exists, however large).
    pub fn next_batch(
        &self,
        stream: &str,
        after: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let Some(q) = self.sql.get(stream) else {
            return Ok(Vec::new());
        };
        let mut q = self.conn.prepare_cached(&q.batch)?;
        let rows = q.query_map(params![after as i64, max_records as i64], |r| {
            Ok(Record {
                seq: r.get::<_, i64>(0)? as u64,
                ts_ms: r.get::<_, i64>(1)? as u64,
                body: r.get(2)?,
            })
        })?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for r in rows {
            let r = r?;
            bytes += r.body.len() + 20;
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(r);
        }
        Ok(out)
    }

    /// Deletes the acked range of `stream`; returns how many records it removed. One
    /// transaction per `S` bytes of records.
    pub fn ack(&mut self, stream: &str, first: u64, last: u64) -> Result<u64, StoreError> {
        let Some(q) = self.sql.get(stream) else {
            return Ok(0);
        };
        let mut total = 0;
        let mut from = first;
        while from <= last {
            let tx = self.conn.transaction()?;
            let (mut n, mut bytes, mut upto) = (0u64, 0u64, None);
            {
                let mut sel = tx.prepare_cached(&q.range)?;
                let mut rows = sel.query(params![from as i64, last as i64])?;
                while let Some(r) = rows.next()? {
                    let (seq, size) = (r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64);
                    if n > 0 && bytes + size > self.layout.step {
                        break;
                    }
                    (n, bytes, upto) = (n + 1, bytes + size, Some(seq));
                }
            }
            let Some(upto) = upto else { break };
            tx.prepare_cached(&q.delete_range)?
                .execute(params![from as i64, upto as i64])?;
            sql::bump(&tx, &format!("acked:{stream}"), n)?;
            sql::save_next_seq(&tx, self.next_seq)?;
            tx.commit()?;
            let e = stream_stats(&mut self.streams, stream);
            e.acked += n;
            e.records -= n;
            e.bytes -= bytes;
            self.used -= bytes;
            total += n;
            from = upto + 1;
        }
        self.reclaim(false)?;
        self.log_summary_if_due();
        Ok(total)
    }

    /// Per-stream figures.
    pub fn stats(&self) -> &BTreeMap<String, StreamStats> {
        &self.streams
    }

    /// The sequence the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The lowest sequence still held (None: empty).
    pub fn oldest_seq(&self) -> Result<Option<u64>, StoreError> {
        let mut min: Option<u64> = None;
        for q in self.sql.values() {
            let m: Option<i64> = self.conn.query_row(&q.min, [], |r| r.get(0))?;
            if let Some(m) = m {
                min = Some(min.map_or(m as u64, |x| x.min(m as u64)));
            }
        }
        Ok(min)
    }

    /// Accounted bytes held.
    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    /// The configured budget (`max_bytes`).
    pub fn budget(&self) -> u64 {
        self.cfg.max_bytes
    }

    /// How the budget is split (record budget, file cap, WAL step).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Streams in descending priority (sync order).
    pub fn streams_by_priority(&self) -> Vec<String> {
        let mut v: Vec<(&String, &u8)> = self.cfg.streams.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        v.into_iter().map(|(s, _)| s.clone()).collect()
    }

    /// Sequence ranges evicted so far (most recent 1000 runs): (stream, first, last, count).
    pub fn evicted_ranges(&self) -> Result<Vec<(String, u64, u64, u64)>, StoreError> {
        let mut q = self
            .conn
            .prepare("SELECT stream, first_seq, last_seq, count FROM evicted_log ORDER BY id")?;
        let rows = q.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
                r.get::<_, i64>(3)? as u64,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Size on disk of the store's files in `dir` (database, WAL, wal-index, rollback
    /// journal, sequence file), bytes: what invariant 3 bounds.
    pub fn file_bytes(dir: &Path) -> u64 {
        FILES
            .iter()
            .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
            .map(|m| m.len())
            .sum()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(s) = self.summary.take() {
            summary::log(&s);
        }
    }
}

fn is_full(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::DiskFull)
}

fn read_seq_file(p: &Path) -> u64 {
    // A decimal u64 and a newline; anything longer is not ours.
    outpost_protocol::fsio::read_capped_string(p, 64)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn write_seq_file(p: &Path, v: u64) -> std::io::Result<()> {
    Ok(outpost_protocol::fsio::write_atomic(
        p,
        format!("{v}\n").as_bytes(),
    )?)
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
