//! A network-fault proxy: real TCP between one device and the broker, with faults the
//! simulator turns on and off over time.
//!
//! - `cut`: existing connections are closed and new ones are closed on accept (the device
//!   sees the broker vanish, exactly as with a dead link);
//! - `delay`: every forwarded read waits this long first (latency);
//! - `throttle`: at most this many bytes per second each way (a slow cellular link);
//! - `drop_per_min`: connections are torn down at random, this often on average (flaky
//!   link), from a seeded RNG so a scenario replays the same way.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The faults in force.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Link down.
    pub cut: bool,
    /// Added latency per read.
    pub delay: Duration,
    /// Bytes per second each way (None: unlimited).
    pub throttle: Option<u64>,
    /// Random disconnects per minute.
    pub drop_per_min: f64,
}

/// Counters.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Bytes device → broker.
    pub up: std::sync::atomic::AtomicU64,
    /// Bytes broker → device.
    pub down: std::sync::atomic::AtomicU64,
    /// Connections torn down by faults.
    pub torn: std::sync::atomic::AtomicU64,
}

/// Controls one proxy.
#[derive(Clone)]
pub struct ProxyHandle {
    /// Where the device should connect.
    pub addr: SocketAddr,
    faults: watch::Sender<Faults>,
    /// Counters.
    pub stats: Arc<ProxyStats>,
}

impl ProxyHandle {
    /// Replaces the faults.
    pub fn set(&self, f: Faults) {
        let _ = self.faults.send(f);
    }

    /// Current faults.
    pub fn faults(&self) -> Faults {
        self.faults.borrow().clone()
    }

    /// Cuts or restores the link.
    pub fn cut(&self, cut: bool) {
        self.faults.send_modify(|f| f.cut = cut);
    }
}

/// Starts a proxy on 127.0.0.1:0 forwarding to `upstream`.
pub async fn start(upstream: SocketAddr, seed: u64) -> std::io::Result<ProxyHandle> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let (tx, rx) = watch::channel(Faults::default());
    let stats = Arc::new(ProxyStats::default());
    let st = stats.clone();
    let rng = Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed)));
    tokio::spawn(async move {
        loop {
            let Ok((dev, _)) = l.accept().await else {
                return;
            };
            if rx.borrow().cut {
                drop(dev);
                continue;
            }
            let Ok(up) = TcpStream::connect(upstream).await else {
                continue;
            };
            let _ = dev.set_nodelay(true);
            let _ = up.set_nodelay(true);
            tokio::spawn(connection(dev, up, rx.clone(), st.clone(), rng.clone()));
        }
    });
    Ok(ProxyHandle {
        addr,
        faults: tx,
        stats,
    })
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: watch::Receiver<Faults>,
    counter: Arc<ProxyStats>,
    up: bool,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let f = faults.borrow().clone();
        if f.cut {
            break;
        }
        if !f.delay.is_zero() {
            tokio::time::sleep(f.delay).await;
        }
        if let Some(bps) = f.throttle {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / bps.max(1) as f64)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        if up {
            counter.up.fetch_add(n as u64, Relaxed);
        } else {
            counter.down.fetch_add(n as u64, Relaxed);
        }
    }
    let _ = to.shutdown().await;
}

async fn connection(
    dev: TcpStream,
    up: TcpStream,
    mut faults: watch::Receiver<Faults>,
    stats: Arc<ProxyStats>,
    rng: Arc<Mutex<ChaCha8Rng>>,
) {
    let (dr, dw) = dev.into_split();
    let (ur, uw) = up.into_split();
    let a = tokio::spawn(pump(dr, uw, faults.clone(), stats.clone(), true));
    let b = tokio::spawn(pump(ur, dw, faults.clone(), stats.clone(), false));
    // Watch for a cut or a random drop; either ends both directions.
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let p = faults.borrow().drop_per_min / 600.0;
                if p > 0.0 && rng.lock().unwrap_or_else(|e| e.into_inner()).random_bool(p.min(1.0)) {
                    break;
                }
                if a.is_finished() || b.is_finished() {
                    break;
                }
            }
            r = faults.changed() => {
                if r.is_err() || faults.borrow().cut {
                    break;
                }
            }
        }
    }
    stats.torn.fetch_add(
        u64::from(!(a.is_finished() || b.is_finished())),
        std::sync::atomic::Ordering::Relaxed,
    );
    a.abort();
    b.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn forwards_and_cuts() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut b = [0u8; 64];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 || s.write_all(&b[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let p = start(upstream, 1).await.unwrap();
        let mut c = TcpStream::connect(p.addr).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
        p.cut(true);
        let mut one = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(2), c.read(&mut one))
            .await
            .unwrap();
        assert!(matches!(r, Ok(0) | Err(_)), "cut closes the connection");
        let mut c2 = TcpStream::connect(p.addr).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(2), c2.read(&mut one))
            .await
            .unwrap();
        assert!(
            matches!(r, Ok(0) | Err(_)),
            "new connections are refused while cut"
        );
        p.cut(false);
        let mut c3 = TcpStream::connect(p.addr).await.unwrap();
        c3.write_all(b"back").await.unwrap();
        c3.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"back");
        assert!(p.stats.up.load(std::sync::atomic::Ordering::Relaxed) >= 8);
    }
}
