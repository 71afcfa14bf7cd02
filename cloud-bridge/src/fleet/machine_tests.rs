use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::{
    Just, ProptestConfig, any, prop, prop_assert, prop_assert_eq, prop_oneof, proptest,
};
use proptest::strategy::Strategy as Gen;

use super::*;

fn strategy(on_trip: OnTrip) -> Strategy {
    let mut s = Strategy::standard();
    s.on_trip = on_trip;
    for w in &mut s.waves {
        w.timeout_ms = 1000;
    }
    s.gates.observe_ms = 500;
    s.gates.min_samples = 5;
    s
}

fn fleet(n: usize) -> Vec<(String, Option<String>)> {
    (0..n)
        .map(|i| (format!("d{i:02}"), Some("old".to_string())))
        .collect()
}

fn ok() -> Report {
    report(Some("new"), None)
}

fn report(active: Option<&str>, failed: Option<&str>) -> Report {
    Report {
        current: true,
        active: active.map(Into::into),
        settled: true,
        failed: failed.map(Into::into),
    }
}

fn good_obs() -> Observation {
    Observation {
        samples: 100,
        error_rate: 0.0,
        p99_us: Some(100),
        output_shift: Some(0.01),
    }
}

fn targets(a: &[Action]) -> Vec<String> {
    a.iter()
        .filter_map(|x| {
            if let Action::Target { device, .. } = x {
                Some(device.clone())
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn waves_are_one_canary_then_cumulative_fractions() {
    let s = strategy(OnTrip::Rollback);
    let ids: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    let w = assign_waves(&ids, &s.waves);
    let count = |k| w.iter().filter(|x| **x == k).count();
    assert_eq!((count(0), count(1), count(2), count(3)), (1, 1, 8, 10));
}

#[test]
fn happy_path_advances_through_every_wave_to_success() {
    let mut r = Rollout::new("new".into(), strategy(OnTrip::Rollback), fleet(20));
    let mut now = 0;
    let mut targeted = targets(&r.start(now));
    assert_eq!(targeted.len(), 1, "canary first");
    let mut seen = BTreeSet::new();
    while r.state == State::Running {
        now += 100;
        let mut acts = Vec::new();
        for d in std::mem::take(&mut targeted) {
            seen.insert(d.clone());
            acts.extend(r.on_report(&d, &ok(), now));
        }
        acts.extend(r.on_observation(good_obs(), now));
        acts.extend(r.on_tick(now));
        targeted = targets(&acts);
        assert!(now < 100_000, "stuck in {:?}", r.state);
    }
    assert_eq!(r.state, State::Succeeded);
    assert_eq!(seen.len(), 20);
}

#[test]
fn reports_taken_as_a_batch_move_the_rollout_as_one_by_one_and_settled_devices_are_not_asked() {
    let mut r = Rollout::new("new".into(), strategy(OnTrip::Rollback), fleet(20));
    let mut now = 0;
    let mut targeted = targets(&r.start(now));
    while r.state == State::Running {
        now += 100;
        assert!(targeted.iter().all(|d| r.awaits_report(d)));
        let reports: Vec<(String, Report)> = targeted.drain(..).map(|d| (d, ok())).collect();
        let mut acts = r.on_reports(reports.iter().map(|(d, x)| (d.as_str(), x)), now);
        assert!(reports.iter().all(|(d, _)| !r.awaits_report(d)));
        acts.extend(r.on_observation(good_obs(), now));
        acts.extend(r.on_tick(now));
        targeted = targets(&acts);
        assert!(now < 100_000, "stuck in {:?}", r.state);
    }
    assert_eq!(r.state, State::Succeeded);
    assert!(r.devices.keys().all(|d| !r.awaits_report(d)));

    // One failure in a batch trips the wave: every device touched is rolled back, those
    // that succeeded in the same batch included, and each awaits its confirmation.
    let mut r = Rollout::new("new".into(), strategy(OnTrip::Rollback), fleet(2));
    let canary = targets(&r.start(0));
    let bad = report(Some("old"), Some("self-test failed"));
    r.on_reports([(canary[0].as_str(), &bad)], 10);
    assert!(
        matches!(r.state, State::RollingBack { .. }),
        "{:?}",
        r.state
    );
    assert!(r.awaits_report(&canary[0]));
    r.on_reports([(canary[0].as_str(), &report(Some("old"), None))], 20);
    assert!(!r.awaits_report(&canary[0]));
}

#[test]
fn a_wave_that_never_reports_fails_by_timeout_and_rolls_back() {
    let mut r = Rollout::new("new".into(), strategy(OnTrip::Rollback), fleet(5));
    let canary = targets(&r.start(0));
    assert!(r.on_tick(999).is_empty());
    let acts = r.on_tick(1000);
    assert!(
        matches!(
            r.state,
            State::RollingBack { .. } | State::RolledBack { .. }
        ),
        "{:?}",
        r.state
    );
    assert!(acts.iter().any(|a| matches!(a, Action::Restore { device, digest } if *device == canary[0] && digest.as_deref() == Some("old"))));
    match &r.devices[&canary[0]].status {
        DeviceStatus::RolledBack { .. } => {}
        s => panic!("{s:?}"),
    }
    // Once the device reports its old model again, the rollback is complete.
    r.on_report(&canary[0], &report(Some("old"), None), 1100);
    r.on_tick(1200);
    assert!(matches!(r.state, State::RolledBack { .. }), "{:?}", r.state);
}

#[test]
fn a_tripped_output_gate_rolls_back_and_pause_policy_pauses() {
    for (policy, expect) in [
        (OnTrip::Rollback, "rolling_back"),
        (OnTrip::Pause, "paused"),
    ] {
        let mut r = Rollout::new("new".into(), strategy(policy), fleet(10));
        let c = targets(&r.start(0));
        r.on_report(&c[0], &ok(), 10);
        let shifted = Observation {
            output_shift: Some(0.9),
            ..good_obs()
        };
        r.on_observation(shifted, 20);
        assert_eq!(r.state.name(), expect);
        if let State::RollingBack { reason } | State::Paused { reason } = &r.state {
            assert!(reason.contains("output shift"), "{reason}");
        }
        assert!(
            r.devices
                .values()
                .filter(|d| d.wave > 0)
                .all(|d| d.status == DeviceStatus::Pending),
            "later waves untouched"
        );
    }
}

#[test]
fn operator_commands_pause_resume_abort() {
    let mut r = Rollout::new("new".into(), strategy(OnTrip::Rollback), fleet(10));
    let c = targets(&r.start(0));
    r.command(Command::Pause("look at it".into()), 1).unwrap();
    r.on_report(&c[0], &ok(), 2);
    assert!(
        targets(&r.on_observation(good_obs(), 900)).is_empty(),
        "paused: no new wave"
    );
    let a = r.command(Command::Resume, 1000).unwrap();
    assert!(
        targets(&a).is_empty(),
        "the canary is observed for observe_ms after resuming: {a:?}"
    );
    let a = r.on_tick(1500);
    assert!(!targets(&a).is_empty(), "then the next wave starts: {a:?}");
    let pause_twice = r
        .command(Command::Pause("a".into()), 1100)
        .and_then(|_| r.command(Command::Pause("b".into()), 1100));
    assert_eq!(pause_twice.unwrap_err(), "it is already paused");
    r.command(Command::Abort("enough".into()), 1100).unwrap();
    let e = r.command(Command::Resume, 1200).unwrap_err();
    assert!(e.contains("aborted"), "{e}");
    let e = r.command(Command::Rollback("x".into()), 1200).unwrap_err();
    assert!(e.contains("creates a new deployment"), "{e}");
}

#[test]
fn abort_pins_every_device_that_has_not_finished() {
    let mut r = Rollout::new("new".into(), strategy(OnTrip::Rollback), fleet(10));
    let c = targets(&r.start(0));
    r.on_report(&c[0], &ok(), 10);
    let second = targets(&r.on_observation(good_obs(), 600));
    assert!(!second.is_empty(), "{:?}", r.state);
    let acts = r.command(Command::Abort("stop".into()), 800).unwrap();
    let pinned: BTreeSet<String> = acts
        .iter()
        .filter_map(|a| match a {
            Action::Pin { device, fallback } => {
                assert_eq!(fallback.as_deref(), Some("old"));
                Some(device.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        pinned,
        second.iter().cloned().collect(),
        "the canary finished and keeps the new model"
    );
    assert!(!acts.iter().any(|a| matches!(a, Action::Target { .. })));
}

#[test]
fn a_rollback_deployment_sends_each_device_to_its_own_target() {
    let devices = vec![
        ("a".to_string(), Some("v3".to_string()), "v1".to_string()),
        ("b".to_string(), Some("v3".to_string()), "v2".to_string()),
    ];
    let mut s = strategy(OnTrip::Pause);
    s.waves = vec![Wave {
        fraction: 1.0,
        ..s.waves[0].clone()
    }];
    s.gates.max_output_shift = None;
    s.gates.max_error_rate = None;
    s.gates.min_samples = 0;
    let mut r = Rollout::with_targets("v1".into(), s, devices);
    let acts = r.start(0);
    let sent: BTreeMap<String, String> = acts
        .iter()
        .filter_map(|a| match a {
            Action::Target { device, digest } => Some((device.clone(), digest.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(sent["a"], "v1");
    assert_eq!(sent["b"], "v2");
    r.on_report("a", &report(Some("v1"), None), 1);
    r.on_report("b", &report(Some("v1"), None), 1);
    assert_eq!(
        r.devices["b"].status,
        DeviceStatus::Targeted { since: 0 },
        "b must reach its own target"
    );
    r.on_report("b", &report(Some("v2"), None), 2);
    r.on_tick(600);
    assert_eq!(r.state, State::Succeeded);
}

#[test]
fn a_report_about_an_older_directive_says_nothing() {
    let mut r = Rollout::new("new".into(), strategy(OnTrip::Rollback), fleet(3));
    let c = targets(&r.start(0));
    let stale = Report {
        current: false,
        ..report(Some("old"), Some("old failure"))
    };
    r.on_report(&c[0], &stale, 5);
    assert_eq!(r.devices[&c[0]].status, DeviceStatus::Targeted { since: 0 });
}

#[derive(Debug, Clone)]
enum Ev {
    Report(usize, u8), // device index, 0 success / 1 failure / 2 old model
    Observe(bool),
    Tick(u64),
    Pause,
    Resume,
    Rollback,
    Abort,
}

fn ev() -> impl Gen<Value = Ev> {
    prop_oneof![
        8 => (0usize..12, 0u8..3).prop_map(|(d, k)| Ev::Report(d, k)),
        2 => any::<bool>().prop_map(Ev::Observe),
        6 => (1u64..800).prop_map(Ev::Tick),
        1 => Just(Ev::Pause),
        1 => Just(Ev::Resume),
        1 => Just(Ev::Rollback),
        1 => Just(Ev::Abort),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Invariants under arbitrary interleavings:
    /// - a device is targeted only once, only while running, and only when its wave is
    ///   the current one (earlier waves resolved);
    /// - after a rollback every targeted device with a previous model got a restore;
    /// - no device stays "targeted" past its wave's timeout while running;
    /// - terminal states stay terminal.
    #[test]
    fn rollout_invariants(events in prop::collection::vec(ev(), 1..120), n in 1usize..12, pause in any::<bool>()) {
        let policy = if pause { OnTrip::Pause } else { OnTrip::Rollback };
        let mut r = Rollout::new("new".into(), strategy(policy), fleet(n));
        let ids: Vec<String> = r.devices.keys().cloned().collect();
        let mut now = 0u64;
        let mut targeted: BTreeMap<String, usize> = BTreeMap::new();
        let mut restored: BTreeSet<String> = BTreeSet::new();
        let mut terminal: Option<State> = None;
        let mut acts = r.start(now);
        for e in events {
            for a in acts.drain(..) {
                match a {
                    Action::Target { device: d, .. } => {
                        prop_assert!(matches!(r.state, State::Running), "targeted while {:?}", r.state);
                        prop_assert_eq!(r.devices[&d].wave, r.wave);
                        prop_assert!(targeted.insert(d.clone(), r.wave).is_none(), "{} targeted twice", d);
                    }
                    Action::Restore { device, .. } => { restored.insert(device); }
                    Action::Pin { device, .. } => {
                        prop_assert!(matches!(r.state, State::Aborted { .. }), "pinned while {:?}", r.state);
                        prop_assert!(targeted.contains_key(&device), "{} pinned but never targeted", device);
                    }
                    Action::Changed { .. } => {}
                }
            }
            if let Some(t) = &terminal {
                prop_assert_eq!(&r.state, t, "terminal state changed");
            } else if r.state.terminal() {
                terminal = Some(r.state.clone());
            }
            acts = match e {
                Ev::Report(i, k) => {
                    let d = &ids[i % ids.len()];
                    let rep = match k {
                        0 => ok(),
                        1 => report(Some("old"), Some("boom")),
                        _ => report(Some("old"), None),
                    };
                    r.on_report(d, &rep, now)
                }
                Ev::Observe(good) => r.on_observation(if good { good_obs() } else { Observation { error_rate: 0.5, ..good_obs() } }, now),
                Ev::Tick(dt) => { now += dt; r.on_tick(now) }
                Ev::Pause => r.command(Command::Pause("p".into()), now).unwrap_or_default(),
                Ev::Resume => r.command(Command::Resume, now).unwrap_or_default(),
                Ev::Rollback => r.command(Command::Rollback("r".into()), now).unwrap_or_default(),
                Ev::Abort => r.command(Command::Abort("a".into()), now).unwrap_or_default(),
            };
            if matches!(r.state, State::Running) {
                let timeout = r.strategy.waves[r.wave].timeout_ms;
                for d in r.devices.values() {
                    if let DeviceStatus::Targeted { since } = d.status {
                        prop_assert!(now.saturating_sub(since) <= timeout + 800, "overdue device still targeted");
                    }
                }
            }
        }
        for a in acts.drain(..) {
            if let Action::Restore { device, .. } = a { restored.insert(device); }
        }
        if matches!(r.state, State::RollingBack { .. } | State::RolledBack { .. }) {
            for d in targeted.keys() {
                prop_assert!(restored.contains(d), "{} switched but never restored", d);
            }
        }
    }
}
