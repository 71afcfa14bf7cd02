//! The local inference API for apps on the gateway: HTTP on 127.0.0.1 and a Unix socket,
//! same routes on both.
//!
//! | route | |
//! |---|---|
//! | `POST /v1/predict` | `{"inputs": [..]}`, `{"inputs": [[..], ..]}` (batch), `{"features": {"rms_x": ..}}` or `{"features": [{..}, ..]}` |
//! | `GET /v1/model` | active model: name, version, bundle, input/output spec |
//! | `GET /v1/health` | `ok` or `no_model` |
//! | `GET /v1/metrics` | counters and latency histogram of the active model |
//!
//! Errors are JSON `{"error": "..."}` with a precise message: 400 malformed JSON or wrong
//! types (with the JSON path), 413 body too large, 422 wrong shape or non-finite value,
//! 503 no model active, 500 the model failed. Inference runs on the blocking pool so a
//! large batch never stalls the server.

use std::path::Path;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use outpost_protocol::spec::Prediction;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::inference::{BUCKETS_US, InferenceError, MAX_BATCH, ModelHandle};

#[derive(Clone)]
struct AppState {
    models: ModelHandle,
    max_body: usize,
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, m.into())
}

/// The router (exposed for tests).
pub fn router(models: ModelHandle, max_body: usize) -> Router {
    Router::new()
        .route("/v1/predict", post(predict))
        .route("/v1/model", get(model_info))
        .route("/v1/health", get(health))
        .route("/v1/metrics", get(metrics))
        .with_state(AppState { models, max_body })
}

/// A parsed request: raw samples (already in feature order), and whether it was a batch.
struct Samples {
    rows: Vec<Vec<f32>>,
    batch: bool,
}

fn number(v: &Value, path: &str) -> Result<f32, ApiError> {
    match v {
        Value::Number(n) => Ok(n.as_f64().map(|f| f as f32).unwrap_or(f32::NAN)),
        other => Err(bad(format!("{path} is {}, expected a number", kind(other)))),
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

fn array_row(v: &[Value], path: &str) -> Result<Vec<f32>, ApiError> {
    v.iter()
        .enumerate()
        .map(|(i, x)| number(x, &format!("{path}[{i}]")))
        .collect()
}

fn parse_samples(body: &[u8], names: &[String]) -> Result<Samples, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(bad(format!(
            "body is {}, expected an object with \"inputs\" or \"features\"",
            kind(&v)
        )));
    };
    if let Some(k) = obj.keys().find(|k| *k != "inputs" && *k != "features") {
        return Err(bad(format!(
            "unknown field {k:?}; expected \"inputs\" or \"features\""
        )));
    }
    let named_row =
        |m: &serde_json::Map<String, Value>, path: &str| -> Result<Vec<f32>, ApiError> {
            if names.is_empty() {
                return Err(ApiError(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "this model has no feature names; send \"inputs\" as an array".into(),
                ));
            }
            let mut row = vec![None; names.len()];
            for (k, x) in m {
                let i = names.iter().position(|n| n == k).ok_or_else(|| {
                    ApiError(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("{path}: unknown feature {k:?}"),
                    )
                })?;
                row[i] = Some(number(x, &format!("{path}.{k}"))?);
            }
            row.into_iter()
                .zip(names)
                .map(|(v, n)| {
                    v.ok_or_else(|| {
                        ApiError(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            format!("{path}: feature {n:?} is missing"),
                        )
                    })
                })
                .collect()
        };
    match (obj.get("inputs"), obj.get("features")) {
        (Some(_), Some(_)) => Err(bad("send either \"inputs\" or \"features\", not both")),
        (None, None) => Err(bad("missing \"inputs\" (array) or \"features\" (object)")),
        (Some(Value::Array(a)), None) if a.first().is_some_and(Value::is_array) => Ok(Samples {
            rows: a
                .iter()
                .enumerate()
                .map(|(i, r)| match r {
                    Value::Array(r) => array_row(r, &format!("inputs[{i}]")),
                    o => Err(bad(format!(
                        "inputs[{i}] is {}, expected an array",
                        kind(o)
                    ))),
                })
                .collect::<Result<_, _>>()?,
            batch: true,
        }),
        (Some(Value::Array(a)), None) => Ok(Samples {
            rows: vec![array_row(a, "inputs")?],
            batch: false,
        }),
        (Some(o), None) => Err(bad(format!("inputs is {}, expected an array", kind(o)))),
        (None, Some(Value::Object(m))) => Ok(Samples {
            rows: vec![named_row(m, "features")?],
            batch: false,
        }),
        (None, Some(Value::Array(a))) => Ok(Samples {
            rows: a
                .iter()
                .enumerate()
                .map(|(i, r)| match r {
                    Value::Object(m) => named_row(m, &format!("features[{i}]")),
                    o => Err(bad(format!(
                        "features[{i}] is {}, expected an object",
                        kind(o)
                    ))),
                })
                .collect::<Result<_, _>>()?,
            batch: true,
        }),
        (None, Some(o)) => Err(bad(format!(
            "features is {}, expected an object or array",
            kind(o)
        ))),
    }
}

