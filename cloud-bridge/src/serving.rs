//! Serving bundle chunks to devices (the pull protocol's server side).
//!
//! Bundles are read from the [`BundleStore`] once and kept in memory (an LRU bounded by
//! total bytes), so a thousand devices fetching the same bundle cost one disk read, not one
//! per chunk per device.
//!
//! Budgets (only provisioned devices get here: requests are authenticated first):
//! - per device, a token bucket in parts per second with a burst of one window: a device
//!   asking faster waits for tokens instead of being refused, so one greedy device cannot
//!   starve the others;
//! - globally, a token bucket in bytes per second shared by all devices;
//! - queued parts (asked for, not yet answered) are capped per device and globally: a
//!   request beyond either cap is dropped and counted (the agent asks again after its
//!   timeout), so a request flood costs bounded memory — a queued part holds no data, the
//!   frame is built only when it is sent;
//! - a part already queued for the same device is not queued twice (an agent whose
//!   request timed out while it waited asks again: answering both would send the chunk
//!   twice).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_protocol::Digest;
use outpost_protocol::serve::{ServedBundle, error_frame};
use outpost_protocol::wire::{ChunkFrame, ChunkRequest, PartKind};
use tokio::time::Instant;

use crate::bundles::BundleStore;

/// Serving counters.
#[derive(Debug, Default)]
pub struct ServingStats {
    /// Bundles read from storage (cache misses).
    pub disk_reads: AtomicU64,
    /// Frames sent.
    pub frames: AtomicU64,
    /// Payload bytes sent.
    pub bytes: AtomicU64,
    /// Requests refused (unknown bundle).
    pub refused: AtomicU64,
    /// Parts dropped because a queue budget was full.
    pub dropped_busy: AtomicU64,
    /// Parts not queued again because the same device already had them queued.
    pub deduplicated: AtomicU64,
    /// Parts queued right now (all devices).
    pub queued: AtomicU64,
}

/// Serving budgets.
#[derive(Debug, Clone, Copy)]
pub struct ServingLimits {
    /// Parts per second per device.
    pub rate: f64,
    /// Burst per device, parts.
    pub burst: f64,
    /// Bytes per second for all devices together.
    pub global_bytes_per_sec: f64,
    /// Parts queued per device at most.
    pub max_queued_per_device: usize,
    /// Parts queued for all devices at most.
    pub max_queued_total: usize,
}

impl Default for ServingLimits {
    fn default() -> Self {
        Self {
            rate: 200.0,
            burst: 32.0,
            global_bytes_per_sec: 256.0 * 1024.0 * 1024.0,
            max_queued_per_device: 128,
            max_queued_total: 50_000,
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Cached bundles, their insertion order, and their total size.
type Cache = (HashMap<Digest, Arc<ServedBundle>>, VecDeque<Digest>, usize);

/// A queued part: (bundle, head or chunk, index).
type PartKey = (Digest, bool, u32);

/// The bundle server.
pub struct BundleServer {
    store: Arc<dyn BundleStore>,
    cache: Mutex<Cache>,
    cache_bytes: usize,
    limits: ServingLimits,
    buckets: Mutex<HashMap<String, Bucket>>,
    global: Mutex<Bucket>,
    queued: Mutex<HashMap<String, HashSet<PartKey>>>,
    /// Counters.
    pub stats: ServingStats,
    per_device: Mutex<HashMap<String, u64>>,
}

/// Releases queued parts when an answer is sent (or its task is cancelled).
struct Queued<'a> {
    server: &'a BundleServer,
    device: String,
    parts: Vec<PartKey>,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        let mut q = self.server.queued.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(set) = q.get_mut(&self.device) {
            for p in &self.parts {
                set.remove(p);
            }
            if set.is_empty() {
                q.remove(&self.device);
            }
        }
        self.server
            .stats
            .queued
            .fetch_sub(self.parts.len() as u64, Relaxed);
    }
}

impl BundleServer {
    /// A server over `store`, caching up to `cache_bytes`, allowing each device `rate`
    /// chunks per second (bursts of `burst`), with the default global budgets.
    pub fn new(store: Arc<dyn BundleStore>, cache_bytes: usize, rate: f64, burst: f64) -> Self {
        Self::with_limits(
            store,
            cache_bytes,
            ServingLimits {
                rate,
                burst,
                ..ServingLimits::default()
            },
        )
    }

