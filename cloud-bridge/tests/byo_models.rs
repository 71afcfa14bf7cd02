//! Bring your own model, end to end: files written by real exporters (skl2onnx with
//! default options, a CNN with dynamic height and width) are registered unmodified with no
//! spec or a labels-only spec, rolled out to an agent over a real broker, and answer
//! through the Open Inference Protocol (`/v2/models/{name}/infer`, JSON and binary
//! tensors) like onnxruntime within 1e-4.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::harness::*;
use common::http;
use outpost_bridge::fleet::{CreateDeployment, Selector};
use outpost_bridge::registry::{self, RegisterRequest};
use outpost_bridge::server::Bridge;
use serde_json::{Value, json};

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn register_file(b: &Bridge, onnx: &Path, name: &str, spec: Option<PathBuf>) -> String {
    let req = RegisterRequest {
        name: name.into(),
        files: vec![onnx.to_path_buf()],
        spec,
        created_by: "test".into(),
        reason: "bring your own model".into(),
        chunk_size: Some(16 * 1024),
        ..Default::default()
    };
    registry::register(&mut b.db.lock(), &b.audit, b.bundles.as_ref(), &b.key, req)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .0
        .digest
}

async fn deploy_and_wait(
    b: &Bridge,
    agent: &outpost_agent::runtime::RunningAgent,
    name: &str,
    digest: &str,
) {
    let d = b
        .fleet
        .create(CreateDeployment {
            model: name.into(),
            version: None,
            selector: Selector {
                ids: vec!["gw-byo".into()],
                tags: vec![],
            },
            strategy: quick_strategy(),
            actor: "test".into(),
            reason: "byo".into(),
            skip_gates: false,
        })
        .unwrap();
    assert!(
        wait_until(60, || agent.models.get(name).is_some_and(|m| m
            .info
            .bundle
            .to_hex()
            == digest))
        .await,
        "{name} never became active"
    );
    assert!(
        wait_until(30, || b.fleet.show(&d.id).unwrap().state == "succeeded").await,
        "{name}: deployment did not succeed: {:?}",
        b.fleet.show(&d.id).unwrap().detail
    );
}

/// The reference's inputs for one case as OIP JSON tensors.
fn oip_inputs(reference: &Value, case: &Value) -> Vec<Value> {
    reference["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let name = i["name"].as_str().unwrap();
            let dt = match i["dtype"].as_str().unwrap() {
                "int64" => "INT64",
                _ => "FP32",
            };
            let v = &case["inputs"][name];
            json!({"name": name, "datatype": dt, "shape": v["shape"], "data": v["data"]})
        })
        .collect()
}

