//! A simulated fleet: N real agents (the agent library, each with its own data directory,
//! seeded simulated ADXL345 and fault proxy) talking to one bridge.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use outpost_agent::config::AgentConfig;
use outpost_agent::runtime::{self, RunningAgent};
use outpost_agent::sensors::sim::SimHandle;
use outpost_agent::sensors::vibration::MachineMode;
use outpost_bridge::server::Bridge;

use crate::proxy::{self, ProxyHandle};

/// Derives a per-device seed from the scenario seed (SplitMix64).
pub fn device_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(index + 1));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One device to simulate.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// Device id.
    pub id: String,
    /// Sensor seed.
    pub seed: u64,
    /// Machine behaviour.
    pub mode: MachineMode,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// Settings shared by every simulated device.
#[derive(Debug, Clone)]
pub struct DeviceOptions {
    /// Time between sensor windows.
    pub interval_ms: u64,
    /// Telemetry period.
    pub telemetry_secs: u64,
    /// Capture sample rate.
    pub sample_rate: f64,
    /// Health window.
    pub health_secs: u64,
    /// Store budget.
    pub store_bytes: u64,
    /// Sensor kind (`simulated` or `none`).
    pub sensor: &'static str,
    /// Drift window (samples per class) and check cadence.
    pub drift_window: usize,
    /// Drift check cadence.
    pub drift_check: usize,
    /// The model the sensor pipeline feeds (`[sensor] model`); None: the only model.
    pub sensor_model: Option<String>,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        Self {
            interval_ms: 150,
            telemetry_secs: 1,
            sample_rate: 0.05,
            health_secs: 3,
            store_bytes: 16 << 20,
            sensor: "simulated",
            drift_window: 96,
            drift_check: 16,
            sensor_model: None,
        }
    }
}

/// A running simulated device.
pub struct SimDevice {
    /// Id.
    pub id: String,
    /// The agent.
    pub agent: RunningAgent,
    /// Its link to the broker.
    pub proxy: ProxyHandle,
    /// Its machine.
    pub sim: Option<SimHandle>,
    /// Its data directory.
    pub data_dir: PathBuf,
}

/// The fleet.
pub struct SimFleet {
    /// Devices, by id order.
    pub devices: Vec<SimDevice>,
}

/// Why the fleet could not start.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// An agent failed to start.
    #[error("device {id}: {message}")]
    Agent {
        /// Device.
        id: String,
        /// Why.
        message: String,
    },
    /// IO.
    #[error("simulator: {0}")]
    Io(#[from] std::io::Error),
}

fn config(
    spec: &DeviceSpec,
    o: &DeviceOptions,
    proxy: SocketAddr,
    data: &Path,
    trust: &Path,
    key: &Path,
    password: Option<&Path>,
) -> String {
    let creds = password
        .map(|p| {
            format!(
                "username = \"{}\"\npassword_file = \"{}\"\n",
                spec.id,
                p.display()
            )
        })
        .unwrap_or_default();
    let tags: String = spec
        .tags
        .iter()
        .map(|(k, v)| format!("{k} = {v:?}\n"))
        .collect();
    format!(
        "device_id = \"{id}\"\ndata_dir = \"{data}\"\ntrust_dir = \"{trust}\"\nkey_file = \"{key}\"\nlog = \"warn\"\n\
         [tags]\n{tags}\
         [broker]\nurl = \"mqtt://{proxy}\"\nreconnect_min_ms = 200\nreconnect_max_ms = 2000\n{creds}\
         [api]\nhttp = \"\"\n\
         [update]\nrequest_timeout_ms = 3000\nhealth_secs = {health}\nhealth_inferences = 10000\n\
         [telemetry]\ninterval_secs = {tel}\n\
         [sync]\nlinger_ms = 200\n\
         [store]\nmax_bytes = {store}\n\
         [capture]\nsample_rate = {rate}\n\
         [drift]\nwindow = {dw}\ncheck_every = {dc}\n\
         [sensor]\nkind = \"{sensor}\"\nseed = {seed}\nmode = \"{mode}\"\ninterval_ms = {interval}\n{sensor_model}",
        id = spec.id,
        data = data.display(),
        trust = trust.display(),
        key = key.display(),
        health = o.health_secs,
        tel = o.telemetry_secs,
        store = o.store_bytes,
        rate = o.sample_rate,
        sensor = o.sensor,
        seed = spec.seed,
        mode = spec.mode.label(),
        interval = o.interval_ms,
        dw = o.drift_window,
        dc = o.drift_check,
        sensor_model = o
            .sensor_model
            .as_ref()
            .map(|m| format!("model = {m:?}\n"))
            .unwrap_or_default(),
    )
}

