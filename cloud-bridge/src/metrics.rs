//! `GET /metrics`: the bridge's state in the Prometheus text format (OpenMetrics when
//! the scraper asks; see [`outpost_net::metrics`]).
//!
//! Behind the same bearer auth as the API (role `viewer`): device and deployment counts
//! are fleet information. Give Prometheus a viewer token (`outpost-bridge token add prom
//! --role viewer`) as `authorization: {type: Bearer, credentials: …}` in its scrape
//! config (see the README's Dashboard section).
//!
//! Every series is read at scrape time from what the bridge already keeps — the ingest,
//! serving, gate, device-auth, MQTT and listener counters, and two grouped counts from
//! the database — so nothing is counted twice.
//!
//! | series | type | labels | meaning |
//! |---|---|---|---|
//! | `outpost_bridge_devices` | gauge | presence (online, offline) | devices known to the bridge |
//! | `outpost_bridge_deployments` | gauge | state | deployments by state (every state, zeros included) |
//! | `outpost_bridge_model_versions` | gauge | | model versions in the registry |
//! | `outpost_bridge_ingest_records_total` | counter | | uplink records stored (the ingest rate is its `rate()`) |
//! | `outpost_bridge_ingest_duplicate_records_total` | counter | | records received again (deduplicated) |
//! | `outpost_bridge_ingest_batches_total` | counter | | uplink batches stored and acknowledged |
//! | `outpost_bridge_ingest_rejected_batches_total` | counter | | malformed batches dropped without an ack |
//! | `outpost_bridge_ingest_received_bytes_total` | counter | | compressed uplink bytes received |
//! | `outpost_bridge_chunks_served_total` | counter | | bundle frames (chunks and head pieces) sent |
//! | `outpost_bridge_chunks_served_bytes_total` | counter | | payload bytes of those frames |
//! | `outpost_bridge_chunk_requests_refused_total` | counter | | chunk requests for unknown bundles |
//! | `outpost_bridge_chunks_dropped_busy_total` | counter | | parts dropped because a serving queue was full |
//! | `outpost_bridge_bundle_disk_reads_total` | counter | | bundles read from storage (cache misses) |
//! | `outpost_bridge_broker_connected` | gauge | | 1 while the bridge's MQTT client is connected |
//! | `outpost_bridge_broker_published_total` | counter | | messages handed to the MQTT client |
//! | `outpost_bridge_broker_publish_failures_total` | counter | | publishes the MQTT client refused (lost) |
//! | `outpost_bridge_mqtt_queue_refused_total` | counter | | messages the bounded outgoing MQTT queue refused (directives retried next pass) |
//! | `outpost_bridge_broker_oversize_dropped_total` | counter | | messages over the broker's packet limit, dropped unpublished |
//! | `outpost_bridge_broker_connection_errors_total` | counter | | broker connection errors (each followed by a reconnect) |
//! | `outpost_bridge_device_auth_accepted_total` | counter | | device messages whose seal verified |
//! | `outpost_bridge_device_auth_rejections_total` | counter | reason | device messages refused (malformed, unknown_key, bad_signature, replayed) |
//! | `outpost_bridge_gate_*` | | | the embedded broker's gate: connections, refusals, ACL denials (absent with an external broker) |
//! | `outpost_bridge_http_*` | | listener | the API listener's connection counters |

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use outpost_net::ConnStats;
use outpost_net::metrics::prometheus_client::collector::Collector;
use outpost_net::metrics::prometheus_client::encoding::DescriptorEncoder;
use outpost_net::metrics::prometheus_client::registry::Registry;
use outpost_net::metrics::{ConnCollector, Labels, counter, gauge};
use tokio::sync::watch;

use crate::api::{ApiError, ApiState, authorize};
use crate::auth::Role;
use crate::broker::GateStats;
use crate::db::Db;
use crate::device_auth::DeviceAuth;
use crate::ingest::IngestStats;
use crate::mqtt::MqttStats;
use crate::serving::BundleServer;

/// Every deployment state, so each is reported (0 when none is in it).
const DEPLOYMENT_STATES: [&str; 6] = crate::fleet::machine::STATE_NAMES;

/// What the bridge's metrics read.
#[derive(Clone)]
pub struct Sources {
    /// Database (device and deployment counts).
    pub db: Db,
    /// Bundle serving counters.
    pub serving: Arc<BundleServer>,
    /// Ingest counters.
    pub ingest: Arc<IngestStats>,
    /// The embedded broker's gate (None with an external broker).
    pub gate: Option<Arc<GateStats>>,
    /// Device authentication counters.
    pub device_auth: Arc<DeviceAuth>,
    /// The MQTT client's counters.
    pub mqtt: Arc<MqttStats>,
    /// The outgoing MQTT queue (its refusals).
    pub out: crate::mqtt::MqttOut,
    /// Whether the MQTT client is connected.
    pub connected: watch::Receiver<bool>,
    /// The API listener's connection counters.
    pub http: Arc<ConnStats>,
}

