//! Route handlers: models, devices, audit, events, captures and counters (deployments
//! and drift are in `super::fleet`). Each `#[utoipa::path]` is both the route and its
//! OpenAPI operation; the doc comment's first line is the summary, and the description
//! names the role (`Role: viewer`).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::schema::{
    AddDevice, AuditVerify, AuthErrors, Deleted, DevicesQuery, ErrorBody, EventsQuery, ExportQuery,
    HttpCounters, IngestCounters, LimitQuery, ModelsQuery, ProvisionedDevice, ReasonQuery,
    ServingStats, Stats, param_names,
};
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

pub(super) fn get<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
}

/// At most 32 characters of `s`, for messages (a refused value may be long).
pub(super) fn short(s: &str) -> String {
    s.chars().take(32).collect()
}

/// Refuses a parameter `T` does not document, naming the ones it does.
pub(super) fn check_params<T: IntoParams>(q: &[(String, String)]) -> Result<(), ApiError> {
    let known = param_names::<T>();
    match q.iter().find(|(k, _)| !known.contains(k)) {
        Some((k, _)) => Err(unknown_param(k, &known.join(", "))),
        None => Ok(()),
    }
}

pub(super) fn unknown_param(name: &str, known: &str) -> ApiError {
    ApiError::bad(format!(
        "unknown query parameter {:?} ({known})",
        short(name)
    ))
}

/// `NAME[:VERSION]` → name and version, the name within its cap.
pub(super) fn model_ref(s: &str) -> Result<(String, Option<u32>), ApiError> {
    // Bounded before parsing: the parser's messages quote the whole value.
    input::bounded("model", s, input::MAX_NAME + ":4294967295".len())?;
    let (m, v) = crate::export::parse_model(s).map_err(|e| ApiError::bad(e.to_string()))?;
    input::bounded("model", &m, input::MAX_NAME)?;
    Ok((m, v))
}

/// Runs blocking work (database, rollout engine) off the async workers.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

/// Runs `f` with the shared connection off the async workers ([`crate::db::Db::run`]).
pub(super) async fn db<T: Send + 'static>(
    st: &ApiState,
    f: impl FnOnce(&mut rusqlite::Connection) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    st.db.run(f).await.map_err(ApiError::internal)?
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
        e @ (RegistryError::Db(_) | RegistryError::Storage(_) | RegistryError::Signing(_)) => {
            ApiError::internal(e)
        }
    }
}

/// A JSON body of at most [`super::MAX_BODY`] bytes.
pub(super) fn parse_body<T: for<'de> Deserialize<'de>>(
    b: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let b = b.map_err(|e| ApiError(e.status(), e.body_text()))?;
    serde_json::from_slice(&b).map_err(|e| ApiError::bad(format!("invalid request body: {e}")))
}

/// List and search models.
///
/// Role: viewer. Every registered version, filtered by name and by tags and lineage
/// fields (all must match).
#[utoipa::path(get, path = "/v1/models", tag = "models", params(ModelsQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "Model versions", body = [crate::registry::ModelRecord]),
        (status = 400, description = "A malformed or unknown parameter", body = ErrorBody), AuthErrors))]
pub async fn list_models(
    State(st): State<ApiState>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    authorize(&st, &h, Role::Viewer).await?;
    let q = query_pairs(q.as_deref());
    check_params::<ModelsQuery>(&q)?;
    let mut f = ModelFilter {
        name: get(&q, "name").map(str::to_owned),
        ..Default::default()
    };
    for (k, v) in &q {
        match k.as_str() {
            "tag" => f.tags.push(input::tag_pair("tag", v)?),
            "lineage" => f.lineage.push(input::tag_pair("lineage", v)?),
            _ => {}
        }
    }
    let rows = db(&st, move |c| registry::list(c, &f).map_err(registry_err)).await?;
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

/// One model version.
///
/// Role: viewer. `version` is a number or `latest`.
#[utoipa::path(get, path = "/v1/models/{name}/{version}", tag = "models",
    params(("name" = String, Path, description = "Model name"),
        ("version" = String, Path, description = "Version number or `latest`")),
    security(("bearer" = [])),
    responses((status = 200, description = "The version", body = crate::registry::ModelRecord),
        (status = 400, description = "A malformed version", body = ErrorBody),
        (status = 404, description = "No such model or version", body = ErrorBody), AuthErrors))]
pub async fn show_model(
    State(st): State<ApiState>,
    h: HeaderMap,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    authorize(&st, &h, Role::Viewer).await?;
    input::bounded("model", &name, input::MAX_NAME)?;
    let v = version_of(&version)?;
    let r = db(&st, move |c| {
        registry::show(c, &name, v).map_err(registry_err)
    })
    .await?;
    Ok(axum::Json(r).into_response())
}

