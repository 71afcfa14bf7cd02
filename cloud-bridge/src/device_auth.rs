//! Device authentication on the bridge: the topic a message arrived on proves nothing.
//!
//! Every message a device publishes is sealed with one of its keys
//! ([`outpost_protocol::device_auth`]). Before anything else looks at a message, the
//! bridge opens the seal with the keys provisioned for the device the topic names; a
//! message that does not verify is dropped, counted (per reason and per device) and
//! reported (an `device_auth_failed` event, at most one per device per minute). So a
//! rejected message never reaches ingest, never consumes a sequence number or a dedup
//! slot, never changes reported state — and a device that is not provisioned is not
//! served at all.
//!
//! Keys: `device_keys(device, key_id, public, added_at, retired_at)`; a device may hold
//! several at once, which is how its key rotates (add the new key, install it on the
//! device, retire the old one). Keys are cached; an unknown key id reloads the device's
//! keys from the database once (rate-limited), so keys added by the CLI reach a running
//! bridge.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use outpost_protocol::device_auth::{self, DeviceAuthError, Opened};
use outpost_protocol::topics::DeviceTopic;
use outpost_protocol::{PublicKey, TrustStore};
use rusqlite::{Connection, params};
use serde::Serialize;

use crate::db::Db;

/// How often a device's keys may be reloaded after an unknown key id.
const RELOAD_EVERY: Duration = Duration::from_secs(5);
/// How often a device's authentication failures are raised as an event.
pub const EVENT_EVERY: Duration = Duration::from_secs(60);
/// Largest sealed message accepted (the largest MQTT packet the bridge takes).
pub const MAX_SEALED: usize = 16 << 20;

/// Counters, per reason.
#[derive(Debug, Default, Serialize)]
pub struct AuthStats {
    /// Messages whose seal verified.
    pub accepted: AtomicU64,
    /// Not sealed, or sealed badly.
    pub malformed: AtomicU64,
    /// Sealed with a key the device does not hold (another device's key, a retired key,
    /// an unprovisioned device).
    pub unknown_key: AtomicU64,
    /// A signature that does not verify (moved to another device or kind, or altered).
    pub bad_signature: AtomicU64,
    /// Verified, but older than what the device already said (a replay).
    pub replayed: AtomicU64,
}

impl AuthStats {
    /// Rejections in all.
    pub fn rejected(&self) -> u64 {
        self.malformed.load(Relaxed)
            + self.unknown_key.load(Relaxed)
            + self.bad_signature.load(Relaxed)
            + self.replayed.load(Relaxed)
    }
}

/// The bridge's side of device authentication.
pub struct DeviceAuth {
    db: Db,
    required: bool,
    keys: Mutex<HashMap<String, (TrustStore, Instant)>>,
    events: Mutex<HashMap<String, Instant>>,
    /// Counters.
    pub stats: AuthStats,
}

/// Why a message was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Device the topic named.
    pub device: String,
    /// Message kind.
    pub kind: String,
    /// What failed.
    pub error: DeviceAuthError,
}

/// Adds a public key to a device's keys (creating the device row if needed).
pub fn add_key(c: &Connection, device: &str, key: &PublicKey) -> rusqlite::Result<()> {
    c.execute(
        "INSERT OR IGNORE INTO device_keys (device, key_id, public, added_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            device,
            key.id().as_str(),
            key.to_file_contents(),
            crate::db::now() as i64
        ],
    )?;
    Ok(())
}

/// Retires a key; returns whether it was active.
pub fn retire_key(c: &Connection, device: &str, key_id: &str) -> rusqlite::Result<bool> {
    Ok(c.execute(
        "UPDATE device_keys SET retired_at = ?3 WHERE device = ?1 AND key_id = ?2 AND retired_at IS NULL",
        params![device, key_id, crate::db::now() as i64],
    )? == 1)
}

