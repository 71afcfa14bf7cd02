//! Live updates for the dashboard: `GET /ui/live` is a server-sent event stream whose
//! events name what changed — `devices`, `deployments`, `events`, `audit`, `drift` — and
//! each page re-fetches its content on the topics it shows (htmx `hx-trigger="sse:…"`).
//!
//! What changed is found by one poller per bridge, not per browser: every
//! [`POLL_EVERY`] it reads a cheap fingerprint of each topic from the database (the
//! newest event and audit row, a hash of the devices' presence, reported state and
//! desired sets, a hash of the unfinished deployments' machines, the newest telemetry
//! row) and broadcasts the topics whose fingerprint moved. Polling the database rather
//! than hooking the writers sees every writer — the MQTT router, ingest, the rollout
//! engine, and CLI commands in other processes — without touching them. The poller runs
//! only while someone listens, and `drift` is sent at most every [`DRIFT_EVERY`]
//! (telemetry arrives every few seconds from every device).
//!
//! Streams end when the bridge shuts down, so a dashboard left open never holds the
//! HTTP drain; a comment every 15 s keeps idle streams from the listener's idle timeout.

use std::collections::hash_map::DefaultHasher;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use rusqlite::Connection;
use tokio::sync::{broadcast, watch};

use super::UiError;
use crate::api::ApiState;
use crate::db::Db;

/// How often the poller looks for changes.
pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// Least time between two `drift` notices.
pub const DRIFT_EVERY: Duration = Duration::from_secs(5);

/// The topics, in fingerprint order.
pub const TOPICS: [&str; 5] = ["devices", "deployments", "events", "audit", "drift"];

/// The shared change feed.
#[derive(Clone)]
pub struct LiveHub {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    tx: broadcast::Sender<&'static str>,
    running: Mutex<bool>,
    shutdown: watch::Receiver<bool>,
}

impl LiveHub {
    /// A feed over `db` that ends when `shutdown` turns true.
    pub fn new(db: Db, shutdown: watch::Receiver<bool>) -> Self {
        let (tx, _) = broadcast::channel(64);
        Self {
            inner: Arc::new(Inner {
                db,
                tx,
                running: Mutex::new(false),
                shutdown,
            }),
        }
    }

    /// A receiver of changed topics; starts the poller if it is not running.
    pub fn subscribe(&self) -> broadcast::Receiver<&'static str> {
        let rx = self.inner.tx.subscribe();
        let mut running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
        if !*running {
            *running = true;
            tokio::spawn(poll(self.inner.clone()));
        }
        rx
    }
}

/// One fingerprint per topic, in [`TOPICS`] order.
type Prints = [u64; 5];

fn hash_rows(c: &Connection, sql: &str) -> rusqlite::Result<u64> {
    let mut h = DefaultHasher::new();
    let mut q = c.prepare_cached(sql)?;
    let n = q.column_count();
    let mut rows = q.query([])?;
    while let Some(r) = rows.next()? {
        for i in 0..n {
            match r.get_ref(i)? {
                rusqlite::types::ValueRef::Null => 0u8.hash(&mut h),
                rusqlite::types::ValueRef::Integer(v) => v.hash(&mut h),
                rusqlite::types::ValueRef::Real(v) => v.to_bits().hash(&mut h),
                rusqlite::types::ValueRef::Text(v) | rusqlite::types::ValueRef::Blob(v) => {
                    v.hash(&mut h)
                }
            }
        }
    }
    Ok(h.finish())
}

/// The fingerprints now.
pub fn fingerprints(c: &Connection) -> rusqlite::Result<Prints> {
    Ok([
        hash_rows(c, "SELECT id, online, state FROM devices ORDER BY id")?
            ^ hash_rows(
                c,
                "SELECT device, model, digest FROM desired_models ORDER BY device, model",
            )?
            .rotate_left(1),
        hash_rows(c, "SELECT COUNT(*), MAX(updated_at) FROM deployments")?
            ^ hash_rows(
                c,
                "SELECT id, state, machine FROM deployments
                 WHERE state IN ('running', 'paused', 'rolling_back') ORDER BY id",
            )?
            .rotate_left(1),
        hash_rows(c, "SELECT MAX(id) FROM events")?,
        hash_rows(c, "SELECT MAX(id) FROM audit")?,
        hash_rows(c, "SELECT MAX(rowid) FROM telemetry")?,
    ])
}