/// Delete a model version.
///
/// Role: operator. Refused (409) while a deployment or a device's desired set uses it;
/// audited with `reason`.
#[utoipa::path(delete, path = "/v1/models/{name}/{version}", tag = "models",
    params(("name" = String, Path, description = "Model name"),
        ("version" = u32, Path, description = "Version number"), ReasonQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "Deleted", body = Deleted),
        (status = 400, description = "No explicit version", body = ErrorBody),
        (status = 404, description = "No such model or version", body = ErrorBody),
        (status = 409, description = "The version is in use", body = ErrorBody), AuthErrors))]
pub async fn delete_model(
    State(st): State<ApiState>,
    h: HeaderMap,
    Path((name, version)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let actor = authorize(&st, &h, Role::Operator).await?;
    input::bounded("model", &name, input::MAX_NAME)?;
    let v =
        version_of(&version)?.ok_or_else(|| ApiError::bad("delete needs an explicit version"))?;
    let q = query_pairs(q.as_deref());
    let reason = get(&q, "reason").unwrap_or("").to_owned();
    let (audit, bundles, n) = (st.audit.clone(), st.bundles.clone(), name.clone());
    db(&st, move |c| {
        registry::delete(c, &audit, bundles.as_ref(), &n, v, &actor, &reason).map_err(registry_err)
    })
    .await?;
    Ok(axum::Json(Deleted {
        deleted: format!("{name}:{v}"),
    })
    .into_response())
}

/// List devices.
///
/// Role: viewer. With their last reported state; `tag` filters (all must match).
#[utoipa::path(get, path = "/v1/devices", tag = "devices", params(DevicesQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "Devices", body = [crate::devices::DeviceRecord]),
        (status = 400, description = "A malformed or unknown parameter", body = ErrorBody), AuthErrors))]
pub async fn list_devices(
    State(st): State<ApiState>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    authorize(&st, &h, Role::Viewer).await?;
    let q = query_pairs(q.as_deref());
    check_params::<DevicesQuery>(&q)?;
    let mut tags = Vec::new();
    for (_, v) in &q {
        tags.push(input::tag_pair("tag", v)?);
    }
    input::count("tag", tags.len(), input::MAX_TAGS)?;
    let rows = db(&st, move |c| {
        crate::devices::list(c, &tags).map_err(ApiError::internal)
    })
    .await?;
    Ok(axum::Json(rows).into_response())
}

/// One device.
///
/// Role: viewer. Its reported state (every model with its phase and versions) and the
/// bridge's desired model set for it.
#[utoipa::path(get, path = "/v1/devices/{id}", tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    security(("bearer" = [])),
    responses((status = 200, description = "The device", body = crate::fleet::DeviceView),
        (status = 404, description = "No such device", body = ErrorBody), AuthErrors))]
pub async fn show_device(
    State(st): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    use crate::devices::DeviceError;
    authorize(&st, &h, Role::Viewer).await?;
    input::bounded("device", &id, input::MAX_DEVICE_ID)?;
    let view = db(&st, move |c| {
        let device = crate::devices::show(c, &id).map_err(|e| match e {
            e @ DeviceError::NotFound(_) => ApiError::not_found(e.to_string()),
            e => ApiError::internal(e),
        })?;
        let desired = crate::fleet::desired::entries(c, &id).map_err(fleet_err)?;
        Ok(crate::fleet::DeviceView { device, desired })
    })
    .await?;
    Ok(axum::Json(view).into_response())
}

/// Take a model off a device.
///
/// Role: operator. Removes it from the device's desired set (the device gets a new
/// directive and unloads it); audited with `reason`.
#[utoipa::path(delete, path = "/v1/devices/{id}/models/{model}", tag = "devices",
    params(("id" = String, Path, description = "Device id"),
        ("model" = String, Path, description = "Model name"), ReasonQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "Which devices changed", body = crate::fleet::Removed),
        (status = 404, description = "The model is not in the device's desired set", body = ErrorBody),
        AuthErrors))]
pub async fn remove_device_model(
    State(st): State<ApiState>,
    h: HeaderMap,
    Path((id, model)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let actor = authorize(&st, &h, Role::Operator).await?;
    input::bounded("device", &id, input::MAX_DEVICE_ID)?;
    let q = query_pairs(q.as_deref());
    check_params::<ReasonQuery>(&q)?;
    let reason = get(&q, "reason").unwrap_or("").to_owned();
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

/// Provision a device.
///
/// Role: admin. Creates its credentials and configuration and returns them once.
#[utoipa::path(post, path = "/v1/devices", tag = "devices", request_body = AddDevice,
    security(("bearer" = [])),
    responses((status = 201, description = "Provisioned", body = ProvisionedDevice),
        (status = 400, description = "A malformed body", body = ErrorBody),
        (status = 409, description = "The device exists", body = ErrorBody),
        (status = 422, description = "A refused id or target", body = ErrorBody), AuthErrors))]
