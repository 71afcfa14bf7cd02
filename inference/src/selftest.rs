//! Self-test samples for models registered without any: inputs the model accepts, with
//! the outputs this host computed. On the device the self-test then checks that the model
//! reproduces the bridge's outputs before it is activated (a corrupted install, a
//! miscompiled kernel or a platform difference beyond tolerance fails it).
//!
//! Inputs: rows from the training sample when there is one (the feature input), else
//! zeros, ones and seeded pseudo-random values (floats in [-1, 1], integers in [0, 2],
//! which stay inside small categorical vocabularies). Variable dimensions take the first
//! size the model runs with from 32, 64, 16, 128, 8, 224. Only samples whose outputs are
//! all finite are kept.

use outpost_protocol::manifest::SelfTestSample;
use outpost_protocol::tensor::{DataType, Dim, Tensor, TensorData};

use crate::error::InferenceError;
use crate::model::{Model, cast};

/// Tolerance of synthesised samples (relative above magnitude 1; see
/// [`Model::self_test`]).
pub const SYNTH_TOLERANCE: f64 = 1e-4;
const SIZES: [usize; 6] = [32, 64, 16, 128, 8, 224];

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn values(dt: DataType, n: usize, kind: usize, rng: &mut XorShift) -> TensorData {
    let v: Vec<f64> = (0..n)
        .map(|_| match (kind, dt.is_float()) {
            (0, _) => 0.0,
            (1, _) => 1.0,
            (_, true) => rng.unit() * 2.0 - 1.0,
            (_, false) => (rng.next() % 3) as f64,
        })
        .collect();
    match dt {
        DataType::Bytes => TensorData::Bytes(vec![b"a".to_vec(); n]),
        DataType::Bool => TensorData::Bool(v.iter().map(|x| *x != 0.0).collect()),
        dt => cast(&v, dt).unwrap_or_else(|_| TensorData::Fp32(vec![0.0; n])),
    }
}

fn shapes(model: &Model, size: usize) -> Vec<Vec<usize>> {
    model
        .contract()
        .inputs
        .iter()
        .map(|i| {
            i.shape
                .iter()
                .enumerate()
                .map(|(axis, d)| match d {
                    Dim::Fixed(n) => *n as usize,
                    Dim::Var(_) if axis == 0 => 1,
                    Dim::Var(_) => size,
                })
                .collect()
        })
        .collect()
}

/// Builds up to `count` self-test samples; `rows` are raw training rows for the model's
/// feature input (in feature order) or its only input.
pub fn synthesize(
    model: &Model,
    rows: &[Vec<f64>],
    count: usize,
    seed: u64,
) -> Result<Vec<SelfTestSample>, InferenceError> {
    let c = model.contract();
    // Training rows feed the named feature input, or the only input.
    let feature = c
        .feature_input()
        .or_else(|| c.sole_input())
        .map(|i| i.name.clone());
    let mut rng = XorShift(seed | 1);
    let mut last_err = None;
    for size in SIZES {
        let shapes = shapes(model, size);
        let mut out = Vec::new();
        for kind in 0..count.max(1) + 3 {
            if out.len() >= count {
                break;
            }
            let inputs: Vec<Tensor> = c
                .inputs
                .iter()
                .zip(&shapes)
                .map(|(i, shape)| {
                    let n: usize = shape.iter().product();
                    let data = match rows.get(kind) {
                        Some(r) if Some(&i.name) == feature.as_ref() && r.len() == n => {
                            cast(r, i.datatype)
                                .unwrap_or_else(|_| values(i.datatype, n, kind, &mut rng))
                        }
                        _ => values(i.datatype, n, kind, &mut rng),
                    };
                    Tensor::new(i.name.clone(), shape.clone(), data)
                })
                .collect::<Result<_, _>>()
                .map_err(|e| InferenceError::Load(e.to_string()))?;
            match model.infer(&inputs, None) {
                Ok(outputs) => out.push(SelfTestSample {
                    inputs,
                    outputs,
                    tolerance: SYNTH_TOLERANCE,
                }),
                Err(e) => last_err = Some(e),
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
    }
    Err(InferenceError::SelfTest {
        index: 0,
        reason: format!(
            "no generated input ran ({}); give self-test samples in the spec",
            last_err.map(|e| e.to_string()).unwrap_or_default()
        ),
    })
}
