//! Drift: per model version, how many devices report and which drift (with the export
//! command for their drifting window); per device, its latest PSI/KS and worst features;
//! and charts of each device's largest PSI over the last 30 minutes, from the drift
//! summaries the devices carry in their inference telemetry (`crate::drift`).
//!
//! `?model=NAME[:VERSION]` narrows everything to one model, `&device=ID` to one device
//! (whose chart then shows its largest PSI and KS).

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use maud::{Markup, html};
use outpost_protocol::records::{self, InferenceReport, Telemetry};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::api::ApiState;
use crate::drift::{DeviceDrift, DriftFilter, DriftGroup};
use crate::input;
use crate::ui::view::{self, Nav, Page, badge, num, time_ms};
use crate::ui::{UiError, blocking, viewer};

/// How far back the charts go, ms.
pub const WINDOW_MS: u64 = 30 * 60 * 1000;

/// Most points per chart line (longer windows are binned, keeping each bin's largest).
pub const MAX_POINTS: u64 = 300;

/// Reports older than this are not "latest", ms (as the API's `/v1/drift`).
const MAX_AGE_MS: u64 = 120_000;

/// The query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftQuery {
    model: Option<String>,
    device: Option<String>,
}

/// One chart, handed to the page's script (`dashboard.js`) as JSON in `data-chart`.
#[derive(Debug, Serialize)]
struct Chart {
    title: String,
    /// The y axis' unit.
    unit: &'static str,
    /// Times, unix seconds.
    x: Vec<u64>,
    /// One line per device (or per statistic, for one device).
    series: Vec<Series>,
}

/// One line of a [`Chart`]: a value per time of `x` (`null` where it has none).
#[derive(Debug, Serialize)]
struct Series {
    label: String,
    values: Vec<Option<f64>>,
}

/// Charts of `model` v`version`: each device's largest PSI (or, for one device, its PSI
/// and KS), binned to at most [`MAX_POINTS`] points.
fn charts_for(
    c: &Connection,
    model: &str,
    version: u32,
    device: Option<&str>,
    now_ms: u64,
) -> rusqlite::Result<Option<Chart>> {
    let since = now_ms.saturating_sub(WINDOW_MS);
    let mut q = c.prepare_cached(
        "SELECT device, ts_ms, body FROM telemetry WHERE model = ?1 AND version = ?2 AND ts_ms >= ?3
         AND kind = 'inference' AND (?4 IS NULL OR device = ?4) ORDER BY ts_ms",
    )?;
    let rows = q.query_map(params![model, version, since as i64, device], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)? as u64,
            r.get::<_, String>(2)?,
        ))
    })?;
    // (series label, ts, value)
    let mut points: Vec<(String, u64, f64)> = Vec::new();
    for row in rows {
        let (dev, ts, body) = row?;
        let Ok(Telemetry::Inference(InferenceReport { drift: Some(d), .. })) =
            records::decode(body.as_bytes())
        else {
            continue;
        };
        if device.is_some() {
            points.push(("PSI".into(), ts, d.psi_max));
            points.push(("KS".into(), ts, d.ks_max));
        } else {
            points.push((dev, ts, d.psi_max));
        }
    }
    let (Some(first), Some(last)) = (points.first().map(|p| p.1), points.last().map(|p| p.1))
    else {
        return Ok(None);
    };
    let bin = ((last - first) / MAX_POINTS).max(1000);
    let labels: BTreeSet<String> = points.iter().map(|p| p.0.clone()).collect();
    let mut bins: BTreeMap<u64, BTreeMap<&str, f64>> = BTreeMap::new();
    for (label, ts, v) in &points {
        let slot = bins.entry(first + (ts - first) / bin * bin).or_default();
        let e = slot.entry(label.as_str()).or_insert(*v);
        *e = e.max(*v);
    }
    let x: Vec<u64> = bins.keys().map(|t| t / 1000).collect();
    let series = labels
        .iter()
        .map(|l| Series {
            label: l.clone(),
            values: bins.values().map(|b| b.get(l.as_str()).copied()).collect(),
        })
        .collect();
    let (title, unit) = match device {
        Some(d) => (
            format!("{model} v{version} on {d}: largest PSI and KS over features"),
            "PSI / KS",
        ),
        None => (
            format!("{model} v{version}: largest PSI over features, per device"),
            "PSI",
        ),
    };
    Ok(Some(Chart {
        title,
        unit,
        x,
        series,
    }))
}

struct DriftView {
    groups: Vec<DriftGroup>,
    latest: Vec<DeviceDrift>,
    charts: Vec<Chart>,
}

