//! The store and sync never lose data: the real agent binary SIGKILLed at random points
//! while producing and syncing; a broker outage with records flowing; a small budget
//! filled far past capacity.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::harness::*;
use outpost_bridge::server::BrokerChoice;
use rand::{Rng, SeedableRng};

struct StoreFile {
    next_seq: u64,
    remaining: u64,
    evicted: Vec<(String, u64, u64)>,
}

/// Reads the agent's store database after the agent stopped.
fn read_store(data: &Path) -> StoreFile {
    let c = rusqlite::Connection::open(data.join("store.db")).unwrap();
    let next_seq: i64 = c
        .query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |r| {
            r.get(0)
        })
        .unwrap_or(1);
    let remaining: i64 = c
        .query_row("SELECT COUNT(*) FROM records", [], |r| r.get(0))
        .unwrap();
    let mut q = c
        .prepare("SELECT stream, first_seq, last_seq FROM evicted_log")
        .unwrap();
    let evicted = q
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    StoreFile {
        next_seq: next_seq as u64,
        remaining: remaining as u64,
        evicted,
    }
}

fn deploy_vib(b: &outpost_bridge::server::Bridge, device: &str) {
    b.fleet
        .create(outpost_bridge::fleet::CreateDeployment {
            model: "vib".into(),
            version: None,
            selector: outpost_bridge::fleet::Selector {
                ids: vec![device.into()],
                tags: vec![],
            },
            strategy: quick_strategy(),
            actor: "test".into(),
            reason: "durability test".into(),
            skip_gates: false,
        })
        .unwrap();
}

const PRODUCE: &str = "[sensor]\nkind = \"simulated\"\nmode = \"imbalance\"\ninterval_ms = 15\n[capture]\nsample_rate = 1.0\nmax_per_hour = 1000000\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_50_random_points_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(&dir.path().join("bridge"), embedded(false)).await;
    register(&b, "vibration-anomaly", "vib");
    let trust = trust_dir(&b, dir.path());
    let data = dir.path().join("agent-data");
    let toml = agent_toml(&b, "gw-crash", &data, &trust, PRODUCE);
    let mut agent = AgentProcess::new(&dir.path().join("agent"), &toml);
    agent.start();
    assert!(
        wait_until(30, || outpost_bridge::devices::show(
            &b.db.lock(),
            "gw-crash"
        )
        .is_ok())
        .await,
        "{}",
        agent.log_text()
    );
    deploy_vib(&b, "gw-crash");
    let captured = || -> i64 {
        b.db.lock()
            .query_row(
                "SELECT COUNT(*) FROM captures WHERE device = 'gw-crash'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert!(
        wait_until(60, || captured() > 20).await,
        "model never produced captures: {}",
        agent.log_text()
    );

    // Kill it at 50 random points while it produces and syncs, restarting each time.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4242);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(30..400))).await;
        agent.kill();
        agent.start();
    }
    // Let it sync, then stop producing and drain the rest.
    tokio::time::sleep(Duration::from_millis(500)).await;
    agent.kill();
    std::fs::write(
        &agent.config,
        toml.replace("kind = \"simulated\"", "kind = \"none\""),
    )
    .unwrap();
    agent.start();
    let drained = wait_until(60, || {
        let c = rusqlite::Connection::open(data.join("store.db")).unwrap();
        c.query_row("SELECT COUNT(*) FROM records", [], |r| r.get::<_, i64>(0))
            .unwrap()
            == 0
    })
    .await;
    agent.stop();
    assert!(drained, "backlog never drained: {}", agent.log_text());

    let store = read_store(&data);
    let at_bridge = bridge_seqs(&b, "gw-crash");
    let mut held: Vec<u64> = at_bridge.values().flatten().map(|(s, _)| *s).collect();
    let n = held.len();
    held.sort();
    held.dedup();
    assert_eq!(n, held.len(), "a sequence is stored under two streams");
    let committed: BTreeSet<u64> = (1..store.next_seq).collect();
    let held: BTreeSet<u64> = held.into_iter().collect();
    let missing: Vec<u64> = committed.difference(&held).copied().collect();
    let unexpected: Vec<u64> = held.difference(&committed).copied().collect();
    assert!(
        unexpected.is_empty(),
        "bridge holds sequences the store never committed: {unexpected:?}"
    );
    // Every committed record is at the bridge, unless it was counted as evicted.
    let evicted = |s: u64| store.evicted.iter().any(|(_, a, z)| (*a..=*z).contains(&s));
    let lost: Vec<u64> = missing.iter().copied().filter(|s| !evicted(*s)).collect();
    assert!(
        lost.is_empty(),
        "{} committed records neither delivered nor counted as evicted: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    assert_eq!(store.remaining, 0);
    let dups: i64 = b.db.lock().query_row("SELECT COUNT(*) - (SELECT COUNT(*) FROM (SELECT DISTINCT device, stream, seq FROM records)) FROM records", [], |r| r.get(0)).unwrap();
    assert_eq!(dups, 0);
    let captures = at_bridge.get("captures").map(Vec::len).unwrap_or(0);
    eprintln!(
        "50 SIGKILLs: {} records committed, {} at the bridge ({captures} captures), {} evicted, 0 lost",
        committed.len(),
        held.len(),
        missing.len()
    );
    assert!(
        committed.len() > 200,
        "the test produced too little to mean anything"
    );
    b.shutdown().await;
}

