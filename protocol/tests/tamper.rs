//! The tamper suite: every modification of a valid bundle or directive is rejected with
//! its specific error, and nothing panics.

mod common;

use outpost_protocol::bundle::{BundleError, PREFIX_LEN, Verifier, encode_signed};
use outpost_protocol::directive::{
    self, DIRECTIVE_FORMAT, Directive, DirectiveContext, DirectiveError, ModelTarget,
};
use outpost_protocol::{Digest, Limits, SigningKey};

use common::*;

struct Layout {
    key_id_len: usize,
    sig: std::ops::Range<usize>,
    manifest: std::ops::Range<usize>,
    payload: std::ops::Range<usize>,
}

fn layout(b: &[u8], head_len: usize) -> Layout {
    let k = b[PREFIX_LEN] as usize;
    let sig_start = PREFIX_LEN + 1 + k;
    Layout {
        key_id_len: k,
        sig: sig_start..sig_start + 64,
        manifest: sig_start + 64 + 4..head_len,
        payload: head_len..b.len(),
    }
}

fn flip(b: &[u8], pos: usize, bit: u8) -> Vec<u8> {
    let mut v = b.to_vec();
    v[pos] ^= 1 << bit;
    v
}

#[test]
fn untouched_bundle_verifies_and_round_trips() {
    let key = SigningKey::generate().unwrap();
    let built = bundle(&key);
    let trust = trust(&[&key]);
    let v = Verifier::new(&trust).verify_bundle(&built.bytes).unwrap();
    assert_eq!(v.digest(), built.digest);
    assert_eq!(v.manifest(), &built.manifest);
    assert_eq!(v.model_bytes(), ONNX);
    assert_eq!(v.file("extra.bin").unwrap().bytes, noise(2000, 7));
    assert_eq!(v.to_bytes(), built.bytes);
    assert!(
        built.manifest.payload.chunks.len() >= 4,
        "want several chunks"
    );
}

