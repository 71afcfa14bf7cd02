//! The operator dashboard at `/ui`, served by the bridge's HTTP API.
//!
//! Server-rendered HTML (maud) with htmx for live updates: each page's content is one
//! element (`#live`) that re-fetches itself when the server-sent event stream
//! (`/ui/live`, [`live`]) names a topic the page shows (devices, deployments, events,
//! audit, drift). Charts are uPlot. The three libraries are vendored in
//! `cloud-bridge/assets/vendor` with their licences and embedded in the binary
//! ([`assets`]); nothing is fetched at run time, and the pages' Content-Security-Policy
//! allows only the bridge's own scripts and styles.
//!
//! **Auth.** The same tokens and roles as the API: every page needs `viewer`. A browser
//! cannot send a bearer header by itself, so `/ui/login` takes a token in a form and sets
//! it as the cookie `outpost_session` (HttpOnly, so page scripts cannot read it;
//! SameSite=Strict, so other sites cannot ride on it; Path=/ui, so it goes nowhere else;
//! Secure when the request came over HTTPS through a proxy; 12 hours). The bridge keeps
//! only token hashes, so each request looks the token up again: revoking a token signs
//! its browsers out at once. An `Authorization: Bearer` header works too (scripts,
//! tests). Without a valid token a page answers 401 with the sign-in form. The dashboard
//! only reads: it changes nothing, so there is no action for a forged request to take;
//! every change stays with the API and the CLI, behind their `operator`/`admin` roles.
//! Sign-in and sign-out refuse requests a browser marks as coming from another site
//! (`Sec-Fetch-Site`), so a foreign page can neither sign a browser into another token's
//! session nor out of its own.
//!
//! Unknown devices and deployments are 404 pages; malformed query parameters are 400.

mod assets;
pub mod live;
mod pages;
mod view;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::html;
use serde::Deserialize;

use crate::api::ApiState;
use crate::auth::{self, Role};

pub use live::LiveHub;

/// The session cookie's name.
pub const COOKIE: &str = "outpost_session";

/// How long a sign-in lasts, seconds.
pub const SESSION_SECS: u64 = 12 * 3600;

/// Longest token looked up (issued ones are 68 bytes).
const MAX_TOKEN: usize = 256;

/// Why a page could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// No token, or an unknown or revoked one (the sign-in form is shown).
    #[error("{0}")]
    Unauthorized(String),
    /// A token whose role is too low.
    #[error("{0}")]
    Forbidden(String),
    /// An unknown device, deployment or model.
    #[error("{0}")]
    NotFound(String),
    /// Malformed query parameters.
    #[error("{0}")]
    BadRequest(String),
    /// The bridge failed (database).
    #[error("{0}")]
    Internal(String),
}

impl From<rusqlite::Error> for UiError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Internal(format!("database: {e}"))
    }
}

impl From<crate::input::InputError> for UiError {
    fn from(e: crate::input::InputError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, title) = match &self {
            Self::Unauthorized(_) => return login_form(StatusCode::UNAUTHORIZED, Some(&self)),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "Bad request"),
            Self::Internal(m) => {
                tracing::error!(error = %m, "dashboard page failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "Bridge error")
            }
        };
        view::render(
            status,
            view::Page {
                title: title.into(),
                nav: view::Nav::None,
                actor: "",
                uri: "",
                live: &[],
                body: html! {
                    p.error { (self.to_string()) }
                    p { a href="/ui" { "Back to the fleet" } }
                },
            },
        )
    }
}

/// The routes, to merge into the API router.
pub fn routes() -> Router<ApiState> {
    use pages::{deployments, drift, fleet, log};
    Router::new()
        .route("/ui", get(fleet::page))
        .route("/ui/", get(|| async { Redirect::permanent("/ui") }))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", axum::routing::post(logout))
        .route("/ui/devices/{id}", get(fleet::device))
        .route("/ui/deployments", get(deployments::list))
        .route("/ui/deployments/{id}", get(deployments::show))
        .route("/ui/drift", get(drift::page))
        .route("/ui/audit", get(log::audit))
        .route("/ui/events", get(log::events))
        .route("/ui/live", get(live::stream))
        .route("/ui/assets/{name}", get(assets::serve))
        .route(
            "/ui/{*rest}",
            get(|| async { UiError::NotFound("no such page".into()) }),
        )
}

