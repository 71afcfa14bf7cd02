//! `deploy`: create (optionally waiting), list, show, watch, pause, resume, abort,
//! rollback, remove.

use std::path::Path;
use std::process::ExitCode;

use super::args::{AbortArgs, DeployCmd};
use super::{CliError, model_arg, output, pairs, table};
use crate::fleet;
use crate::ops::Ops;

fn follow(
    f: &fleet::FleetHandle,
    id: &str,
    json: bool,
    show: &dyn Fn(&fleet::DeploymentRecord, bool),
) -> Result<ExitCode, CliError> {
    use crate::watch::{Progress, watch};
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut last = String::new();
    let (d, ending) = watch(f, id, std::time::Duration::from_millis(500), |d| {
        let p = Progress::of(d);
        let line = p.line();
        if tty {
            bar.set_length(p.devices as u64);
            bar.set_position(p.succeeded as u64);
            bar.set_message(line);
        } else if line != last {
            eprintln!("{id} {line}");
            last = line;
        }
    })?;
    bar.finish_and_clear();
    show(&d, json);
    Ok(ExitCode::from(ending as u8))
}

/// `deploy`.
pub(super) fn run(dir: &Path, who: String, cmd: DeployCmd) -> Result<ExitCode, CliError> {
    use fleet::machine::Command;
    let l = Ops::open(dir)?;
    let f = l.fleet()?;
    let show = |d: &fleet::DeploymentRecord, json: bool| {
        output(json, d, || {
            let mut s = table(
                &["ID", "MODEL", "STATE", "WAVE", "DONE", "CREATED"],
                &[super::deployment_row(d)],
            );
            if let fleet::machine::State::Paused { reason }
            | fleet::machine::State::RollingBack { reason }
            | fleet::machine::State::RolledBack { reason }
            | fleet::machine::State::Aborted { reason } = &d.detail
            {
                s += &format!("\nreason: {reason}");
            }
            s
        })
    };
    match cmd {
        DeployCmd::Create(a) => {
            let (model, version) = model_arg(&a.model)?;
            let d = f.create(fleet::CreateDeployment {
                model,
                version,
                selector: fleet::Selector {
                    ids: a.devices,
                    tags: pairs(&a.tags, "tag")?,
                },
                strategy: a.strategy.build()?,
                actor: who,
                reason: a.reason,
                skip_gates: a.skip_gates,
            })?;
            if a.wait {
                return follow(&f, &d.id, a.json, &show);
            }
            show(&d, a.json);
        }
        DeployCmd::List { filter, json } => {
            filter.check()?;
            let rows = f.list(&filter)?;
            output(json, &rows, || {
                table(
                    &["ID", "MODEL", "STATE", "WAVE", "DONE", "CREATED"],
                    &rows.iter().map(super::deployment_row).collect::<Vec<_>>(),
                )
            });
        }
        DeployCmd::Show { id, json } => show(&f.show(&id)?, json),
        DeployCmd::Watch { id, json } => return follow(&f, &id, json, &show),
        DeployCmd::Pause(a) => show(&f.command(&a.id, Command::Pause(a.reason), &who)?, a.json),
        DeployCmd::Resume(a) => show(&f.command(&a.id, Command::Resume, &who)?, a.json),
        DeployCmd::Abort(AbortArgs {
            action: a,
            rollback,
        }) => {
            let cmd = if rollback {
                Command::Rollback(a.reason)
            } else {
                Command::Abort(a.reason)
            };
            show(&f.command(&a.id, cmd, &who)?, a.json)
        }
        DeployCmd::Rollback(a) => show(
            &f.rollback(fleet::RollbackRequest {
                id: a.id,
                to: a.to,
                actor: who,
                reason: a.reason,
            })?,
            a.json,
        ),
        DeployCmd::Remove {
            model,
            devices,
            tags,
            reason,
            json,
        } => {
            let r = f.remove_model(fleet::RemoveModel {
                model: model.clone(),
                selector: fleet::Selector {
                    ids: devices,
                    tags: pairs(&tags, "tag")?,
                },
                actor: who,
                reason,
            })?;
            output(json, &r, || {
                let mut s = format!(
                    "{model} removed from {} device(s): {}",
                    r.devices.len(),
                    r.devices.join(", ")
                );
                if !r.untouched.is_empty() {
                    s += &format!("\nnot in the desired set of: {}", r.untouched.join(", "));
                }
                s
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
