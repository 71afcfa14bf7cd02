//! Black-box: bundles made by `outpost-bridge bundle pack`, checked by
//! `outpost-agent verify-bundle`. Exit 0 only for the untouched bundle.

mod common;

use std::path::Path;

use common::*;
use outpost_protocol::bundle::{PREFIX_LEN, encode_signed};
use outpost_protocol::{Digest, SigningKey};

fn verify(bundle: &Path, trust: &Path) -> (bool, String) {
    let o = run(agent()
        .arg("verify-bundle")
        .arg(bundle)
        .arg("--trust")
        .arg(trust));
    (o.status.success(), text(&o))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn tamper_matrix_through_the_real_binaries() {
    let d = tempfile::tempdir().unwrap();
    let key = init_keys(d.path());
    let trust = d.path().join("keys");
    let good = d.path().join("good.bundle");
    let o = pack_anomaly(
        &key,
        &good,
        &["--chunk-size", "1024", "--reason", "tamper matrix"],
    );
    assert!(o.status.success(), "{}", text(&o));

    let (ok, out) = verify(&good, &trust);
    assert!(ok, "untouched bundle must verify: {out}");
    assert!(out.starts_with("ok: vibration-anomaly v1 "), "{out}");

    let bytes = std::fs::read(&good).unwrap();
    let k = bytes[PREFIX_LEN] as usize;
    let sig = PREFIX_LEN + 1 + k..PREFIX_LEN + 1 + k + 64;
    let man_start = sig.end + 4;
    let head_len = 14 + u32::from_le_bytes(bytes[10..14].try_into().unwrap()) as usize;
    let chunks = (bytes.len() - head_len).div_ceil(1024);
    assert!(chunks >= 4, "want several chunks, got {chunks}");

    let mut cases: Vec<(String, Vec<u8>, &str)> = Vec::new();
    let spread = |a: usize, b: usize, n: usize| (0..n).map(move |i| a + i * (b - 1 - a) / (n - 1));
    for (region, range, expect) in [
        ("signature", sig.clone(), "signature does not verify"),
        ("manifest", man_start..head_len, "signature does not verify"),
        ("payload", head_len..bytes.len(), "digest mismatch"),
    ] {
        for (i, pos) in spread(range.start, range.end, 22).enumerate() {
            let mut b = bytes.clone();
            b[pos] ^= 1 << (i % 8);
            cases.push((format!("{region} flip at {pos}"), b, expect));
        }
    }
    let mut magic = bytes.clone();
    magic[0] ^= 0x20;
    cases.push(("magic".into(), magic, "bad magic"));
    for cut in [
        0,
        9,
        PREFIX_LEN + 5,
        head_len / 2,
        head_len - 1,
        head_len + 10,
        head_len + 2048,
        bytes.len() - 1,
    ] {
        cases.push((
            format!("truncated at {cut}"),
            bytes[..cut].to_vec(),
            "truncated",
        ));
    }
    let mut appended = bytes.clone();
    appended.extend_from_slice(b"trailing");
    cases.push((
        "appended".into(),
        appended,
        "unexpected bytes after the payload",
    ));
    let mut swapped = bytes.clone();
    let (a, b) = (head_len..head_len + 1024, head_len + 1024..head_len + 2048);
    let ca = bytes[a.clone()].to_vec();
    swapped.copy_within(b.clone(), a.start);
    swapped[b].copy_from_slice(&ca);
    cases.push(("swapped chunks".into(), swapped, "chunk 0 digest mismatch"));
    let mut unknown_id = bytes.clone();
    unknown_id[PREFIX_LEN + 1] = if unknown_id[PREFIX_LEN + 1] == b'0' {
        b'1'
    } else {
        b'0'
    };
    cases.push(("unknown key id".into(), unknown_id, "unknown key"));

    // Decompression bomb, correctly signed with the real key.
    let sk = SigningKey::load(&key).unwrap();
    let raw = vec![0u8; 4 << 20];
    let z = outpost_protocol::capped::compress(&raw, 19).unwrap();
    let vb = outpost_protocol::bundle::Verifier::new(
        &outpost_protocol::TrustStore::load_dir(&trust).unwrap(),
    )
    .verify_bundle(&bytes)
    .unwrap();
    let mut m = vb.manifest().clone();
    m.files.truncate(1);
    m.self_test = None;
    m.baseline = None;
    m.files[0].size = 512;
    m.files[0].sha256 = Digest::of(&raw[..512]);
    m.payload.uncompressed_size = 512;
    m.payload.compressed_size = z.len() as u64;
    m.payload.chunk_size = 1024;
    m.payload.chunks = z.chunks(1024).map(Digest::of).collect();
    cases.push((
        "decompression bomb".into(),
        encode_signed(&sk, &m, &z).bytes,
        "decompression bomb",
    ));

    assert!(cases.len() >= 64 + 8 + 4, "{} cases", cases.len());
    for (name, b, expect) in &cases {
        let p = write(d.path(), "case.bundle", b);
        let (ok, out) = verify(&p, &trust);
        assert!(!ok, "{name}: accepted");
        assert!(
            out.contains(expect),
            "{name}: expected {expect:?} in {out:?}"
        );
        assert!(!out.contains("panicked"), "{name}: {out}");
    }

    // Wrong key: a trust dir that holds only some other key.
    let other = d.path().join("other");
    let o = run(bridge()
        .arg("--data-dir")
        .arg(d.path().join("other-data"))
        .args(["keys", "init", "--out"])
        .arg(&other));
    assert!(o.status.success());
    let (ok, out) = verify(&good, &other);
    assert!(!ok && out.contains("unknown key"), "{out}");
    // Rotation: both public keys in one trust dir → accepted.
    for e in std::fs::read_dir(&other).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "pub") {
            std::fs::copy(&p, trust.join(p.file_name().unwrap())).unwrap();
        }
    }
    assert!(verify(&good, &trust).0);
}

