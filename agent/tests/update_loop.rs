//! The updater's IO loop with several models, driven through its real interfaces (the
//! [`Publish`] seam, the inbound channel, the model handle, the reported state) by an
//! in-process bundle server instead of a broker: real bundles, real slots on disk, real
//! model loads and self-tests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_agent::config::{ModelsConfig, UpdateConfig};
use outpost_agent::link::{Publish, PublishError, UpdateInbound};
use outpost_agent::models::ModelHandle;
use outpost_agent::update::disk::UpdateDisk;
use outpost_agent::update::{Updater, UpdaterParts};
use outpost_protocol::bundle::BuiltBundle;
use outpost_protocol::directive::ModelTarget;
use outpost_protocol::serve::ServedBundle;
use outpost_protocol::tensor::Tensor;
use outpost_protocol::wire::{ChunkRequest, ReportedState, UpdatePhase};
use outpost_protocol::{Digest, Limits, SigningKey, TrustStore};
use outpost_testkit::{bundle, directive, directive_at, keys, target, unix_now, wait_until};
use tokio::sync::{mpsc, watch};

const DEVICE: &str = "gw-loop";

/// Answers chunk requests from the bundles it holds, straight back into the updater's
/// inbound channel; `hold` stalls one bundle's payload chunks (a slow download).
struct Loopback {
    bundles: Mutex<BTreeMap<Digest, ServedBundle>>,
    tx: mpsc::Sender<UpdateInbound>,
    hold: Mutex<Option<Digest>>,
    requests: Mutex<BTreeMap<Digest, u64>>,
}

impl Publish for Loopback {
    fn publish(&self, _topic: String, payload: Vec<u8>, _retain: bool) -> Result<(), PublishError> {
        let req = ChunkRequest::decode(&payload, &Limits::default()).expect("request decodes");
        *self.requests.lock().unwrap().entry(req.bundle).or_default() += 1;
        if *self.hold.lock().unwrap() == Some(req.bundle) && !req.chunks.is_empty() {
            return Ok(());
        }
        let frames = match self.bundles.lock().unwrap().get(&req.bundle) {
            Some(b) => b.respond(&req),
            None => return Ok(()),
        };
        for f in frames {
            // The updater may be busy; a dropped frame is re-requested after the timeout.
            let _ = self.tx.try_send(UpdateInbound::Frame(f.encode()));
        }
        Ok(())
    }
}

struct Rig {
    key: SigningKey,
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    trust: std::path::PathBuf,
    models: ModelHandle,
    state: watch::Receiver<Option<ReportedState>>,
    tx: mpsc::Sender<UpdateInbound>,
    link: Arc<Loopback>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    budget: ModelsConfig,
}

fn update_cfg() -> UpdateConfig {
    UpdateConfig {
        window: 8,
        request_timeout: Duration::from_millis(300),
        health_inferences: 0,
        health_window: Duration::from_millis(300),
        max_probation_boots: 2,
        max_clock_skew_secs: 600,
    }
}

fn start(
    key: SigningKey,
    dir: tempfile::TempDir,
    trust: std::path::PathBuf,
    budget: ModelsConfig,
    link: Option<Arc<Loopback>>,
) -> Rig {
    let data = dir.path().join("data");
    let (tx, rx) = mpsc::channel(4096);
    let link = match link {
        Some(l) => Arc::new(Loopback {
            bundles: Mutex::new(std::mem::take(&mut *l.bundles.lock().unwrap())),
            tx: tx.clone(),
            hold: Mutex::new(None),
            requests: Mutex::new(BTreeMap::new()),
        }),
        None => Arc::new(Loopback {
            bundles: Mutex::new(BTreeMap::new()),
            tx: tx.clone(),
            hold: Mutex::new(None),
            requests: Mutex::new(BTreeMap::new()),
        }),
    };
    let models = ModelHandle::default();
    let (report, state) = watch::channel(None);
    let parts = UpdaterParts {
        device_id: DEVICE.into(),
        tags: BTreeMap::new(),
        cfg: update_cfg(),
        budget,
        trust: TrustStore::load_dir(&trust).unwrap(),
        trust_dir: Some(trust.clone()),
        disk: UpdateDisk::open(&data).unwrap(),
        models: models.clone(),
        report,
        events: None,
    };
    let updater = Updater::boot(parts);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(updater.run(link.clone(), rx, shutdown_rx));
    tx.try_send(UpdateInbound::Connected).unwrap();
    Rig {
        key,
        _dir: dir,
        data,
        trust,
        models,
        state,
        tx,
        link,
        shutdown,
        task,
        budget,
    }
}

