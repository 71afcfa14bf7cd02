//! Events: published on `outpost/v1/events/{kind}` and POSTed to configured webhooks.
//!
//! Every event is stored (`events` table, for the API) and, per webhook, queued in the
//! `outbox` table in the same transaction, so a crash between "something happened" and
//! "the webhook was told" loses nothing. A worker delivers the outbox with exponential
//! backoff (1 s doubling to 5 min, 12 attempts); an event that still cannot be delivered
//! is logged at ERROR (operator action needed) and left in the outbox, marked failed.

use std::time::Duration;

use outpost_protocol::manifest::ModelRef;
use outpost_protocol::topics;
use outpost_protocol::wire::{Event, EventKind};
use rusqlite::{Connection, params};
use tokio::sync::watch;

use crate::db::{Db, now, now_ms};

/// Most delivery attempts per webhook.
pub const MAX_ATTEMPTS: i64 = 12;

pub use crate::mqtt::MqttOut;

/// The event bus. Webhook URLs live in the `webhooks` table, so events raised by CLI
/// commands (which have no MQTT connection) still reach them via the server's worker.
#[derive(Clone)]
pub struct EventBus {
    db: Db,
    mqtt: Option<MqttOut>,
}

/// Builder for one event.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Kind.
    pub kind: EventKind,
    /// Summary.
    pub message: String,
    /// Device.
    pub device_id: Option<String>,
    /// Model.
    pub model: Option<ModelRef>,
    /// Deployment.
    pub deployment_id: Option<String>,
    /// Details.
    pub details: serde_json::Value,
}

impl NewEvent {
    /// An event of `kind` with a message.
    pub fn new(kind: EventKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            device_id: None,
            model: None,
            deployment_id: None,
            details: serde_json::Value::Null,
        }
    }
    /// Sets the device.
    pub fn device(mut self, d: &str) -> Self {
        self.device_id = Some(d.into());
        self
    }
    /// Sets the model.
    pub fn model(mut self, m: ModelRef) -> Self {
        self.model = Some(m);
        self
    }
    /// Sets the deployment.
    pub fn deployment(mut self, d: &str) -> Self {
        self.deployment_id = Some(d.into());
        self
    }
    /// Sets details.
    pub fn details(mut self, v: serde_json::Value) -> Self {
        self.details = v;
        self
    }
}

impl EventBus {
    /// A bus writing to `db`, publishing via `mqtt` if given.
    pub fn new(db: Db, mqtt: Option<MqttOut>) -> Self {
        db.lock()
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS webhooks (url TEXT PRIMARY KEY);",
            )
            .ok();
        Self { db, mqtt }
    }

    /// Adds a webhook URL (idempotent).
    pub fn add_webhook(&self, url: &str) -> rusqlite::Result<()> {
        self.db
            .lock()
            .execute("INSERT OR IGNORE INTO webhooks (url) VALUES (?1)", [url])?;
        Ok(())
    }

    /// Records and publishes an event (using the caller's connection, e.g. inside its
    /// transaction).
    pub fn emit_with(&self, c: &Connection, e: NewEvent) -> Event {
        let ev = Event {
            id: format!(
                "ev-{}-{}",
                now_ms(),
                crate::devices::random_secret().get(..8).unwrap_or("0")
            ),
            kind: e.kind,
            at: now(),
            message: e.message,
            device_id: e.device_id,
            model: e.model,
            deployment_id: e.deployment_id,
            details: e.details,
        };
        let body = String::from_utf8(ev.encode()).unwrap_or_default();
        let stored = c
            .execute(
                "INSERT INTO events (at, kind, body) VALUES (?1, ?2, ?3)",
                params![ev.at as i64, ev.kind.as_str(), body],
            )
            .and_then(|_| {
                c.execute(
                    "INSERT INTO outbox (url, body, next_try_ms) SELECT url, ?1, ?2 FROM webhooks",
                    params![body, now_ms() as i64],
                )?;
                Ok(())
            });
        if let Err(err) = stored {
            tracing::error!(error = %err, kind = ev.kind.as_str(), "cannot record event");
        }
        if let Some(tx) = &self.mqtt {
            // An event is stored first; its MQTT copy is best effort (a full queue drops it,
            // counted in the queue's refusals).
            let _ = tx.try_publish(topics::event(ev.kind.as_str()), ev.encode(), false);
        }
        tracing::info!(kind = ev.kind.as_str(), message = %ev.message, "event");
        ev
    }

    /// Records and publishes an event.
    pub fn emit(&self, e: NewEvent) -> Event {
        let c = self.db.lock();
        self.emit_with(&c, e)
    }

    /// Recent events, newest last.
    pub fn recent(&self, limit: u32, kind: Option<&str>) -> rusqlite::Result<Vec<Event>> {
        let c = self.db.lock();
        let mut q = c.prepare(
            "SELECT body FROM (SELECT id, body FROM events WHERE (?2 IS NULL OR kind = ?2) ORDER BY id DESC LIMIT ?1) ORDER BY id",
        )?;
        let rows = q.query_map(params![limit, kind], |r| r.get::<_, String>(0))?;
        Ok(rows
            .filter_map(|b| b.ok().and_then(|b| serde_json::from_str(&b).ok()))
            .collect())
    }
}

fn post(url: &str, body: &str, headers: &[(&'static str, String)]) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(true)
        .build()
        .into();
    let mut req = agent.post(url).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.send(body).map(|_| ()).map_err(|e| e.to_string())
}

/// Delivers the outbox until shutdown, each POST signed with `secret` (Standard Webhooks
/// headers; the message id `msg_{outbox row}` is the same on every retry).
pub async fn run_webhooks(
    db: Db,
    secret: crate::webhook_sign::WebhookSecret,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {}
        }
        let due: Vec<(i64, String, String, i64)> = db
            .run(|c| {
                let mut q = c.prepare(
                    "SELECT id, url, body, attempts FROM outbox WHERE delivered = 0 AND next_try_ms <= ?1 ORDER BY id LIMIT 32",
                )?;
                q.query_map([now_ms() as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<rusqlite::Result<_>>()
            })
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        for (id, url, body, attempts) in due {
            let headers = secret.headers(&format!("msg_{id}"), now(), body.as_bytes());
            let db = db.clone();
            // The POST and the outcome's bookkeeping both block: off the async workers.
            let _ = tokio::task::spawn_blocking(move || {
                let r = post(&url, &body, &headers);
                let c = db.lock();
                match r {
                    Ok(()) => {
                        let _ = c.execute(
                            "UPDATE outbox SET delivered = 1, attempts = attempts + 1 WHERE id = ?1",
                            [id],
                        );
                    }
                    Err(e) => {
                        let attempts = attempts + 1;
                        if attempts >= MAX_ATTEMPTS {
                            tracing::error!(%url, error = %e, attempts, "webhook delivery failed for good; event kept in the outbox");
                            let _ = c.execute("UPDATE outbox SET delivered = -1, attempts = ?2, last_error = ?3 WHERE id = ?1", params![id, attempts, e]);
                        } else {
                            let delay = (1000i64 << (attempts - 1).min(9)).min(300_000);
                            tracing::warn!(%url, error = %e, attempts, "webhook delivery failed; will retry");
                            let _ = c.execute(
                                "UPDATE outbox SET attempts = ?2, next_try_ms = ?3, last_error = ?4 WHERE id = ?1",
                                params![id, attempts, now_ms() as i64 + delay, e],
                            );
                        }
                    }
                }
            })
            .await;
        }
    }
}
