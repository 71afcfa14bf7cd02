//! The recorder: turns served answers (sensor pipeline windows and local API requests)
//! into captures (per the capture policy), drift observations and the label mix, and
//! agent events into event records; appends them to the store in batches.
//!
//! Record bodies (JSON):
//! - `captures`: `{"ts_ms", "model": {"name","version"}, "bundle", "reason", "source",
//!   "inputs": [OIP tensors], "outputs": [OIP tensors], "interpretation", "features":
//!   {name: value}, "label", "confidence"}` — one sample: the named input tensors as the
//!   model was given them (before normalisation), its named outputs, the task's reading,
//!   and the named feature values when the model has a named feature input;
//! - `events`: `{"ts_ms", "kind", "message", "details"}`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use outpost_inference::Scored;
use outpost_protocol::contract::Interpretation;
use outpost_protocol::records::{
    self, AgentEventKind, CaptureRecord, DriftEventDetails, EventRecord,
};
use outpost_protocol::tensor::Tensor;
use serde_json::Value;
use tokio::sync::{Notify, mpsc, watch};

use crate::capture::Capturer;
use crate::models::ActiveModel;
use crate::pipeline::PipelineResult;
use crate::store::NewRecord;
use crate::sync::{SharedStore, lock};

/// An agent event for the `events` stream.
#[derive(Debug, Clone)]
pub struct AgentEvent {
    /// Kind.
    pub kind: AgentEventKind,
    /// Human-readable message.
    pub message: String,
    /// Details.
    pub details: Value,
}

pub use outpost_protocol::records::Source;

/// A model's answer to one request: what the recorder captures and watches for drift.
#[derive(Debug)]
pub struct Served {
    /// When, unix ms.
    pub ts_ms: u64,
    /// The model that answered.
    pub model: Arc<ActiveModel>,
    /// Inputs, outputs and per-sample readings.
    pub scored: Scored,
    /// Who asked.
    pub source: Source,
}

impl Served {
    /// Samples in the request.
    pub fn samples(&self) -> usize {
        if self.model.model.contract().batched() {
            self.scored.inputs.first().map_or(1, Tensor::rows)
        } else {
            1
        }
    }

    fn row(&self, tensors: &[Tensor], i: usize) -> Vec<Tensor> {
        if self.model.model.contract().batched() {
            tensors.iter().map(|t| t.rows_slice(i..i + 1)).collect()
        } else {
            tensors.to_vec()
        }
    }

    /// The named feature values of sample `i` (raw), when the model has a feature input.
    pub fn features(&self, i: usize) -> Option<Vec<f64>> {
        let spec = self.model.model.contract().feature_input()?;
        let t = self.scored.inputs.iter().find(|t| t.name == spec.name)?;
        let w = spec.features.len();
        let start = if self.model.model.contract().batched() {
            i * w
        } else {
            0
        };
        (start..start + w).map(|k| t.data.get_f64(k)).collect()
    }
}

/// Counters and the label mix since the last telemetry report.
#[derive(Debug, Default)]
pub struct RecorderStats {
    /// Captures stored.
    pub captures: AtomicU64,
    /// Captures skipped by the hourly cap.
    pub skipped_by_cap: AtomicU64,
    /// Records the store refused.
    pub refused: AtomicU64,
    /// API answers not recorded because the recorder was behind (counted, never silent).
    pub served_dropped: AtomicU64,
    /// Answers per label, per model (`name@version`), since the last take.
    pub labels: std::sync::Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    /// The latest drift evaluation per model name.
    pub drift: std::sync::Mutex<BTreeMap<String, crate::drift::DriftSummary>>,
}

