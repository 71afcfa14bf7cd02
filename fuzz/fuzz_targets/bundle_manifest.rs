//! Manifests (the JSON behind a bundle signature) and what hangs off them: invariants,
//! chunk arithmetic, payload assembly with capped inflation, self-test files.
//!
//! Input: `fixture::pair(manifest JSON, payload)`. A manifest that passes validation gets
//! its payload description rewritten to match the fuzzed payload (chunk digests, compressed
//! size), is signed with the test key and goes through the whole verifier, so the fuzzer
//! reaches inflation and file digests instead of stopping at the first chunk digest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_fuzz::fixture;
use outpost_protocol::bundle::Verifier;
use outpost_protocol::manifest::{Manifest, SelfTests};
use outpost_protocol::{Digest, Limits};

fuzz_target!(|data: &[u8]| {
    let (manifest, payload) = fixture::split_pair(data);
    let limits = Limits::default();
    let Ok(mut m) = serde_json::from_slice::<Manifest>(manifest) else {
        return;
    };
    // Self-test files are read after the bundle verifies; check them against this contract.
    if let Ok(t) = serde_json::from_slice::<SelfTests>(payload) {
        let _ = t.validate(&m.contract);
    }
    if m.validate(&limits).is_err() {
        return;
    }
    let n = m.payload.chunks.len() as u32;
    for i in [0, n.saturating_sub(1), n, u32::MAX] {
        if let Some(r) = m.chunk_range(i) {
            assert!(r.start < r.end && r.end <= m.payload.compressed_size);
        }
    }
    assert!(
        m.model_file().is_some(),
        "validation guarantees one model file"
    );

    let cs = m.payload.chunk_size as usize;
    m.payload.compressed_size = payload.len() as u64;
    m.payload.chunks = payload.chunks(cs).map(Digest::of).collect();
    if m.validate(&limits).is_err() {
        return;
    }
    let json = serde_json::to_vec(&m).expect("manifest serialises");
    let mut bundle = fixture::signed_head(fixture::key(), &json);
    bundle.extend_from_slice(payload);
    let trust = fixture::trusted();
    if let Ok(b) = Verifier::new(trust).verify_bundle(&bundle) {
        assert_eq!(b.files().len(), m.files.len());
        let _ = b.self_tests();
    }
});
