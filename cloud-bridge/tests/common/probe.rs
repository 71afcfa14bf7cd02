//! A real rumqttc client that records what happens to it, for broker authorization tests.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, LastWill, MqttOptions, Packet, QoS,
    SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::task::JoinHandle;

use super::harness::wait_until;

/// What a probe saw.
#[derive(Debug, Default)]
pub struct ProbeLog {
    /// CONNACK: Ok, or the refusal code.
    pub connack: Option<Result<(), ConnectReturnCode>>,
    /// SUBACK return codes, in order.
    pub subacks: Vec<Vec<SubscribeReasonCode>>,
    /// PUBACKs received.
    pub pubacks: usize,
    /// Messages received (topic, payload).
    pub received: Vec<(String, Vec<u8>)>,
    /// Why the connection ended (no reconnect is attempted).
    pub closed: Option<String>,
}

/// One client connection, polled until its first error.
pub struct Probe {
    pub client: AsyncClient,
    pub log: Arc<Mutex<ProbeLog>>,
    task: JoinHandle<()>,
}

/// Options for `client_id` on 127.0.0.1:`port` (keep-alive 30 s, 1 MiB packets).
pub fn opts(client_id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(1 << 20, 1 << 20);
    o.set_clean_session(true);
    o
}

/// `opts` with username/password.
pub fn login(client_id: &str, port: u16, user: &str, password: &str) -> MqttOptions {
    let mut o = opts(client_id, port);
    o.set_credentials(user, password);
    o
}

/// Adds a Last-Will on `topic` with `payload`.
pub fn with_will(mut o: MqttOptions, topic: &str, payload: &[u8]) -> MqttOptions {
    o.set_last_will(LastWill::new(
        topic,
        payload.to_vec(),
        QoS::AtLeastOnce,
        false,
    ));
    o
}

/// A rustls client configuration trusting `ca.pem`, presenting `cert`/`key` if given.
pub fn tls_config(ca: &Path, cert_key: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &std::fs::read(ca).unwrap()[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    Arc::new(match cert_key {
        Some((c, k)) => {
            let certs = rustls_pemfile::certs(&mut &std::fs::read(c).unwrap()[..])
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls_pemfile::private_key(&mut &std::fs::read(k).unwrap()[..])
                .unwrap()
                .unwrap();
            b.with_client_auth_cert(certs, key).unwrap()
        }
        None => b.with_no_client_auth(),
    })
}

/// `opts` over TLS with `config`.
pub fn tls_opts(client_id: &str, port: u16, config: Arc<rustls::ClientConfig>) -> MqttOptions {
    let mut o = opts(client_id, port);
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    o
}

impl Probe {
    /// Connects and starts polling.
    pub fn start(o: MqttOptions) -> Self {
        let (client, mut el) = AsyncClient::new(o, 64);
        let log = Arc::new(Mutex::new(ProbeLog::default()));
        let l = log.clone();
        let task = tokio::spawn(async move {
            loop {
                let ev = el.poll().await;
                let mut g = l.lock().unwrap();
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => g.connack = Some(Ok(())),
                    Ok(Event::Incoming(Packet::SubAck(s))) => g.subacks.push(s.return_codes),
                    Ok(Event::Incoming(Packet::PubAck(_))) => g.pubacks += 1,
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        g.received.push((p.topic, p.payload.to_vec()))
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if let ConnectionError::ConnectionRefused(code) = e {
                            g.connack = Some(Err(code));
                        }
                        g.closed = Some(e.to_string());
                        return;
                    }
                }
            }
        });
        Self { client, log, task }
    }

    /// Waits for the CONNACK: Ok, or why not.
    pub async fn connected(&self) -> Result<(), String> {
        wait_until(10, || {
            let g = self.log.lock().unwrap();
            g.connack.is_some() || g.closed.is_some()
        })
        .await;
        let g = self.log.lock().unwrap();
        match (&g.connack, &g.closed) {
            (Some(Ok(())), _) => Ok(()),
            (Some(Err(code)), _) => Err(format!("refused: {code:?}")),
            (None, Some(e)) => Err(e.clone()),
            (None, None) => Err("no CONNACK within 10 s".into()),
        }
    }

    /// The refusal code, once known.
    pub async fn refused_with(&self) -> Option<ConnectReturnCode> {
        let _ = self.connected().await;
        match self.log.lock().unwrap().connack {
            Some(Err(c)) => Some(c),
            _ => None,
        }
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.log.lock().unwrap().closed.is_some()
    }

    /// Waits (10 s at most) for the connection to end.
    pub async fn wait_closed(&self) -> bool {
        wait_until(10, || self.is_closed()).await
    }

    /// Whether a message on `topic` with `payload` arrived.
    pub fn got(&self, topic: &str, payload: &[u8]) -> bool {
        self.log
            .lock()
            .unwrap()
            .received
            .iter()
            .any(|(t, p)| t == topic && p == payload)
    }

    /// Waits (10 s at most) for a message on `topic` with `payload`.
    pub async fn wait_for(&self, topic: &str, payload: &[u8]) -> bool {
        wait_until(10, || self.got(topic, payload)).await
    }

    /// Whether any received payload contains `needle`.
    pub fn saw_payload(&self, needle: &[u8]) -> bool {
        self.log
            .lock()
            .unwrap()
            .received
            .iter()
            .any(|(_, p)| p.windows(needle.len()).any(|w| w == needle))
    }

    /// Waits for `n` SUBACKs; returns the last one.
    pub async fn suback(&self, n: usize) -> Option<Vec<SubscribeReasonCode>> {
        wait_until(10, || {
            let g = self.log.lock().unwrap();
            g.subacks.len() >= n || g.closed.is_some()
        })
        .await;
        self.log.lock().unwrap().subacks.get(n - 1).cloned()
    }

    /// Subscribes (QoS 1).
    pub async fn subscribe(&self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
    }

    /// Publishes (QoS 1, not retained).
    pub async fn publish(&self, topic: &str, payload: &[u8]) {
        let _ = self
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await;
    }

    /// Drops the connection without DISCONNECT (the broker fires the Last-Will).
    pub fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}
