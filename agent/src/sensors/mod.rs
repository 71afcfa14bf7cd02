//! Sensors: the ADXL345 accelerometer driver (generic over embedded-hal 1.0 I2C), a
//! register-level simulated ADXL345, the vibration signal model behind it, and the 16
//! vibration features the classifier consumes.

pub mod adxl345;
pub mod config;
pub mod features;
pub mod sim;
pub mod vibration;

pub use config::{SensorConfig, SensorKind};

/// ADXL345 output data rate used by the pipeline, Hz.
pub const SAMPLE_RATE_HZ: f64 = 1600.0;
/// Samples per analysis window (0.64 s at 1600 Hz).
pub const WINDOW: usize = 1024;
/// Full-resolution scale factor, g per LSB (datasheet typical, all ranges).
pub const LSB_G: f64 = 0.0039;
