//! Wiring: starts the link, updater, local API, sensor pipeline, store, recorder,
//! telemetry and sync for one agent, and stops them in two phases: first everything that
//! produces or sends (sync gets a grace period to flush), then the link.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_protocol::TrustStore;
use outpost_protocol::keys::KeyError;
use serde_json::json;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::capture::Capturer;
use crate::config::AgentConfig;
use crate::link::{self, LinkError, LinkHandle, Routes};
use crate::models::ModelHandle;
use crate::pipeline::{self, PipelineHandle, PipelineResult};
use crate::recorder::{self, AgentEvent, RecorderStats};
use crate::store::Store;
use crate::sync::{self, SharedStore, UplinkCounters};
use crate::telemetry;
use crate::update::disk::UpdateDisk;
use crate::update::{Updater, UpdaterParts};

/// How long sync may keep flushing after shutdown is requested.
pub const SYNC_DRAIN: Duration = Duration::from_secs(3);

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The trust directory is unusable.
    #[error("trust directory: {0}")]
    Trust(#[from] KeyError),
    /// The data directory is unusable.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The link could not be set up.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The device key is unusable.
    #[error("{0}")]
    Identity(String),
    /// The API could not bind.
    #[error("local API {what}: {source}")]
    Api {
        /// Which listener.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Extra consumers of pipeline results (the drift monitor, tests).
pub type ResultSubscribers = Vec<mpsc::Sender<Arc<PipelineResult>>>;

/// A running agent.
pub struct RunningAgent {
    /// The active model.
    pub models: ModelHandle,
    /// The MQTT link.
    pub link: LinkHandle,
    /// Where the HTTP API listens (resolved if the config said port 0).
    pub http_addr: Option<SocketAddr>,
    /// Connection counters of the HTTP API listener.
    pub http_conns: Arc<outpost_net::ConnStats>,
    /// Connection counters of the Unix-socket API listener.
    pub unix_conns: Arc<outpost_net::ConnStats>,
    /// The sensor pipeline, if a sensor is configured.
    pub pipeline: Option<PipelineHandle>,
    /// The offline store (None if it could not be opened at all).
    pub store: Option<SharedStore>,
    /// Uplink counters.
    pub uplink: Arc<UplinkCounters>,
    /// Recorder counters.
    pub recorder: Arc<RecorderStats>,
    /// Records agent events (kept open so components can add more, e.g. drift).
    pub events: mpsc::Sender<AgentEvent>,
    /// Wakes sync when new records are stored.
    pub sync_wake: Arc<Notify>,
    shutdown: watch::Sender<bool>,
    link_shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    link_task: JoinHandle<()>,
}

impl RunningAgent {
    /// The shutdown signal, for components started alongside.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Signals shutdown, lets sync flush (bounded by `grace`), then closes the link.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let drain = async {
            for t in self.tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!("shutdown grace period elapsed with tasks still running");
        }
        let _ = self.link_shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.link_task).await;
        if let Some(p) = self.pipeline {
            let _ = tokio::task::spawn_blocking(move || p.join()).await;
        }
    }
}

