//! `outpost-sim bench-scale`: N simulated gateways converge on a ~5 MB bundle. Reports the
//! time to converge, payload bytes served per device as a ratio of the bundle size, and
//! the bridge's CPU time (its own tokio runtime and broker threads, read from
//! /proc/self/task in the same run).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use outpost_bridge::fleet::{CreateDeployment, GateSpec, Selector, StrategySpec};
use outpost_bridge::registry::{self, RegisterRequest};
use outpost_bridge::server::{self, BrokerChoice, ServeConfig};

use crate::fleet::{DeviceOptions, DeviceSpec, SimFleet, device_seed};

/// Settings.
#[derive(Debug, Clone)]
pub struct ScaleOptions {
    /// Devices.
    pub devices: usize,
    /// Bundle size in MB (an incompressible extra file pads the model to this).
    pub bundle_mb: f64,
    /// External broker (host, port); None: the embedded one.
    pub broker: Option<(String, u16)>,
}

/// What was measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScaleReport {
    /// Devices.
    pub devices: usize,
    /// Bundle bytes.
    pub bundle_bytes: u64,
    /// Seconds from deployment to every device reporting success.
    pub converge_secs: f64,
    /// Devices on the new model at the end.
    pub converged: usize,
    /// Payload bytes served per device / bundle size.
    pub bytes_per_device_ratio: f64,
    /// Bundle reads from storage (cache misses).
    pub disk_reads: u64,
    /// Parts asked for again while still queued for the device (not sent twice).
    pub parts_deduplicated: u64,
    /// Parts refused because a serving queue was full (the device asks again).
    pub parts_dropped_busy: u64,
    /// Bridge CPU seconds during the rollout.
    pub bridge_cpu_secs: f64,
    /// Bridge CPU as a share of one core over the rollout.
    pub bridge_cpu_share: f64,
    /// Broker used.
    pub broker: String,
}

/// CPU seconds of this process's threads whose names start with one of `prefixes`.
fn threads_cpu(prefixes: &[&str]) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    let Ok(rd) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    rd.flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter_map(|stat| {
            let open = stat.find('(')?;
            let close = stat.rfind(')')?;
            let name = &stat[open + 1..close];
            if !prefixes.iter().any(|p| name.starts_with(p)) {
                return None;
            }
            let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
            let (u, s): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
            Some((u + s) / tick)
        })
        .sum()
}

