//! A loaded model and the one way to run it: named OIP tensors in, named tensors out.
//!
//! [`Model::infer`] checks the request against the contract before tract sees it (every
//! input present once, its datatype, a shape the contract accepts, one batch size, no
//! NaN unless allowed), normalises the inputs the contract says to, runs the plan —
//! splitting the batch when the plan takes a fixed one — and checks the outputs: a
//! non-finite output is the model's failure unless a finite input beyond the contract's
//! validated domain (`max_abs`) explains it, in which case it is the caller's
//! ([`RequestError::OutOfDomain`]).

use outpost_protocol::contract::{self, Interpretation, ModelContract, Normalization};
use outpost_protocol::manifest::SelfTestSample;
use outpost_protocol::tensor::{DataType, Dim, Tensor, TensorData};
use tract_onnx::prelude::{TValue, TVec, tvec};

use crate::convert::{from_tract, to_tract};
use crate::error::{InferenceError, MAX_BATCH, RequestError};
use crate::load::{self, Batching, Plan, guarded};

/// A loaded, optimised model with its contract.
#[derive(Clone)]
pub struct Model {
    plan: Plan,
    contract: ModelContract,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

/// A scored request: the inputs as run (before normalisation), all outputs, and the
/// task's reading of each sample (empty for a raw model).
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Inputs.
    pub inputs: Vec<Tensor>,
    /// Outputs, in contract order.
    pub outputs: Vec<Tensor>,
    /// One per sample.
    pub interpretations: Vec<Interpretation>,
}

