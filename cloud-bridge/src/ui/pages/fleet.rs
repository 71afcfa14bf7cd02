//! Fleet: every device with its presence, health and models — what each runs and what
//! the bridge wants it to run — and one device in detail.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use maud::{Markup, html};
use outpost_protocol::directive::ModelTarget;
use outpost_protocol::wire::{Event, ModelState, ReportedState};
use rusqlite::Connection;

use crate::api::ApiState;
use crate::devices::{DeviceError, DeviceRecord};
use crate::fleet::{DeploymentFilter, DeploymentRecord};
use crate::input;
use crate::ui::view::{self, Nav, Page, badge, dash, short, time, time_ms};
use crate::ui::{UiError, blocking, viewer};

/// A model version the bridge wants on a device.
#[derive(Debug, Clone)]
struct Wanted {
    model: String,
    version: u32,
}

/// Every device's desired set, by device id.
type DesiredSets = BTreeMap<String, Vec<Wanted>>;

fn desired_all(c: &Connection) -> rusqlite::Result<DesiredSets> {
    let mut q =
        c.prepare("SELECT device, model, version FROM desired_models ORDER BY device, model")?;
    let mut out = DesiredSets::new();
    let rows = q.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            Wanted {
                model: r.get(1)?,
                version: r.get(2)?,
            },
        ))
    })?;
    for row in rows {
        let (device, w) = row?;
        out.entry(device).or_default().push(w);
    }
    Ok(out)
}

/// One model slot in a table cell: name, active version, phase, and the desired
/// version when the device does not run it yet.
fn model_cell(m: &ModelState, desired: Option<u32>) -> Markup {
    let active = m.active.as_ref().map(|a| a.model.version);
    html! {
        div.model {
            span.name { (m.name) }
            " "
            @match active { Some(v) => span.ver { "v" (v) }, None => span.ver { (dash()) } }
            " "
            (badge(view::phase_kind(m.phase), &view::wire_name(&m.phase)))
            @if let Some(d) = desired.filter(|d| Some(*d) != active) {
                " " span.want title="desired by the bridge" { "→ v" (d) }
            }
        }
    }
}

