//! On-device drift detection against the signed baseline in the bundle, offline too.
//!
//! For every predicted class the monitor keeps a sliding window of the last `window`
//! samples' features and compares it, feature by feature, with that class's training
//! profile: PSI over the baseline's decile bins and the two-sample KS statistic. Drift is
//! raised when, for some feature of a full class window, *both* PSI and KS exceed their
//! thresholds (or, if configured, when the output label mix moves too far from the
//! training mix), and cleared when none does. Requiring both matters on small windows:
//! one sparsely populated bin that happens to be empty adds ~0.7 to PSI on its own
//! (the ε floor), while KS is unmoved; real drift moves both. Raising and clearing are transitions the caller records as
//! high-priority events.
//!
//! Two modes, per-sample cost and memory per feature per class window of `W` samples:
//!
//! | mode | per sample | per check | memory | KS accuracy |
//! |---|---|---|---|---|
//! | `exact` | O(1) (ring push, bin search over 9 edges) | O(W log W) sort | 8·W + W bytes | exact (`scipy.stats.ks_2samp`) |
//! | `sketch` | O(log B) (+ bin search over B−1 edges) | O(B) | 2·W + 20·B bytes | `KS_sketch ≤ KS ≤ KS_sketch + max reference bin mass` (≈ 1/B) |
//!
//! with `B` = 256 sketch bins at the reference sample's quantiles. Checks run every
//! `check_every` samples. Measured costs are in `docs/benchmarks.md`.

use std::collections::{BTreeMap, VecDeque};

use outpost_protocol::baseline::{BaselineProfile, FeatureProfile, bin_of, ks_sorted, psi_counts};
use serde::Deserialize;

use crate::settings::InvalidSetting;

/// Sketch resolution (bins per feature).
pub const SKETCH_BINS: usize = 256;

/// Exact or sketched windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftMode {
    /// Keep the window's values; exact KS.
    Exact,
    /// Keep bin indices only; KS within the documented bound.
    Sketch,
}

/// Drift settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftConfig {
    /// Samples per class window.
    pub window: usize,
    /// Evaluate every this many samples.
    pub check_every: usize,
    /// Mode.
    pub mode: DriftMode,
    /// PSI threshold.
    pub psi: f64,
    /// KS threshold.
    pub ks: f64,
    /// Output-mix threshold (None: not a trigger).
    pub output_shift: Option<f64>,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            window: 256,
            check_every: 32,
            mode: DriftMode::Exact,
            psi: 0.5,
            ks: 0.35,
            output_shift: None,
        }
    }
}

pub use outpost_protocol::records::{DriftSummary, FeatureDrift};

/// Drift settings from `[drift]`; unset thresholds fall back to the bundle's spec, then to
/// [`DriftConfig::default`].
///
/// ```toml
/// [drift]                    # thresholds default to the bundle's spec, then built-ins
/// enabled = true
/// window = 256               # samples per class window
/// check_every = 32
/// mode = "exact"             # or "sketch" (bounded memory, KS within ~1/256)
/// # psi = 0.5; ks = 0.35; output_shift = 0.3
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DriftSettings {
    /// Window, check cadence and mode (thresholds here are the built-in defaults).
    pub base: DriftConfig,
    /// PSI override.
    pub psi: Option<f64>,
    /// KS override.
    pub ks: Option<f64>,
    /// Output-shift override.
    pub output_shift: Option<f64>,
}

impl DriftSettings {
    /// The effective settings for a model whose spec carries `spec` thresholds.
    pub fn resolve(&self, spec: Option<&outpost_protocol::contract::DriftSpec>) -> DriftConfig {
        let s = spec.cloned().unwrap_or_default();
        DriftConfig {
            psi: self.psi.or(s.psi).unwrap_or(self.base.psi),
            ks: self.ks.or(s.ks).unwrap_or(self.base.ks),
            output_shift: self.output_shift.or(s.output_shift),
            ..self.base.clone()
        }
    }