fn assert_close(what: &str, got: &Value, want: &Value) {
    let (g, w) = (got.as_array().unwrap(), want.as_array().unwrap());
    assert_eq!(g.len(), w.len(), "{what}: length");
    for (i, (g, w)) in g.iter().zip(w).enumerate() {
        match (g.as_f64(), w.as_f64()) {
            (Some(g), Some(w)) => assert!(
                (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                "{what}[{i}]: agent {g} vs onnxruntime {w}"
            ),
            _ => assert_eq!(g, w, "{what}[{i}]"),
        }
    }
}

async fn check_sklearn(api: std::net::SocketAddr, name: &str, fixture: &str) {
    let reference: Value = serde_json::from_slice(
        &std::fs::read(
            models()
                .join("sklearn")
                .join(fixture)
                .join("reference.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let meta = http::get(api, &format!("/v2/models/{name}")).await;
    assert_eq!(meta.status, 200, "{}", meta.text());
    let meta = meta.json();
    assert_eq!(
        meta["inputs"].as_array().unwrap().len(),
        reference["inputs"].as_array().unwrap().len()
    );
    for case in reference["cases"].as_array().unwrap() {
        let r = http::post_json(
            api,
            &format!("/v2/models/{name}/infer"),
            &json!({"id": "req-1", "inputs": oip_inputs(&reference, case)}),
        )
        .await;
        assert_eq!(r.status, 200, "{fixture}: {}", r.text());
        let body = r.json();
        assert_eq!(body["id"], "req-1", "id echo");
        assert_eq!(body["model_name"], name);
        for o in reference["outputs"].as_array().unwrap() {
            let oname = o["name"].as_str().unwrap();
            let got = body["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["name"] == oname)
                .unwrap_or_else(|| panic!("{fixture}: no output {oname}"));
            assert_eq!(
                got["shape"], case["outputs"][oname]["shape"],
                "{fixture} {oname}"
            );
            assert_close(
                &format!("{fixture} {oname}"),
                &got["data"],
                &case["outputs"][oname]["data"],
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exported_models_register_unmodified_and_serve_over_oip() {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(&dir.path().join("bridge"), embedded(false)).await;
    let trust = trust_dir(&b, dir.path());
    let agent = agent(&agent_toml(
        &b,
        "gw-byo",
        &dir.path().join("gw"),
        &trust,
        "",
    ))
    .await;
    let api = agent.http_addr.unwrap();
    assert!(
        wait_until(30, || outpost_bridge::devices::show(&b.db.lock(), "gw-byo")
            .is_ok())
        .await
    );
    let spec = |name: &str, body: &str| {
        let p = dir.path().join(format!("{name}.toml"));
        std::fs::write(&p, body).unwrap();
        Some(p)
    };
    // (registry name, fixture, spec): no spec, or only what the graph cannot know.
    let cases: Vec<(&str, &str, Option<PathBuf>)> = vec![
        ("logreg", "logistic_regression_multiclass", None),
        ("forest", "random_forest_classifier", None),
        ("boost-binary", "gradient_boosting_classifier_binary", None),
        (
            "boost-multi",
            "gradient_boosting_classifier_multiclass",
            spec(
                "labels",
                "[task]\nkind = \"classification\"\nlabels = [\"setosa\", \"versicolor\", \"virginica\"]\n",
            ),
        ),
        (
            "diabetes",
            "random_forest_regressor",
            spec(
                "regression",
                "[task]\nkind = \"regression\"\nunit = \"progression\"\n",
            ),
        ),
        ("isolation", "isolation_forest_mlopset3", None),
        ("scaler-mlp", "pipeline_scaler_mlp", None),
        ("two-inputs", "column_transformer_logreg", None),
    ];
    for (name, fixture, spec) in cases {
        let onnx = models().join("sklearn").join(fixture).join("model.onnx");
        let digest = register_file(&b, &onnx, name, spec);
        deploy_and_wait(&b, &agent, name, &digest).await;
        check_sklearn(api, name, fixture).await;
        if name == "boost-multi" {
            // The labels-only spec named the classes.
            let r = http::get(api, "/v1/model?model=boost-multi").await;
            assert_eq!(r.json()["contract"]["task"]["labels"][2], "virginica");
        }
    }

    // A CNN with dynamic height and width, with binary tensors both ways.
    let cnn = models().join("cnn-dynamic/model.onnx");
    let digest = register_file(&b, &cnn, "cnn", None);
    deploy_and_wait(&b, &agent, "cnn", &digest).await;
    let reference: Value = serde_json::from_slice(
        &std::fs::read(models().join("cnn-dynamic/reference.json")).unwrap(),
    )
    .unwrap();
    for case in reference["cases"].as_array().unwrap() {
        let input: Vec<f32> = case["input"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let bin: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
        let header = serde_json::to_vec(&json!({
            "inputs": [{"name": "image", "datatype": "FP32", "shape": case["shape"],
                        "parameters": {"binary_data_size": bin.len()}}],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": true}}]
        }))
        .unwrap();
        let mut body = header.clone();
        body.extend_from_slice(&bin);
        let r = http::request(
            api,
            "POST",
            "/v2/models/cnn/infer",
            &[
                ("Content-Type", "application/octet-stream".into()),
                ("Inference-Header-Content-Length", header.len().to_string()),
            ],
            &body,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let n: usize = r
            .header("Inference-Header-Content-Length")
            .expect("binary response")
            .parse()
            .unwrap();
        let head: Value = serde_json::from_slice(&r.body[..n]).unwrap();
        assert_eq!(head["outputs"][0]["shape"], case["output_shape"]);
        let got: Vec<f32> = r.body[n..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let want: Vec<f32> = case["output"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-4, "cnn: {g} vs {w}");
        }
    }
    agent.shutdown(Duration::from_secs(5)).await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_to_a_fixed_batch_graph_is_split_and_clients_cannot_roll_a_model_back() {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(&dir.path().join("bridge"), embedded(false)).await;
    let trust = trust_dir(&b, dir.path());
    // A long health window: requests below arrive during probation.
    let toml = agent_toml(&b, "gw-byo", &dir.path().join("gw"), &trust, "").replace(
        "health_secs = 1\nhealth_inferences = 3",
        "health_secs = 20\nhealth_inferences = 1000",
    );
    assert!(toml.contains("health_secs = 20"));
    let agent = agent(&toml).await;
    let api = agent.http_addr.unwrap();
    assert!(
        wait_until(30, || outpost_bridge::devices::show(&b.db.lock(), "gw-byo")
            .is_ok())
        .await
    );
    let onnx = models().join("fixed-batch/model.onnx");
    let digest = register_file(&b, &onnx, "fixed", None);
    let d = b
        .fleet
        .create(CreateDeployment {
            model: "fixed".into(),
            version: None,
            selector: Selector {
                ids: vec!["gw-byo".into()],
                tags: vec![],
            },
            strategy: quick_strategy(),
            actor: "test".into(),
            reason: "fixed batch".into(),
            skip_gates: false,
        })
        .unwrap();
    assert!(
        wait_until(60, || agent.models.get("fixed").is_some_and(|m| m
            .info
            .bundle
            .to_hex()
            == digest))
        .await
    );
    let reference: Value = serde_json::from_slice(
        &std::fs::read(models().join("fixed-batch/reference.json")).unwrap(),
    )
    .unwrap();
    let rows: Vec<Value> = reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["input"].as_array().unwrap().clone())
        .collect();
    // Four samples in one request to a graph that takes one: answered, in order.
    let r = http::post_json(
        api,
        "/v2/models/fixed/infer",
        &json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [4, 16], "data": rows}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let want: Vec<Value> = reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["output"].as_array().unwrap().clone())
        .collect();
    assert_close(
        "split batch",
        &r.json()["outputs"][0]["data"],
        &Value::Array(want),
    );
    // Hostile requests during probation: all 4xx, none held against the model.
    let hostile = [
        json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 16], "data": vec![3.4e38; 16]}]}),
        json!({"inputs": [{"name": "features", "datatype": "FP64", "shape": [1, 16], "data": vec![0.0; 16]}]}),
        json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 15], "data": vec![0.0; 15]}]}),
        json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [2000, 16], "data": vec![0.0; 32000]}]}),
        json!({"inputs": [{"name": "nope", "datatype": "FP32", "shape": [1, 16], "data": vec![0.0; 16]}]}),
        json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 16], "data": vec![0.0; 3]}]}),
        json!({"inputs": []}),
        json!({"wrong": true}),
    ];
    for h in &hostile {
        let r = http::post_json(api, "/v2/models/fixed/infer", h).await;
        assert!(
            (400..500).contains(&r.status),
            "{h}: {} {}",
            r.status,
            r.text()
        );
        assert!(r.json()["error"].is_string(), "OIP error body");
    }
    let stats = agent.models.get("fixed").unwrap().stats.snapshot();
    assert_eq!(
        stats.errors, 0,
        "no client request counts as a model failure"
    );
    assert!(stats.rejected >= hostile.len() as u64 - 2, "{stats:?}");
    // Probation ends by time with the model still active: nothing rolled it back.
    assert!(
        wait_until(60, || b.fleet.show(&d.id).unwrap().state == "succeeded").await,
        "{:?}",
        b.fleet.show(&d.id).unwrap().detail
    );
    assert_eq!(
        agent.models.get("fixed").unwrap().info.bundle.to_hex(),
        digest
    );
    // Unknown model and version: 404s.
    assert_eq!(http::get(api, "/v2/models/other").await.status, 404);
    assert_eq!(
        http::get(api, "/v2/models/fixed/versions/9").await.status,
        404
    );
    assert_eq!(
        http::get(api, "/v2/models/fixed/versions/1/ready")
            .await
            .status,
        200
    );
    agent.shutdown(Duration::from_secs(5)).await;
    b.shutdown().await;
}
