//! `outpost-agent run` refuses bad configuration with one clear line and exit code 2.

mod common;

use common::command;

fn run_with(config: &str) -> (Option<i32>, String) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("agent.toml");
    std::fs::write(&p, config).unwrap();
    let o = command(env!("CARGO_BIN_EXE_outpost-agent"))
        .arg("run")
        .arg("--config")
        .arg(&p)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn bad_config_is_one_line_and_exit_2() {
    let d = tempfile::tempdir().unwrap();
    let base = format!(
        "device_id = \"gw\"\ndata_dir = \"{0}/data\"\ntrust_dir = \"{0}/trust\"\n",
        d.path().display()
    );
    for (cfg, expect) in [
        ("device_id = \n".to_string(), "line 1"),
        (format!("{base}[broker]\nurl = \"ftp://x\"\n"), "broker.url"),
        (format!("{base}[sensor]\nkind = \"lidar\"\n"), "sensor.kind"),
        (format!("{base}[api]\nhttp = \"nowhere\"\n"), "api.http"),
        (format!("{base}colour = \"blue\"\n"), "colour"),
        (
            base.replace("device_id = \"gw\"", "device_id = \"a/b\""),
            "device_id",
        ),
        // Valid syntax, but the trust directory does not exist: refused at start, exit 2.
        (base.clone(), "trust directory"),
    ] {
        let (code, err) = run_with(&cfg);
        assert_eq!(code, Some(2), "{cfg}: {err}");
        assert!(err.contains(expect), "{cfg}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.starts_with("error: "), "{err}");
    }
    let o = command(env!("CARGO_BIN_EXE_outpost-agent"))
        .args(["run", "--config", "/nonexistent/agent.toml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read config"));
}
