//! `GET /metrics` on the local API: the key series move when requests are served, the
//! output passes `promtool check metrics` (both formats' content types are right), and
//! the same series are on the Unix socket.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::http::{request, request_unix};
use outpost_agent::config::AgentConfig;
use outpost_agent::models::ActiveModel;
use outpost_agent::runtime::{self, RunningAgent};
use outpost_inference::Model;
use outpost_protocol::Digest;
use outpost_protocol::manifest::ModelRef;
use outpost_protocol::wire::InstalledModel;
use outpost_testkit::prom::{promtool_check, sample};

/// An agent with no broker (nothing listens on the discard port) and the fixture model
/// made active directly: only the API and its counters matter here.
async fn agent(dir: &Path) -> RunningAgent {
    let (_, trust) = common::keys(dir);
    let toml = format!(
        "device_id = \"gw-metrics\"\ndata_dir = \"{}\"\ntrust_dir = \"{}\"\n\
         [broker]\nurl = \"mqtt://127.0.0.1:9\"\nreconnect_min_ms = 1000\n\
         [api]\nhttp = \"127.0.0.1:0\"\nunix_socket = \"{}\"\n",
        dir.join("data").display(),
        trust.display(),
        dir.join("api.sock").display(),
    );
    let a = runtime::start(AgentConfig::from_toml(&toml).unwrap(), Vec::new())
        .await
        .unwrap();
    let name = "vibration-anomaly";
    let (spec, _) = common::fixture_spec(name);
    a.models.insert(Arc::new(ActiveModel::new(
        Model::load(&common::fixture_onnx(name), &spec).unwrap(),
        InstalledModel {
            bundle: Digest::of(b"fixture"),
            model: ModelRef {
                name: name.into(),
                version: 3,
            },
        },
        None,
    )));
    a
}

const MODEL: [(&str, &str); 2] = [("model", "vibration-anomaly"), ("version", "3")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_series_move_with_requests_and_promtool_accepts_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path()).await;
    let addr = a.http_addr.unwrap();

    let (status, before) = request(addr, "GET", "/metrics", b"").await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(
        sample(&before, "outpost_agent_inference_requests_total", &MODEL),
        Some(0.0),
        "{before}"
    );

    let row: Vec<f64> = (0..16).map(|i| f64::from(i) * 0.1).collect();
    let body = serde_json::json!({ "inputs": row }).to_string();
    for _ in 0..5 {
        let (s, b) = request(addr, "POST", "/v1/predict", body.as_bytes()).await;
        assert_eq!(s, 200, "{b}");
    }
    // A request the contract refuses is the caller's fault: rejected, not an error.
    let (s, b) = request(addr, "POST", "/v1/predict", b"{\"inputs\": [1, 2]}").await;
    assert!((400..500).contains(&s), "{s} {b}");

    let (_, after) = request(addr, "GET", "/metrics", b"").await;
    let v = |name| sample(&after, name, &MODEL);
    assert_eq!(v("outpost_agent_inference_requests_total"), Some(5.0));
    assert_eq!(v("outpost_agent_inference_rejected_total"), Some(1.0));
    assert_eq!(v("outpost_agent_inference_errors_total"), Some(0.0));
    assert_eq!(v("outpost_agent_inference_samples_total"), Some(5.0));
    assert_eq!(
        v("outpost_agent_inference_duration_seconds_count"),
        Some(5.0)
    );
    assert!(v("outpost_agent_inference_duration_seconds_sum").unwrap() > 0.0);
    let inf = [MODEL[0], MODEL[1], ("le", "+Inf")];
    assert_eq!(
        sample(
            &after,
            "outpost_agent_inference_duration_seconds_bucket",
            &inf
        ),
        Some(5.0)
    );
    // No broker: the link is down and failing; the store is there, with its budget.
    assert_eq!(
        sample(&after, "outpost_agent_link_connected", &[]),
        Some(0.0)
    );
    assert!(sample(&after, "outpost_agent_store_budget_bytes", &[]).unwrap() > 0.0);
    assert!(after.contains("# TYPE outpost_agent_sync_lag_seconds gauge"));
    // The scrapes themselves went through the TCP listener.
    assert!(
        sample(
            &after,
            "outpost_agent_http_connections_accepted_total",
            &[("listener", "tcp")]
        )
        .unwrap()
            >= 7.0
    );

    match promtool_check(&after) {
        Some(verdict) => verdict.unwrap(),
        None => eprintln!("(format not checked by promtool)"),
    }

    // The same series on the Unix socket.
    let (s, unix) = request_unix(&dir.path().join("api.sock"), "GET", "/metrics", b"").await;
    assert_eq!(s, 200);
    assert_eq!(
        sample(&unix, "outpost_agent_inference_requests_total", &MODEL),
        Some(5.0)
    );
    a.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openmetrics_is_served_when_the_scraper_prefers_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path()).await;
    let mut s = tokio::net::TcpStream::connect(a.http_addr.unwrap())
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
          Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    assert!(
        buf.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{buf}"
    );
    assert!(buf.trim_end().ends_with("# EOF"), "{buf}");
    let (_, plain) = request(a.http_addr.unwrap(), "GET", "/metrics", b"").await;
    assert!(!plain.contains("# EOF"));
    a.shutdown(std::time::Duration::from_secs(5)).await;
}
