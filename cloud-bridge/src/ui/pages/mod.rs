//! The dashboard's pages, one module per section.

pub mod deployments;
pub mod drift;
pub mod fleet;
pub mod log;