/// Result of a self-test run.
#[derive(Debug, Clone, PartialEq)]
pub struct SelfTestReport {
    /// Samples run.
    pub samples: usize,
    /// Largest absolute difference seen on float outputs.
    pub max_abs_diff: f64,
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    it.map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

fn shown(shape: &[Dim]) -> String {
    format!(
        "[{}]",
        shape
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn normalise(data: &TensorData, norm: &Normalization) -> TensorData {
    let f = |i: usize, x: f64| -> f64 {
        match norm {
            Normalization::None => x,
            Normalization::Zscore { mean, std } => {
                let k = i % mean.len();
                (x - f64::from(mean[k])) / f64::from(std[k])
            }
            Normalization::MinMax { min, max } => {
                let k = i % min.len();
                (x - f64::from(min[k])) / (f64::from(max[k]) - f64::from(min[k]))
            }
        }
    };
    match data {
        TensorData::Fp32(v) => TensorData::Fp32(
            v.iter()
                .enumerate()
                .map(|(i, x)| f(i, f64::from(*x)) as f32)
                .collect(),
        ),
        TensorData::Fp64(v) => {
            TensorData::Fp64(v.iter().enumerate().map(|(i, x)| f(i, *x)).collect())
        }
        TensorData::Fp16(v) => TensorData::Fp16(
            v.iter()
                .enumerate()
                .map(|(i, b)| {
                    let x = f64::from(half::f16::from_bits(*b).to_f32());
                    half::f16::from_f64(f(i, x)).to_bits()
                })
                .collect(),
        ),
        // The contract only allows normalisation on float inputs.
        other => other.clone(),
    }
}

impl Model {
    /// Loads ONNX bytes for `contract` (validated first).
    pub fn load(onnx: &[u8], contract: &ModelContract) -> Result<Self, InferenceError> {
        contract.validate()?;
        let plan = load::build(onnx, contract)?;
        Ok(Self {
            plan,
            contract: contract.clone(),
        })
    }

    /// The contract.
    pub fn contract(&self) -> &ModelContract {
        &self.contract
    }

    /// The same loaded plan under another reading of its outputs: `c` must declare the
    /// same tensors (only the task, features, normalisation and domains may differ).
    pub fn with_contract(&self, c: ModelContract) -> Result<Self, InferenceError> {
        c.validate()?;
        let same = |a: &[outpost_protocol::tensor::TensorSpec],
                    b: &[outpost_protocol::tensor::TensorSpec]| a == b;
        let tensors = |m: &ModelContract| {
            (
                m.inputs.iter().map(|i| i.tensor()).collect::<Vec<_>>(),
                m.outputs.iter().map(|o| o.tensor()).collect::<Vec<_>>(),
            )
        };
        let (ai, ao) = tensors(&self.contract);
        let (bi, bo) = tensors(&c);
        if !(same(&ai, &bi) && same(&ao, &bo)) {
            return Err(InferenceError::Mismatch(
                "a new contract for a loaded model must declare the same tensors".into(),
            ));
        }
        Ok(Self {
            plan: self.plan.clone(),
            contract: c,
        })
    }

    /// How the plan takes batches.
    pub fn batching(&self) -> Batching {
        self.plan.batching
    }

    /// Checks a request and returns its batch size (1 for an unbatched model).
    fn check(&self, inputs: &[Tensor]) -> Result<usize, RequestError> {
        let c = &self.contract;
        let all = || names(c.inputs.iter().map(|i| i.name.as_str()));
        for (k, t) in inputs.iter().enumerate() {
            if c.input(&t.name).is_none() {
                return Err(RequestError::UnknownInput(t.name.clone(), all()));
            }
            if inputs[..k].iter().any(|o| o.name == t.name) {
                return Err(RequestError::DuplicateInput(t.name.clone()));
            }
        }
        let mut batch: Option<(usize, &str)> = None;
        // A named dimension takes one size across all inputs (tract ties them).
        let mut bound: Vec<(&str, usize, &str)> = Vec::new();
        for spec in &c.inputs {
            let t = inputs
                .iter()
                .find(|t| t.name == spec.name)
                .ok_or_else(|| RequestError::MissingInput(spec.name.clone(), all()))?;
            if t.datatype() != spec.datatype {
                return Err(RequestError::DataType {
                    name: spec.name.clone(),
                    expected: spec.datatype,
                    got: t.datatype(),
                });
            }
            if !spec.tensor().accepts(&t.shape) {
                return Err(RequestError::Shape {
                    name: spec.name.clone(),
                    expected: shown(&spec.shape),
                    got: t.shape.clone(),
                });
            }
            for (d, n) in spec.shape.iter().zip(&t.shape) {
                if let Dim::Var(Some(sym)) = d {
                    match bound.iter().find(|(s, _, _)| s == sym) {
                        Some((_, v, other)) if v != n => {
                            return Err(RequestError::Shape {
                                name: spec.name.clone(),
                                expected: format!(
                                    "{} with {sym} = {v} as in {other:?}",
                                    shown(&spec.shape)
                                ),
                                got: t.shape.clone(),
                            });
                        }
                        Some(_) => {}
                        None => bound.push((sym, *n, &spec.name)),
                    }
                }
            }
            if !spec.allow_nan
                && let Some(index) = t.data.first_non_finite()
            {
                return Err(RequestError::NotFinite {
                    input: spec.name.clone(),
                    index,
                });
            }
            if c.batched() {
                let n = t.rows();
                match batch {
                    Some((b, other)) if b != n => {
                        return Err(RequestError::BatchMismatch(format!(
                            "{other:?} has {b}, {:?} has {n}",
                            spec.name
                        )));
                    }
                    _ => batch = Some((n, &spec.name)),
                }
            }
        }
        let n = batch.map_or(1, |b| b.0);
        if n == 0 || n > MAX_BATCH {
            return Err(RequestError::BatchSize(n));
        }
        Ok(n)
    }

    /// Runs the model on named inputs (raw: the contract's normalisation is applied here)
    /// and returns the requested outputs (all, in contract order, when `requested` is
    /// `None`).
    pub fn infer(
        &self,
        inputs: &[Tensor],
        requested: Option<&[String]>,
    ) -> Result<Vec<Tensor>, InferenceError> {
        if let Some(r) = requested {
            let all = || names(self.contract.outputs.iter().map(|o| o.name.as_str()));
            if let Some(o) = r.iter().find(|o| self.contract.output(o).is_none()) {
                return Err(RequestError::UnknownOutput(o.clone(), all()).into());
            }
        }
        let n = self.check(inputs)?;
        // Graph order, normalised.
        let ordered: Vec<Tensor> = self
            .plan
            .inputs
            .iter()
            .map(|name| {
                let t = inputs.iter().find(|t| &t.name == name).expect("checked");
                let spec = self.contract.input(name).expect("checked");
                match spec.normalization {
                    Normalization::None => t.clone(),
                    ref norm => Tensor {
                        data: normalise(&t.data, norm),
                        ..t.clone()
                    },
                }
            })
            .collect();
        let outputs = match self.plan.batching {
            Batching::Fixed(b) if n != b => self.run_split(&ordered, n, b)?,
            _ => self.run(&ordered)?,
        };
        self.check_outputs(inputs, &outputs)?;
        Ok(match requested {
            None => outputs,
            Some(r) => outputs
                .into_iter()
                .filter(|o| r.contains(&o.name))
                .collect(),
        })
    }

    fn run(&self, ordered: &[Tensor]) -> Result<Vec<Tensor>, InferenceError> {
        let plan = &self.plan;
        guarded("inference", || {
            let mut tv: TVec<TValue> = tvec![];
            for t in ordered {
                tv.push(to_tract(t)?.into());
            }
            let outs = plan.runnable.run(tv)?;
            plan.outputs
                .iter()
                .zip(outs.iter())
                .map(|(name, o)| from_tract(name, o))
                .collect()
        })
        .map_err(InferenceError::Run)
    }

    /// Runs `n` samples through a plan that takes exactly `b` per run.
    fn run_split(
        &self,
        ordered: &[Tensor],
        n: usize,
        b: usize,
    ) -> Result<Vec<Tensor>, InferenceError> {
        let mut merged: Option<Vec<Tensor>> = None;
        let mut start = 0;
        while start < n {
            let end = (start + b).min(n);
            let part: Vec<Tensor> = ordered
                .iter()
                .map(|t| {
                    let mut p = t.rows_slice(start..end);
                    // Pad a short last run with copies of its last row.
                    while p.rows() < b {
                        let last = p.rows_slice(p.rows() - 1..p.rows());
                        p.data.extend(&last.data);
                        p.shape[0] += 1;
                    }
                    p
                })
                .collect();
            let outs = self.run(&part)?;
            let real = end - start;
            let outs: Vec<Tensor> = outs
                .into_iter()
                .map(|o| {
                    // The plan said it takes `b` samples; an output without them is the
                    // model's fault, not the caller's.
                    if o.shape.first() != Some(&b) {
                        return Err(InferenceError::Run(format!(
                            "output {:?} has shape {:?} for a run of {b} samples",
                            o.name, o.shape
                        )));
                    }
                    Ok(o.rows_slice(0..real))
                })
                .collect::<Result<_, _>>()?;
            match &mut merged {
                None => merged = Some(outs),
                Some(m) => {
                    for (acc, o) in m.iter_mut().zip(outs) {
                        acc.data.extend(&o.data);
                        acc.shape[0] += o.shape[0];
                    }
                }
            }
            start = end;
        }
        Ok(merged.unwrap_or_default())
    }

    fn check_outputs(&self, inputs: &[Tensor], outputs: &[Tensor]) -> Result<(), InferenceError> {
        let Some((o, index)) = outputs
            .iter()
            .find_map(|o| o.data.first_non_finite().map(|i| (o, i)))
        else {
            return Ok(());
        };
        // Whose fault: a non-finite input the contract lets through, or a finite input far
        // outside the validated domain, explains it.
        for spec in &self.contract.inputs {
            if let Some(t) = inputs.iter().find(|t| t.name == spec.name)
                && spec.datatype.is_numeric()
            {
                if let Some(index) = t.data.first_non_finite() {
                    return Err(RequestError::NotFinite {
                        input: spec.name.clone(),
                        index,
                    }
                    .into());
                }
                let m = t.data.max_abs();
                if m.is_finite() && m > spec.domain() {
                    return Err(RequestError::OutOfDomain {
                        input: spec.name.clone(),
                        value: m,
                        max_abs: spec.domain(),
                    }
                    .into());
                }
            }
        }
        Err(InferenceError::Output(
            outpost_protocol::contract::OutputError::NotFinite {
                output: o.name.clone(),
                index,
            },
        ))
    }

    /// The task's reading of each sample of `outputs` (as returned by [`Model::infer`]
    /// without an output selection). Empty for a raw model.
    pub fn interpret(&self, outputs: &[Tensor]) -> Result<Vec<Interpretation>, InferenceError> {
        let Some(name) = self.contract.task.output() else {
            return Ok(Vec::new());
        };
        let t = outputs
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| InferenceError::Run(format!("task output {name:?} was not produced")))?;
        let (rows, w) = if self.contract.batched() {
            (t.rows(), t.row_len())
        } else {
            (1, t.data.len())
        };
        (0..rows)
            .map(|r| {
                let vals: Vec<f64> = (r * w..(r + 1) * w)
                    .filter_map(|i| t.data.get_f64(i))
                    .collect();
                self.contract.interpret(&vals).map_err(InferenceError::from)
            })
            .collect()
    }

    /// The input that raw feature rows (`/v1/predict`, the sensor pipeline) go to: the only
    /// input, with a fixed sample size.
    pub fn row_input(&self) -> Option<&contract::InputSpec> {
        self.contract
            .sole_input()
            .filter(|i| i.datatype.is_numeric())
    }

    /// Runs `inputs` with every output and interprets each sample.
    pub fn score(&self, inputs: Vec<Tensor>) -> Result<Scored, InferenceError> {
        let outputs = self.infer(&inputs, None)?;
        let interpretations = self.interpret(&outputs)?;
        Ok(Scored {
            inputs,
            outputs,
            interpretations,
        })
    }

    /// Scores raw rows (one per sample, in the row input's order): the convenience path
    /// for single-input models.
    pub fn predict_rows(&self, rows: &[Vec<f64>]) -> Result<Vec<Interpretation>, InferenceError> {
        Ok(self.score_rows(rows)?.interpretations)
    }

    /// Like [`Model::predict_rows`], keeping the tensors.
    pub fn score_rows(&self, rows: &[Vec<f64>]) -> Result<Scored, InferenceError> {
        let spec = self
            .row_input()
            .ok_or(RequestError::Input(contract::InputError::NotNamed))?;
        if rows.is_empty() || rows.len() > MAX_BATCH {
            return Err(RequestError::BatchSize(rows.len()).into());
        }
        let w = spec
            .tensor()
            .sample_len()
            .expect("row input has a fixed sample");
        let mut flat = Vec::with_capacity(rows.len() * w);
        for r in rows {
            if r.len() != w {
                return Err(RequestError::Input(contract::InputError::WrongLength {
                    input: spec.name.clone(),
                    expected: w,
                    got: r.len(),
                })
                .into());
            }
            flat.extend_from_slice(r);
        }
        let mut shape: Vec<usize> = spec
            .shape
            .iter()
            .map(|d| d.fixed().unwrap_or(1) as usize)
            .collect();
        if self.contract.batched() {
            shape[0] = rows.len();
        } else if rows.len() != 1 {
            return Err(RequestError::BatchSize(rows.len()).into());
        }
        let data = cast(&flat, spec.datatype)?;
        let t = Tensor::new(spec.name.clone(), shape, data).map_err(RequestError::from)?;
        self.score(vec![t])
    }

    /// Scores one raw row.
    pub fn predict(&self, row: &[f64]) -> Result<Interpretation, InferenceError> {
        Ok(self
            .predict_rows(&[row.to_vec()])?
            .pop()
            .unwrap_or(Interpretation::Raw))
    }

    /// Runs self-test samples; fails on the first output outside its tolerance. Floats
    /// compare as `|got − want| ≤ tolerance · max(1, |want|)`; other types exactly.
    pub fn self_test(&self, samples: &[SelfTestSample]) -> Result<SelfTestReport, InferenceError> {
        let mut max_abs_diff = 0f64;
        for (index, s) in samples.iter().enumerate() {
            let fail = |reason: String| InferenceError::SelfTest { index, reason };
            let outs = self
                .infer(&s.inputs, None)
                .map_err(|e| fail(e.to_string()))?;
            for want in &s.outputs {
                let got = outs
                    .iter()
                    .find(|o| o.name == want.name)
                    .ok_or_else(|| fail(format!("output {:?} was not produced", want.name)))?;
                if got.shape != want.shape {
                    return Err(fail(format!(
                        "output {:?} has shape {:?}, expected {:?}",
                        want.name, got.shape, want.shape
                    )));
                }
                max_abs_diff = max_abs_diff.max(compare(got, want, s.tolerance).map_err(fail)?);
            }
        }
        Ok(SelfTestReport {
            samples: samples.len(),
            max_abs_diff,
        })
    }
}

/// Raw `f64` values as `datatype` (integers must be whole and in range).
pub fn cast(values: &[f64], datatype: DataType) -> Result<TensorData, RequestError> {
    let json: Vec<serde_json::Value> = values
        .iter()
        .map(|v| {
            if datatype.is_float() {
                serde_json::Number::from_f64(*v).map_or(serde_json::Value::Null, Into::into)
            } else if v.fract() == 0.0 && v.abs() < 9.0e15 {
                serde_json::Value::from(*v as i64)
            } else {
                serde_json::Number::from_f64(*v).map_or(serde_json::Value::Null, Into::into)
            }
        })
        .collect();
    if datatype.is_float()
        && let Some(i) = values.iter().position(|v| !v.is_finite())
    {
        return Err(RequestError::Input(contract::InputError::NotFinite {
            input: String::new(),
            index: i,
            name: i.to_string(),
            value: values[i],
        }));
    }
    Ok(TensorData::from_json(
        datatype,
        &serde_json::Value::Array(json),
        values.len(),
    )?)
}

/// Compares one output; returns the largest float difference.
fn compare(got: &Tensor, want: &Tensor, tolerance: f64) -> Result<f64, String> {
    if got.datatype() != want.datatype() {
        return Err(format!(
            "output {:?} is {}, expected {}",
            want.name,
            got.datatype(),
            want.datatype()
        ));
    }
    if !want.datatype().is_numeric() {
        return if got.data == want.data {
            Ok(0.0)
        } else {
            Err(format!("output {:?} differs", want.name))
        };
    }
    let mut worst = 0f64;
    for i in 0..want.data.len() {
        let (g, w) = (
            got.data.get_f64(i).unwrap_or(f64::NAN),
            want.data.get_f64(i).unwrap_or(f64::NAN),
        );
        let d = (g - w).abs();
        let ok = if want.datatype().is_float() {
            d <= tolerance * w.abs().max(1.0)
        } else {
            g == w
        };
        // NaN fails the comparison too.
        if !ok {
            return Err(format!(
                "output {:?}[{i}] is {g}, expected {w} ± {tolerance}",
                want.name
            ));
        }
        if want.datatype().is_float() {
            worst = worst.max(d);
        }
    }
    Ok(worst)
}
