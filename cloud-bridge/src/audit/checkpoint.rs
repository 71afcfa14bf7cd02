//! Signed checkpoints of the audit chain (signed tree heads, as transparency logs have).
//!
//! A checkpoint states "the first `size` rows of the audit log hash to `head`" and is
//! signed with the bridge's Ed25519 key, the one devices already trust for bundles and
//! directives. Wire and file form (JSON):
//!
//! ```json
//! {"format":1,"size":42,"head":"<64 hex>","at":1795244400,"key_id":"<16 hex>","signature":"<128 hex>"}
//! ```
//!
//! The signature covers `"outpost/v1/audit-checkpoint\0" || body`, where `body` is the
//! canonical JSON `{"format":1,"size":42,"head":"…","at":1795244400}`: exactly these four
//! keys in this order, no whitespace, decimal integers, `head` in lowercase hex (so it
//! needs no escaping). Verifiers rebuild the body from the parsed fields; unknown fields
//! are refused because the signature would not cover them. The domain keeps a checkpoint
//! signature from ever passing as a bundle or directive signature, and the reverse.
//!
//! Store: `audit_checkpoints(id PK, size, head, at, key_id, body)`, append-only (triggers
//! refuse UPDATE and DELETE, as on `audit`). `body` is the encoded checkpoint and is
//! re-verified whenever it is read back; the other columns only serve queries. The newest
//! checkpoint is also written atomically to `{data_dir}/audit.checkpoint`.
//!
//! Invariants: the bridge signs a checkpoint only when the chain has grown since its last
//! stored one, and only if the chain still extends it (row `size` still has that `head`,
//! every newer row links and hashes correctly). Otherwise it refuses and logs at ERROR,
//! so a checkpoint never launders a rewritten history.
//!
//! What this buys: an attacker with the data directory holds the key too, so can re-sign
//! a rewritten log, but cannot alter copies already published (MQTT subscribers, webhook
//! receivers). Any rewrite at or below the newest published checkpoint is caught by
//! [`verify_against`] with such a copy.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use outpost_protocol::keys::{KeyError, KeyId, SIGNATURE_LEN, SigningKey, TrustStore};
use outpost_protocol::wire::EventKind;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Audit, GENESIS, ROW_COLUMNS, StoredRow, VerifyReport};
use crate::db::Db;
use crate::events::{EventBus, NewEvent};

/// Signature domain for audit checkpoints.
pub const CHECKPOINT_DOMAIN: &[u8] = b"outpost/v1/audit-checkpoint\0";
/// Checkpoint format written by this build.
pub const CHECKPOINT_FORMAT: u32 = 1;
/// Largest checkpoint (or `audit_checkpoint` event carrying one) accepted; they are ~300
/// bytes.
pub const MAX_CHECKPOINT_BYTES: usize = 4096;
/// File name of the newest checkpoint inside the data directory.
pub const CHECKPOINT_FILE: &str = "audit.checkpoint";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    id INTEGER PRIMARY KEY, size INTEGER NOT NULL, head TEXT NOT NULL, at INTEGER NOT NULL,
    key_id TEXT NOT NULL, body TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
";

/// Creates the table (and re-arms its triggers) if needed; the audit module owns it.
fn ensure_schema(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch(SCHEMA)
}

