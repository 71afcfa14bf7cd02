//! The Outpost cloud bridge: everything but argument parsing lives here.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod audit;
pub mod auth;
pub mod broker;
pub mod bundles;
pub mod cli;
pub mod clock;
pub mod db;
pub mod device_auth;
pub mod devices;
pub mod drift;
pub mod events;
pub mod export;
pub mod fleet;
pub mod fsutil;
pub mod ingest;
pub mod input;
pub mod inspect;
pub mod keys;
pub mod metrics;
pub mod mqtt;
pub mod packaging;
pub mod profile;
pub mod registry;
pub mod server;
pub mod serving;
pub mod telemetry;
pub mod ui;
pub mod watch;
pub mod webhook_sign;