#[test]
fn one_bit_flips_everywhere_are_rejected_with_the_right_error() {
    let key = SigningKey::generate().unwrap();
    let built = bundle(&key);
    let trust = trust(&[&key]);
    let verifier = Verifier::new(&trust);
    let b = &built.bytes;
    let l = layout(b, built.head_len);
    let cs = built.manifest.payload.chunk_size as usize;

    let mut positions = Vec::new();
    // Every structural byte, 24 signature bytes, 24 manifest bytes, 24 payload bytes.
    positions.extend(0..PREFIX_LEN + 1 + l.key_id_len);
    let spread = |r: &std::ops::Range<usize>, n: usize| -> Vec<usize> {
        (0..n)
            .map(|i| r.start + i * (r.len() - 1) / (n - 1))
            .collect()
    };
    positions.extend(spread(&l.sig, 24));
    positions.extend(l.sig.end..l.sig.end + 4); // manifest length field
    positions.extend(spread(&l.manifest, 24));
    positions.extend(spread(&l.payload, 24));
    assert!(positions.len() >= 64);

    for (n, &pos) in positions.iter().enumerate() {
        let bit = (n % 8) as u8;
        let err = verifier
            .verify_bundle(&flip(b, pos, bit))
            .expect_err(&format!("flip at {pos} bit {bit} accepted"));
        let ok = match pos {
            p if p < 8 => err == BundleError::BadMagic,
            p if p < 10 => matches!(err, BundleError::UnsupportedFormat(_)),
            p if p < PREFIX_LEN => matches!(
                err,
                BundleError::TooLarge { .. }
                    | BundleError::Truncated { .. }
                    | BundleError::MalformedHead(_)
                    | BundleError::BadSignature(_)
            ),
            p if p == PREFIX_LEN => {
                matches!(err, BundleError::BadKeyId | BundleError::MalformedHead(_))
            }
            p if p < l.sig.start => {
                matches!(err, BundleError::UnknownKey(_) | BundleError::BadKeyId)
            }
            p if l.sig.contains(&p) => matches!(err, BundleError::BadSignature(_)),
            p if p < l.manifest.start => matches!(
                err,
                BundleError::TooLarge { .. } | BundleError::MalformedHead(_)
            ),
            p if l.manifest.contains(&p) => matches!(err, BundleError::BadSignature(_)),
            p => {
                let index = ((p - l.payload.start) / cs) as u32;
                err == BundleError::ChunkDigest { index }
            }
        };
        assert!(ok, "flip at {pos}: unexpected error {err:?}");
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn truncation_at_any_point_is_rejected() {
    let key = SigningKey::generate().unwrap();
    let built = bundle(&key);
    let trust = trust(&[&key]);
    let verifier = Verifier::new(&trust);
    let b = &built.bytes;
    let cuts = [
        0,
        4,
        PREFIX_LEN - 1,
        PREFIX_LEN + 3,
        built.head_len / 2,
        built.head_len - 1,
        built.head_len,
        built.head_len + 1,
        built.head_len + 1500,
        b.len() - 1,
    ];
    for cut in cuts {
        let err = verifier.verify_bundle(&b[..cut]).unwrap_err();
        let want_payload = cut >= built.head_len;
        match err {
            BundleError::Truncated { what, .. } => {
                assert_eq!(what == "payload", want_payload, "cut {cut}: {what}")
            }
            e => panic!("cut {cut}: expected Truncated, got {e:?}"),
        }
    }
}

#[test]
fn appended_bytes_are_rejected() {
    let key = SigningKey::generate().unwrap();
    let built = bundle(&key);
    let trust = trust(&[&key]);
    for extra in [&b"x"[..], &[0u8; 4096]] {
        let mut b = built.bytes.clone();
        b.extend_from_slice(extra);
        assert_eq!(
            Verifier::new(&trust).verify_bundle(&b).unwrap_err(),
            BundleError::TrailingBytes {
                extra: extra.len() as u64
            }
        );
    }
}

#[test]
fn wrong_and_unknown_keys_are_rejected() {
    let signer = SigningKey::generate().unwrap();
    let other = SigningKey::generate().unwrap();
    let built = bundle(&signer);
    // Signed by a key the device does not trust.
    let err = Verifier::new(&trust(&[&other]))
        .verify_bundle(&built.bytes)
        .unwrap_err();
    assert_eq!(err, BundleError::UnknownKey(signer.id().clone()));
    // Key id of a trusted key, signature made by another key.
    let forged = {
        let mut b = built.bytes.clone();
        let l = layout(&b, built.head_len);
        let id = other.id().as_str().as_bytes();
        assert_eq!(id.len(), l.key_id_len);
        b[PREFIX_LEN + 1..PREFIX_LEN + 1 + id.len()].copy_from_slice(id);
        b
    };
    let err = Verifier::new(&trust(&[&signer, &other]))
        .verify_bundle(&forged)
        .unwrap_err();
    assert_eq!(err, BundleError::BadSignature(other.id().clone()));
    // Rotation: a store holding both keys accepts bundles from either.
    let t = trust(&[&signer, &other]);
    Verifier::new(&t).verify_bundle(&built.bytes).unwrap();
    Verifier::new(&t)
        .verify_bundle(&bundle(&other).bytes)
        .unwrap();
}

#[test]
fn swapped_chunks_are_rejected() {
    let key = SigningKey::generate().unwrap();
    let built = bundle(&key);
    let cs = built.manifest.payload.chunk_size as usize;
    let mut b = built.bytes.clone();
    let p = built.head_len;
    let (c0, c1) = (b[p..p + cs].to_vec(), b[p + cs..p + 2 * cs].to_vec());
    b[p..p + cs].copy_from_slice(&c1);
    b[p + cs..p + 2 * cs].copy_from_slice(&c0);
    assert_eq!(
        Verifier::new(&trust(&[&key]))
            .verify_bundle(&b)
            .unwrap_err(),
        BundleError::ChunkDigest { index: 0 }
    );
}

#[test]
fn decompression_bomb_is_refused_at_the_declared_size() {
    // A correctly signed manifest whose payload inflates to more than it declares (the
    // signer is compromised or buggy): inflation must stop at the declared size.
    let key = SigningKey::generate().unwrap();
    let raw = vec![0u8; 8 * 1024 * 1024]; // 8 MiB of zeros compresses to a few hundred bytes
    let payload = outpost_protocol::capped::compress(&raw, 19).unwrap();
    let mut m = bundle(&key).manifest;
    m.files.truncate(1);
    m.self_test = None;
    m.files[0].size = 1000;
    m.files[0].sha256 = Digest::of(&raw[..1000]);
    m.payload.uncompressed_size = 1000;
    m.payload.compressed_size = payload.len() as u64;
    m.payload.chunk_size = 64 * 1024;
    m.payload.chunks = payload.chunks(64 * 1024).map(Digest::of).collect();
    let bomb = encode_signed(&key, &m, &payload);
    assert_eq!(
        Verifier::new(&trust(&[&key]))
            .verify_bundle(&bomb.bytes)
            .unwrap_err(),
        BundleError::DecompressionBomb { declared: 1000 }
    );
    // Declaring the true size but over the global limit is refused before inflating.
    m.files[0].size = raw.len() as u64;
    m.files[0].sha256 = Digest::of(&raw);
    m.payload.uncompressed_size = raw.len() as u64;
    let honest = encode_signed(&key, &m, &payload);
    let limits = Limits {
        max_payload: 1024 * 1024,
        ..Limits::default()
    };
    let trust = trust(&[&key]);
    let err = Verifier::with_limits(&trust, limits)
        .verify_bundle(&honest.bytes)
        .unwrap_err();
    assert!(matches!(err, BundleError::Manifest(_)), "{err:?}");
    Verifier::new(&trust).verify_bundle(&honest.bytes).unwrap();
}

#[test]
fn signed_but_inconsistent_manifests_are_rejected() {
    let key = SigningKey::generate().unwrap();
    let good = bundle(&key);
    let trust = trust(&[&key]);
    let payload = &good.bytes[good.head_len..];
    let check = |mutate: &dyn Fn(&mut outpost_protocol::manifest::Manifest)| {
        let mut m = good.manifest.clone();
        mutate(&mut m);
        Verifier::new(&trust)
            .verify_bundle(&encode_signed(&key, &m, payload).bytes)
            .unwrap_err()
    };
    assert!(matches!(check(&|m| m.format = 9), BundleError::Manifest(_)));
    assert!(matches!(
        check(&|m| m.files[1].name = "../etc/passwd".into()),
        BundleError::Manifest(_)
    ));
    assert!(matches!(
        check(&|m| m.payload.chunk_size = 256 * 1024),
        BundleError::Manifest(_)
    ));
    assert!(matches!(
        check(&|m| {
            m.payload.chunks.pop();
        }),
        BundleError::Manifest(_)
    ));
    assert!(matches!(
        check(&|m| m.model.version = 0),
        BundleError::Manifest(_)
    ));
    // File digest wrong while chunks are right.
    let e = check(&|m| m.files[0].sha256 = Digest::of(b"other"));
    assert_eq!(
        e,
        BundleError::FileDigest {
            name: "model.onnx".into()
        }
    );
}

fn directive(seq: u64, device: &str, expires_at: u64) -> Directive {
    Directive {
        format: DIRECTIVE_FORMAT,
        device_id: device.into(),
        sequence: seq,
        issued_at: 1_000,
        expires_at,
        models: vec![ModelTarget {
            name: "m".into(),
            digest: Digest::of(b"bundle"),
            version: 1,
            head_size: 1000,
            size: 5000,
            memory_bytes: None,
            deployment_id: "dep-1".into(),
        }],
        trust: None,
    }
}

#[test]
fn directives_expired_replayed_stale_or_forged_are_rejected() {
    let key = SigningKey::generate().unwrap();
    let other = SigningKey::generate().unwrap();
    let trust = trust(&[&key]);
    let limits = Limits::default();
    let ctx = |last, now| DirectiveContext {
        device_id: "gw-1",
        last_sequence: last,
        now,
        max_skew: 500,
    };
    let ok = directive(5, "gw-1", 2_000).sign(&key);
    let v = directive::verify(&ok, &trust, ctx(Some(4), 1_500), &limits).unwrap();
    assert_eq!(v.directive(), &directive(5, "gw-1", 2_000));
    assert_eq!(
        directive::verify(&ok, &trust, ctx(None, 1_500), &limits)
            .unwrap()
            .sequence(),
        5
    );

    let verify =
        |bytes: &[u8], last, now| directive::verify(bytes, &trust, ctx(last, now), &limits);
    assert_eq!(
        verify(&ok, Some(4), 2_000).unwrap_err(),
        DirectiveError::Expired {
            expires_at: 2_000,
            now: 2_000
        }
    );
    assert_eq!(
        verify(&ok, Some(5), 1_500).unwrap_err(),
        DirectiveError::Replayed(5)
    );
    assert_eq!(
        verify(&ok, Some(9), 1_500).unwrap_err(),
        DirectiveError::StaleSequence {
            sequence: 5,
            last: 9
        }
    );
    assert!(matches!(
        verify(&directive(6, "gw-2", 2_000).sign(&key), Some(5), 1_500).unwrap_err(),
        DirectiveError::WrongDevice { .. }
    ));
    assert!(matches!(
        verify(&directive(6, "gw-1", 2_000).sign(&other), Some(5), 1_500).unwrap_err(),
        DirectiveError::UnknownKey(_)
    ));
    // Tampered body: bump the sequence inside the signed JSON.
    let tampered = String::from_utf8(ok.clone())
        .unwrap()
        .replace("\\\"sequence\\\":5", "\\\"sequence\\\":7");
    assert_ne!(tampered.as_bytes(), &ok[..]);
    assert!(matches!(
        verify(tampered.as_bytes(), Some(5), 1_500).unwrap_err(),
        DirectiveError::BadSignature(_)
    ));
    // A bundle signature cannot be replayed as a directive signature (domain separation).
    let body = serde_json::to_string(&directive(8, "gw-1", 2_000)).unwrap();
    let sig = key.sign(outpost_protocol::bundle::BUNDLE_DOMAIN, body.as_bytes());
    let cross = serde_json::json!({"key_id": key.id().as_str(), "signature": hex::encode(sig), "body": body});
    assert!(matches!(
        verify(cross.to_string().as_bytes(), Some(5), 1_500).unwrap_err(),
        DirectiveError::BadSignature(_)
    ));
    assert!(matches!(
        verify(b"{not json", None, 0).unwrap_err(),
        DirectiveError::Malformed(_)
    ));
    // From the future beyond the allowed skew: the device clock is behind.
    assert_eq!(
        verify(&ok, Some(4), 499).unwrap_err(),
        DirectiveError::NotYetValid {
            issued_at: 1_000,
            now: 499,
            max_skew: 500
        }
    );
    assert!(verify(&ok, Some(4), 500).is_ok(), "within the skew");
    // A set naming one model twice is refused.
    let mut twice = directive(6, "gw-1", 2_000);
    twice.models.push(twice.models[0].clone());
    assert!(matches!(
        verify(&twice.sign(&key), Some(5), 1_500).unwrap_err(),
        DirectiveError::Invalid(_)
    ));
    assert!(matches!(
        // One byte past the cap, whatever the cap is (it grew with multi-model directives).
        verify(&vec![b' '; limits.max_directive + 1], None, 0).unwrap_err(),
        DirectiveError::TooLarge { .. }
    ));
    assert!(!matches!(
        verify(&vec![b' '; limits.max_directive], None, 0).unwrap_err(),
        DirectiveError::TooLarge { .. }
    ));
}
