//! The README's operator walkthrough ("Run a gateway locally"), run as written: the
//! block between `<!-- walkthrough:start -->` and `<!-- walkthrough:end -->` goes to bash
//! unchanged, in a fresh directory, with the built `outpost-bridge` and `outpost-agent` on
//! `PATH` — keys → register → device add --local → serve → agent → deploy --wait →
//! predict → export. It uses the walkthrough's fixed ports (1883, 8080, 8089).
//!
//! Needs `curl` (the walkthrough's predict step): skipped with a reason when it is missing,
//! required when `OUTPOST_REQUIRE_CURL=1` (as `.ci/run` sets).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The walkthrough block of the README.
fn walkthrough() -> String {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let start = readme
        .find("<!-- walkthrough:start -->")
        .expect("README has a walkthrough");
    let end = readme.find("<!-- walkthrough:end -->").unwrap();
    let block = &readme[start..end];
    let code = block
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(code, _)| code)
        .expect("a ```sh block");
    code.to_owned()
}

/// The script's process group, killed on drop (the walkthrough leaves `serve` and the
/// agent running in the background).
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        // `--`: a negative pid names the process group, not a signal.
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        std::thread::sleep(Duration::from_millis(500));
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn rows(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0)
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    if !have("curl") {
        assert!(
            std::env::var("OUTPOST_REQUIRE_CURL").as_deref() != Ok("1"),
            "curl is required (OUTPOST_REQUIRE_CURL=1) but missing"
        );
        eprintln!("skipping the README walkthrough: curl is not installed");
        return;
    }
    for port in [1883, 8080, 8089] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port}, which the walkthrough uses, is taken (a broker or a leftover bridge?)"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::os::unix::fs::symlink(common::models(), work.join("models")).unwrap();
    let bridge = PathBuf::from(env!("CARGO_BIN_EXE_outpost-bridge"));
    let agent = common::workspace_bin("outpost-agent", "outpost-agent");
    let path = format!(
        "{}:{}:{}",
        bridge.parent().unwrap().display(),
        agent.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = format!("set -euo pipefail\n{}", walkthrough());
    std::fs::write(work.join("walkthrough.sh"), &script).unwrap();
    let out = work.join("out.log");
    let log = std::fs::File::create(&out).unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg("walkthrough.sh")
        .current_dir(work)
        .env("PATH", &path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut group = Group(cmd.spawn().unwrap());

    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(s) = group.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the walkthrough did not finish in 300 s:\n{}",
            std::fs::read_to_string(&out).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        status.success(),
        "the walkthrough failed ({status}):\n{log}"
    );
    assert!(
        log.contains("\"prediction\"") && log.contains("\"label\""),
        "the gateway answered no prediction:\n{log}"
    );
    assert!(log.contains("gw-local"), "{log}");

    // The export ran (an empty file when nothing had synced yet); the gateway keeps
    // capturing, so running the walkthrough's export again yields rows.
    let export = work.join("captures.jsonl");
    assert!(export.exists(), "{log}");
    let again = || {
        Command::new(&bridge)
            .args(["export", "captures", "--model", "vibration:1"])
            .args(["--format", "jsonl", "-o", "captures.jsonl"])
            .current_dir(work)
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while rows(&export) == 0 {
        assert!(
            Instant::now() < deadline,
            "no captures exported within 60 s:\n{log}"
        );
        std::thread::sleep(Duration::from_secs(2));
        let o = again();
        assert!(o.status.success(), "{}", common::text(&o));
    }
    let first = std::fs::read_to_string(&export).unwrap();
    let row: serde_json::Value =
        serde_json::from_str(first.lines().next().unwrap()).expect("a JSON row");
    assert!(row.is_object(), "{row}");
    drop(group);
}