/// Why a checkpoint was refused, did not match the chain, or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Over [`MAX_CHECKPOINT_BYTES`].
    #[error("checkpoint of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Size.
        size: u64,
        /// Cap.
        limit: usize,
    },
    /// Not a well-formed checkpoint.
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    /// Unknown format.
    #[error("checkpoint format {0} is not supported")]
    UnsupportedFormat(u32),
    /// Signed by a key the verifier does not trust.
    #[error("checkpoint signed by unknown key {0}")]
    UnknownKey(KeyId),
    /// The signature does not verify (forged or altered).
    #[error("checkpoint signature does not verify with key {0} (forged or altered)")]
    BadSignature(KeyId),
    /// The log is shorter than the checkpoint.
    #[error(
        "checkpoint size {size} (head {head}) covers {size} entries but the log has only {rows}: entries {first_missing}..={size} were deleted",
        first_missing = rows + 1
    )]
    Truncated {
        /// Checkpoint size.
        size: u64,
        /// Checkpoint head.
        head: String,
        /// Rows in the log now.
        rows: u64,
    },
    /// The chain at row `size` no longer has the checkpoint's head.
    #[error(
        "checkpoint size {size} records head {head} but the log's entry {size} now hashes to {actual}: entries at or below {size} were rewritten"
    )]
    Rewritten {
        /// Checkpoint size.
        size: u64,
        /// Checkpoint head.
        head: String,
        /// The chain's hash at row `size` now.
        actual: String,
    },
    /// The rows after the last checkpoint do not form a chain (see `audit --verify`).
    #[error(
        "the audit chain is broken at row {0} (run `outpost-bridge audit --verify`); refusing to sign it"
    )]
    Broken(i64),
    /// Trust keys could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A checkpoint file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Database.
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
}

/// A signed statement that the first `size` audit rows hash to `head`.
///
/// Fields are public so copies can be built and inspected, but nothing here is trusted
/// until [`Checkpoint::verify`] turns it into a [`VerifiedCheckpoint`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Format number ([`CHECKPOINT_FORMAT`]).
    pub format: u32,
    /// Rows covered (rows 1..=size).
    pub size: u64,
    /// The hash of row `size` (lowercase hex SHA-256).
    pub head: String,
    /// When it was signed, unix seconds.
    pub at: u64,
    /// The signing key.
    pub key_id: KeyId,
    /// Ed25519 signature over [`CHECKPOINT_DOMAIN`] || canonical body, hex.
    pub signature: String,
}

/// The signed part, in canonical order.
#[derive(Serialize)]
struct Body<'a> {
    format: u32,
    size: u64,
    head: &'a str,
    at: u64,
}

/// A checkpoint whose signature verified with a trusted key; only
/// [`Checkpoint::verify`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint(Checkpoint);

impl VerifiedCheckpoint {
    /// The checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.0
    }
}

