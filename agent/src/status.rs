//! `outpost-agent status`: the link, the models and the store backlog of one agent.
//!
//! A running agent answers `GET /v1/status` on its local API with an [`AgentStatus`]
//! (the live link state, which models are loaded, the store's backlog). [`query`] asks it
//! there — over `api.http`, else `api.unix_socket` — and when nothing answers,
//! [`from_data_dir`] reads what the data directory holds (the update state file and the
//! store database, both read-only) and says the agent is not running.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use outpost_protocol::wire::InstalledModel;
use serde::{Deserialize, Serialize};

use crate::config::AgentConfig;
use crate::link::{LinkHandle, LinkState};
use crate::models::ModelHandle;
use crate::sync::SharedStore;
use crate::update::disk::{Slot, UpdateState};

/// The route the running agent serves its status on.
pub const ROUTE: &str = "/v1/status";

/// Largest status answer read, bytes (a device runs a handful of models and streams).
const MAX_ANSWER: u64 = 1 << 20;

/// Largest update state file read (as the updater's own cap).
const MAX_STATE_FILE: u64 = 4 << 20;

/// One agent's status; the body of `GET /v1/status` and of `status --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Device id.
    pub device_id: String,
    /// Whether a running agent answered.
    pub running: bool,
    /// Where the figures come from: the API that answered (`http://…`, `unix:…`) or the
    /// data directory.
    pub source: String,
    /// Why the figures come from the data directory, when they do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The MQTT link (only a running agent has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkState>,
    /// Every model the device holds, by name.
    pub models: Vec<ModelStatus>,
    /// Records waiting to be sent and acknowledged, per stream.
    pub store: Vec<StreamBacklog>,
}

/// One model slot pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelStatus {
    /// Model name.
    pub name: String,
    /// The version in the active slot (None: nothing installed yet).
    pub version: Option<u32>,
    /// The active slot.
    pub slot: Option<Slot>,
    /// The bundle digest in the active slot, hex.
    pub bundle: Option<String>,
    /// Whether the running agent serves it (false when it is not running).
    pub loaded: bool,
    /// The last error of its update, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A stream's backlog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamBacklog {
    /// Stream name.
    pub stream: String,
    /// Records held (not yet acknowledged by the bridge).
    pub records: u64,
    /// Their accounted bytes.
    pub bytes: u64,
}

/// Why the running agent could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The config enables no local API listener.
    #[error("no local API is configured (api.http = \"\" and no api.unix_socket)")]
    NoApi,
    /// Nothing listens there (the agent is not running) or it did not answer in time.
    #[error("no answer at {at}: {source}")]
    Unreachable {
        /// `http://…` or `unix:…`.
        at: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Something answered, but not with a status.
    #[error("{at} answered {detail}")]
    BadAnswer {
        /// `http://…` or `unix:…`.
        at: String,
        /// The HTTP status line or the decode error.
        detail: String,
    },
}

/// What the status route reads from.
#[derive(Clone)]
pub struct Sources {
    /// Device id.
    pub device_id: String,
    /// The data directory (update state file).
    pub data_dir: std::path::PathBuf,
    /// The link.
    pub link: LinkHandle,
    /// The loaded models.
    pub models: ModelHandle,
    /// The store, if it opened.
    pub store: Option<SharedStore>,
}

/// `GET /v1/status` over `sources`.
pub fn routes(sources: Sources) -> Router {
    Router::new().route(ROUTE, get(serve)).with_state(sources)
}

async fn serve(State(s): State<Sources>) -> axum::response::Response {
    use axum::response::IntoResponse;
    // Reads a file and locks the store: off the async workers.
    match tokio::task::spawn_blocking(move || live(&s)).await {
        Ok(st) => axum::Json(st).into_response(),
        Err(e) => crate::api::ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("status task failed: {e}"),
        )
        .into_response(),
    }
}

