//! Text renderings of the bridge's records for the CLI (JSON output serialises the
//! records themselves).

use serde::Serialize;
use serde_json::{Value, json};

/// Renders rows as an aligned text table.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(header.iter().map(|s| s.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

/// Summary JSON of a model record for lists.
pub fn model_row(m: &crate::registry::ModelRecord) -> Vec<String> {
    let p50 = m.validation["p50_us"]
        .as_f64()
        .map(|v| format!("{v:.0}"))
        .unwrap_or_default();
    let p99 = m.validation["p99_us"]
        .as_f64()
        .map(|v| format!("{v:.0}"))
        .unwrap_or_default();
    vec![
        m.name.clone(),
        m.version.to_string(),
        m.digest[..12].to_owned(),
        m.tags
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
        format!("{p50}/{p99}"),
        outpost_protocol::time::rfc3339(m.created_at),
        m.created_by.clone(),
    ]
}

/// Deployment summary line.
pub fn deployment_row(d: &crate::fleet::DeploymentRecord) -> Vec<String> {
    let done = d
        .devices
        .iter()
        .filter(|x| x.2 == crate::fleet::machine::DeviceStatus::Succeeded)
        .count();
    vec![
        d.id.clone(),
        format!("{}:{}", d.model, d.version),
        d.state.clone(),
        d.wave.to_string(),
        format!("{done}/{}", d.devices.len()),
        outpost_protocol::time::rfc3339(d.created_at),
    ]
}

/// `audit --verify` as JSON.
pub fn verify_json(r: &crate::audit::VerifyReport) -> Value {
    json!({"ok": r.problems.is_empty(), "rows": r.rows, "problems": r.problems})
}

/// Every model on a device, short: `vibration:2 (succeeded), audio:1 (downloading)`.
pub fn models_cell(s: &outpost_protocol::wire::ReportedState) -> String {
    s.models
        .iter()
        .map(|m| {
            let v = m
                .active
                .as_ref()
                .map(|a| format!("v{}", a.model.version))
                .unwrap_or_else(|| "-".into());
            format!("{}:{v} ({})", m.name, phase(m.phase))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn phase(p: outpost_protocol::wire::UpdatePhase) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `device show` as text: the device, then one row per model — what it runs, its rollback
/// version, what the bridge wants, where its update is — and any refused directive.
/// `device show`: the device view, its latest telemetry and its recent events.
#[derive(Debug, Serialize)]
pub struct DeviceShow {
    /// Reported state and desired set.
    #[serde(flatten)]
    pub view: crate::fleet::DeviceView,
    /// The latest report of each kind (inference: per model).
    pub telemetry: Vec<crate::telemetry::TelemetryRow>,
    /// The newest events, newest first.
    pub events: Vec<crate::telemetry::EventRow>,
}

/// `device show` as text.
pub fn device_show_text(d: &DeviceShow) -> String {
    let mut s = device_text(&d.view);
    s += "

latest telemetry:";
    if d.telemetry.is_empty() {
        s += " none";
    }
    for t in &d.telemetry {
        s += &format!(
            "
  {}  {:<9} {}",
            outpost_protocol::time::rfc3339(t.ts_ms / 1000),
            t.report.kind(),
            crate::telemetry::summary(&t.report)
        );
    }
    s += "
recent events:";
    if d.events.is_empty() {
        s += " none";
    }
    for e in &d.events {
        s += &format!(
            "
  {}  {}: {}",
            outpost_protocol::time::rfc3339(e.ts_ms / 1000),
            e.kind,
            e.message
        );
    }
    s
}

/// `device show`'s device and model table.
pub fn device_text(v: &crate::fleet::DeviceView) -> String {
    let d = &v.device;
    let mut out = format!(
        "device {}  online={}  target={}  last_seen={}\ntags: {}\n",
        d.id,
        d.online,
        d.target,
        d.last_seen
            .map(outpost_protocol::time::rfc3339)
            .unwrap_or_else(|| "never".into()),
        d.tags
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let s = d.state.as_ref();
    let mut names: Vec<&str> = v.desired.iter().map(|m| m.name.as_str()).collect();
    if let Some(s) = s {
        names.extend(s.models.iter().map(|m| m.name.as_str()));
    }
    names.sort_unstable();
    names.dedup();
    let rows: Vec<Vec<String>> = names
        .iter()
        .map(|n| {
            let m = s.and_then(|s| s.model(n));
            let ver = |a: Option<&outpost_protocol::wire::InstalledModel>| {
                a.map(|a| format!("v{}", a.model.version))
                    .unwrap_or_else(|| "-".into())
            };
            vec![
                (*n).to_owned(),
                ver(m.and_then(|m| m.active.as_ref())),
                ver(m.and_then(|m| m.previous.as_ref())),
                v.desired
                    .iter()
                    .find(|t| t.name == *n)
                    .map(|t| format!("v{} ({})", t.version, t.deployment_id))
                    .unwrap_or_else(|| "(remove)".into()),
                m.map(|m| phase(m.phase)).unwrap_or_else(|| "-".into()),
                m.map(|m| format!("{:?}", m.health).to_lowercase())
                    .unwrap_or_default(),
                m.and_then(|m| m.last_error.clone()).unwrap_or_default(),
            ]
        })
        .collect();
    out += &table(
        &[
            "MODEL",
            "ACTIVE",
            "PREVIOUS",
            "DESIRED",
            "PHASE",
            "HEALTH",
            "LAST ERROR",
        ],
        &rows,
    );
    if let Some(r) = s.and_then(|s| s.directive_rejected.as_ref()) {
        out += &format!(
            "\nrefused directive {}: {} ({})",
            r.sequence
                .map(|q| q.to_string())
                .unwrap_or_else(|| "?".into()),
            r.reason,
            r.kind
        );
    }
    if let Some(s) = s {
        out += &format!(
            "\nagent {}  directive {}  memory {}/{}  disk {}/{}",
            s.agent_version,
            s.directive_sequence
                .map(|q| q.to_string())
                .unwrap_or_else(|| "-".into()),
            s.budget.memory_used,
            s.budget
                .memory_budget
                .map(|b| b.to_string())
                .unwrap_or_else(|| "∞".into()),
            s.budget.disk_used,
            s.budget
                .disk_budget
                .map(|b| b.to_string())
                .unwrap_or_else(|| "∞".into()),
        );
    }
    out
}
