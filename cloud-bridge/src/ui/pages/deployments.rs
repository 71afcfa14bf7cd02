//! Deployments: the list, and one deployment with its waves (1..N of N), canary gate
//! verdicts against the latest observation, every device's status with its reason, and
//! a timeline merged from the audit trail and the events.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use maud::{Markup, html};
use outpost_protocol::wire::Event;
use rusqlite::Connection;

use crate::api::ApiState;
use crate::fleet::machine::{DeviceStatus, Gates, Observation};
use crate::fleet::{DeploymentFilter, DeploymentRecord, FleetError};
use crate::input;
use crate::ui::view::{self, Nav, Page, badge, dash, num, short, time};
use crate::ui::{UiError, blocking, viewer};

fn fleet_err(e: FleetError) -> UiError {
    match e {
        FleetError::NotFound(m) => UiError::NotFound(format!("{m} not found")),
        e => UiError::Internal(e.to_string()),
    }
}

/// `GET /ui/deployments[?state=][&model=]`.
pub async fn list(
    State(st): State<ApiState>,
    headers: HeaderMap,
    uri: Uri,
    q: Result<Query<DeploymentFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, UiError> {
    let Query(q) = q.map_err(|e| UiError::BadRequest(e.body_text()))?;
    let st2 = st.clone();
    let (actor, rows) = blocking(move || {
        let actor = viewer(&st2, &headers)?;
        // The filter `deploy list` and `GET /v1/deployments` parse.
        q.check()?;
        let f = q;
        let rows = crate::fleet::list(&st2.db.lock(), &f).map_err(fleet_err)?;
        Ok((actor, rows))
    })
    .await?;
    Ok(view::render(
        StatusCode::OK,
        Page {
            title: "Deployments".into(),
            nav: Nav::Deployments,
            actor: &actor,
            uri: &uri.to_string(),
            live: &["deployments"],
            body: list_body(&rows),
        },
    ))
}

/// Devices per status: (succeeded, failed, in progress, pending, rolled back).
fn tally(d: &DeploymentRecord) -> [usize; 5] {
    let mut t = [0; 5];
    for (_, _, s) in &d.devices {
        let i = match s {
            DeviceStatus::Succeeded => 0,
            DeviceStatus::Failed { .. } => 1,
            DeviceStatus::Targeted { .. } => 2,
            DeviceStatus::Pending => 3,
            DeviceStatus::RolledBack { .. } => 4,
        };
        t[i] += 1;
    }
    t
}

fn list_body(rows: &[DeploymentRecord]) -> Markup {
    html! {
        @if rows.is_empty() { (view::empty("No deployments match.")) } @else {
            table #deployments {
                thead { tr {
                    th { "Deployment" } th { "Model" } th { "State" } th { "Wave" }
                    th { "Devices: ok · failed · in progress · pending · rolled back" }
                    th { "Created" } th { "By" } th { "Reason" }
                } }
                tbody {
                    @for d in rows {
                        @let t = tally(d);
                        tr data-deployment=(d.id) {
                            td { a href={ "/ui/deployments/" (d.id) } { (d.id) } }
                            td { (d.model) " v" (d.version) }
                            td { (badge(view::state_kind(&d.state), &d.state)) }
                            td { (d.wave + 1) " of " (d.strategy.waves.len()) }
                            td.tally {
                                span.ok { (t[0]) } " · " span.bad { (t[1]) } " · " (t[2]) " · " (t[3]) " · " (t[4])
                            }
                            td { (time(d.created_at)) }
                            td { (d.created_by) }
                            td { (short(&d.reason, 60)) }
                        }
                    }
                }
            }
        }
    }
}