impl RecorderStats {
    /// Takes and resets the label mix.
    pub fn take_labels(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        std::mem::take(&mut *self.labels.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The latest drift summary of `model`.
    pub fn drift_of(&self, model: &str) -> Option<crate::drift::DriftSummary> {
        self.drift
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(model)
            .cloned()
    }
}

fn capture_body(s: &Served, i: usize, reason: crate::capture::CaptureReason) -> Option<Vec<u8>> {
    let interp = s.scored.interpretations.get(i);
    let c = s.model.model.contract();
    let features: Option<BTreeMap<&str, f64>> = c.feature_input().and_then(|f| {
        let v = s.features(i)?;
        Some(f.features.iter().map(String::as_str).zip(v).collect())
    });
    Some(records::encode(&CaptureRecord {
        ts_ms: s.ts_ms,
        model: s.model.info.model.clone(),
        bundle: s.model.info.bundle,
        reason,
        source: s.source,
        inputs: s.row(&s.scored.inputs, i),
        outputs: s.row(&s.scored.outputs, i),
        interpretation: interp.cloned(),
        features: features.map(|f| f.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
        label: interp.and_then(Interpretation::label).unwrap_or_default(),
        confidence: interp.and_then(Interpretation::value),
    }))
}

/// Drift monitoring per model (rebuilt whenever a model's active bundle changes).
pub struct DriftState {
    settings: crate::drift::DriftSettings,
    monitors: BTreeMap<String, (outpost_protocol::Digest, Option<Monitor>)>,
}

struct Monitor {
    inner: crate::drift::DriftMonitor,
    /// Whether the baseline's last column is the task output's value.
    with_output: bool,
}

impl DriftState {
    /// Drift monitoring with `settings`.
    pub fn new(settings: crate::drift::DriftSettings) -> Self {
        Self {
            settings,
            monitors: BTreeMap::new(),
        }
    }

    fn observe(
        &mut self,
        s: &Served,
        stats: &RecorderStats,
        pending: &mut Vec<(&'static str, u64, Vec<u8>)>,
    ) {
        let m = &s.model;
        let name = m.name().to_owned();
        if self.monitors.get(&name).map(|c| c.0) != Some(m.info.bundle) {
            // A new model: a new baseline (if its bundle carries one).
            let monitor = m.baseline.as_deref().and_then(|b| {
                let b = outpost_protocol::baseline::BaselineProfile::from_json(b).ok()?;
                let with_output = b.features.last().is_some_and(|f| {
                    f.name
                        .starts_with(outpost_protocol::baseline::OUTPUT_PREFIX)
                });
                Some(Monitor {
                    inner: crate::drift::DriftMonitor::new(
                        &b,
                        self.settings.resolve(m.model.contract().drift.as_ref()),
                    ),
                    with_output,
                })
            });
            self.monitors.insert(name.clone(), (m.info.bundle, monitor));
            stats
                .drift
                .lock()
                .unwrap_or_else(|x| x.into_inner())
                .remove(&name);
        }
        let Some((_, Some(mon))) = self.monitors.get_mut(&name) else {
            return;
        };
        for i in 0..s.samples() {
            let Some(mut row) = s.features(i) else {
                return;
            };
            let interp = s.scored.interpretations.get(i);
            if mon.with_output {
                match interp.and_then(Interpretation::value) {
                    Some(v) => row.push(v),
                    None => continue,
                }
            }
            let label = interp
                .and_then(Interpretation::label)
                .unwrap_or_else(|| "all".into());
            let row: Vec<f32> = row.iter().map(|v| *v as f32).collect();
            let t = mon.inner.observe(&row, &label, s.ts_ms);
            if let Some(sum) = mon.inner.summary() {
                stats
                    .drift
                    .lock()
                    .unwrap_or_else(|x| x.into_inner())
                    .insert(name.clone(), sum.clone());
            }
            let (kind, sum) = match t {
                Some(crate::drift::Transition::Detected(x)) => (AgentEventKind::DriftDetected, x),
                Some(crate::drift::Transition::Cleared(x)) => (AgentEventKind::DriftCleared, x),
                None => continue,
            };
            let message = if sum.drifting {
                format!(
                    "input drift on {} v{}: {}",
                    m.info.model.name,
                    m.info.model.version,
                    sum.reasons.join("; ")
                )
            } else {
                format!(
                    "drift cleared on {} v{}",
                    m.info.model.name, m.info.model.version
                )
            };
            tracing::warn!(%message, "drift");
            let details = DriftEventDetails {
                model: m.info.model.clone(),
                bundle: m.info.bundle,
                summary: sum,
            };
            let e = AgentEvent {
                kind,
                message,
                details: serde_json::to_value(details).unwrap_or_default(),
            };
            pending.push((records::EVENTS, s.ts_ms, event_body(&e)));
        }
    }
}

/// Where the recorder's inputs come from.
pub struct RecorderInputs {
    /// Sensor pipeline results.
    pub results: mpsc::Receiver<Arc<PipelineResult>>,
    /// Answers served by the local API.
    pub served: mpsc::Receiver<Arc<Served>>,
    /// Agent events.
    pub events: mpsc::Receiver<AgentEvent>,
}

/// Runs until shutdown (then drains what is queued).
pub async fn run(
    inputs: RecorderInputs,
    mut capturer: Capturer,
    mut drift: Option<DriftState>,
    store: SharedStore,
    wake: Arc<Notify>,
    stats: Arc<RecorderStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let RecorderInputs {
        mut results,
        mut served,
        mut events,
    } = inputs;
    let mut pending: Vec<(&'static str, u64, Vec<u8>)> = Vec::new();
    let mut stopping = false;
    // A source that closes (no sensor, no local API) is just done; the recorder stops on
    // shutdown, or when every source is closed.
    let (mut results_open, mut served_open, mut events_open) = (true, true, true);
    let mut on =
        |s: &Served, capturer: &mut Capturer, pending: &mut Vec<(&'static str, u64, Vec<u8>)>| {
            on_served(s, capturer, &stats, pending);
            if let Some(d) = &mut drift {
                d.observe(s, &stats, pending);
            }
        };
    loop {
        tokio::select! {
            r = results.recv(), if results_open => match r {
                Some(r) => if let Some(s) = &r.served { on(s, &mut capturer, &mut pending) },
                None => results_open = false,
            },
            s = served.recv(), if served_open => match s {
                Some(s) => on(&s, &mut capturer, &mut pending),
                None => served_open = false,
            },
            e = events.recv(), if events_open => match e {
                Some(e) => pending.push((records::EVENTS, crate::clock::unix_ms(), event_body(&e))),
                None => events_open = false,
            },
            _ = shutdown.changed() => stopping = true,
        }
        if !(results_open || served_open || events_open) {
            stopping = true;
        }
        // Batch whatever else is already queued into the same transaction.
        while let Ok(r) = results.try_recv() {
            if let Some(s) = &r.served {
                on(s, &mut capturer, &mut pending);
            }
        }
        while let Ok(s) = served.try_recv() {
            on(&s, &mut capturer, &mut pending);
        }
        while let Ok(e) = events.try_recv() {
            pending.push((records::EVENTS, crate::clock::unix_ms(), event_body(&e)));
        }
        if !pending.is_empty() {
            let recs: Vec<NewRecord<'_>> = pending
                .iter()
                .map(|(s, ts, b)| NewRecord {
                    stream: s,
                    ts_ms: *ts,
                    body: b,
                })
                .collect();
            match lock(&store).append(&recs) {
                Ok(outcomes) => {
                    let refused = outcomes.iter().filter(|o| o.is_err()).count() as u64;
                    stats.refused.fetch_add(refused, Relaxed);
                }
                Err(e) => {
                    stats.refused.fetch_add(recs.len() as u64, Relaxed);
                    tracing::error!(error = %e, records = recs.len(), "store append failed; records lost");
                }
            }
            pending.clear();
            wake.notify_one();
        }
        if stopping {
            break;
        }
    }
}

fn event_body(e: &AgentEvent) -> Vec<u8> {
    records::encode(&EventRecord {
        ts_ms: crate::clock::unix_ms(),
        kind: e.kind.clone(),
        message: e.message.clone(),
        details: e.details.clone(),
    })
}

fn on_served(
    s: &Served,
    capturer: &mut Capturer,
    stats: &RecorderStats,
    pending: &mut Vec<(&'static str, u64, Vec<u8>)>,
) {
    let m = &s.model.info.model;
    let key = format!("{}@{}", m.name, m.version);
    let min_confidence = s.model.model.contract().min_confidence();
    for i in 0..s.samples() {
        let interp = s.scored.interpretations.get(i);
        if let Some(label) = interp.and_then(Interpretation::label) {
            *stats
                .labels
                .lock()
                .unwrap_or_else(|x| x.into_inner())
                .entry(key.clone())
                .or_default()
                .entry(label)
                .or_default() += 1;
        }
        let before = capturer.skipped_by_cap;
        if let Some(body) = capturer
            .decide(&m.name, interp, min_confidence, s.ts_ms)
            .and_then(|reason| capture_body(s, i, reason))
        {
            pending.push((records::CAPTURES, s.ts_ms, body));
            stats.captures.fetch_add(1, Relaxed);
        }
        stats
            .skipped_by_cap
            .fetch_add(capturer.skipped_by_cap - before, Relaxed);
    }
}
