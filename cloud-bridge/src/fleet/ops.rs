//! Operator paths beside create/command: rolling back a finished deployment (a new
//! deployment), removing a model from devices, and what keeps a model version from being
//! deleted.

use std::collections::BTreeSet;

use rusqlite::{Connection, TransactionBehavior};
use serde::Serialize;

use super::machine::{DeviceStatus, Gates, State, Strategy, Wave};
use super::{
    ACTIVE, DeploymentRecord, FleetError, FleetHandle, NewDeployment, Selector, desired, load,
};

/// `deploy rollback` of a deployment.
#[derive(Debug, Clone)]
pub struct RollbackRequest {
    /// The deployment.
    pub id: String,
    /// Send every device to this version instead of its own previous one.
    pub to: Option<u32>,
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: String,
}

/// `deploy remove`: take a model off devices.
#[derive(Debug, Clone)]
pub struct RemoveModel {
    /// Model name.
    pub model: String,
    /// Devices.
    pub selector: Selector,
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: String,
}

/// What `deploy remove` did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Removed {
    /// Devices that had the model in their desired set (each got a new directive).
    pub devices: Vec<String>,
    /// Devices that did not have it.
    pub untouched: Vec<String>,
}

impl FleetHandle {
    /// Rolls a deployment back. An unfinished one sends its switched devices back (the
    /// machine's rollback); a finished one (succeeded, aborted, rolled back) gets a new
    /// deployment that returns each device it reached to its previous version — or every
    /// device to version `to` — in one wave without canary gates (going back to a version
    /// that ran is not what gates are for).
    pub fn rollback(&self, req: RollbackRequest) -> Result<DeploymentRecord, FleetError> {
        crate::input::text("reason", &req.reason)?;
        let mut c = self.db.lock();
        let r = load(&c, &req.id)?;
        if !r.state.terminal() && req.to.is_none() {
            drop(c);
            return self.command(
                &req.id,
                super::machine::Command::Rollback(req.reason),
                &req.actor,
            );
        }
        if !r.state.terminal() {
            return Err(FleetError::Refused(format!(
                "deployment {} is {}: abort it before rolling it to another version",
                req.id,
                r.state.name()
            )));
        }
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let old = super::show(&tx, &req.id)?;
        let to = match req.to {
            Some(v) => Some(crate::registry::show(&tx, &old.model, Some(v)).map_err(
                |e| match e {
                    crate::registry::RegistryError::Db(e) => FleetError::Db(e),
                    e => FleetError::NotFound(e.to_string().replace(" not found", "")),
                },
            )?),
            None => None,
        };
        let mut devices = Vec::new();
        let mut skipped = Vec::new();
        for (id, e) in &r.devices {
            let reached = !matches!(e.status, DeviceStatus::Pending);
            if !reached {
                continue;
            }
            let now_runs = desired::reported(&tx, id)?
                .and_then(|s| s.model(&old.model).and_then(|m| m.active.clone()))
                .map(|a| a.bundle.to_hex());
            let target = match &to {
                Some(rec) => Some(rec.digest.clone()),
                None => e.previous.clone(),
            };
            match target {
                Some(t) => devices.push((id.clone(), now_runs, t)),
                None => skipped.push(id.clone()),
            }
        }
        if devices.is_empty() {
            return Err(FleetError::Refused(format!(
                "deployment {}: no device it reached had a previous version of {}{}; give --to VERSION",
                req.id,
                old.model,
                if skipped.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", skipped.join(", "))
                }
            )));
        }
        let (digest, version) = match &to {
            Some(rec) => (rec.digest.clone(), rec.version),
            None => {
                // The version most devices go back to names the deployment.
                let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
                for (_, _, t) in &devices {
                    *counts.entry(t.as_str()).or_default() += 1;
                }
                let d = counts
                    .into_iter()
                    .max_by_key(|(_, n)| *n)
                    .map(|(d, _)| d.to_owned())
                    .unwrap_or_default();
                let v: u32 = tx
                    .query_row(
                        "SELECT version FROM models WHERE name = ?1 AND digest = ?2",
                        [&old.model, &d],
                        |r| r.get(0),
                    )
                    .map_err(|_| {
                        FleetError::NotFound(format!(
                            "the previous version (bundle {d}) of {} in the registry",
                            old.model
                        ))
                    })?;
                (d, v)
            }
        };
        let timeout = r
            .strategy
            .waves
            .iter()
            .map(|w| w.timeout_ms)
            .max()
            .unwrap_or(120_000);
        let strategy = Strategy {
            waves: vec![Wave {
                fraction: 1.0,
                success_threshold: r.strategy.waves.last().map_or(0.9, |w| w.success_threshold),
                error_threshold: r.strategy.waves.last().map_or(0.1, |w| w.error_threshold),
                timeout_ms: timeout,
            }],
            gates: Gates {
                max_error_rate: None,
                max_p99_us: None,
                max_output_shift: None,
                min_samples: 0,
                observe_ms: 0,
            },
            on_trip: super::machine::OnTrip::Pause,
        };
        let reason = if skipped.is_empty() {
            req.reason.clone()
        } else {
            format!(
                "{} (left as they are, no previous version: {})",
                req.reason,
                skipped.join(", ")
            )
        };
        let new = NewDeployment {
            model: old.model.clone(),
            version,
            digest,
            selector: Selector {
                ids: devices.iter().map(|d| d.0.clone()).collect(),
                tags: Vec::new(),
            },
            devices,
            strategy,
            actor: req.actor.clone(),
            reason,
            rollback_of: Some(req.id.clone()),
            gates_skipped: true,
        };
        let (id, publish) = self.insert(&tx, new)?;
        tx.commit()?;
        drop(c);
        self.publish(publish);
        self.wake.notify_one();
        self.show(&id)
    }

    /// Takes model `model` off the selected devices: each loses it from its desired set and
    /// gets a new directive (the agent unloads it and frees its slots). Refused for a
    /// device an unfinished deployment of that model is rolling out to.
    pub fn remove_model(&self, req: RemoveModel) -> Result<Removed, FleetError> {
        crate::input::bounded("model", &req.model, crate::input::MAX_NAME)?;
        crate::input::text("reason", &req.reason)?;
        let mut c = self.db.lock();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut ids: BTreeSet<String> = req.selector.ids.iter().cloned().collect();
        if !req.selector.tags.is_empty() {
            ids.extend(
                crate::devices::list(&tx, &req.selector.tags)?
                    .into_iter()
                    .map(|d| d.id),
            );
        }
        if ids.is_empty() {
            return Err(FleetError::Invalid("select devices by id or tag".into()));
        }
        let busy: Vec<String> = {
            let mut q = tx.prepare(&format!(
                "SELECT dd.device, d.id FROM deployment_devices dd JOIN deployments d ON d.id = dd.deployment
                 WHERE d.state IN {ACTIVE} AND d.model = ?1"
            ))?;
            let rows = q.query_map([&req.model], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?;
            rows.filter_map(Result::ok)
                .filter(|(dev, _)| ids.contains(dev))
                .map(|(dev, dep)| format!("{dev} ({dep})"))
                .collect()
        };
        if !busy.is_empty() {
            return Err(FleetError::Conflict(busy.join(", ")));
        }
        let mut out = Removed {
            devices: Vec::new(),
            untouched: Vec::new(),
        };
        let mut publish = Vec::new();
        for d in ids {
            let has = desired::entries(&tx, &d)?
                .iter()
                .any(|m| m.name == req.model);
            if !has {
                out.untouched.push(d);
                continue;
            }
            desired::remove(&tx, &d, &req.model)?;
            let signer = self.keys.signer(&tx)?;
            publish.push(desired::issue(
                &tx,
                &signer,
                &d,
                "remove",
                self.clock.now(),
            )?);
            out.devices.push(d);
        }
        self.audit.append(
            &tx,
            &req.actor,
            "model.remove_from_devices",
            &req.model,
            &req.reason,
            &serde_json::json!({"devices": out.devices}),
        )?;
        tx.commit()?;
        drop(c);
        self.publish(publish);
        Ok(out)
    }
}

