//! `outpost-bridge model inspect FILE.onnx`: what a graph declares and what tract makes of
//! it, before anyone registers it.

use std::path::Path;

use outpost_inference::{Batching, GraphInfo, Model};
use outpost_protocol::contract::{ModelContract, Task};
use serde::Serialize;

use crate::packaging::{PackError, SpecFile, read_capped};

/// The inspection result.
#[derive(Debug, Serialize)]
pub struct InspectReport {
    /// The file.
    pub file: String,
    /// Its size.
    pub size_bytes: usize,
    /// What the graph declares.
    pub graph: GraphInfo,
    /// The contract Outpost would serve (graph + spec), if one could be made.
    pub contract: Option<ModelContract>,
    /// Why no contract could be made.
    pub contract_error: Option<String>,
    /// How tract batches it, when it loads (`symbolic`, `fixed 1`, `unbatched`).
    pub batching: Option<String>,
    /// Why tract cannot run it.
    pub load_error: Option<String>,
}

impl InspectReport {
    /// Whether the model loads and runs.
    pub fn runs(&self) -> bool {
        self.batching.is_some()
    }
}

/// Inspects `path`, applying the spec at `spec` if given.
pub fn inspect_file(path: &Path, spec: Option<&Path>) -> Result<InspectReport, PackError> {
    let onnx = read_capped(path)?;
    let graph = outpost_inference::inspect(&onnx)?;
    let spec = match spec {
        Some(p) => SpecFile::load(p)?,
        None => SpecFile::default(),
    };
    let contract = graph
        .contract
        .clone()
        .and_then(|c| spec.overlay.apply(c).map_err(|e| e.to_string()));
    let (batching, load_error) = match &contract {
        Ok(c) => match Model::load(&onnx, c) {
            Ok(m) => (
                Some(match m.batching() {
                    Batching::Symbolic => "symbolic".to_owned(),
                    Batching::Fixed(b) => format!("fixed {b}"),
                    Batching::Unbatched => "unbatched".to_owned(),
                }),
                None,
            ),
            Err(e) => (None, Some(e.to_string())),
        },
        Err(e) => (None, Some(e.clone())),
    };
    Ok(InspectReport {
        file: path.display().to_string(),
        size_bytes: onnx.len(),
        contract_error: contract.as_ref().err().cloned(),
        contract: contract.ok(),
        graph,
        batching,
        load_error,
    })
}

fn tensor_line(name: &str, datatype: &str, shape: &[i64]) -> String {
    format!("  {name}: {datatype} {shape:?}")
}

/// Human-readable report.
pub fn render(r: &InspectReport) -> String {
    let g = &r.graph;
    let mut s = format!(
        "{} ({} bytes), written by {}\nopsets: {}\n",
        r.file,
        r.size_bytes,
        if g.producer.is_empty() {
            "an unnamed exporter"
        } else {
            &g.producer
        },
        g.opsets
            .iter()
            .map(|(d, v)| format!("{}={v}", if d.is_empty() { "ai.onnx" } else { d }))
            .collect::<Vec<_>>()
            .join(" ")
    );
    s += "operators: ";
    s += &g
        .ops
        .iter()
        .map(|(op, n)| format!("{op}x{n}"))
        .collect::<Vec<_>>()
        .join(" ");
    s += "\n";
    if !g.unsupported.is_empty() {
        s += "tract cannot run these operators:\n";
        for u in &g.unsupported {
            s += &format!(
                "  {} ({}) at node {:?}\n",
                u.op,
                if u.domain.is_empty() {
                    "ai.onnx"
                } else {
                    &u.domain
                },
                u.node
            );
        }
    }
    match &r.contract {
        Some(c) => {
            s += "inputs:\n";
            for i in &c.inputs {
                s += &tensor_line(&i.name, i.datatype.as_str(), &i.tensor().oip_shape());
                if !i.features.is_empty() {
                    s += &format!(" features {:?}", i.features);
                }
                s += "\n";
            }
            s += "outputs:\n";
            for o in &c.outputs {
                s += &tensor_line(&o.name, o.datatype.as_str(), &o.tensor().oip_shape());
                s += "\n";
            }
            s += &match &c.task {
                Task::Classification(t) => format!(
                    "task: classification of {:?} into {:?}\n",
                    t.output, t.labels
                ),
                Task::Regression(t) => format!("task: regression on {:?}\n", t.output),
                Task::AnomalyScore(t) => format!(
                    "task: anomaly score {:?} (threshold {}, {:?})\n",
                    t.output, t.threshold, t.direction
                ),
                Task::Raw => "task: raw (tensors in, tensors out)\n".into(),
            };
        }
        None => {
            s += &format!(
                "no contract: {}\n",
                r.contract_error.as_deref().unwrap_or("unknown")
            )
        }
    }
    s += &match (&r.batching, &r.load_error) {
        (Some(b), _) => format!("tract: loads and runs (batch: {b})"),
        (None, Some(e)) => format!("tract: does not run it: {e}"),
        (None, None) => "tract: not tried".into(),
    };
    s
}