/// The token a request carries: the session cookie, or a bearer header.
fn token(headers: &HeaderMap) -> Option<String> {
    if let Some(t) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(t.trim().to_owned());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_owned())
}

/// The role `token` has, as (name, role); an error names what is wrong.
fn check(st: &ApiState, token: &str, need: Role) -> Result<String, UiError> {
    if token.is_empty() || token.len() > MAX_TOKEN {
        return Err(UiError::Unauthorized("unknown or revoked token".into()));
    }
    let (name, role) = auth::lookup(&st.db.lock(), token)?
        .ok_or_else(|| UiError::Unauthorized("unknown or revoked token".into()))?;
    if role < need {
        return Err(UiError::Forbidden(format!(
            "token {name:?} has role {}; the dashboard needs {}",
            role.as_str(),
            need.as_str()
        )));
    }
    Ok(name)
}

/// The signed-in token's name, for pages (role viewer).
pub fn viewer(st: &ApiState, headers: &HeaderMap) -> Result<String, UiError> {
    let t = token(headers).ok_or_else(|| UiError::Unauthorized(String::new()))?;
    check(st, &t, Role::Viewer)
}

/// Runs a page's database work on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, UiError> + Send + 'static,
) -> Result<T, UiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| UiError::Internal(format!("page task failed: {e}")))?
}

fn login_form(status: StatusCode, error: Option<&UiError>) -> Response {
    let message = error.map(ToString::to_string).filter(|m| !m.is_empty());
    view::render(
        status,
        view::Page {
            title: "Sign in".into(),
            nav: view::Nav::None,
            actor: "",
            uri: "",
            live: &[],
            body: html! {
                @if let Some(m) = message { p.error { (m) } }
                form.login method="post" action="/ui/login" {
                    label for="token" { "API token (role viewer or higher)" }
                    input #token name="token" type="password" autocomplete="off" required;
                    button type="submit" { "Sign in" }
                }
                p.hint { "Create one with " code { "outpost-bridge token add NAME --role viewer" } "." }
            },
        },
    )
}

async fn login_page() -> Response {
    login_form(StatusCode::OK, None)
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// Refuses a request that a browser says another site made (`Sec-Fetch-Site`; sent by
/// current browsers, absent from scripts and tools, which are not this check's concern).
/// Unlike comparing `Origin` with `Host`, this holds behind a proxy that rewrites `Host`.
fn same_origin(headers: &HeaderMap) -> Result<(), UiError> {
    match headers.get("sec-fetch-site").map(HeaderValue::as_bytes) {
        None | Some(b"same-origin" | b"none") => Ok(()),
        Some(_) => Err(UiError::Forbidden(
            "sign-in and sign-out are only accepted from the dashboard's own pages".into(),
        )),
    }
}

async fn login(
    State(st): State<ApiState>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, UiError> {
    same_origin(&headers)?;
    let Form(f) =
        form.map_err(|e| UiError::BadRequest(format!("sign-in form: {}", e.body_text())))?;
    let token = f.token.trim().to_owned();
    let st2 = st.clone();
    let t = token.clone();
    blocking(move || check(&st2, &t, Role::Viewer)).await?;
    // A token is opaque ASCII from `token add`; anything else cannot be a cookie value.
    if !token
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
    {
        return Err(UiError::Unauthorized("unknown or revoked token".into()));
    }
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECS}{}",
        if secure { "; Secure" } else { "" }
    );
    let mut r = Redirect::to("/ui").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| UiError::Internal(e.to_string()))?,
    );
    Ok(r)
}

async fn logout(headers: HeaderMap) -> Result<Response, UiError> {
    same_origin(&headers)?;
    let mut r = Redirect::to("/ui/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "outpost_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_the_bearer_header_or_the_session_cookie() {
        let mut h = HeaderMap::new();
        assert_eq!(token(&h), None);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; outpost_session=opt_abc ; b=2"),
        );
        assert_eq!(token(&h).as_deref(), Some("opt_abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer opt_x"),
        );
        assert_eq!(token(&h).as_deref(), Some("opt_x"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("outpost_sessionx=1"),
        );
        assert_eq!(token(&h), None);
    }
}
