//! The `/v1` convenience routes: named features or arrays in, the task's answer out.
//!
//! `POST /v1/predict[?model=NAME]` takes `{"inputs": [..]}`, `{"inputs": [[..], ..]}`
//! (batch), `{"features": {"rms_x": ..}}` or `{"features": [{..}, ..]}` for a model with
//! one input of a fixed sample size. Without `?model=` it uses the only active model
//! (several: 400 naming the choices). Errors: 400 malformed JSON or wrong types (with the
//! JSON path), 413 body too large, 422 wrong length / non-finite value / a value the model
//! refuses, 503 no model, 500 the model failed.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use outpost_inference::{InferenceError, Scored};
use outpost_protocol::Digest;
use outpost_protocol::contract::{Interpretation, ModelContract};
use outpost_protocol::manifest::ModelRef;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ApiError, ApiState};
use crate::models::{ActiveModel, BUCKETS_US};
use crate::recorder::{Served, Source};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/predict", post(predict))
        .route("/v1/model", get(model_info))
        .route("/v1/health", get(health))
        .route("/v1/metrics", get(metrics))
}

/// Reads a body of at most the configured size (413 otherwise).
pub async fn read_body(st: &ApiState, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds {} bytes", st.max_body),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > st.max_body) {
        return Err(too_large());
    }
    to_bytes(body, st.max_body).await.map_err(|_| too_large())
}

/// `?model=NAME`.
#[derive(Deserialize)]
pub struct ModelQuery {
    /// Model name.
    pub model: Option<String>,
}

/// The model a v1 request means: `?model=` or the only active one.
fn pick(st: &ApiState, q: &ModelQuery) -> Result<Arc<ActiveModel>, ApiError> {
    match &q.model {
        Some(name) => st.model(name),
        None => st.models.only().ok_or_else(|| {
            let names: Vec<String> = st
                .models
                .list()
                .iter()
                .map(|m| m.name().to_owned())
                .collect();
            if names.is_empty() {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no model is active on this device",
                )
            } else {
                ApiError::bad(format!(
                    "several models are active; choose one with ?model= ({})",
                    names.join(", ")
                ))
            }
        }),
    }
}

fn unprocessable(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m)
}