fn is_hash_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Checkpoint {
    /// Signs `(size, head)` at `at` with `key`.
    pub fn sign(size: u64, head: &str, at: u64, key: &SigningKey) -> Self {
        let mut c = Self {
            format: CHECKPOINT_FORMAT,
            size,
            head: head.to_owned(),
            at,
            key_id: key.id().clone(),
            signature: String::new(),
        };
        c.signature = hex::encode(key.sign(CHECKPOINT_DOMAIN, &c.body()));
        c
    }

    /// The canonical body the signature covers.
    fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&Body {
            format: self.format,
            size: self.size,
            head: &self.head,
            at: self.at,
        })
        .expect("checkpoint body serialises")
    }

    /// Encodes as JSON.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("checkpoint serialises")
    }

    /// Decodes a checkpoint (size-capped) and checks it is well formed; the signature is
    /// [`Checkpoint::verify`]'s business.
    pub fn decode(bytes: &[u8]) -> Result<Self, CheckpointError> {
        cap(bytes.len() as u64)?;
        let c: Self =
            serde_json::from_slice(bytes).map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        c.check_form()?;
        Ok(c)
    }

    /// Decodes a copy kept elsewhere: a bare checkpoint, or the whole `audit_checkpoint`
    /// event as the event topic and webhooks deliver it.
    pub fn decode_copy(bytes: &[u8]) -> Result<Self, CheckpointError> {
        cap(bytes.len() as u64)?;
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        let is_event = v.get("kind").and_then(|k| k.as_str()) == Some("audit_checkpoint");
        let v = match v {
            serde_json::Value::Object(mut o) if is_event => {
                o.remove("details").unwrap_or(serde_json::Value::Null)
            }
            v => v,
        };
        let c: Self =
            serde_json::from_value(v).map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        c.check_form()?;
        Ok(c)
    }

    /// Reads a copy from a file (see [`Checkpoint::decode_copy`]), size-capped.
    pub fn read_file(path: &Path) -> Result<Self, CheckpointError> {
        let io = |source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        };
        let f = std::fs::File::open(path).map_err(io)?;
        cap(f.metadata().map_err(io)?.len())?;
        let mut buf = Vec::new();
        f.take(MAX_CHECKPOINT_BYTES as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(io)?;
        Self::decode_copy(&buf)
    }

    fn check_form(&self) -> Result<(), CheckpointError> {
        let bad = |m: &str| Err(CheckpointError::Malformed(m.into()));
        if self.format != CHECKPOINT_FORMAT {
            return Err(CheckpointError::UnsupportedFormat(self.format));
        }
        if self.size == 0 || self.size > i64::MAX as u64 {
            return bad("size must be between 1 and 2^63-1");
        }
        if !is_hash_hex(&self.head) {
            return bad("head is not 64 lowercase hex characters");
        }
        if KeyId::parse(self.key_id.as_str()).is_none() {
            return bad("key_id is not a valid key id");
        }
        if hex::decode(&self.signature).map(|s| s.len()) != Ok(SIGNATURE_LEN) {
            return bad("signature is not 64 bytes of hex");
        }
        Ok(())
    }

    /// Checks the form and the signature against `trust`.
    pub fn verify(&self, trust: &TrustStore) -> Result<VerifiedCheckpoint, CheckpointError> {
        self.check_form()?;
        let key = trust
            .get(&self.key_id)
            .ok_or_else(|| CheckpointError::UnknownKey(self.key_id.clone()))?;
        let sig = hex::decode(&self.signature).unwrap_or_default();
        if !key.verify(CHECKPOINT_DOMAIN, &self.body(), &sig) {
            return Err(CheckpointError::BadSignature(self.key_id.clone()));
        }
        Ok(VerifiedCheckpoint(self.clone()))
    }
}

fn cap(len: u64) -> Result<(), CheckpointError> {
    if len > MAX_CHECKPOINT_BYTES as u64 {
        return Err(CheckpointError::TooLarge {
            size: len,
            limit: MAX_CHECKPOINT_BYTES,
        });
    }
    Ok(())
}

/// The chain's hash at given positions, recomputed from the first row in one pass (the
/// stored hashes are not trusted: a row edited in place changes every later position).
struct ChainHeads {
    rows: u64,
    heads: BTreeMap<u64, String>,
}

impl ChainHeads {
    fn compute(c: &Connection, sizes: BTreeSet<u64>) -> rusqlite::Result<Self> {
        let rows: i64 = c.query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))?;
        let mut heads = BTreeMap::new();
        if let Some(&max) = sizes.last() {
            let mut q = c.prepare(&format!(
                "SELECT {ROW_COLUMNS} FROM audit ORDER BY id LIMIT ?1"
            ))?;
            let mut it = q.query([max.min(i64::MAX as u64) as i64])?;
            let (mut k, mut chain) = (0u64, GENESIS.to_owned());
            while let Some(r) = it.next()? {
                k += 1;
                chain = StoredRow::read(r)?.hash_with(&chain);
                if sizes.contains(&k) {
                    heads.insert(k, chain.clone());
                }
            }
        }
        Ok(Self {
            rows: rows as u64,
            heads,
        })
    }

    fn check(&self, v: &VerifiedCheckpoint) -> Result<(), CheckpointError> {
        let cp = v.checkpoint();
        match self.heads.get(&cp.size) {
            None => Err(CheckpointError::Truncated {
                size: cp.size,
                head: cp.head.clone(),
                rows: self.rows,
            }),
            Some(h) if *h != cp.head => Err(CheckpointError::Rewritten {
                size: cp.size,
                head: cp.head.clone(),
                actual: h.clone(),
            }),
            Some(_) => Ok(()),
        }
    }
}

