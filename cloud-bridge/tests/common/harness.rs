//! An in-process bridge and agents for end-to-end tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use outpost_agent::config::AgentConfig;
use outpost_agent::runtime::{self, RunningAgent};
use outpost_bridge::fleet::{self, StrategySpec};
use outpost_bridge::registry::{self, ModelRecord, RegisterRequest};
use outpost_bridge::server::{self, Bridge, BrokerChoice, ServeConfig};
use outpost_protocol::wire::{ModelState, UpdatePhase};

use super::models;

/// A bridge on free ports with its data in `dir`.
pub async fn bridge(dir: &Path, broker: BrokerChoice) -> Bridge {
    bridge_with(dir, broker, |_| {}).await
}

/// A bridge on free ports with its data in `dir`, its config adjusted by `f`.
pub async fn bridge_with(
    dir: &Path,
    broker: BrokerChoice,
    f: impl FnOnce(&mut ServeConfig),
) -> Bridge {
    let mut cfg = ServeConfig::new(dir.to_path_buf());
    cfg.broker = broker;
    f(&mut cfg);
    cfg.http = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.fleet_tick = Duration::from_millis(100);
    let b = server::start(cfg).await.unwrap();
    assert!(
        wait_until(20, || *b.connected.borrow()).await,
        "bridge never connected to its broker"
    );
    b
}

/// Embedded broker on a free port.
pub fn embedded(auth: bool) -> BrokerChoice {
    BrokerChoice::Embedded {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        auth,
    }
}

/// Registers a fixture directory (`vibration-anomaly`, …) under `name`.
pub fn register(b: &Bridge, fixture: &str, name: &str) -> ModelRecord {
    register_with(b, fixture, name, 16 * 1024).unwrap()
}

/// Registers a fixture directory (with its `spec.toml`, if it has one) under `name` with
/// `chunk_size`-byte chunks.
pub fn register_with(
    b: &Bridge,
    fixture: &str,
    name: &str,
    chunk_size: u32,
) -> Result<ModelRecord, registry::RegistryError> {
    register_req(b, fixture, name, chunk_size, None)
}

/// Registers with a declared memory requirement (`memory_bytes`).
pub fn register_req(
    b: &Bridge,
    fixture: &str,
    name: &str,
    chunk_size: u32,
    memory_bytes: Option<u64>,
) -> Result<ModelRecord, registry::RegistryError> {
    let dir = models().join(fixture);
    let spec = dir.join("spec.toml");
    let req = RegisterRequest {
        name: name.into(),
        files: vec![dir.join("model.onnx")],
        spec: spec.exists().then_some(spec),
        created_by: "test".into(),
        reason: format!("{fixture} for tests"),
        chunk_size: Some(chunk_size),
        memory_bytes,
        ..Default::default()
    };
    registry::register(&mut b.db.lock(), &b.audit, b.bundles.as_ref(), &b.key, req).map(|r| r.0)
}

/// Writes the bridge's public key as a trust directory.
pub fn trust_dir(b: &Bridge, dir: &Path) -> PathBuf {
    let t = dir.join("trust");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(
        t.join(format!("{}.pub", b.key.id())),
        b.key.public_key().to_file_contents(),
    )
    .unwrap();
    t
}

/// A device key for `device` next to `data`, registered with the bridge (what
/// `device add` does); returns the key file.
pub fn device_key(b: &Bridge, device: &str, data: &Path) -> PathBuf {
    let dir = data.parent().unwrap_or(data);
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("{device}.key"));
    let key = match outpost_protocol::SigningKey::load(&path) {
        Ok(k) => k,
        Err(_) => {
            let k = outpost_protocol::SigningKey::generate().unwrap();
            std::fs::write(&path, k.to_file_contents()).unwrap();
            k
        }
    };
    outpost_bridge::device_auth::add_key(&b.db.lock(), device, &key.public_key()).unwrap();
    path
}

