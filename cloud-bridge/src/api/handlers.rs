//! Route handlers.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiState, authorize};
use crate::auth::Role;
use crate::registry::{self, ModelFilter, RegistryError};

/// `a=1&b=x%3Dy` → pairs (percent- and plus-decoded).
pub fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    match std::str::from_utf8(&b[i + 1..i + 3])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        Some(v) => {
                            out.push(v);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    raw.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

fn get<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
}

fn kv(s: &str, what: &str) -> Result<(String, String), ApiError> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| ApiError::bad(format!("{what} {s:?} must be k=v")))
}

fn registry_err(e: RegistryError) -> ApiError {
    match e {
        RegistryError::NotFound(m) => ApiError::not_found(format!("model {m} not found")),
        e @ RegistryError::InUse { .. } => ApiError::conflict(e.to_string()),
        e => ApiError::internal(e),
    }
}

fn parse_body<T: for<'de> Deserialize<'de>>(b: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(b).map_err(|e| ApiError::bad(format!("invalid request body: {e}")))
}

pub async fn list_models(
    State(st): State<ApiState>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    authorize(&st, &h, Role::Viewer)?;
    let q = query_pairs(q.as_deref());
    let mut f = ModelFilter {
        name: get(&q, "name").map(str::to_owned),
        ..Default::default()
    };
    for (k, v) in &q {
        match k.as_str() {
            "tag" => f.tags.push(kv(v, "tag")?),
            "lineage" => f.lineage.push(kv(v, "lineage")?),
            "name" => {}
            other => {
                return Err(ApiError::bad(format!(
                    "unknown query parameter {other:?} (name, tag, lineage)"
                )));
            }
        }
    }
    let rows = registry::list(&st.db.lock(), &f).map_err(|e| match e {
        RegistryError::NotFound(m) => ApiError::bad(format!("unknown {m}")),
        e => ApiError::internal(e),
    })?;
    Ok(axum::Json(rows).into_response())
}

fn version_of(v: &str) -> Result<Option<u32>, ApiError> {
    if v == "latest" {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| ApiError::bad(format!("version {v:?} is not a number or \"latest\"")))
}

pub async fn show_model(
    State(st): State<ApiState>,
    h: HeaderMap,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    authorize(&st, &h, Role::Viewer)?;
    let r = registry::show(&st.db.lock(), &name, version_of(&version)?).map_err(registry_err)?;
    Ok(axum::Json(r).into_response())
}

pub async fn delete_model(
    State(st): State<ApiState>,
    h: HeaderMap,
    Path((name, version)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let actor = authorize(&st, &h, Role::Operator)?;
    let v =
        version_of(&version)?.ok_or_else(|| ApiError::bad("delete needs an explicit version"))?;
    let q = query_pairs(q.as_deref());
    let reason = get(&q, "reason").unwrap_or("").to_owned();
    let mut c = st.db.lock();
    registry::delete(
        &mut c,
        &st.audit,
        st.bundles.as_ref(),
        &name,
        v,
        &actor,
        &reason,
    )
    .map_err(registry_err)?;
    Ok(axum::Json(json!({"deleted": format!("{name}:{v}")})).into_response())
}

pub async fn list_devices(
    State(st): State<ApiState>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    authorize(&st, &h, Role::Viewer)?;
    let mut tags = Vec::new();
    for (k, v) in query_pairs(q.as_deref()) {
        match k.as_str() {
            "tag" => tags.push(kv(&v, "tag")?),
            other => {
                return Err(ApiError::bad(format!(
                    "unknown query parameter {other:?} (tag)"
                )));
            }
        }
    }
    let rows = crate::devices::list(&st.db.lock(), &tags).map_err(ApiError::internal)?;
    Ok(axum::Json(rows).into_response())
}

pub async fn show_device(
    State(st): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&st, &h, Role::Viewer)?;
    let d =
        crate::devices::show(&st.db.lock(), &id).map_err(|e| ApiError::not_found(e.to_string()))?;
    Ok(axum::Json(d).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddDevice {
    id: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    target: Option<String>,
}

pub async fn add_device(
    State(st): State<ApiState>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    use crate::devices::DeviceError;
    let actor = authorize(&st, &h, Role::Admin)?;
    let req: AddDevice = parse_body(&body)?;
    let tags: Vec<String> = req.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let target = req
        .target
        .unwrap_or_else(|| "aarch64-unknown-linux-gnu".into());
    let out = st.data_dir.join("provisioned").join(&req.id);
    let ca = crate::broker::tls::Ca::load_or_create(&st.data_dir).map_err(ApiError::internal)?;
    let c = st.db.lock();
    let p = crate::devices::add_with(
        &c,
        &st.audit,
        &req.id,
        &tags,
        &target,
        &st.device_broker_url,
        &st.public_key,
        &out,
        &actor,
        crate::devices::CertOptions {
            ca: Some(&ca),
            use_tls: false,
        },
    )
    .map_err(|e| match e {
        DeviceError::BadId(_) | DeviceError::BadTag(_) | DeviceError::Reserved(_) => {
            ApiError::invalid(e.to_string())
        }
        DeviceError::Exists(_) => ApiError::conflict(e.to_string()),
        e => ApiError::internal(e),
    })?;
    let agent_toml = std::fs::read_to_string(out.join("agent.toml")).map_err(ApiError::internal)?;
    let trust = st.public_key.to_file_contents();
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "id": p.id,
            "agent_toml": agent_toml,
            "password": p.password,
            "trust": { format!("{}.pub", st.public_key.id()): trust },
            "client_cert": std::fs::read_to_string(out.join(crate::broker::tls::CLIENT_CERT_FILE)).map_err(ApiError::internal)?,
            "client_key": std::fs::read_to_string(out.join(crate::broker::tls::CLIENT_KEY_FILE)).map_err(ApiError::internal)?,
            "ca": ca.pem(),
        })),
    )
        .into_response())
}

