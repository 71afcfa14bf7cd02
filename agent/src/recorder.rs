//! The recorder: turns pipeline results into captures (per the capture policy) and agent
//! events into event records, and appends them to the store in batches.
//!
//! Record bodies (JSON):
//! - `captures`: `{"ts_ms", "model": {"name","version"}, "bundle", "reason", "features",
//!   "input", "output", "label", "confidence"}` — `input` is what the model was given
//!   (the 16 features, or the raw window for a window model);
//! - `events`: `{"ts_ms", "kind", "message", "details"}`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, watch};

use crate::capture::Capturer;
use crate::pipeline::PipelineResult;
use crate::store::NewRecord;
use crate::sync::{SharedStore, lock};

/// An agent event for the `events` stream.
#[derive(Debug, Clone)]
pub struct AgentEvent {
    /// Kind (`store_reset`, `update_failed`, `rolled_back`, `drift_detected`, …).
    pub kind: String,
    /// Human-readable message.
    pub message: String,
    /// Details.
    pub details: Value,
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
    /// Predictions per label, per model (`name@version`), since the last take.
    pub labels: std::sync::Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    /// The latest drift evaluation of the active model.
    pub drift: std::sync::Mutex<Option<crate::drift::DriftSummary>>,
}

impl RecorderStats {
    /// Takes and resets the label mix.
    pub fn take_labels(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        std::mem::take(&mut *self.labels.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn capture_body(r: &PipelineResult, reason: crate::capture::CaptureReason) -> Option<Vec<u8>> {
    let p = r.prediction.as_ref()?;
    let m = r.model.as_ref()?;
    let v = json!({
        "ts_ms": r.ts_ms,
        "model": m.model,
        "bundle": m.bundle,
        "reason": reason,
        "features": r.features,
        "input": r.model_input.as_ref().unwrap_or(&r.features),
        "output": p.probabilities,
        "label": p.label,
        "confidence": p.confidence,
    });
    serde_json::to_vec(&v).ok()
}

/// Drift monitoring of the active model (rebuilt whenever the active bundle changes).
pub struct DriftState {
    settings: crate::config::DriftSettings,
    models: crate::inference::ModelHandle,
    current: Option<(outpost_protocol::Digest, Option<crate::drift::DriftMonitor>)>,
}

impl DriftState {
    /// Drift monitoring with `settings`, following `models`.
    pub fn new(
        settings: crate::config::DriftSettings,
        models: crate::inference::ModelHandle,
    ) -> Self {
        Self {
            settings,
            models,
            current: None,
        }
    }

    fn observe(
        &mut self,
        r: &PipelineResult,
        stats: &RecorderStats,
        pending: &mut Vec<(&'static str, u64, Vec<u8>)>,
    ) {
        let (Some(p), Some(m)) = (&r.prediction, &r.model) else {
            return;
        };
        if self.current.as_ref().map(|c| c.0) != Some(m.bundle) {
            // A new model: a new baseline (if its bundle carries one).
            let monitor = self
                .models
                .current()
                .filter(|a| a.info.bundle == m.bundle)
                .and_then(|a| {
                    let b = outpost_protocol::baseline::BaselineProfile::from_json(
                        a.baseline.as_deref()?,
                    )
                    .ok()?;
                    Some(crate::drift::DriftMonitor::new(
                        &b,
                        self.settings.resolve(a.model.spec().drift.as_ref()),
                    ))
                });
            self.current = Some((m.bundle, monitor));
            *stats.drift.lock().unwrap_or_else(|x| x.into_inner()) = None;
        }
        let Some((_, Some(mon))) = &mut self.current else {
            return;
        };
        let t = mon.observe(&r.features, &p.label, r.ts_ms);
        *stats.drift.lock().unwrap_or_else(|x| x.into_inner()) = mon.summary().cloned();
        let (kind, s) = match t {
            Some(crate::drift::Transition::Detected(s)) => ("drift_detected", s),
            Some(crate::drift::Transition::Cleared(s)) => ("drift_cleared", s),
            None => return,
        };
        let message = if s.drifting {
            format!(
                "input drift on {} v{}: {}",
                m.model.name,
                m.model.version,
                s.reasons.join("; ")
            )
        } else {
            format!("drift cleared on {} v{}", m.model.name, m.model.version)
        };
        tracing::warn!(%message, "drift");
        let e = AgentEvent {
            kind: kind.into(),
            message,
            details: json!({"model": m.model, "bundle": m.bundle, "summary": s}),
        };
        pending.push(("events", r.ts_ms, event_body(&e)));
    }
}

/// Runs until shutdown (then drains what is queued).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    mut results: mpsc::Receiver<Arc<PipelineResult>>,
    mut events: mpsc::Receiver<AgentEvent>,
    mut capturer: Capturer,
    mut drift: Option<DriftState>,
    store: SharedStore,
    wake: Arc<Notify>,
    stats: Arc<RecorderStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut pending: Vec<(&'static str, u64, Vec<u8>)> = Vec::new();
    let mut stopping = false;
    let mut on = |r: &PipelineResult,
                  capturer: &mut Capturer,
                  pending: &mut Vec<(&'static str, u64, Vec<u8>)>| {
        on_result(r, capturer, &stats, pending);
        if let Some(d) = &mut drift {
            d.observe(r, &stats, pending);
        }
    };
    loop {
        tokio::select! {
            r = results.recv() => match r {
                Some(r) => on(&r, &mut capturer, &mut pending),
                None => stopping = true,
            },
            e = events.recv() => match e {
                Some(e) => pending.push(("events", crate::clock::unix_ms(), event_body(&e))),
                None => stopping = true,
            },
            _ = shutdown.changed() => stopping = true,
        }
        // Batch whatever else is already queued into the same transaction.
        while let Ok(r) = results.try_recv() {
            on(&r, &mut capturer, &mut pending);
        }
        while let Ok(e) = events.try_recv() {
            pending.push(("events", crate::clock::unix_ms(), event_body(&e)));
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
    serde_json::to_vec(&json!({
        "ts_ms": crate::clock::unix_ms(),
        "kind": e.kind,
        "message": e.message,
        "details": e.details,
    }))
    .unwrap_or_default()
}

fn on_result(
    r: &PipelineResult,
    capturer: &mut Capturer,
    stats: &RecorderStats,
    pending: &mut Vec<(&'static str, u64, Vec<u8>)>,
) {
    let (Some(p), Some(m)) = (&r.prediction, &r.model) else {
        return;
    };
    let key = format!("{}@{}", m.model.name, m.model.version);
    *stats
        .labels
        .lock()
        .unwrap_or_else(|x| x.into_inner())
        .entry(key)
        .or_default()
        .entry(p.label.clone())
        .or_default() += 1;
    let before = capturer.skipped_by_cap;
    if let Some(body) = capturer
        .decide(&m.model.name, p, r.min_confidence, r.ts_ms)
        .and_then(|reason| capture_body(r, reason))
    {
        pending.push(("captures", r.ts_ms, body));
        stats.captures.fetch_add(1, Relaxed);
    }
    stats
        .skipped_by_cap
        .fetch_add(capturer.skipped_by_cap - before, Relaxed);
}
