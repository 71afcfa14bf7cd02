//! Model-based property test of the per-model lifecycle: random interleavings of new
//! directives (including abort-style supersedes back to the running model and removal),
//! downloads finishing or failing, installs and slot loads finishing in any order and
//! failing, probation passing or failing, and crashes (restart from the last persisted
//! state, in-flight jobs lost), against a simulated disk and model handle.
//!
//! Checked after every step:
//! - the slot being written is never the serving slot;
//! - a model is switched to only if it is the current target, or (a rollback) the model
//!   served before the switch to the target that failed;
//! - the lifecycle's record of the serving slot matches the disk and the handle;
//! - every failure says why.
//!
//! And once the events stop and everything in flight completes: a model that is desired
//! is served (unless its update failed, with a reason), a removed one is not.

use outpost_protocol::Digest;
use outpost_protocol::directive::ModelTarget;
use outpost_protocol::wire::{InstalledModel, UpdatePhase};
use proptest::prelude::*;

use super::lifecycle::*;

const CFG: LifecycleConfig = LifecycleConfig {
    health_window_ms: 1000,
    health_inferences: 5,
    max_probation_boots: 2,
};

fn digest(v: u8) -> Digest {
    Digest::of(&[v])
}

fn target(v: u8, seq: u64) -> Target {
    Target {
        entry: ModelTarget {
            name: "m".into(),
            digest: digest(v),
            version: u32::from(v) + 1,
            head_size: 100,
            size: 1000,
            memory_bytes: None,
            deployment_id: format!("dep-{seq}"),
        },
        sequence: seq,
    }
}

fn version_of(d: Digest) -> u8 {
    (0..8).find(|v| digest(*v) == d).expect("known digest")
}

fn installed(v: u8) -> InstalledModel {
    target(v, 0).installed()
}

#[derive(Debug, Clone)]
enum Ev {
    /// A directive: `Some(v)` targets version v, `None` removes the model.
    Desired(Option<u8>),
    /// The download in flight completes.
    Fetched,
    /// The download in flight fails.
    FetchFailed,
    /// Pending job `i % len` finishes (`ok`: succeeds if it can).
    Job(usize, bool),
    /// Time passes with inferences (`errors`: some fail).
    Tick { ms: u64, oks: u64, errors: bool },
    /// The agent is killed and restarts.
    Crash,
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        3 => proptest::option::weighted(0.9, 0u8..4).prop_map(Ev::Desired),
        3 => Just(Ev::Fetched),
        1 => Just(Ev::FetchFailed),
        4 => (0usize..4, proptest::bool::weighted(0.85)).prop_map(|(i, ok)| Ev::Job(i, ok)),
        2 => (0u64..1500, 0u64..8, proptest::bool::weighted(0.2))
            .prop_map(|(ms, oks, errors)| Ev::Tick { ms, oks, errors }),
        1 => Just(Ev::Crash),
    ]
}

#[derive(Debug, Clone)]
enum Pending {
    Install {
        v: u8,
        slot: Slot,
        ticket: u64,
    },
    Load {
        slot: Slot,
        ticket: u64,
        expect: Option<u8>,
    },
}

struct World {
    l: Lifecycle,
    persisted: Lifecycle,
    disk: [Option<u8>; 2],
    serving: Option<(Slot, u8)>,
    jobs: Vec<Pending>,
    fetching: Option<u8>,
    /// The install allowed to write (the loop's slot guard).
    write_ticket: u64,
    /// Latest desired version (`None`: removed), with its sequence.
    desired: Option<u8>,
    seq: u64,
    /// Every model that has served (a rollback may only go back to one of these).
    served_ever: Vec<u8>,
    now: u64,
    ok: u64,
    errors: u64,
}

fn at(s: Slot) -> usize {
    usize::from(s == Slot::B)
}

