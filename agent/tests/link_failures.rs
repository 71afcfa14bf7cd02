//! Broker connection failures are logged with their reason and the back-off, at WARN when
//! they may heal (nothing listening) and ERROR when an operator must act (a password the
//! broker refuses, against a real mosquitto), without a line per retry; the link state
//! that `status` shows carries the same reason.

use std::path::Path;
use std::time::Duration;

use outpost_agent::config::AgentConfig;
use outpost_agent::link::{self, FailureKind, LinkHandle, Routes};
use outpost_testkit::mosquitto::{Mosquitto, find, free_port};
use outpost_testkit::wait_until;
use tokio::sync::{mpsc, watch};

/// The lines logged for `device` at `level` (`WARN`, `ERROR`).
fn lines(device: &str, level: &str) -> Vec<String> {
    outpost_testkit::logs::text()
        .lines()
        .filter(|l| l.contains(level) && l.contains(&format!("device={device}")))
        .map(str::to_owned)
        .collect()
}

struct Link {
    handle: LinkHandle,
    _stop: watch::Sender<bool>,
    _state: watch::Sender<Option<outpost_protocol::wire::ReportedState>>,
    _update: mpsc::Receiver<link::UpdateInbound>,
}

fn start(dir: &Path, device: &str, broker: &str) -> Link {
    let toml = format!(
        "device_id = \"{device}\"\ndata_dir = \"{0}/data\"\ntrust_dir = \"{0}/trust\"\n\
         [broker]\nurl = \"mqtt://127.0.0.1:{broker}\"\nreconnect_min_ms = 10\nreconnect_max_ms = 40\n",
        dir.display()
    );
    let cfg = AgentConfig::from_toml(&toml).unwrap();
    let (update, update_rx) = mpsc::channel(64);
    let (state, state_rx) = watch::channel(None);
    let (stop, stop_rx) = watch::channel(false);
    let (handle, task) = link::start(
        &cfg.device_id,
        &cfg.broker,
        None,
        Routes { update, acks: None },
        state_rx,
        stop_rx,
    )
    .unwrap();
    tokio::spawn(task);
    Link {
        handle,
        _stop: stop,
        _state: state,
        _update: update_rx,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_a_warning_with_the_reason_and_no_flood() {
    outpost_testkit::logs::capture();
    let d = tempfile::tempdir().unwrap();
    let device = "gw-unreachable";
    let l = start(d.path(), device, &free_port().to_string());
    let h = l.handle.clone();
    assert!(
        wait_until(20, || h.state().failed_attempts >= 20).await,
        "{:?}",
        h.state()
    );
    let st = h.state();
    let e = st.last_error.clone().expect("a reason");
    assert_eq!(e.kind, FailureKind::Unreachable, "{e:?}");
    assert!(e.reason.contains("connection refused"), "{}", e.reason);
    assert!(!st.connected && st.retry_in_ms.is_some_and(|ms| ms <= 40));

    let warn = lines(device, "WARN");
    assert!(
        warn[0].contains("cannot connect to the broker; retrying in")
            && warn[0].contains("connection refused"),
        "{warn:?}"
    );
    assert!(
        lines(device, "ERROR").is_empty(),
        "transient is not an ERROR"
    );
    // 20+ attempts: the first, then reminders at the 2nd, 4th, 8th, 16th…
    let attempts = h.state().failed_attempts as usize;
    assert!(
        warn.len() <= 2 + attempts.ilog2() as usize,
        "{} WARN lines for {attempts} attempts: {warn:#?}",
        warn.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_is_one_error_naming_the_reason() {
    let Some(bin) = find() else {
        eprintln!(
            "skipped: mosquitto is not installed (OUTPOST_REQUIRE_MOSQUITTO=1 makes this a failure)"
        );
        return;
    };
    let Some(passwd) = [
        "/usr/bin/mosquitto_passwd",
        "/usr/local/bin/mosquitto_passwd",
    ]
    .into_iter()
    .map(Path::new)
    .find(|p| p.exists()) else {
        eprintln!("skipped: mosquitto_passwd is not installed");
        return;
    };
    outpost_testkit::logs::capture();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let pwfile = dir.join("passwd");
    let ok = std::process::Command::new(passwd)
        .arg("-c")
        .arg("-b")
        .arg(&pwfile)
        .args(["gw-auth", "the-right-one"])
        .status()
        .unwrap();
    assert!(ok.success());
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "# Tests may run as root: keep mosquitto from switching users.\n\
             user root\npersistence false\nlog_dest stdout\nallow_anonymous false\n\
             password_file {}\nlistener {port} 127.0.0.1\n",
            pwfile.display()
        ),
    )
    .unwrap();
    let broker = Mosquitto::from_config(&bin, &conf, &[port]);
    std::fs::write(dir.join("wrong"), "not-the-password\n").unwrap();

    let device = "gw-auth";
    let toml = format!(
        "device_id = \"{device}\"\ndata_dir = \"{0}/data\"\ntrust_dir = \"{0}/trust\"\n\
         [broker]\nurl = \"mqtt://127.0.0.1:{port}\"\nusername = \"gw-auth\"\n\
         password_file = \"{0}/wrong\"\nreconnect_min_ms = 10\nreconnect_max_ms = 40\n",
        dir.display()
    );
    let cfg = AgentConfig::from_toml(&toml).unwrap();
    let (update, _update_rx) = mpsc::channel(64);
    let (_state, state_rx) = watch::channel(None);
    let (_stop, stop_rx) = watch::channel(false);
    let (h, task) = link::start(
        &cfg.device_id,
        &cfg.broker,
        None,
        Routes { update, acks: None },
        state_rx,
        stop_rx,
    )
    .unwrap();
    tokio::spawn(task);
    assert!(
        wait_until(20, || h.state().failed_attempts >= 8).await,
        "{:?}\nmosquitto log:\n{}",
        h.state(),
        broker.log_text()
    );
    let e = h.state().last_error.expect("a reason");
    assert_eq!(e.kind, FailureKind::Auth, "{e:?}");
    assert!(
        e.reason.contains("not authorized") || e.reason.contains("bad user name or password"),
        "{}",
        e.reason
    );
    assert!(
        h.stats
            .auth_failures
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 8,
        "counted"
    );
    let errors = lines(device, "ERROR");
    assert_eq!(errors.len(), 1, "one ERROR for one reason: {errors:#?}");
    assert!(
        errors[0].contains(&e.reason)
            && errors[0].contains("broker.password_file")
            && errors[0].contains("retrying in"),
        "{}",
        errors[0]
    );
    assert!(!h.is_connected());
    tokio::time::sleep(Duration::from_millis(10)).await;
}