/// Agent config text on `b`'s broker, with a registered device key.
pub fn agent_toml(b: &Bridge, device: &str, data: &Path, trust: &Path, extra: &str) -> String {
    let key = device_key(b, device, data);
    format!(
        "device_id = \"{device}\"\ndata_dir = \"{}\"\ntrust_dir = \"{}\"\nkey_file = \"{}\"\n\
         [broker]\nurl = \"mqtt://{}:{}\"\nreconnect_min_ms = 50\nreconnect_max_ms = 1000\n\
         [api]\nhttp = \"127.0.0.1:0\"\n\
         [update]\nrequest_timeout_ms = 2000\nhealth_secs = 1\nhealth_inferences = 3\n\
         [telemetry]\ninterval_secs = 1\n\
         [sync]\nlinger_ms = 100\n{extra}",
        data.display(),
        trust.display(),
        key.display(),
        b.broker.0,
        b.broker.1
    )
}

/// Starts an in-process agent.
pub async fn agent(toml: &str) -> RunningAgent {
    runtime::start(AgentConfig::from_toml(toml).unwrap(), Vec::new())
        .await
        .unwrap()
}

/// A one-wave strategy that finishes fast.
pub fn quick_strategy() -> fleet::machine::Strategy {
    StrategySpec {
        waves: vec![1.0],
        timeout_secs: 60,
        gates: fleet::GateSpec {
            max_error_rate: None,
            max_output_shift: None,
            min_samples: 0,
            observe_secs: 0,
            ..Default::default()
        },
        ..Default::default()
    }
    .build()
    .unwrap()
}

/// What `dev` last reported about `model` (`None`: not reported, or not on the device).
pub fn model_state(b: &Bridge, dev: &str, model: &str) -> Option<ModelState> {
    outpost_bridge::devices::show(&b.db.lock(), dev)
        .ok()?
        .state?
        .model(model)
        .cloned()
}

/// Waits until `dev` is known to the bridge (provisioned, or reported once).
pub async fn known(b: &Bridge, dev: &str) {
    assert!(
        wait_until(20, || outpost_bridge::devices::show(&b.db.lock(), dev)
            .is_ok())
        .await,
        "{dev} never reported"
    );
}

/// Deploys `model:version` to `devices` with `strategy`; returns the deployment id. A
/// device's earlier deployment of the model may still be finishing (the engine marks it
/// succeeded on its next pass after the device reports): wait for it, as an operator would.
pub async fn deploy_with(
    b: &Bridge,
    model: &str,
    version: u32,
    devices: &[&str],
    strategy: fleet::machine::Strategy,
) -> String {
    let busy = || {
        devices.iter().any(|d| {
            b.fleet
                .list(&fleet::DeploymentFilter {
                    model: Some(model.into()),
                    device: Some(d.to_string()),
                    ..Default::default()
                })
                .unwrap()
                .iter()
                .any(|x| x.state == "running" || x.state == "rolling_back")
        })
    };
    wait_until(30, || !busy()).await;
    b.fleet
        .create(fleet::CreateDeployment {
            model: model.into(),
            version: Some(version),
            selector: fleet::Selector {
                ids: devices.iter().map(|d| d.to_string()).collect(),
                tags: Vec::new(),
            },
            strategy,
            actor: "test".into(),
            reason: "test".into(),
            skip_gates: false,
        })
        .unwrap()
        .id
}

/// Deploys `model:version` to `devices` (each known to the bridge) with
/// [`quick_strategy`].
pub async fn deploy(b: &Bridge, model: &str, version: u32, devices: &[&str]) -> String {
    deploy_with(b, model, version, devices, quick_strategy()).await
}

/// Waits up to `secs` for deployment `id` to end (succeeded, aborted, rolled back).
pub async fn finished(b: &Bridge, id: &str, secs: u64) -> bool {
    wait_until(secs, || b.fleet.show(id).unwrap().detail.terminal()).await
}

