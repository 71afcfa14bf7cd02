//! The audit trail (who did what, why, when; the hash chain verified on request) and the
//! events (what happened in the fleet), newest first.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use maud::{Markup, html};
use outpost_protocol::wire::Event;
use serde::Deserialize;

use crate::api::ApiState;
use crate::audit::AuditEntry;
use crate::input;
use crate::ui::view::{self, Nav, Page, badge, short, time};
use crate::ui::{UiError, blocking, viewer};

/// Rows shown when no limit is given.
const DEFAULT_LIMIT: u32 = 200;
/// Most rows a page shows.
const MAX_LIMIT: u32 = 10_000;

fn limit(l: Option<u32>) -> Result<u32, UiError> {
    match l {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(UiError::BadRequest(format!(
            "limit {n} is not within 1..={MAX_LIMIT}"
        ))),
    }
}

/// The audit page's query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    limit: Option<u32>,
    /// Recompute the whole hash chain (`?verify=1`).
    verify: Option<u8>,
}

/// `GET /ui/audit[?limit=N][&verify=1]`.
pub async fn audit(
    State(st): State<ApiState>,
    headers: HeaderMap,
    uri: Uri,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, UiError> {
    let Query(q) = q.map_err(|e| UiError::BadRequest(e.body_text()))?;
    let st2 = st.clone();
    let (actor, rows, verified) = blocking(move || {
        let actor = viewer(&st2, &headers)?;
        let n = limit(q.limit)?;
        let c = st2.db.lock();
        let mut rows = st2.audit.list(&c, Some(u64::from(n)))?;
        rows.reverse();
        let verified = match q.verify {
            Some(1) => Some(st2.audit.verify(&c)?),
            Some(_) => return Err(UiError::BadRequest("verify must be 1".into())),
            None => None,
        };
        Ok((actor, rows, verified))
    })
    .await?;
    let body = html! {
        p {
            @match &verified {
                None => a href="/ui/audit?verify=1" { "Verify the hash chain" },
                Some(r) if r.problems.is_empty() => {
                    (badge("ok", "chain intact")) " " (r.rows) " rows verified"
                },
                Some(r) => {
                    (badge("bad", "chain broken")) " " (r.rows) " rows checked"
                    ul.error { @for p in &r.problems { li { (p) } } }
                },
            }
        }
        (audit_table(&rows))
    };
    Ok(view::render(
        StatusCode::OK,
        Page {
            title: "Audit trail".into(),
            nav: Nav::Audit,
            actor: &actor,
            uri: &uri.to_string(),
            live: &["audit"],
            body,
        },
    ))
}

fn audit_table(rows: &[AuditEntry]) -> Markup {
    html! {
        @if rows.is_empty() { (view::empty("No operator actions recorded yet.")) } @else {
            table #audit {
                thead { tr {
                    th { "#" } th { "When" } th { "Who" } th { "What" } th { "On" } th { "Why" } th { "Hash" }
                } }
                tbody {
                    @for r in rows {
                        tr {
                            td { (r.id) }
                            td { (time(r.at)) }
                            td { (r.actor) }
                            td { (r.action) }
                            td { @if r.target.starts_with("dep-") {
                                a href={ "/ui/deployments/" (r.target) } { (r.target) }
                            } @else { (r.target) } }
                            td { (short(&r.reason, 120)) }
                            td.digest { (short(&r.hash, 12)) }
                        }
                    }
                }
            }
        }
    }
}

/// The events page's query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    limit: Option<u32>,
    kind: Option<String>,
}

/// `GET /ui/events[?kind=K][&limit=N]`.
pub async fn events(
    State(st): State<ApiState>,
    headers: HeaderMap,
    uri: Uri,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, UiError> {
    let Query(q) = q.map_err(|e| UiError::BadRequest(e.body_text()))?;
    let st2 = st.clone();
    let kind = q.kind.clone();
    let (actor, rows) = blocking(move || {
        let actor = viewer(&st2, &headers)?;
        let n = limit(q.limit)?;
        if let Some(k) = &q.kind {
            input::id("kind", k)?;
        }
        let mut rows = st2.events.recent(n, q.kind.as_deref())?;
        rows.reverse();
        Ok((actor, rows))
    })
    .await?;
    let title = match &kind {
        Some(k) => format!("Events: {k}"),
        None => "Events".into(),
    };
    Ok(view::render(
        StatusCode::OK,
        Page {
            title,
            nav: Nav::Events,
            actor: &actor,
            uri: &uri.to_string(),
            live: &["events"],
            body: events_table(&rows),
        },
    ))
}

/// Events, newest first as given.
pub fn events_table(rows: &[Event]) -> Markup {
    let kind_badge = |k: &str| {
        let kind = if k.contains("fail")
            || k.contains("rolled")
            || k.contains("drift")
            || k.contains("offline")
        {
            "warn"
        } else {
            "muted"
        };
        badge(kind, k)
    };
    html! {
        @if rows.is_empty() { (view::empty("No events yet.")) } @else {
            table.events #events {
                thead { tr { th { "When" } th { "Kind" } th { "Device" } th { "Deployment" } th { "Message" } } }
                tbody {
                    @for e in rows {
                        tr data-kind=(e.kind.as_str()) {
                            td { (time(e.at)) }
                            td { a href={ "/ui/events?kind=" (e.kind.as_str()) } { (kind_badge(e.kind.as_str())) } }
                            td { @if let Some(d) = &e.device_id { a href={ "/ui/devices/" (d) } { (d) } } }
                            td { @if let Some(d) = &e.deployment_id { a href={ "/ui/deployments/" (d) } { (d) } } }
                            td { (e.message) }
                        }
                    }
                }
            }
        }
    }
}
