//! Reading and validating Prometheus text exposition in tests.
//!
//! [`promtool_check`] runs the real `promtool check metrics` (Debian package
//! `prometheus`). Without promtool it prints why and returns `None` — unless
//! `OUTPOST_REQUIRE_PROMTOOL=1` (set by `.ci/run`), which makes a missing promtool a
//! failure, as `OUTPOST_REQUIRE_MOSQUITTO` does for mosquitto.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Where promtool is, if installed; panics when it is required and missing.
pub fn promtool() -> Option<PathBuf> {
    let found = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        if std::env::var("OUTPOST_REQUIRE_PROMTOOL").is_ok_and(|v| v == "1") {
            panic!(
                "OUTPOST_REQUIRE_PROMTOOL=1 but promtool is not installed (apt-get install prometheus)"
            );
        }
        eprintln!(
            "skipping the promtool check: promtool is not installed (apt-get install prometheus)"
        );
    }
    found
}

/// `promtool check metrics` on `exposition`: `None` when promtool is missing (and not
/// required), else its verdict with everything it printed.
pub fn promtool_check(exposition: &str) -> Option<Result<(), String>> {
    let bin = promtool()?;
    let mut child = Command::new(bin)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("promtool reads its input");
    let out = child.wait_with_output().expect("promtool finishes");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(if out.status.success() {
        Ok(())
    } else {
        Err(format!("promtool check metrics: {}: {said}", out.status))
    })
}

/// The value of the sample `name{labels…}` (labels given must all match; others are
/// ignored), if present once or more (the first match).
pub fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|p| p == format!("{k}=\"{v}\"")));
            if !all {
                return None;
            }
            value.parse().ok()
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn samples_are_found_by_name_and_labels() {
        let t = "# HELP a_total x\n# TYPE a_total counter\na_total{m=\"x\",v=\"1\"} 3\na_total{m=\"y\",v=\"1\"} 5\nb 2.5\n";
        assert_eq!(super::sample(t, "a_total", &[("m", "y")]), Some(5.0));
        assert_eq!(super::sample(t, "a_total", &[]), Some(3.0));
        assert_eq!(super::sample(t, "b", &[]), Some(2.5));
        assert_eq!(super::sample(t, "a_total", &[("m", "z")]), None);
        assert_eq!(super::sample(t, "a", &[]), None);
    }
}