impl World {
    /// A device serving v0 from slot A.
    fn new() -> Self {
        let mut l = Lifecycle::new("m");
        l.slots[0] = Some(installed(0));
        l.active = Some(Slot::A);
        l.target = Some(target(0, 1));
        l.outcome = UpdatePhase::Succeeded;
        Self {
            persisted: l.clone(),
            l,
            disk: [Some(0), None],
            serving: Some((Slot::A, 0)),
            jobs: Vec::new(),
            fetching: None,
            write_ticket: 0,
            desired: Some(0),
            seq: 1,
            served_ever: vec![0],
            now: 0,
            ok: 0,
            errors: 0,
        }
    }

    fn apply(&mut self, acts: Vec<Action>, mut ready: Option<(Slot, u8)>) {
        for a in acts {
            match a {
                Action::Fetch(t) => self.fetching = Some(version_of(t.digest)),
                Action::CancelFetch => {
                    self.fetching = None;
                    self.write_ticket = 0;
                }
                Action::Install {
                    target,
                    slot,
                    ticket,
                } => {
                    assert_ne!(
                        Some(slot),
                        self.serving.map(|s| s.0),
                        "install into the serving slot"
                    );
                    self.jobs.push(Pending::Install {
                        v: version_of(target.digest),
                        slot,
                        ticket,
                    });
                    self.write_ticket = ticket;
                }
                Action::LoadSlot { slot, ticket } => self.jobs.push(Pending::Load {
                    slot,
                    ticket,
                    expect: self.l.slot(slot).map(|m| version_of(m.bundle)),
                }),
                Action::Activate(slot) => {
                    let (s, v) = ready.take().expect("activation comes with a loaded model");
                    assert_eq!(s, slot);
                    let rollback = self.l.outcome == UpdatePhase::RolledBack
                        && matches!(self.l.phase, Phase::Idle);
                    if rollback {
                        assert!(
                            self.served_ever.contains(&v) && Some(v) != self.desired,
                            "rolled back to {v}, which never served or is the failed target"
                        );
                    } else {
                        assert_eq!(Some(v), self.desired, "switched to a superseded model");
                        self.served_ever.push(v);
                    }
                    self.serving = Some((slot, v));
                    self.ok = 0;
                    self.errors = 0;
                }
                Action::Unload => self.serving = None,
                Action::FreeSlots => {
                    self.write_ticket = 0;
                    self.jobs.clear();
                    self.disk = [None, None];
                }
                Action::Persist => self.persisted = self.l.clone(),
                Action::Event { message, .. } => assert!(!message.is_empty()),
            }
        }
        self.check();
    }

    fn check(&self) {
        assert_eq!(
            self.l.active,
            self.serving.map(|s| s.0),
            "recorded active slot differs from the serving one"
        );
        if let Some((s, v)) = self.serving {
            assert_eq!(self.disk[at(s)], Some(v), "serving slot's file changed");
            assert_eq!(self.l.slot(s).map(|m| version_of(m.bundle)), Some(v));
        }
        if self.l.outcome == UpdatePhase::Failed && self.l.phase == Phase::Idle {
            assert!(self.l.last_error.is_some(), "failure without a reason");
        }
    }

