//! The real agent binary killed with SIGKILL while its models update: an aborted
//! download is never activated after a restart, and with two models updating through
//! twenty kills every restart serves a valid version and the device converges to what the
//! bridge intends.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::harness::*;
use outpost_bridge::fleet::StrategySpec;
use outpost_bridge::fleet::machine::Command;
use outpost_bridge::server::Bridge;
use outpost_protocol::wire::{ReportedState, UpdatePhase};
use rand::{Rng, SeedableRng};

fn state(b: &Bridge, dev: &str) -> Option<ReportedState> {
    outpost_bridge::devices::show(&b.db.lock(), dev).ok()?.state
}

/// One wave; kills make devices slow, not failed: no wave times out during the test.
fn patient() -> outpost_bridge::fleet::machine::Strategy {
    StrategySpec {
        waves: vec![1.0],
        timeout_secs: 600,
        gates: outpost_bridge::fleet::GateSpec {
            max_error_rate: None,
            max_output_shift: None,
            min_samples: 0,
            observe_secs: 0,
            ..Default::default()
        },
        ..Default::default()
    }
    .build()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_a_download_that_is_then_aborted_it_never_activates_the_aborted_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge_with(&dir.path().join("bridge"), embedded(false), |c| {
        c.chunk_rate = 20.0;
    })
    .await;
    register(&b, "vibration-anomaly", "vib");
    let v2 = register(&b, "vibration-cnn", "vib");
    let trust = trust_dir(&b, dir.path());
    let data = dir.path().join("gw-k");
    let mut a = AgentProcess::new(
        &dir.path().join("proc"),
        &agent_toml(&b, "gw-k", &data, &trust, ""),
    );
    a.start();
    assert!(wait_until(30, || state(&b, "gw-k").is_some()).await);
    deploy_with(&b, "vib", 1, &["gw-k"], patient()).await;
    assert!(settled(&b, "gw-k", "vib", 1, 60).await, "{}", a.log_text());

    // Anything reporting v2 active, from now on, is a failure.
    let seen_v2 = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (db, seen, stop, digest) = (
            b.db.clone(),
            seen_v2.clone(),
            stop.clone(),
            v2.digest.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let s = outpost_bridge::devices::show(&db.lock(), "gw-k")
                    .ok()
                    .and_then(|d| d.state);
                if s.and_then(|s| s.model("vib").cloned())
                    .and_then(|m| m.active)
                    .is_some_and(|a| a.bundle.to_hex() == digest)
                {
                    seen.store(true, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    let d2 = deploy_with(&b, "vib", 2, &["gw-k"], patient()).await;
    assert!(
        wait_until(60, || state(&b, "gw-k")
            .and_then(|s| s.model("vib").cloned())
            .is_some_and(
                |m| m.phase == UpdatePhase::Downloading && m.chunks_done > 8
            ))
        .await,
        "{}",
        a.log_text()
    );
    a.kill();
    b.fleet
        .command(&d2, Command::Abort("stop that".into()), "ops")
        .unwrap();
    a.start();
    assert!(
        wait_until(60, || state(&b, "gw-k")
            .and_then(|s| s.model("vib").cloned())
            .is_some_and(|m| m.phase == UpdatePhase::Succeeded
                && m.target.as_ref().is_some_and(|t| t.model.version == 1)))
        .await,
        "{:?}\n{}",
        state(&b, "gw-k"),
        a.log_text()
    );
    // Long enough for the old download to have finished had it resumed.
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::Relaxed);
    assert!(
        !seen_v2.load(Ordering::Relaxed),
        "the aborted bundle was activated"
    );
    assert!(settled(&b, "gw-k", "vib", 1, 5).await);
    assert!(!a.log_text().contains("version=2 slot"), "{}", a.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kills_while_two_models_update_leave_valid_versions_and_converge() {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(&dir.path().join("bridge"), embedded(false)).await;
    let vib = [
        register(&b, "vibration-anomaly", "vib"),
        register(&b, "vibration-anomaly-swapped", "vib"),
    ];
    let ridge = [
        register_with(&b, "sklearn/ridge", "ridge", 16 * 1024).unwrap(),
        register_with(&b, "sklearn/ridge", "ridge", 16 * 1024).unwrap(),
    ];
    let valid = |model: &str, digest: &str| {
        let set = if model == "vib" { &vib } else { &ridge };
        set.iter().any(|r| r.digest == digest)
    };
    let trust = trust_dir(&b, dir.path());
    let data = dir.path().join("gw-kk");
    let mut a = AgentProcess::new(
        &dir.path().join("proc"),
        &agent_toml(&b, "gw-kk", &data, &trust, ""),
    );
    a.start();
    assert!(wait_until(30, || state(&b, "gw-kk").is_some()).await);
    deploy_with(&b, "vib", 1, &["gw-kk"], patient()).await;
    deploy_with(&b, "ridge", 1, &["gw-kk"], patient()).await;
    assert!(settled(&b, "gw-kk", "vib", 1, 60).await, "{}", a.log_text());
    assert!(
        settled(&b, "gw-kk", "ridge", 1, 60).await,
        "{}",
        a.log_text()
    );

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x6b69_6c6c);
    let mut round = 0u64;
    for kill in 0..20 {
        // Every few kills, the bridge changes its mind about one of the models.
        if kill % 5 == 0 {
            round += 1;
            // ridge v2, vib v2, ridge v1, vib v1.
            let model = if round.is_multiple_of(2) {
                "vib"
            } else {
                "ridge"
            };
            let v = if round % 4 < 2 { 2 } else { 1 };
            let open: Vec<String> = b
                .fleet
                .list(&outpost_bridge::fleet::DeploymentFilter {
                    model: Some(model.into()),
                    ..Default::default()
                })
                .unwrap()
                .into_iter()
                .filter(|d| matches!(d.state.as_str(), "running" | "paused"))
                .map(|d| d.id)
                .collect();
            for id in open {
                let _ = b
                    .fleet
                    .command(&id, Command::Abort("superseded".into()), "ops");
            }
            deploy_with(&b, model, v, &["gw-kk"], patient()).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..1500))).await;
        let connection = || -> Option<i64> {
            b.db.lock()
                .query_row(
                    "SELECT presence_counter FROM devices WHERE id = 'gw-kk'",
                    [],
                    |r| r.get(0),
                )
                .ok()
                .flatten()
        };
        let before = connection();
        a.kill();
        let killed_at = outpost_bridge::db::now();
        a.start();
        // After each restart (a new connection), every model serves a valid version.
        assert!(
            wait_until(30, || connection() > before
                && state(&b, "gw-kk").is_some_and(|s| s.at >= killed_at
                    && ["vib", "ridge"].iter().all(|m| s.model(m).is_some_and(
                        |ms| ms
                            .active
                            .as_ref()
                            .is_some_and(|x| valid(m, &x.bundle.to_hex()))
                    ))))
            .await,
            "kill {kill}: {:#?}\n{}",
            state(&b, "gw-kk"),
            a.log_text()
        );
    }
    // Converged: each model runs what the bridge intends for it.
    let intended = || outpost_bridge::fleet::desired::entries(&b.db.lock(), "gw-kk").unwrap();
    assert!(
        wait_until(90, || {
            let s = state(&b, "gw-kk");
            intended().iter().all(|t| {
                s.as_ref().and_then(|s| s.model(&t.name)).is_some_and(|m| {
                    m.phase == UpdatePhase::Succeeded
                        && m.active.as_ref().is_some_and(|x| x.bundle == t.digest)
                })
            })
        })
        .await,
        "intended {:?}\nreported {:#?}\n{}",
        intended(),
        state(&b, "gw-kk"),
        a.log_text()
    );
    a.stop();
}
