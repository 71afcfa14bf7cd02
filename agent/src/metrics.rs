//! `GET /metrics` on the local API: the agent's state in the Prometheus text format
//! (OpenMetrics when the scraper asks; see [`outpost_net::metrics`]).
//!
//! Every series is read at scrape time from the counters the agent already keeps — the
//! per-model [`crate::models::ModelStats`], the store's per-stream figures, the link and
//! uplink counters, the updater's reported state — so nothing is counted twice and a
//! scrape costs a few locks and one indexed query per stream. The API is local (127.0.0.1
//! and a Unix socket) and, like the rest of it, has no authentication.
//!
//! | series | type | labels | meaning |
//! |---|---|---|---|
//! | `outpost_agent_inference_requests_total` | counter | model, version | calls that ran the model (successes and errors) |
//! | `outpost_agent_inference_errors_total` | counter | model, version | calls where the model failed |
//! | `outpost_agent_inference_rejected_total` | counter | model, version | requests refused before the model ran (bad input) |
//! | `outpost_agent_inference_samples_total` | counter | model, version | samples scored |
//! | `outpost_agent_inference_duration_seconds` | histogram | model, version | latency of calls that ran the model |
//! | `outpost_agent_model_update_phase` | gauge | model, phase | 1 for the model's current update phase, 0 for the others |
//! | `outpost_agent_model_health` | gauge | model, health | 1 for the model's health, 0 for the others |
//! | `outpost_agent_model_update_chunks` | gauge | model, state (done, total) | download progress of the model's update |
//! | `outpost_agent_store_bytes` | gauge | stream | accounted bytes held |
//! | `outpost_agent_store_budget_bytes` | gauge | | the store's byte budget |
//! | `outpost_agent_store_records` | gauge | stream | records held: the sync backlog (every record waits for the bridge's ack) |
//! | `outpost_agent_store_appended_records_total` | counter | stream | records ever appended |
//! | `outpost_agent_store_evicted_records_total` | counter | stream | records evicted for space |
//! | `outpost_agent_store_rejected_records_total` | counter | stream | records refused (over budget, too large) |
//! | `outpost_agent_sync_lag_seconds` | gauge | stream | age of the oldest record not yet acknowledged (0: none) |
//! | `outpost_agent_sync_acked_records_total` | counter | | records deleted after the bridge's ack |
//! | `outpost_agent_sync_batches_total` | counter | | uplink batches published |
//! | `outpost_agent_sync_sent_bytes_total` | counter | | compressed uplink bytes published |
//! | `outpost_agent_link_connected` | gauge | | 1 while the MQTT link is up |
//! | `outpost_agent_link_reconnects_total` | counter | | successful connections after the first |
//! | `outpost_agent_link_connect_failures_total` | counter | | failed connection attempts |
//! | `outpost_agent_captures_total` | counter | | captures stored |
//! | `outpost_agent_captures_dropped_total` | counter | reason (cap, behind) | captures skipped by the hourly cap or because the recorder was behind |
//! | `outpost_agent_http_*` | | listener (tcp, unix) | the API listeners' connection counters |

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use outpost_net::ConnStats;
use outpost_net::metrics::prometheus_client::collector::Collector;
use outpost_net::metrics::prometheus_client::encoding::DescriptorEncoder;
use outpost_net::metrics::prometheus_client::registry::Registry;
use outpost_net::metrics::{ConnCollector, HistogramRow, Labels, counter, gauge, histogram};
use outpost_protocol::wire::{Health, ReportedState, UpdatePhase};
use tokio::sync::watch;

use crate::link::LinkHandle;
use crate::models::{BUCKETS_US, ModelHandle};
use crate::recorder::RecorderStats;
use crate::sync::{SharedStore, UplinkCounters, lock};

/// Every update phase, so a model's phase gauges always add up to 1.
const PHASES: [UpdatePhase; 8] = [
    UpdatePhase::Idle,
    UpdatePhase::Downloading,
    UpdatePhase::Installing,
    UpdatePhase::Probation,
    UpdatePhase::Succeeded,
    UpdatePhase::Failed,
    UpdatePhase::RolledBack,
    UpdatePhase::Removing,
];

/// Every health value.
const HEALTHS: [Health; 3] = [Health::Ok, Health::Degraded, Health::NoModel];

