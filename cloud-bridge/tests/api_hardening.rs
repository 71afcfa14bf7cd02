//! The operator API under slow headers and connection floods (an operator keeps getting
//! answers), unknown ids on every kind of route (404, never 500), and strings over their
//! caps (400 naming the field and the cap, from the API and the CLI alike).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::harness::*;
use outpost_bridge::auth::{Role, add_token};
use outpost_bridge::server::{self, Bridge, ServeConfig};
use outpost_net::HttpLimits;
use outpost_net::testing::{
    closed_within, eventually, flood_size, get_status, held_sockets, silent_tcp, slow_tcp,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A bridge on free ports with these API limits.
async fn bridge_with(dir: &Path, limits: HttpLimits) -> Bridge {
    let mut cfg = ServeConfig::new(dir.to_path_buf());
    cfg.broker = embedded(false);
    cfg.http = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.http_limits = limits;
    let b = server::start(cfg).await.unwrap();
    // Settled: the bridge's own connections are open before descriptors are counted.
    assert!(wait_until(20, || *b.connected.borrow()).await);
    b
}

/// One request; the status and the JSON body (or the text as a JSON string). A server
/// that answers before reading the whole body (413) is fine.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{auth}Connection: close\r\n\r\n",
        body.len()
    );
    if s.write_all(head.as_bytes()).await.is_ok() {
        let _ = s.write_all(body).await;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (
        status,
        serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned())),
    )
}