pub async fn add_device(
    State(st): State<ApiState>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    use crate::devices::DeviceError;
    let actor = authorize(&st, &h, Role::Admin).await?;
    let req: AddDevice = parse_body(body)?;
    // Checked as a map: a key with `=` would otherwise be split differently below.
    input::tag_map("tags", &req.tags)?;
    let tags: Vec<String> = req.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let target = req
        .target
        .unwrap_or_else(|| "aarch64-unknown-linux-gnu".into());
    let out = st.data_dir.join("provisioned").join(&req.id);
    let ops = st.ops.clone();
    let (id, url) = (req.id.clone(), st.device_broker_url.clone());
    let p = tokio::task::spawn_blocking(move || {
        ops.add_device(
            crate::ops::AddDevice {
                id: &id,
                tags: &tags,
                target: &target,
                broker_url: &url,
                out: None,
                tls: false,
                local: None,
            },
            &actor,
        )
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| match e {
        DeviceError::Input(e) => e.into(),
        DeviceError::BadId(_) | DeviceError::Reserved(_) | DeviceError::NotTlsUrl(_) => {
            ApiError::invalid(e.to_string())
        }
        DeviceError::Exists(_) => ApiError::conflict(e.to_string()),
        e => ApiError::internal(e),
    })?;
    let ca = crate::broker::tls::Ca::load_or_create(&st.data_dir).map_err(ApiError::internal)?;
    let agent_toml = std::fs::read_to_string(out.join("agent.toml")).map_err(ApiError::internal)?;
    // What the device was given: the active key and, during a rotation, the next one.
    let mut trust = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(out.join("trust")).map_err(ApiError::internal)? {
        let path = e.map_err(ApiError::internal)?.path();
        if path.extension().is_some_and(|x| x == "pub") {
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            trust.insert(
                name,
                std::fs::read_to_string(&path).map_err(ApiError::internal)?,
            );
        }
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(ProvisionedDevice {
            id: p.id,
            agent_toml,
            password: p.password,
            trust,
            client_cert: std::fs::read_to_string(out.join(crate::broker::tls::CLIENT_CERT_FILE))
                .map_err(ApiError::internal)?,
            client_key: std::fs::read_to_string(out.join(crate::broker::tls::CLIENT_KEY_FILE))
                .map_err(ApiError::internal)?,
            ca: ca.pem().to_owned(),
        }),
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

/// The audit trail.
///
/// Role: viewer. Newest first.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(LimitQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "Entries", body = [crate::audit::AuditEntry]),
        (status = 400, description = "A bad limit", body = ErrorBody), AuthErrors))]
pub async fn audit(
    State(st): State<ApiState>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    authorize(&st, &h, Role::Viewer).await?;
    let q = query_pairs(q.as_deref());
    let (audit, n) = (st.audit.clone(), u64::from(limit(&q, 100)?));
    let rows = db(&st, move |c| {
        audit.list(c, Some(n)).map_err(ApiError::internal)
    })
    .await?;
    Ok(axum::Json(rows).into_response())
}

/// Verify the audit hash chain.
///
/// Role: viewer.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    security(("bearer" = [])),
    responses((status = 200, description = "The verdict", body = AuditVerify), AuthErrors))]
pub async fn audit_verify(State(st): State<ApiState>, h: HeaderMap) -> Result<Response, ApiError> {
    authorize(&st, &h, Role::Viewer).await?;
    let audit = st.audit.clone();
    let r = db(&st, move |c| audit.verify(c).map_err(ApiError::internal)).await?;
    Ok(axum::Json(AuditVerify {
        ok: r.problems.is_empty(),
        rows: r.rows,
        problems: r.problems,
    })
    .into_response())
}

/// Recent events.
///
/// Role: viewer. Newest first, optionally of one kind.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "Events", body = [outpost_protocol::wire::Event]),
        (status = 400, description = "A bad limit or kind", body = ErrorBody), AuthErrors))]
pub async fn events(
    State(st): State<ApiState>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    authorize(&st, &h, Role::Viewer).await?;
    let q = query_pairs(q.as_deref());
    let kind = get(&q, "kind");
    if let Some(k) = kind {
        input::id("kind", k)?;
    }
    let (events, n, kind) = (st.events.clone(), limit(&q, 100)?, kind.map(str::to_owned));
    let rows = blocking(move || {
        events
            .recent(n, kind.as_deref())
            .map_err(ApiError::internal)
    })
    .await?;
    Ok(axum::Json(rows).into_response())
}

