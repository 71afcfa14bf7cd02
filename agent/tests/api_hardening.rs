//! The local API under slow headers and connection floods, on TCP and the Unix socket: a
//! well-behaved app keeps getting answers (the agent once went unresponsive holding
//! 1 100 half-open connections).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::http::{request, request_unix};
use outpost_agent::config::AgentConfig;
use outpost_agent::runtime::{self, RunningAgent};
use outpost_net::testing::{
    PARTIAL_HEAD, closed_within, eventually, flood_size, held_sockets, silent_tcp, slow_tcp,
};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

/// An agent with no model and no broker (nothing listens on the discard port): only its
/// API matters here.
async fn agent(dir: &Path, api: &str) -> RunningAgent {
    let (_, trust) = common::keys(dir);
    let toml = format!(
        "device_id = \"gw-api\"\ndata_dir = \"{}\"\ntrust_dir = \"{}\"\n\
         [broker]\nurl = \"mqtt://127.0.0.1:9\"\nreconnect_min_ms = 1000\n[api]\n{api}",
        dir.join("data").display(),
        trust.display(),
    );
    runtime::start(AgentConfig::from_toml(&toml).unwrap(), Vec::new())
        .await
        .unwrap()
}

async fn live(addr: SocketAddr) -> u16 {
    request(addr, "GET", "/v2/health/live", b"").await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_do_not_keep_apps_from_the_http_api() {
    let dir = tempfile::tempdir().unwrap();
    let header = Duration::from_millis(2000);
    let a = agent(
        dir.path(),
        "http = \"127.0.0.1:0\"\nmax_connections = 64\nheader_read_timeout_ms = 2000\n",
    )
    .await;
    let addr = a.http_addr.unwrap();
    let t0 = Instant::now();
    let mut slow = slow_tcp(addr, 32).await;
    assert_eq!(live(addr).await, 200);
    assert!(
        t0.elapsed() < header,
        "an app waited {:?} behind slow clients",
        t0.elapsed()
    );
    for s in &mut slow {
        assert!(closed_within(s, Duration::from_secs(5)).await);
    }
    assert!(t0.elapsed() >= header, "slow clients were cut early");
    assert!(
        eventually(Duration::from_secs(2), || {
            let c = a.http_conns.snapshot();
            c.header_timeouts == 32 && c.open == 0
        })
        .await,
        "{:?}",
        a.http_conns.snapshot()
    );
    a.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_flood_does_not_make_the_http_api_unresponsive() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 64;
    // The default header timeout (10 s): apps must not have to wait for it.
    let a = agent(
        dir.path(),
        &format!("http = \"127.0.0.1:0\"\nmax_connections = {cap}\n"),
    )
    .await;
    let addr = a.http_addr.unwrap();
    let flood = flood_size(1_100, cap);
    let half_open = silent_tcp(addr, flood).await;
    assert!(
        eventually(Duration::from_secs(10), || {
            let c = a.http_conns.snapshot();
            c.accepted + c.refused == flood as u64
        })
        .await,
        "{:?}",
        a.http_conns.snapshot()
    );
    assert!(a.http_conns.snapshot().open <= cap as u64);
    // Every socket the API holds is a descriptor of this process: the silent ones fill the
    // cap, the rest were closed.
    if let Some(held) = held_sockets(addr.port()) {
        assert_eq!(held, cap, "sockets held open");
    }
    let t0 = Instant::now();
    let mut status = 0;
    while status != 200 && t0.elapsed() < Duration::from_secs(5) {
        status = live(addr).await;
    }
    assert_eq!(status, 200, "{:?}", a.http_conns.snapshot());
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "answered after {:?}",
        t0.elapsed()
    );
    // And again, while the flood still holds its connections.
    assert_eq!(live(addr).await, 200);
    assert!(held_sockets(addr.port()).is_none_or(|held| held <= cap));
    drop(half_open);
    a.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_do_not_keep_apps_from_the_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("run/agent.sock");
    let header = Duration::from_millis(2000);
    let a = agent(
        dir.path(),
        &format!(
            "http = \"\"\nunix_socket = \"{}\"\nheader_read_timeout_ms = 2000\n",
            sock.display()
        ),
    )
    .await;
    let t0 = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..32 {
        let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
        s.write_all(PARTIAL_HEAD).await.unwrap();
        slow.push(s);
    }
    assert_eq!(
        request_unix(&sock, "GET", "/v2/health/live", b"").await.0,
        200
    );
    assert!(t0.elapsed() < header, "waited {:?}", t0.elapsed());
    for s in &mut slow {
        assert!(closed_within(s, Duration::from_secs(5)).await);
    }
    assert!(t0.elapsed() >= header);
    assert!(
        eventually(Duration::from_secs(2), || a
            .unix_conns
            .snapshot()
            .header_timeouts
            == 32)
        .await,
        "{:?}",
        a.unix_conns.snapshot()
    );
    a.shutdown(Duration::from_secs(5)).await;
}
