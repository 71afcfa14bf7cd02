//! The Outpost gateway agent: everything but argument parsing lives here.
//!
//! | module | what |
//! |---|---|
//! | [`config`] | parses the config file and the environment, composes the sections each module owns |
//! | [`identity`] | the device key and counter that seal every message it publishes |
//! | [`link`] | the MQTT connection (rumqttc) |
//! | [`update`] | directives, chunked pull, A/B install, probation, rollback |
//! | [`models`] | the active models (tract via `outpost-inference`), their counters |
//! | [`api`] | the local inference API (HTTP + Unix socket) |
//! | [`sensors`] | ADXL345 driver, simulated ADXL345, vibration features |
//! | [`pipeline`] | sensor → features → model → subscribers |
//! | [`store`] | the offline store in SQLite: byte budget, priorities, counted evictions |
//! | [`sync`] | sequenced, compressed uplink batches and their acks (machine + loop) |
//! | [`capture`] | which samples are captured (rate, anomalies, low confidence) |
//! | [`recorder`] | writes captures, telemetry and events into the store |
//! | [`telemetry`] | periodic inference and system reports |
//! | [`drift`] | on-device drift against the bundle's baseline (PSI, KS, output shift) |
//! | [`metrics`] | `GET /metrics` on the local API |
//! | [`clock`] | time sources: wall-clock seconds for the protocol, tokio's monotonic clock for timeouts |
//! | [`settings`] | the config sections' shared error |
//! | [`cli`] | argument parsing for the thin binary, error chains |
//! | [`verify_cmd`] | `outpost-agent verify-bundle` |
//! | [`runtime`] | starts and stops all of it |
//! | [`status`] | `outpost-agent status`: link, models, store backlog |
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod capture;
pub mod cli;
pub mod clock;
pub mod config;
pub mod drift;
pub mod identity;
pub mod link;
pub mod metrics;
pub mod models;
pub mod pipeline;
pub mod recorder;
pub mod runtime;
pub mod sensors;
pub mod settings;
pub mod status;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod update;
pub mod verify_cmd;

/// Agent version reported to the bridge.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
