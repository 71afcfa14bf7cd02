//! `outpost_net::serve` on real sockets: slow headers, floods over the cap, idle and
//! request timeouts, draining on shutdown, and the Unix socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use outpost_net::testing::{
    closed_within, eventually, flood_size, get_status, held_sockets, silent_tcp, slow_tcp,
};
use outpost_net::{ConnStats, HttpLimits, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

struct Server {
    addr: SocketAddr,
    stats: Arc<ConnStats>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), outpost_net::LimitsError>>,
}

/// `/ok` answers at once, `/hang` never, `/gate` when `gate` is notified.
fn router(gate: Arc<Notify>) -> Router {
    Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route("/hang", get(std::future::pending::<&'static str>))
        .route(
            "/gate",
            get(move || {
                let gate = gate.clone();
                async move {
                    gate.notified().await;
                    "opened"
                }
            }),
        )
}

async fn start(limits: HttpLimits, gate: Arc<Notify>) -> Server {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let stats = Arc::new(ConnStats::default());
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(serve(l, router(gate), limits, stats.clone(), rx));
    Server {
        addr,
        stats,
        stop,
        task,
    }
}

fn limits(max_connections: usize, header_ms: u64) -> HttpLimits {
    HttpLimits {
        max_connections,
        header_read_timeout: Duration::from_millis(header_ms),
        ..Default::default()
    }
}

async fn fetch(addr: SocketAddr, path: &str) -> Option<u16> {
    get_status(TcpStream::connect(addr).await.ok()?, path).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_while_others_are_served() {
    let header = Duration::from_millis(1500);
    let s = start(limits(64, 1500), Arc::default()).await;
    let t0 = Instant::now();
    let mut slow = slow_tcp(s.addr, 16).await;
    assert_eq!(fetch(s.addr, "/ok").await, Some(200));
    assert!(
        t0.elapsed() < header,
        "a well-behaved client waited {:?}",
        t0.elapsed()
    );
    for c in &mut slow {
        assert!(closed_within(c, Duration::from_secs(5)).await);
    }
    assert!(t0.elapsed() >= header, "slow connections cut early");
    assert!(
        eventually(Duration::from_secs(2), || s
            .stats
            .snapshot()
            .header_timeouts
            == 16)
        .await
    );
    assert!(eventually(Duration::from_secs(2), || s.stats.snapshot().open == 0).await);
    let _ = s.stop.send(true);
    s.task.await.unwrap().unwrap();
}

/// The reported incident: 1 100 connections that never send a byte. With the default
/// header timeout (10 s) the well-behaved client must not wait for it: it takes the slot
/// of a silent connection.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_flood_over_the_cap_does_not_lock_clients_out() {
    let cap = 64;
    let s = start(limits(cap, 10_000), Arc::default()).await;
    let flood = flood_size(1_100, cap);
    let silent = silent_tcp(s.addr, flood).await;
    let handled = |c: outpost_net::ConnCounts| c.accepted + c.refused == flood as u64;
    assert!(eventually(Duration::from_secs(10), || handled(s.stats.snapshot())).await);
    let c = s.stats.snapshot();
    assert!(c.open <= cap as u64, "{c:?}");
    // Every socket the server holds is a descriptor of this process: the silent ones fill
    // the cap, the rest were closed.
    let held = held_sockets(s.addr.port()).unwrap();
    assert_eq!(held, cap, "sockets held open");
    let t0 = Instant::now();
    let mut answered = None;
    while answered.is_none() && t0.elapsed() < Duration::from_secs(5) {
        answered = fetch(s.addr, "/ok").await;
    }
    assert_eq!(answered, Some(200), "{:?}", s.stats.snapshot());
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "answered after {:?}",
        t0.elapsed()
    );
    assert!(s.stats.snapshot().evicted >= 1);
    assert!(held_sockets(s.addr.port()).unwrap() <= cap);
    drop(silent);
    let _ = s.stop.send(true);
    s.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_cap_with_every_connection_busy_new_ones_are_closed_at_once() {
    let gate = Arc::new(Notify::new());
    let s = start(limits(2, 10_000), gate.clone()).await;
    let busy: Vec<_> = (0..2)
        .map(|_| tokio::spawn(fetch(s.addr, "/gate")))
        .collect();
    assert!(eventually(Duration::from_secs(5), || s.stats.snapshot().open == 2).await);
    // Both connections are in handlers: neither may be evicted.
    let t0 = Instant::now();
    assert_eq!(fetch(s.addr, "/ok").await, None);
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!(s.stats.snapshot().refused, 1);
    gate.notify_waiters();
    for b in busy {
        assert_eq!(b.await.unwrap(), Some(200));
    }
    assert_eq!(fetch(s.addr, "/ok").await, Some(200));
    let _ = s.stop.send(true);
    s.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let idle = Duration::from_millis(300);
    let s = start(
        HttpLimits {
            idle_timeout: idle,
            ..limits(8, 10_000)
        },
        Arc::default(),
    )
    .await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = c.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let t0 = Instant::now();
    assert!(closed_within(&mut c, Duration::from_secs(5)).await);
    let waited = t0.elapsed();
    assert!(
        waited >= idle - Duration::from_millis(20) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    assert!(
        eventually(Duration::from_secs(2), || s.stats.snapshot().idle_timeouts
            == 1)
        .await
    );
    let _ = s.stop.send(true);
    s.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_over_the_request_timeout_is_answered_503() {
    let s = start(
        HttpLimits {
            request_timeout: Duration::from_millis(200),
            ..limits(8, 10_000)
        },
        Arc::default(),
    )
    .await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET /hang HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains(r#"{"error":"request took longer than 200 ms"}"#));
    assert_eq!(s.stats.snapshot().request_timeouts, 1);
    let _ = s.stop.send(true);
    s.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_request_in_progress_finish_and_stops_accepting() {
    let gate = Arc::new(Notify::new());
    let s = start(limits(8, 10_000), gate.clone()).await;
    let in_progress = tokio::spawn(fetch(s.addr, "/gate"));
    assert!(eventually(Duration::from_secs(5), || s.stats.snapshot().open == 1).await);
    s.stop.send(true).unwrap();
    // The listener is closed once the accept loop has seen the signal.
    assert!(
        eventually(Duration::from_secs(5), || std::net::TcpStream::connect(
            s.addr
        )
        .is_err())
        .await
    );
    gate.notify_waiters();
    assert_eq!(in_progress.await.unwrap(), Some(200));
    tokio::time::timeout(Duration::from_secs(5), s.task)
        .await
        .expect("serve returns once drained")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_a_stuck_request_after_the_grace() {
    let s = start(
        HttpLimits {
            drain_grace: Duration::from_millis(200),
            ..limits(8, 10_000)
        },
        Arc::default(),
    )
    .await;
    let stuck = tokio::spawn(fetch(s.addr, "/hang"));
    assert!(eventually(Duration::from_secs(5), || s.stats.snapshot().open == 1).await);
    let t0 = Instant::now();
    s.stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), s.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(200));
    assert_eq!(stuck.await.unwrap(), None);
}

#[tokio::test]
async fn invalid_limits_are_refused() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (_tx, rx) = watch::channel(false);
    let r = serve(l, Router::new(), limits(0, 10_000), Arc::default(), rx).await;
    assert_eq!(r, Err(outpost_net::LimitsError::MaxConnections(0)));
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unix_socket_cuts_slow_headers_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    let l = tokio::net::UnixListener::bind(&path).unwrap();
    let stats = Arc::new(ConnStats::default());
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(serve(
        l,
        router(Arc::default()),
        limits(4, 500),
        stats.clone(),
        rx,
    ));
    let t0 = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut c = tokio::net::UnixStream::connect(&path).await.unwrap();
        c.write_all(outpost_net::testing::PARTIAL_HEAD)
            .await
            .unwrap();
        slow.push(c);
    }
    // At the cap: the client gets in once a slow one has waited long enough to give way.
    let mut answered = None;
    while answered.is_none() && t0.elapsed() < Duration::from_secs(5) {
        let c = tokio::net::UnixStream::connect(&path).await.unwrap();
        answered = get_status(c, "/ok").await;
    }
    assert_eq!(answered, Some(200));
    for c in &mut slow {
        assert!(closed_within(c, Duration::from_secs(5)).await);
    }
    assert!(t0.elapsed() >= Duration::from_millis(500));
    let _ = stop.send(true);
    task.await.unwrap().unwrap();
    let c = stats.snapshot();
    assert_eq!((c.header_timeouts + c.evicted, c.accepted), (4, 5), "{c:?}");
}

/// hyper starts its header timer while waiting for the next request too, so a kept-alive
/// connection idles at most the shorter of the two timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_waits_for_its_next_request_at_most_the_header_timeout() {
    let s = start(
        HttpLimits {
            idle_timeout: Duration::from_secs(30),
            ..limits(8, 300)
        },
        Arc::default(),
    )
    .await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = c.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let t0 = Instant::now();
    assert!(closed_within(&mut c, Duration::from_secs(5)).await);
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(
        eventually(Duration::from_secs(2), || s
            .stats
            .snapshot()
            .header_timeouts
            == 1)
        .await
    );
    let _ = s.stop.send(true);
    s.task.await.unwrap().unwrap();
}
