//! Our inference path (contract checks + normalisation + model + interpretation +
//! counters) as a ratio of raw tract on the same model, same inputs, same run.
//!
//! `cargo bench -p outpost-agent --bench inference`

use std::sync::Arc;
use std::time::{Duration, Instant};

use outpost_agent::models::ActiveModel;
use outpost_inference::Model;
use outpost_inference::spec;
use outpost_protocol::Digest;
use outpost_protocol::manifest::ModelRef;
use outpost_protocol::wire::InstalledModel;
use tract_onnx::prelude::*;

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
        let (overlay, _) =
            spec::from_toml(&std::fs::read_to_string(dir.join("spec.toml")).unwrap()).unwrap();
        let contract = overlay
            .apply(outpost_inference::contract_from_graph(&onnx).unwrap())
            .unwrap();
        let x: Vec<f32> = (0..input_len).map(|i| (i % 17) as f32 * 0.1).collect();
        let x64: Vec<f64> = x.iter().map(|v| f64::from(*v)).collect();

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
            Model::load(&onnx, &contract).unwrap(),
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
                std::hint::black_box(active.predict(&x64).unwrap());
            },
            min,
        );
        println!("{name:<20} {raw:>14.1} {ours:>16.1} {:>7.2}", ours / raw);
    }
}