    /// A server with explicit budgets.
    pub fn with_limits(
        store: Arc<dyn BundleStore>,
        cache_bytes: usize,
        limits: ServingLimits,
    ) -> Self {
        let limits = ServingLimits {
            rate: limits.rate.max(0.1),
            burst: limits.burst.max(1.0),
            global_bytes_per_sec: limits.global_bytes_per_sec.max(1024.0),
            ..limits
        };
        Self {
            store,
            cache: Mutex::new((HashMap::new(), VecDeque::new(), 0)),
            cache_bytes,
            global: Mutex::new(Bucket {
                tokens: limits.global_bytes_per_sec,
                at: Instant::now(),
            }),
            limits,
            buckets: Mutex::new(HashMap::new()),
            queued: Mutex::new(HashMap::new()),
            stats: ServingStats::default(),
            per_device: Mutex::new(HashMap::new()),
        }
    }

    /// Payload bytes sent to `device` so far.
    pub fn bytes_sent_to(&self, device: &str) -> u64 {
        self.per_device
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(device)
            .copied()
            .unwrap_or(0)
    }

    fn bundle(&self, d: Digest) -> Option<Arc<ServedBundle>> {
        {
            let c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(b) = c.0.get(&d) {
                return Some(b.clone());
            }
        }
        let bytes = self.store.get(d).ok()?;
        self.stats.disk_reads.fetch_add(1, Relaxed);
        let b = Arc::new(ServedBundle::new(bytes).ok()?);
        if b.digest() != d {
            return None;
        }
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if !c.0.contains_key(&d) {
            c.2 += b.bytes().len();
            c.0.insert(d, b.clone());
            c.1.push_back(d);
            while c.2 > self.cache_bytes && c.1.len() > 1 {
                if let Some(old) = c.1.pop_front()
                    && let Some(ob) = c.0.remove(&old)
                {
                    c.2 -= ob.bytes().len();
                }
            }
        }
        Some(b)
    }