async fn predict(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let too_large = || {
        ApiError(
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
    let bytes = to_bytes(body, st.max_body).await.map_err(|_| too_large())?;
    let Some(active) = st.models.current() else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "no model is active on this device".into(),
        ));
    };
    let samples = parse_samples(&bytes, &active.model.spec().input.features)?;
    if samples.rows.is_empty() || samples.rows.len() > MAX_BATCH {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "batch of {} samples is outside 1..={MAX_BATCH}",
                samples.rows.len()
            ),
        ));
    }
    let start = std::time::Instant::now();
    let models = st.models.clone();
    let a = active.clone();
    let r = tokio::task::spawn_blocking(move || a.predict_batch(&samples.rows))
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("inference task failed: {e}"),
            )
        })?;
    models.touch();
    let predictions: Vec<Prediction> = r.map_err(|e| match e {
        InferenceError::Input(_) | InferenceError::BatchSize(_) => {
            ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        e => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    })?;
    let mut out = json!({
        "model": active.info.model,
        "bundle": active.info.bundle,
        "latency_us": start.elapsed().as_micros() as u64,
    });
    if samples.batch {
        out["predictions"] = json!(predictions);
    } else {
        out["prediction"] = json!(predictions[0]);
    }
    Ok(axum::Json(out).into_response())
}

async fn model_info(State(st): State<AppState>) -> Result<Response, ApiError> {
    let a = st.models.current().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "no model is active on this device".into(),
        )
    })?;
    Ok(axum::Json(json!({
        "model": a.info.model,
        "bundle": a.info.bundle,
        "spec": a.model.spec(),
    }))
    .into_response())
}

async fn health(State(st): State<AppState>) -> Response {
    match st.models.current() {
        Some(a) => axum::Json(json!({"status": "ok", "model": a.info.model})).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "no_model"})),
        )
            .into_response(),
    }
}

async fn metrics(State(st): State<AppState>) -> Result<Response, ApiError> {
    let a = st.models.current().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "no model is active on this device".into(),
        )
    })?;
    let s = a.stats.snapshot();
    Ok(axum::Json(json!({
        "model": a.info.model,
        "requests": s.requests,
        "samples": s.samples,
        "errors": s.errors,
        "rejected": s.rejected,
        "latency_p50_us": s.quantile_us(0.5),
        "latency_p99_us": s.quantile_us(0.99),
        "latency_buckets_us": BUCKETS_US.iter().zip(&s.buckets).map(|(b, c)| json!([if *b == u64::MAX { Value::Null } else { json!(b) }, c])).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// Serves the API on a TCP listener until `shutdown`.
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let r = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "HTTP API stopped");
    }
}

/// Binds the Unix socket, replacing a stale one, readable by owner and group only.
pub fn bind_unix(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Local apps in the same group may call the API; others may not.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    }
    Ok(listener)
}

/// Serves the API on a Unix socket until `shutdown`.
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let r = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "Unix-socket API stopped");
    }
}
