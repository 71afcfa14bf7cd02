//! `[broker]`: how the link reaches the broker.
//!
//! ```toml
//! [broker]
//! url = "mqtt://127.0.0.1:1883"        # or mqtts://host:8883
//! keep_alive_secs = 30
//! # username = "gw-0001"; password_file = "/etc/outpost/password"
//! # ca_file = "ca.pem"; client_cert = "gw.pem"; client_key = "gw.key"
//! reconnect_min_ms = 250
//! reconnect_max_ms = 30000
//! max_packet_bytes = 131072  # AWS IoT Core's limit; raise for brokers that allow more
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::settings::InvalidSetting;

/// Largest password file read, bytes (a password is a line; a larger file is a mistake).
const MAX_PASSWORD_FILE: u64 = 4096;

/// How to reach the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerConfig {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS (`mqtts://`).
    pub tls: bool,
    /// Keep-alive interval (at least 5 s).
    pub keep_alive: Duration,
    /// Username.
    pub username: Option<String>,
    /// Password (read from `password_file`; never logged).
    pub password: Option<String>,
    /// CA certificate (PEM) for TLS; system roots are not used.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    pub client_key: Option<PathBuf>,
    /// First reconnect delay.
    pub reconnect_min: Duration,
    /// Reconnect delay cap.
    pub reconnect_max: Duration,
    /// Largest MQTT packet sent or accepted, bytes (default 131072: AWS IoT Core's and
    /// many hosted brokers' limit; the bridge registers no bundle whose chunks would not
    /// fit).
    pub max_packet_bytes: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 1883,
            tls: false,
            keep_alive: Duration::from_secs(30),
            username: None,
            password: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            reconnect_min: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(30),
            max_packet_bytes: 128 * 1024,
        }
    }
}

impl BrokerConfig {
    /// The broker as a URL (`mqtt://host:port`), for messages and `status`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    /// Checks ranges and combinations; the error names the file key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let bad = InvalidSetting::new;
        if self.host.is_empty() {
            return Err(bad("broker.url", "no host"));
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(bad(
                "broker.client_cert",
                "client_cert and client_key go together",
            ));
        }
        if !self.tls && (self.ca_file.is_some() || self.client_cert.is_some()) {
            return Err(bad(
                "broker.ca_file",
                "TLS files given but the URL is not mqtts://",
            ));
        }
        if !(16 * 1024..=16 << 20).contains(&self.max_packet_bytes) {
            return Err(bad(
                "broker.max_packet_bytes",
                "must be within 16 KiB..=16 MiB",
            ));
        }
        if self.keep_alive < Duration::from_secs(5) {
            return Err(bad("broker.keep_alive_secs", "must be at least 5"));
        }
        if self.reconnect_min.is_zero() || self.reconnect_max < self.reconnect_min {
            return Err(bad(
                "broker.reconnect_max_ms",
                "need 0 < reconnect_min_ms <= reconnect_max_ms",
            ));
        }
        Ok(())
    }
}

/// `[broker]` as written in the file: absent keys take [`BrokerConfig::default`].
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BrokerSection {
    /// `mqtt://host[:port]` or `mqtts://host[:port]` (`OUTPOST_BROKER_URL` overrides it).
    pub url: Option<String>,
    keep_alive_secs: Option<u64>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    reconnect_min_ms: Option<u64>,
    reconnect_max_ms: Option<u64>,
    max_packet_bytes: Option<usize>,
}

impl BrokerSection {
    /// The validated settings; `rel` resolves a path relative to the config file. Reads
    /// `password_file` (errors name it).
    pub fn resolve(self, rel: impl Fn(PathBuf) -> PathBuf) -> Result<BrokerConfig, InvalidSetting> {
        let d = BrokerConfig::default();
        let (tls, host, port) = match &self.url {
            Some(url) => parse_url(url)?,
            None => (d.tls, d.host, d.port),
        };
        let password = match self.password_file {
            Some(p) => Some(read_password(&rel(p.clone())).map_err(|e| {
                InvalidSetting::new("broker.password_file", format!("{}: {e}", p.display()))
            })?),
            None => None,
        };
        let c = BrokerConfig {
            host,
            port,
            tls,
            keep_alive: self
                .keep_alive_secs
                .map_or(d.keep_alive, Duration::from_secs),
            username: self.username,
            password,
            ca_file: self.ca_file.map(&rel),
            client_cert: self.client_cert.map(&rel),
            client_key: self.client_key.map(&rel),
            reconnect_min: self
                .reconnect_min_ms
                .map_or(d.reconnect_min, Duration::from_millis),
            reconnect_max: self
                .reconnect_max_ms
                .map_or(d.reconnect_max, Duration::from_millis),
            max_packet_bytes: self.max_packet_bytes.unwrap_or(d.max_packet_bytes),
        };
        c.validate()?;
        Ok(c)
    }
}

/// The password: the file's text without its trailing newline.
fn read_password(p: &std::path::Path) -> Result<String, outpost_protocol::fsio::FsError> {
    let bytes = outpost_protocol::fsio::read_capped(p, MAX_PASSWORD_FILE)?;
    Ok(String::from_utf8_lossy(&bytes).trim_end().to_owned())
}

/// `mqtt[s]://host[:port][/]` → (tls, host, port); the port defaults to 1883 / 8883.
fn parse_url(url: &str) -> Result<(bool, String, u16), InvalidSetting> {
    let bad = |m: String| InvalidSetting::new("broker.url", m);
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err(bad(format!("{url:?} must start with mqtt:// or mqtts://")));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h.to_owned(),
            p.parse::<u16>()
                .map_err(|_| bad(format!("bad port in {url:?}")))?,
        ),
        None => (rest.to_owned(), if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() {
        return Err(bad(format!("no host in {url:?}")));
    }
    Ok((tls, host, port))
}
