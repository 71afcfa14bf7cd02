//! The bridge's dashboard in a real browser: headless Chromium driven over WebDriver
//! (chromedriver + fantoccini) against a bridge with a simulated fleet.
//!
//! The fleet: three gateways running v1 of the vibration model; a bad v2 whose canary
//! trips the output-shift gate and is rolled back; one machine drifting. The test signs
//! in through the form, then checks the fleet shows every device with its model, the
//! rolled-back deployment lists its devices with status and reason, the drift chart
//! renders, and the fleet page updates by itself (server-sent events) when a gateway's
//! link is cut. It saves a screenshot of each page (into `$OUTPOST_SCREENSHOTS` if set,
//! e.g. `docs/screenshots`; else a temporary directory).
//!
//! Needs Debian's `chromium` and `chromium-driver`: without them it says why and passes,
//! unless `OUTPOST_REQUIRE_BROWSER=1` (set by `.ci/run`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use outpost_agent::sensors::vibration::MachineMode;
use outpost_bridge::auth::{Role, add_token};
use outpost_bridge::fleet::{CreateDeployment, GateSpec, Selector, StrategySpec};
use outpost_bridge::registry::{self, ModelRecord, RegisterRequest};
use outpost_bridge::server::{self, Bridge, BrokerChoice, ServeConfig};
use outpost_sim::fleet::{DeviceOptions, DeviceSpec, SimFleet};
use serde::Serialize;
use serde::de::DeserializeOwned;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The browser and its driver, if installed; panics when required and missing.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let (c, d) = (PathBuf::from(CHROMIUM), PathBuf::from(CHROMEDRIVER));
    if c.exists() && d.exists() {
        return Some((c, d));
    }
    if std::env::var("OUTPOST_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
        panic!(
            "OUTPOST_REQUIRE_BROWSER=1 but {CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)"
        );
    }
    eprintln!(
        "skipping the dashboard browser test: {CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)"
    );
    None
}

/// chromedriver on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(bin: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn register(b: &Bridge, fixture: &str, reason: &str) -> ModelRecord {
    let dir = models().join(fixture);
    let req = RegisterRequest {
        name: "vibration-anomaly".into(),
        files: vec![dir.join("model.onnx")],
        spec: Some(dir.join("spec.toml")),
        reason: reason.into(),
        created_by: "alice".into(),
        baseline_csv: Some(models().join("vibration-anomaly/training-sample.csv")),
        ..Default::default()
    };
    registry::register(&mut b.db.lock(), &b.audit, b.bundles.as_ref(), &b.key, req)
        .unwrap()
        .0
}

fn deploy(b: &Bridge, version: u32, reason: &str) -> String {
    let strategy = StrategySpec {
        waves: vec![0.0, 1.0],
        success_threshold: 0.9,
        error_threshold: 0.1,
        timeout_secs: 60,
        on_trip: outpost_bridge::fleet::machine::OnTrip::Rollback,
        gates: GateSpec {
            max_error_rate: Some(0.05),
            max_p99_us: None,
            max_output_shift: Some(0.3),
            min_samples: 10,
            observe_secs: 1,
        },
    }
    .build()
    .unwrap();
    b.fleet
        .create(CreateDeployment {
            model: "vibration-anomaly".into(),
            version: Some(version),
            selector: Selector {
                ids: vec![],
                tags: vec![("site".into(), "plant-a".into())],
            },
            strategy,
            actor: "token:alice".into(),
            reason: reason.into(),
            skip_gates: false,
        })
        .unwrap()
        .id
}

async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(f(), "timed out after {secs} s waiting for {what}");
}

/// Evaluates `script` (a function body) in the page, its result read as a `T`.
async fn js<T: DeserializeOwned>(c: &Client, script: &str) -> T {
    let v = c.execute(script, vec![]).await.unwrap();
    serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{script} returned {v}, not the type expected: {e}"))
}

/// The page's visible text.
async fn text(c: &Client, selector: &str) -> String {
    js(
        c,
        &format!("return document.querySelector('{selector}').innerText"),
    )
    .await
}

