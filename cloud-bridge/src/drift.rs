//! Fleet drift: the devices' drift summaries (carried in their inference telemetry),
//! aggregated by model version and, optionally, by a device tag; and alerts when the set
//! of drifting devices of a model version changes. Every alert names the devices and
//! carries the `export captures` command for the drifting window — the retraining
//! hand-off.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use outpost_protocol::manifest::ModelRef;
use outpost_protocol::records::{self, FeatureDrift, Telemetry};
use outpost_protocol::wire::EventKind;
use rusqlite::{Connection, params};
use serde::Serialize;

use crate::events::{EventBus, NewEvent};
use crate::export::CaptureQuery;

/// A device's latest drift report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceDrift {
    /// Device.
    pub device: String,
    /// Model.
    pub model: String,
    /// Version.
    pub version: u32,
    /// Drift raised.
    pub drifting: bool,
    /// Largest PSI.
    pub psi_max: f64,
    /// Largest KS.
    pub ks_max: f64,
    /// Worst features.
    pub top: Vec<FeatureDrift>,
    /// Where the drifting window starts (unix ms).
    pub window_start_ms: u64,
    /// When reported (unix ms).
    pub at_ms: u64,
}

/// Aggregate of one model version (and tag value).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DriftGroup {
    /// Model.
    pub model: String,
    /// Version.
    pub version: u32,
    /// Tag value when grouped by a tag.
    pub group: Option<String>,
    /// Devices reporting.
    pub devices: usize,
    /// Drifting devices.
    pub drifting: Vec<String>,
    /// Largest PSI.
    pub psi_max: f64,
    /// Largest KS.
    pub ks_max: f64,
    /// Most frequent drifting features, `[feature, devices]`.
    #[schema(value_type = Vec<Vec<Object>>)]
    pub features: Vec<(String, usize)>,
    /// The export command for the drifting devices' window, if any drift.
    pub export: Option<String>,
}

/// Latest report per device within `max_age_ms`.
pub fn latest(c: &Connection, now_ms: u64, max_age_ms: u64) -> rusqlite::Result<Vec<DeviceDrift>> {
    let mut q = c.prepare(
        "SELECT device, body, ts_ms FROM telemetry WHERE kind = 'inference' AND ts_ms >= ?1 ORDER BY device, seq DESC",
    )?;
    let rows = q.query_map(params![now_ms.saturating_sub(max_age_ms) as i64], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (device, body, ts) in rows.flatten() {
        if !seen.insert(device.clone()) {
            continue;
        }
        let Ok(Telemetry::Inference(r)) = records::decode::<Telemetry>(body.as_bytes()) else {
            continue;
        };
        let Some(d) = r.drift else {
            continue;
        };
        out.push(DeviceDrift {
            device,
            model: r.model.name,
            version: r.model.version,
            drifting: d.drifting,
            psi_max: d.psi_max,
            ks_max: d.ks_max,
            top: d.top,
            window_start_ms: d.window_start_ms,
            at_ms: ts as u64,
        });
    }
    Ok(out)
}

/// Details of a fleet drift alert (a `drift_detected` event whose message starts with
/// `fleet drift`): the devices drifting now and the hand-off to retraining.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct FleetDriftAlert {
    /// Devices drifting now, sorted.
    pub devices: Vec<String>,
    /// Most frequent drifting features (feature, devices).
    pub features: Vec<(String, usize)>,
    /// Largest PSI among them.
    pub psi_max: f64,
    /// Largest KS among them.
    pub ks_max: f64,
    /// The `export captures` command for the drifting window.
    pub export: Option<String>,
}

/// What to aggregate.
#[derive(Debug, Clone, Default)]
pub struct DriftFilter {
    /// Model name.
    pub model: Option<String>,
    /// Version.
    pub version: Option<u32>,
    /// Only this deployment's devices (and its model version).
    pub deployment: Option<String>,
    /// Group by this device tag.
    pub group_by: Option<String>,
}

/// The export command for `drifting`'s window, naming `data_dir` so it runs as printed.
fn export(
    model: &str,
    version: u32,
    drifting: &[&DeviceDrift],
    data_dir: Option<&std::path::Path>,
) -> Option<String> {
    let start = drifting.iter().map(|d| d.window_start_ms).min()?;
    Some(
        CaptureQuery {
            model: model.into(),
            version: Some(version),
            since_ms: Some(start),
            until_ms: None,
            devices: drifting.iter().map(|d| d.device.clone()).collect(),
        }
        .command(data_dir),
    )
}

