//! The audit trail: append-only and hash-chained, with signed checkpoints.
//!
//! Every operator and system action appends a row (who, what, target, why, when, details).
//! Each row's hash is `SHA-256(prev_hash || id || at || actor || action || target || reason
//! || details)` with fields length-prefixed, and the newest row's id and hash are also
//! written to `{data_dir}/audit.head` (atomically). `verify` recomputes the chain: an
//! edited row breaks its own hash, a deleted row breaks the next row's link (or the ids),
//! and deleting the newest rows is caught by the head file. SQLite triggers refuse UPDATE
//! and DELETE on the table, so tampering needs deliberate effort — and is then detected.
//!
//! Someone with write access to the data directory can still truncate the table, recompute
//! a consistent chain and rewrite the head file. [`checkpoint`] closes that gap the way
//! transparency logs do with signed tree heads: the bridge signs `(size, head)` with its
//! bundle key and publishes it (event topic, webhooks), so copies held elsewhere pin the
//! chain's prefix; [`verify_against`] checks the current chain against any such copy.

pub mod checkpoint;

use std::path::{Path, PathBuf};

use outpost_protocol::Digest;
use rusqlite::{Connection, params};
use serde::Serialize;

pub use checkpoint::{
    CHECKPOINT_DOMAIN, CHECKPOINT_FILE, CHECKPOINT_FORMAT, Checkpoint, CheckpointError,
    MAX_CHECKPOINT_BYTES, VerifiedCheckpoint, local_trust, run_checkpoints, verify_against,
};

/// The hash before the first row.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit row.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Row id (1, 2, …).
    pub id: i64,
    /// Unix seconds.
    pub at: u64,
    /// Who (token name, CLI user, `system`).
    pub actor: String,
    /// What (`model.register`, `deployment.pause`, …).
    pub action: String,
    /// On what (`vibration-anomaly:3`, `dep-7`, …).
    pub target: String,
    /// Why (free text from the operator, or the system's reason).
    pub reason: String,
    /// Details (JSON).
    pub details: serde_json::Value,
    /// Hash of the previous row.
    pub prev_hash: String,
    /// This row's hash.
    pub hash: String,
}

/// Result of a verification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Rows checked.
    pub rows: u64,
    /// Signed checkpoints checked against the chain (0 for [`Audit::verify`]).
    pub checkpoints: u64,
    /// Problems found (empty: intact).
    pub problems: Vec<String>,
}

/// The fields a row's hash covers.
struct Fields<'a> {
    prev: &'a str,
    id: i64,
    at: u64,
    actor: &'a str,
    action: &'a str,
    target: &'a str,
    reason: &'a str,
    details: &'a str,
}

fn hash(f: &Fields<'_>) -> String {
    let id_s = f.id.to_string();
    let at_s = f.at.to_string();
    let fields: [&[u8]; 8] = [
        f.prev.as_bytes(),
        id_s.as_bytes(),
        at_s.as_bytes(),
        f.actor.as_bytes(),
        f.action.as_bytes(),
        f.target.as_bytes(),
        f.reason.as_bytes(),
        f.details.as_bytes(),
    ];
    let lens: Vec<[u8; 8]> = fields
        .iter()
        .map(|x| (x.len() as u64).to_le_bytes())
        .collect();
    let mut parts: Vec<&[u8]> = Vec::with_capacity(16);
    for (l, x) in lens.iter().zip(fields) {
        parts.push(l);
        parts.push(x);
    }
    Digest::of_parts(parts).to_hex()
}

/// The columns [`StoredRow::read`] expects, in order.
const ROW_COLUMNS: &str = "id, at, actor, action, target, reason, details, prev_hash, hash";

/// One row exactly as stored (details as the hashed text, not parsed).
struct StoredRow {
    id: i64,
    at: u64,
    actor: String,
    action: String,
    target: String,
    reason: String,
    details: String,
    prev_hash: String,
    hash: String,
}

impl StoredRow {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            at: r.get::<_, i64>(1)? as u64,
            actor: r.get(2)?,
            action: r.get(3)?,
            target: r.get(4)?,
            reason: r.get(5)?,
            details: r.get(6)?,
            prev_hash: r.get(7)?,
            hash: r.get(8)?,
        })
    }

    /// This row's hash if the row before it hashed to `prev`.
    fn hash_with(&self, prev: &str) -> String {
        hash(&Fields {
            prev,
            id: self.id,
            at: self.at,
            actor: &self.actor,
            action: &self.action,
            target: &self.target,
            reason: &self.reason,
            details: &self.details,
        })
    }
}

/// The audit log.
#[derive(Debug, Clone)]
pub struct Audit {
    head_file: PathBuf,
    checkpoint_file: PathBuf,
}

