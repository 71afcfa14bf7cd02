//! The training-data baseline: a CSV sample → the profile shipped in the bundle.
//!
//! The header must name the model's feature input's features (any order, other columns
//! ignored). For a single-input model the model is run on every row: its label per row
//! makes the class-conditional profiles, and for regression and anomaly-score models its
//! value per row becomes one more profiled column, `output:{output}`, so the device
//! watches the output distribution too.

use std::path::{Path, PathBuf};

use outpost_inference::{InferenceError, MAX_BATCH, Model};
use outpost_protocol::baseline::{BaselineError, BaselineProfile, OUTPUT_PREFIX};
use outpost_protocol::contract::{Interpretation, Task};

use super::read_capped;

/// Why a baseline CSV is unusable.
#[derive(Debug, thiserror::Error)]
#[error("baseline {path}: {message}")]
pub struct BaselineFileError {
    /// CSV path.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

/// A parsed training sample: raw rows of the feature input, in feature order.
#[derive(Debug, Clone)]
pub struct TrainingSample {
    /// Feature names.
    pub names: Vec<String>,
    /// Rows.
    pub rows: Vec<Vec<f64>>,
}

/// Reads the CSV at `path` for `model`'s feature input.
pub fn read(path: &Path, model: &Model) -> Result<TrainingSample, BaselineFileError> {
    let bad = |message: String| BaselineFileError {
        path: path.to_path_buf(),
        message,
    };
    let names = model
        .contract()
        .feature_input()
        .ok_or_else(|| {
            bad("the model has no named features to match CSV columns: name them in the spec ([input] features = [..])".into())
        })?
        .features
        .clone();
    let bytes = read_capped(path).map_err(|e| bad(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| bad("empty file".into()))?
        .split(',')
        .map(str::trim)
        .collect();
    let cols: Vec<usize> = names
        .iter()
        .map(|f| {
            header
                .iter()
                .position(|h| h == f)
                .ok_or_else(|| bad(format!("no column {f:?} in the header")))
        })
        .collect::<Result<_, _>>()?;
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate() {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        let row: Vec<f64> = cols
            .iter()
            .map(|&c| {
                cells
                    .get(c)
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| {
                        bad(format!(
                            "line {}: column {} is not a finite number",
                            i + 2,
                            header[c]
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        rows.push(row);
    }
    Ok(TrainingSample { names, rows })
}

/// Profiles the sample (running the model where it can take the rows alone).
pub fn profile(
    path: &Path,
    sample: &TrainingSample,
    model: &Model,
) -> Result<Vec<u8>, BaselineFileError> {
    let bad = |message: String| BaselineFileError {
        path: path.to_path_buf(),
        message,
    };
    let mut names = sample.names.clone();
    let mut rows = sample.rows.clone();
    let mut labels = vec!["all".to_owned(); rows.len()];
    if model.row_input().is_some() {
        let mut answers: Vec<Interpretation> = Vec::with_capacity(rows.len());
        for (k, chunk) in sample.rows.chunks(MAX_BATCH).enumerate() {
            let a = model.predict_rows(chunk).map_err(|e: InferenceError| {
                bad(format!(
                    "rows {}..{}: the model fails on them: {e}",
                    k * MAX_BATCH + 2,
                    k * MAX_BATCH + chunk.len() + 1
                ))
            })?;
            answers.extend(a);
        }
        for (l, a) in labels.iter_mut().zip(&answers) {
            if let Some(x) = a.label() {
                *l = x;
            }
        }
        let task = &model.contract().task;
        if let (Task::Regression(_) | Task::AnomalyScore(_), Some(out)) = (task, task.output()) {
            names.push(format!("{OUTPUT_PREFIX}{out}"));
            for (r, a) in rows.iter_mut().zip(&answers) {
                r.push(a.value().unwrap_or(f64::NAN));
            }
        }
    }
    let profile = BaselineProfile::compute(&names, &rows, &labels)
        .map_err(|e: BaselineError| bad(e.to_string()))?;
    Ok(profile.to_json())
}
