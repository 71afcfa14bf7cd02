//! Python as a test dependency: `OUTPOST_PYTHON` (default `python3`) with the modules a
//! check needs, or a printed skip — a failure under `OUTPOST_REQUIRE_PYTHON=1` (set by
//! `.ci/run`, which installs them into its venv).

/// The interpreter when it imports every module of `modules` (`"pandas, pyarrow"`); else
/// prints why the test skips (`install` says how to get them) and returns None.
///
/// Panics when `OUTPOST_REQUIRE_PYTHON=1` and the modules are missing.
pub fn with(modules: &str, install: &str) -> Option<String> {
    let py = std::env::var("OUTPOST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&py)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    if std::env::var("OUTPOST_REQUIRE_PYTHON").is_ok_and(|v| v == "1") {
        panic!("OUTPOST_REQUIRE_PYTHON=1 but {py} cannot import {modules}");
    }
    eprintln!("skipping: {py} cannot import {modules} ({install})");
    None
}
