//! The Open Inference Protocol v2 (REST) routes.
//!
//! Source: the Open Inference Protocol specification (KServe "V2" / Triton HTTP/REST) and
//! its binary tensor data extension. Request: `{"id"?, "parameters"?, "inputs": [{"name",
//! "shape", "datatype", "parameters"?, "data"?}], "outputs"?: [{"name", "parameters"?}]}`.
//! With the header `Inference-Header-Content-Length: N`, the first N bytes of the body
//! are that JSON and the rest is binary tensor data, consumed in input order by every
//! input whose `parameters.binary_data_size` says how many bytes it has. Outputs go back
//! as JSON `data` unless the request asks for binary (`parameters.binary_data_output`, or
//! an output's `parameters.binary_data`); then the response carries the same header and
//! the binary data after its JSON.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use outpost_inference::{InferenceError, Scored};
use outpost_protocol::oip::{InferRequest, parse_infer_request};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ApiError, ApiState};
use crate::models::ActiveModel;
use crate::recorder::{Served, Source};

/// The binary tensor data extension's header.
pub use outpost_protocol::oip::HEADER_LENGTH;

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models", get(list_models))
        .route("/v2/models/{name}", get(metadata))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(metadata_version),
        )
        .route("/v2/models/{name}/ready", get(model_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_ready_version),
        )
        .route("/v2/models/{name}/infer", post(infer))
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(infer_version),
        )
}

#[derive(Serialize)]
struct Live {
    live: bool,
}

#[derive(Serialize)]
struct Ready {
    ready: bool,
}

async fn live() -> Json<Live> {
    Json(Live { live: true })
}

async fn ready(State(st): State<ApiState>) -> Response {
    let ready = !st.models.list().is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Ready { ready })).into_response()
}

/// `GET /v2`.
#[derive(Serialize, Deserialize)]
pub struct ServerMetadata {
    /// Server name.
    pub name: String,
    /// Server version.
    pub version: String,
    /// Protocol extensions supported.
    pub extensions: Vec<String>,
}

async fn server_metadata() -> Json<ServerMetadata> {
    Json(ServerMetadata {
        name: "outpost-agent".into(),
        version: crate::VERSION.into(),
        extensions: vec!["binary_tensor_data".into()],
    })
}

/// One entry of `GET /v2/models`.
#[derive(Serialize, Deserialize)]
pub struct ModelEntry {
    /// Model name.
    pub name: String,
    /// Active version.
    pub version: String,
    /// `READY`.
    pub state: String,
}

/// `GET /v2/models`.
#[derive(Serialize, Deserialize)]
pub struct ModelList {
    /// Active models.
    pub models: Vec<ModelEntry>,
}

async fn list_models(State(st): State<ApiState>) -> Json<ModelList> {
    Json(ModelList {
        models: st
            .models
            .list()
            .iter()
            .map(|m| ModelEntry {
                name: m.name().to_owned(),
                version: m.info.model.version.to_string(),
                state: "READY".into(),
            })
            .collect(),
    })
}

/// A tensor in model metadata.
#[derive(Serialize, Deserialize)]
pub struct MetadataTensor {
    /// Name.
    pub name: String,
    /// OIP datatype.
    pub datatype: String,
    /// Shape, -1 for variable dimensions.
    pub shape: Vec<i64>,
}

/// `GET /v2/models/{name}`.
#[derive(Serialize, Deserialize)]
pub struct ModelMetadata {
    /// Name.
    pub name: String,
    /// Versions available (the active one).
    pub versions: Vec<String>,
    /// Framework.
    pub platform: String,
    /// Inputs.
    pub inputs: Vec<MetadataTensor>,
    /// Outputs.
    pub outputs: Vec<MetadataTensor>,
}

fn versioned(
    st: &ApiState,
    name: &str,
    version: Option<&str>,
) -> Result<Arc<ActiveModel>, ApiError> {
    let m = st.model(name)?;
    match version {
        Some(v) if v != m.info.model.version.to_string() => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "model {name:?} version {v} is not loaded (version {} is)",
                m.info.model.version
            ),
        )),
        _ => Ok(m),
    }
}

fn metadata_of(m: &ActiveModel) -> ModelMetadata {
    let c = m.model.contract();
    ModelMetadata {
        name: m.name().to_owned(),
        versions: vec![m.info.model.version.to_string()],
        platform: "onnx_tract".into(),
        inputs: c
            .inputs
            .iter()
            .map(|i| MetadataTensor {
                name: i.name.clone(),
                datatype: i.datatype.as_str().into(),
                shape: i.tensor().oip_shape(),
            })
            .collect(),
        outputs: c
            .outputs
            .iter()
            .map(|o| MetadataTensor {
                name: o.name.clone(),
                datatype: o.datatype.as_str().into(),
                shape: o.tensor().oip_shape(),
            })
            .collect(),
    }
}

