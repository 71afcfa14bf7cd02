//! The Outpost fleet simulator: N real agents, simulated sensors, network faults.
#![forbid(unsafe_code)]