/// Checks `checkpoint` (a stored one or a copy from elsewhere) against the current chain:
/// its signature verifies with a key in `trust`, and the chain recomputed from the first
/// row has exactly `head` at row `size`. A log truncated below `size`, or rewritten at or
/// below it, fails, whatever the head file and the stored checkpoints now say.
pub fn verify_against(
    c: &Connection,
    checkpoint: &Checkpoint,
    trust: &TrustStore,
) -> Result<VerifiedCheckpoint, CheckpointError> {
    let v = checkpoint.verify(trust)?;
    ChainHeads::compute(c, BTreeSet::from([checkpoint.size]))?.check(&v)?;
    Ok(v)
}

/// The keys `audit --verify` trusts by default: every `*.pub` in `{data_dir}/keys` plus
/// the public half of the bridge's signing key (none if there is no key directory yet).
/// A monitor that does not trust the data directory passes its own trust directory.
pub fn local_trust(data_dir: &Path) -> Result<TrustStore, CheckpointError> {
    let dir = data_dir.join("keys");
    let mut trust = match TrustStore::load_dir(&dir) {
        Ok(t) => t,
        Err(KeyError::EmptyTrustDir(_)) => TrustStore::new(),
        Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            TrustStore::new()
        }
        Err(e) => return Err(e.into()),
    };
    let private = dir.join(crate::keys::PRIVATE_KEY_FILE);
    if private.exists() {
        trust.add(SigningKey::load(&private)?.public_key());
    }
    Ok(trust)
}

/// Checks the rows after `(from, prev)` and returns the new `(size, head)`: row `from`
/// must still have hash `prev`, and every later row must link and hash correctly.
fn extend(c: &Connection, from: u64, prev: &str) -> Result<(u64, String), CheckpointError> {
    if from > 0 {
        let stored: Option<String> = c
            .query_row("SELECT hash FROM audit WHERE id = ?1", [from as i64], |r| {
                r.get(0)
            })
            .optional()?;
        if stored.as_deref() != Some(prev) {
            return Err(CheckpointError::Rewritten {
                size: from,
                head: prev.to_owned(),
                actual: stored.unwrap_or_else(|| "nothing (the row is gone)".into()),
            });
        }
    }
    let mut q = c.prepare(&format!(
        "SELECT {ROW_COLUMNS} FROM audit WHERE id > ?1 ORDER BY id"
    ))?;
    let mut rows = q.query([from as i64])?;
    let (mut size, mut chain) = (from, prev.to_owned());
    while let Some(r) = rows.next()? {
        let row = StoredRow::read(r)?;
        if row.id != size as i64 + 1 || row.prev_hash != chain || row.hash_with(&chain) != row.hash
        {
            return Err(CheckpointError::Broken(row.id));
        }
        size += 1;
        chain = row.hash;
    }
    Ok((size, chain))
}

