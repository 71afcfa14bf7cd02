//! SQL details of the store: schema (and the upgrade from schema 1), opening with
//! integrity checks and the disk layout's pragmas, per-stream statements, eviction.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, Transaction, params};

use super::budget::{ACCOUNTED_SQL, Layout, PAGE};
use super::{Durability, EVICTED_LOG_KEEP, StoreConfig};

/// Schema version written in `meta`.
pub const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
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

/// Prefix of the per-stream record tables.
const TABLE_PREFIX: &str = "stream_";

/// Statements on one stream's table (`stream_{name}`), formatted once.
#[derive(Debug)]
pub struct StreamSql {
    /// Inserts a record: (seq, ts_ms, size, body).
    pub insert: String,
    /// Records after a sequence, oldest first, limited: (seq, ts_ms, body).
    pub batch: String,
    /// Sequences and sizes in a range, oldest first.
    pub range: String,
    /// Deletes a range of sequences.
    pub delete_range: String,
    /// Every sequence and size, oldest first (eviction cursor).
    pub cursor: String,
    /// Count, total size and highest sequence.
    pub stats: String,
    /// Lowest sequence.
    pub min: String,
}

impl StreamSql {
    /// The statements of `stream` (a name checked by [`valid_name`]), without creating its
    /// table.
    pub fn for_stream(stream: &str) -> Self {
        Self::new(stream)
    }

    fn new(stream: &str) -> Self {
        let t = format!("\"{TABLE_PREFIX}{stream}\"");
        Self {
            insert: format!("INSERT INTO {t} (seq, ts_ms, size, body) VALUES (?1, ?2, ?3, ?4)"),
            batch: format!("SELECT seq, ts_ms, body FROM {t} WHERE seq > ?1 ORDER BY seq LIMIT ?2"),
            range: format!("SELECT seq, size FROM {t} WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq"),
            delete_range: format!("DELETE FROM {t} WHERE seq BETWEEN ?1 AND ?2"),
            cursor: format!("SELECT seq, size FROM {t} ORDER BY seq"),
            stats: format!(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MAX(seq), 0) FROM {t}"
            ),
            min: format!("SELECT MIN(seq) FROM {t}"),
        }
    }
}

/// Creates the table of `stream` if needed and returns its statements. Stream names are
/// checked by the caller ([`valid_name`]): they are part of an identifier.
pub fn create_stream(c: &Connection, stream: &str) -> rusqlite::Result<StreamSql> {
    // `size` precedes `body` so reading it never walks a large body's overflow pages.
    c.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS \"{TABLE_PREFIX}{stream}\" (
            seq INTEGER PRIMARY KEY,
            ts_ms INTEGER NOT NULL,
            size INTEGER NOT NULL,
            body BLOB NOT NULL
        );"
    ))?;
    Ok(StreamSql::new(stream))
}

/// Replaces the read-only `records` view: every stream table with schema 1's columns,
/// for tools (and tests) that read the file directly.
pub fn replace_records_view(c: &Connection, streams: &[&str]) -> rusqlite::Result<()> {
    let parts: Vec<String> = streams
        .iter()
        .map(|s| {
            format!("SELECT seq, '{s}' AS stream, ts_ms, body, size FROM \"{TABLE_PREFIX}{s}\"")
        })
        .collect();
    let select = if parts.is_empty() {
        "SELECT 0 AS seq, '' AS stream, 0 AS ts_ms, x'' AS body, 0 AS size WHERE 0".to_owned()
    } else {
        parts.join(" UNION ALL ")
    };
    c.execute_batch(&format!(
        "DROP VIEW IF EXISTS records; CREATE VIEW records AS {select};"
    ))
}

/// Drops the view over the stream tables (before a table is dropped).
pub fn drop_records_view(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch("DROP VIEW IF EXISTS records;")
}

/// Drops the (empty) table of a stream that is no longer configured.
pub fn drop_stream(c: &Connection, stream: &str) -> rusqlite::Result<()> {
    c.execute_batch(&format!("DROP TABLE IF EXISTS \"{TABLE_PREFIX}{stream}\";"))
}

