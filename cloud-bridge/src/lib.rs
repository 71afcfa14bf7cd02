//! The Outpost cloud bridge: everything but argument parsing lives here.
//!
//! Faces (CLI, HTTP API, dashboard) are thin: they parse, authorise and render, and act
//! through one operations layer ([`ops::Ops`]). Async code reaches the database only
//! through [`db::Db::run`] or the blocking pool.
//!
//! | module | what |
//! |---|---|
//! | [`api`] | the HTTP API (axum): bearer tokens with roles, typed errors, `/openapi.json` |
//! | [`audit`] | the append-only, hash-chained audit trail and its signed checkpoints |
//! | [`auth`] | API tokens and roles (only a token's SHA-256 is stored) |
//! | [`broker`] | the embedded MQTT broker (rumqttd behind a gate: auth, ACL, packet and connection caps) and external-broker configs |
//! | [`bundles`] | content-addressed bundle storage behind the `BundleStore` trait |
//! | [`cli`] | the `outpost-bridge` command line: grammar (`cli::args`) and one thin module per command group |
//! | [`clock`] | the rollout engine's clock (system time plus an offset; tests move it) |
//! | [`db`] | the SQLite schema and connections; `Db::run` is how async code reaches it |
//! | [`device_auth`] | opening sealed device messages: the key and counter, not the topic, say who sent it |
//! | [`devices`] | provisioning, credentials, tags, reported state and presence |
//! | [`drift`] | fleet drift from the devices' summaries, and the alerts |
//! | [`events`] | events: stored, published on MQTT, POSTed to webhooks through an outbox |
//! | [`export`] | captured inputs/outputs exported for retraining |
//! | [`fleet`] | deployments: the IO around the sans-IO rollout machine (`fleet::machine`) |
//! | [`fsutil`] | atomic writes and secret files |
//! | [`ingest`] | uplink batches → durable rows → end-to-end acks |
//! | [`input`] | caps on every string that enters from outside |
//! | [`inspect`] | `model inspect`: what a graph declares and what tract makes of it |
//! | [`keys`] | the bundle/directive signing key |
//! | [`metrics`] | `GET /metrics` (Prometheus text format) |
//! | [`mqtt`] | the bridge's MQTT client: routing inbound messages, the bounded outgoing queue (`MqttOut`) |
//! | [`ops`] | the operations layer: the context (`Ops`) and operations every face shares |
//! | [`packaging`] | from an ONNX file (and spec) to a signed bundle |
//! | [`profile`] | a model's validation profile on this host (self-test, latency, memory) |
//! | [`registry`] | the model registry: names, versions, tags, lineage, validation, bundles |
//! | [`server`] | `serve`: everything started together and stopped in order |
//! | [`serving`] | serving bundle chunks to devices (rate limits, cache) |
//! | [`telemetry`] | reading what devices sent (latest reports, recent events) |
//! | [`ui`] | the `/ui` dashboard (server-side templates, live updates) |
//! | [`watch`] | following a deployment to its end (`deploy watch`, `--wait`) |
//! | [`webhook_sign`] | Standard Webhooks signatures |
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
pub mod ops;
pub mod packaging;
pub mod profile;
pub mod registry;
pub mod server;
pub mod serving;
pub mod telemetry;
pub mod ui;
pub mod watch;
pub mod webhook_sign;