async fn metadata(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<ModelMetadata>, ApiError> {
    let m = versioned(&st, &name, None)?;
    Ok(Json(metadata_of(&m)))
}

async fn metadata_version(
    State(st): State<ApiState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ModelMetadata>, ApiError> {
    let m = versioned(&st, &name, Some(&version))?;
    Ok(Json(metadata_of(&m)))
}

#[derive(Serialize)]
struct ModelReady {
    name: String,
    ready: bool,
}

async fn model_ready(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<ModelReady>, ApiError> {
    versioned(&st, &name, None)?;
    Ok(Json(ModelReady { name, ready: true }))
}

async fn model_ready_version(
    State(st): State<ApiState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ModelReady>, ApiError> {
    versioned(&st, &name, Some(&version))?;
    Ok(Json(ModelReady { name, ready: true }))
}

/// A response output.
#[derive(Serialize)]
struct ResponseOutput {
    name: String,
    datatype: String,
    shape: Vec<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BTreeMap<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
}

/// The inference response (JSON part).
#[derive(Serialize)]
struct InferResponse {
    model_name: String,
    model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    outputs: Vec<ResponseOutput>,
}

/// The request body parsed by the protocol crate (the one parser, fuzzed there); a refusal
/// is the client's fault, 400.
fn parse(headers: &HeaderMap, body: &[u8]) -> Result<InferRequest, ApiError> {
    let header_len = headers.get(HEADER_LENGTH).map(HeaderValue::as_bytes);
    parse_infer_request(header_len, body).map_err(|e| ApiError::bad(e.0))
}

/// Maps an inference error to its HTTP status: the caller's faults are 400s.
pub fn status_of(e: &InferenceError) -> StatusCode {
    if e.is_client_error() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

async fn infer(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    run_infer(st, name, None, headers, body).await
}

async fn infer_version(
    State(st): State<ApiState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    run_infer(st, name, Some(version), headers, body).await
}

async fn run_infer(
    st: ApiState,
    name: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes: Bytes = super::v1::read_body(&st, &headers, body).await?;
    let active = versioned(&st, &name, version.as_deref())?;
    let p = parse(&headers, &bytes)?;
    if let Some(wanted) = &p.outputs
        && let Some(o) = wanted
            .iter()
            .find(|o| active.model.contract().output(o).is_none())
    {
        return Err(ApiError::bad(format!(
            "{o:?} is not an output of model {name:?} (it has {})",
            active
                .model
                .contract()
                .outputs
                .iter()
                .map(|o| format!("{:?}", o.name))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let ts_ms = crate::clock::unix_ms();
    let start = Instant::now();
    let a = active.clone();
    let inputs = p.inputs;
    // Rows of the batch (the first dimension), for the cost estimate.
    let samples = inputs
        .iter()
        .map(|t| t.shape.first().copied().unwrap_or(1) as u64)
        .max()
        .unwrap_or(1);
    let r: Result<Scored, InferenceError> = st
        .run_model(&active, samples, move || a.score(inputs))
        .await?;
    st.models.touch();
    let scored = r.map_err(|e| ApiError::new(status_of(&e), e.to_string()))?;
    tracing::trace!(model = %name, us = start.elapsed().as_micros() as u64, "infer");
    let response = respond(
        &active,
        p.id,
        p.outputs.as_deref(),
        p.binary_all,
        &p.binary,
        &scored,
    );
    if let Some(sink) = &st.served {
        sink.send(Served {
            ts_ms,
            model: active,
            scored,
            source: Source::Api,
        });
    }
    Ok(response)
}

fn respond(
    m: &ActiveModel,
    id: Option<String>,
    wanted: Option<&[String]>,
    binary_all: bool,
    binary: &[String],
    scored: &Scored,
) -> Response {
    let mut tail: Vec<u8> = Vec::new();
    let outputs: Vec<ResponseOutput> = scored
        .outputs
        .iter()
        .filter(|o| wanted.is_none_or(|w| w.contains(&o.name)))
        .map(|o| {
            let as_binary = binary_all || binary.contains(&o.name);
            let (parameters, data) = if as_binary {
                let b = o.data.to_le_bytes();
                let mut p = BTreeMap::new();
                p.insert("binary_data_size".to_owned(), Value::from(b.len()));
                tail.extend_from_slice(&b);
                (Some(p), None)
            } else {
                (None, Some(o.data.to_json()))
            };
            ResponseOutput {
                name: o.name.clone(),
                datatype: o.datatype().as_str().into(),
                shape: o.shape.clone(),
                parameters,
                data,
            }
        })
        .collect();
    let resp = InferResponse {
        model_name: m.name().to_owned(),
        model_version: m.info.model.version.to_string(),
        id,
        outputs,
    };
    let json = serde_json::to_vec(&resp).expect("response serialises");
    if tail.is_empty() {
        return ([(header::CONTENT_TYPE, "application/json")], json).into_response();
    }
    let len = json.len();
    let mut body = json;
    body.extend_from_slice(&tail);
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(HEADER_LENGTH, HeaderValue::from(len));
    r
}
