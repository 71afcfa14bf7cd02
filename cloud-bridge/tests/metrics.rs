//! `GET /metrics` on the bridge and on an agent it manages: bearer auth on the bridge,
//! key series moving as a rollout runs and requests are served, and both expositions
//! accepted by `promtool check metrics` (skipped with a reason when promtool is missing,
//! unless `OUTPOST_REQUIRE_PROMTOOL=1`).

mod common;

use std::net::SocketAddr;

use common::harness::*;
use outpost_bridge::auth::{Role, add_token};
use outpost_bridge::fleet::{CreateDeployment, Selector};
use outpost_testkit::prom::{promtool_check, sample};

/// GET `path` on `addr` with an optional bearer token: (status, body).
async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let headers: Vec<(&str, String)> = token
        .map(|t| vec![("Authorization", format!("Bearer {t}"))])
        .unwrap_or_default();
    let r = common::http::request(addr, "GET", path, &headers, b"").await;
    (r.status, r.text())
}

fn check_with_promtool(what: &str, text: &str) {
    match promtool_check(text) {
        Some(verdict) => verdict.unwrap_or_else(|e| panic!("{what}: {e}\n{text}")),
        None => eprintln!("{what}: format not checked by promtool"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bridge_and_agent_series_move_as_a_rollout_runs_and_requests_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(&dir.path().join("bridge"), embedded(false)).await;
    let api = b.http_addr.unwrap();
    let rec = register(&b, "vibration-anomaly", "vib");
    let viewer = add_token(&b.db.lock(), "prometheus", Role::Viewer).unwrap();

    // Same auth as the API.
    let (s, body) = get(api, "/metrics", None).await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("bearer"), "{body}");
    assert_eq!(get(api, "/metrics", Some("opt_not-a-token")).await.0, 401);
    let (s, before) = get(api, "/metrics", Some(&viewer)).await;
    assert_eq!(s, 200, "{before}");
    assert_eq!(
        sample(&before, "outpost_bridge_model_versions", &[]),
        Some(1.0)
    );
    assert_eq!(
        sample(&before, "outpost_bridge_chunks_served_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        sample(&before, "outpost_bridge_broker_connected", &[]),
        Some(1.0)
    );
    assert_eq!(
        sample(&before, "outpost_bridge_broker_oversize_dropped_total", &[]),
        Some(0.0)
    );

    let trust = trust_dir(&b, dir.path());
    let data = dir.path().join("gw-1");
    let a = agent(&agent_toml(&b, "gw-1", &data, &trust, "")).await;
    assert!(
        wait_until(20, || outpost_bridge::devices::show(&b.db.lock(), "gw-1")
            .is_ok_and(|d| d.online && d.state.is_some()))
        .await,
        "the agent never reported"
    );
    let dep = b
        .fleet
        .create(CreateDeployment {
            model: "vib".into(),
            version: None,
            selector: Selector {
                ids: vec!["gw-1".into()],
                tags: vec![],
            },
            strategy: quick_strategy(),
            actor: "test".into(),
            reason: "metrics".into(),
            skip_gates: false,
        })
        .unwrap()
        .id;
    assert!(
        wait_until(60, || b.fleet.show(&dep).unwrap().state == "succeeded").await,
        "{:?}",
        b.fleet.show(&dep).unwrap()
    );
    assert!(
        wait_until(10, || a.models.only().is_some_and(|m| m
            .info
            .bundle
            .to_hex()
            == rec.digest))
        .await
    );

    // The agent: serve requests, and its series move.
    let agent_api = a.http_addr.unwrap();
    let model = [("model", "vib"), ("version", "1")];
    let (s, a0) = get(agent_api, "/metrics", None).await;
    assert_eq!(s, 200);
    let served = |t: &str| sample(t, "outpost_agent_inference_requests_total", &model);
    let n0 = served(&a0).expect("the deployed model has series");
    let body = serde_json::json!({ "inputs": vec![0.2; 16] }).to_string();
    for _ in 0..4 {
        let r = common::http::request(agent_api, "POST", "/v1/predict", &[], body.as_bytes()).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let (_, a1) = get(agent_api, "/metrics", None).await;
    assert_eq!(served(&a1), Some(n0 + 4.0));
    assert!(
        sample(
            &a1,
            "outpost_agent_inference_duration_seconds_count",
            &model
        )
        .unwrap()
            >= 4.0
    );
    assert_eq!(
        sample(
            &a1,
            "outpost_agent_model_update_phase",
            &[("model", "vib"), ("phase", "succeeded")]
        ),
        Some(1.0),
        "{a1}"
    );
    assert_eq!(
        sample(
            &a1,
            "outpost_agent_model_update_phase",
            &[("model", "vib"), ("phase", "downloading")]
        ),
        Some(0.0)
    );
    assert_eq!(sample(&a1, "outpost_agent_link_connected", &[]), Some(1.0));
    check_with_promtool("agent /metrics", &a1);

    // The bridge: the rollout, the chunks it served and the records it ingests.
    let (_, after) = get(api, "/metrics", Some(&viewer)).await;
    let v = |t: &str, name, labels: &[(&str, &str)]| sample(t, name, labels).unwrap_or(-1.0);
    assert_eq!(
        v(&after, "outpost_bridge_devices", &[("presence", "online")]),
        1.0
    );
    assert_eq!(
        v(
            &after,
            "outpost_bridge_deployments",
            &[("state", "succeeded")]
        ),
        1.0
    );
    assert_eq!(
        v(
            &after,
            "outpost_bridge_deployments",
            &[("state", "running")]
        ),
        0.0
    );
    assert!(v(&after, "outpost_bridge_chunks_served_total", &[]) > 0.0);
    assert!(v(&after, "outpost_bridge_chunks_served_bytes_total", &[]) as u64 >= rec.bundle_size);
    assert!(v(&after, "outpost_bridge_device_auth_accepted_total", &[]) > 0.0);
    assert!(v(&after, "outpost_bridge_broker_published_total", &[]) > 0.0);
    assert_eq!(
        v(&after, "outpost_bridge_broker_publish_failures_total", &[]),
        0.0
    );
    assert!(v(&after, "outpost_bridge_gate_connections_active", &[]) >= 2.0);
    let ingested = v(&after, "outpost_bridge_ingest_records_total", &[]);
    // The served answers are captured and synced: the ingest counter moves.
    let mut later = String::new();
    let mut moved = false;
    for _ in 0..80 {
        later = get(api, "/metrics", Some(&viewer)).await.1;
        if v(&later, "outpost_bridge_ingest_records_total", &[]) > ingested {
            moved = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(moved, "ingest never moved past {ingested}:\n{later}");
    assert!(v(&later, "outpost_bridge_ingest_received_bytes_total", &[]) > 0.0);
    assert!(
        v(
            &later,
            "outpost_bridge_http_connections_accepted_total",
            &[("listener", "api")]
        ) >= 4.0
    );
    check_with_promtool("bridge /metrics", &later);

    a.shutdown(std::time::Duration::from_secs(3)).await;
    b.shutdown().await;
}