/// A broker that can be killed and restarted on the same port.
trait Restartable {
    fn port(&self) -> u16;
    fn kill(&mut self);
    fn restart(&mut self);
}

impl Restartable for BrokerProcess {
    fn port(&self) -> u16 {
        self.port
    }
    fn kill(&mut self) {
        BrokerProcess::kill(self)
    }
    fn restart(&mut self) {
        BrokerProcess::restart(self)
    }
}

struct MosquittoBroker(std::path::PathBuf, Option<Mosquitto>, u16);

impl Restartable for MosquittoBroker {
    fn port(&self) -> u16 {
        self.2
    }
    fn kill(&mut self) {
        self.1 = None;
    }
    fn restart(&mut self) {
        self.1 = Some(Mosquitto::start_on(&self.0, self.2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_outage_loses_nothing_and_keeps_order() {
    outage(&mut BrokerProcess::start(), "gw-out").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mosquitto_outage_loses_nothing_and_keeps_order() {
    let Some(bin) = mosquitto() else {
        eprintln!("skipped: mosquitto is not installed (.ci/run installs it)");
        return;
    };
    let m = Mosquitto::start(&bin);
    let port = m.port;
    outage(&mut MosquittoBroker(bin, Some(m), port), "gw-mout").await;
}

async fn outage(broker: &mut dyn Restartable, device: &str) {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(
        &dir.path().join("bridge"),
        BrokerChoice::External {
            host: "127.0.0.1".into(),
            port: broker.port(),
            credentials: None,
        },
    )
    .await;
    register(&b, "vibration-anomaly", "vib");
    let trust = trust_dir(&b, dir.path());
    let a = agent(&agent_toml(
        &b,
        device,
        &dir.path().join("a"),
        &trust,
        PRODUCE,
    ))
    .await;
    assert!(
        wait_until(20, || outpost_bridge::devices::show(&b.db.lock(), device)
            .is_ok())
        .await
    );
    deploy_vib(&b, device);
    let store = a.store.clone().unwrap();
    let appended = |s: &str| outpost_agent::sync::lock(&store).stats()[s].appended;
    assert!(wait_until(60, || appended("captures") > 20).await);

    broker.kill();
    assert!(wait_until(10, || !a.link.is_connected()).await);
    let before = appended("captures");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        appended("captures") > before + 20,
        "records keep flowing while offline"
    );
    broker.restart();
    assert!(
        wait_until(20, || a.link.is_connected()).await,
        "agent reconnected"
    );

    // Stop producing, then wait for the backlog to drain.
    a.shutdown(Duration::from_secs(10)).await;
    let a2 = agent(&agent_toml(&b, device, &dir.path().join("a"), &trust, "")).await;
    let store2 = a2.store.clone().unwrap();
    assert!(
        wait_until(60, || outpost_agent::sync::lock(&store2).used_bytes() == 0).await,
        "backlog never drained"
    );
    let stats = outpost_agent::sync::lock(&store2).stats().clone();
    let at_bridge = bridge_seqs(&b, device);
    for (stream, st) in &stats {
        let got = at_bridge.get(stream).cloned().unwrap_or_default();
        assert_eq!(
            st.evicted + st.rejected,
            0,
            "{stream}: nothing evicted in this test"
        );
        assert_eq!(
            got.len() as u64,
            st.appended,
            "{stream}: appended {} at the agent, {} at the bridge",
            st.appended,
            got.len()
        );
        // Order: per stream, creation time never goes backwards along the sequence.
        assert!(
            got.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{stream} out of order"
        );
    }
    assert!(at_bridge["captures"].len() > 60);
    a2.shutdown(Duration::from_secs(5)).await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_budget_filled_far_past_capacity_stays_within_it_and_reports_evictions() {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(&dir.path().join("bridge"), embedded(false)).await;
    register(&b, "vibration-anomaly", "vib");
    let trust = trust_dir(&b, dir.path());
    let data = dir.path().join("a");
    // Install the model online, then run offline (a broker nobody listens on).
    let online = agent_toml(&b, "gw-budget", &data, &trust, "");
    let a = agent(&online).await;
    assert!(
        wait_until(20, || outpost_bridge::devices::show(
            &b.db.lock(),
            "gw-budget"
        )
        .is_ok())
        .await
    );
    deploy_vib(&b, "gw-budget");
    assert!(wait_until(30, || a.models.only().is_some()).await);
    a.shutdown(Duration::from_secs(5)).await;

    let budget: u64 = 128 * 1024;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let offline = agent_toml(
        &b,
        "gw-budget",
        &data,
        &trust,
        &format!("{PRODUCE}[store]\nmax_bytes = {budget}\n"),
    )
    .replace(
        &format!("mqtt://{}:{}", b.broker.0, b.broker.1),
        &format!("mqtt://127.0.0.1:{dead}"),
    );
    let a = agent(&offline).await;
    let store = a.store.clone().unwrap();
    // Far past capacity: captures alone are ~600 bytes each.
    assert!(
        wait_until(60, || outpost_agent::sync::lock(&store).stats()["captures"]
            .appended
            > 2000)
        .await
    );
    {
        let s = outpost_agent::sync::lock(&store);
        assert!(s.used_bytes() <= budget, "{} > {budget}", s.used_bytes());
        let st = s.stats();
        assert!(st["captures"].evicted > 1000, "{st:?}");
        assert_eq!(st["events"].evicted, 0, "events are evicted last");
    }
    a.shutdown(Duration::from_secs(5)).await;
    let file = outpost_agent::store::Store::file_bytes(&data);
    // Documented bound: the file cap is 2 × budget + 1 MiB; the WAL is truncated to 4 MiB.
    assert!(
        file <= 2 * budget + (1 << 20) + (4 << 20),
        "store files are {file} bytes"
    );

    // Back online: the evictions reach the bridge in telemetry.
    let a =
        agent(&online.replace("[sync]", &format!("[store]\nmax_bytes = {budget}\n[sync]"))).await;
    let reported = || -> Option<u64> {
        let c = b.db.lock();
        let body: Option<String> = c
            .query_row("SELECT body FROM telemetry WHERE device = 'gw-budget' AND kind = 'agent' ORDER BY seq DESC LIMIT 1", [], |r| r.get(0))
            .ok();
        body.and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|v| v["evicted"]["captures"].as_u64())
    };
    assert!(
        wait_until(30, || reported().is_some_and(|n| n > 1000)).await,
        "eviction counts not reported: {:?}",
        reported()
    );
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown().await;
}