fn limit(q: &[(String, String)], default: u64) -> Result<u64, ApiError> {
    match get(q, "limit") {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::bad(format!("limit {v:?} is not a number"))),
    }
}

pub async fn audit(
    State(st): State<ApiState>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    authorize(&st, &h, Role::Viewer)?;
    let q = query_pairs(q.as_deref());
    let rows = st
        .audit
        .list(&st.db.lock(), Some(limit(&q, 100)?))
        .map_err(ApiError::internal)?;
    Ok(axum::Json(rows).into_response())
}

pub async fn audit_verify(State(st): State<ApiState>, h: HeaderMap) -> Result<Response, ApiError> {
    authorize(&st, &h, Role::Viewer)?;
    let r = st.audit.verify(&st.db.lock()).map_err(ApiError::internal)?;
    Ok(
        axum::Json(json!({"ok": r.problems.is_empty(), "rows": r.rows, "problems": r.problems}))
            .into_response(),
    )
}

pub async fn events(
    State(st): State<ApiState>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    authorize(&st, &h, Role::Viewer)?;
    let q = query_pairs(q.as_deref());
    let rows = st
        .events
        .recent(limit(&q, 100)? as u32, get(&q, "kind"))
        .map_err(ApiError::internal)?;
    Ok(axum::Json(rows).into_response())
}

pub async fn export_captures(
    State(st): State<ApiState>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    use crate::export::{CaptureQuery, parse_model, parse_time, write_jsonl};
    authorize(&st, &h, Role::Operator)?;
    let q = query_pairs(q.as_deref());
    let model =
        get(&q, "model").ok_or_else(|| ApiError::bad("model=NAME[:VERSION] is required"))?;
    let (model, version) = parse_model(model).map_err(|e| ApiError::bad(e.to_string()))?;
    let now = crate::db::now();
    let t = |k: &str| {
        get(&q, k)
            .map(|v| parse_time(v, now))
            .transpose()
            .map_err(|e| ApiError::bad(e.to_string()))
    };
    let cq = CaptureQuery {
        model,
        version,
        since_ms: t("since")?,
        until_ms: t("until")?,
        devices: q
            .iter()
            .filter(|(k, _)| k == "device")
            .map(|(_, v)| v.clone())
            .collect(),
    };
    let rows = cq.rows(&st.db.lock()).map_err(ApiError::internal)?;
    let mut body = Vec::new();
    write_jsonl(&rows, &mut body).map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_decoding() {
        let q = super::query_pairs(Some("tag=site%3Dplant-7&name=a+b&x"));
        assert_eq!(q[0], ("tag".into(), "site=plant-7".into()));
        assert_eq!(q[1], ("name".into(), "a b".into()));
        assert_eq!(q[2], ("x".into(), String::new()));
        assert_eq!(super::query_pairs(Some("a=%zz&b=%4"))[0].1, "%zz");
    }
}

fn fleet_err(e: crate::fleet::FleetError) -> ApiError {
    use crate::fleet::FleetError as F;
    match e {
        F::Invalid(m) => ApiError::invalid(m),
        F::NotFound(m) => ApiError::not_found(format!("{m} not found")),
        e @ (F::Conflict(_) | F::Refused(_)) => ApiError::conflict(e.to_string()),
        e => ApiError::internal(e),
    }
}

