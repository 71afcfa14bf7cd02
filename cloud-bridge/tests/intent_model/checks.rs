//! What the intent model checks: the invariants that hold after every step, and bringing
//! the fleet to quiet (true clocks, everyone online, passes until nothing changes) before
//! the final comparison.

use outpost_bridge::fleet::{DeploymentFilter, desired};
use outpost_protocol::Limits;
use outpost_protocol::directive::{self, DirectiveContext};
use proptest::prelude::*;

use super::World;
use crate::DEVICES;

impl World {
    /// Invariants that hold at every step.
    pub(super) fn check(&self) -> Result<(), TestCaseError> {
        let c = self.db.lock();
        for dev in DEVICES {
            let want: Vec<(String, String)> = desired::entries(&c, dev)
                .unwrap()
                .into_iter()
                .map(|m| (m.name, m.digest.to_hex()))
                .collect();
            for (_, digest) in &want {
                prop_assert!(
                    !self.deleted.contains(digest),
                    "{dev}'s desired set names a deleted bundle"
                );
            }
            let latest: Option<Vec<u8>> = c
                .query_row(
                    "SELECT body FROM directives WHERE device = ?1 ORDER BY sequence DESC LIMIT 1",
                    [dev],
                    |r| r.get(0),
                )
                .ok();
            if let Some(body) = latest {
                let ctx = DirectiveContext {
                    device_id: dev,
                    last_sequence: None,
                    now: 0,
                    max_skew: u64::MAX,
                };
                let listed: Vec<(String, String)> =
                    match directive::verify(&body, &self.trust, ctx, &Limits::default()) {
                        Ok(vd) => vd
                            .directive()
                            .models
                            .iter()
                            .map(|m| (m.name.clone(), m.digest.to_hex()))
                            .collect(),
                        Err(e) => return Err(TestCaseError::fail(format!("{dev}: {e}"))),
                    };
                prop_assert_eq!(&listed, &want, "{}'s latest directive is stale", dev);
            } else {
                prop_assert!(want.is_empty(), "{dev} has a desired set but no directive");
            }
        }
        drop(c);
        let unfinished = self
            .fleet
            .list(&DeploymentFilter::default())
            .unwrap()
            .into_iter()
            .filter(|d| !d.detail.terminal());
        for d in unfinished {
            prop_assert!(
                !self.deleted.contains(&d.digest),
                "unfinished deployment {} targets a deleted bundle",
                d.id
            );
        }
        Ok(())
    }

    /// Quiet: true clocks, everyone online, engine passes and IO until nothing changes.
    pub(crate) fn settle(&mut self) -> Result<(), TestCaseError> {
        for i in 0..3 {
            self.devices[i].skew = 0;
            self.devices[i].online = true;
            // Reconnecting: the broker delivers the retained directive again.
            self.devices[i].delivered = None;
            self.report(i);
        }
        self.broker()?;
        for _ in 0..200 {
            self.engine_pass()?;
            for i in 0..3 {
                while !self.devices[i].jobs.is_empty() {
                    self.io(i)?;
                    self.broker()?;
                }
            }
            self.tick(3)?;
            self.check()?;
            let busy = self.devices.iter().any(|d| !d.jobs.is_empty())
                || self
                    .fleet
                    .list(&DeploymentFilter::default())
                    .unwrap()
                    .iter()
                    .any(|d| d.state == "running" || d.state == "rolling_back");
            if !busy {
                break;
            }
        }
        Ok(())
    }
}
