//! `outpost-agent status`: asked of a running agent over its local API (the live link
//! state with the reason it cannot connect), read from the data directory when the agent
//! is not running, `--json` pure JSON, and a closed stdout (`status | head -1`) exits 0.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::command;
use outpost_agent::config::AgentConfig;
use outpost_agent::link::FailureKind;
use outpost_agent::status::AgentStatus;
use outpost_agent::store::{NewRecord, Store, StoreConfig};
use outpost_agent::update::disk::{Slot, UpdateDisk, UpdateState};
use outpost_agent::update::lifecycle::Lifecycle;
use outpost_protocol::Digest;
use outpost_protocol::manifest::ModelRef;
use outpost_protocol::wire::InstalledModel;

/// A config file whose broker port has nothing listening and whose API is a Unix socket
/// only (no TCP port to race for).
fn config(dir: &Path) -> PathBuf {
    let (_, trust) = common::keys(dir);
    let closed = outpost_testkit::mosquitto::free_port();
    let p = dir.join("agent.toml");
    std::fs::write(
        &p,
        format!(
            "device_id = \"gw-status\"\ndata_dir = \"data\"\ntrust_dir = \"{}\"\n\
             [broker]\nurl = \"mqtt://127.0.0.1:{closed}\"\nreconnect_min_ms = 50\nreconnect_max_ms = 200\n\
             [api]\nhttp = \"\"\nunix_socket = \"api.sock\"\n",
            trust.display()
        ),
    )
    .unwrap();
    p
}

fn status(cfg: &Path, json: bool) -> (Option<i32>, String, String) {
    let mut c = command(env!("CARGO_BIN_EXE_outpost-agent"));
    c.args(["status", "--config"]).arg(cfg);
    if json {
        c.arg("--json");
    }
    let o = c.output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A data directory as a stopped agent leaves it: one model in slot B, records pending.
fn stopped_agent_data(data: &Path) {
    let disk = UpdateDisk::open(data).unwrap();
    let mut l = Lifecycle::new("vibration");
    l.slots[1] = Some(InstalledModel {
        bundle: Digest::of(b"v7"),
        model: ModelRef {
            name: "vibration".into(),
            version: 7,
        },
    });
    l.active = Some(Slot::B);
    let mut s = UpdateState::default();
    s.models.insert("vibration".into(), l);
    disk.save_state(&s).unwrap();
    let (mut store, _) = Store::open(data, StoreConfig::default()).unwrap();
    for i in 0..3u8 {
        store
            .append(&[NewRecord {
                stream: "telemetry",
                ts_ms: 1_000 + u64::from(i),
                body: &[i; 100],
            }])
            .unwrap();
    }
}

#[test]
fn not_running_reads_the_data_directory() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path());
    stopped_agent_data(&d.path().join("data"));

    let (code, out, err) = status(&cfg, true);
    assert_eq!(code, Some(0), "{err}");
    let s: AgentStatus = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(!s.running);
    assert!(
        s.note
            .as_deref()
            .unwrap_or_default()
            .contains("agent not running"),
        "{s:?}"
    );
    assert_eq!(s.device_id, "gw-status");
    assert!(s.link.is_none());
    let m = &s.models[0];
    assert_eq!(
        (m.name.as_str(), m.version, m.slot, m.loaded),
        ("vibration", Some(7), Some(Slot::B), false)
    );
    let t = s.store.iter().find(|b| b.stream == "telemetry").unwrap();
    assert_eq!(t.records, 3);
    assert!(t.bytes >= 300, "{t:?}");

    let (code, out, err) = status(&cfg, false);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("agent not running"), "{out}");
    assert!(out.contains("vibration v7 slot b"), "{out}");
    assert!(out.contains("telemetry: 3 records"), "{out}");
    // Nothing was written: no store files moved aside, no socket, no fresh files.
    let mut names: Vec<String> = std::fs::read_dir(d.path().join("data"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(!names.iter().any(|n| n.contains("corrupt")), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_agent_reports_its_link_and_why_it_is_down() {
    let d = tempfile::tempdir().unwrap();
    let cfg_path = config(d.path());
    let cfg = AgentConfig::load(Some(&cfg_path), Vec::new()).unwrap();
    let agent = outpost_agent::runtime::start(cfg, Vec::new())
        .await
        .unwrap();
    // Wait until the link has failed at least once (nothing listens on the broker port).
    let link = agent.link.clone();
    assert!(
        outpost_testkit::wait_until(10, || link.state().failed_attempts >= 1).await,
        "the link never failed"
    );

    let cfg_arg = cfg_path.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || status(&cfg_arg, true))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{err}");
    let s: AgentStatus = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(s.running, "{s:?}");
    assert!(s.source.starts_with("unix:"), "{}", s.source);
    let l = s.link.expect("a running agent has a link");
    assert!(!l.connected);
    assert!(l.broker.starts_with("mqtt://127.0.0.1:"), "{}", l.broker);
    let e = l.last_error.expect("the reason it is down");
    assert_eq!(e.kind, FailureKind::Unreachable);
    assert!(e.reason.contains("connection refused"), "{}", e.reason);
    assert!(l.retry_in_ms.is_some());
    // The store the agent opened is listed, even when empty.
    assert!(
        s.store.iter().any(|b| b.stream == "events"),
        "{:?}",
        s.store
    );

    let cfg_arg = cfg_path.clone();
    let (_, text, _) = tokio::task::spawn_blocking(move || status(&cfg_arg, false))
        .await
        .unwrap();
    assert!(text.contains("agent running"), "{text}");
    assert!(
        text.contains("disconnected from mqtt://127.0.0.1:") && text.contains("connection refused"),
        "{text}"
    );
    agent.shutdown(Duration::from_secs(2)).await;
}

#[test]
fn a_closed_stdout_exits_quietly_with_0() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path());
    for json in [false, true] {
        let mut c = command(env!("CARGO_BIN_EXE_outpost-agent"));
        c.args(["status", "--config"]).arg(&cfg);
        if json {
            c.arg("--json");
        }
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Close the reading end before the agent prints: its first write meets EPIPE, as
        // under `| head -0`.
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "json={json}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            o.stderr.is_empty(),
            "json={json}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
