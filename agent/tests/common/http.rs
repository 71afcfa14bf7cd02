//! A minimal HTTP/1.1 client for the local API (one request per connection).

use std::net::SocketAddr;
use std::path::Path;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, String) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // A server may answer (413) and close before reading a large body: keep going and
    // read whatever response it sent.
    if s.write_all(head.as_bytes()).await.is_ok() {
        let _ = s.write_all(body).await;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    // Chunked encoding is not used by axum for sized JSON bodies.
    (status, body)
}

pub async fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    exchange(s, method, path, body).await
}

pub async fn request_unix(sock: &Path, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let s = tokio::net::UnixStream::connect(sock).await.unwrap();
    exchange(s, method, path, body).await
}

/// Like [`request`], but `None` while nothing listens yet.
pub async fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> Option<(u16, String)> {
    let s = tokio::net::TcpStream::connect(addr).await.ok()?;
    Some(exchange(s, method, path, body).await)
}