/// A device's active keys.
pub fn keys_of(c: &Connection, device: &str) -> rusqlite::Result<TrustStore> {
    let mut q = c.prepare(
        "SELECT key_id, public FROM device_keys WHERE device = ?1 AND retired_at IS NULL",
    )?;
    let rows = q.query_map([device], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut t = TrustStore::new();
    for row in rows {
        let (id, text) = row?;
        if let Ok(k) = PublicKey::from_file_contents(&text, &id) {
            t.add(k);
        }
    }
    Ok(t)
}

/// Key ids of a device with their state: (key id, added_at, retired_at).
pub fn list_keys(
    c: &Connection,
    device: &str,
) -> rusqlite::Result<Vec<(String, u64, Option<u64>)>> {
    let mut q = c.prepare(
        "SELECT key_id, added_at, retired_at FROM device_keys WHERE device = ?1 ORDER BY added_at",
    )?;
    let rows = q.query_map([device], |r| {
        Ok((
            r.get(0)?,
            r.get::<_, i64>(1)? as u64,
            r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
        ))
    })?;
    rows.collect()
}

impl DeviceAuth {
    /// Authentication over `db`; with `required` off (a legacy fleet), unsealed messages
    /// pass (sealed ones are still verified).
    pub fn new(db: Db, required: bool) -> Self {
        Self {
            db,
            required,
            keys: Mutex::new(HashMap::new()),
            events: Mutex::new(HashMap::new()),
            stats: AuthStats::default(),
        }
    }

    /// Whether unsealed messages are refused.
    pub fn required(&self) -> bool {
        self.required
    }

    async fn load(&self, device: &str) -> TrustStore {
        let db = self.db.clone();
        let d = device.to_owned();
        let t = tokio::task::spawn_blocking(move || keys_of(&db.lock(), &d))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let mut m = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        // Unknown ids are not remembered once the cache is large: a flood of made-up ids
        // costs lookups, never unbounded memory.
        if !t.is_empty() || m.len() < 10_000 {
            m.insert(device.to_owned(), (t.clone(), Instant::now()));
        }
        t
    }

    async fn keys(&self, device: &str, wanted: Option<&str>) -> TrustStore {
        let cached = self
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(device)
            .cloned();
        match cached {
            None => self.load(device).await,
            // A key this bridge has not seen yet (rotated by the CLI): reload, rarely.
            Some((t, at))
                if wanted.is_some_and(|w| !t.ids().any(|i| i.as_str() == w))
                    && at.elapsed() >= RELOAD_EVERY =>
            {
                self.load(device).await
            }
            Some((t, _)) => t,
        }
    }

    /// Forgets cached keys of `device` (after a change by this process).
    pub fn invalidate(&self, device: &str) {
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(device);
    }

    /// Opens a message from `device` on `kind`; returns the body and the device's counter
    /// (None when unsealed and not required).
    pub async fn open(
        &self,
        device: &str,
        kind: &DeviceTopic,
        payload: &[u8],
    ) -> Result<(Vec<u8>, Option<u64>), Rejection> {
        let reject = |error: DeviceAuthError| {
            let c = match &error {
                DeviceAuthError::Malformed(_) | DeviceAuthError::TooLarge { .. } => {
                    &self.stats.malformed
                }
                DeviceAuthError::UnknownKey(_) => &self.stats.unknown_key,
                DeviceAuthError::BadSignature(_) => &self.stats.bad_signature,
            };
            c.fetch_add(1, Relaxed);
            Rejection {
                device: device.to_owned(),
                kind: kind.tail(),
                error,
            }
        };
        let wanted = match device_auth::key_id(payload) {
            Ok(id) => Some(id),
            Err(_) if !self.required => return Ok((payload.to_vec(), None)),
            Err(e) => return Err(reject(e)),
        };
        let keys = self.keys(device, wanted.as_ref().map(|k| k.as_str())).await;
        match device_auth::open(payload, device, &kind.tail(), &keys, MAX_SEALED) {
            Ok(Opened { counter, body, .. }) => {
                self.stats.accepted.fetch_add(1, Relaxed);
                Ok((body.to_vec(), Some(counter)))
            }
            Err(e) => Err(reject(e)),
        }
    }

    /// Counts a replay (a verified message older than the device's last).
    pub fn replayed(&self) {
        self.stats.replayed.fetch_add(1, Relaxed);
    }

    /// Whether to raise an event for `device` now (at most one per [`EVENT_EVERY`]).
    pub fn should_report(&self, device: &str) -> bool {
        let mut m = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() > 10_000 {
            // Bounded: a flood under made-up ids cannot grow this map.
            m.retain(|_, t| t.elapsed() < EVENT_EVERY);
        }
        match m.get(device) {
            Some(t) if t.elapsed() < EVENT_EVERY => false,
            _ => {
                m.insert(device.to_owned(), Instant::now());
                true
            }
        }
    }
}