/// What the agent's metrics read.
#[derive(Clone)]
pub struct Sources {
    /// The active models and their counters.
    pub models: ModelHandle,
    /// The offline store (None when it could not be opened).
    pub store: Option<SharedStore>,
    /// The MQTT link.
    pub link: LinkHandle,
    /// Uplink counters.
    pub uplink: Arc<UplinkCounters>,
    /// Recorder counters.
    pub recorder: Arc<RecorderStats>,
    /// The updater's latest reported state (per-model phases).
    pub report: watch::Receiver<Option<ReportedState>>,
    /// The TCP listener's connection counters.
    pub http: Arc<ConnStats>,
    /// The Unix-socket listener's connection counters.
    pub unix: Arc<ConnStats>,
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

/// The route `GET /metrics` over `sources`, to merge into the API router.
pub fn routes(sources: Sources) -> Router {
    let mut registry = Registry::with_prefix("outpost_agent");
    registry.register_collector(Box::new(
        ConnCollector::default()
            .listener("tcp", sources.http.clone())
            .listener("unix", sources.unix.clone()),
    ));
    registry.register_collector(Box::new(AgentCollector(sources)));
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Arc::new(registry))
}

async fn scrape(State(registry): State<Arc<Registry>>, headers: HeaderMap) -> Response {
    // Collecting locks the store and queries it: off the async workers.
    tokio::task::spawn_blocking(move || outpost_net::metrics::respond(&registry, &headers))
        .await
        .unwrap_or_else(|e| {
            crate::api::ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("metrics task failed: {e}"),
            )
            .into_response()
        })
}

/// Reads [`Sources`] at each scrape.
struct AgentCollector(Sources);

impl fmt::Debug for AgentCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgentCollector")
    }
}

fn name_of<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

impl Collector for AgentCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let s = &self.0;
        self.inference(&mut enc)?;
        self.updates(&mut enc)?;
        if let Some(store) = &s.store {
            store_series(&mut enc, store)?;
        }
        let none: Labels = Vec::new();
        counter(
            &mut enc,
            "sync_acked_records",
            "Records deleted after the bridge acknowledged them.",
            &[(none.clone(), s.uplink.acked_records.load(Relaxed))],
        )?;
        counter(
            &mut enc,
            "sync_batches",
            "Uplink batches published.",
            &[(none.clone(), s.uplink.batches.load(Relaxed))],
        )?;
        counter(
            &mut enc,
            "sync_sent_bytes",
            "Compressed uplink bytes published.",
            &[(none.clone(), s.uplink.wire_bytes.load(Relaxed))],
        )?;
        gauge(
            &mut enc,
            "link_connected",
            "1 while the MQTT link to the broker is up.",
            &[(none.clone(), f64::from(u8::from(s.link.is_connected())))],
        )?;
        counter(
            &mut enc,
            "link_reconnects",
            "Successful connections to the broker after the first.",
            &[(none.clone(), s.link.stats.reconnects.load(Relaxed))],
        )?;
        counter(
            &mut enc,
            "link_connect_failures",
            "Failed connection attempts to the broker.",
            &[(none.clone(), s.link.stats.connect_failures.load(Relaxed))],
        )?;
        counter(
            &mut enc,
            "captures",
            "Captured inputs and outputs stored.",
            &[(none, s.recorder.captures.load(Relaxed))],
        )?;
        counter(
            &mut enc,
            "captures_dropped",
            "Captures not stored: over the hourly cap, or the recorder was behind.",
            &[
                (
                    vec![("reason", "cap".to_owned())],
                    s.recorder.skipped_by_cap.load(Relaxed),
                ),
                (
                    vec![("reason", "behind".to_owned())],
                    s.recorder.served_dropped.load(Relaxed),
                ),
            ],
        )
    }
}

impl AgentCollector {
    fn inference(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let models = self.0.models.list();
        let snaps: Vec<(Labels, crate::models::StatsSnapshot)> = models
            .iter()
            .map(|m| {
                (
                    vec![
                        ("model", m.name().to_owned()),
                        ("version", m.info.model.version.to_string()),
                    ],
                    m.stats.snapshot(),
                )
            })
            .collect();
        let rows = |f: fn(&crate::models::StatsSnapshot) -> u64| -> Vec<(Labels, u64)> {
            snaps.iter().map(|(l, s)| (l.clone(), f(s))).collect()
        };
        counter(
            enc,
            "inference_requests",
            "Inference calls that ran the model (successes and errors).",
            &rows(|s| s.requests),
        )?;
        counter(
            enc,
            "inference_errors",
            "Inference calls where the model failed.",
            &rows(|s| s.errors),
        )?;
        counter(
            enc,
            "inference_rejected",
            "Inference requests refused before the model ran (bad input).",
            &rows(|s| s.rejected),
        )?;
        counter(
            enc,
            "inference_samples",
            "Samples scored.",
            &rows(|s| s.samples),
        )?;
        let hist: Vec<(Labels, HistogramRow)> = snaps
            .iter()
            .map(|(l, s)| (l.clone(), latency_histogram(s)))
            .collect();
        histogram(
            enc,
            "inference_duration_seconds",
            "Latency of inference calls that ran the model, seconds.",
            &hist,
        )
    }

