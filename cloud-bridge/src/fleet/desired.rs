//! The bridge's intent for each device: its desired model set (`desired_models`, one row
//! per device and model name) and the signed directive that carries the whole set.
//!
//! Every change of intent — a deployment targeting a device, a rollback, an abort pinning
//! a device, a model removed — is a change of rows here followed by [`issue`], in the same
//! transaction: the device's next directive always lists its complete set, so a deployment
//! of one model never touches another, and no stale directive stays retained for a device
//! (a refresh re-issues the set with a new sequence before it expires).

use outpost_protocol::bundle::parse_head;
use outpost_protocol::directive::{DIRECTIVE_FORMAT, Directive, ModelTarget};
use outpost_protocol::manifest::Manifest;
use outpost_protocol::wire::ReportedState;
use outpost_protocol::{Digest, Limits};
use rusqlite::{Connection, OptionalExtension, params};

use super::FleetError;
use crate::bundles::BundleStore;
use crate::db::now;

/// Directives expire after this long (a device offline for longer gets a fresh one: see
/// [`refresh_due`]).
pub const DIRECTIVE_TTL_SECS: u64 = 7 * 86_400;

/// (device, sequence, signed directive).
pub type Outgoing = (String, u64, Vec<u8>);

/// The next sequence for a device: above both what the bridge issued and what the device
/// says it accepted (a restored bridge database must not issue sequences the device would
/// call replays).
pub fn next_sequence(issued: u64, reported: Option<u64>) -> u64 {
    issued.max(reported.unwrap_or(0)) + 1
}

/// Whether a device's latest directive (issued at `issued_at`, expiring at `expires_at`)
/// should be replaced by a fresh one at `now`: when less than half its lifetime is left,
/// so a device that appears gets one it will not refuse as expired; never more than once
/// a minute per device.
pub fn refresh_due(issued_at: u64, expires_at: u64, now: u64) -> bool {
    let life = expires_at.saturating_sub(issued_at);
    now.saturating_sub(issued_at) >= 60 && expires_at.saturating_sub(now) < life / 2
}

/// The entry for `digest` of model `model` (version and sizes from the registry and the
/// stored bundle), put there by `deployment`.
pub fn entry(
    c: &Connection,
    bundles: &dyn BundleStore,
    model: &str,
    digest: &str,
    deployment: &str,
) -> Result<ModelTarget, FleetError> {
    let version: u32 = c
        .query_row(
            "SELECT version FROM models WHERE name = ?1 AND digest = ?2 ORDER BY version DESC LIMIT 1",
            params![model, digest],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| {
            FleetError::NotFound(format!("bundle {digest} of model {model} (deleted from the registry?)"))
        })?;
    let d: Digest = digest
        .parse()
        .map_err(|_| FleetError::Invalid(format!("bad digest {digest}")))?;
    let bytes = bundles.get(d)?;
    let (head, head_len) = parse_head(&bytes, &Limits::default())
        .map_err(|e| FleetError::Invalid(format!("stored bundle {digest}: {e}")))?;
    let manifest: Manifest = serde_json::from_slice(head.manifest)
        .map_err(|e| FleetError::Invalid(format!("stored bundle {digest}: {e}")))?;
    Ok(ModelTarget {
        name: model.into(),
        digest: d,
        version,
        head_size: head_len as u32,
        size: bytes.len() as u64,
        memory_bytes: manifest.requirements.memory_bytes,
        deployment_id: deployment.into(),
    })
}

/// Makes `t` the device's entry for its model.
pub fn set(c: &Connection, device: &str, t: &ModelTarget) -> Result<(), FleetError> {
    c.execute(
        "INSERT INTO desired_models (device, model, digest, version, head_size, size, memory_bytes, deployment, set_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (device, model) DO UPDATE SET digest = ?3, version = ?4, head_size = ?5, size = ?6,
             memory_bytes = ?7, deployment = ?8, set_at = ?9",
        params![
            device,
            t.name,
            t.digest.to_hex(),
            t.version,
            t.head_size,
            t.size as i64,
            t.memory_bytes.map(|m| m as i64),
            t.deployment_id,
            now() as i64
        ],
    )?;
    Ok(())
}

/// Removes model `model` from the device's set.
pub fn remove(c: &Connection, device: &str, model: &str) -> Result<(), FleetError> {
    c.execute(
        "DELETE FROM desired_models WHERE device = ?1 AND model = ?2",
        params![device, model],
    )?;
    Ok(())
}

/// The device's desired set, by model name.
pub fn entries(c: &Connection, device: &str) -> Result<Vec<ModelTarget>, FleetError> {
    let mut q = c.prepare(
        "SELECT model, digest, version, head_size, size, memory_bytes, deployment FROM desired_models
         WHERE device = ?1 ORDER BY model",
    )?;
    let rows = q.query_map([device], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, u32>(2)?,
            r.get::<_, u32>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, Option<i64>>(5)?,
            r.get::<_, String>(6)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (name, digest, version, head_size, size, memory, deployment) = row?;
        out.push(ModelTarget {
            digest: digest
                .parse()
                .map_err(|_| FleetError::Invalid(format!("stored digest {digest} is not hex")))?,
            name,
            version,
            head_size,
            size: size as u64,
            memory_bytes: memory.map(|m| m as u64),
            deployment_id: deployment,
        });
    }
    Ok(out)
}

