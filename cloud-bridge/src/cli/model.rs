//! `model`: register, inspect, list, show, delete.

use std::path::Path;
use std::process::ExitCode;

use super::args::ModelCmd;
use super::{CliError, model_arg, output, pairs, table};
use crate::ops::Ops;
use crate::registry::{self, ModelFilter, RegisterRequest};

/// `model`.
pub(super) fn run(dir: &Path, who: String, cmd: ModelCmd) -> Result<ExitCode, CliError> {
    if let ModelCmd::Inspect { file, spec, json } = cmd {
        return inspect(&file, spec.as_deref(), json);
    }
    let l = Ops::open(dir)?;
    match cmd {
        ModelCmd::Register(a) => {
            let req = RegisterRequest {
                name: a.name,
                files: a.files,
                spec: a.spec,
                tags: a.tags,
                reason: a.bundle.reason,
                created_by: who,
                baseline_csv: a.baseline,
                chunk_size: a.bundle.chunk_size,
                memory_bytes: a.bundle.memory_bytes,
                source_commit: a.bundle.source_commit,
                dataset_id: a.bundle.dataset_id,
                dataset_sha256: a.bundle.dataset_sha256,
            };
            let l = l.with_key_file(a.key);
            let sp = super::spinner("validating and profiling the model");
            let r = l.register_model(req);
            sp.finish_and_clear();
            let (rec, v) = r?;
            output(a.json, &rec, || {
                format!(
                    "registered {} v{} (bundle {}, {} bytes, {} chunks); self-test {} samples passed; latency p50 {:.0} µs p99 {:.0} µs; peak memory {}",
                    rec.name,
                    rec.version,
                    &rec.digest[..12],
                    rec.bundle_size,
                    rec.chunks,
                    v.self_test_samples,
                    v.p50_us,
                    v.p99_us,
                    v.peak_memory_bytes
                        .map(|b| format!("{:.1} MB", b as f64 / 1e6))
                        .unwrap_or_else(|| "n/a".into())
                )
            });
        }
        ModelCmd::Inspect { .. } => unreachable!("handled above"),
        ModelCmd::List {
            name,
            tags,
            lineage,
            json,
        } => {
            let f = ModelFilter {
                name,
                tags: pairs(&tags, "tag")?,
                lineage: pairs(&lineage, "lineage")?,
            };
            let rows = registry::list(&l.db.lock(), &f)?;
            output(json, &rows, || {
                table(
                    &[
                        "NAME",
                        "VERSION",
                        "BUNDLE",
                        "TAGS",
                        "P50/P99 µs",
                        "CREATED",
                        "BY",
                    ],
                    &rows.iter().map(super::model_row).collect::<Vec<_>>(),
                )
            });
        }
        ModelCmd::Show { model, json } => {
            let (n, v) = model_arg(&model)?;
            let r = registry::show(&l.db.lock(), &n, v)?;
            output(json, &r, || {
                serde_json::to_string_pretty(&r).unwrap_or_default()
            });
        }
        ModelCmd::Delete {
            model,
            reason,
            json,
        } => {
            let (n, v) = model_arg(&model)?;
            let v = v.ok_or_else(|| CliError::usage("delete needs NAME:VERSION"))?;
            registry::delete(
                &mut l.db.lock(),
                &l.audit,
                l.bundles.as_ref(),
                &n,
                v,
                &who,
                &reason,
            )?;
            output(
                json,
                &serde_json::json!({"deleted": format!("{n}:{v}")}),
                || format!("deleted {n}:{v}"),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect(
    file: &std::path::Path,
    spec: Option<&std::path::Path>,
    json: bool,
) -> Result<ExitCode, CliError> {
    let report = crate::inspect::inspect_file(file, spec).map_err(|source| CliError::Inspect {
        file: file.to_path_buf(),
        source,
    })?;
    output(json, &report, || crate::inspect::render(&report));
    Ok(if report.runs() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
