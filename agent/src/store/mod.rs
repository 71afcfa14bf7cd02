//! The offline store: everything the agent produces waits here, through any outage,
//! until the bridge acknowledges it.
//!
//! # On-disk format
//!
//! One SQLite database (`{data_dir}/store.db`, WAL journal) and one small file
//! (`{data_dir}/store.seq`):
//!
//! ```sql
//! meta(key TEXT PRIMARY KEY, value INTEGER)   -- 'schema' = 1, 'next_seq' (see below)
//! records(seq INTEGER PRIMARY KEY,            -- per-device sequence, never reused
//!         stream TEXT, ts_ms INTEGER, body BLOB, size INTEGER)
//!   index (stream, seq)
//! counters(name TEXT PRIMARY KEY, value INTEGER)   -- acked/rejected/evicted per stream
//! evicted_log(id INTEGER PRIMARY KEY, stream TEXT, first_seq INTEGER, last_seq INTEGER,
//!             count INTEGER, at_ms INTEGER)        -- last 1000 eviction runs, for audits
//! ```
//!
//! An append touches only `records` and its one index: everything else is derived or
//! written when records are deleted. *Appended* per stream is `records + acked + evicted`
//! (by invariant 1), and the next sequence is `max(MAX(records.seq) + 1, meta.next_seq)`,
//! where `meta.next_seq` is written by every transaction that deletes records (acks,
//! evictions) so an emptied store still resumes where it was. Eviction order comes from
//! the configured stream priorities, read through the (stream, seq) index.
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
//!    eviction is counted per stream (`evicted:{stream}`) and logged by sequence range.
//! 2. Sequences strictly increase in commit order; a record's sequence is assigned in the
//!    transaction that commits it.
//! 3. Logical size (Σ body + [`ROW_OVERHEAD`]) never exceeds `max_bytes`. When an append
//!    would exceed it, [`WhenFull`] decides: evict the lowest-priority, oldest records
//!    whose priority is not above the new one's, or refuse the new record. Refusals are
//!    counted (`rejected:{stream}`), never silent.
//! 4. The file itself is capped by SQLite (`max_page_count`) at
//!    `max_bytes × 2 + 1 MiB` (B-tree pages are never completely full, and freed pages are
//!    reused rather than returned to the file system); the WAL is truncated to 4 MiB after
//!    checkpoints (`journal_size_limit`). An insert that hits the cap — or a really full
//!    disk — evicts a slice of the lowest-priority data and retries once, then refuses.
//! 5. A database that fails to open or fails `PRAGMA quick_check` is moved aside
//!    (`store.db.corrupt-{unix}`) and replaced by an empty one; [`Store::open`] reports it
//!    so the agent raises an event. A corrupt file never causes a crash loop.
//!
//! # Durability
//!
//! `synchronous = NORMAL` (default): a committed append survives a process crash (SIGKILL)
//! but a power cut may lose the transactions since the last WAL sync — at most the WAL's
//! un-checkpointed tail, bounded by the 1000-page auto-checkpoint (~4 MiB). `FULL` syncs
//! the WAL on every commit: nothing committed is lost on power cut, at a cost in ingest
//! rate (see `docs/benchmarks.md`).

mod sql;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use outpost_protocol::uplink::Record;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

pub use sql::SCHEMA_VERSION;

/// Bytes accounted per record on top of its body (row header, key, index entry).
pub const ROW_OVERHEAD: u64 = 64;
/// Sequence numbers reserved per `store.seq` write.
const SEQ_BLOCK: u64 = 10_000;
/// Eviction log rows kept.
const EVICTED_LOG_KEEP: i64 = 1000;

/// What to do when the budget is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Evict the lowest-priority, oldest records (never ones of higher priority than the
    /// incoming record); refuse the record if that is not enough.
    EvictLowestOldest,
    /// Keep what is stored; refuse new records.
    RejectNew,
}

/// Commit durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous = NORMAL`: crash-safe, may lose the last commits on power loss.
    Normal,
    /// `synchronous = FULL`: every commit synced.
    Full,
}