impl Audit {
    /// The audit log of the data directory.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            head_file: data_dir.join("audit.head"),
            checkpoint_file: data_dir.join(CHECKPOINT_FILE),
        }
    }

    /// Appends an entry in the caller's transaction/connection; returns its hash.
    pub fn append(
        &self,
        c: &Connection,
        actor: &str,
        action: &str,
        target: &str,
        reason: &str,
        details: &serde_json::Value,
    ) -> rusqlite::Result<String> {
        let (last_id, prev): (i64, String) = c
            .query_row(
                "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap_or((0, GENESIS.to_owned()));
        let id = last_id + 1;
        let at = crate::db::now();
        let d = details.to_string();
        let h = hash(&Fields {
            prev: &prev,
            id,
            at,
            actor,
            action,
            target,
            reason,
            details: &d,
        });
        c.execute(
            "INSERT INTO audit (id, at, actor, action, target, reason, details, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![id, at as i64, actor, action, target, reason, d, prev, h],
        )?;
        // The head file lets verify notice rows deleted from the end. If writing it fails,
        // the row is still in the chain; verify will report the stale head.
        if let Err(e) =
            crate::fsutil::write_atomic(&self.head_file, format!("{id} {h}\n").as_bytes())
        {
            tracing::error!(error = %e, "cannot update the audit head file");
        }
        Ok(h)
    }

    /// Rows, oldest first (optionally only the last `limit`).
    pub fn list(&self, c: &Connection, limit: Option<u64>) -> rusqlite::Result<Vec<AuditEntry>> {
        let mut q = c.prepare(
            "SELECT id, at, actor, action, target, reason, details, prev_hash, hash FROM audit
             WHERE id > (SELECT COALESCE(MAX(id), 0) FROM audit) - ?1 ORDER BY id",
        )?;
        let rows = q.query_map([limit.map(|l| l as i64).unwrap_or(i64::MAX)], |r| {
            let details: String = r.get(6)?;
            Ok(AuditEntry {
                id: r.get(0)?,
                at: r.get::<_, i64>(1)? as u64,
                actor: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                reason: r.get(5)?,
                details: serde_json::from_str(&details)
                    .unwrap_or(serde_json::Value::String(details)),
                prev_hash: r.get(7)?,
                hash: r.get(8)?,
            })
        })?;
        rows.collect()
    }

    /// Recomputes the chain.
    pub fn verify(&self, c: &Connection) -> rusqlite::Result<VerifyReport> {
        let mut q = c.prepare(&format!("SELECT {ROW_COLUMNS} FROM audit ORDER BY id"))?;
        let mut rows = q.query([])?;
        let mut problems = Vec::new();
        let (mut expect_id, mut prev) = (1i64, GENESIS.to_owned());
        let mut n = 0u64;
        while let Some(r) = rows.next()? {
            n += 1;
            let row = StoredRow::read(r)?;
            let id = row.id;
            if id != expect_id {
                problems.push(format!(
                    "rows {expect_id}..{} are missing (deleted)",
                    id - 1
                ));
            }
            if row.prev_hash != prev {
                problems.push(format!(
                    "row {id} does not link to the row before it (a row was deleted or replaced)"
                ));
            }
            if row.hash_with(&row.prev_hash) != row.hash {
                problems.push(format!(
                    "row {id} was modified (its hash does not match its content)"
                ));
            }
            expect_id = id + 1;
            prev = row.hash;
        }
        match std::fs::read_to_string(&self.head_file) {
            Ok(head) => {
                let mut it = head.split_whitespace();
                let (hid, hh) = (it.next().and_then(|s| s.parse::<i64>().ok()), it.next());
                if hid != Some(expect_id - 1) || hh != Some(prev.as_str()) {
                    problems.push(format!(
                        "the log ends at row {} but the head file records row {} (rows deleted from the end, or the head was altered)",
                        expect_id - 1,
                        hid.map(|i| i.to_string()).unwrap_or_else(|| "?".into())
                    ));
                }
            }
            Err(_) if n == 0 => {}
            Err(e) => problems.push(format!(
                "head file {} unreadable: {e}",
                self.head_file.display()
            )),
        }
        Ok(VerifyReport {
            rows: n,
            checkpoints: 0,
            problems,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, crate::db::Db, Audit) {
        let d = tempfile::tempdir().unwrap();
        let db = crate::db::Db::open(d.path()).unwrap();
        let a = Audit::new(d.path());
        (d, db, a)
    }

    #[test]
    fn intact_chain_verifies_and_tampering_is_detected() {
        let (_d, db, a) = setup();
        let c = db.lock();
        for i in 0..5 {
            a.append(
                &c,
                "alice",
                "model.register",
                &format!("m:{i}"),
                "why",
                &serde_json::json!({"i": i}),
            )
            .unwrap();
        }
        assert!(a.verify(&c).unwrap().problems.is_empty());
        // Triggers refuse edits...
        assert!(
            c.execute("UPDATE audit SET actor = 'mallory' WHERE id = 2", [])
                .is_err()
        );
        assert!(c.execute("DELETE FROM audit WHERE id = 2", []).is_err());
        // ...but someone with the file can drop them; verify still notices.
        c.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
            .unwrap();
        c.execute("UPDATE audit SET actor = 'mallory' WHERE id = 2", [])
            .unwrap();
        let r = a.verify(&c).unwrap();
        assert!(
            r.problems.iter().any(|p| p.contains("row 2 was modified")),
            "{r:?}"
        );
        c.execute("UPDATE audit SET actor = 'alice' WHERE id = 2", [])
            .unwrap();
        assert!(a.verify(&c).unwrap().problems.is_empty());
        c.execute("DELETE FROM audit WHERE id = 3", []).unwrap();
        assert!(!a.verify(&c).unwrap().problems.is_empty());
    }

    #[test]
    fn deleting_the_newest_row_is_caught_by_the_head() {
        let (_d, db, a) = setup();
        let c = db.lock();
        for _ in 0..3 {
            a.append(&c, "bob", "device.add", "gw", "", &serde_json::json!({}))
                .unwrap();
        }
        c.execute_batch("DROP TRIGGER audit_no_delete;").unwrap();
        c.execute("DELETE FROM audit WHERE id = 3", []).unwrap();
        let r = a.verify(&c).unwrap();
        assert!(
            r.problems
                .iter()
                .any(|p| p.contains("head file records row 3")),
            "{r:?}"
        );
    }
}
