//! The bundle download as a sans-IO state machine.
//!
//! Inputs are events (start, frame received, tick, connected, disconnected) with the
//! current monotonic time in milliseconds; outputs are [`Action`]s for the IO loop to
//! perform (send a request, persist a part, install). The machine never touches the
//! network or the disk, so its windowing, timeout and verification logic is tested
//! deterministically.
//!
//! Flow: head pieces are requested and reassembled; the complete head is verified
//! (signature, manifest, digest = the target's) into a [`VerifiedManifest`]; then payload
//! chunks are requested with at most `window` in flight, each checked against its SHA-256
//! in the manifest on arrival and handed out for persisting. A part not answered within
//! the retransmission timeout is requested again; the timeout adapts to the measured
//! round trip and backs off on expiry ([`super::rto`], RFC 6298), so a bridge that answers
//! slowly under load is not asked twice for everything. On reconnect every in-flight part
//! is requested again. When every chunk is held, [`Action::Install`] fires once.
//!
//! Resuming after a restart starts from [`Fetcher::resume`] with the chunks already on
//! disk, so only the missing ones are requested.

use std::collections::{BTreeMap, BTreeSet};

use outpost_protocol::bundle::{VerifiedManifest, Verifier};
use outpost_protocol::directive::ModelTarget;
use outpost_protocol::limits::HEAD_PIECE_SIZE;
use outpost_protocol::wire::{ChunkFrame, ChunkRequest, MAX_PARTS_PER_REQUEST, PartKind};
use outpost_protocol::{Digest, TrustStore};

use super::rto::Rto;

/// A chunk that fails its digest check this many times fails the download: the server is
/// serving bad bytes and retrying forever would hide it.
pub const MAX_CHUNK_REJECTIONS: u32 = 5;

/// Tuning.
#[derive(Debug, Clone, Copy)]
pub struct FetchConfig {
    /// Parts in flight.
    pub window: u32,
    /// Re-request a part after this long before any round trip was measured, ms (the
    /// initial retransmission timeout; it then follows the measured round trip).
    pub request_timeout_ms: u64,
}

/// What the IO loop must do.
#[derive(Debug)]
pub enum Action {
    /// Publish a chunk request.
    Request(ChunkRequest),
    /// Persist the verified head.
    PersistHead {
        /// Bundle digest.
        digest: Digest,
        /// Head bytes.
        head: Vec<u8>,
    },
    /// Persist a verified chunk.
    PersistChunk {
        /// Bundle digest.
        digest: Digest,
        /// Chunk index.
        index: u32,
        /// Chunk bytes (digest checked).
        data: Vec<u8>,
    },
    /// Every chunk is held: assemble and install.
    Install {
        /// The model target being applied.
        target: ModelTarget,
        /// Its verified manifest.
        manifest: Box<VerifiedManifest>,
    },
    /// The download cannot succeed (bad head, bridge refuses): give up on this target.
    Fail {
        /// The target.
        target: ModelTarget,
        /// Why.
        reason: String,
    },
}

/// Counters for reporting and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Payload chunks accepted.
    pub chunks_received: u32,
    /// Payload bytes accepted.
    pub bytes_received: u64,
    /// Frames ignored (not requested, duplicate, stale bundle).
    pub ignored: u32,
    /// Chunks that failed their digest check.
    pub rejected: u32,
    /// Parts asked for again (after a timeout, or overtaken by later answers).
    pub retries: u32,
    /// The retransmission timeout now, ms.
    pub rto_ms: u64,
}

/// A part asked for and not answered yet.
#[derive(Debug, Clone, Copy)]
struct Inflight {
    /// When it was asked for, ms.
    sent: u64,
    /// When to ask again, ms.
    deadline: u64,
    /// Its timer expired once already and was restarted (it was not the oldest part).
    expired: bool,
}

enum Phase {
    Idle,
    Head {
        target: ModelTarget,
        pieces: Vec<Option<Vec<u8>>>,
        inflight: BTreeMap<u32, Inflight>,
    },
    Chunks {
        target: ModelTarget,
        manifest: Box<VerifiedManifest>,
        have: Vec<bool>,
        inflight: BTreeMap<u32, Inflight>,
        rejections: BTreeMap<u32, u32>,
    },
    Done,
}

/// The download machine.
pub struct Fetcher {
    cfg: FetchConfig,
    trust: TrustStore,
    phase: Phase,
    connected: bool,
    stats: FetchStats,
    rto: Rto,
    /// Parts asked for more than once since they were last answered: their answers give
    /// no round-trip sample (Karn's algorithm).
    resent: BTreeSet<u32>,
}

