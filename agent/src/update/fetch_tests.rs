use std::collections::BTreeSet;

use outpost_protocol::bundle::BundleBuilder;
use outpost_protocol::contract::ModelContract;
use outpost_protocol::directive::{
    self, DIRECTIVE_FORMAT, Directive, DirectiveContext, ModelTarget,
};
use outpost_protocol::manifest::{Lineage, ModelRef};
use outpost_protocol::serve::ServedBundle;
use outpost_protocol::{Limits, SigningKey};

use super::*;

const CFG: FetchConfig = FetchConfig {
    window: 4,
    request_timeout_ms: 1000,
};

fn spec() -> ModelContract {
    serde_json::from_value(serde_json::json!({
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
        "task": {"kind": "classification", "output": "y", "labels": ["a", "b"]}
    }))
    .unwrap()
}

/// A bundle of ~20 chunks of 512 bytes (incompressible content) and its directive.
fn fixture(key: &SigningKey) -> (ServedBundle, ModelTarget, TrustStore) {
    fixture_of(key, 10_000)
}

/// A bundle of `bytes` of incompressible content in 512-byte chunks and its directive.
fn fixture_of(key: &SigningKey, bytes: usize) -> (ServedBundle, ModelTarget, TrustStore) {
    let mut x = 0x9E37_79B9u32;
    let noise: Vec<u8> = (0..bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let lineage = Lineage {
        created_by: "t".into(),
        ..Default::default()
    };
    let built = BundleBuilder::new(
        ModelRef {
            name: "m".into(),
            version: 1,
        },
        noise,
        spec(),
        lineage,
    )
    .chunk_size(512)
    .build(key)
    .unwrap();
    let served = ServedBundle::new(built.bytes.clone()).unwrap();
    let mut trust = TrustStore::new();
    trust.add(key.public_key());
    let d = Directive {
        format: DIRECTIVE_FORMAT,
        device_id: "dev".into(),
        sequence: 1,
        issued_at: 0,
        expires_at: 100,
        models: vec![ModelTarget {
            name: "m".into(),
            digest: built.digest,
            version: 1,
            head_size: built.head_len as u32,
            size: built.bytes.len() as u64,
            memory_bytes: None,
            deployment_id: "dep".into(),
        }],
        trust: None,
    };
    let ctx = DirectiveContext {
        device_id: "dev",
        last_sequence: None,
        now: 1,
        max_skew: 0,
    };
    // Targets come from verified directives.
    let vd = directive::verify(&d.sign(key), &trust, ctx, &Limits::default()).unwrap();
    (served, vd.directive().models[0].clone(), trust)
}

/// Drives the machine against a server until Install/Fail or `max_steps`; `drop` decides
/// which responses (by running count) are lost.
struct Harness {
    f: Fetcher,
    now: u64,
    persisted: BTreeSet<u32>,
    requested: Vec<u32>,
    outcome: Option<Action>,
    max_inflight_seen: usize,
}

impl Harness {
    fn new(f: Fetcher) -> Self {
        Self {
            f,
            now: 0,
            persisted: BTreeSet::new(),
            requested: Vec::new(),
            outcome: None,
            max_inflight_seen: 0,
        }
    }

    fn run(
        &mut self,
        served: &ServedBundle,
        mut actions: Vec<Action>,
        drop: &mut dyn FnMut(u32) -> bool,
        corrupt: &mut dyn FnMut(u32, &ChunkFrame) -> bool,
    ) {
        let mut sent = 0u32;
        for _ in 0..10_000 {
            let mut frames = Vec::new();
            for a in actions.drain(..) {
                match a {
                    Action::Request(r) => {
                        self.requested.extend(&r.chunks);
                        frames.extend(served.respond(&r));
                    }
                    Action::PersistChunk { index, .. } => assert!(
                        self.persisted.insert(index),
                        "chunk {index} persisted twice"
                    ),
                    Action::PersistHead { .. } => {}
                    a @ (Action::Install { .. } | Action::Fail { .. }) => {
                        self.outcome = Some(a);
                        return;
                    }
                }
            }
            if let Phase::Chunks { inflight, .. } | Phase::Head { inflight, .. } = &self.f.phase {
                self.max_inflight_seen = self.max_inflight_seen.max(inflight.len());
            }
            if frames.is_empty() {
                self.now += 600;
                actions = self.f.on_tick(self.now);
                continue;
            }
            for mut fr in frames {
                sent += 1;
                if drop(sent) {
                    continue;
                }
                if fr.kind == PartKind::Chunk && corrupt(sent, &fr) {
                    fr.data[0] ^= 1;
                }
                self.now += 1;
                actions.extend(self.f.on_frame(fr, self.now));
            }
        }
        panic!("did not finish");
    }
}

/// A connected fetcher that has begun on a fresh `bytes`-byte bundle: the bundle, the
/// harness around the fetcher, and its first requests.
fn begun(bytes: usize) -> (ServedBundle, Harness, Vec<Action>) {
    let key = SigningKey::generate().unwrap();
    let (served, vd, trust) = fixture_of(&key, bytes);
    let mut f = Fetcher::new(CFG, trust);
    f.on_connected(0);
    let first = f.begin(vd, 0);
    (served, Harness::new(f), first)
}

#[test]
fn fetches_everything_within_the_window() {
    let key = SigningKey::generate().unwrap();
    let (served, vd, trust) = fixture(&key);
    let mut f = Fetcher::new(CFG, trust);
    assert!(f.on_connected(0).is_empty());
    let first = f.begin(vd, 0);
    let mut h = Harness::new(f);
    h.run(&served, first, &mut |_| false, &mut |_, _| false);
    assert!(matches!(h.outcome, Some(Action::Install { .. })));
    assert_eq!(h.persisted.len() as u32, served.chunk_count());
    assert!(served.chunk_count() >= 16);
    assert!(h.max_inflight_seen <= CFG.window as usize);
    assert_eq!(h.f.stats().chunks_received, served.chunk_count());
    assert_eq!(h.f.stats().retries, 0);
}

#[test]
fn lost_and_corrupted_frames_are_requested_again() {
    let (served, mut h, first) = begun(10_000);
    h.run(&served, first, &mut |n| n % 3 == 0, &mut |n, _| n % 7 == 0);
    assert!(matches!(h.outcome, Some(Action::Install { .. })));
    assert_eq!(h.persisted.len() as u32, served.chunk_count());
    let s = h.f.stats();
    assert!(s.retries > 0 && s.rejected > 0, "{s:?}");
}

#[test]
fn nothing_is_sent_while_disconnected_and_reconnect_re_requests() {
    let key = SigningKey::generate().unwrap();
    let (served, vd, trust) = fixture(&key);
    let mut f = Fetcher::new(CFG, trust);
    assert!(f.begin(vd, 0).is_empty(), "disconnected: no requests");
    assert!(f.on_tick(5000).is_empty());
    let acts = f.on_connected(5000);
    assert!(matches!(acts.as_slice(), [Action::Request(r)] if r.head == vec![0]));
    let mut h = Harness::new(f);
    h.run(&served, acts, &mut |_| false, &mut |_, _| false);
    assert!(matches!(h.outcome, Some(Action::Install { .. })));
}

#[test]
fn resume_requests_only_missing_chunks() {
    let key = SigningKey::generate().unwrap();
    let (served, vd, trust) = fixture(&key);
    let head = &served.bytes()[..served.head_len()];
    let manifest = Verifier::new(&trust).verify_head(head).unwrap();
    let n = served.chunk_count() as usize;
    let have: Vec<bool> = (0..n).map(|i| i % 3 != 1).collect();
    let missing: BTreeSet<u32> = (0..n as u32).filter(|i| i % 3 == 1).collect();
    let mut f = Fetcher::new(CFG, trust);
    f.on_connected(0);
    let first = f.resume(vd, manifest, have, 0);
    let mut h = Harness::new(f);
    h.run(&served, first, &mut |_| false, &mut |_, _| false);
    assert!(matches!(h.outcome, Some(Action::Install { .. })));
    let requested: BTreeSet<u32> = h.requested.iter().copied().collect();
    assert_eq!(requested, missing);
    assert_eq!(h.requested.len(), missing.len(), "no chunk requested twice");
}

#[test]
fn a_head_that_fails_verification_fails_the_download() {
    let signer = SigningKey::generate().unwrap();
    let (served, _, _) = fixture(&signer);
    let other = SigningKey::generate().unwrap();
    let (_, vd_other, trust_other) = fixture(&other);
    // The directive (signed by a trusted key) names a bundle; the server hands back a
    // head signed by an untrusted key under that digest.
    let mut f = Fetcher::new(CFG, trust_other);
    f.on_connected(0);
    let target = vd_other.digest;
    f.begin(vd_other, 0);
    let mut acts = Vec::new();
    for i in 0..served.head_pieces() {
        let data = served.part(PartKind::Head, i).unwrap().to_vec();
        acts.extend(f.on_frame(
            ChunkFrame {
                bundle: target,
                kind: PartKind::Head,
                index: i,
                data,
            },
            1,
        ));
    }
    match acts.pop() {
        Some(Action::Fail { reason, .. }) => assert!(reason.contains("unknown key"), "{reason}"),
        other => panic!("expected Fail, got {other:?}"),
    }
}

#[test]
fn frames_for_other_bundles_or_unrequested_parts_are_ignored() {
    let key = SigningKey::generate().unwrap();
    let (served, vd, trust) = fixture(&key);
    let mut f = Fetcher::new(CFG, trust);
    f.on_connected(0);
    f.begin(vd, 0);
    let stray = ChunkFrame {
        bundle: Digest::of(b"other"),
        kind: PartKind::Chunk,
        index: 0,
        data: vec![1, 2, 3],
    };
    assert!(f.on_frame(stray, 1).is_empty());
    let early_chunk = ChunkFrame {
        bundle: served.digest(),
        kind: PartKind::Chunk,
        index: 0,
        data: served.part(PartKind::Chunk, 0).unwrap().to_vec(),
    };
    assert!(
        f.on_frame(early_chunk, 2).is_empty(),
        "chunks before the head are ignored"
    );
    assert_eq!(f.stats().ignored, 2);
}

#[test]
fn a_chunk_that_keeps_failing_verification_fails_the_download() {
    let (served, mut h, first) = begun(10_000);
    // Chunk 3 is always corrupted by the "server".
    h.run(&served, first, &mut |_| false, &mut |_, f| f.index == 3);
    match h.outcome {
        Some(Action::Fail { reason, .. }) => {
            assert!(reason.contains("chunk 3 digest mismatch"), "{reason}")
        }
        other => panic!("expected Fail, got {other:?}"),
    }
}

#[test]
fn a_transient_error_frame_is_retried_and_a_fatal_one_fails_with_the_reason() {
    let key = SigningKey::generate().unwrap();
    let (served, vd, trust) = fixture(&key);
    let mut f = Fetcher::new(CFG, trust);
    f.on_connected(0);
    f.begin(vd.clone(), 0);
    let busy = outpost_protocol::serve::error_frame(served.digest(), 0, "rate limited");
    assert!(f.on_frame(busy, 1).is_empty(), "not now: asked again later");
    assert_eq!(f.target(), Some(served.digest()));
    let never = outpost_protocol::serve::fatal_frame(served.digest(), 0, "over the packet limit");
    match f.on_frame(never, 2).as_slice() {
        [Action::Fail { target, reason }] => {
            assert_eq!(target, &vd);
            assert!(reason.contains("over the packet limit"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(f.target(), None);
}

/// A busy bridge: one part answered every `service_ms`, in order of asking, so a part
/// waits for everything asked before it (the per-device pacing of a loaded bridge); its
/// answer then spends `transit_ms` on the way (outgoing queue, broker, sockets). Like the
/// bridge, it does not queue a part already queued for the device (`dedup`), but a part
/// already answered and on its way is answered again.
/// Returns (parts sent by the server, parts in the bundle, the fetcher's stats).
fn fetch_from_a_queue(service_ms: u64, transit_ms: u64, dedup: bool) -> (usize, usize, FetchStats) {
    let (served, mut h, mut actions) = begun(100_000);
    let f = &mut h.f;
    // (answered at, frame), in order.
    let mut pending: std::collections::VecDeque<(u64, ChunkFrame)> = Default::default();
    let mut free_at = 0u64;
    let mut sent = 0usize;
    for t in (0..3_600_000u64).step_by(10) {
        for a in actions.drain(..) {
            match a {
                Action::Request(r) => {
                    for fr in served.respond(&r) {
                        let queued = pending
                            .iter()
                            .any(|(at, q)| *at > t && q.kind == fr.kind && q.index == fr.index);
                        if dedup && queued {
                            continue;
                        }
                        free_at = free_at.max(t) + service_ms;
                        sent += 1;
                        pending.push_back((free_at, fr));
                    }
                }
                Action::Install { .. } => {
                    let parts = served.head_pieces() + served.chunk_count();
                    return (sent, parts as usize, f.stats());
                }
                Action::Fail { reason, .. } => panic!("{reason}"),
                Action::PersistChunk { .. } | Action::PersistHead { .. } => {}
            }
        }
        while pending.front().is_some_and(|(at, _)| at + transit_ms <= t) {
            let (_, fr) = pending.pop_front().unwrap();
            actions.extend(f.on_frame(fr, t));
        }
        actions.extend(f.on_tick(t));
    }
    panic!("did not finish in an hour");
}

#[test]
fn a_slow_bridge_is_not_asked_twice_once_its_round_trip_is_known() {
    // Four parts in flight, 750 ms each: every answer takes ~3 s, three times the
    // initial timeout. A fixed timeout would have every part sent about three times.
    let (sent, parts, s) = fetch_from_a_queue(750, 0, false);
    assert!(parts >= 190, "{parts}");
    // While the timeout backs off to the round trip, each expiry re-asks the oldest part
    // only (the others' answers are on the way): at most a window sent twice per phase
    // (head pieces, then chunks).
    let extra = sent - parts;
    assert!(
        extra <= 2 * CFG.window as usize,
        "sent {sent} for {parts} parts: {s:?}"
    );
    assert!(s.rto_ms > 3_000 && s.rto_ms < 12_000, "{s:?}");
}

#[test]
fn answers_on_their_way_are_not_asked_for_again() {
    // As the bridge under load: parts wait in its queue (re-asks of those cost nothing)
    // and then 1.5 s in transit, where a re-ask costs a second copy. The answer to the
    // first re-asked part overtakes nothing (it may answer the first request), so the
    // parts behind it in transit are not re-asked: a few extra parts in all.
    let (sent, parts, s) = fetch_from_a_queue(500, 1_500, true);
    let extra = sent - parts;
    // (2 measured; 5 when a re-asked part's answer counted as overtaking.)
    assert!(extra <= 3, "sent {sent} for {parts} parts: {s:?}");
}

#[test]
fn a_fast_bridge_keeps_the_timeout_at_its_floor() {
    let (sent, parts, s) = fetch_from_a_queue(20, 0, false);
    assert_eq!(sent, parts, "{s:?}");
    assert_eq!(s.retries, 0);
    // ~80 ms round trips: the floor is the configured initial timeout (1 s here).
    assert_eq!(s.rto_ms, CFG.request_timeout_ms);
}

#[test]
fn a_lost_answer_is_asked_again_alone_then_with_the_others_lost_behind_it() {
    let (served, mut h, first) = begun(10_000);
    // One frame lost: one expiry, one re-ask, nothing else asked twice.
    h.run(&served, first, &mut |n| n == 8, &mut |_, _| false);
    assert!(matches!(h.outcome, Some(Action::Install { .. })));
    assert_eq!(h.f.stats().retries, 1, "{:?}", h.f.stats());
    let parts = (served.head_pieces() + served.chunk_count()) as usize;
    assert_eq!(h.requested.len() + served.head_pieces() as usize, parts + 1);

    // A whole window lost (a bridge dropping a request): the first expiry re-asks the
    // oldest part; its answer overtakes the other three, which are re-asked at once
    // instead of one backed-off expiry each.
    let (served, mut h, first) = begun(10_000);
    let head = served.head_pieces();
    h.run(
        &served,
        first,
        &mut |n| (head + 1..=head + 4).contains(&n),
        &mut |_, _| false,
    );
    assert!(matches!(h.outcome, Some(Action::Install { .. })));
    assert_eq!(h.f.stats().retries, 4, "{:?}", h.f.stats());
    // Two timeouts' worth at most (the first expiry, then the backed-off one never
    // needed), not 1 + 2 + 4 + 8 s.
    assert!(
        h.now < 3 * CFG.request_timeout_ms,
        "finished at {} ms",
        h.now
    );
}

/// A 50 ms lossless link that loses the first answer to each of the last `lost` chunks.
/// Returns the time to install, ms.
fn tail_loss(cfg: FetchConfig, lost: u32) -> u64 {
    let key = SigningKey::generate().unwrap();
    let (served, vd, trust) = fixture_of(&key, 100_000);
    let n = served.chunk_count();
    let mut f = Fetcher::new(cfg, trust);
    let mut acts = f.on_connected(0);
    acts.extend(f.begin(vd, 0));
    let (mut dropped, mut now, mut wire) = (BTreeSet::new(), 0u64, Vec::new());
    while now < 3_600_000 {
        for a in acts.drain(..) {
            match a {
                Action::Request(r) => {
                    for fr in served.respond(&r) {
                        let tail = fr.kind == PartKind::Chunk && fr.index >= n - lost;
                        if !(tail && dropped.insert(fr.index)) {
                            wire.push(fr);
                        }
                    }
                }
                Action::Install { .. } => return now,
                Action::Fail { reason, .. } => panic!("{reason}"),
                Action::PersistChunk { .. } | Action::PersistHead { .. } => {}
            }
        }
        now += 50;
        for fr in std::mem::take(&mut wire) {
            acts.extend(f.on_frame(fr, now));
        }
        acts.extend(f.on_tick(now));
    }
    panic!("no install in an hour");
}

#[test]
fn losing_the_last_window_costs_about_one_timeout_not_one_backed_off_timeout_per_part() {
    // Found by a helper trying to break the fetcher: at the tail no part asked once is
    // left to reveal losses, and each re-asked part's answer gives no sample (Karn), so
    // every lost part cost one expiry with the timeout doubling to 60 s: 57 minutes for a
    // lost window of 64 on a 50 ms link, 82 s for 8.
    for (window, timeout) in [(64, 5_000), (8, 5_000), (4, 1_000)] {
        let cfg = FetchConfig {
            window,
            request_timeout_ms: timeout,
        };
        let lossless = tail_loss(cfg, 0);
        let t = tail_loss(cfg, window);
        // One expiry of the first timeout, then one 50 ms round trip per lost part.
        let bound = 2 * timeout + 50 * u64::from(window) + 1_000;
        assert!(
            t - lossless < bound,
            "window {window}: {t} ms with the tail lost, {lossless} ms without"
        );
    }
}
