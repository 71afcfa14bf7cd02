//! Route handlers.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiState, authorize};
use crate::auth::Role;
use crate::input;
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

/// At most 32 characters of `s`, for messages (a refused value may be long).
fn short(s: &str) -> String {
    s.chars().take(32).collect()
}

fn unknown_param(name: &str, known: &str) -> ApiError {
    ApiError::bad(format!(
        "unknown query parameter {:?} ({known})",
        short(name)
    ))
}

/// `NAME[:VERSION]` → name and version, the name within its cap.
fn model_ref(s: &str) -> Result<(String, Option<u32>), ApiError> {
    // Bounded before parsing: the parser's messages quote the whole value.
    input::bounded("model", s, input::MAX_NAME + ":4294967295".len())?;
    let (m, v) = crate::export::parse_model(s).map_err(|e| ApiError::bad(e.to_string()))?;
    input::bounded("model", &m, input::MAX_NAME)?;
    Ok((m, v))
}

fn registry_err(e: RegistryError) -> ApiError {
    match e {
        RegistryError::NotFound(m) => ApiError::not_found(format!("model {m} not found")),
        RegistryError::Input(e) => e.into(),
        e @ RegistryError::InUse { .. } => ApiError::conflict(e.to_string()),
        e @ (RegistryError::NoModel
        | RegistryError::Refused(_)
        | RegistryError::Pack(_)
        | RegistryError::PacketLimit { .. }) => ApiError::invalid(e.to_string()),
        e @ (RegistryError::Db(_) | RegistryError::Storage(_)) => ApiError::internal(e),
    }
}

/// A JSON body of at most [`super::MAX_BODY`] bytes.
fn parse_body<T: for<'de> Deserialize<'de>>(
    b: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let b = b.map_err(|e| ApiError(e.status(), e.body_text()))?;
    serde_json::from_slice(&b).map_err(|e| ApiError::bad(format!("invalid request body: {e}")))
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
            "tag" => f.tags.push(input::tag_pair("tag", v)?),
            "lineage" => f.lineage.push(input::tag_pair("lineage", v)?),
            "name" => {}
            other => {
                return Err(unknown_param(other, "name, tag, lineage"));
            }
        }
    }
    let rows = registry::list(&st.db.lock(), &f).map_err(registry_err)?;
    Ok(axum::Json(rows).into_response())
}

fn version_of(v: &str) -> Result<Option<u32>, ApiError> {
    if v == "latest" {
        return Ok(None);
    }
    v.parse().map(Some).map_err(|_| {
        ApiError::bad(format!(
            "version {:?} is not a number or \"latest\"",
            short(v)
        ))
    })
}

pub async fn show_model(
    State(st): State<ApiState>,
    h: HeaderMap,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    authorize(&st, &h, Role::Viewer)?;
    input::bounded("model", &name, input::MAX_NAME)?;
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
    input::bounded("model", &name, input::MAX_NAME)?;
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
            "tag" => tags.push(input::tag_pair("tag", &v)?),
            other => {
                return Err(unknown_param(other, "tag"));
            }
        }
    }
    input::count("tag", tags.len(), input::MAX_TAGS)?;
    let rows = crate::devices::list(&st.db.lock(), &tags).map_err(ApiError::internal)?;
    Ok(axum::Json(rows).into_response())
}

pub async fn show_device(
    State(st): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    use crate::devices::DeviceError;
    authorize(&st, &h, Role::Viewer)?;
    input::bounded("device", &id, input::MAX_DEVICE_ID)?;
    let c = st.db.lock();
    let d = crate::devices::show(&c, &id).map_err(|e| match e {
        e @ DeviceError::NotFound(_) => ApiError::not_found(e.to_string()),
        e => ApiError::internal(e),
    })?;
    let desired = crate::fleet::desired::entries(&c, &id).map_err(fleet_err)?;
    Ok(axum::Json(crate::fleet::DeviceView { device: d, desired }).into_response())
}