    /// Checks the window, the cadence and the thresholds; the error names the file key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let b = &self.base;
        if !(16..=65_536).contains(&b.window) || b.check_every == 0 || b.check_every > b.window {
            return Err(InvalidSetting::new(
                "drift.window",
                "window must be 16..=65536 and 1 <= check_every <= window",
            ));
        }
        for (v, f) in [
            (self.psi, "drift.psi"),
            (self.ks, "drift.ks"),
            (self.output_shift, "drift.output_shift"),
        ] {
            if v.is_some_and(|x| !(x.is_finite() && x > 0.0)) {
                return Err(InvalidSetting::new(f, "must be a positive number"));
            }
        }
        Ok(())
    }
}

/// `[drift]` as written in the file.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DriftSection {
    enabled: Option<bool>,
    window: Option<usize>,
    check_every: Option<usize>,
    mode: Option<String>,
    psi: Option<f64>,
    ks: Option<f64>,
    output_shift: Option<f64>,
}

impl DriftSection {
    /// The validated settings; None when `enabled = false` (drift is on by default).
    pub fn resolve(self) -> Result<Option<DriftSettings>, InvalidSetting> {
        if !self.enabled.unwrap_or(true) {
            return Ok(None);
        }
        let d = DriftSettings::default();
        let mode = match self.mode.as_deref() {
            None => d.base.mode,
            Some("exact") => DriftMode::Exact,
            Some("sketch") => DriftMode::Sketch,
            Some(o) => {
                return Err(InvalidSetting::new(
                    "drift.mode",
                    format!("{o:?} is not exact or sketch"),
                ));
            }
        };
        let s = DriftSettings {
            base: DriftConfig {
                window: self.window.unwrap_or(d.base.window),
                check_every: self.check_every.unwrap_or(d.base.check_every),
                mode,
                ..d.base
            },
            psi: self.psi,
            ks: self.ks,
            output_shift: self.output_shift,
        };
        s.validate()?;
        Ok(Some(s))
    }
}

/// A change of state.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Drift raised.
    Detected(DriftSummary),
    /// Drift cleared.
    Cleared(DriftSummary),
}

struct Sketch {
    edges: Vec<f64>,
    ref_cdf: Vec<f64>,
    bound: f64,
    counts: Vec<u32>,
}

struct FeatureWindow {
    profile: FeatureProfile,
    values: VecDeque<f64>,
    sketch_bins: VecDeque<u8>,
    psi_bins: VecDeque<u8>,
    psi_counts: Vec<u64>,
    sketch: Option<Sketch>,
}

impl FeatureWindow {
    fn new(profile: FeatureProfile, mode: DriftMode) -> Self {
        let sketch = (mode == DriftMode::Sketch).then(|| {
            let r = &profile.reference;
            let mut edges: Vec<f64> = (1..SKETCH_BINS)
                .map(|k| outpost_protocol::baseline::quantile(r, k as f64 / SKETCH_BINS as f64))
                .collect();
            edges.dedup();
            let n = r.len().max(1) as f64;
            let ref_cdf: Vec<f64> = edges
                .iter()
                .map(|e| r.partition_point(|v| v <= e) as f64 / n)
                .collect();
            let mut prev = 0.0;
            let mut bound: f64 = 0.0;
            for c in ref_cdf.iter().chain(std::iter::once(&1.0)) {
                bound = bound.max(c - prev);
                prev = *c;
            }
            Sketch {
                counts: vec![0; edges.len() + 1],
                edges,
                ref_cdf,
                bound,
            }
        });
        Self {
            psi_counts: vec![0; profile.probs.len()],
            profile,
            values: VecDeque::new(),
            sketch_bins: VecDeque::new(),
            psi_bins: VecDeque::new(),
            sketch,
        }
    }

