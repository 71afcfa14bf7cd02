//! Our inference path (spec normalisation + model + interpretation + counters) as a ratio
//! of raw tract on the same model, same inputs, same run.
//!
//! `cargo bench -p outpost-agent --bench inference`

use std::sync::Arc;
use std::time::{Duration, Instant};

use outpost_agent::inference::{ActiveModel, Model};
use outpost_protocol::Digest;
use outpost_protocol::manifest::ModelRef;
use outpost_protocol::spec::{InputSpec, OutputSpec, ScoringSpec};
use outpost_protocol::wire::InstalledModel;
use serde::Deserialize;
use tract_onnx::prelude::*;

#[derive(Deserialize)]
struct SpecToml {
    input: InputSpec,
    output: OutputSpec,
}

fn time(mut f: impl FnMut(), min: Duration) -> f64 {
    for _ in 0..50 {
        f();
    }
    let (mut n, t) = (0u64, Instant::now());
    while t.elapsed() < min {
        for _ in 0..100 {
            f();
        }
        n += 100;
    }
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn main() {
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    println!(
        "{:<20} {:>14} {:>16} {:>7}",
        "model", "raw tract µs", "outpost path µs", "ratio"
    );
    for (name, input_len, shape) in [
        ("vibration-anomaly", 16usize, vec![1usize, 16]),
        ("vibration-cnn", 3072, vec![1, 3, 1024]),
    ] {
        let dir = models.join(name);
        let onnx = std::fs::read(dir.join("model.onnx")).unwrap();
        let st: SpecToml =
            toml::from_str(&std::fs::read_to_string(dir.join("spec.toml")).unwrap()).unwrap();
        let spec = ScoringSpec {
            input: st.input,
            output: st.output,
            drift: None,
        };
        let x: Vec<f32> = (0..input_len).map(|i| (i % 17) as f32 * 0.1).collect();

        let plan = tract_onnx::onnx()
            .model_for_read(&mut &onnx[..])
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let min = Duration::from_secs(2);
        let raw = time(
            || {
                let t = tract_ndarray::ArrayD::from_shape_vec(shape.clone(), x.clone()).unwrap();
                let out = plan.run(tvec![Tensor::from(t).into()]).unwrap();
                std::hint::black_box(out);
            },
            min,
        );
        let active = Arc::new(ActiveModel::new(
            Model::load(&onnx, &spec).unwrap(),
            InstalledModel {
                bundle: Digest::of(b"bench"),
                model: ModelRef {
                    name: name.into(),
                    version: 1,
                },
            },
            None,
        ));
        let ours = time(
            || {
                std::hint::black_box(active.predict(&x).unwrap());
            },
            min,
        );
        println!("{name:<20} {raw:>14.1} {ours:>16.1} {:>7.2}", ours / raw);
    }
}
