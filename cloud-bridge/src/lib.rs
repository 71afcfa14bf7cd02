//! The Outpost cloud bridge: everything but argument parsing lives here.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod fsutil;
pub mod keys;
pub mod packaging;
