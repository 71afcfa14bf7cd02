//! Shared fixtures of the fuzz targets (`fuzz_targets/`); see `README.md`.
#![forbid(unsafe_code)]

pub mod fixture;
