//! The OpenAPI 3.1 document: the handlers' `#[utoipa::path]` operations collected by
//! [`super::api_routes`] (which registers each route from the same annotation), plus the
//! bearer security scheme and the shared schemas.

use std::sync::LazyLock;

use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::RouteDoc;
use super::schema::{ErrorBody, Health};
use crate::auth::Role;

/// The document's fixed parts; the paths come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Outpost bridge API",
        description = "Bearer-token auth with roles (viewer < operator < admin): no or unknown token → 401, a role too low → 403. Each operation's description names the role it needs. Errors are `{\"error\": ..}`: malformed input → 400, refused → 422, unknown → 404, conflict → 409, 500 only when the bridge itself failed."
    ),
    modifiers(&Bearer),
    components(schemas(ErrorBody))
)]
pub struct ApiDoc;

/// Adds the `bearer` scheme the operations' `security` refers to.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The whole document (built once).
pub fn document() -> &'static Document {
    static DOC: LazyLock<Document> = LazyLock::new(|| super::api_routes().split_for_parts().1);
    &DOC
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> axum::Json<&'static Document> {
    axum::Json(document())
}

/// Liveness.
#[utoipa::path(get, path = "/v1/health", tag = "meta",
    responses((status = 200, description = "The API answers", body = Health)))]
pub async fn health() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
    })
}

/// The role an operation's description names (`Role: operator`), if it is secured.
fn role_of(description: Option<&str>) -> Option<Role> {
    let d = description?;
    [Role::Admin, Role::Operator, Role::Viewer]
        .into_iter()
        .find(|r| d.contains(&format!("Role: {}", r.as_str())))
}

/// Every documented operation, sorted by path then method. Strings are leaked once: the
/// table lives as long as the process, like the `&'static` table it replaced.
pub static ROUTES: LazyLock<Vec<RouteDoc>> = LazyLock::new(|| {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let mut out = Vec::new();
    for (path, item) in &document().paths.paths {
        let ops = [
            ("get", &item.get),
            ("post", &item.post),
            ("put", &item.put),
            ("patch", &item.patch),
            ("delete", &item.delete),
        ];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            out.push(RouteDoc {
                method,
                path: leak(path.clone()),
                role: role_of(op.description.as_deref()),
                summary: leak(op.summary.clone().unwrap_or_default()),
            });
        }
    }
    out
});
