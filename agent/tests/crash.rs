//! Crash tests with the real `outpost-agent` binary, killed with SIGKILL.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::http::try_request;
use common::mqtt::{Peer, embedded_broker, free_port};
use common::*;
use outpost_protocol::Digest;
use outpost_protocol::wire::UpdatePhase;
use rand::{Rng, SeedableRng};
use serde_json::Value;

struct AgentProc {
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    api: SocketAddr,
}

impl AgentProc {
    fn new(dir: &Path, device: &str, broker: u16, trust: &Path) -> Self {
        let api_port = free_port();
        // Long request timeout: with two crash tests sharing two cores, a 1 s timeout
        // would re-request chunks that are merely queued.
        let toml = agent_toml(device, broker, &dir.join("data"), trust, "")
            .replace(
                "http = \"127.0.0.1:0\"",
                &format!("http = \"127.0.0.1:{api_port}\""),
            )
            .replace("request_timeout_ms = 1000", "request_timeout_ms = 5000");
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("agent.toml");
        std::fs::write(&config, toml).unwrap();
        Self {
            config,
            log: dir.join("agent.log"),
            child: None,
            api: SocketAddr::from(([127, 0, 0, 1], api_port)),
        }
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = command(env!("CARGO_BIN_EXE_outpost-agent"))
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    /// The active model's bundle digest, once the API answers (None: no model).
    async fn active(&self, secs: u64) -> Option<Digest> {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            match try_request(self.api, "GET", "/v1/model", b"").await {
                Some((200, b)) => {
                    let v: Value = serde_json::from_str(&b).unwrap();
                    return v["bundle"].as_str().and_then(|s| s.parse().ok());
                }
                Some((503, _)) => return None,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        panic!(
            "agent API did not come up; log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn persisted_chunks(data: &Path, d: Digest) -> BTreeSet<u32> {
    std::fs::read_dir(
        data.join("update/models/vibration-anomaly/download")
            .join(d.to_hex()),
    )
    .map(|rd| {
        rd.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect()
    })
    .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_mid_transfer_fetches_only_the_missing_and_torn_chunks_after_restart() {
    let port = embedded_broker();
    let dir = tempfile::tempdir().unwrap();
    let (key, trust) = keys(dir.path());
    let peer = Peer::connect(port).await;
    let cnn = fixture_bundle(&key, "vibration-cnn", 1, 16 * 1024);
    let n = peer.serve(cnn.bytes.clone()).chunk_count();
    *peer.frame_delay.lock().unwrap() = Duration::from_millis(30);
    let mut agent = AgentProc::new(dir.path(), "gw-kill", port, &trust);
    agent.start();
    peer.publish_directive("gw-kill", directive(&key, "gw-kill", 1, &cnn))
        .await;
    assert!(wait_until(60, || peer.served("gw-kill").len() as u32 >= n / 3).await);
    agent.kill();
    // Let answers already in flight to the dead process drain, then count from zero.
    assert!(wait_until(20, || peer.idle()).await);
    let mut held = persisted_chunks(&dir.path().join("data"), cnn.digest);
    assert!(
        held.len() >= 2 && (held.len() as u32) < n,
        "killed mid-transfer: {} of {n} held",
        held.len()
    );
    // What a power cut can leave of chunks written without fsync: one torn, one empty.
    // Both must be found bad on resume and fetched again.
    let chunk_dir = dir
        .path()
        .join("data/update/models/vibration-anomaly/download")
        .join(cnn.digest.to_hex());
    let torn: Vec<u32> = held.iter().take(2).copied().collect();
    let half = std::fs::read(chunk_dir.join(torn[0].to_string())).unwrap();
    std::fs::write(chunk_dir.join(torn[0].to_string()), &half[..half.len() / 2]).unwrap();
    std::fs::write(chunk_dir.join(torn[1].to_string()), b"").unwrap();
    for t in &torn {
        held.remove(t);
    }
    let missing: BTreeSet<u32> = (0..n).filter(|i| !held.contains(i)).collect();
    peer.clear_served("gw-kill");
    *peer.frame_delay.lock().unwrap() = Duration::ZERO;

    agent.start();
    let ok = wait_until(60, || {
        peer.state("gw-kill").is_some_and(|s| {
            s.model("vibration-anomaly")
                .is_some_and(|m| m.active.as_ref().is_some_and(|a| a.bundle == cnn.digest))
        })
    })
    .await;
    assert!(ok, "transfer did not complete after restart");
    let after = peer.served("gw-kill");
    let after_set: BTreeSet<u32> = after.iter().copied().collect();
    assert_eq!(
        after_set, missing,
        "after the restart only the missing chunks are fetched"
    );
    // Each missing chunk once, plus at most one window (8): requests the killed process had
    // already published are still answered after the restart.
    assert!(
        after.len() <= missing.len() + 8,
        "{} fetches for {} missing chunks",
        after.len(),
        missing.len()
    );
    eprintln!(
        "killed with {} of {n} chunks held; restart fetched {} chunks for {} missing",
        held.len(),
        after.len(),
        missing.len()
    );
    assert_eq!(agent.active(10).await, Some(cnn.digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_during_an_update_always_leaves_a_valid_model() {
    let port = embedded_broker();
    let root = tempfile::tempdir().unwrap();
    let (key, trust) = keys(root.path());
    let peer = Peer::connect(port).await;
    let v1 = fixture_bundle(&key, "vibration-anomaly", 1, 64 * 1024);
    let v2 = fixture_bundle(&key, "vibration-cnn", 2, 64 * 1024);
    peer.serve(v1.bytes.clone());
    peer.serve(v2.bytes.clone());

    // A template device with v1 installed and healthy.
    let template = root.path().join("template");
    let mut a = AgentProc::new(&template, "gw-crash", port, &trust);
    a.start();
    peer.publish_directive("gw-crash", directive(&key, "gw-crash", 1, &v1))
        .await;
    assert!(
        wait_until(60, || peer.state("gw-crash").is_some_and(|s| s
            .model("vibration-anomaly")
            .is_some_and(|m| m.phase == UpdatePhase::Succeeded)))
        .await
    );
    a.kill();
    drop(a);

    // From now on the retained directive asks for v2. Calibrate how long an update takes.
    peer.publish_directive("gw-crash", directive(&key, "gw-crash", 2, &v2))
        .await;
    let run_dir = |i: usize| {
        let d = root.path().join(format!("run-{i}"));
        copy_dir(&template, &d);
        d
    };
    let d = run_dir(0);
    let mut a = AgentProc::new(&d, "gw-crash", port, &trust);
    let t0 = Instant::now();
    a.start();
    let mut calibrated = Duration::ZERO;
    while t0.elapsed() < Duration::from_secs(60) {
        if try_request(a.api, "GET", "/v1/model", b"")
            .await
            .is_some_and(|(s, b)| s == 200 && b.contains(&v2.digest.to_hex()))
        {
            calibrated = t0.elapsed();
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!calibrated.is_zero(), "calibration update never finished");
    a.kill();

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261121);
    let (mut old, mut new) = (0, 0);
    let points = 24;
    for i in 1..=points {
        let d = run_dir(i);
        let mut a = AgentProc::new(&d, "gw-crash", port, &trust);
        a.start();
        let at = calibrated.mul_f64(rng.random_range(0.0..1.3));
        tokio::time::sleep(at).await;
        a.kill();
        a.start();
        match a.active(30).await {
            Some(x) if x == v1.digest => old += 1,
            Some(x) if x == v2.digest => new += 1,
            other => panic!(
                "kill {i} at {at:?}: after restart the agent serves {other:?}; log:\n{}",
                std::fs::read_to_string(&a.log).unwrap_or_default()
            ),
        }
        a.kill();
    }
    eprintln!(
        "update takes {calibrated:?}; after {points} kills: {old} restarted on v1, {new} on v2"
    );
    assert_eq!(old + new, points);
    assert!(
        old > 0 && new > 0,
        "kill points should land both before and after the switch"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let t = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &t);
        } else if p.extension().is_none_or(|x| x != "toml" && x != "log") {
            std::fs::copy(&p, &t).unwrap();
        }
    }
}