/// Store settings.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Logical budget in bytes, across all streams.
    pub max_bytes: u64,
    /// Policy when the budget is reached.
    pub when_full: WhenFull,
    /// Commit durability.
    pub durability: Durability,
    /// Streams and their priority (higher is kept longer).
    pub streams: BTreeMap<String, u8>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 20,
            when_full: WhenFull::EvictLowestOldest,
            durability: Durability::Normal,
            streams: default_streams(),
        }
    }
}

/// The built-in streams: captures are evicted first, then telemetry; events last.
pub fn default_streams() -> BTreeMap<String, u8> {
    [("captures", 0u8), ("telemetry", 1), ("events", 2)]
        .into_iter()
        .map(|(s, p)| (s.to_owned(), p))
        .collect()
}

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
}

/// Why one record was not stored (counted in `rejected:{stream}`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The record alone is larger than the budget.
    #[error("record of {size} bytes exceeds the store budget of {budget}")]
    TooLarge {
        /// Accounted size.
        size: u64,
        /// Budget.
        budget: u64,
    },
    /// The budget is full and the policy refused it.
    #[error("store full: no room for a {stream} record")]
    Full {
        /// Stream.
        stream: String,
    },
    /// The disk (or the file cap) is full even after evicting.
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
    seq_file: PathBuf,
    next_seq: u64,
    reserved_until: u64,
    streams: BTreeMap<String, StreamStats>,
    used: u64,
}