/// The running agent's status.
fn live(s: &Sources) -> AgentStatus {
    let loaded: Vec<InstalledModel> = s.models.list().iter().map(|m| m.info.clone()).collect();
    let (models, note) = models_on_disk(&s.data_dir, &loaded);
    let store = match &s.store {
        Some(st) => crate::sync::lock(st)
            .stats()
            .iter()
            .map(|(k, v)| StreamBacklog {
                stream: k.clone(),
                records: v.records,
                bytes: v.bytes,
            })
            .collect(),
        None => Vec::new(),
    };
    AgentStatus {
        device_id: s.device_id.clone(),
        running: true,
        source: "api".into(),
        note,
        link: Some(s.link.state()),
        models,
        store,
    }
}

/// The models the update state file lists, marking those in `loaded` as served; and a note
/// when the file could not be read.
fn models_on_disk(
    data_dir: &Path,
    loaded: &[InstalledModel],
) -> (Vec<ModelStatus>, Option<String>) {
    let p = data_dir.join("update").join("state.json");
    let state = match outpost_protocol::fsio::read_capped_string(&p, MAX_STATE_FILE) {
        Err(e) if e.is_not_found() => Ok(UpdateState::default()),
        Err(e) => Err(e.to_string()),
        Ok(t) => {
            serde_json::from_str::<UpdateState>(&t).map_err(|e| format!("{}: {e}", p.display()))
        }
    };
    let state = match state {
        Ok(s) => s,
        Err(e) => return (Vec::new(), Some(format!("update state unreadable: {e}"))),
    };
    let models = state
        .models
        .values()
        .map(|l| {
            let active = l.active.and_then(|s| l.slot(s));
            ModelStatus {
                name: l.name.clone(),
                version: active.map(|m| m.model.version),
                slot: l.active,
                bundle: active.map(|m| m.bundle.to_hex()),
                loaded: active.is_some_and(|a| loaded.contains(a)),
                last_error: l.last_error.clone(),
            }
        })
        .collect();
    (models, None)
}

/// The status read from the data directory of `cfg` alone (the agent is not running;
/// `why` says how that was found out). Nothing is written.
pub fn from_data_dir(cfg: &AgentConfig, why: String) -> AgentStatus {
    let (models, models_note) = models_on_disk(&cfg.data_dir, &[]);
    let (store, store_note) = match crate::store::Store::backlog_read_only(&cfg.data_dir) {
        Ok(m) => (
            m.into_iter()
                .map(|(stream, (records, bytes))| StreamBacklog {
                    stream,
                    records,
                    bytes,
                })
                .collect(),
            None,
        ),
        Err(e) => (Vec::new(), Some(format!("store unreadable: {e}"))),
    };
    let note = [Some(why), models_note, store_note]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ");
    AgentStatus {
        device_id: cfg.device_id.clone(),
        running: false,
        source: cfg.data_dir.display().to_string(),
        note: Some(note),
        link: None,
        models,
        store,
    }
}

/// Asks the running agent of `cfg` for its status, waiting at most `timeout` for each of
/// connecting and answering.
///
/// Errors: [`QueryError::NoApi`] when no listener is configured,
/// [`QueryError::Unreachable`] when nothing answers, [`QueryError::BadAnswer`] when the
/// answer is not a status (an agent of an older version, another program on the port).
pub fn query(cfg: &AgentConfig, timeout: Duration) -> Result<AgentStatus, QueryError> {
    let request =
        format!("GET {ROUTE} HTTP/1.0\r\nHost: localhost\r\nAccept: application/json\r\n\r\n");
    let (at, answer) = if let Some(addr) = cfg.api.http {
        let at = format!("http://{addr}");
        let unreachable = |source| QueryError::Unreachable {
            at: at.clone(),
            source,
        };
        let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(unreachable)?;
        s.set_read_timeout(Some(timeout)).map_err(unreachable)?;
        s.set_write_timeout(Some(timeout)).map_err(unreachable)?;
        let answer = exchange(&mut s, &request).map_err(unreachable)?;
        (at, answer)
    } else if let Some(path) = &cfg.api.unix_socket {
        let at = format!("unix:{}", path.display());
        let unreachable = |source| QueryError::Unreachable {
            at: at.clone(),
            source,
        };
        let mut s = std::os::unix::net::UnixStream::connect(path).map_err(unreachable)?;
        s.set_read_timeout(Some(timeout)).map_err(unreachable)?;
        s.set_write_timeout(Some(timeout)).map_err(unreachable)?;
        let answer = exchange(&mut s, &request).map_err(unreachable)?;
        (at, answer)
    } else {
        return Err(QueryError::NoApi);
    };
    let bad = |detail: String| QueryError::BadAnswer {
        at: at.clone(),
        detail,
    };
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("a truncated HTTP answer".into()))?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) != Some("200") {
        return Err(bad(format!("{status_line:?} to GET {ROUTE}")));
    }
    let mut st: AgentStatus = serde_json::from_slice(&answer[split + 4..])
        .map_err(|e| bad(format!("a body that is not a status: {e}")))?;
    st.source = at;
    Ok(st)
}