impl Fetcher {
    /// A machine with nothing to do.
    pub fn new(cfg: FetchConfig, trust: TrustStore) -> Self {
        Self {
            cfg,
            trust,
            phase: Phase::Idle,
            connected: false,
            stats: FetchStats::default(),
            rto: Rto::new(cfg.request_timeout_ms),
            resent: BTreeSet::new(),
        }
    }

    /// Replaces the keys heads are verified with (a directive rotated the bridge's key):
    /// the next head received is checked against the new set.
    pub fn set_trust(&mut self, trust: TrustStore) {
        self.trust = trust;
    }

    /// Counters.
    pub fn stats(&self) -> FetchStats {
        FetchStats {
            rto_ms: self.rto.timeout_ms(),
            ..self.stats
        }
    }

    /// Digest being fetched, if any.
    pub fn target(&self) -> Option<Digest> {
        match &self.phase {
            Phase::Head { target, .. } | Phase::Chunks { target, .. } => Some(target.digest),
            _ => None,
        }
    }

    fn current_target(&self) -> Option<ModelTarget> {
        match &self.phase {
            Phase::Head { target, .. } | Phase::Chunks { target, .. } => Some(target.clone()),
            _ => None,
        }
    }

    /// (chunks held, chunks total); total is 0 until the head is verified.
    pub fn progress(&self) -> (u32, u32) {
        match &self.phase {
            Phase::Chunks { have, .. } => (
                have.iter().filter(|h| **h).count() as u32,
                have.len() as u32,
            ),
            _ => (0, 0),
        }
    }

    /// Drops any download in progress.
    pub fn cancel(&mut self) {
        self.phase = Phase::Idle;
    }

    /// Starts fetching the bundle a (verified directive's) target names, from its head.
    pub fn begin(&mut self, target: ModelTarget, now: u64) -> Vec<Action> {
        let head_size = target.head_size.max(1);
        let pieces = head_size.div_ceil(HEAD_PIECE_SIZE) as usize;
        self.resent.clear();
        self.phase = Phase::Head {
            target,
            pieces: vec![None; pieces],
            inflight: BTreeMap::new(),
        };
        self.pump(now)
    }

    /// Resumes with a head already verified from disk and the chunks already held.
    pub fn resume(
        &mut self,
        target: ModelTarget,
        manifest: VerifiedManifest,
        have: Vec<bool>,
        now: u64,
    ) -> Vec<Action> {
        self.resent.clear();
        self.phase = Phase::Chunks {
            target,
            manifest: Box::new(manifest),
            have,
            inflight: BTreeMap::new(),
            rejections: BTreeMap::new(),
        };
        self.pump(now)
    }

    /// The link came up: everything in flight was lost with the old session. The round
    /// trip measured so far is kept, but not the back-off: the new session is not
    /// congested by the old one's re-asks.
    pub fn on_connected(&mut self, now: u64) -> Vec<Action> {
        self.connected = true;
        self.clear_inflight();
        self.rto.restore();
        self.pump(now)
    }

    /// The link went down.
    pub fn on_disconnected(&mut self) {
        self.connected = false;
        self.clear_inflight();
    }

    fn clear_inflight(&mut self) {
        if let Phase::Head { inflight, .. } | Phase::Chunks { inflight, .. } = &mut self.phase {
            // An answer to the old session's request may still arrive (a broker's
            // persistent session): it must not count as the new request's round trip.
            self.resent.extend(inflight.keys());
            inflight.clear();
        }
    }

    /// Time passes: expire requests and refill the window.
    ///
    /// As TCP does on its retransmission timer (RFC 6298 §5.4–5.6), an expiry re-asks for
    /// the *oldest* part only, backs the timeout off once and restarts the timer of the
    /// others: on a slow path their answers are on the way, and re-asking a whole window
    /// would double the traffic at the worst moment. A part whose timer already expired
    /// once and that a later-asked part's answer overtakes was lost, and is re-asked then.
    pub fn on_tick(&mut self, now: u64) -> Vec<Action> {
        if let Phase::Head { inflight, .. } | Phase::Chunks { inflight, .. } = &mut self.phase {
            let oldest = inflight
                .iter()
                .filter(|(_, f)| f.deadline <= now)
                .min_by_key(|(part, f)| (f.sent, **part))
                .map(|(part, _)| *part);
            if let Some(part) = oldest {
                inflight.remove(&part);
                self.stats.retries += 1;
                self.resent.insert(part);
                self.rto.back_off();
                let deadline = now + self.rto.timeout_ms();
                for f in inflight.values_mut().filter(|f| f.deadline <= now) {
                    f.deadline = deadline;
                    f.expired = true;
                }
            }
        }
        self.pump(now)
    }

