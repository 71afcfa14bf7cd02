//! The OpenAPI 3.1 document, generated from [`super::ROUTES`].

use serde_json::{Map, Value, json};

use super::ROUTES;

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "summary": r.summary,
            "parameters": params,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {}}},
                "400": {"$ref": "#/components/responses/Error"},
                "404": {"$ref": "#/components/responses/Error"},
            },
        });
        if let Some(role) = r.role {
            op["security"] = json!([{"bearer": []}]);
            op["x-required-role"] = json!(role.as_str());
            op["responses"]["401"] = json!({"$ref": "#/components/responses/Error"});
            op["responses"]["403"] = json!({"$ref": "#/components/responses/Error"});
        }
        if r.method == "post" {
            op["requestBody"] =
                json!({"content": {"application/json": {"schema": {"type": "object"}}}});
        }
        paths
            .entry(r.path.to_owned())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("path item is an object")
            .insert(r.method.to_owned(), op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Outpost bridge API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {
                "description": "Error",
                "content": {"application/json": {"schema": {
                    "type": "object", "required": ["error"],
                    "properties": {"error": {"type": "string"}}
                }}}
            }}
        }
    })
}
