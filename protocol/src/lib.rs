//! The Outpost wire protocol, shared by the agent, the bridge and the simulator.
//!
//! Everything here is sans-IO: no sockets, no async runtime, no clocks. Callers pass the
//! current time in, feed bytes in and get typed values or typed errors out. The byte
//! layouts are specified in `docs/architecture.md`; each module's doc summarises its part.
//!
//! Trust is carried by types: [`bundle::VerifiedBundle`] and [`directive::VerifiedDirective`]
//! have private fields and no public constructor, so the only way to hold one is to have
//! run the verifier. Installers take those types, so unverified bytes cannot reach them.
//!
//! Every decoder of untrusted bytes checks a size cap before it allocates or inflates
//! (see [`limits`]); zstd inflation goes only through [`capped`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod baseline;
pub mod bundle;
pub mod capped;
pub mod contract;
pub mod device_auth;
pub mod digest;
pub mod directive;
pub mod keys;
pub mod limits;
pub mod manifest;
pub mod oip;
pub mod records;
pub mod rotation;
pub mod serve;
pub mod tensor;
pub mod time;
pub mod topics;
pub mod uplink;
pub mod wire;

pub use digest::Digest;
pub use keys::{KeyId, PublicKey, SigningKey, TrustStore};
pub use limits::Limits;

/// The protocol generation spoken by this crate; part of every topic (`outpost/v1/...`).
pub const PROTOCOL_VERSION: u32 = 1;