/// Why bundle `digest` (model `name`) cannot be deleted: unfinished deployments that
/// target it or would roll back to it, devices the bridge intends to run it, devices that
/// report it active or in their other slot. Empty: deletable.
pub fn in_use(c: &Connection, name: &str, digest: &str) -> Result<Vec<String>, FleetError> {
    let mut why = Vec::new();
    let ids: Vec<String> = {
        let mut q = c.prepare(&format!(
            "SELECT id FROM deployments WHERE state IN {ACTIVE} AND model = ?1 ORDER BY id"
        ))?;
        let rows = q.query_map([name], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for id in ids {
        let r = load(c, &id)?;
        if r.target == digest
            || r.devices
                .values()
                .any(|e| e.target.as_deref() == Some(digest))
        {
            why.push(format!("deployment {id} ({}) targets it", r.state.name()));
        } else if r
            .devices
            .values()
            .any(|e| e.previous.as_deref() == Some(digest))
            && !matches!(r.state, State::RolledBack { .. })
        {
            why.push(format!(
                "deployment {id} ({}) would roll back to it",
                r.state.name()
            ));
        }
    }
    let intended: Vec<String> = {
        let mut q = c.prepare(
            "SELECT device FROM desired_models WHERE model = ?1 AND digest = ?2 ORDER BY device",
        )?;
        let rows = q.query_map([name, digest], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    if !intended.is_empty() {
        why.push(format!(
            "devices are meant to run it: {}",
            short_list(&intended)
        ));
    }
    let mut running = Vec::new();
    let mut held = Vec::new();
    let mut q = c.prepare("SELECT id, state FROM devices WHERE state IS NOT NULL ORDER BY id")?;
    let rows = q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (id, s) = row?;
        let Ok(s) = serde_json::from_str::<outpost_protocol::wire::ReportedState>(&s) else {
            continue;
        };
        if let Some(m) = s.model(name) {
            if m.active
                .as_ref()
                .is_some_and(|a| a.bundle.to_hex() == digest)
            {
                running.push(id);
            } else if m
                .previous
                .as_ref()
                .is_some_and(|a| a.bundle.to_hex() == digest)
            {
                held.push(id);
            }
        }
    }
    if !running.is_empty() {
        why.push(format!(
            "devices report it active: {}",
            short_list(&running)
        ));
    }
    if !held.is_empty() {
        why.push(format!(
            "devices hold it as their rollback version: {}",
            short_list(&held)
        ));
    }
    Ok(why)
}

fn short_list(v: &[String]) -> String {
    if v.len() <= 10 {
        v.join(", ")
    } else {
        format!("{} and {} more", v[..10].join(", "), v.len() - 10)
    }
}