/// The device's last reported state, if readable.
pub fn reported(c: &Connection, device: &str) -> rusqlite::Result<Option<ReportedState>> {
    let s: Option<String> = c
        .query_row("SELECT state FROM devices WHERE id = ?1", [device], |r| {
            r.get(0)
        })
        .optional()?
        .flatten();
    Ok(s.and_then(|s| serde_json::from_str(&s).ok()))
}

/// Signs a directive carrying the device's whole desired set with a new sequence and
/// records it (unpublished); `cause` names what changed (a deployment id, `refresh`,
/// `remove`, `keys.rotate`), issued at `now` (unix seconds; it expires
/// [`DIRECTIVE_TTL_SECS`] later). `signer` is the active key and the rotation under way,
/// which the directive's `trust` member carries. Returns what to publish after the commit.
pub fn issue(
    c: &Connection,
    signer: &crate::keys::Signer,
    device: &str,
    cause: &str,
    now: u64,
) -> Result<Outgoing, FleetError> {
    let models = entries(c, device)?;
    if models.len() > outpost_protocol::directive::MAX_MODELS {
        return Err(FleetError::Refused(format!(
            "device {device} would run {} models; a device runs at most {}",
            models.len(),
            outpost_protocol::directive::MAX_MODELS
        )));
    }
    let issued: i64 = c
        .query_row(
            "SELECT directive_seq FROM devices WHERE id = ?1",
            [device],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| FleetError::NotFound(format!("device {device}")))?;
    let reported = reported(c, device)?.and_then(|s| s.directive_sequence);
    let seq = next_sequence(issued as u64, reported);
    c.execute(
        "UPDATE devices SET directive_seq = ?2 WHERE id = ?1",
        params![device, seq as i64],
    )?;
    let t = now;
    let bytes = Directive {
        format: DIRECTIVE_FORMAT,
        device_id: device.into(),
        sequence: seq,
        issued_at: t,
        expires_at: t + DIRECTIVE_TTL_SECS,
        models: models.clone(),
        trust: signer.trust_update(),
    }
    .sign(signer.key());
    let max = Limits::default().max_directive;
    if bytes.len() > max {
        return Err(FleetError::Refused(format!(
            "device {device}'s directive would be {} bytes, over the {max}-byte limit devices accept",
            bytes.len()
        )));
    }
    // What the directive lists, queryable (`json_each`): name, version, digest.
    let listed = serde_json::to_string(
        &models
            .iter()
            .map(|m| serde_json::json!({"name": m.name, "version": m.version, "digest": m.digest.to_hex()}))
            .collect::<Vec<_>>(),
    )
    .unwrap_or_default();
    c.execute(
        "INSERT INTO directives (device, sequence, deployment, digest, issued_at, body, expires_at, models)
         VALUES (?1, ?2, ?3, '', ?4, ?5, ?6, ?7)",
        params![
            device,
            seq as i64,
            cause,
            t as i64,
            bytes,
            (t + DIRECTIVE_TTL_SECS) as i64,
            listed
        ],
    )?;
    Ok((device.to_owned(), seq, bytes))
}

/// Devices whose latest directive is due for a refresh at `now` (see [`refresh_due`]).
pub fn due_for_refresh(c: &Connection, now: u64) -> rusqlite::Result<Vec<String>> {
    let mut q = c.prepare(
        "SELECT d.device, d.issued_at, COALESCE(d.expires_at, d.issued_at + ?1) FROM directives d
         WHERE d.sequence = (SELECT MAX(sequence) FROM directives x WHERE x.device = d.device)",
    )?;
    let rows = q.query_map([DIRECTIVE_TTL_SECS as i64], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    Ok(rows
        .filter_map(Result::ok)
        .filter(|(_, i, e)| refresh_due(*i as u64, *e as u64, now))
        .map(|(d, _, _)| d)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_stay_above_both_sides() {
        assert_eq!(next_sequence(0, None), 1);
        assert_eq!(next_sequence(4, Some(9)), 10);
        assert_eq!(next_sequence(12, Some(9)), 13);
    }

    #[test]
    fn refresh_when_half_the_life_is_gone_never_twice_a_minute() {
        let (i, e) = (1000, 1000 + DIRECTIVE_TTL_SECS);
        assert!(!refresh_due(i, e, i + 10));
        assert!(!refresh_due(i, e, i + DIRECTIVE_TTL_SECS / 2 - 1));
        assert!(refresh_due(i, e, i + DIRECTIVE_TTL_SECS / 2 + 1));
        assert!(refresh_due(i, e, e + 5), "expired");
        assert!(!refresh_due(i, i + 100, i + 30), "a minute apart at least");
    }
}
