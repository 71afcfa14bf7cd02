//! The Outpost fleet simulator: N real agents (the agent library), each with a seeded
//! simulated ADXL345 and a network-fault proxy, against a real bridge; scenarios in TOML;
//! and the one-command demo.
//!
//! | module | what |
//! |---|---|
//! | [`bench`] | `bench-scale`: N gateways converge on a ~5 MB bundle |
//! | [`demo`] | `demo`: the whole loop on one machine |
//! | [`fleet`] | a simulated fleet of real agents with seeded sensors |
//! | [`proxy`] | a network-fault proxy between a device and the broker |
//! | [`report`] | per-phase accounting for the demo (produced, stored, lost) |
//! | [`scenario`] | scenarios in TOML |
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod demo;
pub mod fleet;
pub mod proxy;
pub mod report;
pub mod scenario;
