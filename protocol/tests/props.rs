//! Property tests: random mutations of a valid bundle are always rejected; codecs
//! round-trip; decoders of untrusted bytes never panic.

mod common;

use std::sync::OnceLock;

use outpost_protocol::bundle::{BuiltBundle, BundleBuilder, Verifier};
use outpost_protocol::directive::{
    self, DIRECTIVE_FORMAT, Directive, DirectiveContext, ModelTarget,
};
use outpost_protocol::manifest::ModelRef;
use outpost_protocol::rotation::{MAX_TRUST_ADD, MAX_TRUST_REMOVE, TrustUpdate, TrustedKey};
use outpost_protocol::uplink::{Record, UplinkBatch};
use outpost_protocol::wire::{ChunkFrame, ChunkRequest, PartKind};
use outpost_protocol::{Digest, KeyId, Limits, PublicKey, SigningKey, TrustStore};
use proptest::prelude::*;

use common::*;

fn fixture() -> &'static (SigningKey, BuiltBundle, TrustStore) {
    static F: OnceLock<(SigningKey, BuiltBundle, TrustStore)> = OnceLock::new();
    F.get_or_init(|| {
        let key = SigningKey::generate().unwrap();
        let b = bundle(&key);
        let t = trust(&[&key]);
        (key, b, t)
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { pos: usize, mask: u8 },
    Overwrite { pos: usize, bytes: Vec<u8> },
    Truncate { len: usize },
    Insert { pos: usize, bytes: Vec<u8> },
    Delete { pos: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(pos, mask)| Mutation::Flip { pos, mask }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(pos, bytes)| Mutation::Overwrite { pos, bytes }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(pos, bytes)| Mutation::Insert { pos, bytes }),
        (any::<usize>(), 1usize..64).prop_map(|(pos, len)| Mutation::Delete { pos, len }),
    ]
}

