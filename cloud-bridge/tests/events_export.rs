//! Events reach the MQTT event topic and webhooks (with retries). Capture exports are
//! tested in `export_captures.rs`.

mod common;

use std::time::Duration;

use common::harness::*;
use outpost_bridge::server::{self, ServeConfig};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use common::webhook::{Hook, receiver_failing};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_go_to_the_event_topic_and_to_webhooks_with_retries() {
    let (url, got) = receiver_failing(2, "deployment_created").await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServeConfig::new(dir.path().to_path_buf());
    cfg.broker = embedded(false);
    cfg.http = None;
    cfg.webhooks = vec![url.clone()];
    let b = server::start(cfg).await.unwrap();
    assert!(wait_until(20, || *b.connected.borrow()).await);
    register(&b, "vibration-anomaly", "vib");

    let mut o = MqttOptions::new("listener", b.broker.0.clone(), b.broker.1);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(o, 64);
    client
        .subscribe("outpost/v1/events/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    // Wait for the subscription to be in place.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(Event::Incoming(Packet::SubAck(_))) = el.poll().await {
                break;
            }
        }
    })
    .await;
    outpost_bridge::devices::ensure(&b.db.lock(), &b.audit, "gw-ev", &Default::default()).unwrap();
    b.fleet
        .create(outpost_bridge::fleet::CreateDeployment {
            model: "vib".into(),
            version: None,
            selector: outpost_bridge::fleet::Selector {
                ids: vec!["gw-ev".into()],
                tags: vec![],
            },
            strategy: quick_strategy(),
            actor: "test".into(),
            reason: "events".into(),
            skip_gates: false,
        })
        .unwrap();

    let mut topics = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while !topics
            .iter()
            .any(|t: &String| t.ends_with("deployment_created"))
        {
            if let Ok(Event::Incoming(Packet::Publish(p))) = el.poll().await {
                let ev: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                assert!(ev["message"].as_str().is_some() && ev["at"].as_u64().is_some());
                topics.push(p.topic);
            }
        }
    })
    .await;
    assert!(
        topics
            .iter()
            .any(|t| t == "outpost/v1/events/deployment_created"),
        "{topics:?}"
    );

    // The webhook failed twice, then took it: three POSTs of the same event (other
    // events may be delivered in between).
    let created = || -> Vec<Hook> {
        let g = got.lock().unwrap();
        g.iter()
            .filter(|h| h.1.contains("deployment_created"))
            .cloned()
            .collect()
    };
    assert!(
        wait_until(20, || created().len() >= 3).await,
        "{} webhook calls",
        got.lock().unwrap().len()
    );
    let hooks = created();
    assert!(hooks[0].1 == hooks[2].1, "{hooks:?}");

    // Signed per Standard Webhooks with the bridge's secret: the same webhook-id on every
    // retry, a fresh timestamp, v1 = base64(HMAC-SHA256(key, "{id}.{ts}.{body}")).
    use base64::Engine;
    let secret = std::fs::read_to_string(dir.path().join("webhook.secret")).unwrap();
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim().strip_prefix("whsec_").unwrap())
        .unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let header = |h: &Hook, name: &str| {
        h.0.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} header: {:?}", h.0))
    };
    let now = outpost_bridge::db::now();
    for h in &hooks[..3] {
        assert_eq!(header(h, "webhook-id"), header(&hooks[0], "webhook-id"));
        let ts: u64 = header(h, "webhook-timestamp").parse().unwrap();
        assert!(ts.abs_diff(now) < 120, "timestamp {ts} vs now {now}");
        let mac = ring::hmac::sign(
            &key,
            format!("{}.{ts}.{}", header(h, "webhook-id"), h.1).as_bytes(),
        );
        let want = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.as_ref())
        );
        assert!(
            header(h, "webhook-signature").split(' ').any(|s| s == want),
            "signature does not verify"
        );
    }
    let (attempts, delivered): (i64, i64) =
        b.db.lock()
            .query_row(
                "SELECT attempts, delivered FROM outbox WHERE body LIKE '%deployment_created%'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
    assert_eq!((attempts, delivered), (3, 1));
    b.shutdown().await;
}