/// Aggregates the latest reports (up to `max_age_ms` old).
pub fn fleet(
    c: &Connection,
    f: &DriftFilter,
    now_ms: u64,
    max_age_ms: u64,
) -> rusqlite::Result<Vec<DriftGroup>> {
    let mut reports = latest(c, now_ms, max_age_ms)?;
    // The export command reads the database this connection reads.
    let data_dir = crate::export::data_dir_of(c);
    if let Some(dep) = &f.deployment {
        let (model, version): (String, u32) = c.query_row(
            "SELECT model, version FROM deployments WHERE id = ?1",
            [dep],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mut q = c.prepare("SELECT device FROM deployment_devices WHERE deployment = ?1")?;
        let ids: BTreeSet<String> = q
            .query_map([dep], |r| r.get(0))?
            .filter_map(Result::ok)
            .collect();
        reports.retain(|r| ids.contains(&r.device) && r.model == model && r.version == version);
    }
    reports.retain(|r| {
        f.model.as_ref().is_none_or(|m| *m == r.model) && f.version.is_none_or(|v| v == r.version)
    });
    let tags: HashMap<String, BTreeMap<String, String>> = match &f.group_by {
        None => HashMap::new(),
        Some(_) => crate::devices::list(c, &[])?
            .into_iter()
            .map(|d| (d.id, d.tags))
            .collect(),
    };
    let mut groups: BTreeMap<(String, u32, Option<String>), Vec<&DeviceDrift>> = BTreeMap::new();
    for r in &reports {
        let g = f.group_by.as_ref().map(|k| {
            tags.get(&r.device)
                .and_then(|t| t.get(k))
                .cloned()
                .unwrap_or_else(|| "(none)".into())
        });
        groups
            .entry((r.model.clone(), r.version, g))
            .or_default()
            .push(r);
    }
    Ok(groups
        .into_iter()
        .map(|((model, version, group), rs)| {
            let drifting: Vec<&DeviceDrift> = rs.iter().copied().filter(|r| r.drifting).collect();
            let mut feats: BTreeMap<String, usize> = BTreeMap::new();
            for r in &drifting {
                let names: BTreeSet<String> = r.top.iter().map(|t| t.feature.clone()).collect();
                for n in names {
                    *feats.entry(n).or_default() += 1;
                }
            }
            let mut features: Vec<(String, usize)> = feats.into_iter().collect();
            features.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            DriftGroup {
                export: export(&model, version, &drifting, data_dir.as_deref()),
                drifting: drifting.iter().map(|r| r.device.clone()).collect(),
                devices: rs.len(),
                psi_max: rs.iter().map(|r| r.psi_max).fold(0.0, f64::max),
                ks_max: rs.iter().map(|r| r.ks_max).fold(0.0, f64::max),
                features,
                model,
                version,
                group,
            }
        })
        .collect())
}

/// Raises a fleet alert whenever the set of drifting devices of a model version changes.
#[derive(Debug, Default)]
pub struct Alerter {
    last: HashMap<(String, u32), BTreeSet<String>>,
}

impl Alerter {
    /// Checks the latest reports; emits `drift_detected` events naming the devices.
    pub fn check(
        &mut self,
        c: &Connection,
        events: &EventBus,
        now_ms: u64,
    ) -> rusqlite::Result<()> {
        for g in fleet(c, &DriftFilter::default(), now_ms, 120_000)? {
            let now: BTreeSet<String> = g.drifting.iter().cloned().collect();
            let key = (g.model.clone(), g.version);
            if self.last.get(&key).is_some_and(|prev| *prev == now)
                || (now.is_empty() && !self.last.contains_key(&key))
            {
                continue;
            }
            self.last.insert(key, now.clone());
            if now.is_empty() {
                continue;
            }
            let names: Vec<&str> = now.iter().map(String::as_str).collect();
            events.emit_with(
                c,
                NewEvent::new(
                    EventKind::DriftDetected,
                    format!(
                        "fleet drift on {} v{}: {} ({} of {} devices)",
                        g.model,
                        g.version,
                        names.join(", "),
                        now.len(),
                        g.devices
                    ),
                )
                .model(ModelRef {
                    name: g.model.clone(),
                    version: g.version,
                })
                .details(
                    serde_json::to_value(FleetDriftAlert {
                        devices: now.iter().cloned().collect(),
                        features: g.features.clone(),
                        psi_max: g.psi_max,
                        ks_max: g.ks_max,
                        export: g.export.clone(),
                    })
                    .unwrap_or_default(),
                ),
            );
        }
        Ok(())
    }
}
