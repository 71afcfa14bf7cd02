//! Clients that misbehave on purpose, and probes of this process, for the slow-header and
//! flood tests of every API served by [`crate::serve`] (feature `test-util`; not in
//! release builds).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The start of a request line that never finishes.
pub const PARTIAL_HEAD: &[u8] = b"GET /v1/health HTTP/1.1\r\nHost: slo";

/// Opens `n` connections that each send [`PARTIAL_HEAD`] and then nothing.
pub async fn slow_tcp(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(PARTIAL_HEAD).await.expect("partial head");
        out.push(s);
    }
    out
}

/// Opens `n` connections that never send a byte (half-open from the server's view).
pub async fn silent_tcp(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(TcpStream::connect(addr).await.expect("connect"));
    }
    out
}

/// Sends `GET path` with `Connection: close` on `s`; the status, or None if the server
/// closed the connection without answering.
pub async fn get_status<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, path: &str) -> Option<u16> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    String::from_utf8_lossy(&buf).get(9..12)?.parse().ok()
}

/// Whether the server closes `s` (end of stream or reset) within `within`; anything it
/// sends first is read and ignored.
pub async fn closed_within<S: AsyncRead + Unpin>(s: &mut S, within: Duration) -> bool {
    let end = Instant::now() + within;
    let mut b = [0u8; 256];
    loop {
        match tokio::time::timeout_at(end, s.read(&mut b)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Polls `f` every 10 ms until it holds or `within` passes; whether it held.
pub async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// File descriptors this process has open (None where `/proc` is missing).
pub fn open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

/// TCP sockets on local `port` that a process still holds open (accepted connections of
/// a listener on that port, the listener itself not counted), from `/proc/net/tcp{,6}`;
/// None where those are missing. Unlike a count of this process's descriptors, it is not
/// disturbed by other tests running alongside in the same process.
pub fn held_sockets(port: u16) -> Option<usize> {
    let mut n = 0;
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        n += text
            .lines()
            .skip(1)
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let local_port = f
                    .get(1)
                    .and_then(|a| a.rsplit_once(':'))
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
                // State 0A is LISTEN; inode 0 is a socket no process holds any more.
                local_port == Some(port) && f.get(3) != Some(&"0A") && f.get(9) != Some(&"0")
            })
            .count();
    }
    std::fs::metadata("/proc/self/net/tcp").ok().map(|_| n)
}

/// This process's soft limit on open files (None where `/proc` is missing).
pub fn fd_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// How many flood connections fit: `wanted`, or fewer if the open-file limit would not
/// hold them on both ends plus the server's `cap` (the test client and the server share
/// this process).
pub fn flood_size(wanted: usize, cap: usize) -> usize {
    let (Some(open), Some(limit)) = (open_fds(), fd_limit()) else {
        return wanted;
    };
    let fit = limit.saturating_sub(open + cap + 128);
    if fit < wanted {
        eprintln!("open-file limit {limit}: flooding with {fit} connections, not {wanted}");
    }
    wanted.min(fit)
}
