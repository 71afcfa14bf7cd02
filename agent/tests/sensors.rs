//! The ADXL345 driver against the register-level simulated part, the feature extractor
//! against the Python reference, and the pipeline's classification of fault modes.

mod common;

use outpost_agent::pipeline::{PipelineStats, classify, read_window};
use outpost_agent::sensors::adxl345::{self, Adxl345, Adxl345Error, DataRate, reg};
use outpost_agent::sensors::features::{FEATURE_NAMES, compute};
use outpost_agent::sensors::sim::SimAdxl345;
use outpost_agent::sensors::vibration::{Controls, MachineMode, VibrationSource};
use outpost_agent::sensors::{LSB_G, WINDOW};
use serde::Deserialize;
use tokio::sync::watch;

#[derive(Deserialize)]
struct FeatureRef {
    feature_names: Vec<String>,
    windows: Vec<RefWindow>,
}

#[derive(Deserialize)]
struct RefWindow {
    mode: String,
    lsb: Vec<Vec<i32>>,
    features: Vec<f64>,
}

#[test]
fn features_match_python_reference() {
    let text =
        std::fs::read_to_string(common::models_dir().join("features-reference.json")).unwrap();
    let r: FeatureRef = serde_json::from_str(&text).unwrap();
    assert_eq!(r.feature_names, FEATURE_NAMES);
    assert_eq!(r.windows.len(), 6);
    for w in &r.windows {
        let g: Vec<Vec<f64>> = w
            .lsb
            .iter()
            .map(|a| a.iter().map(|v| f64::from(*v) * LSB_G).collect())
            .collect();
        let f = compute([&g[0], &g[1], &g[2]]);
        for (i, (got, want)) in f.iter().zip(&w.features).enumerate() {
            let tol = 1e-9 + 1e-9 * want.abs();
            assert!(
                (got - want).abs() <= tol,
                "{} {}: rust {got} vs python {want}",
                w.mode,
                FEATURE_NAMES[i]
            );
        }
    }
}

#[test]
fn driver_probes_configures_and_reads_the_simulated_part() {
    let sim = SimAdxl345::new(0x53, 42, MachineMode::Normal, 0.0);
    let handle = sim.handle();
    let mut dev = Adxl345::new(sim, adxl345::DEFAULT_ADDRESS).unwrap();
    // Standby after power-on: no data in the FIFO.
    assert_eq!(dev.fifo_entries().unwrap(), 0);
    dev.configure(DataRate::Hz1600).unwrap();
    assert_eq!(dev.read_register(reg::BW_RATE).unwrap(), 0x0E);
    assert_eq!(
        dev.read_register(reg::DATA_FORMAT).unwrap(),
        adxl345::FULL_RES_16G
    );
    assert_eq!(dev.read_register(reg::POWER_CTL).unwrap(), adxl345::MEASURE);
    assert_eq!(
        dev.read_register(reg::FIFO_CTL).unwrap(),
        adxl345::FIFO_STREAM
    );
    assert_eq!(dev.fifo_entries().unwrap(), 32);

    // The samples are the seeded vibration model, quantised to 3.9 mg/LSB, coherent per read.
    let mut reference = VibrationSource::new(42);
    let controls = Controls {
        mode: MachineMode::Normal,
        drift: 0.0,
    };
    for _ in 0..2000 {
        let got = dev.read_raw().unwrap();
        let want = reference
            .next_sample(controls)
            .map(|g| (g / LSB_G).round() as i16);
        assert_eq!(got, want);
    }
    assert_eq!(handle.samples(), 2000);

    // Gravity sits on z: about 1 g = 256 LSB.
    let z: f64 = (0..WINDOW).map(|_| dev.read_g().unwrap()[2]).sum::<f64>() / WINDOW as f64;
    assert!((z - 1.0).abs() < 0.02, "mean z {z}");

    // Injected bus faults surface as errors, and the device works again afterwards.
    handle.fail_next(1);
    assert!(matches!(dev.read_raw(), Err(Adxl345Error::Bus(_))));
    dev.read_raw().unwrap();
}

#[test]
fn nothing_answers_at_the_wrong_address() {
    let sim = SimAdxl345::new(0x53, 1, MachineMode::Normal, 0.0);
    assert!(matches!(Adxl345::new(sim, 0x1D), Err(Adxl345Error::Bus(_))));
}

#[test]
fn pipeline_classifies_each_simulated_fault_mode_as_its_label() {
    let models = common::handle_with("vibration-anomaly");
    let stats = PipelineStats::default();
    let (_tx, shutdown) = watch::channel(false);
    for (i, mode) in [
        MachineMode::Normal,
        MachineMode::Imbalance,
        MachineMode::BearingFault,
    ]
    .into_iter()
    .enumerate()
    {
        let mut dev = Adxl345::new(SimAdxl345::new(0x53, 100 + i as u64, mode, 0.0), 0x53).unwrap();
        dev.configure(DataRate::Hz1600).unwrap();
        let mut correct = 0;
        for _ in 0..25 {
            let w = read_window(&mut dev, &shutdown).unwrap().unwrap();
            let r = classify(&w, &models, None, &stats);
            let p = r
                .interpretation()
                .and_then(|i| i.prediction())
                .expect("prediction")
                .clone();
            if p.label == mode.label() {
                correct += 1;
            }
            assert_eq!(
                p.anomaly,
                mode != MachineMode::Normal || p.label != "normal"
            );
        }
        assert!(
            correct >= 24,
            "{mode:?}: {correct}/25 windows classified as {}",
            mode.label()
        );
    }
    assert_eq!(stats.windows.load(std::sync::atomic::Ordering::Relaxed), 75);
}

#[test]
fn drift_shifts_the_features() {
    let mut calm = VibrationSource::new(5);
    let mut drifted = VibrationSource::new(5);
    let window = |s: &mut VibrationSource, drift| {
        let c = Controls {
            mode: MachineMode::Normal,
            drift,
        };
        let mut axes = [vec![], vec![], vec![]];
        for _ in 0..WINDOW {
            for (a, v) in axes.iter_mut().zip(s.next_sample(c)) {
                a.push(v);
            }
        }
        compute([&axes[0], &axes[1], &axes[2]])
    };
    let mean_rms =
        |s: &mut VibrationSource, d| (0..20).map(|_| window(s, d)[2]).sum::<f64>() / 20.0;
    let (a, b) = (mean_rms(&mut calm, 0.0), mean_rms(&mut drifted, 0.8));
    assert!(
        b > 1.8 * a,
        "rms_z should grow with drift (noise): {a} -> {b}"
    );
}