#[test]
fn verify_bundle_self_test_and_usage_errors() {
    let d = tempfile::tempdir().unwrap();
    let key = init_keys(d.path());
    let good = d.path().join("a.bundle");
    assert!(pack_anomaly(&key, &good, &[]).status.success());
    let o = run(agent()
        .arg("verify-bundle")
        .arg(&good)
        .arg("--trust")
        .arg(d.path().join("keys"))
        .arg("--self-test"));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("self-test=6/6"), "{}", text(&o));
    // Missing trust dir and missing file are usage errors (exit 2), with the reason.
    let o = run(agent()
        .arg("verify-bundle")
        .arg(&good)
        .arg("--trust")
        .arg(d.path().join("nope")));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("nope"));
    let o = run(agent()
        .arg("verify-bundle")
        .arg(d.path().join("missing.bundle"))
        .arg("--trust")
        .arg(d.path().join("keys")));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn pack_refuses_models_that_fail_validation() {
    let d = tempfile::tempdir().unwrap();
    let key = init_keys(d.path());
    let src = models().join("vibration-anomaly");
    let spec = std::fs::read_to_string(src.join("spec.toml")).unwrap();

    // A self-test expectation the model cannot meet.
    let start = spec.find("expected = [").unwrap() + "expected = [".len();
    let end = start + spec[start..].find(',').unwrap();
    let wrong = format!("{}0.25{}", &spec[..start], &spec[end..]);
    let bad = spec_case(d.path(), "wrong-expected.toml", &wrong);
    let o = pack_with(
        &key,
        &src.join("model.onnx"),
        &bad,
        &d.path().join("x.bundle"),
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("self-test sample 0 failed: output \"probabilities\"[0]"),
        "{}",
        text(&o)
    );
    assert!(
        !d.path().join("x.bundle").exists(),
        "refused model must not be written"
    );

    // No self-test samples at all.
    let cut = spec.find("[[self_test]]").unwrap();
    let none = spec_case(d.path(), "none.toml", &spec[..cut]);
    let o = pack_with(
        &key,
        &src.join("model.onnx"),
        &none,
        &d.path().join("x.bundle"),
    );
    // No self-test samples at all: the bundle carries samples synthesised on this host,
    // which the device checks before switching.
    assert!(o.status.success(), "{}", text(&o));
    let o = run(agent()
        .args(["verify-bundle"])
        .arg(d.path().join("x.bundle"))
        .arg("--trust")
        .arg(d.path().join("keys"))
        .arg("--self-test"));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("self-test=4/4"), "{}", text(&o));
    std::fs::remove_file(d.path().join("x.bundle")).unwrap();

    // Not an ONNX file.
    let junk = spec_case(d.path(), "junk.onnx", "definitely not onnx");
    let o = pack_with(
        &key,
        &junk,
        &src.join("spec.toml"),
        &d.path().join("x.bundle"),
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("does not load"), "{}", text(&o));

    // Malformed spec: the parser's message names the file and the line.
    let broken = spec_case(d.path(), "broken.toml", "[input]\nname = \n");
    let o = pack_with(
        &key,
        &src.join("model.onnx"),
        &broken,
        &d.path().join("x.bundle"),
    );
    assert!(
        text(&o).contains("broken.toml") && text(&o).contains("line"),
        "{}",
        text(&o)
    );
    assert!(!d.path().join("x.bundle").exists());
}

fn spec_case(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    write(dir, name, body.as_bytes())
}

fn pack_with(key: &Path, model: &Path, spec: &Path, out: &Path) -> std::process::Output {
    run(bridge()
        .args(["bundle", "pack", "--model"])
        .arg(model)
        .arg("--spec")
        .arg(spec)
        .arg("--key")
        .arg(key)
        .arg("-o")
        .arg(out))
}