/// The bridge's metrics registry.
pub struct BridgeMetrics {
    registry: Registry,
}

impl BridgeMetrics {
    /// A registry whose collectors read `sources` at each scrape.
    pub fn new(sources: Sources) -> Self {
        let mut registry = Registry::with_prefix("outpost_bridge");
        registry.register_collector(Box::new(
            ConnCollector::default().listener("api", sources.http.clone()),
        ));
        registry.register_collector(Box::new(BridgeCollector(sources)));
        Self { registry }
    }

    /// The registry (for tests and other exporters).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// Prometheus metrics.
///
/// Role: viewer. Text format 0.0.4, or OpenMetrics 1.0 when `Accept` asks for it.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    security(("bearer" = [])),
    responses((status = 200, description = "The exposition",
            content((String = "text/plain; version=0.0.4"), (String = "application/openmetrics-text"))),
        (status = 404, description = "Not a running bridge", body = crate::api::schema::ErrorBody),
        crate::api::schema::AuthErrors))]
pub async fn scrape(State(st): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&st, &headers, Role::Viewer).await?;
    let Some(metrics) = st.metrics.clone() else {
        return Err(ApiError::not_found(
            "metrics are only available from a running bridge",
        ));
    };
    // Collecting queries the database: off the async workers.
    tokio::task::spawn_blocking(move || outpost_net::metrics::respond(&metrics.registry, &headers))
        .await
        .map_err(ApiError::internal)
        .map(IntoResponse::into_response)
}

struct BridgeCollector(Sources);

impl fmt::Debug for BridgeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BridgeCollector")
    }
}

fn one(v: u64) -> [(Labels, u64); 1] {
    [(Labels::new(), v)]
}

fn one_f(v: f64) -> [(Labels, f64); 1] {
    [(Labels::new(), v)]
}

/// Counts read from the database at a scrape.
struct Counts {
    /// Devices by online flag.
    devices: Vec<(bool, u64)>,
    /// Deployments by state name.
    deployments: Vec<(String, u64)>,
    /// Model versions registered.
    models: u64,
}

/// The database's counts, or None when it could not be read (the series are then left
/// out, and the failure logged).
fn counts(db: &Db) -> Option<Counts> {
    let c = db.lock();
    let r = (|| {
        let mut q = c.prepare("SELECT online, COUNT(*) FROM devices GROUP BY online")?;
        let devices = q
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)? != 0, r.get::<_, i64>(1)? as u64))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut q = c.prepare("SELECT state, COUNT(*) FROM deployments GROUP BY state")?;
        let deployments = q
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let models: i64 = c.query_row("SELECT COUNT(*) FROM models", [], |r| r.get(0))?;
        Ok::<_, rusqlite::Error>(Counts {
            devices,
            deployments,
            models: models as u64,
        })
    })();
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(error = %e, "metrics: cannot count devices and deployments");
            None
        }
    }
}

