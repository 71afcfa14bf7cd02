//! Chunk requests from devices, decoded and answered as the bridge does (`ServedBundle`).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use outpost_fuzz::fixture;
use outpost_protocol::Limits;
use outpost_protocol::serve::ServedBundle;
use outpost_protocol::wire::{ChunkFrame, ChunkRequest, MAX_PARTS_PER_REQUEST};

/// A real bundle of a few chunks, built once with the real builder.
fn served() -> &'static ServedBundle {
    static S: OnceLock<ServedBundle> = OnceLock::new();
    S.get_or_init(|| {
        let b = fixture::small_bundle(fixture::key());
        ServedBundle::new(b.bytes).expect("own bundle indexes")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(req) = ChunkRequest::decode(data, &Limits::default()) else {
        return;
    };
    let n = req.head.len() + req.chunks.len();
    assert!((1..=MAX_PARTS_PER_REQUEST).contains(&n));
    let frames = served().respond(&req);
    assert_eq!(frames.len(), n, "one frame per part asked for");
    for f in frames {
        assert_eq!(ChunkFrame::decode(&f.encode()).as_ref(), Ok(&f));
    }
});