    fn step(&mut self, e: Ev) {
        match e {
            Ev::Desired(v) => {
                self.seq += 1;
                self.desired = v;
                let acts = self.l.on_desired(v.map(|v| target(v, self.seq)));
                self.apply(acts, None);
            }
            Ev::Fetched => {
                if let Some(v) = self.fetching.take() {
                    let acts = self.l.on_fetched(digest(v));
                    self.apply(acts, None);
                }
            }
            Ev::FetchFailed => {
                if let Some(v) = self.fetching.take() {
                    let acts = self.l.on_fetch_failed(digest(v), "refused".into());
                    self.apply(acts, None);
                }
            }
            Ev::Job(i, ok) => {
                if self.jobs.is_empty() {
                    return;
                }
                let job = self.jobs.remove(i % self.jobs.len());
                match job {
                    Pending::Install { v, slot, ticket } => {
                        // The real job abandons a superseded install before writing.
                        let ok = ok && ticket == self.write_ticket;
                        if ok {
                            assert_ne!(Some(slot), self.serving.map(|s| s.0));
                            self.disk[at(slot)] = Some(v);
                        }
                        let r = if ok {
                            Ok(installed(v))
                        } else {
                            Err("self-test failed".into())
                        };
                        let acts = self
                            .l
                            .on_installed(ticket, digest(v), slot, r, self.now, 0, 0);
                        self.apply(acts, ok.then_some((slot, v)));
                    }
                    Pending::Load {
                        slot,
                        ticket,
                        expect,
                    } => {
                        let held = self.disk[at(slot)];
                        let ok = ok && held.is_some() && held == expect;
                        let r = if ok { Ok(()) } else { Err("unusable".into()) };
                        let acts = self.l.on_slot_loaded(ticket, slot, r, self.now, 0, 0);
                        self.apply(acts, held.filter(|_| ok).map(|v| (slot, v)));
                    }
                }
            }
            Ev::Tick { ms, oks, errors } => {
                self.now += ms;
                if self.serving.is_some() {
                    self.ok += oks;
                    self.errors += u64::from(errors);
                }
                let acts = self.l.on_tick(self.now, &CFG, self.ok, self.errors);
                self.apply(acts, None);
            }
            Ev::Crash => self.crash(),
        }
    }

    fn crash(&mut self) {
        self.l = self.persisted.clone();
        self.jobs.clear();
        self.fetching = None;
        self.write_ticket = 0;
        self.ok = 0;
        self.errors = 0;
        self.serving = None;
        let mut acts = Vec::new();
        if let Some(a) = self.l.active {
            let rec = self.l.slot(a).map(|m| version_of(m.bundle));
            assert_eq!(
                self.disk[at(a)],
                rec,
                "persisted active slot differs from disk"
            );
            self.serving = rec.map(|v| (a, v));
            if rec.is_none() {
                let other = self.l.slot(a.other()).map(|m| version_of(m.bundle));
                let loaded = other.is_some() && self.disk[at(a.other())] == other;
                if loaded {
                    self.serving = other.map(|v| (a.other(), v));
                }
                acts = self.l.on_active_unusable("gone".into(), loaded);
            }
        }
        acts.extend(self.l.on_boot(&CFG, self.now));
        self.apply(acts, None);
    }

