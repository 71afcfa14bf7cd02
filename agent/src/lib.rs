//! The Outpost gateway agent: everything but argument parsing lives here.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod inference;
pub mod verify_cmd;

/// Agent version reported to the bridge.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
