//! Model-based property test of the whole intent path, bridge and agent together, without
//! a network: the bridge's real fleet engine (rollout machines, desired sets, signed
//! directives, delete guard; SQLite in a temporary directory, its clock advanced by the
//! test) and, per device, the agent's real directive admission (`admit`/`dispatch`:
//! signature, sequence, expiry, clock skew) and per-model lifecycles, with downloads,
//! installs and slot loads completing one at a time when the test says so.
//!
//! Random interleavings of: deployment create / pause / resume / abort / rollback
//! (`--to` too), `deploy remove`, model delete, devices going offline and online, device
//! clock skew, one device step of IO, engine passes, seconds and days passing (beyond the
//! directives' expiry), and bridge restarts (a new engine over the same database,
//! republishing on connect).
//!
//! Checked throughout:
//! - every device's latest issued directive lists exactly its desired set (no retained
//!   directive is stale);
//! - a device only ever switches a model to the target of the latest directive it has
//!   accepted, so once it holds the bridge's latest directive it never activates anything
//!   the bridge no longer intends (an aborted or superseded deployment's bundle);
//! - no desired entry and no unfinished deployment refers to a deleted bundle;
//! - every refusal (bridge operation or device directive) says why.
//!
//! And once the fleet is quiet (every device online with a true clock, engine passes until
//! nothing changes): every device's active model equals the bridge's intended model for it.

use std::collections::BTreeMap;

use outpost_agent::update::lifecycle::LifecycleConfig;
use outpost_bridge::fleet::desired;
use outpost_protocol::Digest;
use outpost_protocol::wire::UpdatePhase;
use proptest::prelude::*;

#[path = "intent_model/world.rs"]
mod world;

use world::World;

const MODEL: &str = "m";
const DEVICES: [&str; 3] = ["d0", "d1", "d2"];
const CFG: LifecycleConfig = LifecycleConfig {
    health_window_ms: 2_000,
    health_inferences: 5,
    max_probation_boots: 2,
};

#[derive(Debug, Clone)]
enum Op {
    Create {
        version: u32,
        devices: u8,
        rollback: bool,
    },
    Pause(usize),
    Resume(usize),
    Abort(usize),
    Rollback {
        deployment: usize,
        to: Option<u32>,
    },
    Remove(u8),
    Delete(u32),
    Offline(usize),
    Online(usize),
    Skew(usize, i64),
    /// One IO completion on a device.
    Io(usize),
    Engine,
    /// Seconds pass (probation, timeouts).
    Tick(u64),
    /// Days pass: every directive issued before expires.
    Days(u64),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u32..=3, 1u8..8, any::<bool>())
            .prop_map(|(version, devices, rollback)| Op::Create { version, devices, rollback }),
        1 => (0usize..6).prop_map(Op::Pause),
        1 => (0usize..6).prop_map(Op::Resume),
        2 => (0usize..6).prop_map(Op::Abort),
        1 => (0usize..6, proptest::option::of(1u32..=3))
            .prop_map(|(deployment, to)| Op::Rollback { deployment, to }),
        1 => (1u8..8).prop_map(Op::Remove),
        1 => (1u32..=3).prop_map(Op::Delete),
        2 => (0usize..3).prop_map(Op::Offline),
        2 => (0usize..3).prop_map(Op::Online),
        1 => (0usize..3, prop_oneof![Just(0i64), Just(-2 * 86_400), Just(2 * 86_400), Just(600)])
            .prop_map(|(d, s)| Op::Skew(d, s)),
        8 => (0usize..3).prop_map(Op::Io),
        4 => Just(Op::Engine),
        2 => (1u64..40).prop_map(Op::Tick),
        1 => (8u64..10).prop_map(Op::Days),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_device_ends_on_what_the_bridge_intends(ops in proptest::collection::vec(op(), 1..60)) {
        let mut w = World::new();
        for op in &ops {
            w.apply(op)?;
        }
        w.settle()?;
        let c = w.db.lock();
        for (i, dev) in DEVICES.iter().enumerate() {
            let intended: BTreeMap<String, Digest> = desired::entries(&c, dev)
                .unwrap()
                .into_iter()
                .map(|m| (m.name, m.digest))
                .collect();
            let d = &w.devices[i];
            prop_assert!(d.rejected.is_none(), "{dev} refuses its directive when quiet: {:?}", d.rejected);
            for (name, l) in &d.models {
                prop_assert!(
                    !matches!(l.reported_phase(), UpdatePhase::Failed | UpdatePhase::RolledBack)
                        || l.last_error.as_deref().is_some_and(|e| !e.is_empty()),
                    "{dev}/{name} failed without a reason"
                );
            }
            prop_assert_eq!(&d.serving, &intended, "{} does not run what the bridge intends", dev);
            for digest in d.serving.values() {
                prop_assert!(
                    !w.forbidden[i].contains_key(&digest.to_hex()),
                    "{dev} runs {}, which an abort or rollback took back", digest.to_hex()
                );
            }
        }
    }
}
