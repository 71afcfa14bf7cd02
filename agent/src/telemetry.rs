//! Periodic telemetry into the store's `telemetry` stream.
//!
//! Every interval the agent appends three records (`outpost_protocol::records::Telemetry`,
//! `kind` says which):
//! - `inference`: one per active model, the deltas since the last report of requests,
//!   samples, errors, rejected inputs and the latency histogram, p50/p99, and the label
//!   mix of its answers (what the bridge's behaviour gates and output-drift checks
//!   consume);
//! - `system`: CPU %, memory, disk of the data directory, the hottest temperature sensor
//!   (where the platform has one), the agent's own RSS;
//! - `agent`: store size, budget, backlog / evictions / refusals per stream, link state and
//!   reconnects, pipeline counters, captures, uplink bytes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use outpost_protocol::Digest;
use outpost_protocol::records::{self, AgentReport, InferenceReport, SystemReport, Telemetry};
use sysinfo::{Components, Disks, Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::sync::{Notify, watch};

use crate::link::LinkHandle;
use crate::models::{BUCKETS_US, ModelHandle, StatsSnapshot};
use crate::pipeline::PipelineStats;
use crate::recorder::RecorderStats;
use crate::store::NewRecord;
use crate::sync::{SharedStore, UplinkCounters, lock};

/// Telemetry period unless `[telemetry] interval_secs` says otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// `[telemetry]` as written in the file (`interval_secs = 60`).
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    interval_secs: Option<u64>,
}

impl TelemetrySection {
    /// The validated period (at least 1 s); the error names the file key.
    pub fn resolve(self) -> Result<Duration, crate::settings::InvalidSetting> {
        let interval = self
            .interval_secs
            .map_or(DEFAULT_INTERVAL, Duration::from_secs);
        if interval.is_zero() {
            return Err(crate::settings::InvalidSetting::new(
                "telemetry.interval_secs",
                "must be at least 1",
            ));
        }
        Ok(interval)
    }
}

/// What telemetry reads from.
#[derive(Clone)]
pub struct Sources {
    /// Active model.
    pub models: ModelHandle,
    /// Store.
    pub store: SharedStore,
    /// Link.
    pub link: LinkHandle,
    /// Pipeline counters, if a sensor runs.
    pub pipeline: Option<Arc<PipelineStats>>,
    /// Recorder counters.
    pub recorder: Arc<RecorderStats>,
    /// Uplink counters.
    pub uplink: Arc<UplinkCounters>,
    /// Data directory (for disk figures).
    pub data_dir: PathBuf,
}

/// Collects reports.
pub struct Collector {
    sys: System,
    last_model: BTreeMap<String, (Digest, StatsSnapshot)>,
    last_at_ms: u64,
}

impl Default for Collector {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector {
    /// A collector (the first CPU figure needs two samples; it reads 0 until then).
    pub fn new() -> Self {
        Self {
            sys: System::new(),
            last_model: BTreeMap::new(),
            last_at_ms: crate::clock::unix_ms(),
        }
    }

    /// The three report bodies for now.
    pub fn collect(&mut self, s: &Sources) -> Vec<Vec<u8>> {
        let now = crate::clock::unix_ms();
        let window_s = (now.saturating_sub(self.last_at_ms)) as f64 / 1000.0;
        self.last_at_ms = now;
        let mut out = Vec::new();
        let mut labels = s.recorder.take_labels();
        let models = s.models.list();
        self.last_model
            .retain(|name, _| models.iter().any(|m| m.name() == name));
        for m in models {
            let snap = m.stats.snapshot();
            let base = match self.last_model.get(m.name()) {
                Some((d, prev)) if *d == m.info.bundle => prev.clone(),
                _ => StatsSnapshot::default(),
            };
            let d = snap.since(&base);
            let mix = labels.remove(&format!("{}@{}", m.info.model.name, m.info.model.version));
            out.push(Telemetry::Inference(InferenceReport {
                ts_ms: now,
                window_s,
                model: m.info.model.clone(),
                bundle: m.info.bundle,
                requests: d.requests,
                samples: d.samples,
                errors: d.errors,
                rejected: d.rejected,
                latency_sum_us: d.latency_sum_us,
                latency_buckets_us: BUCKETS_US
                    .iter()
                    .map(|b| (*b != u64::MAX).then_some(*b))
                    .collect(),
                latency_counts: d.buckets.to_vec(),
                p50_us: d.quantile_us(0.5),
                p99_us: d.quantile_us(0.99),
                labels: mix.unwrap_or_default().into_iter().collect(),
                drift: s.recorder.drift_of(m.name()),
            }));
            self.last_model
                .insert(m.name().to_owned(), (m.info.bundle, snap));
        }
        out.push(self.system(now, s));
        out.push(agent_report(now, s));
        out.iter().map(records::encode).collect()
    }