    /// Part `index`, asked for as `asked`, was answered at `now`: unless it was asked for
    /// more than once (Karn: see below), a round-trip sample. The bridge answers a device's parts
    /// roughly in the order asked, so a part that already outlived one timeout and is
    /// overtaken by the answer to a part asked after it was lost: it is re-asked now, not
    /// one expiry at a time (the go-back of TCP after a retransmission timeout). Parts
    /// within their first timeout are left alone: answers to concurrent requests may
    /// arrive slightly out of order, and re-asking them would send them twice.
    fn answered(&mut self, index: u32, asked: Option<Inflight>, now: u64) {
        let Some(asked) = asked else {
            return;
        };
        let once = !self.resent.remove(&index);
        let (inflight, unasked) = match &mut self.phase {
            Phase::Head {
                pieces, inflight, ..
            } => {
                let unasked = (0..pieces.len() as u32)
                    .any(|i| pieces[i as usize].is_none() && !inflight.contains_key(&i));
                (inflight, unasked)
            }
            Phase::Chunks { have, inflight, .. } => {
                let unasked =
                    (0..have.len() as u32).any(|i| !have[i as usize] && !inflight.contains_key(&i));
                (inflight, unasked)
            }
            Phase::Idle | Phase::Done => return,
        };
        let lost: Vec<u32> = if once {
            self.rto.sample(now.saturating_sub(asked.sent));
            inflight
                .iter()
                .filter(|(part, f)| f.expired && (f.sent, **part) < (asked.sent, index))
                .map(|(part, _)| *part)
                .collect()
        } else {
            // Asked more than once: the answer may be to the first request, so it proves
            // neither a round trip nor that it overtook anything asked in between (nor
            // does it undo the back-off: on a congested path that would re-ask again at
            // once). At the tail, where no part asked once is left to tell what was lost,
            // the oldest expired part is re-asked now, one per answer (as TCP's slow start
            // after a timeout), instead of one per backed-off expiry.
            let oldest = inflight
                .iter()
                .filter(|(_, f)| f.expired)
                .min_by_key(|(part, f)| (f.sent, **part))
                .map(|(part, _)| *part);
            oldest.filter(|_| !unasked).into_iter().collect()
        };
        for part in lost {
            inflight.remove(&part);
            self.resent.insert(part);
            self.stats.retries += 1;
        }
    }

    /// A frame arrived.
    pub fn on_frame(&mut self, frame: ChunkFrame, now: u64) -> Vec<Action> {
        if Some(frame.bundle) != self.target() {
            self.stats.ignored += 1;
            return Vec::new();
        }
        match frame.kind {
            PartKind::Error => {
                let reason = String::from_utf8_lossy(&frame.data);
                if let Some(why) = reason.strip_prefix(outpost_protocol::serve::FATAL_PREFIX) {
                    // It will never be served as asked: give up with the bridge's reason.
                    let Some(target) = self.current_target() else {
                        return Vec::new();
                    };
                    self.phase = Phase::Done;
                    return vec![Action::Fail {
                        target,
                        reason: format!("the bridge cannot serve this bundle: {why}"),
                    }];
                }
                // The bridge does not serve this part right now (unknown bundle, rate
                // limit): let the request time out and try again rather than give up; the
                // directive decides when to stop.
                self.stats.ignored += 1;
                Vec::new()
            }
            PartKind::Head => self.on_head_piece(frame, now),
            PartKind::Chunk => self.on_chunk(frame, now),
        }
    }

    fn on_head_piece(&mut self, frame: ChunkFrame, now: u64) -> Vec<Action> {
        let Phase::Head {
            pieces, inflight, ..
        } = &mut self.phase
        else {
            self.stats.ignored += 1;
            return Vec::new();
        };
        let i = frame.index as usize;
        if i >= pieces.len() || pieces[i].is_some() {
            self.stats.ignored += 1;
            return Vec::new();
        }
        let asked = inflight.remove(&frame.index);
        pieces[i] = Some(frame.data);
        self.answered(frame.index, asked, now);
        let Phase::Head { pieces, .. } = &self.phase else {
            unreachable!("matched above");
        };
        if pieces.iter().any(Option::is_none) {
            return self.pump(now);
        }
        let Phase::Head { target, pieces, .. } = std::mem::replace(&mut self.phase, Phase::Idle)
        else {
            unreachable!("matched above");
        };
        let head: Vec<u8> = pieces.into_iter().flatten().flatten().collect();
        let expected = target.digest;
        let verified = Verifier::new(&self.trust)
            .verify_head(&head)
            .and_then(|m| m.expect_digest(expected));
        match verified {
            Ok(manifest) => {
                let n = manifest.chunk_count() as usize;
                let mut out = vec![Action::PersistHead {
                    digest: expected,
                    head,
                }];
                out.extend(self.resume(target, manifest, vec![false; n], now));
                out
            }
            Err(e) => {
                self.phase = Phase::Done;
                vec![Action::Fail {
                    target,
                    reason: format!("bundle head rejected: {e}"),
                }]
            }
        }
    }

