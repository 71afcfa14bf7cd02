//! Per-device isolation on the embedded broker (the gate in front of rumqttd) and on
//! mosquitto started from `broker-config`'s generated files: a device with valid
//! credentials of its own cannot touch another device's topics, take its client id, or
//! register a will on its presence; the other device keeps working throughout.
//! Real parts only: the gate + rumqttd, rumqttc clients, the agent's own MQTT link,
//! mosquitto when installed.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::harness::{mosquitto, wait_until};
use common::probe::{self, Probe};
use outpost_bridge::audit::Audit;
use outpost_bridge::broker::tls::Ca;
use outpost_bridge::broker::{self, EmbeddedBroker, GateConfig};
use outpost_bridge::db::Db;
use outpost_bridge::devices::{self, CertOptions};
use outpost_bridge::server::RegistryAuth;
use outpost_protocol::topics;
use rumqttc::ConnectReturnCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

const A: &str = "gw-a";
const B: &str = "gw-b";

/// Two provisioned devices (password, certificate and a TLS agent.toml each).
struct Fleet {
    dir: tempfile::TempDir,
    db: Db,
    ca: Ca,
    passwords: std::collections::HashMap<&'static str, String>,
}

impl Fleet {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let audit = Audit::new(dir.path());
        let key = outpost_bridge::server::signing_key(dir.path()).unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let mut passwords = std::collections::HashMap::new();
        for id in [A, B] {
            let p = devices::add_with(
                &db.lock(),
                &audit,
                id,
                &[],
                "x86_64-unknown-linux-gnu",
                "mqtts://127.0.0.1:8883",
                &[key.public_key()],
                &dir.path().join(id),
                "test",
                CertOptions {
                    ca: Some(&ca),
                    use_tls: true,
                    ..Default::default()
                },
            )
            .unwrap();
            passwords.insert(id, p.password);
        }
        Self {
            dir,
            db,
            ca,
            passwords,
        }
    }

    fn pw(&self, id: &str) -> &str {
        &self.passwords[id]
    }

    fn device_dir(&self, id: &str) -> PathBuf {
        self.dir.path().join(id)
    }

    /// A TLS client config presenting `id`'s certificate.
    fn tls(&self, id: &str) -> Arc<rustls::ClientConfig> {
        let d = self.device_dir(id);
        probe::tls_config(
            &d.join("ca.pem"),
            Some((&d.join("client.pem"), &d.join("client.key"))),
        )
    }
}

/// The real gate + rumqttd with the real registry authenticator.
struct Gate {
    broker: EmbeddedBroker,
    bridge_secret: String,
    _shutdown: watch::Sender<bool>,
}

impl Gate {
    async fn start(fleet: &Fleet, cfg: GateConfig) -> Self {
        let bridge_secret = devices::random_secret();
        let auth = RegistryAuth::new(fleet.db.clone(), bridge_secret.clone());
        let (tx, rx) = watch::channel(false);
        let broker = broker::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            &cfg,
            Some(Arc::new(auth)),
            Some(&fleet.ca),
            rx,
        )
        .await
        .unwrap();
        Self {
            broker,
            bridge_secret,
            _shutdown: tx,
        }
    }

    fn port(&self) -> u16 {
        self.broker.addr.port()
    }

    fn tls_port(&self) -> u16 {
        self.broker.tls_addr.unwrap().port()
    }

    /// A subscriber with the bridge's identity (another client id) on B's subtree and
    /// on A's state (its barrier topic).
    async fn observer(&self) -> Probe {
        let o = Probe::start(probe::login(
            "observer",
            self.port(),
            broker::BRIDGE_ID,
            &self.bridge_secret,
        ));
        o.connected().await.unwrap();
        o.subscribe(&format!("outpost/v1/dev/{B}/#")).await;
        o.subscribe(&topics::state(A)).await;
        assert!(o.suback(2).await.is_some());
        o
    }

    fn stats(&self) -> broker::GateCounters {
        self.broker.stats.snapshot()
    }
}

fn tls_cfg() -> GateConfig {
    GateConfig {
        tls_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..GateConfig::default()
    }
}