/// One line of the timeline: (unix seconds, source, what, who, text).
type Line = (u64, &'static str, String, String, String);

fn timeline(c: &Connection, id: &str) -> rusqlite::Result<Vec<Line>> {
    let mut q = c.prepare(
        "SELECT at, actor, action, reason FROM audit WHERE target = ?1 ORDER BY id LIMIT 500",
    )?;
    let mut lines: Vec<Line> = q
        .query_map([id], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                "audit",
                r.get::<_, String>(2)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut q = c.prepare(
        "SELECT body FROM (SELECT id, body FROM events ORDER BY id DESC LIMIT 20000)
         WHERE json_extract(body, '$.deployment_id') = ?1 ORDER BY id LIMIT 500",
    )?;
    let events: Vec<Event> = q
        .query_map([id], |r| r.get::<_, String>(0))?
        .filter_map(|b| b.ok().and_then(|b| serde_json::from_str(&b).ok()))
        .collect();
    lines.extend(events.into_iter().map(|e| {
        (
            e.at,
            "event",
            e.kind.as_str().to_owned(),
            e.device_id.unwrap_or_default(),
            e.message,
        )
    }));
    // Stable: within a second, audit rows (the cause) before the events they raised.
    lines.sort_by_key(|l| l.0);
    Ok(lines)
}

/// `GET /ui/deployments/{id}`.
pub async fn show(
    State(st): State<ApiState>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let st2 = st.clone();
    let id2 = id.clone();
    let (actor, d, lines, running) = blocking(move || {
        let actor = viewer(&st2, &headers)?;
        input::id("deployment", &id2)?;
        let c = st2.db.lock();
        let d = crate::fleet::show(&c, &id2).map_err(fleet_err)?;
        let lines = timeline(&c, &id2)?;
        // What each device runs for the model now, from its reported state.
        let mut running = Vec::new();
        for (dev, _, _) in &d.devices {
            let m =
                crate::fleet::desired::reported(&c, dev)?.and_then(|s| s.model(&d.model).cloned());
            running.push(m);
        }
        Ok((actor, d, lines, running))
    })
    .await?;
    Ok(view::render(
        StatusCode::OK,
        Page {
            title: format!("Deployment {id}"),
            nav: Nav::Deployments,
            actor: &actor,
            uri: &uri.to_string(),
            live: &["deployments", "devices", "events", "audit"],
            body: show_body(&d, &lines, &running),
        },
    ))
}

/// (gate, limit, observed, verdict kind, verdict).
type GateRow = (&'static str, String, String, &'static str, String);

fn verdicts(g: &Gates, obs: Option<&Observation>, skipped: bool) -> Vec<GateRow> {
    let mut rows = Vec::new();
    let samples = obs.map_or(0, |o| o.samples);
    let judged = obs.is_some() && samples >= g.min_samples && !skipped;
    let verdict = |pass: bool| -> (&'static str, String) {
        match (skipped, judged, pass) {
            (true, _, _) => ("muted", "skipped".into()),
            (_, false, _) => ("info", "waiting".into()),
            (_, true, true) => ("ok", "pass".into()),
            (_, true, false) => ("bad", "fail".into()),
        }
    };
    let (k, v) = if skipped {
        ("muted", "skipped".to_owned())
    } else if samples >= g.min_samples {
        ("ok", "enough".into())
    } else {
        ("info", "waiting".into())
    };
    rows.push((
        "samples",
        format!("≥ {}", g.min_samples),
        obs.map_or("none yet".into(), |o| o.samples.to_string()),
        k,
        v,
    ));
    if let Some(max) = g.max_error_rate {
        let o = obs.map(|o| o.error_rate);
        let (k, v) = verdict(o.is_some_and(|e| e <= max));
        rows.push((
            "error rate",
            format!("≤ {}", num(max, 3)),
            o.map_or("–".into(), |e| num(e, 3)),
            k,
            v,
        ));
    }
    if let Some(max) = g.max_p99_us {
        let o = obs.and_then(|o| o.p99_us);
        let (k, v) = match o {
            None if judged => ("muted", "no data".into()),
            _ => verdict(o.is_some_and(|p| p <= max)),
        };
        rows.push((
            "p99 latency",
            format!("≤ {max} µs"),
            o.map_or("–".into(), |p| format!("{p} µs")),
            k,
            v,
        ));
    }
    if let Some(max) = g.max_output_shift {
        let o = obs.and_then(|o| o.output_shift);
        let (k, v) = match o {
            None if judged => ("muted", "no previous model to compare".into()),
            _ => verdict(o.is_some_and(|s| s <= max)),
        };
        rows.push((
            "output shift",
            format!("≤ {}", num(max, 3)),
            o.map_or("–".into(), |s| num(s, 3)),
            k,
            v,
        ));
    }
    rows
}

fn show_body(
    d: &DeploymentRecord,
    lines: &[Line],
    running: &[Option<outpost_protocol::wire::ModelState>],
) -> Markup {
    let n = d.strategy.waves.len();
    let reason = match &d.detail {
        crate::fleet::machine::State::Paused { reason }
        | crate::fleet::machine::State::Aborted { reason }
        | crate::fleet::machine::State::RollingBack { reason }
        | crate::fleet::machine::State::RolledBack { reason } => Some(reason.as_str()),
        _ => None,
    };
    let g = &d.strategy.gates;
    html! {
        dl.facts {
            dt { "Model" } dd { (d.model) " v" (d.version) " " span.digest { (short(&d.digest, 12)) } }
            dt { "State" } dd #deployment-state {
                (badge(view::state_kind(&d.state), &d.state))
                @if let Some(r) = reason { " " span.reason { (r) } }
            }
            dt { "Wave" } dd #deployment-wave { (d.wave + 1) " of " (n) }
            dt { "Created" } dd { (time(d.created_at)) " by " (d.created_by) }
            dt { "Reason" } dd { (d.reason) }
            @if let Some(r) = &d.rollback_of {
                dt { "Rolls back" } dd { a href={ "/ui/deployments/" (r) } { (r) } }
            }
            dt { "On trip" } dd { (view::wire_name(&d.strategy.on_trip)) }
            @if d.gates_skipped { dt { "Gates" } dd { (badge("warn", "skipped (audited)")) } }
        }
        h2 { "Waves" }
        table #waves {
            thead { tr {
                th { "Wave" } th { "Share of devices" } th { "Devices" } th { "Succeeded" }
                th { "Failed" } th { "Needs" } th { "Trips above" } th { "Timeout" }
            } }
            tbody {
                @for (i, w) in d.strategy.waves.iter().enumerate() {
                    @let in_wave: Vec<&DeviceStatus> = d.devices.iter().filter(|x| x.1 == i).map(|x| &x.2).collect();
                    tr class=[(i == d.wave).then_some("current")] {
                        td { (i + 1) " of " (n) @if i == 0 { " (canary)" } }
                        td { @if w.fraction == 0.0 { "1 device" } @else { (num(w.fraction * 100.0, 0)) " %" } }
                        td { (in_wave.len()) }
                        td { (in_wave.iter().filter(|s| matches!(s, DeviceStatus::Succeeded)).count()) }
                        td { (in_wave.iter().filter(|s| matches!(s, DeviceStatus::Failed { .. })).count()) }
                        td { (num(w.success_threshold * 100.0, 0)) " % succeeded" }
                        td { (num(w.error_threshold * 100.0, 0)) " % failed" }
                        td { (w.timeout_ms / 1000) " s" }
                    }
                }
            }
        }
        h2 { "Canary gates" }
        p.hint { "Observed on the canary wave after its devices switched (observation period "
            (g.observe_ms / 1000) " s), compared with the previous model on the same devices." }
        table #gates {
            thead { tr { th { "Gate" } th { "Limit" } th { "Observed" } th { "Verdict" } } }
            tbody {
                @for (name, limit, observed, k, v) in verdicts(g, d.observation.as_ref(), d.gates_skipped) {
                    tr { td { (name) } td { (limit) } td { (observed) } td { (badge(k, &v)) } }
                }
            }
        }
        h2 { "Devices" }
        table #deployment-devices {
            thead { tr {
                th { "Device" } th { "Wave" } th { "Status" } th { "Reason" } th { "Runs now" }
            } }
            tbody {
                @for (i, (dev, wave, st)) in d.devices.iter().enumerate() {
                    @let (k, name, why) = view::status(st);
                    @let now = running.get(i).and_then(Option::as_ref);
                    tr data-device=(dev) {
                        td { a href={ "/ui/devices/" (dev) } { (dev) } }
                        td { (wave + 1) " of " (n) }
                        td { (badge(k, name)) }
                        td.reason { (why) }
                        td { @match now {
                            Some(m) => {
                                @match &m.active { Some(a) => { "v" (a.model.version) }, None => (dash()) }
                                " " (badge(view::phase_kind(m.phase), &view::wire_name(&m.phase)))
                            },
                            None => (dash()),
                        } }
                    }
                }
            }
        }
        h2 { "Timeline" }
        @if lines.is_empty() { (view::empty("Nothing recorded yet.")) } @else {
            table #timeline {
                thead { tr { th { "When" } th { "Source" } th { "What" } th { "Who" } th { "Details" } } }
                tbody {
                    @for (at, src, what, who, text) in lines {
                        tr {
                            td { (time(*at)) }
                            td { (badge(if *src == "audit" { "info" } else { "muted" }, src)) }
                            td { (what) } td { (who) } td { (text) }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_wait_for_samples_then_pass_or_fail() {
        let g = Gates {
            max_error_rate: Some(0.01),
            max_p99_us: None,
            max_output_shift: Some(0.3),
            min_samples: 20,
            observe_ms: 10_000,
        };
        let rows = verdicts(&g, None, false);
        assert!(rows.iter().all(|r| r.4 == "waiting"), "{rows:?}");
        let obs = Observation {
            samples: 50,
            error_rate: 0.0,
            p99_us: Some(900),
            output_shift: Some(0.45),
        };
        let rows = verdicts(&g, Some(&obs), false);
        let by = |n: &str| rows.iter().find(|r| r.0 == n).unwrap().4.clone();
        assert_eq!(by("error rate"), "pass");
        assert_eq!(by("output shift"), "fail");
        assert!(
            verdicts(&g, Some(&obs), true)
                .iter()
                .all(|r| r.4 == "skipped")
        );
    }
}
