//! Reading what devices sent: their latest telemetry reports and recent events, typed
//! (`outpost_protocol::records`), for `device show`, `telemetry show` and the API.

use outpost_protocol::records::{self, Telemetry};
use rusqlite::{Connection, params};
use serde::Serialize;

/// One stored telemetry report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TelemetryRow {
    /// Device.
    pub device: String,
    /// When the device took it, unix ms.
    pub ts_ms: u64,
    /// The report.
    pub report: Telemetry,
}

/// One stored device event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRow {
    /// When, unix ms.
    pub ts_ms: u64,
    /// Kind as the agent sent it.
    pub kind: String,
    /// Message.
    pub message: String,
}

/// `device`'s telemetry, newest first: at most `limit` reports, of `kind` if given
/// (`inference`, `system`, `agent`). Reports this build cannot read are skipped.
pub fn recent(
    c: &Connection,
    device: &str,
    kind: Option<&str>,
    limit: u32,
) -> rusqlite::Result<Vec<TelemetryRow>> {
    let mut q = c.prepare(
        "SELECT ts_ms, body FROM telemetry WHERE device = ?1 AND (?2 IS NULL OR kind = ?2)
         ORDER BY ts_ms DESC, seq DESC LIMIT ?3",
    )?;
    let rows = q.query_map(params![device, kind, limit], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (ts, body) = row?;
        if let Ok(report) = records::decode::<Telemetry>(body.as_bytes()) {
            out.push(TelemetryRow {
                device: device.into(),
                ts_ms: ts as u64,
                report,
            });
        }
    }
    Ok(out)
}

/// The latest report of each kind (and, for inference, of each model) from `device`.
pub fn latest(c: &Connection, device: &str) -> rusqlite::Result<Vec<TelemetryRow>> {
    let mut q = c.prepare(
        "SELECT t.ts_ms, t.body FROM telemetry t
         JOIN (SELECT kind, COALESCE(model, '') AS m, MAX(seq) AS seq FROM telemetry
               WHERE device = ?1 GROUP BY kind, COALESCE(model, '')) x
           ON t.seq = x.seq
         WHERE t.device = ?1 ORDER BY t.kind, x.m",
    )?;
    let rows = q.query_map([device], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (ts, body) = row?;
        if let Ok(report) = records::decode::<Telemetry>(body.as_bytes()) {
            out.push(TelemetryRow {
                device: device.into(),
                ts_ms: ts as u64,
                report,
            });
        }
    }
    Ok(out)
}

/// `device`'s newest `limit` events, newest first.
pub fn recent_events(c: &Connection, device: &str, limit: u32) -> rusqlite::Result<Vec<EventRow>> {
    let mut q = c.prepare(
        "SELECT ts_ms, kind, message FROM device_events WHERE device = ?1
         ORDER BY ts_ms DESC, seq DESC LIMIT ?2",
    )?;
    let rows = q.query_map(params![device, limit], |r| {
        Ok(EventRow {
            ts_ms: r.get::<_, i64>(0)? as u64,
            kind: r.get(1)?,
            message: r.get(2)?,
        })
    })?;
    rows.collect()
}

/// One line of figures for people.
pub fn summary(t: &Telemetry) -> String {
    match t {
        Telemetry::Inference(r) => format!(
            "{} v{}: {} requests, {} errors, {} rejected, p50 {} µs, p99 {} µs{}",
            r.model.name,
            r.model.version,
            r.requests,
            r.errors,
            r.rejected,
            r.p50_us.map_or("-".into(), |v| v.to_string()),
            r.p99_us.map_or("-".into(), |v| v.to_string()),
            r.drift
                .as_ref()
                .map(|d| format!(
                    ", drift {} (PSI {:.2})",
                    if d.drifting { "raised" } else { "no" },
                    d.psi_max
                ))
                .unwrap_or_default()
        ),
        Telemetry::System(s) => format!(
            "cpu {:.0}%, memory {}/{} MiB, rss {} MiB, disk free {} MiB{}",
            s.cpu_pct,
            s.mem_used >> 20,
            s.mem_total >> 20,
            s.rss_bytes.map_or("-".into(), |b| (b >> 20).to_string()),
            s.disk_free.map_or("-".into(), |b| (b >> 20).to_string()),
            s.temperature_c
                .map(|t| format!(", {t:.0} °C"))
                .unwrap_or_default()
        ),
        Telemetry::Agent(a) => format!(
            "store {}/{} KiB, backlog {}, link {}, {} reconnects",
            a.store_bytes >> 10,
            a.store_budget >> 10,
            a.backlog.values().sum::<u64>(),
            if a.connected { "up" } else { "down" },
            a.reconnects
        ),
        Telemetry::Unknown => "(a kind this bridge does not know)".into(),
    }
}
