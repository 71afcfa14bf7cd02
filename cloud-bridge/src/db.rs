//! The bridge's SQLite database (`{data_dir}/bridge.db`, WAL, `synchronous = FULL`: an
//! ingest ack promises durability, so every commit is synced).
//!
//! Each module owns its tables and SQL; this module holds the schema and opens
//! connections. Moving to PostgreSQL means re-implementing those modules' SQL behind the
//! same functions; bundles already sit behind [`crate::bundles::BundleStore`].
//!
//! ```sql
//! models(name, version, digest, created_at, created_by, reason, description,
//!        tags JSON, lineage JSON, validation JSON, bundle_size, chunks, contract JSON)
//!        PK(name, version)
//! model_tags(name, version, key, value)
//! model_counters(name PK, last_version)   -- versions are never reused, even after deletes
//! model_refusals(id, name, at, by, reason)
//! devices(id PK, target, tags JSON, created_at, last_seen, online, state JSON,
//!         cred_hash, directive_seq, mosquitto_hash,  -- mosquitto_hash: `$7$`, may be NULL
//!         state_counter, presence_counter,          -- device counters last accepted
//!         auth_rejected)                            -- messages refused by device auth
//! device_tags(device, key, value)
//! device_keys(device, key_id, public, added_at, retired_at)   -- see crate::device_auth
//! records(device, stream, seq, ts_ms, received_ms, body)  PK(device, stream, seq)
//! captures(device, seq PK…, ts_ms, model, version, bundle, reason, label, confidence,
//!          input JSON, output JSON)
//! telemetry(device, seq, ts_ms, kind, model, version, body JSON)
//! device_events(device, seq, ts_ms, kind, message, body JSON)
//! audit(id PK, at, actor, action, target, reason, details JSON, prev_hash, hash)
//! outbox(id PK, url, body, attempts, next_try_ms, delivered, last_error)
//! deployments(…), deployment_devices(…), directives(…)   -- see crate::fleet
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS models (
    name TEXT NOT NULL, version INTEGER NOT NULL, digest TEXT NOT NULL,
    created_at INTEGER NOT NULL, created_by TEXT NOT NULL, reason TEXT NOT NULL,
    description TEXT NOT NULL, tags TEXT NOT NULL, lineage TEXT NOT NULL,
    validation TEXT NOT NULL, bundle_size INTEGER NOT NULL, chunks INTEGER NOT NULL,
    contract TEXT, PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS model_tags (name TEXT NOT NULL, version INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS model_tags_kv ON model_tags (key, value);
CREATE TABLE IF NOT EXISTS model_counters (name TEXT PRIMARY KEY, last_version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS model_refusals (id INTEGER PRIMARY KEY, name TEXT NOT NULL, at INTEGER NOT NULL, by TEXT NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY, target TEXT NOT NULL, tags TEXT NOT NULL, created_at INTEGER NOT NULL,
    last_seen INTEGER, online INTEGER NOT NULL DEFAULT 0, state TEXT,
    cred_hash TEXT, directive_seq INTEGER NOT NULL DEFAULT 0, mosquitto_hash TEXT,
    state_counter INTEGER, presence_counter INTEGER, auth_rejected INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS device_tags (device TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS device_keys (
    device TEXT NOT NULL, key_id TEXT NOT NULL, public TEXT NOT NULL, added_at INTEGER NOT NULL,
    retired_at INTEGER, PRIMARY KEY (device, key_id));
CREATE INDEX IF NOT EXISTS device_tags_kv ON device_tags (key, value);
CREATE TABLE IF NOT EXISTS records (
    device TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL, ts_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL, body BLOB NOT NULL, PRIMARY KEY (device, stream, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS captures (
    device TEXT NOT NULL, seq INTEGER NOT NULL, ts_ms INTEGER NOT NULL, model TEXT NOT NULL,
    version INTEGER NOT NULL, bundle TEXT NOT NULL, reason TEXT NOT NULL, label TEXT NOT NULL,
    confidence REAL, input TEXT NOT NULL, output TEXT NOT NULL, PRIMARY KEY (device, seq));
CREATE INDEX IF NOT EXISTS captures_model ON captures (model, version, ts_ms);
CREATE TABLE IF NOT EXISTS telemetry (
    device TEXT NOT NULL, seq INTEGER NOT NULL, ts_ms INTEGER NOT NULL, kind TEXT NOT NULL,
    model TEXT, version INTEGER, body TEXT NOT NULL, PRIMARY KEY (device, seq));
CREATE INDEX IF NOT EXISTS telemetry_model ON telemetry (model, version, ts_ms);
CREATE TABLE IF NOT EXISTS device_events (
    device TEXT NOT NULL, seq INTEGER NOT NULL, ts_ms INTEGER NOT NULL, kind TEXT NOT NULL,
    message TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (device, seq));
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY, at INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT NOT NULL, reason TEXT NOT NULL, details TEXT NOT NULL,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY, url TEXT NOT NULL, body TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_try_ms INTEGER NOT NULL, delivered INTEGER NOT NULL DEFAULT 0, last_error TEXT);
CREATE TABLE IF NOT EXISTS deployments (
    id TEXT PRIMARY KEY, model TEXT NOT NULL, version INTEGER NOT NULL, digest TEXT NOT NULL,
    created_at INTEGER NOT NULL, created_by TEXT NOT NULL, reason TEXT NOT NULL,
    selector TEXT NOT NULL, strategy TEXT NOT NULL, state TEXT NOT NULL, machine TEXT NOT NULL,
    previous TEXT, updated_at INTEGER NOT NULL, rollback_of TEXT,
    gates_skipped INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS deployment_devices (
    deployment TEXT NOT NULL, device TEXT NOT NULL, wave INTEGER NOT NULL,
    PRIMARY KEY (deployment, device));
CREATE TABLE IF NOT EXISTS directives (
    device TEXT NOT NULL, sequence INTEGER NOT NULL, deployment TEXT NOT NULL, digest TEXT NOT NULL,
    issued_at INTEGER NOT NULL, body BLOB NOT NULL, published INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER, models TEXT, PRIMARY KEY (device, sequence));
CREATE TABLE IF NOT EXISTS desired_models (
    device TEXT NOT NULL, model TEXT NOT NULL, digest TEXT NOT NULL, version INTEGER NOT NULL,
    head_size INTEGER NOT NULL, size INTEGER NOT NULL, memory_bytes INTEGER,
    deployment TEXT NOT NULL, set_at INTEGER NOT NULL, PRIMARY KEY (device, model));
CREATE INDEX IF NOT EXISTS desired_models_digest ON desired_models (model, digest);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS signing_keys (
    key_id TEXT PRIMARY KEY, state TEXT NOT NULL CHECK (state IN ('active', 'next', 'retired')),
    public_key TEXT NOT NULL, path TEXT NOT NULL, created_at INTEGER NOT NULL,
    activated_at INTEGER, retired_at INTEGER);
CREATE UNIQUE INDEX IF NOT EXISTS signing_keys_one_active_one_next ON signing_keys (state)
    WHERE state IN ('active', 'next');
";

/// Database errors.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite failed.
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A blocking database task did not finish (it panicked, or the runtime stopped).
    #[error("database worker: {0}")]
    Worker(String),
    /// The data directory is unusable.
    #[error("data directory {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// Opens connections to one database file.
#[derive(Debug, Clone)]
pub struct Db {
    path: PathBuf,
    shared: Arc<Mutex<Connection>>,
}

/// Opens a connection with the bridge's pragmas.
pub fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    c.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
    )?;
    Ok(c)
}

impl Db {
    /// Opens (and creates) `{data_dir}/bridge.db`.
    pub fn open(data_dir: &Path) -> Result<Self, DbError> {
        std::fs::create_dir_all(data_dir).map_err(|source| DbError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join("bridge.db");
        let c = connect(&path)?;
        c.execute_batch(SCHEMA)?;
        migrate(&c)?;
        Ok(Self {
            path,
            shared: Arc::new(Mutex::new(c)),
        })
    }

    /// The shared connection, for blocking code: the CLI, the rollout engine, the
    /// device-state writer, and closures run by [`Db::run`]. Async code never calls this
    /// on a runtime worker (it would stall every task on that worker behind whatever
    /// transaction holds the lock): it uses [`Db::run`].
    pub fn lock(&self) -> MutexGuard<'_, Connection> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with the shared connection on tokio's blocking pool: how async code (API
    /// handlers, the dashboard, MQTT routing) reaches the database.
    ///
    /// # Errors
    /// [`DbError::Worker`] if `f` panicked or the runtime is shutting down.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> Result<T, DbError> {
        let db = self.clone();
        tokio::task::spawn_blocking(move || f(&mut db.lock()))
            .await
            .map_err(|e| DbError::Worker(e.to_string()))
    }

    /// A separate connection (for the ingest writer, which commits on its own).
    pub fn connect(&self) -> rusqlite::Result<Connection> {
        connect(&self.path)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Columns added after a table was first created (`CREATE TABLE IF NOT EXISTS` leaves
/// an existing table as it is).
fn migrate(c: &Connection) -> rusqlite::Result<()> {
    let has = |table: &str, column: &str| -> rusqlite::Result<bool> {
        let mut q = c.prepare(&format!("PRAGMA table_info({table})"))?;
        let names = q.query_map([], |r| r.get::<_, String>(1))?;
        for n in names {
            if n? == column {
                return Ok(true);
            }
        }
        Ok(false)
    };
    // Columns added after the first release.
    for (table, column, ty) in [
        ("devices", "mosquitto_hash", "TEXT"),
        ("models", "contract", "TEXT"),
        ("devices", "state_counter", "INTEGER"),
        ("devices", "presence_counter", "INTEGER"),
        ("devices", "auth_rejected", "INTEGER NOT NULL DEFAULT 0"),
        ("directives", "expires_at", "INTEGER"),
        ("directives", "models", "TEXT"),
        ("deployments", "rollback_of", "TEXT"),
        ("deployments", "gates_skipped", "INTEGER NOT NULL DEFAULT 0"),
    ] {
        if !has(table, column)?
            && let Err(e) =
                c.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}"))
            // Another process migrating at the same moment is fine.
            && !has(table, column)?
        {
            return Err(e);
        }
    }
    Ok(())
}

/// The broker packet limit `serve` last ran with (bytes), which registration checks chunk
/// sizes against; 131 072 (AWS IoT Core's limit) until a bridge has run.
pub fn max_packet_bytes(c: &Connection) -> rusqlite::Result<usize> {
    use rusqlite::OptionalExtension;
    let v: Option<String> = c
        .query_row(
            "SELECT value FROM settings WHERE key = 'max_packet_bytes'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(131_072))
}

/// Records the broker packet limit (see [`max_packet_bytes`]).
pub fn set_max_packet_bytes(c: &Connection, v: usize) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO settings (key, value) VALUES ('max_packet_bytes', ?1)
         ON CONFLICT (key) DO UPDATE SET value = ?1",
        [v.to_string()],
    )?;
    Ok(())
}

/// Unix seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