/// `GET /ui`: the fleet.
pub async fn page(
    State(st): State<ApiState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, UiError> {
    let st2 = st.clone();
    let (actor, body) = blocking(move || {
        let actor = viewer(&st2, &headers)?;
        let c = st2.db.lock();
        let devices = crate::devices::list(&c, &[])?;
        let desired = desired_all(&c)?;
        let running: i64 = c.query_row(
            "SELECT COUNT(*) FROM deployments WHERE state IN ('running', 'paused', 'rolling_back')",
            [],
            |r| r.get(0),
        )?;
        let drifting = crate::drift::latest(&c, crate::db::now_ms(), 120_000)?
            .iter()
            .filter(|d| d.drifting)
            .count();
        Ok((actor, fleet_body(&devices, &desired, running, drifting)))
    })
    .await?;
    Ok(view::render(
        StatusCode::OK,
        Page {
            title: "Fleet".into(),
            nav: Nav::Fleet,
            actor: &actor,
            uri: &uri.to_string(),
            live: &["devices", "deployments"],
            body,
        },
    ))
}

fn fleet_body(
    devices: &[DeviceRecord],
    desired: &DesiredSets,
    running: i64,
    drifting: usize,
) -> Markup {
    let online = devices.iter().filter(|d| d.online).count();
    html! {
        div.cards {
            div.card { span.n #devices-total { (devices.len()) } span.l { "devices" } }
            div.card { span.n #devices-online { (online) } span.l { "online" } }
            div.card { span.n #devices-offline { (devices.len() - online) } span.l { "offline" } }
            div.card { a href="/ui/deployments" { span.n { (running) } span.l { "deployments in progress" } } }
            div.card { a href="/ui/drift" { span.n { (drifting) } span.l { "devices drifting" } } }
        }
        @if devices.is_empty() {
            (view::empty("No devices yet: provision one with `outpost-bridge device add`."))
        } @else {
            table #devices {
                thead { tr {
                    th { "Device" } th { "Presence" } th { "Health" } th { "Models (running · phase → desired)" }
                    th { "Agent" } th { "Last seen" } th { "Tags" }
                } }
                tbody {
                    @for d in devices {
                        @let want = desired.get(&d.id).map_or(&[][..], Vec::as_slice);
                        tr data-device=(d.id) {
                            td { a href={ "/ui/devices/" (d.id) } { (d.id) } }
                            td.presence {
                                @if d.online { (badge("ok", "online")) } @else { (badge("bad", "offline")) }
                            }
                            td { @match &d.state { Some(s) => (view::health(s.health)), None => (dash()) } }
                            td.models { (models_cell(d.state.as_ref(), want)) }
                            td { @match &d.state { Some(s) => (s.agent_version), None => (dash()) } }
                            td { @match d.last_seen { Some(t) => (time(t)), None => (dash()) } }
                            td.tags {
                                @for (k, v) in &d.tags { span.tag { (k) "=" (v) } " " }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn models_cell(state: Option<&ReportedState>, want: &[Wanted]) -> Markup {
    let reported: Vec<&ModelState> = state.map(|s| s.models.iter().collect()).unwrap_or_default();
    html! {
        @for m in &reported {
            (model_cell(m, want.iter().find(|w| w.model == m.name).map(|w| w.version)))
        }
        @for w in want.iter().filter(|w| !reported.iter().any(|m| m.name == w.model)) {
            div.model {
                span.name { (w.model) } " " span.ver { (dash()) } " "
                (badge("muted", "not reported")) " " span.want { "→ v" (w.version) }
            }
        }
        @if reported.is_empty() && want.is_empty() { (dash()) }
    }
}

/// What the device page shows.
struct DeviceView {
    device: DeviceRecord,
    desired: Vec<ModelTarget>,
    deployments: Vec<DeploymentRecord>,
    events: Vec<Event>,
    agent_events: Vec<(u64, String, String)>,
}

fn load_device(c: &Connection, id: &str) -> Result<DeviceView, UiError> {
    let device = crate::devices::show(c, id).map_err(|e| match e {
        e @ DeviceError::NotFound(_) => UiError::NotFound(e.to_string()),
        e => UiError::Internal(e.to_string()),
    })?;
    let desired =
        crate::fleet::desired::entries(c, id).map_err(|e| UiError::Internal(e.to_string()))?;
    let deployments = crate::fleet::list(
        c,
        &DeploymentFilter {
            device: Some(id.to_owned()),
            ..Default::default()
        },
    )
    .map_err(|e| UiError::Internal(e.to_string()))?;
    let mut q = c.prepare(
        "SELECT body FROM (SELECT id, body FROM events ORDER BY id DESC LIMIT 20000)
         WHERE json_extract(body, '$.device_id') = ?1 ORDER BY id DESC LIMIT 50",
    )?;
    let events = q
        .query_map([id], |r| r.get::<_, String>(0))?
        .filter_map(|b| b.ok().and_then(|b| serde_json::from_str(&b).ok()))
        .collect();
    let mut q = c.prepare(
        "SELECT ts_ms, kind, message FROM device_events WHERE device = ?1 ORDER BY ts_ms DESC LIMIT 50",
    )?;
    let agent_events = q
        .query_map([id], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(DeviceView {
        device,
        desired,
        deployments,
        events,
        agent_events,
    })
}

/// `GET /ui/devices/{id}`.
pub async fn device(
    State(st): State<ApiState>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let st2 = st.clone();
    let id2 = id.clone();
    let (actor, v) = blocking(move || {
        let actor = viewer(&st2, &headers)?;
        input::bounded("device", &id2, input::MAX_DEVICE_ID)?;
        let v = load_device(&st2.db.lock(), &id2)?;
        Ok((actor, v))
    })
    .await?;
    Ok(view::render(
        StatusCode::OK,
        Page {
            title: format!("Device {id}"),
            nav: Nav::Fleet,
            actor: &actor,
            uri: &uri.to_string(),
            live: &["devices", "deployments", "events"],
            body: device_body(&v),
        },
    ))
}

fn device_body(v: &DeviceView) -> Markup {
    let d = &v.device;
    let s = d.state.as_ref();
    html! {
        dl.facts {
            dt { "Presence" } dd { @if d.online { (badge("ok", "online")) } @else { (badge("bad", "offline")) } }
            dt { "Health" } dd { @match s { Some(s) => (view::health(s.health)), None => (dash()) } }
            dt { "Agent" } dd { @match s { Some(s) => (s.agent_version), None => (dash()) } }
            dt { "Last seen" } dd { @match d.last_seen { Some(t) => (time(t)), None => (dash()) } }
            dt { "Target" } dd { (d.target) }
            dt { "Tags" } dd { @for (k, val) in &d.tags { span.tag { (k) "=" (val) } " " } }
            dt { "Directive" } dd {
                @match s.and_then(|s| s.directive_sequence) { Some(q) => { "sequence " (q) }, None => (dash()) }
                @if let Some(r) = s.and_then(|s| s.directive_rejected.as_ref()) {
                    " " (badge("bad", "refused")) " " (r.reason)
                }
            }
            @if let Some(e) = s.and_then(|s| s.last_error.as_ref()) {
                dt { "Last error" } dd.error { (e) }
            }
            @if let Some(s) = s {
                dt { "Model memory" } dd {
                    (view::bytes(s.budget.memory_used))
                    @if let Some(b) = s.budget.memory_budget { " of " (view::bytes(b)) }
                }
                dt { "Model disk" } dd {
                    (view::bytes(s.budget.disk_used))
                    @if let Some(b) = s.budget.disk_budget { " of " (view::bytes(b)) }
                }
            }
        }
        h2 { "Models" }
        (models_table(s, &v.desired))
        h2 { "Deployments" }
        @if v.deployments.is_empty() { (view::empty("None has targeted this device.")) } @else {
            table #device-deployments {
                thead { tr { th { "Deployment" } th { "Model" } th { "State" } th { "This device" } } }
                tbody {
                    @for dep in &v.deployments {
                        @let mine = dep.devices.iter().find(|x| x.0 == d.id);
                        tr {
                            td { a href={ "/ui/deployments/" (dep.id) } { (dep.id) } }
                            td { (dep.model) " v" (dep.version) }
                            td { (badge(view::state_kind(&dep.state), &dep.state)) }
                            td { @if let Some((_, wave, st)) = mine {
                                @let (k, name, why) = view::status(st);
                                (badge(k, name)) " wave " (wave + 1) " of " (dep.strategy.waves.len())
                                @if !why.is_empty() { " · " (why) }
                            } }
                        }
                    }
                }
            }
        }
        h2 { "Events" }
        (super::log::events_table(&v.events))
        h2 { "Agent events" }
        @if v.agent_events.is_empty() { (view::empty("The agent has reported none.")) } @else {
            table {
                thead { tr { th { "When" } th { "Kind" } th { "Message" } } }
                tbody { @for (ts, kind, msg) in &v.agent_events {
                    tr { td { (time_ms(*ts)) } td { (kind) } td { (msg) } }
                } }
            }
        }
    }
}

fn models_table(s: Option<&ReportedState>, desired: &[ModelTarget]) -> Markup {
    let reported: Vec<&ModelState> = s.map(|s| s.models.iter().collect()).unwrap_or_default();
    let names: std::collections::BTreeSet<&str> = reported
        .iter()
        .map(|m| m.name.as_str())
        .chain(desired.iter().map(|t| t.name.as_str()))
        .collect();
    if names.is_empty() {
        return view::empty("No models on this device, and none desired.");
    }
    let installed = |m: Option<&outpost_protocol::wire::InstalledModel>| -> Markup {
        match m {
            Some(i) => {
                html! { "v" (i.model.version) " " span.digest { (short(&i.bundle.to_hex(), 12)) } }
            }
            None => dash(),
        }
    };
    html! {
        table #device-models {
            thead { tr {
                th { "Model" } th { "Phase" } th { "Running" } th { "Previous" } th { "Desired" }
                th { "Download" } th { "Health" } th { "Last error" }
            } }
            tbody {
                @for name in names {
                    @let m = reported.iter().find(|m| m.name == name);
                    @let want = desired.iter().find(|t| t.name == name);
                    tr data-model=(name) {
                        td { (name) }
                        td { @match m { Some(m) => (badge(view::phase_kind(m.phase), &view::wire_name(&m.phase))), None => (badge("muted", "not reported")) } }
                        td { (installed(m.and_then(|m| m.active.as_ref()))) }
                        td { (installed(m.and_then(|m| m.previous.as_ref()))) }
                        td { @match want {
                            Some(t) => { "v" (t.version) " · " a href={ "/ui/deployments/" (t.deployment_id) } { (t.deployment_id) } },
                            None => (dash()),
                        } }
                        td { @match m.filter(|m| m.chunks_total > 0) {
                            Some(m) => { (m.chunks_done) " / " (m.chunks_total) " chunks" },
                            None => (dash()),
                        } }
                        td { @match m { Some(m) => (view::health(m.health)), None => (dash()) } }
                        td.error { @if let Some(e) = m.and_then(|m| m.last_error.as_ref()) { (e) } }
                    }
                }
            }
        }
    }
}