async fn poll(inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.clone();
    let mut last: Option<Prints> = None;
    let mut drift_sent = Instant::now() - DRIFT_EVERY;
    let mut drift_pending = false;
    let mut first = true;
    loop {
        // The first look is at once: it is the baseline changes are measured from.
        let wait = if first { Duration::ZERO } else { POLL_EVERY };
        first = false;
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            _ = tokio::time::sleep(wait) => {}
        }
        if inner.tx.receiver_count() == 0 {
            // Nobody listens: stop, unless someone subscribed while we looked.
            let mut running = inner.running.lock().unwrap_or_else(|p| p.into_inner());
            if inner.tx.receiver_count() == 0 {
                *running = false;
                return;
            }
        }
        let db = inner.db.clone();
        let now = match tokio::task::spawn_blocking(move || fingerprints(&db.lock())).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "dashboard live updates: cannot read the database");
                continue;
            }
            Err(_) => continue,
        };
        if let Some(prev) = last {
            for (i, topic) in TOPICS.iter().enumerate() {
                if prev[i] == now[i] {
                    continue;
                }
                if *topic == "drift" {
                    drift_pending = true;
                } else {
                    let _ = inner.tx.send(topic);
                }
            }
        }
        if drift_pending && drift_sent.elapsed() >= DRIFT_EVERY {
            drift_pending = false;
            drift_sent = Instant::now();
            let _ = inner.tx.send("drift");
        }
        last = Some(now);
    }
    *inner.running.lock().unwrap_or_else(|p| p.into_inner()) = false;
}

/// `GET /ui/live`: the change feed as server-sent events (role viewer).
pub async fn stream(State(st): State<ApiState>, headers: HeaderMap) -> Result<Response, UiError> {
    let st2 = st.clone();
    super::blocking(move || super::viewer(&st2, &headers)).await?;
    let hub = st
        .live
        .clone()
        .ok_or_else(|| UiError::NotFound("live updates need a running bridge".into()))?;
    let rx = hub.subscribe();
    let shutdown = hub.inner.shutdown.clone();
    Ok(Sse::new(events(rx, shutdown))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn events(
    rx: broadcast::Receiver<&'static str>,
    shutdown: watch::Receiver<bool>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    // A first event tells the page the feed is up (it shows "live").
    let hello = vec![Event::default().event("hello").data("connected")];
    futures_util::stream::unfold(
        (rx, shutdown, hello),
        |(mut rx, mut shutdown, mut pending)| async move {
            loop {
                if let Some(e) = pending.pop() {
                    return Some((Ok(e), (rx, shutdown, pending)));
                }
                if *shutdown.borrow() {
                    return None;
                }
                tokio::select! {
                    _ = shutdown.wait_for(|s| *s) => return None,
                    t = rx.recv() => match t {
                        Ok(t) => pending.push(notice(t)),
                        // Missed some: anything may have changed.
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            pending.extend(TOPICS.iter().map(|t| notice(t)));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                }
            }
        },
    )
}

fn notice(topic: &'static str) -> Event {
    Event::default()
        .event(topic)
        .data(crate::db::now_ms().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_move_with_their_topic_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let events = crate::events::EventBus::new(db.clone(), None);
        let before = fingerprints(&db.lock()).unwrap();
        assert_eq!(before, fingerprints(&db.lock()).unwrap(), "stable");
        events.emit(crate::events::NewEvent::new(
            outpost_protocol::wire::EventKind::DeviceOnline,
            "gw-1 is online",
        ));
        let after = fingerprints(&db.lock()).unwrap();
        assert_ne!(before[2], after[2], "events moved");
        assert_eq!(before[0], after[0]);
        assert_eq!(before[3], after[3]);
        let audit = crate::audit::Audit::new(dir.path());
        crate::devices::ensure(&db.lock(), &audit, "gw-1", &Default::default()).unwrap();
        let third = fingerprints(&db.lock()).unwrap();
        assert_ne!(after[0], third[0], "a new device moved devices");
    }
}
