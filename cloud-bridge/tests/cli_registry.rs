//! The registry and audit CLI on a real data directory.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

fn cli(data: &Path, args: &[&str]) -> std::process::Output {
    run(bridge()
        .arg("--data-dir")
        .arg(data)
        .arg("--actor")
        .arg("tester")
        .args(args))
}

fn json(o: &std::process::Output) -> Value {
    assert!(o.status.success(), "{}", text(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

fn register(data: &Path, extra: &[&str]) -> std::process::Output {
    let m = models().join("vibration-anomaly");
    let model = m.join("model.onnx");
    let mut args = vec![
        "model",
        "register",
        model.to_str().unwrap(),
        "--name",
        "vib",
        "--json",
    ];
    args.extend_from_slice(extra);
    cli(data, &args)
}

#[test]
fn register_three_times_search_delete_guard_and_refusals() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let csv = models().join("vibration-anomaly/training-sample.csv");
    let v1 = json(&register(
        &data,
        &[
            "--tag",
            "site=plant-7",
            "--reason",
            "first",
            "--dataset-id",
            "ds-1",
        ],
    ));
    let v2 = json(&register(
        &data,
        &["--tag", "site=plant-9", "--baseline", csv.to_str().unwrap()],
    ));
    let v3 = json(&register(
        &data,
        &["--tag", "site=plant-7", "--source-commit", "abc123"],
    ));
    assert_eq!([&v1["version"], &v2["version"], &v3["version"]], [1, 2, 3]);
    assert!(v1["validation"]["p50_us"].as_f64().unwrap() > 0.0);
    assert!(
        v1["validation"]["p99_us"].as_f64().unwrap()
            >= v1["validation"]["p50_us"].as_f64().unwrap()
    );
    assert_eq!(v1["lineage"]["created_by"], "cli:tester");

    // Search by tag and by lineage.
    let by_tag = json(&cli(
        &data,
        &["model", "list", "--tag", "site=plant-7", "--json"],
    ));
    let versions: Vec<i64> = by_tag
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, vec![1, 3]);
    let by_lineage = json(&cli(
        &data,
        &[
            "model",
            "list",
            "--lineage",
            "source_commit=abc123",
            "--json",
        ],
    ));
    assert_eq!(by_lineage.as_array().unwrap().len(), 1);
    assert_eq!(by_lineage[0]["version"], 3);
    let by_dataset = json(&cli(
        &data,
        &["model", "list", "--lineage", "dataset_id=ds-1", "--json"],
    ));
    assert_eq!(by_dataset[0]["version"], 1);
    let table = cli(&data, &["model", "list"]);
    assert!(
        text(&table).contains("NAME") && text(&table).contains("vib"),
        "{}",
        text(&table)
    );
    let shown = json(&cli(&data, &["model", "show", "vib:2", "--json"]));
    assert_eq!(shown["tags"]["site"], "plant-9");

    // v2 carries its model, self-test samples and a baseline profile in its bundle.
    let key = data.join("keys");
    let bundle = data
        .join("bundles")
        .join(format!("{}.bundle", shown["digest"].as_str().unwrap()));
    let o = run(agent()
        .arg("verify-bundle")
        .arg(&bundle)
        .arg("--trust")
        .arg(&key));
    assert!(
        o.status.success() && text(&o).contains("files=3"),
        "{}",
        text(&o)
    );

    // Delete is refused while a deployment uses the version.
    let o = cli(
        &data,
        &["device", "add", "gw-1", "--tag", "site=plant-7", "--json"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = cli(
        &data,
        &[
            "deploy", "create", "--model", "vib:3", "--device", "gw-1", "--reason", "test",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let dep = json(&o)["id"].as_str().unwrap().to_owned();
    let o = cli(&data, &["model", "delete", "vib:3", "--reason", "cleanup"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("still needed") && text(&o).contains(&dep),
        "{}",
        text(&o)
    );
    // ...and allowed once the deployment is aborted.
    assert!(
        cli(&data, &["deploy", "abort", &dep, "--reason", "done"])
            .status
            .success()
    );
    assert!(
        cli(&data, &["model", "delete", "vib:3", "--reason", "cleanup"])
            .status
            .success()
    );
    assert!(!cli(&data, &["model", "show", "vib:3"]).status.success());
    // Versions keep counting up after a delete.
    assert_eq!(json(&register(&data, &[]))["version"], 4);

    // A model that fails its self-test is refused with the reason, and recorded.
    let bad_spec = d.path().join("bad.toml");
    let spec = std::fs::read_to_string(models().join("vibration-anomaly/spec.toml")).unwrap();
    let start = spec.find("expected = [").unwrap() + "expected = [".len();
    let end = start + spec[start..].find(',').unwrap();
    std::fs::write(&bad_spec, format!("{}0.0{}", &spec[..start], &spec[end..])).unwrap();
    let o = register(&data, &["--spec", bad_spec.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("model refused: self-test sample 0 failed"),
        "{}",
        text(&o)
    );
    let audit = json(&cli(&data, &["audit", "--json", "--limit", "100"]));
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"model.refuse"), "{actions:?}");
    assert!(actions.iter().filter(|a| **a == "model.register").count() == 4);
    assert!(
        actions.contains(&"model.delete")
            && actions.contains(&"deployment.create")
            && actions.contains(&"deployment.aborted")
    );
    let c = rusqlite::Connection::open(data.join("bridge.db")).unwrap();
    let refusals: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM model_refusals WHERE name = 'vib'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(refusals, 1);
}

#[test]
fn audit_verify_detects_edits_and_deletions_made_directly_in_sqlite() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    for i in 0..3 {
        assert!(
            cli(&data, &["device", "add", &format!("gw-{i}")])
                .status
                .success()
        );
    }
    let o = cli(&data, &["audit", "--verify"]);
    assert!(
        o.status.success() && text(&o).contains("intact: 3 entries"),
        "{}",
        text(&o)
    );

    // Edit a row behind the bridge's back (dropping the append-only triggers first).
    let db = data.join("bridge.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
        .unwrap();
    c.execute("UPDATE audit SET actor = 'someone-else' WHERE id = 2", [])
        .unwrap();
    let o = cli(&data, &["audit", "--verify"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("row 2 was modified"), "{}", text(&o));
    // (Every open re-arms the append-only triggers, so drop them again for each edit.)
    let unguard = "DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete;";
    c.execute_batch(unguard).unwrap();
    c.execute("UPDATE audit SET actor = 'cli:tester' WHERE id = 2", [])
        .unwrap();
    assert!(
        cli(&data, &["audit", "--verify"]).status.success(),
        "restoring the row restores the chain"
    );

    // Delete a middle row, then the newest one.
    c.execute_batch(unguard).unwrap();
    c.execute("DELETE FROM audit WHERE id = 2", []).unwrap();
    let o = cli(&data, &["audit", "--verify", "--json"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("missing"), "{}", text(&o));
    let d2 = tempfile::tempdir().unwrap();
    let data2 = d2.path().join("data");
    for i in 0..3 {
        assert!(
            cli(&data2, &["device", "add", &format!("gw-{i}")])
                .status
                .success()
        );
    }
    let c2 = rusqlite::Connection::open(data2.join("bridge.db")).unwrap();
    c2.execute_batch("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE id = 3;")
        .unwrap();
    let o = cli(&data2, &["audit", "--verify"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("head file records row 3"), "{}", text(&o));
}

#[test]
fn device_add_issues_a_config_the_agent_accepts() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let out = d.path().join("gw-7");
    let o = cli(
        &data,
        &[
            "device",
            "add",
            "gw-7",
            "--tag",
            "site=a",
            "--target",
            "armv7-unknown-linux-gnueabihf",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(out.join("password"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    let cfg = outpost_agent::config::AgentConfig::load(Some(&out.join("agent.toml")), Vec::new())
        .unwrap();
    assert_eq!(cfg.device_id, "gw-7");
    assert_eq!(cfg.broker.username.as_deref(), Some("gw-7"));
    assert_eq!(cfg.broker.password.as_deref().map(str::len), Some(64));
    assert_eq!(
        cfg.tags.get("target").map(String::as_str),
        Some("armv7-unknown-linux-gnueabihf")
    );
    assert_eq!(
        outpost_protocol::TrustStore::load_dir(&cfg.trust_dir)
            .unwrap()
            .len(),
        1
    );
    // The same id twice is refused.
    let o = cli(&data, &["device", "add", "gw-7"]);
    assert!(
        !o.status.success() && text(&o).contains("already exists"),
        "{}",
        text(&o)
    );
    let o = cli(&data, &["device", "add", "bad/id"]);
    assert!(
        !o.status.success() && text(&o).contains("invalid device id"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_listing_into_a_closed_pipe_exits_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert!(register(&data, &[]).status.success());
    for args in [&["model", "list"][..], &["audit", "--json"][..]] {
        // `… | head -0`: the reader is gone before the first line is written.
        let mut child = bridge()
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// Every listing takes `--json` and then prints one JSON document on stdout and nothing
/// else there (spinners and notes go to stderr), on a data directory with something in
/// each list.
#[test]
fn every_listing_speaks_json_on_stdout_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert!(register(&data, &[]).status.success());
    let out = dir.path().join("gw-1");
    json(&cli(
        &data,
        &[
            "device",
            "add",
            "gw-1",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
    ));
    json(&cli(
        &data,
        &[
            "deploy", "create", "--model", "vib:1", "--device", "gw-1", "--json",
        ],
    ));
    let o = cli(&data, &["token", "add", "ci", "--role", "viewer"]);
    assert!(o.status.success(), "{}", text(&o));
    let listings: &[&[&str]] = &[
        &["model", "list", "--json"],
        &["model", "show", "vib", "--json"],
        &["device", "list", "--json"],
        &["device", "show", "gw-1", "--json"],
        &["device", "keys", "gw-1", "--json"],
        &["deploy", "list", "--json"],
        &["audit", "--json"],
        &["audit", "--verify", "--json"],
        &["drift", "show", "--json"],
        &["telemetry", "show", "gw-1", "--json"],
        &["token", "list", "--json"],
        &["keys", "show", "--json"],
    ];
    for args in listings {
        let v = json(&cli(&data, args));
        assert!(v.is_array() || v.is_object(), "{args:?}: {v}");
    }
    let deployments = json(&cli(&data, &["deploy", "list", "--json"]));
    let id = deployments[0]["id"].as_str().expect("a deployment id");
    json(&cli(&data, &["deploy", "show", id, "--json"]));
}

#[test]
fn tokens_are_listed_replaced_only_when_asked_and_revoked() {
    use outpost_bridge::auth::{Role, TokenInfo, lookup};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let add = |extra: &[&str]| {
        let mut a = vec!["token", "add", "ci", "--role", "viewer"];
        a.extend_from_slice(extra);
        cli(&data, &a)
    };
    let o = add(&[]);
    assert!(o.status.success(), "{}", text(&o));
    let first = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    let db = || outpost_bridge::db::Db::open(&data).unwrap();
    assert_eq!(
        lookup(&db().lock(), &first).unwrap(),
        Some(("ci".into(), Role::Viewer))
    );

    // Re-adding a name is refused, naming --replace; the first secret keeps working.
    let o = add(&[]);
    assert!(
        !o.status.success() && text(&o).contains("--replace"),
        "{}",
        text(&o)
    );
    assert!(lookup(&db().lock(), &first).unwrap().is_some());
    let o = cli(
        &data,
        &["token", "add", "ci", "--role", "operator", "--replace"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let second = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    assert_eq!(lookup(&db().lock(), &first).unwrap(), None, "replaced");
    assert_eq!(
        lookup(&db().lock(), &second).unwrap(),
        Some(("ci".into(), Role::Operator))
    );

    // The listing names roles and never a secret or a hash.
    let o = cli(&data, &["token", "list", "--json"]);
    let rows: Vec<TokenInfo> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].name.as_str(), rows[0].role),
        ("ci", Role::Operator)
    );
    let raw = String::from_utf8_lossy(&o.stdout);
    assert!(!raw.contains(&second) && !raw.contains("hash"), "{raw}");

    // Revoked: it stops working; revoking again says there is no such token.
    assert!(cli(&data, &["token", "revoke", "ci"]).status.success());
    assert_eq!(lookup(&db().lock(), &second).unwrap(), None);
    let o = cli(&data, &["token", "revoke", "ci"]);
    assert!(
        !o.status.success() && text(&o).contains("no token named"),
        "{}",
        text(&o)
    );
    let log = json(&cli(&data, &["audit", "--json"]));
    for action in ["token.add", "token.replace", "token.revoke"] {
        assert!(
            log.as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == action),
            "{action} not audited"
        );
    }
}

#[test]
fn device_show_and_telemetry_read_what_the_device_sent() {
    use outpost_bridge::ingest::{IngestJob, IngestStats, write};
    use outpost_protocol::Limits;
    use outpost_protocol::manifest::ModelRef;
    use outpost_protocol::records::{
        self, AgentEventKind, AgentReport, EventRecord, InferenceReport, Telemetry,
    };
    use outpost_protocol::uplink::{Record, UplinkBatch};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = outpost_bridge::db::Db::open(&data).unwrap();
    let audit = outpost_bridge::audit::Audit::new(&data);
    outpost_bridge::devices::ensure(&db.lock(), &audit, "gw-t", &Default::default()).unwrap();
    let t0 = 1_795_000_000_000u64;
    let inference = |i: u64, requests: u64| {
        Telemetry::Inference(InferenceReport {
            ts_ms: t0 + i,
            window_s: 1.0,
            model: ModelRef {
                name: "vib".into(),
                version: 2,
            },
            bundle: outpost_protocol::Digest::of(b"v2"),
            requests,
            samples: requests,
            errors: 1,
            rejected: 0,
            latency_sum_us: 0,
            latency_buckets_us: vec![],
            latency_counts: vec![],
            p50_us: Some(40),
            p99_us: Some(90),
            labels: Default::default(),
            drift: None,
        })
    };
    let bodies = [
        records::encode(&inference(1, 10)),
        records::encode(&Telemetry::Agent(AgentReport {
            ts_ms: t0 + 2,
            store_bytes: 4096,
            store_budget: 1 << 20,
            connected: true,
            ..Default::default()
        })),
        records::encode(&inference(3, 77)),
    ];
    let send = |stream: &str, bodies: Vec<Vec<u8>>| {
        let batch = UplinkBatch {
            stream: stream.into(),
            batch_id: 1,
            records: bodies
                .into_iter()
                .enumerate()
                .map(|(i, body)| Record {
                    seq: i as u64 + 1,
                    ts_ms: t0 + i as u64 + 1,
                    body,
                })
                .collect(),
        };
        let job = IngestJob {
            device: "gw-t".into(),
            stream: stream.into(),
            payload: batch.encode(3).unwrap(),
        };
        write(
            &mut db.connect().unwrap(),
            &[job],
            &Limits::default(),
            &IngestStats::default(),
        )
        .unwrap();
    };
    send("telemetry", bodies.to_vec());
    send(
        "events",
        vec![records::encode(&EventRecord {
            ts_ms: t0 + 5,
            kind: AgentEventKind::RolledBack,
            message: "vib v2 rolled back: probation failed".into(),
            details: serde_json::Value::Null,
        })],
    );

    // device show: the latest report per kind (inference: the 77-request one) and events.
    let v = json(&cli(&data, &["device", "show", "gw-t", "--json"]));
    let tel = v["telemetry"].as_array().unwrap();
    assert_eq!(tel.len(), 2, "{v}");
    assert!(
        tel.iter()
            .any(|t| t["report"]["kind"] == "inference" && t["report"]["requests"] == 77),
        "{v}"
    );
    assert_eq!(v["events"][0]["kind"], "rolled_back", "{v}");
    let o = cli(&data, &["device", "show", "gw-t"]);
    assert!(
        text(&o).contains("vib v2: 77 requests, 1 errors") && text(&o).contains("rolled_back"),
        "{}",
        text(&o)
    );

    // telemetry: newest first, filtered by kind, bounded; a bad kind is refused.
    let rows = json(&cli(
        &data,
        &["telemetry", "show", "gw-t", "--kind", "inference", "--json"],
    ));
    let reqs: Vec<u64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["report"]["requests"].as_u64().unwrap())
        .collect();
    assert_eq!(reqs, vec![77, 10]);
    let rows = json(&cli(
        &data,
        &["telemetry", "show", "gw-t", "--limit", "1", "--json"],
    ));
    assert_eq!(rows.as_array().unwrap().len(), 1);
    let o = cli(&data, &["telemetry", "show", "gw-t", "--kind", "gpu"]);
    assert!(
        !o.status.success() && text(&o).contains("not inference, system or agent"),
        "{}",
        text(&o)
    );
    let o = cli(&data, &["telemetry", "show", "gw-nope"]);
    assert!(!o.status.success(), "{}", text(&o));
}
