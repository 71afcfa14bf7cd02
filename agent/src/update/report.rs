//! The reported state: every model slot with its phase, versions, health and last error,
//! the last refused directive, and the budgets.

use outpost_protocol::wire::{BudgetState, Health, ReportedState};

use super::Updater;
use super::lifecycle::Phase;
use crate::clock::unix_now;

impl Updater {
    /// Publishes the current state to the link's watch (the link sends it retained).
    pub(super) fn report(&self) {
        let _ = self.p.report.send(Some(self.reported()));
    }

    /// The state as reported.
    pub fn reported(&self) -> ReportedState {
        let mut models = Vec::with_capacity(self.state.models.len());
        let (mut serving, mut desired) = (0, 0);
        for (name, l) in &self.state.models {
            let loaded = self.p.models.get(name).is_some();
            if l.target.is_some() {
                desired += 1;
                serving += usize::from(loaded);
            }
            let (chunks_done, chunks_total) = match l.phase {
                Phase::Fetching => self.fetchers.get(name).map_or((0, 0), |f| f.progress()),
                _ => (0, 0),
            };
            models.push(l.model_state(loaded, (chunks_done, chunks_total)));
        }
        let health = if serving == 0 {
            Health::NoModel
        } else if serving < desired || models.iter().any(|m| m.health != Health::Ok) {
            Health::Degraded
        } else {
            Health::Ok
        };
        ReportedState {
            device_id: self.p.device_id.clone(),
            agent_version: crate::VERSION.into(),
            at: unix_now(),
            directive_sequence: self.state.last_sequence,
            directive_rejected: self.state.rejected.clone(),
            models,
            health,
            last_error: self.last_error.clone(),
            budget: BudgetState {
                memory_budget: self.p.budget.max_memory_bytes,
                memory_used: self
                    .state
                    .models
                    .values()
                    .filter_map(|l| l.target.as_ref()?.entry.memory_bytes)
                    .sum(),
                disk_budget: self.p.budget.max_disk_bytes,
                disk_used: self.disk_used,
            },
            tags: self.p.tags.clone(),
            trusted_keys: self.p.trust.ids().cloned().collect(),
        }
    }
}
