//! Configurations for external brokers that enforce the same rules as the gate.
//!
//! `outpost-bridge broker-config mosquitto --out DIR [--tls]` writes, into `DIR`:
//!
//! | file | what |
//! |---|---|
//! | `mosquitto.conf` | two listeners (`per_listener_settings true`): devices, and the bridge on loopback |
//! | `acl` | device rules: `pattern` lines over `%u` (the username; forced to be the client id too) |
//! | `passwd` | one `$7$` (PBKDF2-SHA512) line per provisioned device (password mode) |
//! | `bridge.acl`, `bridge.passwd` | the bridge user, allowed everything, on its own listener |
//! | `bridge.password` | the bridge's password (0600), for `serve --broker-password-file`; kept across runs |
//! | `ca.pem`, `server.pem`, `server.key` | with `--tls`: the device CA and a server certificate |
//!
//! The bridge stores only a salted SHA-256 of each device password for itself, so at
//! `device add` it also stores the mosquitto hash ([`mosquitto_hash`]); devices
//! provisioned before that have none and are listed as skipped (re-provision them, or
//! use `--tls`, where the certificate is the credential).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::Connection;

use super::BRIDGE_ID;
use super::tls::{Ca, TlsError};

/// PBKDF2 rounds mosquitto_passwd uses for `$7$` hashes.
pub const MOSQUITTO_ITERATIONS: u32 = 101;

/// External-broker config errors.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The device registry could not be read.
    #[error("device database: {0}")]
    Db(#[from] rusqlite::Error),
    /// Certificates could not be issued.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A mosquitto `$7$` password hash (PBKDF2-HMAC-SHA512, 101 rounds, 12-byte salt, all as
/// `mosquitto_passwd` writes them) of `password` with a random salt.
pub fn mosquitto_hash(password: &str) -> String {
    let mut salt = [0u8; 12];
    SystemRandom::new()
        .fill(&mut salt)
        .expect("system RNG available");
    mosquitto_hash_with(password.as_bytes(), &salt, MOSQUITTO_ITERATIONS)
}

/// A `$7$` hash with the given salt and rounds (deterministic; for tests and checks).
pub fn mosquitto_hash_with(password: &[u8], salt: &[u8], iterations: u32) -> String {
    let mut out = [0u8; 64];
    let rounds = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA512,
        rounds,
        salt,
        password,
        &mut out,
    );
    format!("$7${}${}${}", rounds, B64.encode(salt), B64.encode(out))
}