/// The streams that have a table.
pub fn stream_tables(c: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut q = c.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?;
    let names = q.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for n in names {
        if let Some(s) = n?.strip_prefix(TABLE_PREFIX)
            && valid_name(s)
        {
            out.push(s.to_owned());
        }
    }
    Ok(out)
}

/// A stream name usable in a table name: the protocol's stream names.
pub fn valid_name(s: &str) -> bool {
    outpost_protocol::topics::valid_stream(s)
}

/// Opens the database, applies pragmas and schema (upgrading schema 1), and checks
/// integrity. Any failure is returned as a message (the caller moves the file aside).
pub fn open_checked(path: &Path, cfg: &StoreConfig, layout: &Layout) -> Result<Connection, String> {
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
    // page_size and auto_vacuum take effect on a new file only (an older file is
    // converted below). Deleted content is not overwritten (secure_delete off), so freed
    // pages cost no WAL frames.
    let pragmas = format!(
        "PRAGMA page_size = {PAGE};
         PRAGMA auto_vacuum = INCREMENTAL;
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {sync};
         PRAGMA secure_delete = OFF;
         PRAGMA wal_autocheckpoint = {};
         PRAGMA journal_size_limit = {};
         PRAGMA busy_timeout = 5000;",
        layout.checkpoint_pages(),
        layout.step,
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
        Some(1) => upgrade_from_1(&c).map_err(|e| format!("upgrading schema 1: {e}"))?,
        Some(v) if v == SCHEMA_VERSION => {}
        Some(v) => {
            return Err(format!(
                "schema version {v} is not {SCHEMA_VERSION} (written by another build)"
            ));
        }
    }
    let auto_vacuum: i64 = c
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .map_err(|e| format!("auto_vacuum: {e}"))?;
    if auto_vacuum != 2 {
        // A file from an older build: rewrite it once so freed pages can be returned to
        // the file system.
        c.execute_batch(
            "PRAGMA auto_vacuum = INCREMENTAL; VACUUM; PRAGMA wal_checkpoint(TRUNCATE);",
        )
        .map_err(|e| format!("enabling incremental vacuum: {e}"))?;
    }
    c.set_prepared_statement_cache_capacity(64);
    Ok(c)
}

/// Schema 1 kept every stream in one `records` table with a `(stream, seq)` index: rows of
/// different streams shared pages, so evicting one stream left pages part-empty. Each
/// stream moves to its own table, in one transaction.
fn upgrade_from_1(c: &Connection) -> rusqlite::Result<()> {
    let tx = c.unchecked_transaction()?;
    let streams: Vec<String> = {
        let mut q = tx.prepare("SELECT DISTINCT stream FROM records")?;
        q.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
    };
    for s in &streams {
        if !valid_name(s) {
            return Err(rusqlite::Error::InvalidParameterName(s.clone()));
        }
        create_stream(&tx, s)?;
        tx.execute(
            &format!(
                "INSERT INTO \"{TABLE_PREFIX}{s}\" (seq, ts_ms, size, body)
                 SELECT seq, ts_ms, {ACCOUNTED_SQL}, body FROM records WHERE stream = ?1"
            ),
            [s],
        )?;
    }
    tx.execute_batch("DROP TABLE records;")?;
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'schema'",
        [SCHEMA_VERSION],
    )?;
    tx.commit()
}

/// Sets the file cap. SQLite never lowers it below the current size: an oversized file
/// keeps its size until deletes and vacuuming shrink it, and the cap is set again then.
pub fn set_max_pages(c: &Connection, pages: u64) -> rusqlite::Result<u64> {
    c.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|v| v as u64)
}

/// (pages in the file, pages on the freelist).
pub fn page_counts(c: &Connection) -> rusqlite::Result<(u64, u64)> {
    let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = c.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    Ok((pages as u64, free as u64))
}

/// Returns up to `pages` free pages to the file system (one autocommit transaction).
pub fn incremental_vacuum(c: &Connection, pages: u64) -> rusqlite::Result<()> {
    // The pragma frees one page per step: run it to completion.
    let mut q = c.prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
    let mut rows = q.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}

