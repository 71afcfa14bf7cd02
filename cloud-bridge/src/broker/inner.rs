//! The rumqttd instance behind the gate: loopback only, on a port the gate picks, and
//! accepting only connections that carry the gate's per-process secret.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use super::BrokerError;

/// Starts rumqttd on a free loopback port; returns that address.
pub(crate) fn start(secret: Arc<str>, max_connections: usize) -> Result<SocketAddr, BrokerError> {
    // rumqttd binds inside its own thread and cannot report failure back; bind here
    // first so port 0 resolves to a concrete port (the gate is its only client).
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let addr = TcpListener::bind(loopback)
        .and_then(|l| l.local_addr())
        .map_err(|source| BrokerError::Bind {
            addr: loopback,
            source,
        })?;
    // rumqttd keeps every subscribed filter's messages in an in-memory log until the
    // filter's segments roll over: at 100 MiB x 10 a 1000-device rollout of a 5 MB bundle
    // (one chunk filter per device) held ~24 GB and was OOM-killed. 1 MiB x 2 bounds each
    // filter at ~2 MiB; subscribers here read far less than that behind (a device has at
    // most its chunk window in flight), and anything lost to a rollover is re-requested
    // (chunks) or re-sent unacked (uplink).
    let text = format!(
        "id = 0\n[router]\nid = 0\nmax_connections = {max}\nmax_outgoing_packet_count = 200\n\
         max_segment_size = 1048576\nmax_segment_count = 2\n[v4.1]\nname = \"outpost\"\n\
         listen = \"{addr}\"\nnext_connection_delay_ms = 1\n[v4.1.connections]\n\
         connection_timeout_ms = 60000\nmax_payload_size = 1048576\nmax_inflight_count = 500\n\
         dynamic_filters = true\n",
        // The gate holds the real cap; a little headroom so rumqttd never refuses first.
        max = max_connections.saturating_add(16)
    );
    let mut config: rumqttd::Config =
        toml::from_str(&text).map_err(|e| BrokerError::Config(e.to_string()))?;
    if let Some(v4) = config.v4.as_mut() {
        for s in v4.values_mut() {
            let secret = secret.clone();
            s.set_auth_handler(move |_client: String, _user: String, pass: String| {
                let ok = ct_eq(pass.as_bytes(), secret.as_bytes());
                async move { ok }
            });
        }
    }
    std::thread::Builder::new()
        .name("outpost-broker".into())
        .spawn(move || {
            let mut b = rumqttd::Broker::new(config);
            if let Err(e) = b.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .map_err(|source| BrokerError::Bind { addr, source })?;
    for _ in 0..500 {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(50)).is_ok() {
            return Ok(addr);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(BrokerError::NotStarted(addr))
}

/// Constant-time equality (the secret must not leak through timing).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