/// B publishes a fresh marker on its state; the observer must receive it (B still works).
async fn b_still_works(b: &Probe, observer: &Probe, n: usize) {
    let marker = format!("from-B-{n}");
    b.publish(&topics::state(B), marker.as_bytes()).await;
    assert!(
        observer
            .wait_for(&topics::state(B), marker.as_bytes())
            .await,
        "B's publish {n} did not arrive"
    );
    assert!(!b.is_closed(), "B was disconnected");
}

/// Every way A can attack B through `connect_a` (a fresh connection as A each time);
/// A's connection must be closed each time and nothing of A's may reach the observer.
async fn attack_matrix(
    gate: &Gate,
    connect_a: impl Fn(&str) -> rumqttc::MqttOptions,
    b: &Probe,
    observer: &Probe,
) {
    let mut n = 0;
    let b_topics = [
        topics::uplink(B, "telemetry"),
        topics::state(B),
        topics::presence(B),
        topics::directive(B),
        topics::chunk_request(B),
        topics::chunk_response(B),
    ];
    for t in &b_topics {
        let a = Probe::start(connect_a(A));
        a.connected().await.unwrap();
        a.publish(t, b"from-A").await;
        assert!(a.wait_closed().await, "A publishing on {t} was not closed");
        n += 1;
        b_still_works(b, observer, n).await;
    }
    for f in [
        "#".to_owned(),
        "outpost/v1/dev/+/state".to_owned(),
        format!("outpost/v1/dev/{B}/#"),
        topics::directive(B),
        "$SYS/#".to_owned(),
    ] {
        let a = Probe::start(connect_a(A));
        a.connected().await.unwrap();
        a.subscribe(&f).await;
        assert!(a.wait_closed().await, "A subscribing to {f} was not closed");
        assert!(
            a.log.lock().unwrap().subacks.is_empty(),
            "{f} was acknowledged"
        );
        n += 1;
        b_still_works(b, observer, n).await;
    }
    // A's credential with B's client id: refused before B's session is touched.
    let a = Probe::start(connect_a(B));
    assert_eq!(a.refused_with().await, Some(ConnectReturnCode::BadClientId));
    n += 1;
    b_still_works(b, observer, n).await;
    // A will on B's presence.
    let a = Probe::start(probe::with_will(
        connect_a(A),
        &topics::presence(B),
        b"from-A",
    ));
    assert_eq!(
        a.refused_with().await,
        Some(ConnectReturnCode::NotAuthorized)
    );
    n += 1;
    b_still_works(b, observer, n).await;
    // A's own topics work, and its own barrier proves the observer is listening to it.
    let a = Probe::start(connect_a(A));
    a.connected().await.unwrap();
    a.publish(&topics::state(A), b"a-own").await;
    assert!(observer.wait_for(&topics::state(A), b"a-own").await);
    assert!(
        !observer.saw_payload(b"from-A"),
        "something of A's reached B's topics"
    );
    let s = gate.stats();
    assert!(s.denied_publish >= b_topics.len() as u64, "{s:?}");
    assert!(
        s.denied_subscribe >= 5 && s.refused_client_id >= 1 && s.denied_will >= 1,
        "{s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_confines_a_device_with_password() {
    let fleet = Fleet::new();
    let gate = Gate::start(&fleet, GateConfig::default()).await;
    let observer = gate.observer().await;
    let b = Probe::start(probe::login(B, gate.port(), B, fleet.pw(B)));
    b.connected().await.unwrap();
    b_still_works(&b, &observer, 0).await;
    let port = gate.port();
    let pw = fleet.pw(A).to_owned();
    attack_matrix(&gate, |id| probe::login(id, port, A, &pw), &b, &observer).await;

    // Wrong passwords, B's username with A's password, no credentials at all.
    for o in [
        probe::login(A, port, A, "wrong"),
        probe::login(B, port, B, fleet.pw(A)),
        probe::opts(A, port),
        probe::login("outpost-bridge", port, broker::BRIDGE_ID, fleet.pw(A)),
    ] {
        let p = Probe::start(o);
        assert_eq!(
            p.refused_with().await,
            Some(ConnectReturnCode::BadUserNamePassword)
        );
    }
    b_still_works(&b, &observer, 100).await;
    assert!(gate.stats().refused_auth >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_confines_a_device_with_a_certificate() {
    let fleet = Fleet::new();
    let gate = Gate::start(&fleet, tls_cfg()).await;
    let observer = gate.observer().await;
    let b = Probe::start(probe::tls_opts(B, gate.tls_port(), fleet.tls(B)));
    b.connected().await.unwrap();
    b_still_works(&b, &observer, 0).await;
    let (port, tls_a) = (gate.tls_port(), fleet.tls(A));
    attack_matrix(
        &gate,
        |id| probe::tls_opts(id, port, tls_a.clone()),
        &b,
        &observer,
    )
    .await;

    // A certificate from another CA, and no certificate: the handshake fails.
    let other = tempfile::tempdir().unwrap();
    let foreign = Ca::load_or_create(other.path()).unwrap();
    foreign.write_device_files(A, other.path()).unwrap();
    let fake = probe::tls_config(
        &fleet.device_dir(A).join("ca.pem"),
        Some((
            &other.path().join("client.pem"),
            &other.path().join("client.key"),
        )),
    );
    let p = Probe::start(probe::tls_opts(A, port, fake));
    assert!(p.connected().await.is_err());
    let anon = probe::tls_config(&fleet.device_dir(A).join("ca.pem"), None);
    let p = Probe::start(probe::tls_opts(A, port, anon));
    assert!(p.connected().await.is_err());
    assert!(wait_until(10, || gate.stats().tls_failures >= 2).await);
    // A's certificate with a username naming B: the certificate wins, so refused.
    let mut o = probe::tls_opts(A, port, fleet.tls(A));
    o.set_credentials(B, fleet.pw(B));
    let p = Probe::start(o);
    assert_eq!(
        p.refused_with().await,
        Some(ConnectReturnCode::BadUserNamePassword)
    );
    b_still_works(&b, &observer, 100).await;
}

/// The agent's own MQTT link, configured by the agent.toml `device add --tls` wrote,
/// connects with the issued certificate and is confined to its subtree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_link_with_issued_certificate() {
    use outpost_agent::config::AgentConfig;
    use outpost_agent::link::{self, Routes};
    let fleet = Fleet::new();
    let gate = Gate::start(&fleet, tls_cfg()).await;
    let observer = gate.observer().await;
    observer.subscribe(&topics::presence(A)).await;
    assert!(observer.suback(3).await.is_some());
    let data = fleet.dir.path().join("agent-data");
    let cfg = AgentConfig::load(
        Some(&fleet.device_dir(A).join("agent.toml")),
        [
            (
                "OUTPOST_BROKER_URL".to_owned(),
                format!("mqtts://127.0.0.1:{}", gate.tls_port()),
            ),
            ("OUTPOST_DATA_DIR".to_owned(), data.display().to_string()),
        ],
    )
    .unwrap();
    assert!(cfg.broker.tls && cfg.broker.username.is_none());
    let (update_tx, _update_rx) = tokio::sync::mpsc::channel(64);
    let (_state_tx, state_rx) = watch::channel(None);
    let (_stop, stop_rx) = watch::channel(false);
    let routes = Routes {
        update: update_tx,
        acks: None,
    };
    let (handle, run) = link::start(A, &cfg.broker, None, routes, state_rx, stop_rx).unwrap();
    tokio::spawn(run);
    assert!(
        wait_until(10, || handle.is_connected()).await,
        "agent link never connected"
    );
    // Its presence (online, retained) arrived through the gate.
    assert!(
        wait_until(10, || observer
            .log
            .lock()
            .unwrap()
            .received
            .iter()
            .any(|(t, _)| *t == topics::presence(A)))
        .await
    );
    let before = gate.stats().denied_publish;
    let _ = handle.publish(topics::state(B), b"from-A".to_vec(), false);
    assert!(wait_until(10, || gate.stats().denied_publish > before).await);
    assert!(!observer.saw_payload(b"from-A"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hardening_timeout_size_protocol_and_cap() {
    let fleet = Fleet::new();
    let cfg = GateConfig {
        connect_timeout: Duration::from_millis(300),
        max_packet_bytes: 4096,
        max_connections: 4,
        ..GateConfig::default()
    };
    let gate = Gate::start(&fleet, cfg).await;
    let port = gate.port();

    // A client that never sends CONNECT (and one that sends half of one) is dropped.
    for partial in [&b""[..], &[0x10, 0x20, 0x00][..]] {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(partial).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("slow client still connected after 10 s");
        assert!(matches!(n, Ok(0) | Err(_)));
    }
    assert!(gate.stats().connect_timeouts >= 2);

    // MQTT 5: CONNACK "unacceptable protocol version", then closed.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(&[
        0x10, 0x0d, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0, 0, 0,
    ])
    .await
    .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert_eq!(got, [0x20, 0x02, 0x00, 0x01]);

    // Oversized: a 8 KiB publish on A's own topic closes A; B is unaffected.
    let observer = gate.observer().await;
    let b = Probe::start(probe::login(B, port, B, fleet.pw(B)));
    b.connected().await.unwrap();
    let a = Probe::start(probe::login(A, port, A, fleet.pw(A)));
    a.connected().await.unwrap();
    a.publish(&topics::state(A), &vec![b'x'; 8192]).await;
    assert!(a.wait_closed().await);
    assert!(gate.stats().oversized >= 1);
    b_still_works(&b, &observer, 1).await;
    drop(a);

    // The cap: observer + B + 2 idle sockets = 4; a fifth connection is closed at once
    // while B keeps working, and a slot frees when an idle socket goes.
    assert!(
        wait_until(10, || gate.stats().active == 2).await,
        "{:?}",
        gate.stats()
    );
    let idle1 = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let _idle2 = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    assert!(wait_until(10, || gate.stats().active == 4).await);
    let over = Probe::start(probe::login(A, port, A, fleet.pw(A)));
    assert!(over.connected().await.is_err());
    assert!(gate.stats().refused_capacity >= 1);
    b_still_works(&b, &observer, 2).await;
    drop(idle1);
    // The idle socket is closed by the CONNECT timeout anyway; then A fits again.
    assert!(wait_until(10, || gate.stats().active <= 3).await);
    let a = Probe::start(probe::login(A, port, A, fleet.pw(A)));
    a.connected().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_broker_admits_anyone() {
    let (tx, rx) = watch::channel(false);
    let b = broker::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &GateConfig::default(),
        None,
        None,
        rx,
    )
    .await
    .unwrap();
    let p = Probe::start(probe::opts(B, b.addr.port()));
    p.connected().await.unwrap();
    p.subscribe("#").await;
    assert!(p.suback(1).await.is_some());
    p.publish(&topics::state(A), b"anyone").await;
    assert!(p.wait_for(&topics::state(A), b"anyone").await);
    assert_eq!(b.stats.denied(), 0);
    drop(tx);
}

// ---- mosquitto, from the generated configuration ----

use outpost_testkit::mosquitto::Mosquitto;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The same attacks against mosquitto. mosquitto drops a denied publish silently and
/// renames a client to its username instead of closing, so each check uses a barrier:
/// a later message that must arrive proves the earlier one was dealt with.
async fn mosquitto_matrix(tls: bool) {
    let Some(bin) = mosquitto() else {
        println!(
            "skipped: mosquitto is not installed (OUTPOST_REQUIRE_MOSQUITTO=1 makes this a failure)"
        );
        return;
    };
    let fleet = Fleet::new();
    let out = fleet.dir.path().join("mosquitto");
    let (dev_port, bridge_port) = (free_port(), free_port());
    let mut opts = broker::external::MosquittoOptions::new(tls);
    opts.device_listen = SocketAddr::from(([127, 0, 0, 1], dev_port));
    opts.bridge_listen = SocketAddr::from(([127, 0, 0, 1], bridge_port));
    // Tests may run as root, and the temporary directory is private to this user: keep
    // mosquitto from switching to its own user (ignored when not started as root).
    opts.run_as = Some("root".into());
    let files =
        broker::external::write_mosquitto(&fleet.db.lock(), fleet.dir.path(), &out, &opts).unwrap();
    assert_eq!(files.devices, [A, B]);
    let m = Mosquitto::from_config(&bin, &files.config, &[dev_port, bridge_port]);
    let bridge_pw = std::fs::read_to_string(&files.bridge_password_file).unwrap();

    let observer = Probe::start(probe::login(
        "observer",
        bridge_port,
        broker::BRIDGE_ID,
        &bridge_pw,
    ));
    observer
        .connected()
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", m.log_text()));
    observer.subscribe(&format!("outpost/v1/dev/{B}/#")).await;
    observer.subscribe(&topics::state(A)).await;
    assert!(observer.suback(2).await.is_some());
    let connect = |id: &str, as_: &str| {
        if tls {
            probe::tls_opts(id, dev_port, fleet.tls(as_))
        } else {
            probe::login(id, dev_port, as_, fleet.pw(as_))
        }
    };
    let b = Probe::start(connect(B, B));
    b.connected()
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", m.log_text()));
    b.subscribe(&topics::directive(B)).await;
    b_still_works(&b, &observer, 0).await;

    // A barrier through A: its own state reaching the observer means everything A sent
    // before was processed.
    let mut n = 0;
    let a = Probe::start(connect(A, A));
    a.connected().await.unwrap();
    a.subscribe(&topics::directive(A)).await;
    for t in [
        topics::uplink(B, "telemetry"),
        topics::state(B),
        topics::presence(B),
        topics::directive(B),
        topics::chunk_request(B),
    ] {
        a.publish(&t, b"from-A").await;
        n += 1;
        let barrier = format!("a-{n}");
        a.publish(&topics::state(A), barrier.as_bytes()).await;
        assert!(
            observer
                .wait_for(&topics::state(A), barrier.as_bytes())
                .await
        );
        b_still_works(&b, &observer, n).await;
    }
    // Subscriptions beyond its subtree deliver nothing of B's to A: B publishes, then the
    // bridge writes to A's directive; A receiving that means B's message was routed.
    for f in ["#", "outpost/v1/dev/+/state", "outpost/v1/dev/gw-b/#"] {
        a.subscribe(f).await;
    }
    b.publish(&topics::state(B), b"secret-of-B").await;
    assert!(observer.wait_for(&topics::state(B), b"secret-of-B").await);
    observer.publish(&topics::directive(A), b"barrier").await;
    assert!(
        a.wait_for(&topics::directive(A), b"barrier").await,
        "{}",
        m.log_text()
    );
    assert!(!a.saw_payload(b"secret-of-B"), "A received B's state");
    // B's client id with A's credential: mosquitto makes it A (taking over `a`), so B
    // stays connected and the newcomer can only act as A.
    let a_as_b = Probe::start(connect(B, A));
    a_as_b.connected().await.unwrap();
    a_as_b.publish(&topics::state(A), b"a-as-b").await;
    assert!(observer.wait_for(&topics::state(A), b"a-as-b").await);
    b_still_works(&b, &observer, 100).await;
    if !tls {
        let p = Probe::start(probe::login(B, dev_port, B, fleet.pw(A)));
        assert!(
            p.connected().await.is_err(),
            "B's name with A's password was accepted"
        );
    }
    // A will on B's presence, then an abrupt disconnect: the will never reaches B's
    // topic. The next A connection is the barrier: mosquitto has dealt with the dead
    // session (and its will) by the time it answers that CONNECT.
    let w = Probe::start(probe::with_will(
        connect(A, A),
        &topics::presence(B),
        b"will-from-A",
    ));
    let _ = w.connected().await;
    w.kill();
    let fin = Probe::start(connect(A, A));
    fin.connected().await.unwrap();
    fin.publish(&topics::state(A), b"final").await;
    assert!(observer.wait_for(&topics::state(A), b"final").await);
    b_still_works(&b, &observer, 101).await;
    assert!(!observer.saw_payload(b"from-A") && !observer.saw_payload(b"will-from-A"));
    assert!(!b.is_closed(), "B was disconnected: {}", m.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_with_generated_password_config() {
    mosquitto_matrix(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_with_generated_tls_config() {
    mosquitto_matrix(true).await;
}

#[test]
fn unused_counter_fields_are_reachable() {
    // The counters are plain atomics, readable without a snapshot.
    let s = broker::GateStats::default();
    s.admitted.fetch_add(1, Relaxed);
    assert_eq!(s.snapshot().admitted, 1);
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// `device add --tls` and `broker-config mosquitto [--tls]` through the binary.
#[cfg(unix)]
#[test]
fn cli_provisions_tls_devices_and_writes_broker_configs() {
    use common::{bridge, run, text};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cli = || {
        let mut c = bridge();
        c.arg("--data-dir").arg(&data);
        c
    };
    let dev = dir.path().join("gw-1");
    let o = run(cli()
        .args(["device", "add", "gw-1", "--tls", "--out"])
        .arg(&dev));
    assert!(o.status.success(), "{}", text(&o));
    let toml = std::fs::read_to_string(dev.join("agent.toml")).unwrap();
    assert!(
        toml.contains("url = \"mqtts://127.0.0.1:8883\"")
            && toml.contains("client_cert = \"client.pem\"")
    );
    assert!(!toml.contains("password_file"));
    for f in ["client.pem", "ca.pem", "password"] {
        assert!(dev.join(f).exists(), "{f}");
    }
    assert_eq!(mode(&dev.join("client.key")), 0o600);
    assert_eq!(mode(&data.join("ca").join("ca.key")), 0o600);
    let o = run(cli()
        .args(["device", "add", "gw-2", "--out"])
        .arg(dir.path().join("gw-2")));
    assert!(o.status.success(), "{}", text(&o));
    let o = run(cli().args(["device", "add", "outpost-bridge"]));
    assert!(
        !o.status.success() && text(&o).contains("reserved"),
        "{}",
        text(&o)
    );
    let o = run(cli().args([
        "device",
        "add",
        "gw-3",
        "--tls",
        "--broker-url",
        "mqtt://h:1",
    ]));
    assert!(
        !o.status.success() && text(&o).contains("mqtts://"),
        "{}",
        text(&o)
    );

    let plain = dir.path().join("mosq");
    let o = run(cli()
        .args(["broker-config", "mosquitto", "--out"])
        .arg(&plain));
    assert!(o.status.success(), "{}", text(&o));
    let passwd = std::fs::read_to_string(plain.join("passwd")).unwrap();
    assert_eq!(passwd.lines().count(), 2);
    assert!(passwd.starts_with("gw-1:$7$101$"));
    let conf = std::fs::read_to_string(plain.join("mosquitto.conf")).unwrap();
    for want in [
        "use_username_as_clientid true",
        "allow_anonymous false",
        "max_packet_size 131072",
        "listener 1883 0.0.0.0",
        "listener 1884 127.0.0.1",
    ] {
        assert!(conf.contains(want), "{want}\n{conf}");
    }
    assert_eq!(mode(&plain.join("bridge.password")), 0o600);
    let pw = std::fs::read_to_string(plain.join("bridge.password")).unwrap();
    // A second run keeps the bridge's password.
    let o = run(cli()
        .args([
            "broker-config",
            "mosquitto",
            "--tls",
            "--tls-name",
            "mqtt.example",
            "--out",
        ])
        .arg(&plain));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(plain.join("bridge.password")).unwrap(),
        pw
    );
    let conf = std::fs::read_to_string(plain.join("mosquitto.conf")).unwrap();
    for want in [
        "require_certificate true",
        "use_identity_as_username true",
        "listener 8883 0.0.0.0",
        "server.pem",
    ] {
        assert!(conf.contains(want), "{want}\n{conf}");
    }
    assert_eq!(mode(&plain.join("server.key")), 0o600);
}
