//! What devices sent: capture exports, fleet drift, telemetry.

use std::path::Path;
use std::process::ExitCode;

use super::args::{DriftCmd, ExportCmd, TelemetryCmd};
use super::{CliError, model_arg, output, table};
use crate::ops::Ops;

/// `export captures`.
pub(super) fn export(dir: &Path, cmd: ExportCmd) -> Result<ExitCode, CliError> {
    let ExportCmd::Captures {
        model,
        since,
        until,
        devices,
        format,
        out,
    } = cmd;
    use crate::export::{self, CaptureQuery, Format, Target, parse_time};
    let (model, version) = model_arg(&model)?;
    let format: Format = format.parse()?;
    let now = crate::db::now();
    let t = |s: Option<String>| s.map(|v| parse_time(&v, now)).transpose();
    let q = CaptureQuery {
        model,
        version,
        since_ms: t(since)?,
        until_ms: t(until)?,
        devices,
    };
    let target = Target::from_arg(&out);
    let l = Ops::open(dir)?;
    let e = q.export(&l.db.lock())?;
    export::write(&e, format, &target)?;
    eprintln!("{}", export::summary(&q, &e, &target));
    Ok(ExitCode::SUCCESS)
}

/// `drift show`.
pub(super) fn drift(dir: &Path, cmd: DriftCmd) -> Result<ExitCode, CliError> {
    let DriftCmd::Show {
        model,
        deployment,
        group_by,
        json,
    } = cmd;
    let (model, version) = match model {
        Some(m) => {
            let (n, v) = model_arg(&m)?;
            (Some(n), v)
        }
        None => (None, None),
    };
    let l = Ops::open(dir)?;
    let f = crate::drift::DriftFilter {
        model,
        version,
        deployment,
        group_by,
    };
    let groups = crate::drift::fleet(&l.db.lock(), &f, crate::db::now_ms(), 120_000)?;
    output(json, &groups, || {
        if groups.is_empty() {
            return "no drift reports from devices in the last 2 minutes".to_owned();
        }
        let mut s = table(
            &[
                "MODEL", "GROUP", "DEVICES", "DRIFTING", "PSI MAX", "KS MAX", "FEATURES",
            ],
            &groups
                .iter()
                .map(|g| {
                    vec![
                        format!("{} v{}", g.model, g.version),
                        g.group.clone().unwrap_or_default(),
                        g.devices.to_string(),
                        if g.drifting.is_empty() {
                            "0".into()
                        } else {
                            format!("{} ({})", g.drifting.len(), g.drifting.join(","))
                        },
                        format!("{:.2}", g.psi_max),
                        format!("{:.2}", g.ks_max),
                        g.features
                            .iter()
                            .take(3)
                            .map(|(f, n)| format!("{f}:{n}"))
                            .collect::<Vec<_>>()
                            .join(" "),
                    ]
                })
                .collect::<Vec<_>>(),
        );
        for g in groups.iter().filter(|g| g.export.is_some()) {
            s += &format!("\nretrain from: {}", g.export.clone().unwrap_or_default());
        }
        s
    });
    Ok(ExitCode::SUCCESS)
}

/// `telemetry show`.
pub(super) fn telemetry(dir: &Path, cmd: TelemetryCmd) -> Result<ExitCode, CliError> {
    let TelemetryCmd::Show {
        id,
        kind,
        limit,
        json,
    } = cmd;
    use crate::telemetry;
    let l = Ops::open(dir)?;
    if let Some(k) = &kind
        && !["inference", "system", "agent"].contains(&k.as_str())
    {
        return Err(CliError::usage(format!(
            "--kind {k:?} is not inference, system or agent"
        )));
    }
    let c = l.db.lock();
    crate::devices::show(&c, &id)?;
    let rows = telemetry::recent(&c, &id, kind.as_deref(), limit.min(10_000))?;
    drop(c);
    output(json, &rows, || {
        table(
            &["TIME", "KIND", "FIGURES"],
            &rows
                .iter()
                .map(|r| {
                    vec![
                        outpost_protocol::time::rfc3339(r.ts_ms / 1000),
                        r.report.kind().into(),
                        telemetry::summary(&r.report),
                    ]
                })
                .collect::<Vec<_>>(),
        )
    });
    Ok(ExitCode::SUCCESS)
}
