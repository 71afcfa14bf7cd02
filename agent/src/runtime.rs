//! Wiring: starts the link, updater, local API and sensor pipeline for one agent, and
//! stops them with one shutdown signal and a bounded drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use outpost_protocol::TrustStore;
use outpost_protocol::keys::KeyError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::AgentConfig;
use crate::inference::ModelHandle;
use crate::link::{self, LinkError, LinkHandle, Routes};
use crate::pipeline::{self, PipelineHandle, PipelineResult};
use crate::update::disk::UpdateDisk;
use crate::update::{Updater, UpdaterParts};

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
    /// The API could not bind.
    #[error("local API {what}: {source}")]
    Api {
        /// Which listener.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Extra consumers of pipeline results (the store, the drift monitor).
pub type ResultSubscribers = Vec<mpsc::Sender<Arc<PipelineResult>>>;

/// A running agent.
pub struct RunningAgent {
    /// The active model.
    pub models: ModelHandle,
    /// The MQTT link.
    pub link: LinkHandle,
    /// Where the HTTP API listens (resolved if the config said port 0).
    pub http_addr: Option<SocketAddr>,
    /// The sensor pipeline, if a sensor is configured.
    pub pipeline: Option<PipelineHandle>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningAgent {
    /// The shutdown signal, for components started alongside.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Signals shutdown and waits (up to `grace`) for every task to finish.
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
    let models = ModelHandle::default();
    let (report_tx, report_rx) = watch::channel(None);

    let boot_models = models.clone();
    let parts = UpdaterParts {
        device_id: cfg.device_id.clone(),
        tags: cfg.tags.clone(),
        cfg: cfg.update.clone(),
        trust,
        disk,
        models: boot_models,
        report: report_tx,
    };
    // Boot verifies slots and loads a model: blocking work.
    let updater = tokio::task::spawn_blocking(move || Updater::boot(parts))
        .await
        .map_err(|e| data_err(std::io::Error::other(e.to_string())))?;

    let (update_tx, update_rx) = mpsc::channel(256);
    let routes = Routes {
        update: update_tx,
        acks: None,
    };
    let (link, link_task) = link::start(
        &cfg.device_id,
        &cfg.broker,
        routes,
        report_rx,
        shutdown_rx.clone(),
    )?;
    let mut tasks = vec![tokio::spawn(link_task)];
    tasks.push(tokio::spawn(updater.run(
        link.clone(),
        update_rx,
        shutdown_rx.clone(),
    )));

    let router = crate::api::router(models.clone(), cfg.api.max_body_bytes);
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
            shutdown_rx.clone(),
        )));
    }
    let pipeline = pipeline::spawn(&cfg.sensor, models.clone(), subscribers, shutdown_rx);
    tracing::info!(device = %cfg.device_id, http = ?http_addr, "agent started");
    Ok(RunningAgent {
        models,
        link,
        http_addr,
        pipeline,
        shutdown,
        tasks,
    })
}