fn apply(b: &[u8], m: &Mutation) -> Vec<u8> {
    let mut v = b.to_vec();
    let n = v.len();
    // A truncation to nothing leaves nothing to mutate (and no position to take modulo);
    // the empty input is still checked as rejected.
    if n == 0 {
        return v;
    }
    match m {
        Mutation::Flip { pos, mask } => v[pos % n] ^= mask,
        Mutation::Overwrite { pos, bytes } => {
            let p = pos % n;
            for (i, x) in bytes.iter().enumerate() {
                if p + i < n {
                    v[p + i] = *x;
                }
            }
        }
        Mutation::Truncate { len } => v.truncate(len % n),
        Mutation::Insert { pos, bytes } => {
            let p = pos % (n + 1);
            v.splice(p..p, bytes.iter().copied());
        }
        Mutation::Delete { pos, len } => {
            let p = pos % n;
            v.drain(p..(p + len).min(n));
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_mutations_of_a_valid_bundle_are_rejected(ms in prop::collection::vec(mutation(), 1..4)) {
        let (_, built, trust) = fixture();
        let mut b = built.bytes.clone();
        for m in &ms {
            b = apply(&b, m);
        }
        prop_assume!(b != built.bytes);
        prop_assert!(Verifier::new(trust).verify_bundle(&b).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let (_, _, trust) = fixture();
        let limits = Limits::default();
        let _ = Verifier::new(trust).verify_bundle(&bytes);
        let _ = Verifier::new(trust).verify_head(&bytes);
        let _ = UplinkBatch::decode(&bytes, &limits);
        let _ = ChunkFrame::decode(&bytes);
        let _ = ChunkRequest::decode(&bytes, &limits);
        let ctx = DirectiveContext { device_id: "d", last_sequence: None, now: 0, max_skew: u64::MAX };
        let _ = directive::verify(&bytes, trust, ctx, &limits);
        let mut with_magic = b"OUTPOSTB\x01\x00".to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = Verifier::new(trust).verify_bundle(&with_magic);
        let mut ub = b"OPUB\x01".to_vec();
        ub.extend_from_slice(&bytes);
        let _ = UplinkBatch::decode(&ub, &limits);
    }

    #[test]
    fn uplink_batches_round_trip(
        stream in "[a-z][a-z0-9_]{0,31}",
        batch_id in any::<u64>(),
        start in any::<u32>(),
        gaps in prop::collection::vec(1u64..1000, 1..50),
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 50),
    ) {
        let mut seq = u64::from(start);
        let records: Vec<Record> = gaps.iter().zip(&bodies).map(|(g, body)| {
            seq += g;
            Record { seq, ts_ms: seq * 10, body: body.clone() }
        }).collect();
        let batch = UplinkBatch { stream, batch_id, records };
        let enc = batch.encode(3).unwrap();
        prop_assert_eq!(UplinkBatch::decode(&enc, &Limits::default()).unwrap(), batch);
    }

    #[test]
    fn chunk_frames_round_trip(kind in 0u8..3, index in any::<u32>(), d in any::<[u8; 32]>(),
                               data in prop::collection::vec(any::<u8>(), 0..4096)) {
        let kind = [PartKind::Head, PartKind::Chunk, PartKind::Error][kind as usize];
        let f = ChunkFrame { bundle: Digest(d), kind, index, data };
        prop_assert_eq!(ChunkFrame::decode(&f.encode()).unwrap(), f);
    }

    #[test]
    fn directives_round_trip(seq in 1u64..u64::MAX, dep in "[a-z0-9-]{1,20}", dev in "[A-Za-z0-9._-]{1,64}",
                             version in 1u32..1000, d in any::<[u8; 32]>(),
                             add in prop::collection::vec(any::<[u8; 32]>(), 0..=MAX_TRUST_ADD),
                             remove in prop::collection::vec("[0-9a-f]{16}", 0..=MAX_TRUST_REMOVE)) {
        let (key, _, trust) = fixture();
        let mut add: Vec<PublicKey> = add.into_iter().map(PublicKey::from_bytes).collect();
        add.dedup_by(|a, b| a.id() == b.id());
        let mut remove: Vec<KeyId> = remove.iter().filter_map(|r| KeyId::parse(r)).collect();
        remove.sort();
        remove.dedup();
        remove.retain(|r| r != key.id() && !add.iter().any(|a| a.id() == r));
        let update = TrustUpdate { add: add.iter().map(TrustedKey::of).collect(), remove: remove.clone() };
        let dir = Directive {
            format: DIRECTIVE_FORMAT, device_id: dev.clone(), sequence: seq,
            issued_at: 10, expires_at: 20,
            models: vec![ModelTarget { name: "m".into(), digest: Digest(d), version, head_size: 1, size: 2, memory_bytes: None, deployment_id: dep }],
            trust: (!update.is_empty()).then_some(update),
        };
        let ctx = DirectiveContext { device_id: &dev, last_sequence: Some(seq - 1), now: 15, max_skew: 0 };
        let v = directive::verify(&dir.sign(key), trust, ctx, &Limits::default()).unwrap();
        prop_assert_eq!(v.directive(), &dir);
        prop_assert_eq!(v.trust_changes().add(), &add[..]);
        prop_assert_eq!(v.trust_changes().remove(), &remove[..]);
    }

    /// Trust only ever comes out of a directive whose signature verified with a key the
    /// device already trusts: the same body signed by any other key, or with a flipped
    /// signature byte, yields an error and no keys.
    #[test]
    fn an_unverified_directive_cannot_add_trust(flip in 0usize..64, mask in 1u8..=255) {
        let (key, _, trust) = fixture();
        let stranger = SigningKey::generate().unwrap();
        let dir = Directive {
            format: DIRECTIVE_FORMAT, device_id: "gw-1".into(), sequence: 2,
            issued_at: 10, expires_at: 20, models: vec![],
            trust: Some(TrustUpdate { add: vec![TrustedKey::of(&stranger.public_key())], remove: vec![] }),
        };
        let ctx = DirectiveContext { device_id: "gw-1", last_sequence: Some(1), now: 15, max_skew: 0 };
        let limits = Limits::default();
        prop_assert!(directive::verify(&dir.sign(&stranger), trust, ctx, &limits).is_err());
        let mut env: serde_json::Value = serde_json::from_slice(&dir.sign(key)).unwrap();
        let mut sig = hex::decode(env["signature"].as_str().unwrap()).unwrap();
        sig[flip] ^= mask;
        env["signature"] = hex::encode(sig).into();
        let forged = serde_json::to_vec(&env).unwrap();
        prop_assert!(matches!(
            directive::verify(&forged, trust, ctx, &limits),
            Err(directive::DirectiveError::BadSignature(_))
        ));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn bundles_round_trip_any_content_and_chunk_size(
        extra in prop::collection::vec(any::<u8>(), 0..20_000),
        chunk in 64u32..=131_072,
        version in 1u32..100,
    ) {
        let (key, _, trust) = fixture();
        let built = BundleBuilder::new(ModelRef { name: "m".into(), version }, ONNX.to_vec(), spec(), lineage())
            .file("extra", extra.clone())
            .chunk_size(chunk)
            .level(1)
            .build(key)
            .unwrap();
        let v = Verifier::new(trust).verify_bundle(&built.bytes).unwrap();
        prop_assert_eq!(v.file("extra").unwrap().bytes.clone(), extra);
        prop_assert_eq!(&v.to_bytes(), &built.bytes);
        // Chunk-by-chunk assembly (the download path) gives the same result.
        let head = &built.bytes[..built.head_len];
        let vm = Verifier::new(trust).verify_head(head).unwrap().expect_digest(built.digest).unwrap();
        let payload = &built.bytes[built.head_len..];
        let v2 = vm.assemble(payload.chunks(chunk as usize)).unwrap();
        prop_assert_eq!(v2.digest(), v.digest());
    }
}
