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
//!
//! The one exception to sans-IO is [`fsio`]: atomic writes and capped reads of local
//! files, here because every other crate depends on this one and they must not differ.
//!
//! | module | what |
//! |---|---|
//! | [`baseline`] | the signed training-data baseline profile and the drift statistics (PSI, KS) |
//! | [`bundle`] | signed model bundles: layout, building, verification (`VerifiedBundle`) |
//! | [`capped`] | zstd inflation with a hard cap (the only zstd decoder allowed) |
//! | [`contract`] | the model contract: inputs, outputs and what outputs mean |
//! | [`device_auth`] | sealing and opening device messages (key, counter) |
//! | [`digest`] | SHA-256 content addresses |
//! | [`fsio`] | atomic writes, secret files and capped reads of local files |
//! | [`directive`] | signed deployment directives (`VerifiedDirective`) |
//! | [`keys`] | Ed25519 keys, key ids, the trust store |
//! | [`limits`] | size caps for every decoder of untrusted bytes |
//! | [`manifest`] | the bundle manifest |
//! | [`oip`] | Open Inference Protocol v2 request and response bodies |
//! | [`records`] | typed uplink record bodies (telemetry, captures, events) |
//! | [`serve`] | serving bundle parts for the pull protocol (sans-IO) |
//! | [`tensor`] | OIP tensors: datatypes, shapes, JSON and binary layouts |
//! | [`time`] | timestamps for people (RFC 3339) |
//! | [`topics`] | the MQTT topic layout under `outpost/v1/` |
//! | [`uplink`] | uplink batches: sequenced, compressed records |
//! | [`wire`] | other wire messages: reported state, presence, chunk requests, acks, events |
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod baseline;
pub mod bundle;
pub mod capped;
pub mod contract;
pub mod device_auth;
pub mod digest;
pub mod directive;
pub mod fsio;
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