impl Store {
    /// Opens (or creates) the store in `dir`. A corrupt database is moved aside and
    /// replaced; the report says so.
    pub fn open(dir: &Path, cfg: StoreConfig) -> Result<(Self, Option<ResetReport>), StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let db = dir.join("store.db");
        let seq_file = dir.join("store.seq");
        let (conn, reset) = match sql::open_checked(&db, &cfg) {
            Ok(c) => (c, None),
            Err(reason) => {
                let moved_to = dir.join(format!("store.db.corrupt-{}", crate::clock::unix_now()));
                let _ = std::fs::rename(&db, &moved_to);
                for ext in ["-wal", "-shm"] {
                    let _ = std::fs::remove_file(dir.join(format!("store.db{ext}")));
                }
                tracing::error!(%reason, moved_to = %moved_to.display(), "store database unusable; starting a fresh one");
                let c = sql::open_checked(&db, &cfg).map_err(|e| StoreError::Io {
                    path: db.clone(),
                    source: std::io::Error::other(e),
                })?;
                (c, Some(ResetReport { reason, moved_to }))
            }
        };
        let reserved = read_seq_file(&seq_file);
        let meta_next: u64 = conn
            .query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .unwrap_or(1) as u64;
        let max_seq: u64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM records", [], |r| {
            r.get::<_, i64>(0)
        })? as u64;
        let db_next = meta_next.max(max_seq + 1);
        // After a reset the database starts at 1, but sequences up to the reservation may
        // already be at the bridge: continue above it.
        let next_seq = if reset.is_some() {
            db_next.max(reserved + 1)
        } else {
            db_next.max(1)
        };
        let mut s = Self {
            conn,
            cfg,
            seq_file,
            next_seq,
            reserved_until: reserved.max(next_seq - 1),
            streams: BTreeMap::new(),
            used: 0,
        };
        s.load_stats()?;
        Ok((s, reset))
    }

    fn load_stats(&mut self) -> Result<(), StoreError> {
        let mut st: BTreeMap<String, StreamStats> = self
            .cfg
            .streams
            .keys()
            .map(|k| (k.clone(), StreamStats::default()))
            .collect();
        {
            let mut q = self.conn.prepare(
                "SELECT stream, COUNT(*), COALESCE(SUM(size), 0) FROM records GROUP BY stream",
            )?;
            let rows = q.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (s, n, b) = row?;
                let e = st.entry(s).or_default();
                e.records = n as u64;
                e.bytes = b as u64;
            }
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
        Ok(())
    }

    /// Appends records in one transaction. Each gets its sequence or the reason it was
    /// refused; refusals are counted.
    pub fn append(
        &mut self,
        recs: &[NewRecord<'_>],
    ) -> Result<Vec<Result<u64, Rejected>>, StoreError> {
        for r in recs {
            if !self.cfg.streams.contains_key(r.stream) {
                return Err(StoreError::UnknownStream(r.stream.to_owned()));
            }
        }
        match self.append_tx(recs) {
            Err(StoreError::Db(e)) if is_full(&e) => {
                // The file cap or the disk is full: free a slice of low-priority data
                // (reused pages, so the file does not grow) and try once more.
                let target = (self.used / 10).max(64 * 1024);
                self.evict_bytes(target, u8::MAX)?;
                match self.append_tx(recs) {
                    Err(StoreError::Db(e)) if is_full(&e) => {
                        let msg = e.to_string();
                        for r in recs {
                            self.bump(&format!("rejected:{}", r.stream), 1)?;
                        }
                        self.load_stats()?;
                        Ok(recs
                            .iter()
                            .map(|_| Err(Rejected::DiskFull(msg.clone())))
                            .collect())
                    }
                    other => other,
                }
            }
            other => other,
        }
    }

    fn append_tx(
        &mut self,
        recs: &[NewRecord<'_>],
    ) -> Result<Vec<Result<u64, Rejected>>, StoreError> {
        let snapshot = (self.next_seq, self.used, self.streams.clone());
        let r = self.append_inner(recs);
        if r.is_err() {
            // Rolled back: forget in-memory changes too.
            (self.next_seq, self.used, self.streams) = snapshot;
        }
        r
    }

    fn append_inner(
        &mut self,
        recs: &[NewRecord<'_>],
    ) -> Result<Vec<Result<u64, Rejected>>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut out = Vec::with_capacity(recs.len());
        let mut evictions: Vec<(String, u64, u64, u64)> = Vec::new();
        // Refusals are summed per stream and counted once per transaction.
        let mut rejected: BTreeMap<&str, u64> = BTreeMap::new();
        let levels = eviction_levels(&self.cfg, &self.streams);
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO records (seq, stream, ts_ms, body, size) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for r in recs {
                let prio = self.cfg.streams[r.stream];
                let size = r.body.len() as u64 + ROW_OVERHEAD;
                let verdict = if size > self.cfg.max_bytes {
                    Err(Rejected::TooLarge {
                        size,
                        budget: self.cfg.max_bytes,
                    })
                } else if self.used + size > self.cfg.max_bytes
                    && self.cfg.when_full == WhenFull::RejectNew
                {
                    Err(Rejected::Full {
                        stream: r.stream.to_owned(),
                    })
                } else {
                    let need = (self.used + size).saturating_sub(self.cfg.max_bytes);
                    let freed = if need > 0 {
                        sql::evict(&tx, need, &levels, prio, &mut evictions)?
                    } else {
                        0
                    };
                    if freed < need {
                        Err(Rejected::Full {
                            stream: r.stream.to_owned(),
                        })
                    } else {
                        self.used -= freed;
                        Ok(())
                    }
                };
                match verdict {
                    Err(e) => {
                        *rejected.entry(r.stream).or_default() += 1;
                        stream_stats(&mut self.streams, r.stream).rejected += 1;
                        out.push(Err(e));
                    }
                    Ok(()) => {
                        let seq = self.next_seq;
                        if seq > self.reserved_until {
                            self.reserved_until = seq - 1 + SEQ_BLOCK;
                            write_seq_file(&self.seq_file, self.reserved_until).map_err(
                                |source| StoreError::Io {
                                    path: self.seq_file.clone(),
                                    source,
                                },
                            )?;
                        }
                        insert.execute(params![
                            seq as i64,
                            r.stream,
                            r.ts_ms as i64,
                            r.body,
                            size as i64
                        ])?;
                        self.next_seq += 1;
                        self.used += size;
                        let e = stream_stats(&mut self.streams, r.stream);
                        e.appended += 1;
                        e.records += 1;
                        e.bytes += size;
                        out.push(Ok(seq));
                    }
                }
            }
        }
        for (stream, n) in rejected {
            sql::bump(&tx, &format!("rejected:{stream}"), n)?;
        }
        for (stream, n, bytes, _) in &evictions {
            let e = self.streams.entry(stream.clone()).or_default();
            e.evicted += n;
            e.records -= n;
            e.bytes -= bytes;
        }
        tx.commit()?;
        Ok(out)
    }

    /// Evicts at least `bytes` of records with priority ≤ `max_priority` (lowest, oldest
    /// first). Returns bytes freed.
    fn evict_bytes(&mut self, bytes: u64, max_priority: u8) -> Result<u64, StoreError> {
        let levels = eviction_levels(&self.cfg, &self.streams);
        let tx = self.conn.transaction()?;
        let mut ev = Vec::new();
        let freed = sql::evict(&tx, bytes, &levels, max_priority, &mut ev)?;
        sql::save_next_seq(&tx, self.next_seq)?;
        tx.commit()?;
        self.load_stats()?;
        Ok(freed)
    }

    fn bump(&mut self, name: &str, by: u64) -> Result<(), StoreError> {
        sql::bump(&self.conn, name, by)?;
        Ok(())
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
        let mut q = self
            .conn
            .prepare_cached("SELECT seq, ts_ms, body FROM records WHERE stream = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3")?;
        let rows = q.query_map(params![stream, after as i64, max_records as i64], |r| {
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

    /// Deletes the acked range of `stream`; returns how many records it removed.
    pub fn ack(&mut self, stream: &str, first: u64, last: u64) -> Result<u64, StoreError> {
        let tx = self.conn.transaction()?;
        let (n, bytes): (i64, i64) = tx.query_row(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM records WHERE stream = ?1 AND seq BETWEEN ?2 AND ?3",
            params![stream, first as i64, last as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        tx.execute(
            "DELETE FROM records WHERE stream = ?1 AND seq BETWEEN ?2 AND ?3",
            params![stream, first as i64, last as i64],
        )?;
        sql::bump(&tx, &format!("acked:{stream}"), n as u64)?;
        sql::save_next_seq(&tx, self.next_seq)?;
        tx.commit()?;
        let e = self.streams.entry(stream.to_owned()).or_default();
        e.acked += n as u64;
        e.records -= n as u64;
        e.bytes -= bytes as u64;
        self.used -= bytes as u64;
        Ok(n as u64)
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
        Ok(self
            .conn
            .query_row("SELECT MIN(seq) FROM records", [], |r| {
                r.get::<_, Option<i64>>(0)
            })?
            .map(|v| v as u64))
    }

    /// Logical bytes held.
    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    /// The configured budget.
    pub fn budget(&self) -> u64 {
        self.cfg.max_bytes
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

    /// Size of the database file and its WAL, bytes.
    pub fn file_bytes(dir: &Path) -> u64 {
        ["store.db", "store.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
            .map(|m| m.len())
            .sum()
    }
}

/// Every known stream grouped by configured priority, lowest first. Streams that have
/// records but are no longer configured come first: nothing will send them.
fn eviction_levels(
    cfg: &StoreConfig,
    streams: &BTreeMap<String, StreamStats>,
) -> Vec<(u8, Vec<String>)> {
    let mut levels: BTreeMap<(u8, bool), Vec<String>> = BTreeMap::new();
    for name in cfg.streams.keys().chain(streams.keys()) {
        let key = match cfg.streams.get(name) {
            Some(&p) => (p, true),
            None => (0, false),
        };
        let level = levels.entry(key).or_default();
        if !level.contains(name) {
            level.push(name.clone());
        }
    }
    levels.into_iter().map(|((p, _), v)| (p, v)).collect()
}

/// The stream's figures, allocating its name only the first time.
fn stream_stats<'a>(
    streams: &'a mut BTreeMap<String, StreamStats>,
    name: &str,
) -> &'a mut StreamStats {
    if !streams.contains_key(name) {
        streams.insert(name.to_owned(), StreamStats::default());
    }
    streams.get_mut(name).expect("inserted above")
}

fn is_full(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::DiskFull)
}

fn read_seq_file(p: &Path) -> u64 {
    std::fs::read_to_string(p)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn write_seq_file(p: &Path, v: u64) -> std::io::Result<()> {
    crate::update::disk::write_atomic(p, format!("{v}\n").as_bytes())
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