fn number(v: &Value, path: &str) -> Result<f64, ApiError> {
    match v {
        Value::Number(n) => Ok(n.as_f64().unwrap_or(f64::NAN)),
        other => Err(ApiError::bad(format!(
            "{path} is {}, expected a number",
            kind(other)
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn array_row(v: &[Value], path: &str) -> Result<Vec<f64>, ApiError> {
    v.iter()
        .enumerate()
        .map(|(i, x)| number(x, &format!("{path}[{i}]")))
        .collect()
}

/// Parsed rows and whether the request was a batch.
struct Rows {
    rows: Vec<Vec<f64>>,
    batch: bool,
}

fn named_row(
    c: &ModelContract,
    m: &serde_json::Map<String, Value>,
    path: &str,
) -> Result<Vec<f64>, ApiError> {
    let mut pairs = Vec::with_capacity(m.len());
    for (k, x) in m {
        pairs.push((k.as_str(), number(x, &format!("{path}.{k}"))?));
    }
    c.order_named(pairs)
        .map_err(|e| unprocessable(format!("{path}: {e}")))
}

/// Parses one row at a JSON path.
type RowParser<'a> = dyn Fn(&Value, &str) -> Result<Vec<f64>, ApiError> + 'a;

fn parse_rows(body: &[u8], c: &ModelContract) -> Result<Rows, ApiError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("invalid JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(ApiError::bad(format!(
            "body is {}, expected an object with \"inputs\" or \"features\"",
            kind(&v)
        )));
    };
    if let Some(k) = obj.keys().find(|k| *k != "inputs" && *k != "features") {
        return Err(ApiError::bad(format!(
            "unknown field {k:?}; expected \"inputs\" or \"features\""
        )));
    }
    let each = |a: &[Value], f: &RowParser<'_>, what: &str| {
        a.iter()
            .enumerate()
            .map(|(i, r)| f(r, &format!("{what}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
    };
    match (obj.get("inputs"), obj.get("features")) {
        (Some(_), Some(_)) => Err(ApiError::bad(
            "send either \"inputs\" or \"features\", not both",
        )),
        (None, None) => Err(ApiError::bad(
            "missing \"inputs\" (array) or \"features\" (object)",
        )),
        (Some(Value::Array(a)), None) if a.first().is_some_and(Value::is_array) => Ok(Rows {
            rows: each(
                a,
                &|r, p| match r {
                    Value::Array(r) => array_row(r, p),
                    o => Err(ApiError::bad(format!(
                        "{p} is {}, expected an array",
                        kind(o)
                    ))),
                },
                "inputs",
            )?,
            batch: true,
        }),
        (Some(Value::Array(a)), None) => Ok(Rows {
            rows: vec![array_row(a, "inputs")?],
            batch: false,
        }),
        (Some(o), None) => Err(ApiError::bad(format!(
            "inputs is {}, expected an array",
            kind(o)
        ))),
        (None, Some(Value::Object(m))) => Ok(Rows {
            rows: vec![named_row(c, m, "features")?],
            batch: false,
        }),
        (None, Some(Value::Array(a))) => Ok(Rows {
            rows: each(
                a,
                &|r, p| match r {
                    Value::Object(m) => named_row(c, m, p),
                    o => Err(ApiError::bad(format!(
                        "{p} is {}, expected an object",
                        kind(o)
                    ))),
                },
                "features",
            )?,
            batch: true,
        }),
        (None, Some(o)) => Err(ApiError::bad(format!(
            "features is {}, expected an object or array",
            kind(o)
        ))),
    }
}

/// The answer to `/v1/predict`.
#[derive(Serialize, Deserialize)]
pub struct PredictResponse {
    /// Model name and version.
    pub model: ModelRef,
    /// Bundle digest.
    pub bundle: Digest,
    /// Time spent, µs.
    pub latency_us: u64,
    /// The answer (single request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<Interpretation>,
    /// The answers (batch request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictions: Option<Vec<Interpretation>>,
}

async fn predict(
    State(st): State<ApiState>,
    Query(q): Query<ModelQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&st, &headers, body).await?;
    let active = pick(&st, &q)?;
    if active.model.row_input().is_none() {
        return Err(unprocessable(format!(
            "model {} takes several inputs or a variable sample size; use POST /v2/models/{}/infer",
            active.name(),
            active.name()
        )));
    }
    let rows = parse_rows(&bytes, active.model.contract())?;
    let ts_ms = crate::clock::unix_ms();
    let start = Instant::now();
    let a = active.clone();
    let rs = rows.rows;
    let samples = rs.len() as u64;
    let r: Result<Scored, InferenceError> = st
        .run_model(&active, samples, move || a.score_rows(&rs))
        .await?;
    st.models.touch();
    let scored = r.map_err(|e| {
        if e.is_client_error() {
            unprocessable(e.to_string())
        } else {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    })?;
    let mut out = PredictResponse {
        model: active.info.model.clone(),
        bundle: active.info.bundle,
        latency_us: start.elapsed().as_micros() as u64,
        prediction: None,
        predictions: None,
    };
    if rows.batch {
        out.predictions = Some(scored.interpretations.clone());
    } else {
        out.prediction = scored.interpretations.first().cloned();
    }
    if let Some(sink) = &st.served {
        sink.send(Served {
            ts_ms,
            model: active,
            scored,
            source: Source::Api,
        });
    }
    Ok(Json(out).into_response())
}

/// `GET /v1/model`.
#[derive(Serialize)]
struct ModelInfo<'a> {
    model: &'a ModelRef,
    bundle: Digest,
    contract: &'a ModelContract,
}

async fn model_info(
    State(st): State<ApiState>,
    Query(q): Query<ModelQuery>,
) -> Result<Response, ApiError> {
    let a = pick(&st, &q)?;
    Ok(Json(ModelInfo {
        model: &a.info.model,
        bundle: a.info.bundle,
        contract: a.model.contract(),
    })
    .into_response())
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    models: Vec<ModelRef>,
}

async fn health(State(st): State<ApiState>) -> Response {
    let models: Vec<ModelRef> = st
        .models
        .list()
        .iter()
        .map(|m| m.info.model.clone())
        .collect();
    if models.is_empty() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "no_model",
                models,
            }),
        )
            .into_response()
    } else {
        Json(Health {
            status: "ok",
            models,
        })
        .into_response()
    }
}

#[derive(Serialize)]
struct Metrics {
    model: ModelRef,
    requests: u64,
    samples: u64,
    errors: u64,
    rejected: u64,
    latency_p50_us: Option<u64>,
    latency_p99_us: Option<u64>,
    latency_buckets_us: Vec<(Option<u64>, u64)>,
}

async fn metrics(
    State(st): State<ApiState>,
    Query(q): Query<ModelQuery>,
) -> Result<Response, ApiError> {
    let a = pick(&st, &q)?;
    let s = a.stats.snapshot();
    Ok(Json(Metrics {
        model: a.info.model.clone(),
        requests: s.requests,
        samples: s.samples,
        errors: s.errors,
        rejected: s.rejected,
        latency_p50_us: s.quantile_us(0.5),
        latency_p99_us: s.quantile_us(0.99),
        latency_buckets_us: BUCKETS_US
            .iter()
            .zip(&s.buckets)
            .map(|(b, c)| ((*b != u64::MAX).then_some(*b), *c))
            .collect(),
    })
    .into_response())
}