impl SimFleet {
    /// Starts every device against `bridge`'s broker, under `root`. Devices get broker
    /// credentials when `provision` is set (the bridge's broker requires them).
    pub async fn start(
        bridge: &Bridge,
        root: &Path,
        specs: &[DeviceSpec],
        o: &DeviceOptions,
        provision: bool,
    ) -> Result<Self, FleetError> {
        let trust = root.join("trust");
        std::fs::create_dir_all(&trust)?;
        std::fs::write(
            trust.join(format!("{}.pub", bridge.key.id())),
            bridge.key.public_key().to_file_contents(),
        )?;
        let upstream: SocketAddr = format!("{}:{}", bridge.broker.0, bridge.broker.1)
            .parse()
            .map_err(|_| std::io::Error::other("broker address"))?;
        let mut devices = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let dir = root.join(&spec.id);
            std::fs::create_dir_all(&dir)?;
            let password = if provision {
                let out = dir.join("provisioned");
                let tags: Vec<String> = spec.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let target = spec
                    .tags
                    .get("target")
                    .cloned()
                    .unwrap_or_else(|| "x86_64-unknown-linux-gnu".into());
                outpost_bridge::devices::add(
                    &bridge.db.lock(),
                    &bridge.audit,
                    &spec.id,
                    &tags,
                    &target,
                    "mqtt://simulated",
                    &bridge.key.public_key(),
                    &out,
                    "simulator",
                )
                .map_err(|e| FleetError::Agent {
                    id: spec.id.clone(),
                    message: e.to_string(),
                })?;
                Some(out.join("password"))
            } else {
                // An open broker still hears only devices with a key the bridge knows.
                let out = dir.join("provisioned");
                std::fs::create_dir_all(&out)?;
                let key = outpost_protocol::SigningKey::generate()
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                std::fs::write(out.join("device.key"), key.to_file_contents())?;
                outpost_bridge::device_auth::add_key(
                    &bridge.db.lock(),
                    &spec.id,
                    &key.public_key(),
                )
                .map_err(|e| std::io::Error::other(e.to_string()))?;
                None
            };
            let proxy = proxy::start(upstream, device_seed(spec.seed, 1_000 + i as u64)).await?;
            let text = config(
                spec,
                o,
                proxy.addr,
                &dir.join("data"),
                &trust,
                &dir.join("provisioned").join("device.key"),
                password.as_deref(),
            );
            let cfg = AgentConfig::from_toml(&text).map_err(|e| FleetError::Agent {
                id: spec.id.clone(),
                message: e.to_string(),
            })?;
            let agent = runtime::start(cfg, Vec::new())
                .await
                .map_err(|e| FleetError::Agent {
                    id: spec.id.clone(),
                    message: e.to_string(),
                })?;
            let sim = agent.pipeline.as_ref().and_then(|p| p.sim.clone());
            devices.push(SimDevice {
                id: spec.id.clone(),
                agent,
                proxy,
                sim,
                data_dir: dir.join("data"),
            });
        }
        Ok(Self { devices })
    }

    /// A device by id.
    pub fn get(&self, id: &str) -> Option<&SimDevice> {
        self.devices.iter().find(|d| d.id == id)
    }

    /// Records appended, still stored, and evicted, summed over devices and streams.
    pub fn record_counts(&self) -> (u64, u64, u64) {
        let mut t = (0, 0, 0);
        for d in &self.devices {
            if let Some(s) = &d.agent.store {
                for st in outpost_agent::sync::lock(s).stats().values() {
                    t.0 += st.appended;
                    t.1 += st.records;
                    t.2 += st.evicted;
                }
            }
        }
        t
    }

    /// Uplink bytes on the wire, summed.
    pub fn uplink_bytes(&self) -> u64 {
        self.devices
            .iter()
            .map(|d| {
                d.agent
                    .uplink
                    .wire_bytes
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum()
    }

    /// Stops every device (each flushes what it can).
    pub async fn shutdown(self, grace: Duration) {
        let stops: Vec<_> = self
            .devices
            .into_iter()
            .map(|d| tokio::spawn(d.agent.shutdown(grace)))
            .collect();
        for s in stops {
            let _ = s.await;
        }
    }
}