/// `DELETE /v1/devices/{id}/models/{model}`: take a model off a device.
pub async fn remove_device_model(
    State(st): State<ApiState>,
    h: HeaderMap,
    Path((id, model)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let actor = authorize(&st, &h, Role::Operator)?;
    input::bounded("device", &id, input::MAX_DEVICE_ID)?;
    let mut reason = String::new();
    for (k, v) in query_pairs(q.as_deref()) {
        match k.as_str() {
            "reason" => reason = v,
            other => return Err(unknown_param(other, "reason")),
        }
    }
    let req = crate::fleet::RemoveModel {
        model: model.clone(),
        selector: crate::fleet::Selector {
            ids: vec![id.clone()],
            tags: Vec::new(),
        },
        actor,
        reason,
    };
    let fleet = st.fleet.clone();
    let r = tokio::task::spawn_blocking(move || fleet.remove_model(req))
        .await
        .map_err(ApiError::internal)?
        .map_err(fleet_err)?;
    if r.devices.is_empty() {
        return Err(ApiError::not_found(format!(
            "model {} is not in device {id}'s desired set",
            short(&model)
        )));
    }
    Ok(axum::Json(r).into_response())
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
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    use crate::devices::DeviceError;
    let actor = authorize(&st, &h, Role::Admin)?;
    let req: AddDevice = parse_body(body)?;
    // Checked as a map: a key with `=` would otherwise be split differently below.
    input::tag_map("tags", &req.tags)?;
    let tags: Vec<String> = req.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let target = req
        .target
        .unwrap_or_else(|| "aarch64-unknown-linux-gnu".into());
    let out = st.data_dir.join("provisioned").join(&req.id);
    let ca = crate::broker::tls::Ca::load_or_create(&st.data_dir).map_err(ApiError::internal)?;
    let c = st.db.lock();
    let trust_keys = st
        .keys
        .signer(&c)
        .map_err(ApiError::internal)?
        .device_trust();
    let p = crate::devices::add_with(
        &c,
        &st.audit,
        &req.id,
        &tags,
        &target,
        &st.device_broker_url,
        &trust_keys,
        &out,
        &actor,
        crate::devices::CertOptions {
            ca: Some(&ca),
            use_tls: false,
        },
    )
    .map_err(|e| match e {
        DeviceError::Input(e) => e.into(),
        DeviceError::BadId(_) | DeviceError::Reserved(_) | DeviceError::NotTlsUrl(_) => {
            ApiError::invalid(e.to_string())
        }
        DeviceError::Exists(_) => ApiError::conflict(e.to_string()),
        e => ApiError::internal(e),
    })?;
    let agent_toml = std::fs::read_to_string(out.join("agent.toml")).map_err(ApiError::internal)?;
    let trust: serde_json::Map<String, serde_json::Value> = trust_keys
        .iter()
        .map(|k| (format!("{}.pub", k.id()), k.to_file_contents().into()))
        .collect();
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "id": p.id,
            "agent_toml": agent_toml,
            "password": p.password,
            "trust": trust,
            "client_cert": std::fs::read_to_string(out.join(crate::broker::tls::CLIENT_CERT_FILE)).map_err(ApiError::internal)?,
            "client_key": std::fs::read_to_string(out.join(crate::broker::tls::CLIENT_KEY_FILE)).map_err(ApiError::internal)?,
            "ca": ca.pem(),
        })),
    )
        .into_response())
}

/// Most rows a listing returns.
const MAX_LIMIT: u32 = 10_000;

fn limit(q: &[(String, String)], default: u32) -> Result<u32, ApiError> {
    match get(q, "limit") {
        None => Ok(default),
        Some(v) => v
            .parse()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad(format!(
                    "limit {:?} is not a number within 1..={MAX_LIMIT}",
                    short(v)
                ))
            }),
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
        .list(&st.db.lock(), Some(u64::from(limit(&q, 100)?)))
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
    let kind = get(&q, "kind");
    if let Some(k) = kind {
        input::id("kind", k)?;
    }
    let rows = st
        .events
        .recent(limit(&q, 100)?, kind)
        .map_err(ApiError::internal)?;
    Ok(axum::Json(rows).into_response())
}

