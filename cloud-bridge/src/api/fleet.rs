//! Deployment and drift handlers (see `super::handlers` for the conventions).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::handlers::{
    blocking, check_params, db, fleet_err, model_ref, parse_body, query_pairs, short,
};
use super::schema::{ActionBody, AuthErrors, CreateBody, DriftQuery, ErrorBody};
use super::{ApiError, ApiState, authorize};
use crate::auth::Role;
use crate::fleet::{DeploymentFilter, DeploymentRecord};
use crate::input;

/// List and search deployments.
///
/// Role: viewer. Newest first.
#[utoipa::path(get, path = "/v1/deployments", tag = "deployments", params(DeploymentFilter),
    security(("bearer" = [])),
    responses((status = 200, description = "Deployments", body = [DeploymentRecord]),
        (status = 400, description = "A malformed or unknown parameter", body = ErrorBody), AuthErrors))]
pub async fn list_deployments(
    State(st): State<ApiState>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    authorize(&st, &h, Role::Viewer).await?;
    // The same type `deploy list` parses its flags into.
    let f: DeploymentFilter = axum::extract::Query::try_from_uri(
        &format!("/?{}", q.unwrap_or_default())
            .parse()
            .map_err(|_| ApiError::bad("malformed query string"))?,
    )
    .map_err(|e| ApiError::bad(e.body_text()))?
    .0;
    f.check()?;
    let fleet = st.fleet.clone();
    let rows = blocking(move || fleet.list(&f).map_err(fleet_err)).await?;
    Ok(axum::Json(rows).into_response())
}

/// Create a deployment.
///
/// Role: operator. Rolls the model version out to the selected devices in waves, with
/// canary gates unless `skip_gates` (audited).
#[utoipa::path(post, path = "/v1/deployments", tag = "deployments", request_body = CreateBody,
    security(("bearer" = [])),
    responses((status = 201, description = "Created", body = DeploymentRecord),
        (status = 400, description = "A malformed body", body = ErrorBody),
        (status = 404, description = "No such model, version or device", body = ErrorBody),
        (status = 409, description = "Conflicts with a running deployment", body = ErrorBody),
        (status = 422, description = "A refused strategy or selector", body = ErrorBody), AuthErrors))]
pub async fn create_deployment(
    State(st): State<ApiState>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let actor = authorize(&st, &h, Role::Operator).await?;
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

/// One deployment.
///
/// Role: viewer. With per-device wave and status.
#[utoipa::path(get, path = "/v1/deployments/{id}", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id")),
    security(("bearer" = [])),
    responses((status = 200, description = "The deployment", body = DeploymentRecord),
        (status = 404, description = "No such deployment", body = ErrorBody), AuthErrors))]
pub async fn show_deployment(
    State(st): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&st, &h, Role::Viewer).await?;
    input::id("deployment", &id)?;
    let fleet = st.fleet.clone();
    let rec = blocking(move || fleet.show(&id).map_err(fleet_err)).await?;
    Ok(axum::Json(rec).into_response())
}

/// Pause, resume, abort or roll back a deployment.
///
/// Role: operator. `action` is `pause`, `resume`, `abort` or `rollback`; the body is
/// optional (`to` applies to rollback only).
#[utoipa::path(post, path = "/v1/deployments/{id}/{action}", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id"),
        ("action" = String, Path, description = "pause | resume | abort | rollback")),
    request_body(content = Option<ActionBody>, description = "Optional"),
    security(("bearer" = [])),
    responses((status = 200, description = "The deployment after the action", body = DeploymentRecord),
        (status = 400, description = "A malformed body", body = ErrorBody),
        (status = 404, description = "No such deployment or action", body = ErrorBody),
        (status = 409, description = "Not possible in its state", body = ErrorBody), AuthErrors))]
pub async fn deployment_action(
    State(st): State<ApiState>,
    h: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    use crate::fleet::machine::Command;
    let actor = authorize(&st, &h, Role::Operator).await?;
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

/// Fleet drift.
///
/// Role: viewer. The devices' latest drift reports (last 2 minutes) by model version and
/// optionally a device tag, with the `export captures` command for the drifting window.
#[utoipa::path(get, path = "/v1/drift", tag = "drift", params(DriftQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "Groups", body = [crate::drift::DriftGroup]),
        (status = 400, description = "A malformed or unknown parameter", body = ErrorBody),
        (status = 404, description = "No such deployment", body = ErrorBody), AuthErrors))]
pub async fn drift(
    State(st): State<ApiState>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    authorize(&st, &h, Role::Viewer).await?;
    let mut f = crate::drift::DriftFilter::default();
    let q = query_pairs(q.as_deref());
    check_params::<DriftQuery>(&q)?;
    for (k, v) in q {
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
            _ => {}
        }
    }
    let groups = db(&st, move |c| {
        crate::drift::fleet(c, &f, crate::db::now_ms(), 120_000).map_err(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => ApiError::not_found("no such deployment"),
            e => ApiError::internal(e),
        })
    })
    .await?;
    Ok(axum::Json(groups).into_response())
}
