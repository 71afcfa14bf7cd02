//! Real MQTT parts for tests: an embedded rumqttd, a killable broker process, and a
//! bridge-like peer that serves bundles with `outpost_protocol::serve` and watches
//! reported state.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_protocol::serve::ServedBundle;
use outpost_protocol::topics::{self, DeviceTopic};
use outpost_protocol::wire::{ChunkRequest, Presence, ReportedState};
use outpost_protocol::{Digest, Limits};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// A free loopback port. The listener is dropped before the broker binds it; tests that
/// run in parallel each pick their own, and the broker fails loudly on a clash.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn broker_toml(port: u16) -> String {
    format!(
        "id = 0\n[router]\nid = 0\nmax_connections = 10010\nmax_outgoing_packet_count = 200\n\
         max_segment_size = 104857600\nmax_segment_count = 10\n[v4.1]\nname = \"v4-1\"\n\
         listen = \"127.0.0.1:{port}\"\nnext_connection_delay_ms = 1\n[v4.1.connections]\n\
         connection_timeout_ms = 60000\nmax_payload_size = 1048576\nmax_inflight_count = 200\n\
         dynamic_filters = true\n"
    )
}

/// Starts rumqttd in this process on a free port; it lives until the test process ends.
pub fn embedded_broker() -> u16 {
    let port = free_port();
    let config: rumqttd::Config = toml::from_str(&broker_toml(port)).unwrap();
    std::thread::spawn(move || {
        let mut b = rumqttd::Broker::new(config);
        let _ = b.start();
    });
    wait_port(port);
    port
}

fn wait_port(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("broker did not start on {port}");
}

/// A broker in its own process, which tests can SIGKILL and restart.
pub struct BrokerProcess {
    pub port: u16,
    child: Option<Child>,
}

fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let bin = dir.join(name);
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", "outpost-agent", "--example", name])
            .args(
                std::env::var("OUTPOST_TEST_TARGET")
                    .map(|t| vec!["--target".to_string(), t])
                    .unwrap_or_default(),
            )
            .status()
            .unwrap();
        assert!(st.success());
    }
    bin
}

impl BrokerProcess {
    pub fn start() -> Self {
        let mut b = Self {
            port: free_port(),
            child: None,
        };
        b.restart();
        b
    }

    pub fn restart(&mut self) {
        let child = super::command(example_bin("test_broker"))
            .arg(self.port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_port(self.port);
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the peer has seen and served.
#[derive(Default)]
pub struct PeerLog {
    pub states: HashMap<String, ReportedState>,
    pub presence: HashMap<String, bool>,
    /// Payload chunk indices served, per device, in order.
    pub served: HashMap<String, Vec<u32>>,
}

/// A bridge stand-in: serves bundles to any device that asks, records state.
#[derive(Clone)]
pub struct Peer {
    pub client: AsyncClient,
    bundles: Arc<Mutex<BTreeMap<Digest, Arc<ServedBundle>>>>,
    pub log: Arc<Mutex<PeerLog>>,
    /// Delay before each served frame (to make transfers slow enough to interrupt).
    pub frame_delay: Arc<Mutex<Duration>>,
    /// Requests being answered right now.
    pub serving: Arc<std::sync::atomic::AtomicUsize>,
}

impl Peer {
    pub async fn connect(port: u16) -> Self {
        let mut o = MqttOptions::new(format!("peer-{}", free_port()), "127.0.0.1", port);
        o.set_max_packet_size(1 << 20, 1 << 20);
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut el) = AsyncClient::new(o, 1024);
        let peer = Peer {
            client: client.clone(),
            bundles: Arc::default(),
            log: Arc::default(),
            frame_delay: Arc::new(Mutex::new(Duration::ZERO)),
            serving: Arc::default(),
        };
        let p = peer.clone();
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for f in topics::BRIDGE_SUBSCRIPTIONS {
                            let _ = p.client.subscribe(f, QoS::AtLeastOnce).await;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(m))) => {
                        p.on_publish(m.topic, m.payload.to_vec())
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        peer
    }

    pub fn serve(&self, bundle_bytes: Vec<u8>) -> Arc<ServedBundle> {
        let b = Arc::new(ServedBundle::new(bundle_bytes).unwrap());
        self.bundles.lock().unwrap().insert(b.digest(), b.clone());
        b
    }

    fn on_publish(&self, topic: String, payload: Vec<u8>) {
        let Some((dev, kind)) = topics::parse(&topic) else {
            return;
        };
        let dev = dev.to_owned();
        let limits = Limits::default();
        match kind {
            DeviceTopic::State => {
                if let Ok(s) = ReportedState::decode(&payload, &limits) {
                    self.log.lock().unwrap().states.insert(dev, s);
                }
            }
            DeviceTopic::Presence => {
                if let Ok(p) = Presence::decode(&payload, &limits) {
                    self.log.lock().unwrap().presence.insert(dev, p.online);
                }
            }
            DeviceTopic::ChunkRequest => {
                let Ok(req) = ChunkRequest::decode(&payload, &limits) else {
                    return;
                };
                let Some(b) = self.bundles.lock().unwrap().get(&req.bundle).cloned() else {
                    return;
                };
                let me = self.clone();
                me.serving.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    for f in b.respond(&req) {
                        let d = *me.frame_delay.lock().unwrap();
                        if !d.is_zero() {
                            tokio::time::sleep(d).await;
                        }
                        if f.kind == outpost_protocol::wire::PartKind::Chunk {
                            me.log
                                .lock()
                                .unwrap()
                                .served
                                .entry(dev.clone())
                                .or_default()
                                .push(f.index);
                        }
                        let _ = me
                            .client
                            .publish(
                                topics::chunk_response(&dev),
                                QoS::AtLeastOnce,
                                false,
                                f.encode(),
                            )
                            .await;
                    }
                    me.serving.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
            _ => {}
        }
    }

    pub async fn publish_directive(&self, device: &str, signed: Vec<u8>) {
        self.client
            .publish(topics::directive(device), QoS::AtLeastOnce, true, signed)
            .await
            .unwrap();
    }

    pub fn state(&self, device: &str) -> Option<ReportedState> {
        self.log.lock().unwrap().states.get(device).cloned()
    }

    pub fn served(&self, device: &str) -> Vec<u32> {
        self.log
            .lock()
            .unwrap()
            .served
            .get(device)
            .cloned()
            .unwrap_or_default()
    }
}

impl Peer {
    /// Forgets what was served to `device`.
    pub fn clear_served(&self, device: &str) {
        self.log.lock().unwrap().served.remove(device);
    }

    /// Whether no request is being answered.
    pub fn idle(&self) -> bool {
        self.serving.load(std::sync::atomic::Ordering::SeqCst) == 0
    }
}