/// Waits until every device is known, then [`deploy`]s.
pub async fn deploy_known(b: &Bridge, model: &str, version: u32, devices: &[&str]) -> String {
    for d in devices {
        known(b, d).await;
    }
    deploy(b, model, version, devices).await
}

/// Waits up to `secs` for `dev` to report `model` at `version`, its update succeeded.
pub async fn settled(b: &Bridge, dev: &str, model: &str, version: u32, secs: u64) -> bool {
    wait_until(secs, || {
        model_state(b, dev, model).is_some_and(|m| {
            m.phase == UpdatePhase::Succeeded
                && m.active
                    .as_ref()
                    .is_some_and(|a| a.model.version == version)
        })
    })
    .await
}

/// Polls `f` every 25 ms until it holds or `secs` pass.
pub async fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    f()
}

/// Where mosquitto is, if installed (see [`outpost_testkit::mosquitto::find`]).
pub fn mosquitto() -> Option<PathBuf> {
    outpost_testkit::mosquitto::find()
}

/// A mosquitto process on a loopback port, anonymous access, no persistence.
pub struct Mosquitto {
    pub port: u16,
    _broker: outpost_testkit::mosquitto::Mosquitto,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start(bin: &Path) -> Self {
        Self::start_on(bin, outpost_testkit::mosquitto::free_port())
    }

    pub fn start_on(bin: &Path, port: u16) -> Self {
        Self::start_conf(bin, port, "max_packet_size 1048576\n")
    }

    /// With extra configuration lines (e.g. `max_packet_size 131072`).
    pub fn start_conf(bin: &Path, port: u16, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{extra}"),
        )
        .unwrap();
        Self {
            port,
            _broker: outpost_testkit::mosquitto::Mosquitto::from_config(bin, &conf, &[port]),
            _dir: dir,
        }
    }
}

/// The real `outpost-agent` binary as a process.
pub struct AgentProcess {
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<std::process::Child>,
}

impl AgentProcess {
    pub fn new(dir: &Path, toml: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("agent.toml");
        std::fs::write(&config, toml).unwrap();
        Self {
            config,
            log: dir.join("agent.log"),
            child: None,
        }
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Some(
            std::process::Command::new(super::workspace_bin("outpost-agent", "outpost-agent"))
                .args(["run", "--config"])
                .arg(&self.config)
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (the agent flushes and exits).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            for _ in 0..200 {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A rumqttd broker process (the agent crate's test_broker example) to stop and restart.
pub struct BrokerProcess {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl BrokerProcess {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut b = Self { port, child: None };
        b.restart();
        b
    }

    fn bin() -> PathBuf {
        let exe = std::env::current_exe().unwrap();
        let bin = exe
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("examples/test_broker");
        if !bin.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            assert!(
                std::process::Command::new(cargo)
                    .args(["build", "-p", "outpost-agent", "--example", "test_broker"])
                    .status()
                    .unwrap()
                    .success()
            );
        }
        bin
    }

    pub fn restart(&mut self) {
        self.child = Some(
            std::process::Command::new(Self::bin())
                .arg(self.port.to_string())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("broker did not start");
    }

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

/// Every (stream, seq) the bridge holds for `device`, with a duplicate check.
pub fn bridge_seqs(
    b: &outpost_bridge::server::Bridge,
    device: &str,
) -> std::collections::BTreeMap<String, Vec<(u64, u64)>> {
    let c = b.db.lock();
    let mut q = c
        .prepare("SELECT stream, seq, ts_ms FROM records WHERE device = ?1 ORDER BY stream, seq")
        .unwrap();
    let rows = q
        .query_map([device], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
            ))
        })
        .unwrap();
    let mut out: std::collections::BTreeMap<String, Vec<(u64, u64)>> = Default::default();
    for r in rows {
        let (s, seq, ts) = r.unwrap();
        out.entry(s).or_default().push((seq, ts));
    }
    out
}