    /// How long `device` must wait before sending `n` more frames of `bytes` in all (and
    /// takes the tokens from its bucket and the global one).
    fn reserve(&self, device: &str, n: usize, bytes: usize) -> Duration {
        let now = Instant::now();
        let take = |b: &mut Bucket, rate: f64, burst: f64, amount: f64| {
            b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
            b.at = now;
            b.tokens -= amount;
            if b.tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-b.tokens / rate)
            }
        };
        let l = &self.limits;
        let device_wait = {
            let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            if b.len() > 100_000 {
                // Idle buckets are full buckets: forgetting them changes nothing.
                b.retain(|_, x| now.duration_since(x.at).as_secs_f64() * l.rate < l.burst);
            }
            let e = b.entry(device.to_owned()).or_insert(Bucket {
                tokens: l.burst,
                at: now,
            });
            take(e, l.rate, l.burst, n as f64)
        };
        let global_wait = take(
            &mut self.global.lock().unwrap_or_else(|p| p.into_inner()),
            l.global_bytes_per_sec,
            l.global_bytes_per_sec,
            bytes as f64,
        );
        device_wait.max(global_wait)
    }

    /// Queues the parts of `req` not already queued for `device`, within the budgets;
    /// `None` when a budget is full (the request is dropped and counted).
    fn enqueue(&self, device: &str, req: &ChunkRequest) -> Option<(Queued<'_>, ChunkRequest)> {
        let mut q = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        let total = self.stats.queued.load(Relaxed) as usize;
        let set = q.entry(device.to_owned()).or_default();
        let mut fresh = ChunkRequest {
            bundle: req.bundle,
            head: Vec::new(),
            chunks: Vec::new(),
        };
        let mut parts = Vec::new();
        for (head, idx) in req
            .head
            .iter()
            .map(|i| (true, *i))
            .chain(req.chunks.iter().map(|i| (false, *i)))
        {
            let key = (req.bundle, head, idx);
            if set.contains(&key) || parts.contains(&key) {
                self.stats.deduplicated.fetch_add(1, Relaxed);
                continue;
            }
            parts.push(key);
            if head {
                fresh.head.push(idx);
            } else {
                fresh.chunks.push(idx);
            }
        }
        if parts.is_empty() {
            if set.is_empty() {
                q.remove(device);
            }
            return None;
        }
        if set.len() + parts.len() > self.limits.max_queued_per_device
            || total + parts.len() > self.limits.max_queued_total
        {
            self.stats
                .dropped_busy
                .fetch_add(parts.len() as u64, Relaxed);
            if set.is_empty() {
                q.remove(device);
            }
            return None;
        }
        set.extend(parts.iter().copied());
        self.stats.queued.fetch_add(parts.len() as u64, Relaxed);
        drop(q);
        Some((
            Queued {
                server: self,
                device: device.to_owned(),
                parts,
            },
            fresh,
        ))
    }

    /// Answers a request, waiting for the device's and the global rate budgets; parts
    /// already queued for the device, or beyond a queue budget, get no answer.
    pub async fn answer(&self, device: &str, req: &ChunkRequest) -> Vec<ChunkFrame> {
        let Some(b) = self.bundle(req.bundle) else {
            self.stats.refused.fetch_add(1, Relaxed);
            return vec![error_frame(req.bundle, 0, "unknown bundle")];
        };
        let Some((_queued, req)) = self.enqueue(device, req) else {
            return Vec::new();
        };
        let bytes: usize = req
            .head
            .iter()
            .map(|i| (PartKind::Head, *i))
            .chain(req.chunks.iter().map(|i| (PartKind::Chunk, *i)))
            .filter_map(|(k, i)| b.part(k, i).map(<[u8]>::len))
            .sum();
        let wait = self.reserve(device, req.head.len() + req.chunks.len(), bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let frames = b.respond(&req);
        let bytes: u64 = frames.iter().map(|f| f.data.len() as u64).sum();
        self.stats.frames.fetch_add(frames.len() as u64, Relaxed);
        self.stats.bytes.fetch_add(bytes, Relaxed);
        *self
            .per_device
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(device.to_owned())
            .or_default() += bytes;
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct CountingStore(Vec<u8>, Digest, AtomicUsize);
    impl BundleStore for CountingStore {
        fn put(&self, _: Digest, _: &[u8]) -> std::io::Result<()> {
            Ok(())
        }
        fn get(&self, d: Digest) -> std::io::Result<Vec<u8>> {
            self.2.fetch_add(1, Relaxed);
            if d == self.1 {
                Ok(self.0.clone())
            } else {
                Err(std::io::ErrorKind::NotFound.into())
            }
        }
        fn remove(&self, _: Digest) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn many_devices_one_disk_read_and_rate_limited() {
        let key = outpost_protocol::SigningKey::generate().unwrap();
        let spec: outpost_protocol::contract::ModelContract =
            serde_json::from_value(serde_json::json!({
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
                "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}]
            }))
            .unwrap();
        let built = outpost_protocol::bundle::BundleBuilder::new(
            outpost_protocol::manifest::ModelRef {
                name: "m".into(),
                version: 1,
            },
            vec![7u8; 50_000],
            spec,
            Default::default(),
        )
        .chunk_size(1024)
        .level(1)
        .build(&key)
        .unwrap();
        let store = Arc::new(CountingStore(
            built.bytes.clone(),
            built.digest,
            AtomicUsize::new(0),
        ));
        let s = BundleServer::new(store.clone(), 1 << 20, 10.0, 4.0);
        let req = ChunkRequest {
            bundle: built.digest,
            head: vec![],
            chunks: vec![0],
        };
        for d in 0..50 {
            assert_eq!(s.answer(&format!("gw-{d}"), &req).await.len(), 1);
        }
        assert_eq!(store.2.load(Relaxed), 1, "one disk read for 50 devices");
        // One device asking for 24 chunks at 10/s with a burst of 4 waits ~2 s.
        let t = Instant::now();
        for _ in 0..24 {
            s.answer("greedy", &req).await;
        }
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(1900) && waited <= Duration::from_millis(2100),
            "{waited:?}"
        );
        let unknown = ChunkRequest {
            bundle: Digest::of(b"x"),
            head: vec![0],
            chunks: vec![],
        };
        assert_eq!(
            s.answer("gw-0", &unknown).await[0].kind,
            outpost_protocol::wire::PartKind::Error
        );
    }

    #[tokio::test(start_paused = true)]
    async fn floods_are_dropped_at_the_queue_budgets_and_duplicates_are_queued_once() {
        let key = outpost_protocol::SigningKey::generate().unwrap();
        let spec: outpost_protocol::contract::ModelContract =
            serde_json::from_value(serde_json::json!({
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
                "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}]
            }))
            .unwrap();
        let noise: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let built = outpost_protocol::bundle::BundleBuilder::new(
            outpost_protocol::manifest::ModelRef {
                name: "m".into(),
                version: 1,
            },
            noise,
            spec,
            Default::default(),
        )
        .chunk_size(1024)
        .level(1)
        .build(&key)
        .unwrap();
        let store = Arc::new(CountingStore(
            built.bytes.clone(),
            built.digest,
            AtomicUsize::new(0),
        ));
        let s = Arc::new(BundleServer::with_limits(
            store,
            1 << 20,
            ServingLimits {
                rate: 10.0,
                burst: 1.0,
                global_bytes_per_sec: 1e9,
                max_queued_per_device: 8,
                max_queued_total: 20,
            },
        ));
        let digest = built.digest;
        let req = move |chunks: Vec<u32>| ChunkRequest {
            bundle: digest,
            head: vec![],
            chunks,
        };
        // A flood from one device: 50 requests of 4 parts at once.
        let mut tasks = Vec::new();
        for k in 0..50u32 {
            let s = s.clone();
            let r = req((k * 4..k * 4 + 4).collect());
            tasks.push(tokio::spawn(
                async move { s.answer("flooder", &r).await.len() },
            ));
        }
        tokio::task::yield_now().await;
        assert!(s.stats.queued.load(Relaxed) <= 8, "per-device budget");
        let answered: usize = {
            let mut n = 0;
            for t in tasks {
                n += t.await.unwrap();
            }
            n
        };
        assert_eq!(answered, 8, "only what fitted the budget was served");
        assert_eq!(s.stats.dropped_busy.load(Relaxed), 192);
        assert_eq!(s.stats.queued.load(Relaxed), 0, "released when answered");
        // The same part asked twice while queued is queued once.
        let (a, b) = (s.clone(), s.clone());
        let t1 = tokio::spawn(async move { a.answer("gw-1", &req(vec![1, 2])).await.len() });
        let t2 = tokio::spawn(async move { b.answer("gw-1", &req(vec![2, 3])).await.len() });
        assert_eq!(t1.await.unwrap() + t2.await.unwrap(), 3);
        assert!(s.stats.deduplicated.load(Relaxed) >= 1);
        // Many devices at once: the global budget holds.
        let mut tasks = Vec::new();
        for d in 0..40 {
            let s = s.clone();
            let r = req(vec![0]);
            tasks.push(tokio::spawn(async move {
                s.answer(&format!("gw-{d}"), &r).await.len()
            }));
        }
        tokio::task::yield_now().await;
        assert!(s.stats.queued.load(Relaxed) <= 20, "global budget");
        for t in tasks {
            t.await.unwrap();
        }
    }
}
