//! Serving bundle chunks to devices (the pull protocol's server side).
//!
//! Bundles are read from the [`BundleStore`] once and kept in memory (an LRU bounded by
//! total bytes), so a thousand devices fetching the same bundle cost one disk read, not one
//! per chunk per device. Each device has a token bucket (chunks per second, with a burst
//! of one window): a device asking faster waits for tokens instead of being refused, which
//! keeps one greedy device from starving the others.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_protocol::Digest;
use outpost_protocol::serve::{ServedBundle, error_frame};
use outpost_protocol::wire::{ChunkFrame, ChunkRequest};
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
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Cached bundles, their insertion order, and their total size.
type Cache = (HashMap<Digest, Arc<ServedBundle>>, VecDeque<Digest>, usize);

/// The bundle server.
pub struct BundleServer {
    store: Arc<dyn BundleStore>,
    cache: Mutex<Cache>,
    cache_bytes: usize,
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// Counters.
    pub stats: ServingStats,
    per_device: Mutex<HashMap<String, u64>>,
}

impl BundleServer {
    /// A server over `store`, caching up to `cache_bytes`, allowing each device `rate`
    /// chunks per second (bursts of `burst`).
    pub fn new(store: Arc<dyn BundleStore>, cache_bytes: usize, rate: f64, burst: f64) -> Self {
        Self {
            store,
            cache: Mutex::new((HashMap::new(), VecDeque::new(), 0)),
            cache_bytes,
            rate: rate.max(0.1),
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
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

    /// How long `device` must wait before sending `n` more frames (and takes the tokens).
    fn reserve(&self, device: &str, n: usize) -> Duration {
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let e = b.entry(device.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        e.tokens = (e.tokens + now.duration_since(e.at).as_secs_f64() * self.rate).min(self.burst);
        e.at = now;
        e.tokens -= n as f64;
        if e.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-e.tokens / self.rate)
        }
    }

    /// Answers a request (waiting for the device's rate limit).
    pub async fn answer(&self, device: &str, req: &ChunkRequest) -> Vec<ChunkFrame> {
        let Some(b) = self.bundle(req.bundle) else {
            self.stats.refused.fetch_add(1, Relaxed);
            return vec![error_frame(req.bundle, 0, "unknown bundle")];
        };
        let wait = self.reserve(device, req.head.len() + req.chunks.len());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let frames = b.respond(req);
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
}