    fn updates(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let report = self.0.report.borrow().clone();
        let models = report.map(|r| r.models).unwrap_or_default();
        let mut phase = Vec::new();
        let mut health = Vec::new();
        let mut chunks = Vec::new();
        for m in &models {
            for p in PHASES {
                phase.push((
                    vec![("model", m.name.clone()), ("phase", name_of(&p))],
                    f64::from(u8::from(m.phase == p)),
                ));
            }
            for h in HEALTHS {
                health.push((
                    vec![("model", m.name.clone()), ("health", name_of(&h))],
                    f64::from(u8::from(m.health == h)),
                ));
            }
            for (state, v) in [("done", m.chunks_done), ("total", m.chunks_total)] {
                chunks.push((
                    vec![("model", m.name.clone()), ("state", state.to_owned())],
                    f64::from(v),
                ));
            }
        }
        gauge(
            enc,
            "model_update_phase",
            "1 for the update phase each model is in, 0 for the others.",
            &phase,
        )?;
        gauge(
            enc,
            "model_health",
            "1 for each model's health, 0 for the others.",
            &health,
        )?;
        gauge(
            enc,
            "model_update_chunks",
            "Bundle chunks of the model's update verified (done) and in all (total).",
            &chunks,
        )
    }
}

/// The latency histogram of a snapshot, in seconds.
fn latency_histogram(s: &crate::models::StatsSnapshot) -> HistogramRow {
    HistogramRow {
        buckets: BUCKETS_US
            .iter()
            .zip(&s.buckets)
            .map(|(b, n)| {
                let le = if *b == u64::MAX {
                    f64::INFINITY
                } else {
                    *b as f64 / 1e6
                };
                (le, *n)
            })
            .collect(),
        sum: s.latency_sum_us as f64 / 1e6,
    }
}

fn store_series(enc: &mut DescriptorEncoder<'_>, store: &SharedStore) -> fmt::Result {
    let now_ms = crate::clock::unix_ms();
    let (stats, budget, oldest) = {
        let st = lock(store);
        let stats = st.stats().clone();
        let oldest: Vec<(String, Option<u64>)> = stats
            .keys()
            .map(|k| {
                // The oldest record still held: what sync has not had acknowledged.
                let ts = st
                    .next_batch(k, 0, 1, 0)
                    .ok()
                    .and_then(|v| v.first().map(|r| r.ts_ms));
                (k.clone(), ts)
            })
            .collect();
        (stats, st.budget(), oldest)
    };
    let per = |f: fn(&crate::store::StreamStats) -> u64| -> Vec<(Labels, u64)> {
        stats
            .iter()
            .map(|(k, v)| (vec![("stream", k.clone())], f(v)))
            .collect()
    };
    let as_f64 = |rows: Vec<(Labels, u64)>| -> Vec<(Labels, f64)> {
        rows.into_iter().map(|(l, v)| (l, v as f64)).collect()
    };
    gauge(
        enc,
        "store_bytes",
        "Accounted bytes the store holds, per stream.",
        &as_f64(per(|v| v.bytes)),
    )?;
    gauge(
        enc,
        "store_budget_bytes",
        "The store's byte budget (max_bytes).",
        &[(Labels::new(), budget as f64)],
    )?;
    gauge(
        enc,
        "store_records",
        "Records the store holds, per stream: the sync backlog.",
        &as_f64(per(|v| v.records)),
    )?;
    counter(
        enc,
        "store_appended_records",
        "Records ever appended, per stream.",
        &per(|v| v.appended),
    )?;
    counter(
        enc,
        "store_evicted_records",
        "Records evicted to stay within the budget, per stream.",
        &per(|v| v.evicted),
    )?;
    counter(
        enc,
        "store_rejected_records",
        "Records the store refused, per stream.",
        &per(|v| v.rejected),
    )?;
    let lag: Vec<(Labels, f64)> = oldest
        .into_iter()
        .map(|(k, ts)| {
            let age = ts.map_or(0.0, |t| now_ms.saturating_sub(t) as f64 / 1000.0);
            (vec![("stream", k)], age)
        })
        .collect();
    gauge(
        enc,
        "sync_lag_seconds",
        "Age of the oldest record not yet acknowledged by the bridge, per stream (0: none).",
        &lag,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_seconds_and_end_unbounded() {
        let s = crate::models::ModelStats::default();
        s.record(true, 1, std::time::Duration::from_micros(70));
        s.record(true, 1, std::time::Duration::from_secs(3));
        let h = latency_histogram(&s.snapshot());
        assert_eq!(h.buckets.first(), Some(&(50e-6, 0)));
        assert_eq!(h.buckets[1], (100e-6, 1));
        assert_eq!(h.buckets.last(), Some(&(f64::INFINITY, 1)));
        assert!((h.sum - 3.00007).abs() < 1e-9, "{}", h.sum);
    }

    #[test]
    fn phase_names_are_the_wire_names() {
        assert_eq!(name_of(&UpdatePhase::RolledBack), "rolled_back");
        assert_eq!(name_of(&Health::NoModel), "no_model");
    }
}