/// Polls `script` until it returns `true`.
async fn until(c: &Client, what: &str, secs: u64, script: &str) {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if js::<bool>(c, script).await {
            return;
        }
        if Instant::now() > end {
            let page = text(c, "body").await;
            panic!("timed out after {secs} s waiting for {what}; the page says:\n{page}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The WebDriver session's capabilities: headless Chromium at `binary`.
#[derive(Serialize)]
struct Capabilities {
    #[serde(rename = "goog:chromeOptions")]
    chrome: ChromeOptions,
}

#[derive(Serialize)]
struct ChromeOptions {
    binary: PathBuf,
    args: Vec<&'static str>,
}

/// A tag value that would run script if a page put it into HTML unescaped.
const MARKUP: &str = "<script>window.__outpost_xss = 1</script>";

struct Shots(PathBuf);

impl Shots {
    /// Saves the whole page: the window is made as tall as the page first (within
    /// 800..=2400 px), then set back.
    async fn take(&self, c: &Client, name: &str) {
        let h: u32 = js(c, "return document.documentElement.scrollHeight").await;
        let h = h.clamp(800, 2400);
        // The window's frame takes about 150 px of its height.
        c.set_window_size(1400, h + 200).await.unwrap();
        let png = c.screenshot().await.unwrap();
        c.set_window_size(1400, 1000).await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(self.0.join(format!("{name}.png")), png).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_shows_the_fleet_a_deployment_and_drift_and_updates_live() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let shots_dir = match std::env::var("OUTPOST_SCREENSHOTS") {
        Ok(d) if !d.is_empty() => {
            let p = PathBuf::from(d);
            let p = if p.is_relative() {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
            } else {
                p
            };
            std::fs::create_dir_all(&p).unwrap();
            p
        }
        _ => dir.path().join("shots"),
    };
    std::fs::create_dir_all(&shots_dir).unwrap();
    let shots = Shots(shots_dir);

    // The bridge and three simulated gateways.
    let mut cfg = ServeConfig::new(dir.path().join("bridge"));
    cfg.broker = BrokerChoice::Embedded {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        auth: true,
    };
    cfg.http = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.fleet_tick = Duration::from_millis(100);
    let b = server::start(cfg).await.unwrap();
    let base = format!("http://{}", b.http_addr.unwrap());
    let token = add_token(&b.db.lock(), "alice", Role::Viewer).unwrap();
    let specs: Vec<DeviceSpec> = (1..=3)
        .map(|i| DeviceSpec {
            id: format!("gw-0{i}"),
            seed: i,
            mode: if i == 2 {
                MachineMode::Imbalance
            } else {
                MachineMode::Normal
            },
            tags: BTreeMap::from([
                ("site".to_owned(), "plant-a".to_owned()),
                ("target".to_owned(), "x86_64-unknown-linux-gnu".to_owned()),
                ("note".to_owned(), MARKUP.to_owned()),
            ]),
        })
        .collect();
    let opts = DeviceOptions {
        interval_ms: 40,
        telemetry_secs: 1,
        sample_rate: 0.2,
        health_secs: 1,
        drift_window: 32,
        drift_check: 8,
        ..DeviceOptions::default()
    };
    let fleet = SimFleet::start(&b, &dir.path().join("fleet"), &specs, &opts, true)
        .await
        .unwrap();
    // Every gateway online and reporting, as the bridge sees it (and, if not, what each
    // side says: the agents' links and the bridge's records).
    let presence = || {
        outpost_bridge::devices::list(&b.db.lock(), &[])
            .unwrap()
            .iter()
            .map(|d| {
                format!(
                    "{} online={} reported={}",
                    d.id,
                    d.online,
                    d.state.is_some()
                )
            })
            .collect::<Vec<_>>()
    };
    let all_online = || {
        presence()
            .iter()
            .filter(|p| p.ends_with("online=true reported=true"))
            .count()
            == 3
    };
    for _ in 0..600 {
        if all_online() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let links: Vec<(String, bool)> = fleet
        .devices
        .iter()
        .map(|d| (d.id.clone(), d.agent.link.is_connected()))
        .collect();
    assert!(
        all_online(),
        "not every gateway came online: bridge {:?}, agents' links {links:?}",
        presence()
    );

    // v1 everywhere, then a bad v2 (labels swapped) that the canary gate rolls back
    // while one machine drifts.
    let v1 = register(&b, "vibration-anomaly", "first release");
    let d1 = deploy(&b, v1.version, "first rollout");
    wait_for("v1 to succeed", 60, || {
        b.fleet.show(&d1).unwrap().state == "succeeded"
    })
    .await;
    let v2 = register(
        &b,
        "vibration-anomaly-swapped",
        "retrained (labels swapped)",
    );
    let d2 = deploy(&b, v2.version, "second rollout");
    fleet
        .get("gw-03")
        .unwrap()
        .sim
        .as_ref()
        .unwrap()
        .set_drift(0.8);
    wait_for("v2 to be rolled back", 60, || {
        b.fleet.show(&d2).unwrap().state == "rolled_back"
    })
    .await;
    wait_for("gw-03 to drift", 60, || {
        outpost_bridge::drift::latest(&b.db.lock(), outpost_bridge::db::now_ms(), 120_000)
            .is_ok_and(|r| r.iter().any(|d| d.device == "gw-03" && d.drifting))
    })
    .await;

    // The browser.
    let driver = Driver::start(&chromedriver);
    let caps = Capabilities {
        chrome: ChromeOptions {
            binary: chromium,
            args: vec![
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1400,1000",
            ],
        },
    };
    let caps = match serde_json::to_value(caps).unwrap() {
        serde_json::Value::Object(m) => m,
        _ => unreachable!("a struct serialises to an object"),
    };
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("chromedriver session");

    // Not signed in: the sign-in form (401); a wrong token is refused.
    c.goto(&format!("{base}/ui")).await.unwrap();
    c.find(Locator::Css("form.login")).await.unwrap();
    shots.take(&c, "login").await;
    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys("opt_wrong")
        .await
        .unwrap();
    c.find(Locator::Css("form.login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(&c, "the refusal", 10, "return document.querySelector('p.error') !== null && document.querySelector('p.error').innerText.includes('unknown or revoked')").await;
    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(&token)
        .await
        .unwrap();
    c.find(Locator::Css("form.login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        &c,
        "the fleet page",
        10,
        "return document.querySelector('#devices') !== null",
    )
    .await;
    // The session cookie is HttpOnly: page scripts cannot read it.
    assert_eq!(js::<String>(&c, "return document.cookie").await, "");

    // Fleet: every device, online, on v1 (v2 was rolled back), live feed up.
    let rows: Vec<(String, String)> = js(&c, "return Array.from(document.querySelectorAll('#devices tr[data-device]')).map(r => [r.dataset.device, r.innerText])").await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (i, (id, text)) in rows.iter().enumerate() {
        assert_eq!(*id, format!("gw-0{}", i + 1));
        assert!(text.contains("online"), "{text}");
        assert!(text.contains("vibration-anomaly v1"), "{text}");
        // The tag holding markup shows as text and ran nothing.
        assert!(text.contains(MARKUP), "{text}");
    }
    assert!(js::<bool>(&c, "return window.__outpost_xss === undefined").await);
    until(
        &c,
        "the live feed",
        10,
        "return document.getElementById('live-status').classList.contains('on')",
    )
    .await;
    shots.take(&c, "fleet").await;

    // The rolled-back deployment: its devices with status and reason, the failed gate,
    // waves numbered 1..N of N, the timeline.
    c.goto(&format!("{base}/ui/deployments/{d2}"))
        .await
        .unwrap();
    let devices: Vec<String> = js(&c, "return Array.from(document.querySelectorAll('#deployment-devices tr[data-device]')).map(r => r.innerText)").await;
    assert_eq!(devices.len(), 3, "{devices:?}");
    assert!(
        devices.iter().any(|r| r.contains("rolled back")),
        "the canary was sent back: {devices:?}"
    );
    let state = text(&c, "#deployment-state").await;
    assert!(
        state.contains("rolled_back") && state.contains("output shift"),
        "{state}"
    );
    let gates = text(&c, "#gates").await;
    assert!(gates.contains("fail"), "{gates}");
    let waves = text(&c, "#waves").await;
    assert!(waves.contains("2 of 2"), "{waves}");
    let timeline = text(&c, "#timeline").await;
    assert!(timeline.contains("deployment"), "{timeline}");
    shots.take(&c, "deployment").await;
    c.goto(&format!("{base}/ui/deployments")).await.unwrap();
    let n: usize = js(
        &c,
        "return document.querySelectorAll('#deployments tr[data-deployment]').length",
    )
    .await;
    assert_eq!(n, 2);
    shots.take(&c, "deployments").await;

    // Drift: the chart renders (a uPlot canvas with one line per device) and the
    // drifting device is named.
    c.goto(&format!("{base}/ui/drift")).await.unwrap();
    // (One script: a live update may swap the content between two calls.)
    until(&c, "the drift chart, one line per reporting device", 15, "const c = document.querySelector('.chart[data-rendered]'); return c !== null && c.querySelector('canvas') !== null && c.querySelector('canvas').width > 0 && Number(c.dataset.series) === 3").await;
    let drifting = text(&c, "#drift-groups").await;
    assert!(drifting.contains("gw-03"), "{drifting}");
    // The drifting device's worst features, each with its PSI.
    let worst: Vec<String> = js(&c, "return Array.from(document.querySelectorAll('#drift-devices tr[data-device=\"gw-03\"] .tag')).map(t => t.innerText)").await;
    assert!(!worst.is_empty(), "no worst features for gw-03");
    for w in &worst {
        let psi = w.rsplit(' ').next().and_then(|p| p.parse::<f64>().ok());
        assert!(psi.is_some_and(|p| p > 0.0), "{worst:?}");
    }
    shots.take(&c, "drift").await;

    // A device, the audit trail and the events.
    c.goto(&format!("{base}/ui/devices/gw-01")).await.unwrap();
    let models = text(&c, "#device-models").await;
    assert!(models.contains("vibration-anomaly"), "{models}");
    shots.take(&c, "device").await;
    c.goto(&format!("{base}/ui/audit")).await.unwrap();
    let audit = text(&c, "#audit").await;
    assert!(audit.contains("model.register"), "{audit}");
    shots.take(&c, "audit").await;
    c.goto(&format!("{base}/ui/events")).await.unwrap();
    let events = text(&c, "#events").await;
    assert!(events.contains("gw-01"), "{events}");
    shots.take(&c, "events").await;
    // An unknown deployment is a 404 page, not an error trace.
    c.goto(&format!("{base}/ui/deployments/dep-999"))
        .await
        .unwrap();
    let body = text(&c, "body").await;
    assert!(body.contains("not found"), "{body}");

    // Live: the fleet page, left open, shows gw-02 go offline when its link is cut —
    // without reloading (a marker set in the page survives).
    c.goto(&format!("{base}/ui")).await.unwrap();
    until(
        &c,
        "the live feed",
        10,
        "return document.getElementById('live-status').classList.contains('on')",
    )
    .await;
    assert!(js::<bool>(&c, "window.__outpost_marker = 42; return true").await);
    fleet.get("gw-02").unwrap().proxy.cut(true);
    until(&c, "gw-02 to show offline", 20, "const r = document.querySelector('#devices tr[data-device=\"gw-02\"]'); return r !== null && r.querySelector('td.presence').innerText.includes('offline')").await;
    assert_eq!(js::<u32>(&c, "return window.__outpost_marker").await, 42);
    assert_eq!(text(&c, "#devices-offline").await, "1");
    shots.take(&c, "fleet-live").await;
    fleet.get("gw-02").unwrap().proxy.cut(false);

    c.close().await.unwrap();
    drop(driver);
    fleet.shutdown(Duration::from_secs(2)).await;
    b.shutdown().await;
}
