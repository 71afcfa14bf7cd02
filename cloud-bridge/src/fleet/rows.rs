//! Deployment rows: a rollout machine stored as JSON in `deployments.machine`, read back as
//! the records the CLI, the API and the dashboard show.

use rusqlite::{Connection, OptionalExtension, params};

use super::{DeploymentFilter, DeploymentRecord, FleetError, Rollout};

pub(super) fn load(c: &Connection, id: &str) -> Result<Rollout, FleetError> {
    let m: String = c
        .query_row("SELECT machine FROM deployments WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?
        .ok_or_else(|| FleetError::NotFound(format!("deployment {id}")))?;
    serde_json::from_str(&m)
        .map_err(|e| FleetError::Invalid(format!("deployment {id} state is unreadable: {e}")))
}

pub(super) fn save(c: &Connection, id: &str, r: &Rollout, now_ms: u64) -> Result<(), FleetError> {
    c.execute(
        "UPDATE deployments SET machine = ?2, state = ?3, updated_at = ?4 WHERE id = ?1",
        params![
            id,
            serde_json::to_string(r).unwrap_or_default(),
            r.state.name(),
            now_ms as i64
        ],
    )?;
    Ok(())
}

/// One deployment.
pub fn show(c: &Connection, id: &str) -> Result<DeploymentRecord, FleetError> {
    type Row = (
        String,
        u32,
        String,
        i64,
        String,
        String,
        Option<String>,
        bool,
    );
    let (model, version, digest, created_at, created_by, reason, rollback_of, gates_skipped): Row =
        c.query_row(
            "SELECT model, version, digest, created_at, created_by, reason, rollback_of, gates_skipped FROM deployments WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            },
        )
        .optional()?
        .ok_or_else(|| FleetError::NotFound(format!("deployment {id}")))?;
    let r = load(c, id)?;
    Ok(DeploymentRecord {
        id: id.into(),
        model,
        version,
        digest,
        state: r.state.name().into(),
        detail: r.state.clone(),
        wave: r.wave,
        created_at: created_at as u64 / 1000,
        created_by,
        reason,
        devices: r
            .devices
            .iter()
            .map(|(d, e)| (d.clone(), e.wave, e.status.clone()))
            .collect(),
        observation: r.observation.clone(),
        strategy: r.strategy.clone(),
        rollback_of,
        gates_skipped,
    })
}

/// Deployments matching `f`, newest first.
pub fn list(c: &Connection, f: &DeploymentFilter) -> Result<Vec<DeploymentRecord>, FleetError> {
    let mut q = c.prepare(
        "SELECT id FROM deployments d WHERE (?1 IS NULL OR model = ?1) AND (?2 IS NULL OR version = ?2) AND (?3 IS NULL OR state = ?3)
         AND (?4 IS NULL OR EXISTS (SELECT 1 FROM deployment_devices x WHERE x.deployment = d.id AND x.device = ?4))
         ORDER BY created_at DESC, id DESC",
    )?;
    let ids: Vec<String> = q
        .query_map(params![f.model, f.version, f.state, f.device], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    ids.iter().map(|i| show(c, i)).collect()
}
