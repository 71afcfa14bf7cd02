//! Directive admission, sans-IO: whether a received directive is accepted (signature,
//! device, sequence, expiry, clock skew, budgets), and what an accepted one asks of each
//! model's lifecycle. The updater persists the sequence between the two steps; the
//! bridge's model-based intent test (`cloud-bridge/tests/intent_model.rs`) drives the same
//! two functions.

use std::collections::{BTreeMap, BTreeSet};

use outpost_protocol::directive::{
    self, Directive, DirectiveContext, DirectiveError, ModelTarget, VerifiedDirective,
};
use outpost_protocol::wire::DirectiveRejection;
use outpost_protocol::{Limits, TrustStore};

use super::config::ModelsConfig;
use super::lifecycle::{Action, Lifecycle, Target};

/// What became of a received directive.
#[derive(Debug)]
pub enum Admission {
    /// Already accepted (the retained directive comes back on every reconnect): nothing to do.
    Replay,
    /// Refused, with the reason the device reports.
    Refused(DirectiveRejection),
    /// Accepted: persist its sequence, then [`dispatch`] it.
    Accepted(VerifiedDirective),
}

/// Verifies `bytes` as this device's next directive at `ctx.now` and checks its desired
/// set against `budget`.
pub fn admit(
    bytes: &[u8],
    trust: &TrustStore,
    ctx: DirectiveContext<'_>,
    limits: &Limits,
    budget: &ModelsConfig,
) -> Admission {
    let now = ctx.now;
    let vd = match directive::verify(bytes, trust, ctx, limits) {
        Err(DirectiveError::Replayed(_)) => return Admission::Replay,
        Err(e) => return Admission::Refused(directive::rejection(bytes, &e, now, limits)),
        Ok(vd) => vd,
    };
    let d = vd.directive();
    if let Err(reason) = check_budget(d, budget) {
        return Admission::Refused(DirectiveRejection {
            sequence: Some(d.sequence),
            kind: "budget".into(),
            reason,
            now,
            issued_at: Some(d.issued_at),
            expires_at: Some(d.expires_at),
        });
    }
    Admission::Accepted(vd)
}

/// Hands an accepted directive's entries to every model's lifecycle: each model it lists
/// gets its target (a new lifecycle for a new name), every other model known on the device
/// is removed. Returns each model's actions, by name.
pub fn dispatch(
    models: &mut BTreeMap<String, Lifecycle>,
    d: &Directive,
) -> Vec<(String, Vec<Action>)> {
    let names: BTreeSet<String> = models
        .keys()
        .cloned()
        .chain(d.models.iter().map(|m| m.name.clone()))
        .collect();
    names
        .into_iter()
        .map(|name| {
            let target = d.model(&name).map(|e| Target {
                entry: e.clone(),
                sequence: d.sequence,
            });
            let acts = models
                .entry(name.clone())
                .or_insert_with(|| Lifecycle::new(&name))
                .on_desired(target);
            (name, acts)
        })
        .collect()
}

/// Checks a desired set against the device's budgets.
///
/// Memory: the sum of each model's peak measured at registration (`memory_bytes`; a model
/// without a measurement counts 0). Disk: two slots per model, each the bundle's size (the
/// previous version stays as the rollback target).
///
/// # Errors
/// The reason, naming what each model needs and the budget it exceeds.
pub fn check_budget(d: &Directive, budget: &ModelsConfig) -> Result<(), String> {
    let list = |f: &dyn Fn(&ModelTarget) -> u64| {
        d.models
            .iter()
            .map(|m| format!("{} v{} {} B", m.name, m.version, f(m)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(max) = budget.max_memory_bytes {
        let need: u64 = d.models.iter().map(|m| m.memory_bytes.unwrap_or(0)).sum();
        if need > max {
            return Err(format!(
                "the desired set needs {need} bytes of model memory ({}), over the {max} byte budget ([models] max_memory_bytes); the running models are kept",
                list(&|m| m.memory_bytes.unwrap_or(0))
            ));
        }
    }
    if let Some(max) = budget.max_disk_bytes {
        let need: u64 = d.models.iter().map(|m| m.size.saturating_mul(2)).sum();
        if need > max {
            return Err(format!(
                "the desired set needs {need} bytes of slot disk (two slots per model: {}), over the {max} byte budget ([models] max_disk_bytes); the running models are kept",
                list(&|m| m.size.saturating_mul(2))
            ));
        }
    }
    Ok(())
}
