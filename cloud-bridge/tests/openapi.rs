//! `/openapi.json`: typed schemas and parameters for every route, and a document the
//! reference validator (`openapi-spec-validator`, Python) accepts. The validator skips
//! with a printed reason unless `OUTPOST_REQUIRE_PYTHON=1` (`.ci/run` installs it).

mod common;

use outpost_bridge::api::{ROUTES, document};
use utoipa::openapi::path::ParameterIn;

#[test]
fn routes_have_typed_bodies_and_parameters() {
    let doc = document();
    let schemas = &doc.components.as_ref().unwrap().schemas;
    for s in [
        "ErrorBody",
        "ModelRecord",
        "DeviceRecord",
        "DeviceView",
        "DeploymentRecord",
        "DriftGroup",
        "Event",
        "AuditEntry",
        "AddDevice",
        "CreateBody",
        "ActionBody",
        "ProvisionedDevice",
        "Stats",
    ] {
        assert!(schemas.contains_key(s), "no schema {s}");
    }
    let params = |path: &str| -> Vec<(String, bool)> {
        doc.paths.paths[path]
            .get
            .as_ref()
            .unwrap()
            .parameters
            .iter()
            .flatten()
            .filter(|p| p.parameter_in == ParameterIn::Query)
            .map(|p| {
                (
                    p.name.clone(),
                    p.required == utoipa::openapi::Required::True,
                )
            })
            .collect()
    };
    assert_eq!(
        params("/v1/drift"),
        [
            ("model".to_owned(), false),
            ("deployment".to_owned(), false),
            ("group_by".to_owned(), false)
        ]
    );
    assert!(params("/v1/captures/export").contains(&("model".to_owned(), true)));
    // Every path parameter in a route is declared.
    for r in ROUTES.iter() {
        let item = &doc.paths.paths[r.path];
        let op = match r.method {
            "get" => item.get.as_ref(),
            "post" => item.post.as_ref(),
            _ => item.delete.as_ref(),
        }
        .unwrap();
        let declared: Vec<&str> = op
            .parameters
            .iter()
            .flatten()
            .filter(|p| p.parameter_in == ParameterIn::Path)
            .map(|p| p.name.as_str())
            .collect();
        let in_path: Vec<&str> = r
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        assert_eq!(declared, in_path, "{} {}", r.method, r.path);
    }
}

#[test]
fn the_document_passes_openapi_spec_validator() {
    let Some(py) = common::python::with(
        "openapi_spec_validator",
        "pip install openapi-spec-validator",
    ) else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(document()).unwrap()).unwrap();
    let o = common::run(
        std::process::Command::new(py)
            .arg("-c")
            .arg(
                "import json, sys\n\
         from openapi_spec_validator import validate\n\
         validate(json.load(open(sys.argv[1])))\n\
         print('valid')",
            )
            .arg(&file),
    );
    assert!(o.status.success(), "{}", common::text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("valid"));
}
