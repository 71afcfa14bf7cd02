//! Drift monitor: per-sample update cost (amortised, checks included) and memory per
//! feature, exact and sketch modes, as a ratio of computing the 16 features themselves
//! (the work every sample costs anyway).
//!
//! `cargo bench -p outpost-agent --bench drift`

use std::time::Instant;

use outpost_agent::drift::{DriftConfig, DriftMode, DriftMonitor};
use outpost_agent::sensors::WINDOW;
use outpost_agent::sensors::features;
use outpost_agent::sensors::vibration::{Controls, MachineMode, VibrationSource};
use outpost_protocol::baseline::BaselineProfile;

fn main() {
    // A baseline from simulated windows, as the registry would build it.
    let mut src = VibrationSource::new(9);
    let c = Controls {
        mode: MachineMode::Normal,
        drift: 0.0,
    };
    let mut window = || {
        let mut axes = [vec![0.0; WINDOW], vec![0.0; WINDOW], vec![0.0; WINDOW]];
        for i in 0..WINDOW {
            let s = src.next_sample(c);
            for (axis, v) in axes.iter_mut().zip(s) {
                axis[i] = v;
            }
        }
        axes
    };
    let rows: Vec<Vec<f64>> = (0..1000)
        .map(|_| {
            let w = window();
            features::compute([&w[0], &w[1], &w[2]]).to_vec()
        })
        .collect();
    let names: Vec<String> = features::FEATURE_NAMES
        .iter()
        .map(|s| s.to_string())
        .collect();
    let base =
        BaselineProfile::compute(&names, &rows, &vec!["normal".to_string(); rows.len()]).unwrap();
    let samples: Vec<Vec<f32>> = rows
        .iter()
        .map(|r| r.iter().map(|v| *v as f32).collect())
        .collect();

    let t = Instant::now();
    let n_feat = 200;
    for _ in 0..n_feat {
        let w = window();
        std::hint::black_box(features::compute([&w[0], &w[1], &w[2]]));
    }
    let feat_us = t.elapsed().as_secs_f64() * 1e6 / n_feat as f64;

    println!(
        "per-sample drift cost (16 features, one class window), vs computing the features ({feat_us:.1} µs)"
    );
    println!(
        "{:<7} {:>7} {:>12} {:>14} {:>18} {:>8}",
        "mode", "window", "µs/sample", "bytes/feature", "ratio to features", ""
    );
    for mode in [DriftMode::Exact, DriftMode::Sketch] {
        for w in [256usize, 1024] {
            let cfg = DriftConfig {
                window: w,
                check_every: 32,
                mode,
                ..DriftConfig::default()
            };
            let mut m = DriftMonitor::new(&base, cfg);
            let n = 200_000;
            let t = Instant::now();
            for i in 0..n {
                std::hint::black_box(m.observe(&samples[i % samples.len()], "normal", i as u64));
            }
            let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
            println!(
                "{:<7} {:>7} {:>12.3} {:>14} {:>18.4}",
                format!("{mode:?}").to_lowercase(),
                w,
                us,
                m.memory_bytes() / 16,
                us / feat_us
            );
        }
    }
}
