//! `serve` and `bundle pack`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::args::{PackArgs, ServeArgs};
use super::{CliError, output};
use crate::packaging::{self, PackInput};
use crate::server::{BrokerChoice, ServeConfig};

/// `serve`: runs until Ctrl-C, then shuts down in order (ingest drains first).
pub(super) fn serve(data_dir: PathBuf, a: ServeArgs) -> Result<ExitCode, CliError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,rumqttd=warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut cfg = ServeConfig::new(data_dir);
    cfg.broker = match a.broker {
        None => BrokerChoice::Embedded {
            listen: a.mqtt_listen,
            auth: !a.no_broker_auth,
        },
        Some(url) => {
            let rest = url.strip_prefix("mqtt://").ok_or_else(|| {
                CliError::usage(format!("--broker {url:?} must be mqtt://host:port"))
            })?;
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| CliError::usage(format!("--broker {url:?} needs a port")))?;
            let port = port
                .trim_end_matches('/')
                .parse()
                .map_err(|_| CliError::usage(format!("bad port in --broker {url:?}")))?;
            let credentials = match (a.broker_user, a.broker_password_file) {
                (Some(u), Some(f)) => Some((u, std::fs::read_to_string(&f)?.trim_end().to_owned())),
                (Some(u), None) => Some((u, String::new())),
                _ => None,
            };
            BrokerChoice::External {
                host: host.into(),
                port,
                credentials,
            }
        }
    };
    cfg.http = if a.http.is_empty() {
        None
    } else {
        Some(
            a.http
                .parse()
                .map_err(|_| CliError::usage(format!("--http {:?} is not host:port", a.http)))?,
        )
    };
    cfg.gate.tls_listen = a.mqtt_tls_listen;
    cfg.gate.tls_names = a.tls_names;
    cfg.gate.max_packet_bytes = a.max_packet_bytes;
    cfg.gate.max_connections = a.max_connections;
    cfg.gate
        .validate()
        .map_err(|e| CliError::usage(e.to_string()))?;
    cfg.webhooks = a.webhooks;
    cfg.http_limits.max_connections = a.http_max_connections;
    cfg.device_broker_url = a.device_broker_url;
    cfg.chunk_rate = a.chunk_rate;
    cfg.device_auth = !a.no_device_auth;
    cfg.audit_checkpoint = std::time::Duration::from_secs(a.audit_checkpoint_secs);
    cfg.key_file = a.key;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let bridge = crate::server::start(cfg).await?;
        eprintln!(
            "outpost-bridge serving: MQTT {}:{}, API {}",
            bridge.broker.0,
            bridge.broker.1,
            bridge
                .http_addr
                .map(|a| format!("http://{a} (see /openapi.json)"))
                .unwrap_or_else(|| "off".into())
        );
        let _ = tokio::signal::ctrl_c().await;
        bridge.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// `bundle pack`: a signed bundle from a model file, without a data directory.
pub(super) fn pack(dir: &std::path::Path, a: PackArgs) -> Result<ExitCode, CliError> {
    let key = match a.key {
        Some(k) => k,
        None => {
            let l = crate::ops::Ops::open(dir)?;
            l.keyring()?;
            crate::keys::ring::active_path(&l.db.lock())?
        }
    };
    let input = PackInput {
        name: a.name,
        version: a.version,
        chunk_size: a.bundle.chunk_size,
        memory_bytes: a.bundle.memory_bytes,
        created_by: a
            .created_by
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "unknown".into()),
        created_at: crate::db::now(),
        reason: a.bundle.reason,
        source_commit: a.bundle.source_commit,
        dataset_id: a.bundle.dataset_id,
        dataset_sha256: a.bundle.dataset_sha256,
        tags: a.tags,
        extra_files: Vec::new(),
    };
    let p = packaging::pack_files(&a.model, a.spec.as_deref(), &key, &a.out, input).map_err(
        |source| CliError::Pack {
            model: a.model.clone(),
            source,
        },
    )?;
    let m = &p.bundle.manifest;
    let v = serde_json::json!({
        "bundle": a.out, "digest": p.bundle.digest.to_hex(), "model": m.model.name,
        "version": m.model.version, "size": p.bundle.bytes.len(),
        "chunks": m.payload.chunks.len(), "self_test_samples": p.profile.self_test_samples,
        "self_test_max_abs_diff": p.profile.max_abs_diff, "contract": m.contract,
    });
    output(a.json, &v, || {
        format!(
            "packed {} v{} -> {} ({} bytes, {} chunks, digest {}); self-test {}/{} passed",
            m.model.name,
            m.model.version,
            a.out.display(),
            p.bundle.bytes.len(),
            m.payload.chunks.len(),
            p.bundle.digest,
            p.profile.self_test_samples,
            p.profile.self_test_samples
        )
    });
    Ok(ExitCode::SUCCESS)
}