fn error(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no JSON error: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_do_not_keep_operators_from_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let header = Duration::from_millis(2000);
    let b = bridge_with(
        dir.path(),
        HttpLimits {
            max_connections: 64,
            header_read_timeout: header,
            ..Default::default()
        },
    )
    .await;
    let addr = b.http_addr.unwrap();
    let viewer = add_token(&b.db.lock(), "v", Role::Viewer).unwrap();
    let t0 = Instant::now();
    let mut slow = slow_tcp(addr, 32).await;
    let (s, v) = call(addr, "GET", "/v1/health", None, b"").await;
    assert_eq!((s, &v["status"]), (200, &json!("ok")));
    assert!(t0.elapsed() < header, "waited {:?}", t0.elapsed());
    for c in &mut slow {
        assert!(closed_within(c, Duration::from_secs(5)).await);
    }
    assert!(t0.elapsed() >= header, "slow clients were cut early");
    assert!(
        eventually(Duration::from_secs(2), || b
            .http_conns
            .snapshot()
            .header_timeouts
            == 32)
        .await
    );
    // The counters are on /v1/stats too.
    let (s, stats) = call(addr, "GET", "/v1/stats", Some(&viewer), b"").await;
    assert_eq!(s, 200, "{stats}");
    assert_eq!(stats["http"]["header_timeouts"], 32, "{stats}");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_flood_does_not_make_the_api_unresponsive() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 64;
    // The default header timeout (10 s): operators must not have to wait for it.
    let b = bridge_with(
        dir.path(),
        HttpLimits {
            max_connections: cap,
            ..Default::default()
        },
    )
    .await;
    let addr = b.http_addr.unwrap();
    let flood = flood_size(1_100, cap);
    let half_open = silent_tcp(addr, flood).await;
    assert!(
        eventually(Duration::from_secs(10), || {
            let c = b.http_conns.snapshot();
            c.accepted + c.refused == flood as u64
        })
        .await,
        "{:?}",
        b.http_conns.snapshot()
    );
    assert!(b.http_conns.snapshot().open <= cap as u64);
    // Every socket the API holds is a descriptor of this process: the silent ones fill the
    // cap, the rest were closed.
    if let Some(held) = held_sockets(addr.port()) {
        assert_eq!(held, cap, "sockets held open");
    }
    let t0 = Instant::now();
    let mut status = None;
    while status != Some(200) && t0.elapsed() < Duration::from_secs(5) {
        status = get_status(TcpStream::connect(addr).await.unwrap(), "/v1/health").await;
    }
    assert_eq!(status, Some(200), "{:?}", b.http_conns.snapshot());
    assert!(held_sockets(addr.port()).is_none_or(|held| held <= cap));
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "answered after {:?}",
        t0.elapsed()
    );
    drop(half_open);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_404_on_every_kind_of_route() {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(dir.path(), embedded(false)).await;
    register(&b, "vibration-anomaly", "vib");
    let addr = b.http_addr.unwrap();
    let (viewer, operator, admin) = {
        let c = b.db.lock();
        (
            add_token(&c, "v", Role::Viewer).unwrap(),
            add_token(&c, "o", Role::Operator).unwrap(),
            add_token(&c, "a", Role::Admin).unwrap(),
        )
    };
    let (s, v) = call(
        addr,
        "POST",
        "/v1/devices",
        Some(&admin),
        br#"{"id":"gw-1"}"#,
    )
    .await;
    assert_eq!(s, 201, "{v}");

    let cases: &[(&str, &str, &str, &[u8])] = &[
        ("GET", "/v1/models/nope/1", &viewer, b""),
        ("GET", "/v1/models/nope/latest", &viewer, b""),
        ("GET", "/v1/models/vib/99", &viewer, b""),
        ("GET", "/v1/models/bad%2Fname/1", &viewer, b""),
        ("DELETE", "/v1/models/nope/1", &operator, b""),
        ("DELETE", "/v1/models/vib/99", &operator, b""),
        ("GET", "/v1/devices/ghost", &viewer, b""),
        ("GET", "/v1/devices/bad.id%2F", &viewer, b""),
        ("GET", "/v1/deployments/dep-999", &viewer, b""),
        ("GET", "/v1/deployments/nonsense", &viewer, b""),
        ("POST", "/v1/deployments/dep-999/pause", &operator, b""),
        ("POST", "/v1/deployments/dep-999/resume", &operator, b""),
        (
            "POST",
            "/v1/deployments/dep-999/abort",
            &operator,
            br#"{"reason":"x"}"#,
        ),
        ("POST", "/v1/deployments/dep-999/rollback", &operator, b""),
        (
            "POST",
            "/v1/deployments",
            &operator,
            br#"{"model":"nope","devices":["gw-1"]}"#,
        ),
        (
            "POST",
            "/v1/deployments",
            &operator,
            br#"{"model":"vib","version":99,"devices":["gw-1"]}"#,
        ),
        (
            "POST",
            "/v1/deployments",
            &operator,
            br#"{"model":"vib","devices":["ghost"]}"#,
        ),
        ("GET", "/v1/drift?deployment=dep-999", &viewer, b""),
        ("GET", "/v1/no-such-route", &viewer, b""),
    ];
    for (method, path, token, body) in cases {
        let (s, v) = call(addr, method, path, Some(token), body).await;
        assert_eq!(s, 404, "{method} {path}: {v}");
        assert!(!error(&v).is_empty(), "{method} {path}");
    }
    // The same routes answer for what exists.
    let (s, dep) = call(
        addr,
        "POST",
        "/v1/deployments",
        Some(&operator),
        br#"{"model":"vib","devices":["gw-1"]}"#,
    )
    .await;
    assert_eq!(s, 201, "{dep}");
    let id = dep["id"].as_str().unwrap();
    for path in [
        "/v1/models/vib/1".to_owned(),
        "/v1/devices/gw-1".to_owned(),
        format!("/v1/deployments/{id}"),
    ] {
        assert_eq!(call(addr, "GET", &path, Some(&viewer), b"").await.0, 200);
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strings_over_their_caps_are_400_naming_the_field_and_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(dir.path(), embedded(false)).await;
    register(&b, "vibration-anomaly", "vib");
    let addr = b.http_addr.unwrap();
    let (viewer, operator, admin) = {
        let c = b.db.lock();
        (
            add_token(&c, "v", Role::Viewer).unwrap(),
            add_token(&c, "o", Role::Operator).unwrap(),
            add_token(&c, "a", Role::Admin).unwrap(),
        )
    };
    let long = |n: usize| "x".repeat(n);
    let many_tags: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
    let bodies: Vec<(&str, &str, Value, &str)> = vec![
        (
            "/v1/devices",
            &admin,
            json!({"id": "gw-1", "tags": many_tags}),
            "tags has 65 entries; at most 64",
        ),
        (
            "/v1/devices",
            &admin,
            json!({"id": "gw-1", "tags": {"site": long(257)}}),
            "tags \"site\" is 257 bytes; at most 256",
        ),
        (
            "/v1/devices",
            &admin,
            json!({"id": "gw-1", "tags": {long(129): "v"}}),
            "is 129 bytes; at most 128",
        ),
        (
            "/v1/devices",
            &admin,
            json!({"id": long(65)}),
            "device id is 65 bytes; at most 64",
        ),
        (
            "/v1/devices",
            &admin,
            json!({"id": "gw-1", "target": long(129)}),
            "target is 129 bytes; at most 128",
        ),
        (
            "/v1/deployments",
            &operator,
            json!({"model": "vib", "devices": ["gw-1"], "reason": long(1025)}),
            "reason is 1025 bytes; at most 1024",
        ),
        (
            "/v1/deployments",
            &operator,
            json!({"model": long(129), "devices": ["gw-1"]}),
            "model is 129 bytes; at most 128",
        ),
        (
            "/v1/deployments",
            &operator,
            json!({"model": "vib", "tags": {"site": long(257)}}),
            "at most 256",
        ),
    ];
    for (path, token, body, want) in &bodies {
        let (s, v) = call(addr, "POST", path, Some(token), body.to_string().as_bytes()).await;
        assert_eq!(s, 400, "{path} {want}: {v}");
        assert!(error(&v).contains(want), "{path}: {v} should say {want:?}");
    }
    // Nothing was created by the refused requests.
    assert_eq!(
        call(addr, "GET", "/v1/devices", Some(&viewer), b"").await.1,
        json!([])
    );

    let (s, v) = call(
        addr,
        "POST",
        "/v1/devices",
        Some(&admin),
        br#"{"id":"gw-1"}"#,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, dep) = call(
        addr,
        "POST",
        "/v1/deployments",
        Some(&operator),
        br#"{"model":"vib","devices":["gw-1"]}"#,
    )
    .await;
    assert_eq!(s, 201, "{dep}");
    let id = dep["id"].as_str().unwrap();
    let reason = json!({"reason": long(1025)}).to_string();
    let (s, v) = call(
        addr,
        "POST",
        &format!("/v1/deployments/{id}/pause"),
        Some(&operator),
        reason.as_bytes(),
    )
    .await;
    assert_eq!(
        (s, error(&v)),
        (400, "reason is 1025 bytes; at most 1024 are allowed")
    );

    let queries = [
        (
            format!("/v1/models/vib/1?reason={}", long(1025)),
            "DELETE",
            &operator,
            "reason is 1025 bytes",
        ),
        (
            format!("/v1/models?tag=site={}", long(257)),
            "GET",
            &viewer,
            "at most 256",
        ),
        (
            format!("/v1/devices?{}", vec!["tag=a=b"; 65].join("&")),
            "GET",
            &viewer,
            "tag has 65 entries; at most 64",
        ),
        (
            format!("/v1/devices/{}", long(65)),
            "GET",
            &viewer,
            "device is 65 bytes; at most 64",
        ),
        (
            format!("/v1/deployments/{}", long(129)),
            "GET",
            &viewer,
            "deployment is 129 bytes; at most 128",
        ),
        (
            format!("/v1/models/{}/1", long(129)),
            "GET",
            &viewer,
            "model is 129 bytes; at most 128",
        ),
        (
            format!("/v1/events?kind={}", long(129)),
            "GET",
            &viewer,
            "kind is 129 bytes",
        ),
        (
            "/v1/audit?limit=100000000".to_owned(),
            "GET",
            &viewer,
            "within 1..=10000",
        ),
    ];
    for (path, method, token, want) in &queries {
        let (s, v) = call(addr, method, path, Some(token), b"").await;
        assert_eq!(s, 400, "{method} {want}: {v}");
        assert!(error(&v).contains(want), "{v} should say {want:?}");
    }

    // Bodies are capped at 1 MiB (413, still a JSON error); long tokens are just unknown.
    let big = vec![b' '; (1 << 20) + 1];
    let (s, v) = call(addr, "POST", "/v1/devices", Some(&admin), &big).await;
    assert_eq!(s, 413, "{v}");
    assert!(!error(&v).is_empty());
    assert_eq!(
        call(addr, "GET", "/v1/models", Some(&long(300)), b"")
            .await
            .0,
        401
    );
    b.shutdown().await;
}

#[test]
fn the_cli_checks_the_same_caps() {
    use common::{bridge, run, text};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cli = |args: &[&str]| run(bridge().arg("--data-dir").arg(&data).args(args));
    let tag = format!("site={}", "x".repeat(257));
    let o = cli(&["device", "add", "gw-1", "--tag", &tag]);
    assert!(
        !o.status.success() && text(&o).contains("tags \"site\" is 257 bytes; at most 256"),
        "{}",
        text(&o)
    );
    let o = cli(&["token", "add", &"t".repeat(65), "--role", "viewer"]);
    assert!(
        !o.status.success() && text(&o).contains("token name is 65 bytes; at most 64"),
        "{}",
        text(&o)
    );
    let o = cli(&["device", "list", "--tag", &tag]);
    assert!(
        !o.status.success() && text(&o).contains("at most 256"),
        "{}",
        text(&o)
    );
}