impl Collector for BridgeCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let s = &self.0;
        if let Some(Counts {
            devices,
            deployments,
            models,
        }) = counts(&s.db)
        {
            let n = |online| {
                devices
                    .iter()
                    .filter(|d| d.0 == online)
                    .map(|d| d.1)
                    .sum::<u64>() as f64
            };
            gauge(
                &mut enc,
                "devices",
                "Devices known to the bridge, by presence.",
                &[
                    (vec![("presence", "online".to_owned())], n(true)),
                    (vec![("presence", "offline".to_owned())], n(false)),
                ],
            )?;
            let mut rows: Vec<(Labels, f64)> = DEPLOYMENT_STATES
                .iter()
                .map(|st| {
                    let v = deployments
                        .iter()
                        .filter(|d| d.0 == *st)
                        .map(|d| d.1)
                        .sum::<u64>();
                    (vec![("state", (*st).to_owned())], v as f64)
                })
                .collect();
            // A state this list does not know yet is still shown.
            for (st, v) in &deployments {
                if !DEPLOYMENT_STATES.contains(&st.as_str()) {
                    rows.push((vec![("state", st.clone())], *v as f64));
                }
            }
            gauge(&mut enc, "deployments", "Deployments by state.", &rows)?;
            gauge(
                &mut enc,
                "model_versions",
                "Model versions in the registry.",
                &one_f(models as f64),
            )?;
        }
        let i = &s.ingest;
        counter(
            &mut enc,
            "ingest_records",
            "Uplink records stored (new, not duplicates).",
            &one(i.stored.load(Relaxed)),
        )?;
        counter(
            &mut enc,
            "ingest_duplicate_records",
            "Uplink records received again and deduplicated.",
            &one(i.duplicates.load(Relaxed)),
        )?;
        counter(
            &mut enc,
            "ingest_batches",
            "Uplink batches stored and acknowledged.",
            &one(i.batches.load(Relaxed)),
        )?;
        counter(
            &mut enc,
            "ingest_rejected_batches",
            "Malformed uplink batches dropped without an ack.",
            &one(i.rejected.load(Relaxed)),
        )?;
        counter(
            &mut enc,
            "ingest_received_bytes",
            "Compressed uplink bytes received.",
            &one(i.wire_bytes.load(Relaxed)),
        )?;
        let v = &s.serving.stats;
        counter(
            &mut enc,
            "chunks_served",
            "Bundle frames (payload chunks and head pieces) sent to devices.",
            &one(v.frames.load(Relaxed)),
        )?;
        counter(
            &mut enc,
            "chunks_served_bytes",
            "Payload bytes of the bundle frames sent.",
            &one(v.bytes.load(Relaxed)),
        )?;
        counter(
            &mut enc,
            "chunk_requests_refused",
            "Chunk requests for bundles the bridge does not have.",
            &one(v.refused.load(Relaxed)),
        )?;
        counter(
            &mut enc,
            "chunks_dropped_busy",
            "Requested parts dropped because a serving queue was full (the device asks again).",
            &one(v.dropped_busy.load(Relaxed)),
        )?;
        counter(
            &mut enc,
            "bundle_disk_reads",
            "Bundles read from storage (serving cache misses).",
            &one(v.disk_reads.load(Relaxed)),
        )?;
        gauge(
            &mut enc,
            "broker_connected",
            "1 while the bridge's MQTT client is connected to the broker.",
            &one_f(f64::from(u8::from(*s.connected.borrow()))),
        )?;
        counter(
            &mut enc,
            "broker_published",
            "Messages handed to the MQTT client for publishing.",
            &one(s.mqtt.published.load(Relaxed)),
        )?;
        counter(
            &mut enc,
            "broker_publish_failures",
            "Publishes the MQTT client refused (the message is lost).",
            &one(s.mqtt.publish_failures.load(Relaxed)),
        )?;
        counter(
            &mut enc,
            "mqtt_queue_refused",
            "Messages the bounded outgoing MQTT queue refused (full or closed): directives are sent on the engine's next pass, event copies are lost (events are stored and webhooked anyway).",
            &one(s.out.refused()),
        )?;
        counter(
            &mut enc,
            "broker_oversize_dropped",
            "Messages over the broker's packet limit, dropped before publishing.",
            &one(s.mqtt.oversize_dropped.load(Relaxed)),
        )?;
        counter(
            &mut enc,
            "broker_connection_errors",
            "Broker connection errors of the bridge's MQTT client.",
            &one(s.mqtt.connection_errors.load(Relaxed)),
        )?;
        let a = &s.device_auth.stats;
        counter(
            &mut enc,
            "device_auth_accepted",
            "Device messages whose seal verified.",
            &one(a.accepted.load(Relaxed)),
        )?;
        let reason = |r: &str, v: u64| (vec![("reason", r.to_owned())], v);
        counter(
            &mut enc,
            "device_auth_rejections",
            "Device messages refused by device authentication, by reason.",
            &[
                reason("malformed", a.malformed.load(Relaxed)),
                reason("unknown_key", a.unknown_key.load(Relaxed)),
                reason("bad_signature", a.bad_signature.load(Relaxed)),
                reason("replayed", a.replayed.load(Relaxed)),
            ],
        )?;
        if let Some(g) = &s.gate {
            gate_series(&mut enc, g)?;
        }
        Ok(())
    }
}

fn gate_series(enc: &mut DescriptorEncoder<'_>, g: &GateStats) -> fmt::Result {
    let c = g.snapshot();
    gauge(
        enc,
        "gate_connections_active",
        "MQTT connections open through the embedded broker's gate.",
        &one_f(c.active as f64),
    )?;
    counter(
        enc,
        "gate_connections_admitted",
        "MQTT connections the gate admitted to the broker.",
        &one(c.admitted),
    )?;
    let l = |k: &'static str, v: &str, n: u64| (vec![(k, v.to_owned())], n);
    counter(
        enc,
        "gate_connections_refused",
        "MQTT connections the gate refused, by reason.",
        &[
            l("reason", "capacity", c.refused_capacity),
            l("reason", "connect_timeout", c.connect_timeouts),
            l("reason", "protocol", c.refused_protocol),
            l("reason", "auth", c.refused_auth),
            l("reason", "client_id", c.refused_client_id),
            l("reason", "tls", c.tls_failures),
        ],
    )?;
    counter(
        enc,
        "gate_acl_denials",
        "MQTT operations the gate's ACL refused, by operation.",
        &[
            l("operation", "publish", c.denied_publish),
            l("operation", "subscribe", c.denied_subscribe),
            l("operation", "will", c.denied_will),
        ],
    )?;
    counter(
        enc,
        "gate_packets_refused",
        "MQTT packets the gate refused, by reason.",
        &[
            l("reason", "oversized", c.oversized),
            l("reason", "malformed", c.malformed),
        ],
    )?;
    counter(
        enc,
        "gate_upstream_failures",
        "Times the gate could not reach the broker behind it.",
        &one(c.upstream_failures),
    )
}
