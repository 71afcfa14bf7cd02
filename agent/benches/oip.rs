//! The Open Inference Protocol over HTTP against the in-process engine, same model, same
//! inputs, same run: per-request latency (p50/p99, one keep-alive client) for JSON and
//! binary tensors, and requests/s with 1 and 8 keep-alive clients.
//!
//! `cargo bench -p outpost-agent --bench oip`
//!
//! The clients are hyper HTTP/1.1 connections on loopback; the server is the agent's real
//! router (axum) on a real TCP listener. "Added" is the OIP p50 minus the engine's p50.
//! A second baseline, the HTTP floor, is an axum route on the same server that reads the
//! same body and answers a fixed small JSON: what loopback HTTP/1.1 costs on this machine
//! before any inference work. "OIP layer" = OIP p50 − floor p50 − engine p50.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use outpost_agent::api::{ApiState, router};
use outpost_agent::models::{ActiveModel, ModelHandle};
use outpost_inference::{Model, spec};
use outpost_protocol::Digest;
use outpost_protocol::manifest::ModelRef;
use outpost_protocol::tensor::{Tensor, TensorData};
use outpost_protocol::wire::InstalledModel;

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

struct Body {
    bytes: Vec<u8>,
    header_len: Option<usize>,
}

fn json_body(x: &[f32]) -> Body {
    Body {
        bytes: serde_json::to_vec(&serde_json::json!({
            "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 16], "data": x}]
        }))
        .unwrap(),
        header_len: None,
    }
}

fn binary_body(x: &[f32]) -> Body {
    let bin: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut bytes = serde_json::to_vec(&serde_json::json!({
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 16],
                    "parameters": {"binary_data_size": bin.len()}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": true}}]
    }))
    .unwrap();
    let n = bytes.len();
    bytes.extend_from_slice(&bin);
    Body {
        bytes,
        header_len: Some(n),
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Sender {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let io = hyper_util::rt::TokioIo::new(s);
    let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    sender
}

async fn send(s: &mut Sender, body: &Body) {
    send_to(s, body, "/v2/models/vibration/infer").await
}

async fn send_to(s: &mut Sender, body: &Body, path: &str) {
    let mut req = Request::post(path)
        .header("host", "localhost")
        .header("content-type", "application/json");
    if let Some(n) = body.header_len {
        req = req.header("inference-header-content-length", n);
    }
    let req = req
        .body(Full::new(Bytes::from(body.bytes.clone())))
        .unwrap();
    // An HTTP/1.1 connection takes the next request only once it has finished the last.
    s.ready().await.unwrap();
    let resp = s.send_request(req).await.unwrap();
    let status = resp.status();
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
    std::hint::black_box(b);
}

async fn latencies(addr: SocketAddr, body: &Body, n: usize, path: &str) -> Vec<f64> {
    let mut s = connect(addr).await;
    for _ in 0..200 {
        send_to(&mut s, body, path).await;
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        send_to(&mut s, body, path).await;
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    out
}

async fn throughput(addr: SocketAddr, body: Arc<Body>, clients: usize, dur: Duration) -> f64 {
    let end = Instant::now() + dur;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = connect(addr).await;
            let mut n = 0u64;
            while Instant::now() < end {
                send(&mut s, &body).await;
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / dur.as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/vibration-anomaly");
    let onnx = std::fs::read(dir.join("model.onnx")).unwrap();
    let (overlay, _) =
        spec::from_toml(&std::fs::read_to_string(dir.join("spec.toml")).unwrap()).unwrap();
    let contract = overlay
        .apply(outpost_inference::contract_from_graph(&onnx).unwrap())
        .unwrap();
    let active = Arc::new(ActiveModel::new(
        Model::load(&onnx, &contract).unwrap(),
        InstalledModel {
            bundle: Digest::of(b"bench"),
            model: ModelRef {
                name: "vibration".into(),
                version: 1,
            },
        },
        None,
    ));
    let x: Vec<f32> = (0..16).map(|i| (i % 17) as f32 * 0.1).collect();
    let t = Tensor::new("features", vec![1, 16], TensorData::Fp32(x.clone())).unwrap();

    // The engine alone: the same call the handler makes.
    for _ in 0..1000 {
        std::hint::black_box(active.score(vec![t.clone()]).unwrap());
    }
    let mut engine: Vec<f64> = (0..20_000)
        .map(|_| {
            let s = Instant::now();
            std::hint::black_box(active.score(vec![t.clone()]).unwrap());
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    let (e50, e99) = (quantile(&mut engine, 0.5), quantile(&mut engine, 0.99));

    let models = ModelHandle::default();
    models.insert(active);
    let addr = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let floor = axum::Router::new().route(
            "/floor",
            axum::routing::post(|b: Bytes| async move {
                std::hint::black_box(b);
                axum::Json(serde_json::json!({"ok": true}))
            }),
        );
        let app = router(ApiState::new(models, 8 << 20, None)).merge(floor);
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        addr
    });
    println!("engine (in process): p50 {e50:.1} µs, p99 {e99:.1} µs");
    println!(
        "{:<8} {:>9} {:>9} {:>11} {:>10} {:>10} {:>12} {:>12}",
        "body",
        "p50 µs",
        "p99 µs",
        "added p50",
        "floor p50",
        "OIP layer",
        "1 client/s",
        "8 clients/s"
    );
    for (name, body) in [("json", json_body(&x)), ("binary", binary_body(&x))] {
        let body = Arc::new(body);
        let mut l = rt.block_on(latencies(addr, &body, 20_000, "/v2/models/vibration/infer"));
        let (p50, p99) = (quantile(&mut l, 0.5), quantile(&mut l, 0.99));
        let mut f = rt.block_on(latencies(addr, &body, 20_000, "/floor"));
        let floor = quantile(&mut f, 0.5);
        let one = rt.block_on(throughput(addr, body.clone(), 1, Duration::from_secs(3)));
        let eight = rt.block_on(throughput(addr, body.clone(), 8, Duration::from_secs(3)));
        println!(
            "{name:<8} {p50:>9.1} {p99:>9.1} {:>11.1} {floor:>10.1} {:>10.1} {one:>12.0} {eight:>12.0}",
            p50 - e50,
            p50 - floor - e50
        );
    }
}