fn rig(budget: ModelsConfig) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let (key, trust) = keys(dir.path());
    start(key, dir, trust, budget, None)
}

impl Rig {
    fn serve(&self, b: &BuiltBundle) -> ModelTarget {
        self.link
            .bundles
            .lock()
            .unwrap()
            .insert(b.digest, ServedBundle::new(b.bytes.clone()).unwrap());
        target(
            b,
            &format!(
                "dep-{}-v{}",
                b.manifest.model.name, b.manifest.model.version
            ),
        )
    }

    async fn send(&self, seq: u64, models: &[ModelTarget]) {
        let d = directive(&self.key, DEVICE, seq, models);
        self.tx.send(UpdateInbound::Directive(d)).await.unwrap();
    }

    fn state(&self) -> Option<ReportedState> {
        self.state.borrow().clone()
    }

    fn version(&self, name: &str) -> Option<u32> {
        self.models.get(name).map(|m| m.info.model.version)
    }

    /// Waits until model `name` serves `version` and its update is settled as `phase`.
    async fn settled(&self, name: &str, version: u32, phase: UpdatePhase) -> bool {
        wait_until(60, || {
            self.version(name) == Some(version)
                && self.state().is_some_and(|s| {
                    s.model(name).is_some_and(|m| {
                        m.phase == phase
                            && m.active.as_ref().map(|a| a.model.version) == Some(version)
                    })
                })
        })
        .await
    }

    async fn stop(
        self,
    ) -> (
        SigningKey,
        tempfile::TempDir,
        std::path::PathBuf,
        Arc<Loopback>,
    ) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        (self.key, self._dir, self.trust, self.link)
    }
}