/// Sends `request` and reads the whole answer (HTTP/1.0: the server closes), capped.
fn exchange(s: &mut (impl Read + Write), request: &str) -> std::io::Result<Vec<u8>> {
    s.write_all(request.as_bytes())?;
    let mut out = Vec::new();
    s.take(MAX_ANSWER).read_to_end(&mut out)?;
    Ok(out)
}

/// The running agent's status or, when it does not answer, the data directory's.
pub fn status(cfg: &AgentConfig, timeout: Duration) -> AgentStatus {
    match query(cfg, timeout) {
        Ok(s) => s,
        Err(e @ QueryError::Unreachable { .. }) => {
            from_data_dir(cfg, format!("agent not running ({e})"))
        }
        // Nothing to ask: whether an agent runs cannot be told, only what it left on disk.
        Err(e @ QueryError::NoApi) => from_data_dir(cfg, format!("cannot ask the agent: {e}")),
        Err(e) => from_data_dir(cfg, format!("agent status unavailable ({e})")),
    }
}

/// The status as text for a terminal.
pub fn render(s: &AgentStatus) -> String {
    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    if s.running {
        line(format!(
            "device {}: agent running ({})",
            s.device_id, s.source
        ));
    } else {
        // The note says why (not running, or no API to ask).
        line(format!(
            "device {}: {} (read from {})",
            s.device_id,
            s.note.as_deref().unwrap_or("agent not running"),
            s.source
        ));
    }
    if let (true, Some(n)) = (s.running, &s.note) {
        line(format!("  note: {n}"));
    }
    match &s.link {
        Some(l) if l.connected => line(format!("link: connected to {}", l.broker)),
        Some(l) => {
            let mut t = format!("link: disconnected from {}", l.broker);
            if let Some(e) = &l.last_error {
                let kind = serde_json::to_value(e.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                t += &format!("; last error ({kind}): {}", e.reason);
            }
            if l.failed_attempts > 0 {
                t += &format!("; {} failed attempts", l.failed_attempts);
            }
            if let Some(ms) = l.retry_in_ms {
                t += &format!("; retrying in {:.1}s", ms as f64 / 1000.0);
            }
            line(t);
        }
        None => line("link: -".into()),
    }
    if s.models.is_empty() {
        line("models: none".into());
    } else {
        line("models:".into());
        for m in &s.models {
            let version = m.version.map_or("-".into(), |v| format!("v{v}"));
            let slot = m.slot.map_or("-".into(), |s| {
                format!("slot {}", if s == Slot::A { "a" } else { "b" })
            });
            let loaded = if m.loaded { "loaded" } else { "not loaded" };
            let mut t = format!("  {} {version} {slot} {loaded}", m.name);
            if let Some(e) = &m.last_error {
                t += &format!(" (last error: {e})");
            }
            line(t);
        }
    }
    let pending: BTreeMap<&str, (u64, u64)> = s
        .store
        .iter()
        .map(|b| (b.stream.as_str(), (b.records, b.bytes)))
        .collect();
    if pending.is_empty() {
        line("store: empty".into());
    } else {
        line("store backlog:".into());
        for (k, (n, b)) in pending {
            line(format!("  {k}: {n} records, {b} bytes"));
        }
    }
    out
}
