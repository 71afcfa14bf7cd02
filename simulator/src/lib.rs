//! The Outpost fleet simulator: N real agents (the agent library), each with a seeded
//! simulated ADXL345 and a network-fault proxy, against a real bridge; scenarios in TOML;
//! and the one-command demo.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod demo;
pub mod fleet;
pub mod proxy;
pub mod report;
pub mod scenario;