    fn system(&mut self, now: u64, s: &Sources) -> Telemetry {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        let pid = Pid::from_u32(std::process::id());
        self.sys.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            true,
            ProcessRefreshKind::nothing().with_memory(),
        );
        let rss = self.sys.process(pid).map(|p| p.memory());
        let disks = Disks::new_with_refreshed_list();
        // The disk holding the data directory: the longest mount point that prefixes it.
        let dir = std::fs::canonicalize(&s.data_dir).unwrap_or_else(|_| s.data_dir.clone());
        let disk = disks
            .list()
            .iter()
            .filter(|d| dir.starts_with(d.mount_point()))
            .max_by_key(|d| d.mount_point().as_os_str().len());
        let temperature = Components::new_with_refreshed_list()
            .list()
            .iter()
            .filter_map(|c| c.temperature())
            .filter(|t| t.is_finite())
            .reduce(f32::max);
        Telemetry::System(SystemReport {
            ts_ms: now,
            cpu_pct: self.sys.global_cpu_usage(),
            mem_used: self.sys.used_memory(),
            mem_total: self.sys.total_memory(),
            rss_bytes: rss,
            disk_free: disk.map(|d| d.available_space()),
            disk_total: disk.map(|d| d.total_space()),
            temperature_c: temperature,
        })
    }
}

fn agent_report(now: u64, s: &Sources) -> Telemetry {
    let (used, budget, streams) = {
        let st = lock(&s.store);
        (st.used_bytes(), st.budget(), st.stats().clone())
    };
    let per = |f: fn(&crate::store::StreamStats) -> u64| -> BTreeMap<String, u64> {
        streams.iter().map(|(k, v)| (k.clone(), f(v))).collect()
    };
    let p = s.pipeline.as_ref();
    Telemetry::Agent(AgentReport {
        ts_ms: now,
        store_bytes: used,
        store_budget: budget,
        backlog: per(|v| v.records),
        evicted: per(|v| v.evicted),
        rejected: per(|v| v.rejected),
        connected: s.link.is_connected(),
        reconnects: s.link.stats.reconnects.load(Relaxed),
        pipeline_windows: p.map(|p| p.windows.load(Relaxed)),
        sensor_errors: p.map(|p| p.sensor_errors.load(Relaxed)),
        inference_errors: p.map(|p| p.inference_errors.load(Relaxed)),
        captures: s.recorder.captures.load(Relaxed),
        captures_skipped_by_cap: s.recorder.skipped_by_cap.load(Relaxed),
        served_dropped: s.recorder.served_dropped.load(Relaxed),
        uplink_batches: s.uplink.batches.load(Relaxed),
        uplink_wire_bytes: s.uplink.wire_bytes.load(Relaxed),
        uplink_raw_bytes: s.uplink.raw_bytes.load(Relaxed),
    })
}

/// Appends a report every `interval` until shutdown.
pub async fn run(
    interval: Duration,
    sources: Sources,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut c = Collector::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; report after one interval
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {}
        }
        let bodies = c.collect(&sources);
        let ts = crate::clock::unix_ms();
        let recs: Vec<NewRecord<'_>> = bodies
            .iter()
            .map(|b| NewRecord {
                stream: records::TELEMETRY,
                ts_ms: ts,
                body: b,
            })
            .collect();
        if let Err(e) = lock(&sources.store).append(&recs) {
            tracing::error!(error = %e, "telemetry append failed");
        }
        wake.notify_one();
    }
}
