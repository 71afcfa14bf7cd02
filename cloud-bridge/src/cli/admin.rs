//! Administration: signing keys, external broker configuration, the audit trail, API
//! tokens.

use std::path::Path;
use std::process::ExitCode;

use super::args::{AuditArgs, BrokerConfigCmd, KeysCmd, TokenCmd};
use super::{CliError, output, table};
use crate::ops::Ops;

/// `keys`: init, show, rotate, activate (see [`crate::keys::ring`]).
pub(super) fn keys(dir: &Path, who: &str, cmd: KeysCmd) -> Result<ExitCode, CliError> {
    use crate::keys::ring;
    let l = Ops::open(dir)?;
    let show = |l: &Ops, json: bool| -> Result<(), CliError> {
        let rows = ring::rows(&l.db.lock())?;
        output(json, &rows, || ring::show_text(&rows));
        Ok(())
    };
    match cmd {
        KeysCmd::Init { out } => {
            let f = ring::init(&l.db.lock(), &l.audit, dir, out.as_deref(), who)?;
            println!(
                "key {} written: private {} (0600), public {}",
                f.key_id,
                f.private.display(),
                f.public.display()
            );
        }
        KeysCmd::Show { json }
        | KeysCmd::Rotate {
            status: true, json, ..
        } => show(&l, json)?,
        KeysCmd::Rotate { out, json, .. } => {
            let keyring = l.keyring()?;
            let now = crate::db::now();
            let r = ring::rotate(
                &mut l.db.lock(),
                &l.audit,
                &keyring,
                dir,
                out.as_deref(),
                who,
                now,
            )?;
            output(json, &r, || {
                format!(
                    "next key {} written to {} (0600); its public half goes to {} devices in their next directive. `keys show` counts the devices that trust it; then `keys activate`",
                    r.key_id,
                    r.private.display(),
                    r.devices
                )
            });
        }
        KeysCmd::Activate { force, json } => {
            let keyring = l.keyring()?;
            let now = crate::db::now();
            let a = ring::activate(&mut l.db.lock(), &l.audit, &keyring, force, who, now)?;
            output(json, &a, || {
                let mut s = format!(
                    "key {} is active; key {} is retired and {} devices are told to stop trusting it",
                    a.active, a.retired, a.devices
                );
                if !a.forced.is_empty() {
                    s += &format!(
                        "\nforced: these devices do not trust the new key and must be re-provisioned: {}",
                        a.forced.join(", ")
                    );
                }
                s
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `broker-config`.
pub(super) fn broker_config(dir: &Path, cmd: BrokerConfigCmd) -> Result<ExitCode, CliError> {
    use crate::broker::external::{self, MosquittoOptions};
    let BrokerConfigCmd::Mosquitto {
        out,
        tls,
        listen,
        bridge_listen,
        tls_names,
    } = cmd;
    let l = Ops::open(dir)?;
    let mut opts = MosquittoOptions::new(tls);
    opts.device_listen = listen.unwrap_or(opts.device_listen);
    opts.bridge_listen = bridge_listen;
    opts.tls_names = tls_names;
    let f = external::write_mosquitto(&l.db.lock(), dir, &out, &opts)?;
    println!(
        "wrote {} ({} devices); run the bridge with --broker mqtt://{} --broker-user outpost-bridge --broker-password-file {}",
        f.config.display(),
        f.devices.len(),
        opts.bridge_listen,
        f.bridge_password_file.display()
    );
    if !f.skipped.is_empty() && !tls {
        eprintln!(
            "warning: no mosquitto password hash for {} (provisioned before it was stored; re-provision them or use --tls)",
            f.skipped.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `audit`: the newest entries, or `--verify` (exit 1 when tampered with).
pub(super) fn audit(dir: &Path, a: AuditArgs) -> Result<ExitCode, CliError> {
    let AuditArgs {
        verify,
        checkpoints,
        trust,
        limit,
        json,
    } = a;
    let l = Ops::open(dir)?;
    let c = l.db.lock();
    if verify {
        let trust = match trust {
            Some(dir) => outpost_protocol::TrustStore::load_dir(&dir)?,
            None => crate::audit::local_trust(dir)?,
        };
        let r = l.audit.verify_with_checkpoints(&c, &trust, &checkpoints)?;
        let mut j = super::verify_json(&r);
        j["checkpoints"] = r.checkpoints.into();
        output(json, &j, || {
            if r.problems.is_empty() {
                let cps = match r.checkpoints {
                    0 => "no checkpoints yet".to_owned(),
                    n => format!("{n} checkpoints match"),
                };
                format!("audit trail intact: {} entries verified, {cps}", r.rows)
            } else {
                format!(
                    "AUDIT TRAIL TAMPERED ({} entries):\n  {}",
                    r.rows,
                    r.problems.join("\n  ")
                )
            }
        });
        return Ok(if r.problems.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let rows = l.audit.list(&c, Some(limit))?;
    output(json, &rows, || {
        table(
            &["ID", "WHEN", "ACTOR", "ACTION", "TARGET", "REASON"],
            &rows
                .iter()
                .map(|r| {
                    vec![
                        r.id.to_string(),
                        outpost_protocol::time::rfc3339(r.at),
                        r.actor.clone(),
                        r.action.clone(),
                        r.target.clone(),
                        r.reason.clone(),
                    ]
                })
                .collect::<Vec<_>>(),
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// `token`.
pub(super) fn token(dir: &Path, who: &str, cmd: TokenCmd) -> Result<ExitCode, CliError> {
    use crate::auth;
    let l = Ops::open(dir)?;
    let c = l.db.lock();
    match cmd {
        TokenCmd::Add {
            name,
            role,
            replace,
        } => {
            let role = role.parse().map_err(CliError::Usage)?;
            println!(
                "{}",
                auth::issue_token(&c, &l.audit, &name, role, replace, who)?
            );
        }
        TokenCmd::List { json } => {
            let rows = auth::list_tokens(&c)?;
            output(json, &rows, || {
                table(
                    &["NAME", "ROLE", "CREATED"],
                    &rows
                        .iter()
                        .map(|t| {
                            vec![
                                t.name.clone(),
                                t.role.as_str().into(),
                                outpost_protocol::time::rfc3339(t.created_at),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )
            });
        }
        TokenCmd::Revoke { name } => {
            auth::revoke_token(&c, &l.audit, &name, who)?;
            println!("token {name} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}
