//! `device`: provision, list, show, device keys.

use std::path::Path;
use std::process::ExitCode;

use super::args::DeviceCmd;
use super::{CliError, output, pairs, table};
use crate::ops::{AddDevice, Ops};

/// `device`.
pub(super) fn run(dir: &Path, who: String, cmd: DeviceCmd) -> Result<ExitCode, CliError> {
    let l = Ops::open(dir)?;
    match cmd {
        DeviceCmd::Add {
            id,
            tags,
            target,
            out,
            broker_url,
            tls,
            local,
            api_port,
            key,
            json,
        } => {
            let l = l.with_key_file(key);
            let target = target.unwrap_or_else(|| {
                if local {
                    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
                } else {
                    "aarch64-unknown-linux-gnu".into()
                }
            });
            let url = match broker_url {
                Some(u) => u,
                None => l.default_broker_url(tls, local),
            };
            let p = l.add_device(
                AddDevice {
                    id: &id,
                    tags: &tags,
                    target: &target,
                    broker_url: &url,
                    out,
                    tls,
                    local: local.then_some(api_port),
                },
                &who,
            )?;
            let config = p.dir.join("agent.toml");
            output(
                json,
                &serde_json::json!({"id": p.id, "dir": p.dir, "config": config, "broker": url}),
                || {
                    if local {
                        format!(
                            "provisioned {} to run on this machine (broker {url}); start it with:\n  outpost-agent run --config {}",
                            p.id,
                            config.display()
                        )
                    } else {
                        format!(
                            "provisioned {}: copy {} to the device (agent.toml, password, trust/, client.pem, client.key, ca.pem)",
                            p.id,
                            p.dir.display()
                        )
                    }
                },
            );
        }
        DeviceCmd::List { tags, json } => {
            let rows = crate::devices::list(&l.db.lock(), &pairs(&tags, "tag")?)?;
            output(json, &rows, || {
                table(
                    &["ID", "ONLINE", "TARGET", "MODELS", "HEALTH", "TAGS"],
                    &rows
                        .iter()
                        .map(|d| {
                            vec![
                                d.id.clone(),
                                d.online.to_string(),
                                d.target.clone(),
                                d.state.as_ref().map(super::models_cell).unwrap_or_default(),
                                d.state
                                    .as_ref()
                                    .map(|s| format!("{:?}", s.health).to_lowercase())
                                    .unwrap_or_default(),
                                d.tags
                                    .iter()
                                    .map(|(k, v)| format!("{k}={v}"))
                                    .collect::<Vec<_>>()
                                    .join(","),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )
            });
        }
        DeviceCmd::Show { id, json } => {
            use crate::telemetry;
            let c = l.db.lock();
            let d = super::DeviceShow {
                view: crate::fleet::DeviceView {
                    device: crate::devices::show(&c, &id)?,
                    desired: crate::fleet::desired::entries(&c, &id)?,
                },
                telemetry: telemetry::latest(&c, &id)?,
                events: telemetry::recent_events(&c, &id, 10)?,
            };
            drop(c);
            output(json, &d, || super::device_show_text(&d));
        }
        DeviceCmd::RotateKey { id, out } => {
            let key = crate::devices::rotate_key(&l.db.lock(), &l.audit, &id, &out, &who)?;
            println!(
                "added key {key} for {id}: install {} on the device (key_file), restart its agent, then retire the old key",
                out.join("device.key").display()
            );
        }
        DeviceCmd::RetireKey { id, key_id } => {
            crate::devices::retire_key(&l.db.lock(), &l.audit, &id, &key_id, &who)?;
            println!("retired key {key_id} of {id}");
        }
        DeviceCmd::Keys { id, json } => {
            crate::devices::show(&l.db.lock(), &id)?;
            let keys = crate::device_auth::list_keys(&l.db.lock(), &id)
                .map_err(|e| CliError::usage(e.to_string()))?;
            output(json, &keys, || {
                table(
                    &["KEY", "ADDED", "RETIRED"],
                    &keys
                        .iter()
                        .map(|(k, a, r)| {
                            vec![
                                k.clone(),
                                outpost_protocol::time::rfc3339(*a),
                                r.map(outpost_protocol::time::rfc3339)
                                    .unwrap_or_else(|| "active".into()),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
