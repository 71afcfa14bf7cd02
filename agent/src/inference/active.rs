//! The active model and the handle through which every inference path reaches it.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use outpost_protocol::spec::Prediction;
use outpost_protocol::wire::InstalledModel;
use tokio::sync::Notify;

use super::{InferenceError, Model, ModelStats};

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

fn model_failed(e: &InferenceError) -> bool {
    // Bad input is the caller's fault; only failures of the model itself count against it.
    matches!(e, InferenceError::Run(_) | InferenceError::Output(_))
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

    /// Scores one raw sample, counting the outcome.
    pub fn predict(&self, raw: &[f32]) -> Result<Prediction, InferenceError> {
        let start = Instant::now();
        let r = self.model.predict(raw);
        self.count(r.as_ref().err(), 1, start);
        r
    }

    /// Scores a batch, counting the outcome.
    pub fn predict_batch(&self, raws: &[Vec<f32>]) -> Result<Vec<Prediction>, InferenceError> {
        let start = Instant::now();
        let r = self.model.predict_batch(raws);
        self.count(r.as_ref().err(), raws.len() as u64, start);
        r
    }

    fn count(&self, err: Option<&InferenceError>, samples: u64, start: Instant) {
        match err {
            None => self.stats.record(true, samples, start.elapsed()),
            Some(e) if model_failed(e) => self.stats.record(false, samples, start.elapsed()),
            Some(_) => self.stats.record_rejected(),
        }
    }
}

/// Shared access to the active model. Swapping is one pointer write; readers holding the
/// old `Arc` finish their request on the old model.
#[derive(Debug, Clone, Default)]
pub struct ModelHandle {
    current: Arc<RwLock<Option<Arc<ActiveModel>>>>,
    activity: Arc<Notify>,
}

impl ModelHandle {
    /// The active model, if any.
    pub fn current(&self) -> Option<Arc<ActiveModel>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the active model.
    pub fn set(&self, m: Option<Arc<ActiveModel>>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = m;
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