    /// Completes everything in flight without failures until nothing changes.
    fn settle(&mut self) {
        for _ in 0..50 {
            if let Some(v) = self.fetching.take() {
                let acts = self.l.on_fetched(digest(v));
                self.apply(acts, None);
            }
            while !self.jobs.is_empty() {
                self.step(Ev::Job(0, true));
            }
            self.step(Ev::Tick {
                ms: CFG.health_window_ms,
                oks: 0,
                errors: false,
            });
        }
        assert!(
            self.jobs.is_empty() && self.fetching.is_none(),
            "did not settle"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn lifecycle_converges_and_never_activates_a_superseded_model(
        events in proptest::collection::vec(ev(), 1..60)
    ) {
        let mut w = World::new();
        for e in events {
            w.step(e);
        }
        w.settle();
        match w.desired {
            None => {
                prop_assert!(w.serving.is_none(), "a removed model still serves");
                prop_assert_eq!(&w.l.phase, &Phase::Removing);
            }
            Some(v) => {
                prop_assert_eq!(&w.l.phase, &Phase::Idle);
                match w.l.outcome {
                    UpdatePhase::Succeeded => {
                        prop_assert_eq!(w.serving.map(|s| s.1), Some(v));
                    }
                    UpdatePhase::Failed | UpdatePhase::RolledBack => {
                        prop_assert!(w.l.last_error.is_some(), "no reason given");
                        prop_assert_ne!(w.serving.map(|s| s.1), Some(v));
                    }
                    o => prop_assert!(false, "settled in {o:?}"),
                }
            }
        }
    }
}

#[test]
fn abort_mid_download_back_to_the_running_model_cancels_and_keeps_serving() {
    let mut w = World::new();
    w.step(Ev::Desired(Some(1)));
    assert_eq!(w.fetching, Some(1));
    // The operator aborts: the bridge pins the device to what it runs.
    w.step(Ev::Desired(Some(0)));
    assert_eq!(w.fetching, None, "the old download must be cancelled");
    assert_eq!(w.l.outcome, UpdatePhase::Succeeded);
    // A late completion of the cancelled download changes nothing.
    let acts = w.l.on_fetched(digest(1));
    assert!(acts.is_empty());
    w.settle();
    assert_eq!(w.serving, Some((Slot::A, 0)));
}

#[test]
fn install_finishing_after_a_supersede_is_not_switched_to() {
    let mut w = World::new();
    w.step(Ev::Desired(Some(1)));
    w.step(Ev::Fetched);
    assert!(matches!(w.jobs[..], [Pending::Install { v: 1, .. }]));
    let (slot, ticket) = match w.jobs[0] {
        Pending::Install { slot, ticket, .. } => (slot, ticket),
        _ => unreachable!(),
    };
    w.step(Ev::Desired(Some(0)));
    // The install finishes anyway (it was not abandoned in time).
    w.disk[at(slot)] = Some(1);
    let acts =
        w.l.on_installed(ticket, digest(1), slot, Ok(installed(1)), 0, 0, 0);
    assert!(!acts.iter().any(|a| matches!(a, Action::Activate(_))));
    w.apply(acts, None);
    assert_eq!(w.serving, Some((Slot::A, 0)));
}

#[test]
fn failed_health_window_rolls_back_to_the_previous_slot() {
    let mut w = World::new();
    w.step(Ev::Desired(Some(1)));
    w.step(Ev::Fetched);
    w.step(Ev::Job(0, true));
    assert_eq!(w.serving, Some((Slot::B, 1)));
    w.step(Ev::Tick {
        ms: 10,
        oks: 1,
        errors: true,
    });
    assert!(matches!(
        w.l.phase,
        Phase::RollingBack { slot: Slot::A, .. }
    ));
    w.step(Ev::Job(0, true));
    assert_eq!(w.serving, Some((Slot::A, 0)));
    assert_eq!(w.l.outcome, UpdatePhase::RolledBack);
    assert!(
        w.l.last_error
            .as_deref()
            .unwrap()
            .contains("inference error")
    );
}

#[test]
fn removal_unloads_and_frees() {
    let mut w = World::new();
    w.step(Ev::Desired(Some(1)));
    w.step(Ev::Desired(None));
    assert_eq!(w.serving, None);
    assert_eq!(w.disk, [None, None]);
    assert!(w.l.removing());
    // Added back later: downloads from scratch.
    w.step(Ev::Desired(Some(2)));
    assert_eq!(w.fetching, Some(2));
    w.settle();
    assert_eq!(w.serving.map(|s| s.1), Some(2));
}

#[test]
fn restarts_during_probation_roll_back() {
    let mut w = World::new();
    w.step(Ev::Desired(Some(1)));
    w.step(Ev::Fetched);
    w.step(Ev::Job(0, true));
    assert!(matches!(w.l.phase, Phase::Probation { .. }));
    for _ in 0..CFG.max_probation_boots {
        w.step(Ev::Crash);
        assert!(matches!(w.l.phase, Phase::Probation { .. }));
    }
    w.step(Ev::Crash);
    w.step(Ev::Job(0, true));
    assert_eq!(w.serving, Some((Slot::A, 0)));
    assert!(w.l.last_error.as_deref().unwrap().contains("restarted"));
}
