//! Size caps for every decoder of untrusted bytes.
//!
//! A cap is checked against the *declared* size before anything is allocated or
//! inflated, and again against what actually arrives. The defaults suit a gateway with a
//! few hundred MB of RAM; both sides may tighten them.

/// Largest payload chunk the protocol allows (fits AWS IoT Core's 128 KB message limit
/// together with the chunk frame header).
pub const MAX_CHUNK_SIZE: u32 = 128 * 1024;
/// Default payload chunk size.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Bundle heads (signature + manifest) are transferred in pieces of this size.
pub const HEAD_PIECE_SIZE: u32 = 64 * 1024;

/// Caps applied while decoding untrusted input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest manifest (JSON) accepted.
    pub max_manifest: u32,
    /// Largest total uncompressed payload accepted, whatever the manifest declares.
    pub max_payload: u64,
    /// Largest number of files in one bundle.
    pub max_files: usize,
    /// Largest signed directive message.
    pub max_directive: usize,
    /// Largest uncompressed uplink batch.
    pub max_batch_bytes: u32,
    /// Largest number of records in one uplink batch.
    pub max_batch_records: u32,
    /// Largest JSON control message (chunk request, ack, reported state).
    pub max_control_message: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_manifest: 1024 * 1024,
            max_payload: 512 * 1024 * 1024,
            max_files: 64,
            max_directive: 16 * 1024,
            max_batch_bytes: 16 * 1024 * 1024,
            max_batch_records: 100_000,
            max_control_message: 64 * 1024,
        }
    }
}
