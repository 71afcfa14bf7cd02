//! Chunk frames from the bridge, as the agent decodes them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_protocol::wire::ChunkFrame;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = ChunkFrame::decode(data) {
        // The layout is exact: a frame that decodes is byte-for-byte its own encoding.
        assert_eq!(f.encode(), data);
    }
});
