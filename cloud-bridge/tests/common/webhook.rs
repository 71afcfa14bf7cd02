//! A webhook receiver for tests: a real HTTP listener on a free port that records each
//! request's headers and body and answers 500 to the first `fail` requests, then 200.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A received webhook: its headers (lower-cased names) and body.
pub type Hook = (Vec<(String, String)>, String);

/// A webhook receiver that answers 500 to the first `fail` requests, then 200.
pub async fn receiver(fail: usize) -> (String, Arc<Mutex<Vec<Hook>>>) {
    receiver_failing(fail, "").await
}

/// [`receiver`] that fails only the first `fail` requests whose body contains `only`
/// (other events due at the same moment then cannot take those failures).
pub async fn receiver_failing(fail: usize, only: &'static str) -> (String, Arc<Mutex<Vec<Hook>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 65536];
            let mut n = 0;
            // Read until the body (Content-Length) is complete.
            while let Ok(k) = s.read(&mut buf[n..]).await {
                if k == 0 {
                    break;
                }
                n += k;
                let t = String::from_utf8_lossy(&buf[..n]).to_string();
                if let Some((h, body)) = t.split_once("\r\n\r\n") {
                    let len = h
                        .lines()
                        .find_map(|l| {
                            l.to_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
            }
            let t = String::from_utf8_lossy(&buf[..n]).to_string();
            let (head, body) = t.split_once("\r\n\r\n").unwrap_or_default();
            let headers = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
                .collect();
            let count = {
                let mut v = g.lock().unwrap();
                v.push((headers, body.to_owned()));
                v.iter().filter(|h| h.1.contains(only)).count()
            };
            let status = if body.contains(only) && count <= fail {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = s
                .write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await;
        }
    });
    (url, got)
}