    fn push(&mut self, x: f64, window: usize) {
        let b = bin_of(&self.profile.edges, x);
        self.psi_counts[b] += 1;
        self.psi_bins.push_back(b as u8);
        match &mut self.sketch {
            None => self.values.push_back(x),
            Some(s) => {
                let k = bin_of(&s.edges, x);
                s.counts[k] += 1;
                self.sketch_bins.push_back(k as u8);
            }
        }
        if self.psi_bins.len() > window {
            if let Some(old) = self.psi_bins.pop_front() {
                self.psi_counts[old as usize] -= 1;
            }
            match &mut self.sketch {
                None => {
                    self.values.pop_front();
                }
                Some(s) => {
                    if let Some(old) = self.sketch_bins.pop_front() {
                        s.counts[old as usize] -= 1;
                    }
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.psi_bins.len()
    }

    fn psi(&self) -> f64 {
        psi_counts(&self.profile.probs, &self.psi_counts)
    }

    fn ks(&self) -> f64 {
        match &self.sketch {
            None => {
                let mut v: Vec<f64> = self.values.iter().copied().collect();
                v.sort_by(f64::total_cmp);
                ks_sorted(&self.profile.reference, &v)
            }
            Some(s) => {
                let n = self.len().max(1) as f64;
                let mut cum = 0u64;
                let mut d: f64 = 0.0;
                for (k, c) in s.counts.iter().enumerate().take(s.edges.len()) {
                    cum += u64::from(*c);
                    d = d.max((cum as f64 / n - s.ref_cdf[k]).abs());
                }
                d
            }
        }
    }

    /// The sketch's KS error bound (0 in exact mode).
    fn ks_bound(&self) -> f64 {
        self.sketch.as_ref().map(|s| s.bound).unwrap_or(0.0)
    }
}

/// The monitor for one active model.
pub struct DriftMonitor {
    cfg: DriftConfig,
    classes: BTreeMap<String, Vec<FeatureWindow>>,
    stamps: BTreeMap<String, VecDeque<u64>>,
    labels: Vec<String>,
    out_base: BTreeMap<String, f64>,
    out_window: VecDeque<String>,
    out_counts: BTreeMap<String, u64>,
    since_check: usize,
    samples: u64,
    drifting: bool,
    since_ms: u64,
    last: Option<DriftSummary>,
}

impl DriftMonitor {
    /// A monitor for a model whose bundle carries `baseline`.
    pub fn new(baseline: &BaselineProfile, cfg: DriftConfig) -> Self {
        let classes = baseline
            .classes
            .iter()
            .map(|(label, profiles)| {
                (
                    label.clone(),
                    profiles
                        .iter()
                        .cloned()
                        .map(|p| FeatureWindow::new(p, cfg.mode))
                        .collect(),
                )
            })
            .collect();
        Self {
            stamps: BTreeMap::new(),
            labels: baseline.outputs.keys().cloned().collect(),
            out_base: baseline.outputs.clone(),
            classes,
            cfg,
            out_window: VecDeque::new(),
            out_counts: BTreeMap::new(),
            since_check: 0,
            samples: 0,
            drifting: false,
            since_ms: 0,
            last: None,
        }
    }

    /// Adds one sample (features in model order, the predicted label) at `now_ms`.
    pub fn observe(&mut self, features: &[f32], label: &str, now_ms: u64) -> Option<Transition> {
        self.samples += 1;
        if let Some(ws) = self.classes.get_mut(label) {
            for (w, x) in ws.iter_mut().zip(features) {
                w.push(f64::from(*x), self.cfg.window);
            }
            let st = self.stamps.entry(label.to_owned()).or_default();
            st.push_back(now_ms);
            if st.len() > self.cfg.window {
                st.pop_front();
            }
        }
        *self.out_counts.entry(label.to_owned()).or_default() += 1;
        self.out_window.push_back(label.to_owned());
        if self.out_window.len() > self.cfg.window
            && let Some(old) = self.out_window.pop_front()
            && let Some(c) = self.out_counts.get_mut(&old)
        {
            *c -= 1;
        }
        self.since_check += 1;
        if self.since_check < self.cfg.check_every {
            return None;
        }
        self.since_check = 0;
        self.evaluate(now_ms)
    }

    fn evaluate(&mut self, now_ms: u64) -> Option<Transition> {
        let mut all = Vec::new();
        for (class, ws) in &self.classes {
            for w in ws.iter().filter(|w| w.len() >= self.cfg.window) {
                all.push(FeatureDrift {
                    class: class.clone(),
                    feature: w.profile.name.clone(),
                    psi: w.psi(),
                    ks: w.ks(),
                    ks_error: w.ks_bound(),
                });
            }
        }
        let n_out: u64 = self.out_counts.values().sum();
        let output_shift =
            (n_out as usize >= self.cfg.window && !self.out_base.is_empty()).then(|| {
                self.labels
                    .iter()
                    .map(|l| {
                        (self.out_counts.get(l).copied().unwrap_or(0) as f64 / n_out as f64
                            - self.out_base.get(l).copied().unwrap_or(0.0))
                        .abs()
                    })
                    .sum::<f64>()
                    / 2.0
            });
        if all.is_empty() && output_shift.is_none() {
            return None;
        }
        all.sort_by(|a, b| b.psi.total_cmp(&a.psi).then(b.ks.total_cmp(&a.ks)));
        let mut reasons: Vec<String> = all
            .iter()
            // Both tests must agree (see the module doc). A sketch's KS may be low by up to
            // its bound; comparing the upper end means a sketch never misses drift that
            // exact mode would raise.
            .filter(|f| f.psi > self.cfg.psi && f.ks + f.ks_error > self.cfg.ks)
            .map(|f| {
                format!(
                    "{} ({}): PSI {:.2}, KS {:.2}",
                    f.feature, f.class, f.psi, f.ks
                )
            })
            .collect();
        if let (Some(s), Some(t)) = (output_shift, self.cfg.output_shift)
            && s > t
        {
            reasons.push(format!("output mix shift {s:.2} > {t}"));
        }
        let drifting = !reasons.is_empty();
        if drifting != self.drifting {
            self.since_ms = now_ms;
        }
        let summary = DriftSummary {
            drifting,
            samples: self.samples,
            psi_max: all.iter().map(|f| f.psi).fold(0.0, f64::max),
            ks_max: all.iter().map(|f| f.ks).fold(0.0, f64::max),
            output_shift,
            top: all.into_iter().take(5).collect(),
            reasons,
            since_ms: self.since_ms,
            window_start_ms: self
                .stamps
                .values()
                .filter_map(|s| s.front().copied())
                .min()
                .unwrap_or(now_ms),
        };
        let changed = drifting != self.drifting;
        self.drifting = drifting;
        self.last = Some(summary.clone());
        if !changed {
            return None;
        }
        Some(if drifting {
            Transition::Detected(summary)
        } else {
            Transition::Cleared(summary)
        })
    }

    /// The latest evaluation.
    pub fn summary(&self) -> Option<&DriftSummary> {
        self.last.as_ref()
    }

    /// Bytes held by the windows (for the memory-bound claim).
    pub fn memory_bytes(&self) -> usize {
        self.classes
            .values()
            .flatten()
            .map(|w| {
                w.values.capacity() * 8
                    + w.psi_bins.capacity()
                    + w.sketch_bins.capacity()
                    + w.psi_counts.len() * 8
                    + w.sketch
                        .as_ref()
                        .map(|s| s.edges.len() * 8 + s.ref_cdf.len() * 8 + s.counts.len() * 4)
                        .unwrap_or(0)
            })
            .sum()
    }
}

#[cfg(test)]
#[path = "drift_tests.rs"]
mod tests;
