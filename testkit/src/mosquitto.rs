//! A real mosquitto broker for tests: found on the machine (skipped with a reason when
//! missing, a failure under `OUTPOST_REQUIRE_MOSQUITTO=1`, which `.ci/run` sets), started
//! from a configuration file, its log kept beside it, killed when dropped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where mosquitto is, if installed; panics when it is missing and
/// `OUTPOST_REQUIRE_MOSQUITTO=1`.
pub fn find() -> Option<PathBuf> {
    let found = [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists());
    if found.is_none() && std::env::var("OUTPOST_REQUIRE_MOSQUITTO").is_ok_and(|v| v == "1") {
        panic!("OUTPOST_REQUIRE_MOSQUITTO=1 but mosquitto is not installed");
    }
    found
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A running mosquitto.
pub struct Mosquitto {
    child: std::process::Child,
    log: PathBuf,
}

impl Mosquitto {
    /// Starts `bin -c conf` (stdout and stderr to `mosquitto.log` beside `conf`) and waits
    /// up to 10 s until every port in `ports` accepts connections; panics with the log if
    /// one does not.
    pub fn from_config(bin: &Path, conf: &Path, ports: &[u16]) -> Self {
        let log = conf.with_file_name("mosquitto.log");
        let out = std::fs::File::create(&log).expect("mosquitto log");
        let err = out.try_clone().expect("mosquitto log");
        let child = std::process::Command::new(bin)
            .arg("-c")
            .arg(conf)
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start mosquitto");
        let m = Self { child, log };
        let end = Instant::now() + Duration::from_secs(10);
        for p in ports {
            while std::net::TcpStream::connect(("127.0.0.1", *p)).is_err() {
                assert!(
                    Instant::now() < end,
                    "mosquitto did not start: {}",
                    m.log_text()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        m
    }

    /// What mosquitto logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
