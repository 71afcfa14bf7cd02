//! `outpost-bridge keys …` and `--key FILE` through the real binary: where keys are
//! written and looked for, what `device add` hands devices, the states `keys show` lists,
//! and the refusals (an open key file, a key that is not the active one, an activation
//! devices are not ready for).

mod common;

use std::path::Path;

use common::{bridge, run, text};
use serde_json::Value;

fn ok(cmd: &mut std::process::Command) -> String {
    let o = run(cmd);
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn show(data: &Path) -> Vec<Value> {
    let out = ok(bridge()
        .arg("--data-dir")
        .arg(data)
        .args(["keys", "show", "--json"]));
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn trust_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("trust"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn add_device(data: &Path, id: &str, out: &Path) -> std::process::Output {
    run(bridge()
        .arg("--data-dir")
        .arg(data)
        .args([
            "device",
            "add",
            id,
            "--target",
            "x86_64-unknown-linux-gnu",
            "--out",
        ])
        .arg(out))
}

#[test]
fn keys_live_where_commands_look_and_rotate_in_order() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    ok(bridge().arg("--data-dir").arg(&data).args(["keys", "init"]));
    let private = data.join("keys/signing.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = run(bridge().arg("--data-dir").arg(&data).args(["keys", "init"]));
    assert!(!again.status.success());
    assert!(
        text(&again).contains("already has an active signing key"),
        "{}",
        text(&again)
    );

    let keys = show(&data);
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["state"], "active");
    let first = keys[0]["key_id"].as_str().unwrap().to_owned();
    assert!(data.join(format!("keys/{first}.pub")).exists());

    // `device add` hands out the key the bridge signs with.
    let o = add_device(&data, "gw-1", &d.path().join("gw-1"));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        trust_files(&d.path().join("gw-1")),
        vec![format!("{first}.pub")]
    );

    // Rotation: a next key, handed to devices provisioned from now on as well.
    ok(bridge()
        .arg("--data-dir")
        .arg(&data)
        .args(["keys", "rotate"]));
    let keys = show(&data);
    let next = keys.iter().find(|k| k["state"] == "next").unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(data.join(format!("keys/{next}.key")).exists());
    let o = add_device(&data, "gw-2", &d.path().join("gw-2"));
    assert!(o.status.success(), "{}", text(&o));
    let mut both = vec![format!("{first}.pub"), format!("{next}.pub")];
    both.sort();
    assert_eq!(trust_files(&d.path().join("gw-2")), both);
    let twice = run(bridge()
        .arg("--data-dir")
        .arg(&data)
        .args(["keys", "rotate"]));
    assert!(
        text(&twice).contains("already the next key"),
        "{}",
        text(&twice)
    );

    // No device has reported trusting it: refused, naming them.
    let refused = run(bridge()
        .arg("--data-dir")
        .arg(&data)
        .args(["keys", "activate"]));
    assert!(!refused.status.success());
    let msg = text(&refused);
    assert!(
        msg.contains("2 of 2 devices") && msg.contains("gw-1") && msg.contains("gw-2"),
        "{msg}"
    );
    assert_eq!(
        show(&data).iter().find(|k| k["state"] == "active").unwrap()["key_id"],
        first.as_str()
    );

    // --key must be the active key.
    let wrong = run(bridge()
        .arg("--data-dir")
        .arg(&data)
        .args(["device", "add", "gw-3", "--out"])
        .arg(d.path().join("gw-3"))
        .arg("--key")
        .arg(data.join(format!("keys/{next}.key"))));
    assert!(!wrong.status.success());
    assert!(
        text(&wrong).contains(&format!(
            "holds key {next}, but the bridge's active signing key is {first}"
        )),
        "{}",
        text(&wrong)
    );

    // A key file others can read is refused with what to do, never a panic.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o644)).unwrap();
        let open = add_device(&data, "gw-4", &d.path().join("gw-4"));
        assert!(!open.status.success());
        assert!(text(&open).contains("chmod 600"), "{}", text(&open));
        assert!(!text(&open).contains("panicked"), "{}", text(&open));
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    let forced = ok(bridge()
        .arg("--data-dir")
        .arg(&data)
        .args(["keys", "activate", "--force"]));
    assert!(
        forced.contains("gw-1") && forced.contains("gw-2"),
        "{forced}"
    );
    let keys = show(&data);
    let state = |id: &str| keys.iter().find(|k| k["key_id"] == id).unwrap()["state"].clone();
    assert_eq!(
        (state(&first), state(&next)),
        ("retired".into(), "active".into())
    );
    assert_eq!(
        trust_files(&{
            let o = add_device(&data, "gw-5", &d.path().join("gw-5"));
            assert!(o.status.success(), "{}", text(&o));
            d.path().join("gw-5")
        }),
        vec![format!("{next}.pub")]
    );
    let audit = ok(bridge()
        .arg("--data-dir")
        .arg(&data)
        .args(["audit", "--json"]));
    for action in ["keys.init", "keys.rotate", "keys.activate", "keys.retire"] {
        assert!(audit.contains(action), "no {action} in {audit}");
    }
    // Key material never reaches the output.
    let secret: Value = serde_json::from_str(
        &std::fs::read_to_string(data.join(format!("keys/{next}.key"))).unwrap(),
    )
    .unwrap();
    assert!(!audit.contains(secret["pkcs8"].as_str().unwrap()));
}

#[test]
fn a_missing_key_file_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let o = run(bridge()
        .arg("--data-dir")
        .arg(d.path().join("data"))
        .args(["device", "add", "gw-1", "--out"])
        .arg(d.path().join("gw-1"))
        .arg("--key")
        .arg(d.path().join("nowhere.key")));
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("does not exist") && t.contains("keys init"),
        "{t}"
    );
    assert!(!t.contains("panicked"), "{t}");
}