fn ridge_input() -> Vec<Tensor> {
    let (_, samples) = outpost_testkit::fixture_spec("sklearn/ridge");
    samples[0].inputs.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_updates_rolls_back_and_leaves_while_its_neighbour_serves_without_a_failure() {
    let r = rig(ModelsConfig::default());
    let vib1 = bundle(&r.key, "vibration-anomaly", "vib", 1, 4096);
    let vib2 = bundle(&r.key, "vibration-anomaly", "vib", 2, 4096);
    let ridge = bundle(&r.key, "sklearn/ridge", "ridge", 3, 4096);
    let (t_vib1, t_vib2, t_ridge) = (r.serve(&vib1), r.serve(&vib2), r.serve(&ridge));

    r.send(1, &[t_vib1.clone(), t_ridge.clone()]).await;
    assert!(
        r.settled("vib", 1, UpdatePhase::Succeeded).await,
        "{:#?}",
        r.state()
    );
    assert!(
        r.settled("ridge", 3, UpdatePhase::Succeeded).await,
        "{:#?}",
        r.state()
    );
    let ridge_model = r.models.get("ridge").unwrap();

    // A client hammers ridge for the rest of the test.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = {
        let (models, stop, ok, failed) =
            (r.models.clone(), stop.clone(), ok.clone(), failed.clone());
        let input = ridge_input();
        tokio::task::spawn_blocking(move || {
            while !stop.load(Ordering::Relaxed) {
                match models.get("ridge").map(|m| m.infer(&input, None)) {
                    Some(Ok(_)) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };

    // vib → v2 (download, install, probation).
    r.send(2, &[t_vib2.clone(), t_ridge.clone()]).await;
    assert!(
        r.settled("vib", 2, UpdatePhase::Succeeded).await,
        "{:#?}",
        r.state()
    );
    let s = r.state().unwrap();
    assert_eq!(
        s.model("vib")
            .unwrap()
            .previous
            .as_ref()
            .unwrap()
            .model
            .version,
        1
    );

    // vib → v1 again: a rollback to the other slot, without downloading.
    let before = r.link.requests.lock().unwrap().get(&vib1.digest).copied();
    r.send(3, &[t_vib1.clone(), t_ridge.clone()]).await;
    assert!(
        r.settled("vib", 1, UpdatePhase::Succeeded).await,
        "{:#?}",
        r.state()
    );
    assert_eq!(
        r.link.requests.lock().unwrap().get(&vib1.digest).copied(),
        before
    );

    // vib leaves the set: unloaded, its slots freed, no longer reported.
    r.send(4, std::slice::from_ref(&t_ridge)).await;
    assert!(
        wait_until(30, || r.models.get("vib").is_none()
            && r.state().is_some_and(|s| s.model("vib").is_none()))
        .await,
        "{:#?}",
        r.state()
    );
    assert!(
        !r.data.join("update/models/vib").exists(),
        "vib's slots were not freed"
    );

    stop.store(true, Ordering::Relaxed);
    client.await.unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests to ridge failed"
    );
    assert!(ok.load(Ordering::Relaxed) > 50, "the client hardly ran");
    assert!(
        Arc::ptr_eq(&ridge_model, &r.models.get("ridge").unwrap()),
        "ridge was reloaded"
    );
    let s = r.state().unwrap();
    assert_eq!(
        s.model("ridge")
            .unwrap()
            .active
            .as_ref()
            .unwrap()
            .model
            .version,
        3
    );
    assert_eq!(s.directive_sequence, Some(4));

    // A restart restores exactly the set.
    let (key, dir, trust, link) = r.stop().await;
    let r = start(key, dir, trust, ModelsConfig::default(), Some(link));
    assert_eq!(r.version("ridge"), Some(3));
    assert_eq!(r.version("vib"), None);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_download_is_cancelled_and_never_activated() {
    let r = rig(ModelsConfig::default());
    let v1 = bundle(&r.key, "vibration-anomaly", "vib", 1, 4096);
    let v2 = bundle(&r.key, "vibration-anomaly", "vib", 2, 1024);
    let (t1, t2) = (r.serve(&v1), r.serve(&v2));
    r.send(1, std::slice::from_ref(&t1)).await;
    assert!(r.settled("vib", 1, UpdatePhase::Succeeded).await);

    // v2's payload is stalled mid-download; the operator aborts back to v1.
    *r.link.hold.lock().unwrap() = Some(v2.digest);
    r.send(2, std::slice::from_ref(&t2)).await;
    assert!(
        wait_until(30, || r.state().is_some_and(|s| s
            .model("vib")
            .unwrap()
            .phase
            == UpdatePhase::Downloading))
        .await
    );
    r.send(3, std::slice::from_ref(&t1)).await;
    assert!(
        r.settled("vib", 1, UpdatePhase::Succeeded).await,
        "{:#?}",
        r.state()
    );
    // Serving resumes; nothing may pick the old download up again.
    *r.link.hold.lock().unwrap() = None;
    let asked = r.link.requests.lock().unwrap().get(&v2.digest).copied();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(r.version("vib"), Some(1));
    assert_eq!(
        r.link.requests.lock().unwrap().get(&v2.digest).copied(),
        asked,
        "the cancelled download kept requesting chunks"
    );
    assert!(
        !r.data
            .join(format!("update/models/vib/download/{}", v2.digest.to_hex()))
            .exists(),
        "the cancelled download's chunks were kept"
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_over_the_memory_budget_is_refused_and_what_runs_keeps_running() {
    let r = rig(ModelsConfig {
        max_memory_bytes: Some(1_000_000),
        max_disk_bytes: None,
    });
    let vib = bundle(&r.key, "vibration-anomaly", "vib", 1, 4096);
    let ridge = bundle(&r.key, "sklearn/ridge", "ridge", 1, 4096);
    let (mut t_vib, mut t_ridge) = (r.serve(&vib), r.serve(&ridge));
    t_vib.memory_bytes = Some(600_000);
    t_ridge.memory_bytes = Some(600_000);
    r.send(1, &[t_vib.clone()]).await;
    assert!(r.settled("vib", 1, UpdatePhase::Succeeded).await);

    r.send(2, &[t_vib.clone(), t_ridge.clone()]).await;
    assert!(
        wait_until(10, || r
            .state()
            .is_some_and(|s| s.directive_rejected.is_some()))
        .await
    );
    let s = r.state().unwrap();
    let rej = s.directive_rejected.as_ref().unwrap();
    assert_eq!(rej.kind, "budget");
    assert_eq!(rej.sequence, Some(2));
    assert!(
        rej.reason.contains("1200000") && rej.reason.contains("1000000"),
        "{}",
        rej.reason
    );
    assert_eq!(
        s.directive_sequence,
        Some(1),
        "a refused directive must not be accepted"
    );
    assert_eq!(s.budget.memory_budget, Some(1_000_000));
    assert_eq!(s.budget.memory_used, 600_000);
    assert_eq!(r.version("vib"), Some(1));
    assert!(r.models.get("ridge").is_none());

    // A set that fits is accepted and clears the refusal.
    t_vib.memory_bytes = Some(300_000);
    r.send(3, &[t_vib, t_ridge]).await;
    assert!(
        r.settled("ridge", 1, UpdatePhase::Succeeded).await,
        "{:#?}",
        r.state()
    );
    assert!(r.state().unwrap().directive_rejected.is_none());
    let _ = r.budget;
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_future_directives_are_refused_with_both_times() {
    let r = rig(ModelsConfig::default());
    let vib = bundle(&r.key, "vibration-anomaly", "vib", 1, 4096);
    let t = r.serve(&vib);
    let now = unix_now();
    let expired = directive_at(
        &r.key,
        DEVICE,
        5,
        now - 7200,
        now - 3600,
        std::slice::from_ref(&t),
    );
    r.tx.send(UpdateInbound::Directive(expired)).await.unwrap();
    assert!(
        wait_until(10, || r
            .state()
            .is_some_and(|s| s.directive_rejected.is_some()))
        .await
    );
    let rej = r.state().unwrap().directive_rejected.unwrap();
    assert_eq!((rej.kind.as_str(), rej.sequence), ("expired", Some(5)));
    assert_eq!(rej.expires_at, Some(now - 3600));
    assert!(rej.now >= now);

    // Issued an hour ahead of this device's clock (allowed skew: 600 s).
    let future = directive_at(
        &r.key,
        DEVICE,
        6,
        now + 3600,
        now + 7200,
        std::slice::from_ref(&t),
    );
    r.tx.send(UpdateInbound::Directive(future)).await.unwrap();
    assert!(
        wait_until(10, || r.state().is_some_and(|s| s
            .directive_rejected
            .as_ref()
            .is_some_and(|j| j.kind == "not_yet_valid")))
        .await
    );
    let rej = r.state().unwrap().directive_rejected.unwrap();
    assert_eq!(rej.issued_at, Some(now + 3600));
    assert!(rej.reason.contains("clock"), "{}", rej.reason);
    assert!(r.models.get("vib").is_none());

    // A fresh one (re-issued by the bridge with a new sequence) is accepted.
    r.send(7, &[t]).await;
    assert!(r.settled("vib", 1, UpdatePhase::Succeeded).await);
    r.stop().await;
}
