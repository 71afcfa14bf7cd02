//! The agent's broker TLS settings end to end against a real mosquitto that listens with
//! TLS only and requires a client certificate from its CA: `[broker] url = "mqtts://…"`,
//! `ca_file`, `client_cert` and `client_key`, loaded by the agent's config and used by its
//! MQTT link.
//!
//! - With the right CA and its client certificate, the link connects and the reported
//!   state it publishes (retained) reaches the broker.
//! - With a CA that did not sign the broker's certificate, it never connects, counts the
//!   TLS failure and logs why at ERROR.
//! - With the right CA but no client certificate, mosquitto refuses it, and the agent
//!   logs that at ERROR too.
//!
//! Skipped with a message when mosquitto is not installed; `OUTPOST_REQUIRE_MOSQUITTO=1`
//! (set by `.ci/run`) makes that a failure.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_agent::config::AgentConfig;
use outpost_agent::link::{self, LinkHandle, Routes};
use outpost_protocol::topics;
use outpost_protocol::wire::{BudgetState, Health, ReportedState};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::watch;

const DEVICE: &str = "gw-tls";

use outpost_testkit::mosquitto::find as mosquitto;

fn log_text() -> String {
    outpost_testkit::logs::text()
}

/// A CA that issues the broker's and the clients' certificates.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let key = KeyPair::generate().unwrap();
        let pem = p.self_signed(&key).unwrap().pem();
        Self {
            issuer: Issuer::new(p, key),
            pem,
        }
    }

    /// A leaf certificate and its key, PEM.
    fn issue(&self, cn: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut p =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// mosquitto with one TLS listener on loopback that requires a client certificate signed
/// by the CA and takes the certificate's CN as the user name.
struct Mosquitto {
    broker: outpost_testkit::mosquitto::Mosquitto,
    port: u16,
}

impl Mosquitto {
    fn start(bin: &Path, dir: &Path, ca: &TestCa) -> Self {
        let (cert, key) = ca.issue(
            "broker",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let port = outpost_testkit::mosquitto::free_port();
        let conf = format!(
            "# Tests may run as root and the temporary directory is private to this user:\n\
             # keep mosquitto from switching users (ignored when not started as root).\n\
             user root\n\
             persistence false\n\
             log_dest stdout\n\
             log_type all\n\
             allow_anonymous false\n\
             listener {port} 127.0.0.1\n\
             cafile {}\n\
             certfile {}\n\
             keyfile {}\n\
             require_certificate true\n\
             use_identity_as_username true\n",
            write(dir, "ca.pem", &ca.pem).display(),
            write(dir, "server.pem", &cert).display(),
            write(dir, "server.key", &key).display(),
        );
        let conf = write(dir, "mosquitto.conf", &conf);
        Self {
            broker: outpost_testkit::mosquitto::Mosquitto::from_config(bin, &conf, &[port]),
            port,
        }
    }
}

/// The agent's configuration for `device`, through the agent's own loader.
fn agent_config(
    dir: &Path,
    device: &str,
    port: u16,
    ca_file: &Path,
    client: Option<(&Path, &Path)>,
) -> AgentConfig {
    let data = dir.join(format!("{device}-data"));
    let trust = dir.join("trust");
    std::fs::create_dir_all(&trust).unwrap();
    let mut broker = format!(
        "url = \"mqtts://127.0.0.1:{port}\"\nreconnect_min_ms = 50\nreconnect_max_ms = 200\n\
         ca_file = \"{}\"\n",
        ca_file.display()
    );
    if let Some((cert, key)) = client {
        broker += &format!(
            "client_cert = \"{}\"\nclient_key = \"{}\"\n",
            cert.display(),
            key.display()
        );
    }
    let toml = format!(
        "device_id = \"{device}\"\ndata_dir = \"{}\"\ntrust_dir = \"{}\"\n[broker]\n{broker}",
        data.display(),
        trust.display()
    );
    let path = write(dir, &format!("{device}.toml"), &toml);
    let cfg = AgentConfig::load(Some(&path), []).unwrap();
    assert!(cfg.broker.tls, "mqtts:// turns TLS on");
    cfg
}

/// A running agent link and what drives it.
struct Link {
    handle: LinkHandle,
    state: watch::Sender<Option<ReportedState>>,
    _stop: watch::Sender<bool>,
}

fn start_link(cfg: &AgentConfig) -> Link {
    let (update_tx, mut update_rx) = tokio::sync::mpsc::channel(64);
    // The updater is not running here; drain what the link routes to it.
    tokio::spawn(async move { while update_rx.recv().await.is_some() {} });
    let (state, state_rx) = watch::channel(None);
    let (stop, stop_rx) = watch::channel(false);
    let routes = Routes {
        update: update_tx,
        acks: None,
    };
    let (handle, run) =
        link::start(&cfg.device_id, &cfg.broker, None, routes, state_rx, stop_rx).unwrap();
    tokio::spawn(run);
    Link {
        handle,
        state,
        _stop: stop,
    }
}

fn reported() -> ReportedState {
    ReportedState {
        device_id: DEVICE.into(),
        agent_version: outpost_agent::VERSION.into(),
        at: 1_800_000_000,
        directive_sequence: Some(3),
        directive_rejected: None,
        models: Vec::new(),
        health: Health::NoModel,
        last_error: None,
        budget: BudgetState::default(),
        tags: [("link".to_owned(), "mqtts".to_owned())].into(),
        trusted_keys: Vec::new(),
    }
}

/// A client of the broker's own (CN `observer`) that collects what it receives.
async fn observer(
    port: u16,
    ca: &Path,
    cert: &Path,
    key: &Path,
    topic: &str,
) -> Arc<Mutex<Vec<(String, Vec<u8>)>>> {
    let read = |p: &Path| std::fs::read(p).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &read(ca)[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let certs = rustls_pemfile::certs(&mut &read(cert)[..])
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut &read(key)[..])
        .unwrap()
        .unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(certs, key)
    .unwrap();
    let mut o = MqttOptions::new("observer", "127.0.0.1", port);
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        Arc::new(tls),
    )));
    let (client, mut ev) = AsyncClient::new(o, 16);
    client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    tokio::spawn(async move {
        // Keep the client alive for the task's lifetime.
        let _client = client;
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => sink
                    .lock()
                    .unwrap()
                    .push((p.topic.clone(), p.payload.to_vec())),
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    got
}

async fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_link_over_mutual_tls_with_mosquitto() {
    let Some(bin) = mosquitto() else {
        println!(
            "skipped: mosquitto is not installed (OUTPOST_REQUIRE_MOSQUITTO=1 makes this a failure)"
        );
        return;
    };
    outpost_testkit::logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = TestCa::new("Outpost test CA");
    let broker = Mosquitto::start(&bin, d, &ca);
    let ca_file = d.join("ca.pem");
    let (cert, key) = ca.issue(DEVICE, &[DEVICE], ExtendedKeyUsagePurpose::ClientAuth);
    let (cert, key) = (write(d, "client.pem", &cert), write(d, "client.key", &key));
    let (ocert, okey) = ca.issue(
        "observer",
        &["observer"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let (ocert, okey) = (
        write(d, "observer.pem", &ocert),
        write(d, "observer.key", &okey),
    );

    // The right CA and a client certificate it signed: connected, and the reported state
    // (retained) reaches the broker.
    let cfg = agent_config(d, DEVICE, broker.port, &ca_file, Some((&cert, &key)));
    let good = start_link(&cfg);
    assert!(
        wait_until(15, || good.handle.is_connected()).await,
        "the agent never connected over TLS: agent log:\n{}\nmosquitto log:\n{}",
        log_text(),
        broker.broker.log_text()
    );
    let state = reported();
    good.state.send(Some(state.clone())).unwrap();
    let seen = observer(broker.port, &ca_file, &ocert, &okey, &topics::state(DEVICE)).await;
    let state_topic = topics::state(DEVICE);
    assert!(
        wait_until(15, || seen
            .lock()
            .unwrap()
            .iter()
            .any(|(t, p)| *t == state_topic
                && ReportedState::decode(p, &Default::default()).as_ref()
                    == Ok(&state)))
        .await,
        "the reported state did not reach the broker: {:?}\nmosquitto log:\n{}",
        seen.lock().unwrap(),
        broker.broker.log_text()
    );
    assert_eq!(
        good.handle
            .stats
            .tls_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    // A CA that did not sign the broker's certificate: the handshake fails on the agent's
    // side, it never connects, and it says why.
    let other = TestCa::new("Some other CA");
    let wrong_ca = write(d, "other-ca.pem", &other.pem);
    let cfg = agent_config(
        d,
        "gw-wrong-ca",
        broker.port,
        &wrong_ca,
        Some((&cert, &key)),
    );
    let wrong = start_link(&cfg);
    let stats = wrong.handle.stats.clone();
    assert!(
        wait_until(15, || stats
            .tls_failures
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2)
        .await,
        "no TLS failures counted: {}",
        log_text()
    );
    assert!(!wrong.handle.is_connected());
    let log = log_text();
    let line = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("gw-wrong-ca"))
        .unwrap_or_else(|| panic!("no ERROR line for the refused connection:\n{log}"));
    assert!(
        line.contains("UnknownIssuer") && line.contains("broker.ca_file"),
        "the ERROR line does not say why: {line}"
    );
    // Logged once per reason, not once per retry.
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("ERROR") && l.contains("gw-wrong-ca"))
            .count(),
        1,
        "{log}"
    );

    // The right CA but no client certificate: mosquitto requires one. Under TLS 1.3 its
    // refusal is an alert after the handshake; the agent still knows it for TLS.
    let cfg = agent_config(d, "gw-no-cert", broker.port, &ca_file, None);
    let anonymous = start_link(&cfg);
    let stats = anonymous.handle.stats.clone();
    assert!(
        wait_until(15, || stats
            .tls_failures
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2)
        .await,
        "no TLS failures counted without a client certificate: {}",
        log_text()
    );
    assert!(
        !anonymous.handle.is_connected(),
        "connected without a client certificate: {}",
        broker.broker.log_text()
    );
    let log = log_text();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("gw-no-cert")
            && l.contains("CertificateRequired")),
        "no ERROR line saying a certificate is required:\n{log}"
    );
    assert!(good.handle.is_connected(), "the good link dropped");
}
