//! SQL details of the store: schema, opening with integrity checks, eviction.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, Transaction, params};

use super::{Durability, EVICTED_LOG_KEEP, StoreConfig};

/// Schema version written in `meta`.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    body BLOB NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS records_stream_seq ON records (stream, seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS evicted_log (
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    at_ms INTEGER NOT NULL
);
";

/// Opens the database, applies pragmas and schema, and checks integrity. Any failure is
/// returned as a message (the caller moves the file aside).
pub fn open_checked(path: &Path, cfg: &StoreConfig) -> Result<Connection, String> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("open: {e}"))?;
    let sync = match cfg.durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    let page_size: i64 = 4096;
    let max_pages = (cfg.max_bytes * 2 + (1 << 20)) as i64 / page_size;
    let pragmas = format!(
        "PRAGMA page_size = {page_size};
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {sync};
         PRAGMA journal_size_limit = {};
         PRAGMA busy_timeout = 5000;",
        4 << 20
    );
    c.execute_batch(&pragmas)
        .map_err(|e| format!("pragmas: {e}"))?;
    let check: String = c
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| format!("integrity check: {e}"))?;
    if check != "ok" {
        return Err(format!("integrity check: {check}"));
    }
    c.execute_batch(SCHEMA)
        .map_err(|e| format!("schema: {e}"))?;
    let v: Option<i64> = c
        .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
            r.get(0)
        })
        .ok();
    match v {
        None => {
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
                [SCHEMA_VERSION],
            )
            .map_err(|e| format!("schema version: {e}"))?;
        }
        Some(v) if v == SCHEMA_VERSION => {}
        Some(v) => {
            return Err(format!(
                "schema version {v} is not {SCHEMA_VERSION} (written by another build)"
            ));
        }
    }
    // The file cap; an existing larger file keeps its size (the pragma cannot shrink it)
    // and is trimmed by eviction.
    let _ = c.query_row(&format!("PRAGMA max_page_count = {max_pages}"), [], |_| {
        Ok(())
    });
    Ok(c)
}

fn next_row(rows: &mut rusqlite::Rows<'_>) -> rusqlite::Result<Option<(u64, u64)>> {
    Ok(match rows.next()? {
        Some(r) => Some((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        None => None,
    })
}

/// Records the next sequence; called by every transaction that deletes records, so an
/// emptied store still resumes numbering where it was.
pub fn save_next_seq(c: &Connection, next: u64) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES ('next_seq', ?1)")?
        .execute([next as i64])?;
    Ok(())
}

/// Adds `by` to a counter.
pub fn bump(c: &Connection, name: &str, by: u64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO counters (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = value + ?2",
    )?
    .execute(params![name, by as i64])?;
    Ok(())
}

/// Deletes the oldest records of the lowest eviction level first, then the next level,
/// until at least `need` bytes are freed — or nothing, if even all of them would not be
/// enough. `levels` lists the streams grouped by priority, lowest first; only levels up to
/// `max_priority` are touched. Counts and logs what it deleted; appends (stream, count, bytes, last_seq) per
/// stream run to `out`. Returns bytes freed.
pub fn evict(
    tx: &Transaction<'_>,
    need: u64,
    levels: &[(u8, Vec<String>)],
    max_priority: u8,
    out: &mut Vec<(String, u64, u64, u64)>,
) -> rusqlite::Result<u64> {
    // Victims are read in eviction order until enough are found; only then is anything
    // deleted (reading stops early, so a store at its budget pays for the few rows it
    // evicts, not for a scan of everything eligible). Within a level the streams' cursors
    // over the (stream, seq) index are merged by sequence, so "oldest first" holds across
    // streams of equal priority without a second index on every insert.
    let mut victims: Vec<(u64, String, u64)> = Vec::new();
    let mut freed = 0u64;
    for (_, level) in levels.iter().filter(|(p, _)| *p <= max_priority) {
        if freed >= need {
            break;
        }
        let mut stmts = Vec::with_capacity(level.len());
        for _ in level {
            stmts.push(
                tx.prepare_cached("SELECT seq, size FROM records WHERE stream = ?1 ORDER BY seq")?,
            );
        }
        let mut cursors = Vec::with_capacity(level.len());
        for (q, stream) in stmts.iter_mut().zip(level) {
            cursors.push(q.query([stream])?);
        }
        let mut heads: Vec<Option<(u64, u64)>> = Vec::with_capacity(level.len());
        for c in &mut cursors {
            heads.push(next_row(c)?);
        }
        while freed < need {
            let Some(i) = (0..heads.len())
                .filter(|&i| heads[i].is_some())
                .min_by_key(|&i| heads[i].map(|h| h.0))
            else {
                break;
            };
            let (seq, size) = heads[i].take().unwrap_or_default();
            freed += size;
            victims.push((seq, level[i].clone(), size));
            heads[i] = next_row(&mut cursors[i])?;
        }
    }
    if freed < need {
        return Ok(0);
    }
    let now = crate::clock::unix_ms() as i64;
    // Group consecutive victims of one stream into logged ranges.
    let mut i = 0;
    while i < victims.len() {
        let stream = victims[i].1.clone();
        let mut j = i;
        let mut bytes = 0;
        while j < victims.len() && victims[j].1 == stream {
            bytes += victims[j].2;
            j += 1;
        }
        let (first, last) = (victims[i].0, victims[j - 1].0);
        let n = (j - i) as u64;
        let mut delete = tx.prepare_cached("DELETE FROM records WHERE seq = ?1")?;
        for v in &victims[i..j] {
            delete.execute([v.0 as i64])?;
        }
        bump(tx, &format!("evicted:{stream}"), n)?;
        tx.execute(
            "INSERT INTO evicted_log (stream, first_seq, last_seq, count, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![stream, first as i64, last as i64, n as i64, now],
        )?;
        tracing::warn!(%stream, first, last, count = n, "store full: evicted records");
        out.push((stream, n, bytes, last));
        i = j;
    }
    tx.execute(
        "DELETE FROM evicted_log WHERE id <= (SELECT MAX(id) FROM evicted_log) - ?1",
        [EVICTED_LOG_KEEP],
    )?;
    Ok(freed)
}
