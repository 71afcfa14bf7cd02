//! The models this agent serves, and the handle every inference path reaches them through.
//!
//! Each active model is an [`ActiveModel`]: the loaded [`outpost_inference::Model`], its
//! identity, its counters and its baseline profile. [`ModelHandle`] maps model names to
//! them; swapping a model is one pointer write, and a request holding the old `Arc`
//! finishes on the old model.

mod stats;

pub use stats::{BUCKETS_US, ModelStats, StatsSnapshot};

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use outpost_inference::{InferenceError, Model, Scored};
use outpost_protocol::contract::Interpretation;
use outpost_protocol::tensor::Tensor;
use outpost_protocol::wire::InstalledModel;
use tokio::sync::Notify;

/// A model serving on this device, with its identity and counters.
#[derive(Debug)]
pub struct ActiveModel {
    /// The loaded model.
    pub model: Model,
    /// Bundle digest and model name/version.
    pub info: InstalledModel,
    /// Counters of this activation.
    pub stats: ModelStats,
    /// Baseline profile bytes from the bundle, if any.
    pub baseline: Option<Vec<u8>>,
}

impl ActiveModel {
    /// Wraps a loaded model.
    pub fn new(model: Model, info: InstalledModel, baseline: Option<Vec<u8>>) -> Self {
        Self {
            model,
            info,
            stats: ModelStats::default(),
            baseline,
        }
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.info.model.name
    }

    /// Runs named tensors, counting the outcome: the caller's errors as *rejected*, the
    /// model's failures as errors (which probation holds against it).
    pub fn infer(
        &self,
        inputs: &[Tensor],
        requested: Option<&[String]>,
    ) -> Result<Vec<Tensor>, InferenceError> {
        let start = Instant::now();
        let r = self.model.infer(inputs, requested);
        let samples = self.samples(inputs);
        self.count(r.as_ref().err(), samples, start);
        r
    }

    /// Runs named tensors with every output and interprets each sample, counting the
    /// outcome.
    pub fn score(&self, inputs: Vec<Tensor>) -> Result<Scored, InferenceError> {
        let start = Instant::now();
        let samples = self.samples(&inputs);
        let r = self.model.score(inputs);
        self.count(r.as_ref().err(), samples, start);
        r
    }

    /// Scores raw feature rows (single-input models), counting the outcome.
    pub fn score_rows(&self, rows: &[Vec<f64>]) -> Result<Scored, InferenceError> {
        let start = Instant::now();
        let r = self.model.score_rows(rows);
        self.count(r.as_ref().err(), rows.len() as u64, start);
        r
    }

    /// Scores one raw row, counting the outcome.
    pub fn predict(&self, row: &[f64]) -> Result<Interpretation, InferenceError> {
        self.score_rows(&[row.to_vec()])
            .map(|mut s| s.interpretations.pop().unwrap_or(Interpretation::Raw))
    }

    fn samples(&self, inputs: &[Tensor]) -> u64 {
        if self.model.contract().batched() {
            inputs.first().map_or(1, Tensor::rows) as u64
        } else {
            1
        }
    }

    fn count(&self, err: Option<&InferenceError>, samples: u64, start: Instant) {
        match err {
            None => self.stats.record(true, samples, start.elapsed()),
            Some(e) if e.is_client_error() => self.stats.record_rejected(),
            Some(_) => self.stats.record(false, samples, start.elapsed()),
        }
    }
}

/// Shared access to the active models, by name.
#[derive(Debug, Clone, Default)]
pub struct ModelHandle {
    current: Arc<RwLock<BTreeMap<String, Arc<ActiveModel>>>>,
    activity: Arc<Notify>,
}

impl ModelHandle {
    /// The model named `name`, if active.
    pub fn get(&self, name: &str) -> Option<Arc<ActiveModel>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Every active model, by name.
    pub fn list(&self) -> Vec<Arc<ActiveModel>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The active model when exactly one is active.
    pub fn only(&self) -> Option<Arc<ActiveModel>> {
        let m = self.current.read().unwrap_or_else(|p| p.into_inner());
        match m.len() {
            1 => m.values().next().cloned(),
            _ => None,
        }
    }

    /// Makes `m` the active model for its name.
    pub fn insert(&self, m: Arc<ActiveModel>) {
        self.current
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(m.name().to_owned(), m);
    }

    /// Stops serving `name`.
    pub fn remove(&self, name: &str) {
        self.current
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// Signals that an inference happened (wakes the probation check).
    pub fn touch(&self) {
        self.activity.notify_one();
    }

    /// Waits for the next inference signal.
    pub async fn activity(&self) {
        self.activity.notified().await
    }
}
