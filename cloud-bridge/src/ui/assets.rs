//! The dashboard's static files, embedded in the binary: the vendored libraries
//! (`assets/vendor`, see its README for versions and licences) and the dashboard's own
//! stylesheet and script. Served without auth — they hold no fleet data, and the sign-in
//! page needs the stylesheet.

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::UiError;

/// (name, content type, bytes).
const FILES: [(&str, &str, &[u8]); 6] = [
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/htmx.min.js"),
    ),
    (
        "htmx-ext-sse.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/htmx-ext-sse.min.js"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/vendor/uPlot.min.css"),
    ),
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/dashboard.css"),
    ),
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/dashboard.js"),
    ),
];

/// `GET /ui/assets/{name}`.
pub async fn serve(Path(name): Path<String>) -> Result<Response, UiError> {
    let (_, kind, bytes) = FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| UiError::NotFound("no such asset".into()))?;
    let mut r = (*bytes).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    // Small and changed only by a new binary: a browser may keep them for a while.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=600"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_asset_is_embedded_and_not_empty() {
        for (name, _, bytes) in super::FILES {
            assert!(bytes.len() > 100, "{name}");
        }
    }
}