/// Starts every component of the agent.
pub async fn start(
    cfg: AgentConfig,
    subscribers: ResultSubscribers,
) -> Result<RunningAgent, StartError> {
    let trust = TrustStore::load_dir(&cfg.trust_dir)?;
    let data_err = |source| StartError::DataDir {
        path: cfg.data_dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&cfg.data_dir).map_err(data_err)?;
    let disk = UpdateDisk::open(&cfg.data_dir).map_err(data_err)?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (link_shutdown, link_shutdown_rx) = watch::channel(false);
    let models = ModelHandle::default();
    let (report_tx, report_rx) = watch::channel(None);
    let (events_tx, events_rx) = mpsc::channel::<AgentEvent>(256);

    // The store. A corrupt file is replaced (and reported as an event); a store that cannot
    // be opened at all leaves the agent serving inference without buffering, loudly.
    let store_dir = cfg.data_dir.clone();
    let store_cfg = cfg.store.clone();
    let opened = tokio::task::spawn_blocking(move || Store::open(&store_dir, store_cfg))
        .await
        .map_err(|e| data_err(std::io::Error::other(e.to_string())))?;
    let store = match opened {
        Ok((s, reset)) => {
            if let Some(r) = reset {
                let _ = events_tx.try_send(AgentEvent {
                    kind: outpost_protocol::records::AgentEventKind::StoreReset,
                    message: format!(
                        "store database was unusable ({}); a fresh one was started",
                        r.reason
                    ),
                    details: json!({"moved_to": r.moved_to}),
                });
            }
            Some(Arc::new(Mutex::new(s)))
        }
        Err(e) => {
            tracing::error!(error = %e, "store unavailable: records will not be buffered");
            None
        }
    };

    let parts = UpdaterParts {
        device_id: cfg.device_id.clone(),
        tags: cfg.tags.clone(),
        cfg: cfg.update.clone(),
        budget: cfg.models,
        trust,
        trust_dir: Some(cfg.trust_dir.clone()),
        disk,
        models: models.clone(),
        report: report_tx,
        events: Some(events_tx.clone()),
    };
    // Boot verifies slots and loads a model: blocking work.
    let updater = tokio::task::spawn_blocking(move || Updater::boot(parts))
        .await
        .map_err(|e| data_err(std::io::Error::other(e.to_string())))?;

    let (update_tx, update_rx) = mpsc::channel(256);
    let (ack_tx, ack_rx) = mpsc::channel(256);
    let routes = Routes {
        update: update_tx,
        acks: store.as_ref().map(|_| ack_tx),
    };
    let identity = match &cfg.key_file {
        Some(k) => Some(Arc::new(
            crate::identity::DeviceIdentity::load(&cfg.device_id, k, &cfg.data_dir)
                .map_err(|e| StartError::Identity(e.to_string()))?,
        )),
        None => {
            tracing::warn!(device = %cfg.device_id, "no key_file: messages are not sealed, and a bridge requiring device authentication will ignore them");
            None
        }
    };
    let report = report_rx.clone();
    let (link, link_task) = link::start(
        &cfg.device_id,
        &cfg.broker,
        identity,
        routes,
        report_rx,
        link_shutdown_rx,
    )?;
    let link_task = tokio::spawn(link_task);
    let mut tasks = vec![tokio::spawn(updater.run(
        Arc::new(link.clone()),
        update_rx,
        shutdown_rx.clone(),
    ))];

    let recorder_stats = Arc::new(RecorderStats::default());
    let (served_tx, served_rx) = mpsc::channel(1024);
    let sink = store.as_ref().map(|_| crate::api::ServedSink {
        tx: served_tx,
        stats: recorder_stats.clone(),
    });
    let http_conns = Arc::new(outpost_net::ConnStats::default());
    let unix_conns = Arc::new(outpost_net::ConnStats::default());
    let uplink = Arc::new(UplinkCounters::default());
    let router = crate::api::router(crate::api::ApiState::new(
        models.clone(),
        cfg.api.max_body_bytes,
        sink,
    ))
    .merge(crate::metrics::routes(crate::metrics::Sources {
        models: models.clone(),
        store: store.clone(),
        link: link.clone(),
        uplink: uplink.clone(),
        recorder: recorder_stats.clone(),
        report,
        http: http_conns.clone(),
        unix: unix_conns.clone(),
    }))
    .merge(crate::status::routes(crate::status::Sources {
        device_id: cfg.device_id.clone(),
        data_dir: cfg.data_dir.clone(),
        link: link.clone(),
        models: models.clone(),
        store: store.clone(),
    }));
    let mut http_addr = None;
    if let Some(addr) = cfg.api.http {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Api {
                what: format!("bind {addr}"),
                source,
            })?;
        http_addr = l.local_addr().ok();
        tasks.push(tokio::spawn(crate::api::serve_tcp(
            l,
            router.clone(),
            cfg.api.limits,
            http_conns.clone(),
            shutdown_rx.clone(),
        )));
    }
    if let Some(path) = cfg.api.unix_socket.clone() {
        let l = crate::api::bind_unix(&path).map_err(|source| StartError::Api {
            what: format!("bind {}", path.display()),
            source,
        })?;
        tasks.push(tokio::spawn(crate::api::serve_unix(
            l,
            router.clone(),
            cfg.api.limits,
            unix_conns.clone(),
            shutdown_rx.clone(),
        )));
    }

    let sync_wake = Arc::new(Notify::new());
    let (results_tx, results_rx) = mpsc::channel(256);
    let mut subs = subscribers;
    if store.is_some() {
        subs.push(results_tx);
    }
    let pipeline = pipeline::spawn(&cfg.sensor, models.clone(), subs, shutdown_rx.clone());

    if let Some(store) = &store {
        let seed = cfg
            .device_id
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        let capturer = Capturer::new(cfg.capture.clone(), cfg.capture_models.clone(), seed);
        let drift = cfg.drift.clone().map(recorder::DriftState::new);
        tasks.push(tokio::spawn(recorder::run(
            recorder::RecorderInputs {
                results: results_rx,
                served: served_rx,
                events: events_rx,
            },
            capturer,
            drift,
            store.clone(),
            sync_wake.clone(),
            recorder_stats.clone(),
            shutdown_rx.clone(),
        )));
        let sources = telemetry::Sources {
            models: models.clone(),
            store: store.clone(),
            link: link.clone(),
            pipeline: pipeline.as_ref().map(|p| p.stats.clone()),
            recorder: recorder_stats.clone(),
            uplink: uplink.clone(),
            data_dir: cfg.data_dir.clone(),
        };
        tasks.push(tokio::spawn(telemetry::run(
            cfg.telemetry_interval,
            sources,
            sync_wake.clone(),
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(sync::run(
            store.clone(),
            link.clone(),
            cfg.sync,
            cfg.zstd_level,
            ack_rx,
            sync_wake.clone(),
            uplink.clone(),
            SYNC_DRAIN,
            shutdown_rx.clone(),
        )));
    }
    tracing::info!(device = %cfg.device_id, http = ?http_addr, "agent started");
    Ok(RunningAgent {
        models,
        link,
        http_addr,
        http_conns,
        unix_conns,
        pipeline,
        store,
        uplink,
        recorder: recorder_stats,
        events: events_tx,
        sync_wake,
        shutdown,
        link_shutdown,
        tasks,
        link_task,
    })
}