/// Runs the benchmark.
pub async fn run(o: ScaleOptions) -> Result<ScaleReport, String> {
    let tmp = tempfile::Builder::new()
        .prefix("outpost-scale-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let models = crate::demo::write_fixtures(tmp.path()).map_err(|e| e.to_string())?;
    // The bridge on its own runtime with named threads, so its CPU can be told apart.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bridge-rt")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut cfg = ServeConfig::new(tmp.path().join("bridge"));
    cfg.broker = match &o.broker {
        Some((h, p)) => BrokerChoice::External {
            host: h.clone(),
            port: *p,
            credentials: None,
        },
        None => BrokerChoice::Embedded {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            auth: false,
        },
    };
    cfg.http = None;
    cfg.chunk_rate = 400.0;
    let bridge = rt
        .spawn(server::start(cfg))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let extra = tmp.path().join("weights.bin");
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let pad: Vec<u8> = (0..(o.bundle_mb * 1e6) as usize)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&extra, &pad).map_err(|e| e.to_string())?;
    let dir = models.join("vibration-anomaly");
    let req = RegisterRequest {
        name: "scale".into(),
        files: vec![dir.join("model.onnx"), extra],
        spec: Some(dir.join("spec.toml")),
        created_by: "bench".into(),
        ..Default::default()
    };
    let (rec, _) = registry::register(
        &mut bridge.db.lock(),
        &bridge.audit,
        bridge.bundles.as_ref(),
        &bridge.key,
        req,
    )
    .map_err(|e| e.to_string())?;
    println!(
        "bundle {} bytes in {} chunks; starting {} gateways",
        rec.bundle_size, rec.chunks, o.devices
    );

    let specs: Vec<DeviceSpec> = (0..o.devices)
        .map(|i| DeviceSpec {
            id: format!("gw-{i:04}"),
            seed: device_seed(1, i as u64),
            mode: outpost_agent::sensors::vibration::MachineMode::Normal,
            tags: Default::default(),
        })
        .collect();
    let opts = DeviceOptions {
        sensor: "none",
        telemetry_secs: 600,
        health_secs: 1,
        ..DeviceOptions::default()
    };
    let fleet = SimFleet::start(&bridge, &tmp.path().join("fleet"), &specs, &opts, false)
        .await
        .map_err(|e| e.to_string())?;
    let known = || {
        bridge
            .db
            .lock()
            .query_row("SELECT COUNT(*) FROM devices WHERE online = 1", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap_or(0) as usize
    };
    let t = Instant::now();
    while known() < o.devices && t.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "{} gateways online after {:.1}s",
        known(),
        t.elapsed().as_secs_f64()
    );

    let bridge_threads = [
        "bridge-rt",
        "outpost-broker",
        "outpost",
        "router",
        "mosquitto",
    ];
    let bytes0 = bridge
        .server
        .stats
        .bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    let cpu0 = threads_cpu(&bridge_threads);
    let start = Instant::now();
    let strategy = StrategySpec {
        waves: vec![1.0],
        timeout_secs: 3600,
        success_threshold: 1.0,
        error_threshold: 0.0,
        gates: GateSpec {
            max_error_rate: None,
            max_p99_us: None,
            max_output_shift: None,
            min_samples: 0,
            observe_secs: 0,
        },
        ..Default::default()
    }
    .build()
    .map_err(|e| e.to_string())?;
    let dep = bridge
        .fleet
        .create(CreateDeployment {
            model: "scale".into(),
            version: Some(rec.version),
            selector: Selector {
                ids: specs.iter().map(|s| s.id.clone()).collect(),
                tags: vec![],
            },
            strategy,
            actor: "bench".into(),
            reason: "scale benchmark".into(),
            skip_gates: false,
        })
        .map_err(|e| e.to_string())?;
    let mut last = 0;
    loop {
        let d = bridge.fleet.show(&dep.id).map_err(|e| e.to_string())?;
        let done = fleet
            .devices
            .iter()
            .filter(|x| {
                x.agent
                    .models
                    .only()
                    .is_some_and(|m| m.info.bundle.to_hex() == rec.digest)
            })
            .count();
        if done / 100 != last / 100 || done == o.devices {
            println!(
                "  {:>6.1}s: {done}/{} gateways on the new bundle ({})",
                start.elapsed().as_secs_f64(),
                o.devices,
                d.state
            );
            last = done;
        }
        if d.state != "running" || start.elapsed() > Duration::from_secs(3600) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let converge_secs = start.elapsed().as_secs_f64();
    let cpu = threads_cpu(&bridge_threads) - cpu0;
    let served = bridge
        .server
        .stats
        .bytes
        .load(std::sync::atomic::Ordering::Relaxed)
        - bytes0;
    let converged = fleet
        .devices
        .iter()
        .filter(|x| {
            x.agent
                .models
                .only()
                .is_some_and(|m| m.info.bundle.to_hex() == rec.digest)
        })
        .count();
    let stat = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let report = ScaleReport {
        devices: o.devices,
        bundle_bytes: rec.bundle_size,
        converge_secs,
        converged,
        bytes_per_device_ratio: served as f64 / o.devices as f64 / rec.bundle_size as f64,
        disk_reads: bridge
            .server
            .stats
            .disk_reads
            .load(std::sync::atomic::Ordering::Relaxed),
        parts_deduplicated: stat(&bridge.server.stats.deduplicated),
        parts_dropped_busy: stat(&bridge.server.stats.dropped_busy),
        bridge_cpu_secs: cpu,
        bridge_cpu_share: cpu / converge_secs,
        broker: o
            .broker
            .as_ref()
            .map(|(h, p)| format!("external {h}:{p}"))
            .unwrap_or_else(|| "embedded rumqttd".into()),
    };
    fleet.shutdown(Duration::from_secs(2)).await;
    rt.spawn(bridge.shutdown()).await.ok();
    // Inside an async context the runtime may not block on its own shutdown.
    rt.shutdown_background();
    Ok(report)
}