/// Checkpoints the whole WAL into the database and truncates the WAL to zero bytes.
pub fn checkpoint_truncate(c: &Connection) -> rusqlite::Result<()> {
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
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

/// One run of evicted records of one stream (consecutive in eviction order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvictedRun {
    /// Stream.
    pub stream: String,
    /// Records evicted.
    pub count: u64,
    /// Accounted bytes freed.
    pub bytes: u64,
    /// First sequence of the run.
    pub first: u64,
    /// Last sequence of the run.
    pub last: u64,
}

/// How much [`evict`] must free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// At least this many bytes, or nothing at all if the eligible records hold less.
    AllOrNothing(u64),
    /// Up to this many bytes (at least one record if any is eligible): making room on
    /// disk, where any progress helps.
    UpTo(u64),
}

/// Deletes the oldest records of the lowest eviction level first, then the next level,
/// per `need`. `levels` lists the streams grouped by priority, lowest first; only levels
/// up to `max_priority` are touched. Counts and records in `evicted_log` what it deleted
/// and appends the runs to `out`. Returns bytes freed.
pub fn evict(
    tx: &Transaction<'_>,
    sql: &BTreeMap<String, StreamSql>,
    need: Need,
    levels: &[(u8, Vec<String>)],
    max_priority: u8,
    out: &mut Vec<EvictedRun>,
) -> rusqlite::Result<u64> {
    let target = match need {
        Need::AllOrNothing(n) | Need::UpTo(n) => n,
    };
    // Victims are read in eviction order until enough are found; only then is anything
    // deleted (reading stops early, so a store at its budget pays for the few rows it
    // evicts, not for a scan of everything eligible). Within a level the streams' cursors
    // are merged by sequence, so "oldest first" holds across streams of equal priority.
    let mut victims: Vec<(u64, &str, u64)> = Vec::new();
    let mut freed = 0u64;
    for (_, level) in levels.iter().filter(|(p, _)| *p <= max_priority) {
        if freed >= target && !victims.is_empty() {
            break;
        }
        let level: Vec<(&String, &StreamSql)> =
            level.iter().filter_map(|s| sql.get_key_value(s)).collect();
        let mut stmts = Vec::with_capacity(level.len());
        for (_, q) in &level {
            stmts.push(tx.prepare_cached(&q.cursor)?);
        }
        let mut cursors = Vec::with_capacity(level.len());
        for q in stmts.iter_mut() {
            cursors.push(q.query([])?);
        }
        let mut heads: Vec<Option<(u64, u64)>> = Vec::with_capacity(level.len());
        for c in &mut cursors {
            heads.push(next_row(c)?);
        }
        while freed < target || victims.is_empty() {
            let Some(i) = (0..heads.len())
                .filter(|&i| heads[i].is_some())
                .min_by_key(|&i| heads[i].map(|h| h.0))
            else {
                break;
            };
            let (seq, size) = heads[i].take().unwrap_or_default();
            freed += size;
            victims.push((seq, level[i].0.as_str(), size));
            heads[i] = next_row(&mut cursors[i])?;
        }
    }
    if victims.is_empty() || matches!(need, Need::AllOrNothing(n) if freed < n) {
        return Ok(0);
    }
    let now = crate::clock::unix_ms() as i64;
    // Group consecutive victims of one stream into logged runs. A stream's victims are
    // its oldest records, so each run is a contiguous range of its table.
    let mut i = 0;
    while i < victims.len() {
        let stream = victims[i].1;
        let mut j = i;
        let mut bytes = 0;
        while j < victims.len() && victims[j].1 == stream {
            bytes += victims[j].2;
            j += 1;
        }
        let (first, last) = (victims[i].0, victims[j - 1].0);
        let n = (j - i) as u64;
        tx.prepare_cached(&sql[stream].delete_range)?
            .execute(params![first as i64, last as i64])?;
        bump(tx, &format!("evicted:{stream}"), n)?;
        tx.prepare_cached(
            "INSERT INTO evicted_log (stream, first_seq, last_seq, count, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![stream, first as i64, last as i64, n as i64, now])?;
        out.push(EvictedRun {
            stream: stream.to_owned(),
            count: n,
            bytes,
            first,
            last,
        });
        i = j;
    }
    tx.prepare_cached(
        "DELETE FROM evicted_log WHERE id <= (SELECT MAX(id) FROM evicted_log) - ?1",
    )?
    .execute([EVICTED_LOG_KEEP])?;
    Ok(freed)
}