    fn on_chunk(&mut self, frame: ChunkFrame, now: u64) -> Vec<Action> {
        let Phase::Chunks {
            manifest,
            have,
            inflight,
            rejections,
            ..
        } = &mut self.phase
        else {
            self.stats.ignored += 1;
            return Vec::new();
        };
        let i = frame.index as usize;
        if i >= have.len() || have[i] {
            self.stats.ignored += 1;
            return Vec::new();
        }
        let asked = inflight.remove(&frame.index);
        if let Err(e) = manifest.check_chunk(frame.index, &frame.data) {
            // Corrupted in transit or by a faulty server: drop it; it will be requested
            // again (it is no longer in flight) — up to a limit.
            self.stats.rejected += 1;
            let n = rejections.entry(frame.index).or_insert(0);
            *n += 1;
            if *n >= MAX_CHUNK_REJECTIONS {
                let Phase::Chunks { target, .. } = std::mem::replace(&mut self.phase, Phase::Done)
                else {
                    unreachable!("matched above");
                };
                return vec![Action::Fail {
                    target,
                    reason: format!(
                        "{e}, {MAX_CHUNK_REJECTIONS} times: the server is serving bad data"
                    ),
                }];
            }
            return self.pump(now);
        }
        have[i] = true;
        let digest = manifest.digest();
        self.stats.chunks_received += 1;
        self.stats.bytes_received += frame.data.len() as u64;
        self.answered(frame.index, asked, now);
        let mut out = vec![Action::PersistChunk {
            digest,
            index: frame.index,
            data: frame.data,
        }];
        out.extend(self.pump(now));
        out
    }

    /// Fills the window; fires Install when complete.
    fn pump(&mut self, now: u64) -> Vec<Action> {
        let deadline = Inflight {
            sent: now,
            deadline: now + self.rto.timeout_ms(),
            expired: false,
        };
        let window = self.cfg.window as usize;
        let connected = self.connected;
        match &mut self.phase {
            Phase::Head {
                target,
                pieces,
                inflight,
            } => {
                if !connected {
                    return Vec::new();
                }
                let want: Vec<u32> = (0..pieces.len() as u32)
                    .filter(|i| pieces[*i as usize].is_none() && !inflight.contains_key(i))
                    .take(window.saturating_sub(inflight.len()))
                    .collect();
                request(target.digest, want, true, inflight, deadline)
            }
            Phase::Chunks {
                have,
                inflight,
                manifest,
                ..
            } => {
                if have.iter().all(|h| *h) {
                    let Phase::Chunks {
                        target, manifest, ..
                    } = std::mem::replace(&mut self.phase, Phase::Done)
                    else {
                        unreachable!("matched above");
                    };
                    return vec![Action::Install { target, manifest }];
                }
                if !connected {
                    return Vec::new();
                }
                let want: Vec<u32> = (0..have.len() as u32)
                    .filter(|i| !have[*i as usize] && !inflight.contains_key(i))
                    .take(window.saturating_sub(inflight.len()))
                    .collect();
                request(manifest.digest(), want, false, inflight, deadline)
            }
            Phase::Idle | Phase::Done => Vec::new(),
        }
    }
}

fn request(
    bundle: Digest,
    want: Vec<u32>,
    head: bool,
    inflight: &mut BTreeMap<u32, Inflight>,
    deadline: Inflight,
) -> Vec<Action> {
    want.chunks(MAX_PARTS_PER_REQUEST)
        .map(|parts| {
            for p in parts {
                inflight.insert(*p, deadline);
            }
            let (h, c) = if head {
                (parts.to_vec(), vec![])
            } else {
                (vec![], parts.to_vec())
            };
            Action::Request(ChunkRequest {
                bundle,
                head: h,
                chunks: c,
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "fetch_tests.rs"]
mod tests;