/// Whether `password` matches a `$7$` hash (what mosquitto will decide).
pub fn mosquitto_verify(hash: &str, password: &str) -> bool {
    let mut parts = hash.split('$');
    let (Some(""), Some("7"), Some(rounds), Some(salt), Some(digest), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Some(rounds), Ok(salt), Ok(digest)) = (
        rounds.parse().ok().and_then(NonZeroU32::new),
        B64.decode(salt),
        B64.decode(digest),
    ) else {
        return false;
    };
    ring::pbkdf2::verify(
        ring::pbkdf2::PBKDF2_HMAC_SHA512,
        rounds,
        &salt,
        password.as_bytes(),
        &digest,
    )
    .is_ok()
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MosquittoOptions {
    /// The devices' listener.
    pub device_listen: SocketAddr,
    /// The bridge's listener (keep it on loopback or a private network).
    pub bridge_listen: SocketAddr,
    /// Mutual TLS on the devices' listener (the certificate's CN is the identity).
    pub tls: bool,
    /// Extra names for the server certificate (with `tls`).
    pub tls_names: Vec<String>,
    /// `max_packet_size` (whole packet, bytes).
    pub max_packet_bytes: usize,
    /// The user mosquitto switches to when started as root (`user`; None: its default,
    /// `mosquitto`). The generated files must be readable by that user.
    pub run_as: Option<String>,
}

impl MosquittoOptions {
    /// Devices on all interfaces, port 1883 (8883 with TLS); the bridge on
    /// 127.0.0.1:1884; the gate's packet cap.
    pub fn new(tls: bool) -> Self {
        Self {
            device_listen: SocketAddr::from(([0, 0, 0, 0], if tls { 8883 } else { 1883 })),
            bridge_listen: SocketAddr::from(([127, 0, 0, 1], 1884)),
            tls,
            tls_names: Vec::new(),
            max_packet_bytes: super::GateConfig::default().max_packet_bytes,
            run_as: None,
        }
    }
}

/// What [`write_mosquitto`] wrote.
#[derive(Debug, Clone)]
pub struct MosquittoFiles {
    /// `mosquitto.conf`.
    pub config: PathBuf,
    /// The bridge's password file (for `serve --broker-password-file`).
    pub bridge_password_file: PathBuf,
    /// Devices written to the password file.
    pub devices: Vec<String>,
    /// Provisioned devices without a mosquitto hash (provisioned before it was stored).
    pub skipped: Vec<String>,
}

/// The device ACL: the gate's rules ([`super::acl`]) as mosquitto patterns. `%u` is the
/// username, which `use_username_as_clientid` also makes the client id (and
/// `use_identity_as_username` the certificate's CN, with TLS).
pub fn device_acl() -> String {
    let mut s = String::from(
        "# Outpost devices: each confined to outpost/v1/dev/<username>/ (generated).\n",
    );
    for t in ["state", "presence", "bundle/req", "up/+"] {
        s += &format!("pattern write outpost/v1/dev/%u/{t}\n");
    }
    for t in ["directive", "bundle/resp", "ack"] {
        s += &format!("pattern read outpost/v1/dev/%u/{t}\n");
    }
    s
}

/// Writes the mosquitto configuration for every provisioned device into `out`.
pub fn write_mosquitto(
    c: &Connection,
    data_dir: &Path,
    out: &Path,
    opts: &MosquittoOptions,
) -> Result<MosquittoFiles, ExternalError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExternalError::Io { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    // mosquitto resolves relative paths against its working directory: write absolute ones.
    let dir = std::fs::canonicalize(out).map_err(io(out))?;
    let p = |name: &str| dir.join(name);

    let bridge_pw_path = p("bridge.password");
    let bridge_pw = match std::fs::read_to_string(&bridge_pw_path) {
        Ok(s) => s.trim_end().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pw = crate::devices::random_secret();
            crate::fsutil::write_secret_new(&bridge_pw_path, pw.as_bytes())
                .map_err(io(&bridge_pw_path))?;
            pw
        }
        Err(e) => return Err(io(&bridge_pw_path)(e)),
    };

    let mut devices = Vec::new();
    let mut skipped = Vec::new();
    let mut passwd = String::new();
    for (id, hash) in crate::devices::mosquitto_hashes(c)? {
        match hash {
            Some(h) => {
                passwd += &format!("{id}:{h}\n");
                devices.push(id);
            }
            None => skipped.push(id),
        }
    }
    crate::fsutil::write_secret_atomic(&p("passwd"), passwd.as_bytes())
        .map_err(io(&p("passwd")))?;
    let bridge_line = format!("{BRIDGE_ID}:{}\n", mosquitto_hash(&bridge_pw));
    crate::fsutil::write_secret_atomic(&p("bridge.passwd"), bridge_line.as_bytes())
        .map_err(io(&p("bridge.passwd")))?;
    let write = |name: &str, text: &str| {
        crate::fsutil::write_atomic(&p(name), text.as_bytes()).map_err(io(&p(name)))
    };
    write("acl", &device_acl())?;
    write(
        "bridge.acl",
        &format!(
            "# The Outpost bridge: everything (generated).\nuser {BRIDGE_ID}\ntopic readwrite #\n"
        ),
    )?;

    let device_auth = if opts.tls {
        let ca = Ca::load_or_create(data_dir)?;
        let server = ca.issue_server(&opts.tls_names)?;
        write("ca.pem", ca.pem())?;
        write("server.pem", &server.cert_pem)?;
        crate::fsutil::write_secret_atomic(&p("server.key"), server.key_pem.as_bytes())
            .map_err(io(&p("server.key")))?;
        format!(
            "cafile {}\ncertfile {}\nkeyfile {}\n\
             # The client certificate (signed by the bridge's CA) is the credential; its CN\n\
             # becomes the username, and the username the client id.\n\
             require_certificate true\nuse_identity_as_username true\n",
            p("ca.pem").display(),
            p("server.pem").display(),
            p("server.key").display()
        )
    } else {
        format!("password_file {}\n", p("passwd").display())
    };
    let listen = |a: &SocketAddr| format!("listener {} {}", a.port(), a.ip());
    let user = opts
        .run_as
        .as_ref()
        .map(|u| format!("user {u}\n"))
        .unwrap_or_default();
    let conf = format!(
        "# Generated by `outpost-bridge broker-config mosquitto`. Re-run it after `device add`\n\
         # and send mosquitto SIGHUP to reload the password and ACL files. The files must be\n\
         # readable by the user mosquitto runs as.\n\
         {user}per_listener_settings true\n\
         # The gate's limit (AWS IoT Core's 128 KB): a fleet that works here works there.\n\
         max_packet_size {max}\n\n\
         # Devices: each confined to its own subtree; a client id is always its username,\n\
         # so no client can take over another device's session.\n\
         {dev}\nallow_anonymous false\nuse_username_as_clientid true\n{device_auth}acl_file {acl}\n\n\
         # The bridge, with its own credential, on its own listener (keep it private).\n\
         {bridge}\nallow_anonymous false\npassword_file {bpw}\nacl_file {bacl}\n",
        max = opts.max_packet_bytes,
        dev = listen(&opts.device_listen),
        acl = p("acl").display(),
        bridge = listen(&opts.bridge_listen),
        bpw = p("bridge.passwd").display(),
        bacl = p("bridge.acl").display(),
    );
    write("mosquitto.conf", &conf)?;
    Ok(MosquittoFiles {
        config: p("mosquitto.conf"),
        bridge_password_file: bridge_pw_path,
        devices,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line `mosquitto_passwd -b` (2.0.11) wrote for password "secret123".
    const REFERENCE: &str = "$7$101$QCpsGkm9c7K6MZIQ$Y+Ptxsb7jEBF/u7whHhe9PY+7DGW73iTz/cC6f2qqHoLGm8FYFB7WLImvG6Rd+k4Cz9Ci3IA9kPB/YQcdaNiCg==";

    #[test]
    fn hashes_match_mosquitto_passwd() {
        let salt = B64.decode("QCpsGkm9c7K6MZIQ").unwrap();
        assert_eq!(mosquitto_hash_with(b"secret123", &salt, 101), REFERENCE);
        assert!(mosquitto_verify(REFERENCE, "secret123"));
        assert!(!mosquitto_verify(REFERENCE, "secret124"));
        let h = mosquitto_hash("pw");
        assert!(h.starts_with("$7$101$") && mosquitto_verify(&h, "pw"));
        assert_ne!(h, mosquitto_hash("pw"), "salted");
        for bad in ["", "$6$x$y", "$7$0$$", "$7$101$!!$!!", "$7$101$a$b$c"] {
            assert!(!mosquitto_verify(bad, "pw"), "{bad}");
        }
    }

    #[test]
    fn acl_mirrors_the_gate() {
        let acl = device_acl();
        assert!(acl.contains("pattern write outpost/v1/dev/%u/up/+\n"));
        assert!(acl.contains("pattern read outpost/v1/dev/%u/ack\n"));
        assert!(!acl.contains('#') || acl.lines().all(|l| l.starts_with('#') || !l.contains('#')));
        assert!(!acl.contains("readwrite"));
    }
}
