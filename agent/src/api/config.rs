//! `[api]`: the local inference API's listeners and limits.
//!
//! ```toml
//! [api]
//! http = "127.0.0.1:8089"    # "" disables
//! unix_socket = "/run/outpost/agent.sock"
//! max_body_bytes = 8388608  # requests (JSON or OIP binary tensors) up to this size
//! max_connections = 256      # per listener; over it the longest-waiting idle one gives way
//! header_read_timeout_ms = 10000   # a request head must arrive within this
//! idle_timeout_ms = 30000    # no request running, no byte moving (keep-alive: the shorter
//!                            # of this and the header timeout)
//! request_timeout_ms = 60000 # longer requests are answered 503
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use outpost_net::{HttpLimits, LimitsError};
use serde::Deserialize;

use crate::settings::InvalidSetting;

/// Local inference API.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    /// TCP listener (loopback by default; None: no TCP listener).
    pub http: Option<SocketAddr>,
    /// Unix socket path.
    pub unix_socket: Option<PathBuf>,
    /// Largest request body, bytes (1 KiB..=64 MiB).
    pub max_body_bytes: usize,
    /// Connection cap and timeouts of each listener.
    pub limits: HttpLimits,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            http: Some(SocketAddr::from(([127, 0, 0, 1], 8089))),
            unix_socket: None,
            max_body_bytes: 8 << 20,
            limits: HttpLimits::default(),
        }
    }
}

impl ApiConfig {
    /// Checks ranges; the error names the file key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if !(1024..=64 << 20).contains(&self.max_body_bytes) {
            return Err(InvalidSetting::new(
                "api.max_body_bytes",
                "must be within 1 KiB..=64 MiB",
            ));
        }
        self.limits.validate().map_err(|e| {
            let field = match &e {
                LimitsError::MaxConnections(_) => "api.max_connections",
                LimitsError::Timeout { field, .. } => match *field {
                    "header_read_timeout" => "api.header_read_timeout_ms",
                    "idle_timeout" => "api.idle_timeout_ms",
                    _ => "api.request_timeout_ms",
                },
            };
            InvalidSetting::new(field, e.to_string())
        })
    }
}

/// `[api]` as written in the file: absent keys take [`ApiConfig::default`] (and
/// [`HttpLimits::default`] for the limits).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// `host:port`, or `""` for none (`OUTPOST_API_HTTP` overrides it).
    pub http: Option<String>,
    unix_socket: Option<PathBuf>,
    max_body_bytes: Option<usize>,
    max_connections: Option<usize>,
    header_read_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
}

impl ApiSection {
    /// The validated settings; `rel` resolves a path relative to the config file.
    pub fn resolve(self, rel: impl Fn(PathBuf) -> PathBuf) -> Result<ApiConfig, InvalidSetting> {
        let d = ApiConfig::default();
        let http = match self.http.as_deref() {
            None => d.http,
            Some("") => None,
            Some(s) => Some(s.parse::<SocketAddr>().map_err(|_| {
                InvalidSetting::new(
                    "api.http",
                    format!("{s:?} is not an address like 127.0.0.1:8089"),
                )
            })?),
        };
        let ms = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_millis);
        let limits = HttpLimits {
            max_connections: self.max_connections.unwrap_or(d.limits.max_connections),
            header_read_timeout: ms(self.header_read_timeout_ms, d.limits.header_read_timeout),
            idle_timeout: ms(self.idle_timeout_ms, d.limits.idle_timeout),
            request_timeout: ms(self.request_timeout_ms, d.limits.request_timeout),
            ..d.limits
        };
        let c = ApiConfig {
            http,
            unix_socket: self.unix_socket.map(rel),
            max_body_bytes: self.max_body_bytes.unwrap_or(d.max_body_bytes),
            limits,
        };
        c.validate()?;
        Ok(c)
    }
}