pub async fn export_captures(
    State(st): State<ApiState>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    use crate::export::{CaptureQuery, parse_time, write_jsonl};
    authorize(&st, &h, Role::Operator)?;
    let q = query_pairs(q.as_deref());
    let model =
        get(&q, "model").ok_or_else(|| ApiError::bad("model=NAME[:VERSION] is required"))?;
    let (model, version) = model_ref(model)?;
    let now = crate::db::now();
    let t = |k: &'static str| {
        get(&q, k)
            .map(|v| input::id(k, v).map_err(ApiError::from).map(|()| v))
            .transpose()?
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
            .map(|(_, v)| input::bounded("device", v, input::MAX_DEVICE_ID).map(|()| v.clone()))
            .collect::<Result<_, _>>()?,
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
        F::Input(e) => e.into(),
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
            "model" => {
                input::bounded("model", v, input::MAX_NAME)?;
                f.model = Some(v.clone());
            }
            "version" => {
                f.version = Some(v.parse().map_err(|_| {
                    ApiError::bad(format!("version {:?} is not a number", short(v)))
                })?)
            }
            "state" => {
                input::id("state", v)?;
                f.state = Some(v.clone());
            }
            "device" => {
                input::bounded("device", v, input::MAX_DEVICE_ID)?;
                f.device = Some(v.clone());
            }
            other => {
                return Err(unknown_param(other, "model, version, state, device"));
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
    /// Roll out without the canary gates (needs a reason; audited).
    #[serde(default)]
    skip_gates: bool,
}

pub async fn create_deployment(
    State(st): State<ApiState>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let actor = authorize(&st, &h, Role::Operator)?;
    let b: CreateBody = parse_body(body)?;
    input::tag_map("tags", &b.tags)?;
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
        skip_gates: b.skip_gates,
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
    input::id("deployment", &id)?;
    Ok(axum::Json(st.fleet.show(&id).map_err(fleet_err)?).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    #[serde(default)]
    reason: String,
    /// `rollback` only: send every device to this version.
    #[serde(default)]
    to: Option<u32>,
}

pub async fn deployment_action(
    State(st): State<ApiState>,
    h: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    use crate::fleet::machine::Command;
    let actor = authorize(&st, &h, Role::Operator)?;
    input::id("deployment", &id)?;
    let b: ActionBody = match body {
        Ok(b) if b.is_empty() => ActionBody::default(),
        body => parse_body(body)?,
    };
    if b.to.is_some() && action != "rollback" {
        return Err(ApiError::bad("`to` applies to rollback only"));
    }
    let cmd = match action.as_str() {
        "pause" => Command::Pause(b.reason),
        "resume" => Command::Resume,
        "abort" => Command::Abort(b.reason),
        "rollback" => {
            let req = crate::fleet::RollbackRequest {
                id,
                to: b.to,
                actor,
                reason: b.reason,
            };
            let fleet = st.fleet.clone();
            let rec = tokio::task::spawn_blocking(move || fleet.rollback(req))
                .await
                .map_err(ApiError::internal)?
                .map_err(fleet_err)?;
            return Ok(axum::Json(rec).into_response());
        }
        other => {
            return Err(ApiError::not_found(format!(
                "no action {:?}: pause, resume, abort, rollback",
                short(other)
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
                let (m, ver) = model_ref(&v)?;
                f.model = Some(m);
                f.version = ver;
            }
            "deployment" => {
                input::id("deployment", &v)?;
                f.deployment = Some(v);
            }
            "group_by" => {
                input::id("group_by", &v)?;
                f.group_by = Some(v);
            }
            other => {
                return Err(unknown_param(other, "model, deployment, group_by"));
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
        "http": st.http.as_ref().map(|h| {
            let c = h.snapshot();
            json!({
                "accepted": c.accepted,
                "open": c.open,
                "refused": c.refused,
                "evicted": c.evicted,
                "header_timeouts": c.header_timeouts,
                "idle_timeouts": c.idle_timeouts,
                "request_timeouts": c.request_timeouts,
            })
        }),
    }))
    .into_response())
}
