//! Whole bundle files as the agent reads them from disk or assembles them from the wire
//! (`verify_bundle`), and as the bridge indexes them for serving (`ServedBundle::new`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_fuzz::fixture;
use outpost_protocol::Limits;
use outpost_protocol::bundle::{Verifier, head_len, parse_head};
use outpost_protocol::serve::ServedBundle;
use outpost_protocol::wire::PartKind;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(n) = head_len(data, &limits) {
        assert!(n >= 14, "a head is at least its prefix");
    }
    if let Ok((raw, len)) = parse_head(data, &limits) {
        assert!(len <= data.len());
        assert!(raw.manifest.len() <= limits.max_manifest as usize);
    }
    let trust = fixture::trusted();
    let verifier = Verifier::new(trust);
    if let Ok(head) = parse_head(data, &limits).map(|(_, len)| &data[..len]) {
        let _ = verifier.verify_head(head);
    }
    if let Ok(b) = verifier.verify_bundle(data) {
        // Only the test key's own bundles get here; what verified must be exactly the input.
        assert_eq!(b.to_bytes(), data);
        let _ = b.self_tests();
        let _ = b.baseline_bytes();
    }
    // The bridge indexes its own files, but must not fall over on a corrupt one on disk.
    if let Ok(s) = ServedBundle::new(data.to_vec()) {
        for i in [0, 1, 2, s.chunk_count(), u32::MAX] {
            for kind in [PartKind::Head, PartKind::Chunk, PartKind::Error] {
                if let Some(p) = s.part(kind, i) {
                    assert!(!p.is_empty() && p.len() <= data.len());
                }
            }
        }
    }
});