/// Export captured samples for retraining.
///
/// Role: operator. One row per capture, one column per named feature, a null `label`
/// column for ground truth, the prediction, and typed metadata — the `--baseline` CSV's
/// layout (docs/architecture.md, "Capture exports").
#[utoipa::path(get, path = "/v1/captures/export", tag = "captures", params(ExportQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "The rows, oldest first",
            content((String = "application/x-ndjson"), (String = "text/csv"),
                (String = "application/vnd.apache.parquet"))),
        (status = 400, description = "A missing model, bad time or format", body = ErrorBody),
        (status = 404, description = "The model or version was never registered", body = ErrorBody),
        AuthErrors))]
pub async fn export_captures(
    State(st): State<ApiState>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    use crate::export::{CaptureQuery, ExportError, Format, parse_time};
    authorize(&st, &h, Role::Operator).await?;
    let q = query_pairs(q.as_deref());
    check_params::<ExportQuery>(&q)?;
    let model =
        get(&q, "model").ok_or_else(|| ApiError::bad("model=NAME[:VERSION] is required"))?;
    let (model, version) = model_ref(model)?;
    let format: Format = get(&q, "format")
        .unwrap_or("jsonl")
        .parse()
        .map_err(|e: ExportError| ApiError::bad(e.to_string()))?;
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
    let export = db(&st, move |c| {
        cq.export(c).map_err(|e| match e {
            e @ (ExportError::UnknownModel(_) | ExportError::UnknownVersion { .. }) => {
                ApiError::not_found(e.to_string())
            }
            e @ ExportError::ColumnClash { .. } => ApiError::invalid(e.to_string()),
            e => ApiError::internal(e),
        })
    })
    .await?;
    let mut body = Vec::new();
    let ctype = match format {
        Format::Jsonl => {
            crate::export::write_jsonl(&export, &mut body).map_err(ApiError::internal)?;
            "application/x-ndjson"
        }
        Format::Csv => {
            crate::export::write_csv(&export, &mut body).map_err(ApiError::internal)?;
            "text/csv; charset=utf-8"
        }
        Format::Parquet => {
            crate::export::write_parquet(&export, &mut body).map_err(ApiError::internal)?;
            "application/vnd.apache.parquet"
        }
    };
    Ok(([(header::CONTENT_TYPE, ctype)], body).into_response())
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

pub(super) fn fleet_err(e: crate::fleet::FleetError) -> ApiError {
    use crate::fleet::FleetError as F;
    match e {
        F::Invalid(m) => ApiError::invalid(m),
        F::Input(e) => e.into(),
        F::NotFound(m) => ApiError::not_found(format!("{m} not found")),
        e @ (F::Conflict(_) | F::Refused(_)) => ApiError::conflict(e.to_string()),
        e => ApiError::internal(e),
    }
}

/// The running bridge's counters.
///
/// Role: viewer. Serving, ingest, broker gate and HTTP listener counters since start.
#[utoipa::path(get, path = "/v1/stats", tag = "meta",
    security(("bearer" = [])),
    responses((status = 200, description = "Counters", body = Stats),
        (status = 404, description = "Not a running bridge", body = ErrorBody), AuthErrors))]
pub async fn stats(State(st): State<ApiState>, h: HeaderMap) -> Result<Response, ApiError> {
    use std::sync::atomic::Ordering::Relaxed;
    authorize(&st, &h, Role::Viewer).await?;
    let Some((server, ingest)) = &st.counters else {
        return Err(ApiError::not_found(
            "counters are only available from a running bridge",
        ));
    };
    let serving = &server.stats;
    Ok(axum::Json(Stats {
        serving: ServingStats {
            disk_reads: serving.disk_reads.load(Relaxed),
            frames: serving.frames.load(Relaxed),
            bytes: serving.bytes.load(Relaxed),
            refused: serving.refused.load(Relaxed),
        },
        ingest: IngestCounters {
            batches: ingest.batches.load(Relaxed),
            stored: ingest.stored.load(Relaxed),
            duplicates: ingest.duplicates.load(Relaxed),
            rejected: ingest.rejected.load(Relaxed),
            wire_bytes: ingest.wire_bytes.load(Relaxed),
        },
        gate: st.gate.as_ref().map(|g| g.snapshot()),
        http: st.http.as_ref().map(|h| {
            let c = h.snapshot();
            HttpCounters {
                accepted: c.accepted,
                open: c.open,
                refused: c.refused,
                evicted: c.evicted,
                header_timeouts: c.header_timeouts,
                idle_timeouts: c.idle_timeouts,
                request_timeouts: c.request_timeouts,
            }
        }),
    })
    .into_response())
}
