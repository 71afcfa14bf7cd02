use serde::Deserialize;

use super::*;

#[derive(Deserialize)]
struct Reference {
    reference: Vec<f64>,
    edges: Vec<f64>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    live: Vec<f64>,
    psi: f64,
    ks: f64,
}

fn reference() -> Reference {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/drift-reference.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn psi_and_ks_match_scipy_within_1e_9_and_the_sketch_within_its_bound() {
    let r = reference();
    let profile = FeatureProfile::compute("x", &r.reference).unwrap();
    assert_eq!(profile.edges.len(), r.edges.len());
    for (a, b) in profile.edges.iter().zip(&r.edges) {
        assert!((a - b).abs() < 1e-12, "edges differ: {a} vs {b}");
    }
    for c in &r.cases {
        // Exact mode through the window machinery.
        let mut w = FeatureWindow::new(profile.clone(), DriftMode::Exact);
        for x in &c.live {
            w.push(*x, c.live.len());
        }
        assert!(
            (w.psi() - c.psi).abs() < 1e-9,
            "{}: PSI {} vs {}",
            c.name,
            w.psi(),
            c.psi
        );
        assert!(
            (w.ks() - c.ks).abs() < 1e-9,
            "{}: KS {} vs scipy {}",
            c.name,
            w.ks(),
            c.ks
        );
        // Sketch mode: same PSI, KS within [ks - bound, ks].
        let mut s = FeatureWindow::new(profile.clone(), DriftMode::Sketch);
        for x in &c.live {
            s.push(*x, c.live.len());
        }
        assert!((s.psi() - c.psi).abs() < 1e-9);
        let bound = s.ks_bound();
        assert!(bound > 0.0 && bound < 0.01, "bound {bound}");
        assert!(
            s.ks() <= c.ks + 1e-12 && c.ks - s.ks() <= bound + 1e-12,
            "{}: sketch {} vs exact {} (bound {bound})",
            c.name,
            s.ks(),
            c.ks
        );
    }
}

#[test]
fn the_window_slides() {
    let r = reference();
    let profile = FeatureProfile::compute("x", &r.reference).unwrap();
    let mut w = FeatureWindow::new(profile.clone(), DriftMode::Exact);
    let all: Vec<f64> = r
        .cases
        .iter()
        .flat_map(|c| c.live.iter().copied())
        .take(900)
        .collect();
    for x in &all {
        w.push(*x, 300);
    }
    assert_eq!(w.len(), 300);
    let mut last: Vec<f64> = all[600..].to_vec();
    last.sort_by(f64::total_cmp);
    assert!((w.ks() - ks_sorted(&profile.reference, &last)).abs() < 1e-12);
    assert!((w.psi() - profile.psi(&all[600..])).abs() < 1e-12);
}

fn two_class_baseline() -> BaselineProfile {
    // Class "a": x ~ U(0,1), y ~ U(10, 11); class "b": x ~ U(5,6), y ~ U(0,1). Deterministic grid.
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for i in 0..400 {
        let u = (i as f64 * 0.618_033_988_75).fract();
        let v = (i as f64 * 0.414_213_562_37).fract();
        if i % 2 == 0 {
            rows.push(vec![u, 10.0 + v]);
            labels.push("a".to_string());
        } else {
            rows.push(vec![5.0 + u, v]);
            labels.push("b".to_string());
        }
    }
    BaselineProfile::compute(&["x".into(), "y".into()], &rows, &labels).unwrap()
}

#[test]
fn drift_is_raised_per_class_and_cleared() {
    let base = two_class_baseline();
    assert_eq!(base.classes.len(), 2);
    for mode in [DriftMode::Exact, DriftMode::Sketch] {
        let cfg = DriftConfig {
            window: 100,
            check_every: 10,
            mode,
            psi: 0.5,
            ks: 0.35,
            output_shift: None,
        };
        let mut m = DriftMonitor::new(&base, cfg);
        let sample = |i: u64, shift: f64| {
            let u = (i as f64 * 0.754_877_666).fract();
            let v = (i as f64 * 0.569_840_290_9).fract();
            [(u + shift) as f32, (10.0 + v) as f32]
        };
        // A device that only ever sees class "a" matches the class-"a" profile: no drift,
        // even though its data looks nothing like the mixed training sample.
        let mut t = None;
        for i in 0..400 {
            t = t.or(m.observe(&sample(i, 0.0), "a", i));
        }
        assert!(t.is_none(), "{mode:?}: false alarm {t:?}");
        assert!(!m.summary().unwrap().drifting);
        // x drifts by +0.8 on class a: detected, naming x.
        let mut detected = None;
        for i in 400..800 {
            if let Some(Transition::Detected(s)) = m.observe(&sample(i, 0.8), "a", i) {
                detected = Some(s);
                break;
            }
        }
        let s = detected.unwrap_or_else(|| panic!("{mode:?}: drift not detected"));
        assert!(
            s.reasons.iter().any(|r| r.starts_with("x (a)")),
            "{:?}",
            s.reasons
        );
        assert!(
            !s.reasons.iter().any(|r| r.starts_with("y ")),
            "y did not drift: {:?}",
            s.reasons
        );
        // Back to normal: cleared once the window has turned over.
        let mut cleared = false;
        for i in 800..1200 {
            if let Some(Transition::Cleared(_)) = m.observe(&sample(i, 0.0), "a", i) {
                cleared = true;
                break;
            }
        }
        assert!(cleared, "{mode:?}: drift never cleared");
        let mem = m.memory_bytes();
        assert!(mem < 64 * 1024, "{mode:?}: {mem} bytes");
    }
}
