//! The HTTP API: auth by role, precise 4xx, and the OpenAPI document matching the router.

mod common;

use common::harness::*;
use outpost_bridge::api::ROUTES;
use outpost_bridge::auth::{Role, add_token};
use serde_json::{Value, json};

struct Api {
    base: String,
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let (method, token, body) = (
            method.to_owned(),
            token.map(str::to_owned),
            body.map(str::to_owned),
        );
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let auth = token.map(|t| format!("Bearer {t}"));
            let mut resp = match (method.as_str(), body) {
                ("GET", _) => {
                    let mut r = agent.get(&url);
                    if let Some(a) = &auth {
                        r = r.header("authorization", a);
                    }
                    r.call()
                }
                ("DELETE", _) => {
                    let mut r = agent.delete(&url);
                    if let Some(a) = &auth {
                        r = r.header("authorization", a);
                    }
                    r.call()
                }
                (_, b) => {
                    let mut r = agent.post(&url).header("content-type", "application/json");
                    if let Some(a) = &auth {
                        r = r.header("authorization", a);
                    }
                    r.send(b.unwrap_or_default())
                }
            }
            .unwrap();
            let status = resp.status().as_u16();
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        })
        .await
        .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_roles_errors_and_openapi() {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(dir.path(), embedded(false)).await;
    register(&b, "vibration-anomaly", "vib");
    let (viewer, operator, admin) = {
        let c = b.db.lock();
        (
            add_token(&c, "v", Role::Viewer).unwrap(),
            add_token(&c, "o", Role::Operator).unwrap(),
            add_token(&c, "a", Role::Admin).unwrap(),
        )
    };
    let api = Api {
        base: format!("http://{}", b.http_addr.unwrap()),
    };

    // Unauthenticated → 401; wrong role → 403; right role → 200.
    let (s, body) = api.call("GET", "/v1/models", None, None).await;
    assert_eq!(s, 401, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("missing bearer token")
    );
    assert_eq!(
        api.call("GET", "/v1/models", Some("opt_forged"), None)
            .await
            .0,
        401
    );
    let (s, body) = api.call("GET", "/v1/models", Some(&viewer), None).await;
    assert_eq!(s, 200);
    assert_eq!(body[0]["name"], "vib");
    let (s, body) = api
        .call("DELETE", "/v1/models/vib/1", Some(&viewer), None)
        .await;
    assert_eq!(s, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("needs operator"));
    assert_eq!(
        api.call(
            "POST",
            "/v1/devices",
            Some(&operator),
            Some(r#"{"id":"gw-1"}"#)
        )
        .await
        .0,
        403
    );

    // Malformed and invalid bodies → 4xx with messages.
    let (s, body) = api
        .call("POST", "/v1/devices", Some(&admin), Some("{not json"))
        .await;
    assert_eq!(s, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("invalid request body"),
        "{body}"
    );
    let (s, body) = api
        .call(
            "POST",
            "/v1/devices",
            Some(&admin),
            Some(r#"{"id":"gw-1","colour":"red"}"#),
        )
        .await;
    assert_eq!(s, 400);
    assert!(body["error"].as_str().unwrap().contains("colour"), "{body}");
    let (s, _) = api
        .call(
            "POST",
            "/v1/devices",
            Some(&admin),
            Some(r#"{"id":"bad/id"}"#),
        )
        .await;
    assert_eq!(s, 422);
    let (s, body) = api
        .call(
            "POST",
            "/v1/devices",
            Some(&admin),
            Some(r#"{"id":"gw-1","tags":{"site":"a"}}"#),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    assert!(
        body["agent_toml"]
            .as_str()
            .unwrap()
            .contains("device_id = \"gw-1\"")
            && body["password"].as_str().unwrap().len() == 64
    );
    assert_eq!(
        api.call(
            "POST",
            "/v1/devices",
            Some(&admin),
            Some(r#"{"id":"gw-1"}"#)
        )
        .await
        .0,
        409
    );

    // Deployments.
    let (s, body) = api
        .call(
            "POST",
            "/v1/deployments",
            Some(&operator),
            Some(r#"{"model":"nope","devices":["gw-1"]}"#),
        )
        .await;
    assert_eq!(s, 404, "{body}");
    let bad =
        json!({"model": "vib", "devices": ["gw-1"], "strategy": {"waves": [0.5, 0.2]}}).to_string();
    let (s, body) = api
        .call("POST", "/v1/deployments", Some(&operator), Some(&bad))
        .await;
    assert_eq!(s, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("last wave")
            || body["error"].as_str().unwrap().contains("non-decreasing"),
        "{body}"
    );
    let (s, body) = api
        .call(
            "POST",
            "/v1/deployments",
            Some(&viewer),
            Some(r#"{"model":"vib","devices":["gw-1"]}"#),
        )
        .await;
    assert_eq!(s, 403, "{body}");
    let (s, dep) = api
        .call(
            "POST",
            "/v1/deployments",
            Some(&operator),
            Some(r#"{"model":"vib","devices":["gw-1"],"reason":"api test"}"#),
        )
        .await;
    assert_eq!(s, 201, "{dep}");
    let id = dep["id"].as_str().unwrap();
    assert_eq!(
        api.call(
            "POST",
            &format!("/v1/deployments/{id}/explode"),
            Some(&operator),
            None
        )
        .await
        .0,
        404
    );
    let (s, body) = api
        .call(
            "POST",
            &format!("/v1/deployments/{id}/pause"),
            Some(&operator),
            Some(r#"{"reason":"checking"}"#),
        )
        .await;
    assert_eq!((s, body["state"].as_str()), (200, Some("paused")), "{body}");
    assert_eq!(
        api.call(
            "POST",
            &format!("/v1/deployments/{id}/pause"),
            Some(&operator),
            None
        )
        .await
        .0,
        409,
        "already paused"
    );
    let (s, body) = api
        .call(
            "DELETE",
            "/v1/models/vib/1?reason=cleanup",
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(s, 409, "{body}");
    let (s, list) = api
        .call(
            "GET",
            "/v1/deployments?model=vib&state=paused",
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!((s, list.as_array().map(Vec::len)), (200, Some(1)));
    let (_, list) = api
        .call("GET", "/v1/deployments?device=gw-1", Some(&viewer), None)
        .await;
    assert_eq!(list[0]["id"], id);
    // The filter is the type `deploy list` parses: unknown or mistyped fields are refused.
    for q in ["bogus=1", "version=one", "state=a%20b"] {
        let (s, body) = api
            .call("GET", &format!("/v1/deployments?{q}"), Some(&viewer), None)
            .await;
        assert_eq!(s, 400, "{q}: {body}");
    }

    // Audit verify, events, export validation, unknown routes.
    let (s, v) = api
        .call("GET", "/v1/audit/verify", Some(&viewer), None)
        .await;
    assert_eq!((s, &v["ok"]), (200, &json!(true)), "{v}");
    let (s, ev) = api
        .call(
            "GET",
            "/v1/events?kind=deployment_created",
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(ev[0]["deployment_id"], id);
    let (s, body) = api
        .call("GET", "/v1/captures/export", Some(&operator), None)
        .await;
    assert_eq!(s, 400);
    assert!(body["error"].as_str().unwrap().contains("model="), "{body}");
    assert_eq!(
        api.call("GET", "/v1/nothing-here", Some(&viewer), None)
            .await
            .0,
        404
    );

    // The OpenAPI document lists every route, and every listed route is routed.
    let (s, doc) = api.call("GET", "/openapi.json", None, None).await;
    assert_eq!(s, 200);
    for r in ROUTES.iter() {
        assert!(
            doc["paths"][r.path][r.method].is_object(),
            "{} {} missing from openapi.json",
            r.method,
            r.path
        );
        let path = r
            .path
            .replace("{name}", "vib")
            .replace("{version}", "1")
            .replace("{id}", id)
            .replace("{action}", "resume")
            .replace("{model}", "vib");
        let (_, body) = api
            .call(&r.method.to_uppercase(), &path, Some(&admin), Some("{}"))
            .await;
        assert!(
            !body.to_string().contains("no such route"),
            "{} {path} is not routed",
            r.method
        );
    }
    b.shutdown().await;
}