pub async fn list_deployments(
    State(st): State<ApiState>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    authorize(&st, &h, Role::Viewer)?;
    let q = query_pairs(q.as_deref());
    let mut f = crate::fleet::DeploymentFilter::default();
    for (k, v) in &q {
        match k.as_str() {
            "model" => f.model = Some(v.clone()),
            "version" => {
                f.version = Some(
                    v.parse()
                        .map_err(|_| ApiError::bad(format!("version {v:?} is not a number")))?,
                )
            }
            "state" => f.state = Some(v.clone()),
            "device" => f.device = Some(v.clone()),
            other => {
                return Err(ApiError::bad(format!(
                    "unknown query parameter {other:?} (model, version, state, device)"
                )));
            }
        }
    }
    Ok(axum::Json(st.fleet.list(&f).map_err(fleet_err)?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    model: String,
    #[serde(default)]
    version: Option<u32>,
    #[serde(default)]
    devices: Vec<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    strategy: Option<crate::fleet::StrategySpec>,
    #[serde(default)]
    reason: String,
}

pub async fn create_deployment(
    State(st): State<ApiState>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let actor = authorize(&st, &h, Role::Operator)?;
    let b: CreateBody = parse_body(&body)?;
    let strategy = b.strategy.unwrap_or_default().build().map_err(fleet_err)?;
    let req = crate::fleet::CreateDeployment {
        model: b.model,
        version: b.version,
        selector: crate::fleet::Selector {
            ids: b.devices,
            tags: b.tags.into_iter().collect(),
        },
        strategy,
        actor,
        reason: b.reason,
    };
    let fleet = st.fleet.clone();
    let rec = tokio::task::spawn_blocking(move || fleet.create(req))
        .await
        .map_err(ApiError::internal)?
        .map_err(fleet_err)?;
    Ok((StatusCode::CREATED, axum::Json(rec)).into_response())
}

pub async fn show_deployment(
    State(st): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&st, &h, Role::Viewer)?;
    Ok(axum::Json(st.fleet.show(&id).map_err(fleet_err)?).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    #[serde(default)]
    reason: String,
}

pub async fn deployment_action(
    State(st): State<ApiState>,
    h: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    use crate::fleet::machine::Command;
    let actor = authorize(&st, &h, Role::Operator)?;
    let b: ActionBody = if body.is_empty() {
        ActionBody::default()
    } else {
        parse_body(&body)?
    };
    let cmd = match action.as_str() {
        "pause" => Command::Pause(b.reason),
        "resume" => Command::Resume,
        "abort" => Command::Abort(b.reason),
        "rollback" => Command::Rollback(b.reason),
        other => {
            return Err(ApiError::not_found(format!(
                "no action {other:?}: pause, resume, abort, rollback"
            )));
        }
    };
    let fleet = st.fleet.clone();
    let rec = tokio::task::spawn_blocking(move || fleet.command(&id, cmd, &actor))
        .await
        .map_err(ApiError::internal)?
        .map_err(fleet_err)?;
    Ok(axum::Json(rec).into_response())
}

pub async fn drift(
    State(st): State<ApiState>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    authorize(&st, &h, Role::Viewer)?;
    let mut f = crate::drift::DriftFilter::default();
    for (k, v) in query_pairs(q.as_deref()) {
        match k.as_str() {
            "model" => {
                let (m, ver) =
                    crate::export::parse_model(&v).map_err(|e| ApiError::bad(e.to_string()))?;
                f.model = Some(m);
                f.version = ver;
            }
            "deployment" => f.deployment = Some(v),
            "group_by" => f.group_by = Some(v),
            other => {
                return Err(ApiError::bad(format!(
                    "unknown query parameter {other:?} (model, deployment, group_by)"
                )));
            }
        }
    }
    let groups = crate::drift::fleet(&st.db.lock(), &f, crate::db::now_ms(), 120_000).map_err(
        |e| match e {
            rusqlite::Error::QueryReturnedNoRows => ApiError::not_found("no such deployment"),
            e => ApiError::internal(e),
        },
    )?;
    Ok(axum::Json(groups).into_response())
}

pub async fn stats(State(st): State<ApiState>, h: HeaderMap) -> Result<Response, ApiError> {
    use std::sync::atomic::Ordering::Relaxed;
    authorize(&st, &h, Role::Viewer)?;
    let Some((server, ingest)) = &st.counters else {
        return Err(ApiError::not_found(
            "counters are only available from a running bridge",
        ));
    };
    Ok(axum::Json(json!({
        "serving": {
            "disk_reads": server.stats.disk_reads.load(Relaxed),
            "frames": server.stats.frames.load(Relaxed),
            "bytes": server.stats.bytes.load(Relaxed),
            "refused": server.stats.refused.load(Relaxed),
        },
        "ingest": {
            "batches": ingest.batches.load(Relaxed),
            "stored": ingest.stored.load(Relaxed),
            "duplicates": ingest.duplicates.load(Relaxed),
            "rejected": ingest.rejected.load(Relaxed),
            "wire_bytes": ingest.wire_bytes.load(Relaxed),
        },
        "gate": st.gate.as_ref().map(|g| g.snapshot()),
    }))
    .into_response())
}