impl Audit {
    /// Makes, stores and publishes a checkpoint if the chain has grown since the last
    /// stored one; `Ok(None)` if it has not. Opens its own transaction on `c`, so call it
    /// outside any other.
    ///
    /// The checkpoint row and its `audit_checkpoint` event (with the webhook outbox rows)
    /// commit together; the MQTT copy is handed over before the commit, which at worst
    /// publishes a true, signed statement that was not stored. Then the newest checkpoint
    /// is written to `audit.checkpoint`.
    pub fn checkpoint(
        &self,
        c: &Connection,
        key: &SigningKey,
        events: &EventBus,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        ensure_schema(c)?;
        let tx = c.unchecked_transaction()?;
        let last: Option<(i64, String)> = tx
            .query_row(
                "SELECT size, head FROM audit_checkpoints ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (from, prev) = last
            .map(|(s, h)| (s as u64, h))
            .unwrap_or((0, GENESIS.to_owned()));
        let rows: i64 = tx.query_row("SELECT COALESCE(MAX(id), 0) FROM audit", [], |r| r.get(0))?;
        if (rows as u64) < from {
            return Err(CheckpointError::Truncated {
                size: from,
                head: prev,
                rows: rows as u64,
            });
        }
        if rows as u64 == from {
            return Ok(None);
        }
        let (size, head) = extend(&tx, from, &prev)?;
        let cp = Checkpoint::sign(size, &head, crate::db::now(), key);
        let body = String::from_utf8(cp.encode()).expect("JSON is UTF-8");
        tx.execute(
            "INSERT INTO audit_checkpoints (size, head, at, key_id, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![size as i64, head, cp.at as i64, cp.key_id.as_str(), body],
        )?;
        let details = serde_json::to_value(&cp).expect("checkpoint serialises");
        events.emit_with(
            &tx,
            NewEvent::new(
                EventKind::AuditCheckpoint,
                format!("audit checkpoint: {size} entries, head {head}"),
            )
            .details(details),
        );
        tx.commit()?;
        // Stored and published; a failure here only leaves the local copy stale.
        if let Err(e) = crate::fsutil::write_atomic(&self.checkpoint_file, (body + "\n").as_bytes())
        {
            tracing::error!(error = %e, file = %self.checkpoint_file.display(), "cannot write the audit checkpoint file");
        }
        Ok(Some(cp))
    }

    /// Stored checkpoints, oldest first (decoded, not yet verified).
    pub fn checkpoints(&self, c: &Connection) -> Result<Vec<Checkpoint>, CheckpointError> {
        stored(c)?.into_iter().map(|(_, b)| b).collect()
    }

    /// [`Audit::verify`], plus every stored checkpoint, the `audit.checkpoint` file and the
    /// copies in `copies` (files, as a monitor or webhook receiver keeps them): each must
    /// verify with a key in `trust` and match the chain (see [`verify_against`]).
    pub fn verify_with_checkpoints(
        &self,
        c: &Connection,
        trust: &TrustStore,
        copies: &[PathBuf],
    ) -> Result<VerifyReport, CheckpointError> {
        let mut report = self.verify(c)?;
        let mut local: Vec<(String, Result<Checkpoint, CheckpointError>)> = stored(c)?
            .into_iter()
            .map(|(id, cp)| (format!("stored checkpoint #{id}"), cp))
            .collect();
        if self.checkpoint_file.exists() {
            let label = self.checkpoint_file.display().to_string();
            local.push((label, Checkpoint::read_file(&self.checkpoint_file)));
        }
        // One pass over the chain for all local checkpoints (there is one per minute of
        // activity, so checking each separately would be quadratic).
        let verified: Vec<(String, Result<VerifiedCheckpoint, CheckpointError>)> = local
            .into_iter()
            .map(|(l, cp)| (l, cp.and_then(|cp| cp.verify(trust))))
            .collect();
        let sizes = verified
            .iter()
            .filter_map(|(_, v)| v.as_ref().ok().map(|v| v.checkpoint().size))
            .collect();
        let heads = ChainHeads::compute(c, sizes)?;
        for (label, v) in verified {
            report.checkpoints += 1;
            if let Err(e) = v.and_then(|v| heads.check(&v)) {
                report.problems.push(format!("{label}: {e}"));
            }
        }
        for path in copies {
            report.checkpoints += 1;
            let r = Checkpoint::read_file(path).and_then(|cp| verify_against(c, &cp, trust));
            if let Err(e) = r {
                report
                    .problems
                    .push(format!("checkpoint {}: {e}", path.display()));
            }
        }
        Ok(report)
    }
}

/// Stored checkpoints with their row ids, oldest first.
#[allow(clippy::type_complexity)]
fn stored(
    c: &Connection,
) -> Result<Vec<(i64, Result<Checkpoint, CheckpointError>)>, CheckpointError> {
    ensure_schema(c)?;
    let mut q = c.prepare("SELECT id, body FROM audit_checkpoints ORDER BY id")?;
    let rows = q.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for r in rows {
        let (id, body) = r?;
        out.push((id, Checkpoint::decode(body.as_bytes())));
    }
    Ok(out)
}

/// Checkpoints the audit chain every `every` while `serve` runs (first tick at start-up,
/// to cover what CLI commands appended meanwhile). The final checkpoint at shutdown is
/// made by [`crate::server::Bridge::shutdown`] once every task has drained.
///
/// Each checkpoint is signed by the key active at that moment (`keys activate` in another
/// process takes effect at the next tick).
pub async fn run_checkpoints(
    db: Db,
    audit: Audit,
    keys: crate::keys::Keyring,
    events: EventBus,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    // A zero period would make `interval` panic; the CLI already refuses it.
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The same refusal every tick is one operator problem: log it once until it changes.
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {}
        }
        let (a, k, ev) = (audit.clone(), keys.clone(), events.clone());
        let r = match db
            .run(move |c| match k.active(c) {
                Ok(key) => a.checkpoint(c, &key, &ev).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            })
            .await
        {
            Ok(r) => r,
            // The runtime is stopping.
            Err(_) => break,
        };
        match r {
            Ok(_) => last_error = None,
            Err(e) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    tracing::error!(error = %msg, "cannot checkpoint the audit trail");
                    last_error = Some(msg);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn setup(n: usize) -> (tempfile::TempDir, Db, Audit, EventBus, SigningKey) {
        let d = tempfile::tempdir().unwrap();
        let db = Db::open(d.path()).unwrap();
        let a = Audit::new(d.path());
        let ev = EventBus::new(db.clone(), None);
        for i in 0..n {
            a.append(
                &db.lock(),
                "alice",
                "device.add",
                &format!("gw-{i}"),
                "",
                &serde_json::json!({ "i": i }),
            )
            .unwrap();
        }
        (d, db, a, ev, SigningKey::generate().unwrap())
    }

    fn trust(k: &SigningKey) -> TrustStore {
        let mut t = TrustStore::new();
        t.add(k.public_key());
        t
    }

    #[test]
    fn checkpoints_only_when_grown_and_each_verifies() {
        let (d, db, a, ev, k) = setup(0);
        let c = db.lock();
        assert!(a.checkpoint(&c, &k, &ev).unwrap().is_none(), "empty log");
        drop(c);
        for _ in 0..3 {
            a.append(&db.lock(), "bob", "x", "y", "", &serde_json::json!({}))
                .unwrap();
        }
        let c = db.lock();
        let cp = a.checkpoint(&c, &k, &ev).unwrap().unwrap();
        assert_eq!(cp.size, 3);
        assert!(a.checkpoint(&c, &k, &ev).unwrap().is_none(), "not grown");
        verify_against(&c, &cp, &trust(&k)).unwrap();
        let file = std::fs::read(d.path().join(CHECKPOINT_FILE)).unwrap();
        assert_eq!(Checkpoint::decode(&file).unwrap(), cp);
        drop(c); // `recent` takes the connection itself
        let evs = ev.recent(10, Some("audit_checkpoint")).unwrap();
        assert_eq!(evs.len(), 1);
        assert_eq!(
            serde_json::from_value::<Checkpoint>(evs[0].details.clone()).unwrap(),
            cp
        );
        let c = db.lock();
        // An older checkpoint still matches after the log grows.
        a.append(&c, "bob", "x", "y", "", &serde_json::json!({}))
            .unwrap();
        verify_against(&c, &cp, &trust(&k)).unwrap();
        let cp2 = a.checkpoint(&c, &k, &ev).unwrap().unwrap();
        assert_eq!(cp2.size, 4);
        let r = a.verify_with_checkpoints(&c, &trust(&k), &[]).unwrap();
        assert!(r.problems.is_empty(), "{r:?}");
        assert_eq!(r.checkpoints, 3, "two stored and the file");
        // Stored checkpoints are append-only too.
        assert!(c.execute("DELETE FROM audit_checkpoints", []).is_err());
    }

    #[test]
    fn forged_and_tampered_checkpoints_are_refused() {
        let (_d, db, a, ev, k) = setup(4);
        let c = db.lock();
        let cp = a.checkpoint(&c, &k, &ev).unwrap().unwrap();
        let t = trust(&k);
        let other = SigningKey::generate().unwrap();
        let forged = Checkpoint::sign(cp.size, &cp.head, cp.at, &other);
        assert!(matches!(
            forged.verify(&t),
            Err(CheckpointError::UnknownKey(_))
        ));
        // Another key's signature under the bridge's key id.
        let mut claimed = forged.clone();
        claimed.key_id = k.id().clone();
        assert!(matches!(
            claimed.verify(&t),
            Err(CheckpointError::BadSignature(_))
        ));
        for tamper in [
            |c: &mut Checkpoint| c.size -= 1,
            |c: &mut Checkpoint| c.at += 1,
            |c: &mut Checkpoint| c.head = "ab".repeat(32),
        ] {
            let mut x = cp.clone();
            tamper(&mut x);
            assert!(matches!(
                verify_against(&c, &x, &t),
                Err(CheckpointError::BadSignature(_))
            ));
        }
        // A bundle-domain signature over the same body is not a checkpoint signature.
        let mut cross = cp.clone();
        cross.signature = hex::encode(k.sign(outpost_protocol::bundle::BUNDLE_DOMAIN, &cp.body()));
        assert!(matches!(
            cross.verify(&t),
            Err(CheckpointError::BadSignature(_))
        ));
        // Unsigned extra fields and oversize input are refused before any crypto.
        let mut v = serde_json::to_value(&cp).unwrap();
        v["note"] = "trust me".into();
        assert!(matches!(
            Checkpoint::decode(v.to_string().as_bytes()),
            Err(CheckpointError::Malformed(_))
        ));
        assert!(matches!(
            Checkpoint::decode(&vec![b' '; MAX_CHECKPOINT_BYTES + 1]),
            Err(CheckpointError::TooLarge { .. })
        ));
    }

    #[test]
    fn the_bridge_refuses_to_sign_a_chain_that_no_longer_extends_its_last_checkpoint() {
        let (_d, db, a, ev, k) = setup(3);
        let c = db.lock();
        a.checkpoint(&c, &k, &ev).unwrap().unwrap();
        c.execute_batch("DROP TRIGGER audit_no_delete; DROP TRIGGER audit_no_update;")
            .unwrap();
        c.execute("DELETE FROM audit WHERE id = 3", []).unwrap();
        assert!(matches!(
            a.checkpoint(&c, &k, &ev),
            Err(CheckpointError::Truncated {
                size: 3,
                rows: 2,
                ..
            })
        ));
        a.append(&c, "eve", "x", "y", "", &serde_json::json!({}))
            .unwrap();
        a.append(&c, "eve", "x", "y", "", &serde_json::json!({}))
            .unwrap();
        assert!(matches!(
            a.checkpoint(&c, &k, &ev),
            Err(CheckpointError::Rewritten { size: 3, .. })
        ));
    }

    #[test]
    fn copies_are_read_bare_or_as_the_event_that_carried_them() {
        let (d, db, a, ev, k) = setup(2);
        let c = db.lock();
        let cp = a.checkpoint(&c, &k, &ev).unwrap().unwrap();
        drop(c);
        let event = ev.recent(1, Some("audit_checkpoint")).unwrap().remove(0);
        let f = d.path().join("event.json");
        std::fs::write(&f, event.encode()).unwrap();
        assert_eq!(Checkpoint::read_file(&f).unwrap(), cp);
        assert_eq!(Checkpoint::decode_copy(&cp.encode()).unwrap(), cp);
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(size in 1u64..=i64::MAX as u64, at: u64, head in "[0-9a-f]{64}") {
            let k = SigningKey::generate().unwrap();
            let cp = Checkpoint::sign(size, &head, at, &k);
            let back = Checkpoint::decode(&cp.encode()).unwrap();
            prop_assert_eq!(&back, &cp);
            let mut t = TrustStore::new();
            t.add(k.public_key());
            prop_assert!(back.verify(&t).is_ok());
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Checkpoint::decode(&bytes);
            let _ = Checkpoint::decode_copy(&bytes);
        }
    }
}
