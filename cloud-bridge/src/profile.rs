//! Validation profile of a model on this host: self-test, latency quantiles and the peak
//! memory used while loading and running it.
//!
//! Peak memory is measured with Linux's resettable high-water mark: `/proc/self/clear_refs`
//! ← "5" resets `VmHWM`, then after loading and running the model `VmHWM − VmRSS(before)`
//! is the additional peak resident memory. Elsewhere it is reported as unknown.

use std::time::Instant;

use outpost_inference::{InferenceError, Model};
use outpost_protocol::contract::ModelContract;
use outpost_protocol::manifest::SelfTestSample;
use serde::{Deserialize, Serialize};

/// What validation measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationProfile {
    /// Self-test samples that passed.
    pub self_test_samples: usize,
    /// Largest self-test deviation.
    pub max_abs_diff: f64,
    /// Inference runs timed.
    pub runs: usize,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Load (parse + optimise) time, ms.
    pub load_ms: f64,
    /// Extra peak resident memory while loading and running, bytes (Linux).
    pub peak_memory_bytes: Option<u64>,
    /// How the model takes batches (`symbolic`, `fixed 1`, `unbatched`).
    pub batching: String,
}

/// A model loaded once, its self-test samples and what validating it measured.
#[derive(Debug)]
pub struct Measured {
    /// The loaded model (for the later steps of registration).
    pub model: Model,
    /// The self-test samples it passed.
    pub samples: Vec<SelfTestSample>,
    /// Measurements.
    pub profile: ValidationProfile,
}

fn proc_kb(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Loads the model once, gets its self-test samples from `samples` (given or
/// synthesised), runs them, then times `runs` inferences cycling through their inputs.
pub fn measure(
    onnx: &[u8],
    contract: &ModelContract,
    runs: usize,
    samples: impl FnOnce(&Model) -> Result<Vec<SelfTestSample>, InferenceError>,
) -> Result<Measured, InferenceError> {
    let rss_before = proc_kb("VmRSS:");
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let t = Instant::now();
    let model = Model::load(onnx, contract)?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let samples = samples(&model)?;
    let report = model.self_test(&samples)?;
    let mut lat = Vec::with_capacity(runs);
    for i in 0..runs {
        let Some(s) = samples.get(i % samples.len().max(1)) else {
            break;
        };
        let t = Instant::now();
        model.infer(&s.inputs, None)?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| {
        if lat.is_empty() {
            0.0
        } else {
            lat[((p * (lat.len() - 1) as f64).round()) as usize]
        }
    };
    let peak = match (reset, rss_before, proc_kb("VmHWM:")) {
        (true, Some(before), Some(hwm)) => Some(hwm.saturating_sub(before) * 1024),
        _ => None,
    };
    let batching = match model.batching() {
        outpost_inference::Batching::Symbolic => "symbolic".to_owned(),
        outpost_inference::Batching::Fixed(b) => format!("fixed {b}"),
        outpost_inference::Batching::Unbatched => "unbatched".to_owned(),
    };
    Ok(Measured {
        profile: ValidationProfile {
            self_test_samples: report.samples,
            max_abs_diff: report.max_abs_diff,
            runs: lat.len(),
            p50_us: q(0.5),
            p99_us: q(0.99),
            load_ms,
            peak_memory_bytes: peak,
            batching,
        },
        model,
        samples,
    })
}
