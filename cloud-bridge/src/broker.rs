//! The embedded MQTT broker (rumqttd), so `outpost-bridge serve` needs nothing else.
//!
//! It listens on loopback by default. With authentication on, a client may connect only
//! as a provisioned device (client id = username = device id, password checked against
//! the registry) or as the bridge itself (an internal credential made at start-up).
//! rumqttd has no per-topic ACLs; deployments that need them (a device confined to its
//! own subtree) run mosquitto with `pattern readwrite outpost/v1/dev/%c/#`.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

/// Decides whether (client id, username, password) may connect.
pub type AuthFn = Arc<dyn Fn(&str, &str, &str) -> bool + Send + Sync>;

/// Broker start errors.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The address cannot be bound.
    #[error("MQTT listen address {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The broker did not come up.
    #[error("embedded broker did not start on {0}")]
    NotStarted(SocketAddr),
}

/// A running embedded broker.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedBroker {
    /// Where it listens.
    pub addr: SocketAddr,
}

/// Starts rumqttd on `listen` (port 0 picks a free port).
pub fn start(listen: SocketAddr, auth: Option<AuthFn>) -> Result<EmbeddedBroker, BrokerError> {
    // rumqttd binds inside its own thread and cannot report failure back; bind here first
    // so a taken port is an error now, and so port 0 resolves to a concrete port.
    let addr = {
        let l = TcpListener::bind(listen).map_err(|source| BrokerError::Bind {
            addr: listen,
            source,
        })?;
        l.local_addr().map_err(|source| BrokerError::Bind {
            addr: listen,
            source,
        })?
    };
    // rumqttd keeps every subscribed filter's messages in an in-memory log until the
    // filter's segments roll over: at 100 MiB x 10 a 1000-device rollout of a 5 MB bundle
    // (one chunk filter per device) held ~24 GB and was OOM-killed. 1 MiB x 2 bounds each
    // filter at ~2 MiB; subscribers here read far less than that behind (a device has at
    // most its chunk window in flight), and anything lost to a rollover is re-requested
    // (chunks) or re-sent unacked (uplink).
    let text = format!(
        "id = 0\n[router]\nid = 0\nmax_connections = 20000\nmax_outgoing_packet_count = 200\n\
         max_segment_size = 1048576\nmax_segment_count = 2\n[v4.1]\nname = \"outpost\"\n\
         listen = \"{addr}\"\nnext_connection_delay_ms = 1\n[v4.1.connections]\n\
         connection_timeout_ms = 60000\nmax_payload_size = 1048576\nmax_inflight_count = 500\n\
         dynamic_filters = true\n"
    );
    let mut config: rumqttd::Config = toml::from_str(&text).expect("static broker config parses");
    if let Some(check) = auth
        && let Some(v4) = config.v4.as_mut()
    {
        for s in v4.values_mut() {
            let check = check.clone();
            s.set_auth_handler(move |client: String, user: String, pass: String| {
                let ok = check(&client, &user, &pass);
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
            return Ok(EmbeddedBroker { addr });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(BrokerError::NotStarted(addr))
}