fn load(c: &Connection, q: &DriftQuery) -> Result<DriftView, UiError> {
    let now = crate::db::now_ms();
    let mut f = DriftFilter::default();
    if let Some(m) = &q.model {
        input::bounded("model", m, input::MAX_NAME + ":4294967295".len())?;
        let (name, version) =
            crate::export::parse_model(m).map_err(|e| UiError::BadRequest(e.to_string()))?;
        let known: Option<i64> = c
            .query_row(
                "SELECT 1 FROM models WHERE name = ?1 AND (?2 IS NULL OR version = ?2) LIMIT 1",
                params![name, version],
                |r| r.get(0),
            )
            .optional()?;
        if known.is_none() {
            return Err(UiError::NotFound(format!("model {m} not found")));
        }
        f.model = Some(name);
        f.version = version;
    }
    if let Some(d) = &q.device {
        input::bounded("device", d, input::MAX_DEVICE_ID)?;
        crate::devices::show(c, d).map_err(|e| match e {
            e @ crate::devices::DeviceError::NotFound(_) => UiError::NotFound(e.to_string()),
            e => UiError::Internal(e.to_string()),
        })?;
    }
    let groups = crate::drift::fleet(c, &f, now, MAX_AGE_MS)?;
    let latest: Vec<DeviceDrift> = crate::drift::latest(c, now, MAX_AGE_MS)?
        .into_iter()
        .filter(|r| {
            f.model.as_ref().is_none_or(|m| *m == r.model)
                && f.version.is_none_or(|v| v == r.version)
                && q.device.as_ref().is_none_or(|d| *d == r.device)
        })
        .collect();
    // A chart per model version with drift data in the window (not only the latest).
    let mut q2 = c.prepare(
        "SELECT DISTINCT model, version FROM telemetry WHERE kind = 'inference' AND ts_ms >= ?1
         AND model IS NOT NULL AND version IS NOT NULL ORDER BY model, version",
    )?;
    let versions: Vec<(String, u32)> = q2
        .query_map([now.saturating_sub(WINDOW_MS) as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut charts = Vec::new();
    for (m, v) in versions {
        if f.model.as_ref().is_some_and(|x| *x != m) || f.version.is_some_and(|x| x != v) {
            continue;
        }
        if let Some(ch) = charts_for(c, &m, v, q.device.as_deref(), now)? {
            charts.push(ch);
        }
    }
    Ok(DriftView {
        groups,
        latest,
        charts,
    })
}

/// `GET /ui/drift[?model=NAME[:VERSION]][&device=ID]`.
pub async fn page(
    State(st): State<ApiState>,
    headers: HeaderMap,
    uri: Uri,
    q: Result<Query<DriftQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, UiError> {
    let Query(q) = q.map_err(|e| UiError::BadRequest(e.body_text()))?;
    let st2 = st.clone();
    let title = match (&q.model, &q.device) {
        (Some(m), Some(d)) => format!("Drift of {m} on {d}"),
        (Some(m), None) => format!("Drift of {m}"),
        (None, Some(d)) => format!("Drift on {d}"),
        (None, None) => "Drift".into(),
    };
    let (actor, v) = blocking(move || {
        let actor = viewer(&st2, &headers)?;
        let v = load(&st2.db.lock(), &q)?;
        Ok((actor, v))
    })
    .await?;
    Ok(view::render(
        StatusCode::OK,
        Page {
            title,
            nav: Nav::Drift,
            actor: &actor,
            uri: &uri.to_string(),
            live: &["drift"],
            body: body(&v),
        },
    ))
}

fn body(v: &DriftView) -> Markup {
    html! {
        h2 { "By model version" }
        @if v.groups.is_empty() {
            (view::empty("No device has reported drift in the last two minutes (drift needs a baseline in the bundle and [drift] on the agent)."))
        } @else {
            table #drift-groups {
                thead { tr {
                    th { "Model" } th { "Devices reporting" } th { "Drifting" } th { "Largest PSI" }
                    th { "Largest KS" } th { "Drifting features (devices)" } th { "Export for retraining" }
                } }
                tbody {
                    @for g in &v.groups {
                        tr {
                            td { a href={ "/ui/drift?model=" (g.model) ":" (g.version) } { (g.model) " v" (g.version) } }
                            td { (g.devices) }
                            td { @if g.drifting.is_empty() { (badge("ok", "none")) } @else {
                                @for d in &g.drifting { a.drifting href={ "/ui/drift?device=" (d) } { (d) } " " }
                            } }
                            td { (num(g.psi_max, 3)) }
                            td { (num(g.ks_max, 3)) }
                            td { @for (f, n) in &g.features { span.tag { (f) " (" (n) ")" } " " } }
                            td { @if let Some(e) = &g.export { code.cmd { (e) } } }
                        }
                    }
                }
            }
        }
        h2 { "Charts (last 30 minutes)" }
        @if v.charts.is_empty() { (view::empty("No drift telemetry in the last 30 minutes.")) }
        @for ch in &v.charts {
            figure.chart-box {
                div.chart data-chart=(view::json_attr(ch)) {}
            }
        }
        h2 { "By device (latest report)" }
        @if v.latest.is_empty() { (view::empty("No recent reports.")) } @else {
            table #drift-devices {
                thead { tr {
                    th { "Device" } th { "Model" } th { "Drifting" } th { "PSI" } th { "KS" }
                    th { "Worst features (PSI)" } th { "Window from" } th { "Reported" }
                } }
                tbody {
                    @for d in &v.latest {
                        tr data-device=(d.device) {
                            td { a href={ "/ui/drift?device=" (d.device) } { (d.device) } }
                            td { (d.model) " v" (d.version) }
                            td { @if d.drifting { (badge("bad", "drifting")) } @else { (badge("ok", "no")) } }
                            td { (num(d.psi_max, 3)) }
                            td { (num(d.ks_max, 3)) }
                            td { @for t in d.top.iter().take(3) {
                                span.tag { (t.feature) " " (num(t.psi, 2)) } " "
                            } }
                            td { (time_ms(d.window_start_ms)) }
                            td { (time_ms(d.at_ms)) }
                        }
                    }
                }
            }
        }
    }
}
