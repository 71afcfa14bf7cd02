//! The table of open connections (the cap and eviction) and the I/O wrapper that records
//! when each connection last moved bytes.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::ConnStats;

/// What the server knows about one connection; times are milliseconds since the table's
/// start, so they fit atomics.
#[derive(Debug)]
pub(crate) struct Conn {
    base: Instant,
    last_read: AtomicU64,
    last_write: AtomicU64,
    /// When the last handler finished (or the connection opened).
    handler_done: AtomicU64,
    handlers: AtomicU32,
    /// Signalled when a new connection takes this one's slot.
    pub(crate) evict: Notify,
}

impl Conn {
    fn new(base: Instant) -> Self {
        let now = ms_since(base);
        Self {
            base,
            last_read: AtomicU64::new(now),
            last_write: AtomicU64::new(now),
            handler_done: AtomicU64::new(now),
            handlers: AtomicU32::new(0),
            evict: Notify::new(),
        }
    }

    /// Whether a handler is running.
    pub(crate) fn busy(&self) -> bool {
        self.handlers.load(Relaxed) > 0
    }

    /// When the connection last did anything: a byte either way or a handler finishing.
    pub(crate) fn last_activity(&self) -> Instant {
        let ms = self
            .last_read
            .load(Relaxed)
            .max(self.last_write.load(Relaxed))
            .max(self.handler_done.load(Relaxed));
        self.base + Duration::from_millis(ms)
    }

    /// Since when it has been waiting for a request: no handler, nothing written. Bytes
    /// read do not count, so a request head trickling in slowly does not protect it.
    fn waiting_since(&self) -> Option<u64> {
        (!self.busy()).then(|| {
            self.handler_done
                .load(Relaxed)
                .max(self.last_write.load(Relaxed))
        })
    }

    /// Marks a handler running until the guard drops.
    pub(crate) fn handler(self: &Arc<Self>) -> Handler {
        self.handlers.fetch_add(1, Relaxed);
        Handler(self.clone())
    }
}

/// A running handler (see [`Conn::handler`]).
pub(crate) struct Handler(Arc<Conn>);

impl Drop for Handler {
    fn drop(&mut self) {
        self.0.handler_done.store(ms_since(self.0.base), Relaxed);
        self.0.handlers.fetch_sub(1, Relaxed);
    }
}

fn ms_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The open connections of one listener.
pub(crate) struct Table {
    base: Instant,
    max: usize,
    evict_after: Duration,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    open: watch::Sender<usize>,
    stats: Arc<ConnStats>,
}

/// What [`Table::admit`] decided.
pub(crate) enum Admission {
    /// A slot was free.
    Open(Slot),
    /// The longest-waiting connection was told to close and the new one took its slot.
    Evicted(Slot),
    /// Every connection is busy.
    Refused,
}

impl Table {
    pub(crate) fn new(max: usize, evict_after: Duration, stats: Arc<ConnStats>) -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            max,
            evict_after,
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            open: watch::Sender::new(0),
            stats,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        // A panic while holding this lock leaves the map consistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, n: usize) {
        self.open.send_replace(n);
        self.stats.open.store(n as u64, Relaxed);
    }

    /// Takes a slot for a new connection, evicting a waiting one at the cap.
    pub(crate) fn admit(self: &Arc<Self>) -> Admission {
        let mut conns = self.lock();
        let mut evicted = false;
        if conns.len() >= self.max {
            let now = ms_since(self.base);
            let min_wait = u64::try_from(self.evict_after.as_millis()).unwrap_or(u64::MAX);
            let victim = conns
                .iter()
                .filter_map(|(id, c)| c.waiting_since().map(|w| (w, *id)))
                .filter(|(w, _)| now.saturating_sub(*w) >= min_wait)
                .min();
            let Some((_, id)) = victim else {
                return Admission::Refused;
            };
            if let Some(c) = conns.remove(&id) {
                c.evict.notify_one();
            }
            evicted = true;
        }
        let id = self.next_id.fetch_add(1, Relaxed);
        let conn = Arc::new(Conn::new(self.base));
        conns.insert(id, conn.clone());
        self.publish(conns.len());
        let slot = Slot {
            table: self.clone(),
            id,
            conn,
        };
        if evicted {
            Admission::Evicted(slot)
        } else {
            Admission::Open(slot)
        }
    }

    /// Resolves once no connection is open.
    pub(crate) async fn drained(&self) {
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|n| *n == 0).await;
    }
}

/// A connection's place in the table; dropping it frees the slot.
pub(crate) struct Slot {
    table: Arc<Table>,
    id: u64,
    pub(crate) conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut conns = self.table.lock();
        // Already gone if this connection was evicted.
        conns.remove(&self.id);
        self.table.publish(conns.len());
    }
}

/// An I/O stream that records when bytes move.
pub(crate) struct Tracked<I> {
    inner: I,
    conn: Arc<Conn>,
}

impl<I> Tracked<I> {
    pub(crate) fn new(inner: I, conn: Arc<Conn>) -> Self {
        Self { inner, conn }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.last_read.store(ms_since(self.conn.base), Relaxed);
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> Tracked<I> {
    fn wrote(&self, r: &Poll<io::Result<usize>>) {
        if matches!(r, Poll::Ready(Ok(n)) if *n > 0) {
            self.conn
                .last_write
                .store(ms_since(self.conn.base), Relaxed);
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max: usize) -> Arc<Table> {
        Table::new(max, Duration::ZERO, Arc::new(ConnStats::default()))
    }

    #[test]
    fn over_the_cap_the_longest_waiting_connection_gives_way() {
        let t = table(2);
        let Admission::Open(a) = t.admit() else {
            panic!("free slot")
        };
        let Admission::Open(b) = t.admit() else {
            panic!("free slot")
        };
        // `a` is busy, `b` waits: `b` is the one to go.
        let _running = a.conn.handler();
        let Admission::Evicted(c) = t.admit() else {
            panic!("b is waiting")
        };
        assert_eq!(t.lock().len(), 2);
        assert!(!t.lock().contains_key(&b.id));
        drop(b);
        assert_eq!(t.lock().len(), 2, "an evicted slot is not freed twice");
        // Both busy now: refused.
        let _running_c = c.conn.handler();
        assert!(matches!(t.admit(), Admission::Refused));
        drop((a, c));
        assert_eq!(*t.open.borrow(), 0);
    }

    #[test]
    fn a_connection_that_has_not_waited_long_enough_is_kept() {
        let t = Table::new(1, Duration::from_secs(60), Arc::new(ConnStats::default()));
        let _a = t.admit();
        assert!(matches!(t.admit(), Admission::Refused));
    }
}
