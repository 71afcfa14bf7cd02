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

/// Bytes of an MQTT 3.1.1 PUBLISH packet (QoS 1) carrying `payload_len` bytes on a topic
/// of `topic_len` bytes: fixed header (1 byte + remaining-length varint) + topic length
/// prefix (2) + topic + packet id (2) + payload (MQTT 3.1.1 §3.3). Brokers' packet limits
/// (AWS IoT Core: 128 KB) are on this whole size.
pub fn mqtt_publish_len(topic_len: usize, payload_len: usize) -> usize {
    let remaining = 2 + topic_len + 2 + payload_len;
    let varint = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + varint + remaining
}

/// Bytes of the MQTT message carrying a chunk frame of `data_len` bytes to a device with
/// the longest device id (64): what a broker's packet limit must allow for a chunk size.
pub fn chunk_message_len(data_len: usize) -> usize {
    let topic = crate::topics::chunk_response(&"x".repeat(64)).len();
    mqtt_publish_len(topic, crate::wire::CHUNK_FRAME_HEADER + data_len)
}

/// The largest chunk (and head piece) size whose messages fit a broker packet limit of
/// `max_packet` bytes, capped at [`MAX_CHUNK_SIZE`].
pub fn largest_chunk_for(max_packet: usize) -> u32 {
    let overhead = chunk_message_len(0);
    // The varint may grow by a byte or two past the overhead measured at 0 bytes.
    (max_packet.saturating_sub(overhead + 2) as u32).min(MAX_CHUNK_SIZE)
}

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
            max_directive: 64 * 1024,
            max_batch_bytes: 16 * 1024 * 1024,
            max_batch_records: 100_000,
            max_control_message: 64 * 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_length_matches_the_mqtt_encoding() {
        // 2 + 5 + 2 + 3 = 12 remaining → 1 + 1 + 12.
        assert_eq!(mqtt_publish_len(5, 3), 14);
        // 127 remaining still fits a one-byte varint; 128 needs two.
        assert_eq!(mqtt_publish_len(0, 123), 1 + 1 + 127);
        assert_eq!(mqtt_publish_len(0, 124), 1 + 2 + 128);
    }

    #[test]
    fn the_default_chunk_fits_a_128_kb_broker_and_the_largest_chunk_fits_its_limit() {
        assert!(chunk_message_len(DEFAULT_CHUNK_SIZE as usize) <= 131_072);
        assert!(chunk_message_len(HEAD_PIECE_SIZE as usize) <= 131_072);
        for limit in [4_096, 65_536, 131_072] {
            let c = largest_chunk_for(limit) as usize;
            assert!(chunk_message_len(c) <= limit, "{limit}");
            assert!(chunk_message_len(c + 3) > limit, "{limit}: not the largest");
        }
    }
}
