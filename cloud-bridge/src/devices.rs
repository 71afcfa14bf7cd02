//! Devices: provisioning, credentials, tags, reported state and presence.
//!
//! `add` issues a device's files: `agent.toml` (device id, broker, credentials), a
//! `password` file (0600) and `trust/{key_id}.pub` for the bridge's active signing key
//! (and the next one during a rotation), and with the bridge's CA a client
//! certificate (`client.pem`, `client.key` 0600, `ca.pem`; CN = device id). Only a salted
//! SHA-256 of the password is kept here, plus the `$7$` hash mosquitto needs for its
//! password file (`crate::broker::external`). Devices that connect without being provisioned (an open broker) are
//! recorded on first contact as `discovered`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use outpost_protocol::topics::valid_device_id;
use outpost_protocol::wire::ReportedState;
use outpost_protocol::{Digest, PublicKey};
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::audit::Audit;

/// Device errors.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Invalid id.
    #[error("invalid device id {0:?}: use 1..=64 of [A-Za-z0-9._-]")]
    BadId(String),
    /// Input over a cap or not of its form (tags, target).
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    /// Already provisioned.
    #[error("device {0} already exists")]
    Exists(String),
    /// Unknown device.
    #[error("device {0} not found")]
    NotFound(String),
    /// The device has no such active key.
    #[error("device {0} has no active key {1}")]
    NoSuchKey(String, String),
    /// A key could not be made.
    #[error("device key: {0}")]
    Key(String),
    /// The id belongs to the bridge.
    #[error("device id {0:?} is reserved for the bridge")]
    Reserved(String),
    /// A TLS configuration was asked for with a plain broker URL.
    #[error("--tls needs an mqtts:// broker URL, not {0:?}")]
    NotTlsUrl(String),
    /// The certificate could not be issued.
    #[error(transparent)]
    Tls(#[from] crate::broker::tls::TlsError),
    /// Files could not be written.
    #[error("writing {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Database failure.
    #[error("device database: {0}")]
    Db(#[from] rusqlite::Error),
}

/// A device as the bridge knows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DeviceRecord {
    /// Id.
    pub id: String,
    /// Hardware target.
    pub target: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Provisioned / discovered at.
    pub created_at: u64,
    /// Last message, unix seconds.
    pub last_seen: Option<u64>,
    /// Connected (presence).
    pub online: bool,
    /// Last reported state (`outpost_protocol::wire::ReportedState`: models with their
    /// update phase and versions, health, budget).
    #[schema(value_type = Option<Object>)]
    pub state: Option<ReportedState>,
    /// Whether it has credentials.
    pub provisioned: bool,
}

/// What `add` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Provisioned {
    /// Device id.
    pub id: String,
    /// Directory with `agent.toml`, `password`, `trust/`.
    pub dir: PathBuf,
    /// The password (shown once).
    #[serde(skip)]
    pub password: String,
    /// Whether a client certificate was issued.
    pub certificate: bool,
}

/// Certificates and placement at provisioning.
#[derive(Debug, Clone, Copy, Default)]
pub struct CertOptions<'a> {
    /// Issue `client.pem`/`client.key`/`ca.pem` from this CA.
    pub ca: Option<&'a crate::broker::tls::Ca>,
    /// Write an `agent.toml` that connects with mutual TLS (needs `ca` and an
    /// `mqtts://` URL).
    pub use_tls: bool,
    /// Where the agent will run (the paths and sensor its `agent.toml` names).
    pub placement: Placement,
}

/// Where a provisioned agent will run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Placement {
    /// On a gateway: data in `/var/lib/outpost`, the ADXL345 on `/dev/i2c-1`.
    #[default]
    Gateway,
    /// On this machine (`device add --local`): data, trust and keys inside the output
    /// folder (paths relative to `agent.toml`), the simulated ADXL345, the local API on
    /// loopback at `api_port`.
    Local {
        /// A port that was free when the device was added.
        api_port: u16,
        /// The simulated sensor's seed.
        seed: u64,
    },
}

/// Parses `k=v` tags (within [`crate::input`]'s tag caps).
pub fn parse_tags(tags: &[String]) -> Result<BTreeMap<String, String>, DeviceError> {
    Ok(crate::input::tag_pairs("tags", tags)?.into_iter().collect())
}

fn cred_hash(id: &str, password: &str) -> String {
    Digest::of_parts([
        b"outpost-device\0".as_slice(),
        id.as_bytes(),
        b"\0",
        password.as_bytes(),
    ])
    .to_hex()
}

/// A random secret (32 bytes, hex).
pub fn random_secret() -> String {
    let mut b = [0u8; 32];
    SystemRandom::new()
        .fill(&mut b)
        .expect("system RNG available");
    hex::encode(b)
}

/// Whether `password` is the device's.
pub fn check_credentials(c: &Connection, id: &str, password: &str) -> bool {
    let stored: Option<Option<String>> = c
        .query_row("SELECT cred_hash FROM devices WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()
        .unwrap_or(None);
    matches!(stored, Some(Some(h)) if h == cred_hash(id, password))
}

/// Whether `id` is a provisioned device (has credentials).
pub fn is_provisioned(c: &Connection, id: &str) -> bool {
    c.query_row(
        "SELECT 1 FROM devices WHERE id = ?1 AND cred_hash IS NOT NULL",
        [id],
        |_| Ok(()),
    )
    .optional()
    .ok()
    .flatten()
    .is_some()
}

/// Every provisioned device with its mosquitto password hash (None: provisioned before
/// the hash was stored), by id.
pub fn mosquitto_hashes(c: &Connection) -> rusqlite::Result<Vec<(String, Option<String>)>> {
    let mut q = c.prepare(
        "SELECT id, mosquitto_hash FROM devices WHERE cred_hash IS NOT NULL ORDER BY id",
    )?;
    let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// Provisions a device and writes its files into `out` (no certificate).
#[allow(clippy::too_many_arguments)]
pub fn add(
    c: &Connection,
    audit: &Audit,
    id: &str,
    tags: &[String],
    target: &str,
    broker_url: &str,
    trust_key: &PublicKey,
    out: &Path,
    actor: &str,
) -> Result<Provisioned, DeviceError> {
    add_with(
        c,
        audit,
        id,
        tags,
        target,
        broker_url,
        std::slice::from_ref(trust_key),
        out,
        actor,
        CertOptions::default(),
    )
}

/// Provisions a device and writes its files into `out`, with a client certificate
/// when `certs.ca` is given. `trust_keys` become `trust/{key_id}.pub`: the bridge's active
/// signing key and, during a rotation, the next one
/// ([`crate::keys::Signer::device_trust`]).
#[allow(clippy::too_many_arguments)]
pub fn add_with(
    c: &Connection,
    audit: &Audit,
    id: &str,
    tags: &[String],
    target: &str,
    broker_url: &str,
    trust_keys: &[PublicKey],
    out: &Path,
    actor: &str,
    certs: CertOptions<'_>,
) -> Result<Provisioned, DeviceError> {
    crate::input::bounded("device id", id, crate::input::MAX_DEVICE_ID)?;
    if !valid_device_id(id) {
        return Err(DeviceError::BadId(id.into()));
    }
    // A device with the bridge's id could take over the bridge's session.
    if id == crate::broker::BRIDGE_ID {
        return Err(DeviceError::Reserved(id.into()));
    }
    if certs.use_tls && !broker_url.starts_with("mqtts://") {
        return Err(DeviceError::NotTlsUrl(broker_url.into()));
    }
    crate::input::name("target", target)?;
    crate::input::url("broker URL", broker_url)?;
    let tags = parse_tags(tags)?;
    let exists: i64 = c.query_row(
        "SELECT COUNT(*) FROM devices WHERE id = ?1 AND cred_hash IS NOT NULL",
        [id],
        |r| r.get(0),
    )?;
    if exists > 0 {
        return Err(DeviceError::Exists(id.into()));
    }
    let password = random_secret();
    let io = |path: PathBuf| move |source| DeviceError::Io { path, source };
    std::fs::create_dir_all(out.join("trust")).map_err(io(out.join("trust")))?;
    let pw_path = out.join("password");
    let _ = std::fs::remove_file(&pw_path);
    crate::fsutil::write_secret_new(&pw_path, password.as_bytes()).map_err(io(pw_path.clone()))?;
    for k in trust_keys {
        let key_path = out.join("trust").join(format!("{}.pub", k.id()));
        std::fs::write(&key_path, k.to_file_contents()).map_err(io(key_path.clone()))?;
    }
    // The device's own key: it seals every message the device publishes; the bridge keeps
    // only the public half.
    let device_key = write_device_key(out)?;
    let certificate = match certs.ca {
        Some(ca) => {
            ca.write_device_files(id, out)?;
            true
        }
        None if certs.use_tls => {
            return Err(crate::broker::tls::TlsError::BadId(id.into()).into());
        }
        None => false,
    };
    let tag_lines: String = tags.iter().map(|(k, v)| format!("{k} = {v:?}\n")).collect();
    // With TLS the certificate is the credential (its CN is the device id).
    let credentials = if certs.use_tls {
        "ca_file = \"ca.pem\"\nclient_cert = \"client.pem\"\nclient_key = \"client.key\"\n"
            .to_owned()
    } else {
        format!("username = \"{id}\"\npassword_file = \"password\"\n")
    };
    let (data_dir, local) = match certs.placement {
        Placement::Gateway => (
            "/var/lib/outpost",
            "[sensor]\nkind = \"adxl345\"\ni2c_bus = \"/dev/i2c-1\"\n".to_owned(),
        ),
        Placement::Local { api_port, seed } => (
            "data",
            format!(
                "[api]\nhttp = \"127.0.0.1:{api_port}\"\n\n\
                 # A trial run: keep every sample, to have something to export.\n\
                 [capture]\nsample_rate = 1.0\n\n\
                 [sensor]\nkind = \"simulated\"\nseed = {seed}\n"
            ),
        ),
    };
    let toml = format!(
        "# Outpost agent configuration for {id}, issued by outpost-bridge.\n\
         device_id = \"{id}\"\ndata_dir = \"{data_dir}\"\ntrust_dir = \"trust\"\nkey_file = \"device.key\"\n\n\
         [tags]\ntarget = \"{target}\"\n{tag_lines}\n\
         [broker]\nurl = \"{broker_url}\"\n{credentials}\n\
         {local}"
    );
    let cfg_path = out.join("agent.toml");
    std::fs::write(&cfg_path, toml).map_err(io(cfg_path.clone()))?;
    c.execute(
        "INSERT INTO devices (id, target, tags, created_at, cred_hash, mosquitto_hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(id) DO UPDATE SET target = ?2, tags = ?3, cred_hash = ?5, mosquitto_hash = ?6",
        params![
            id,
            target,
            serde_json::to_string(&tags).unwrap_or_default(),
            crate::db::now() as i64,
            cred_hash(id, &password),
            crate::broker::external::mosquitto_hash(&password)
        ],
    )?;
    set_tags(c, id, &tags)?;
    crate::device_auth::add_key(c, id, &device_key)?;
    audit.append(
        c,
        actor,
        "device.add",
        id,
        "",
        &serde_json::json!({"target": target, "tags": tags, "certificate": certificate, "key_id": device_key.id().as_str(),
            "trust": trust_keys.iter().map(|k| k.id().as_str()).collect::<Vec<_>>()}),
    )?;
    Ok(Provisioned {
        id: id.into(),
        dir: out.to_path_buf(),
        password,
        certificate,
    })
}

/// Generates a device key, writes it to `{dir}/device.key` (0600) and returns its public
/// half.
fn write_device_key(dir: &Path) -> Result<PublicKey, DeviceError> {
    let key =
        outpost_protocol::SigningKey::generate().map_err(|e| DeviceError::Key(e.to_string()))?;
    let path = dir.join("device.key");
    let _ = std::fs::remove_file(&path);
    crate::fsutil::write_secret_new(&path, key.to_file_contents().as_bytes()).map_err(
        |source| DeviceError::Io {
            path: path.clone(),
            source,
        },
    )?;
    Ok(key.public_key())
}

/// Adds a new key for a provisioned device and writes it to `{out}/device.key` (0600), to
/// install on the device; the old key stays valid until [`retire_key`]. Returns the new
/// key id.
pub fn rotate_key(
    c: &Connection,
    audit: &Audit,
    id: &str,
    out: &Path,
    actor: &str,
) -> Result<String, DeviceError> {
    show(c, id)?;
    std::fs::create_dir_all(out).map_err(|source| DeviceError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let key = write_device_key(out)?;
    crate::device_auth::add_key(c, id, &key)?;
    audit.append(
        c,
        actor,
        "device.key_add",
        id,
        "",
        &serde_json::json!({"key_id": key.id().as_str()}),
    )?;
    Ok(key.id().to_string())
}

/// Retires one of a device's keys: messages sealed with it are refused from now on.
pub fn retire_key(
    c: &Connection,
    audit: &Audit,
    id: &str,
    key_id: &str,
    actor: &str,
) -> Result<(), DeviceError> {
    show(c, id)?;
    let active = crate::device_auth::list_keys(c, id)?
        .iter()
        .filter(|k| k.2.is_none())
        .count();
    if !crate::device_auth::retire_key(c, id, key_id)? {
        return Err(DeviceError::NoSuchKey(id.into(), key_id.into()));
    }
    if active <= 1 {
        tracing::warn!(device = %id, "retired the device's last key: it can no longer be heard");
    }
    audit.append(
        c,
        actor,
        "device.key_retire",
        id,
        "",
        &serde_json::json!({"key_id": key_id}),
    )?;
    Ok(())
}

fn set_tags(c: &Connection, id: &str, tags: &BTreeMap<String, String>) -> rusqlite::Result<()> {
    c.execute("DELETE FROM device_tags WHERE device = ?1", [id])?;
    for (k, v) in tags {
        c.execute(
            "INSERT INTO device_tags (device, key, value) VALUES (?1, ?2, ?3)",
            params![id, k, v],
        )?;
    }
    Ok(())
}

/// Records a device seen for the first time (open broker); returns whether it was new.
pub fn ensure(
    c: &Connection,
    audit: &Audit,
    id: &str,
    tags: &BTreeMap<String, String>,
) -> rusqlite::Result<bool> {
    let n = c.execute(
        "INSERT OR IGNORE INTO devices (id, target, tags, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            id,
            tags.get("target").cloned().unwrap_or_default(),
            serde_json::to_string(tags).unwrap_or_default(),
            crate::db::now() as i64
        ],
    )?;
    if n > 0 {
        set_tags(c, id, tags)?;
        audit.append(
            c,
            "system",
            "device.discover",
            id,
            "first contact",
            &serde_json::json!({"tags": tags}),
        )?;
    }
    Ok(n > 0)
}

/// Stores a reported state (adopting its tags if the device was discovered with none).
/// With the device's message `counter`, a state older than the last one stored is
/// refused (a replay): returns whether it was stored.
pub fn on_state(
    c: &Connection,
    audit: &Audit,
    s: &ReportedState,
    counter: Option<u64>,
) -> rusqlite::Result<bool> {
    ensure(c, audit, &s.device_id, &s.tags)?;
    let n = c.execute(
        "UPDATE devices SET state = ?2, last_seen = ?3, state_counter = COALESCE(?4, state_counter)
         WHERE id = ?1 AND (?4 IS NULL OR state_counter IS NULL OR state_counter < ?4)",
        params![
            s.device_id,
            serde_json::to_string(s).unwrap_or_default(),
            crate::db::now() as i64,
            counter.map(|v| v as i64)
        ],
    )?;
    if n == 0 {
        return Ok(false);
    }
    let tags: String = c.query_row(
        "SELECT tags FROM devices WHERE id = ?1",
        [&s.device_id],
        |r| r.get(0),
    )?;
    if (tags == "{}" || tags.is_empty()) && !s.tags.is_empty() {
        c.execute(
            "UPDATE devices SET tags = ?2, target = ?3 WHERE id = ?1",
            params![
                s.device_id,
                serde_json::to_string(&s.tags).unwrap_or_default(),
                s.tags.get("target").cloned().unwrap_or_default()
            ],
        )?;
        set_tags(c, &s.device_id, &s.tags)?;
    }
    Ok(true)
}

/// What a presence message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceOutcome {
    /// Recorded; the previous online flag (None: unknown device before).
    Recorded(Option<bool>),
    /// Older than the presence already recorded (a replay): ignored.
    Stale,
}

/// Records presence. One connection's online message and its Last-Will carry the same
/// `counter`: a presence is accepted if its counter is higher than the last, or equal and
/// offline (the Last-Will of the connection that said online).
pub fn on_presence(
    c: &Connection,
    audit: &Audit,
    id: &str,
    online: bool,
    counter: Option<u64>,
) -> rusqlite::Result<PresenceOutcome> {
    let before: Option<bool> = c
        .query_row("SELECT online FROM devices WHERE id = ?1", [id], |r| {
            r.get::<_, i64>(0).map(|v| v != 0)
        })
        .optional()?;
    ensure(c, audit, id, &BTreeMap::new())?;
    let n = c.execute(
        "UPDATE devices SET online = ?2, last_seen = ?3, presence_counter = COALESCE(?4, presence_counter)
         WHERE id = ?1 AND (?4 IS NULL OR presence_counter IS NULL OR presence_counter < ?4
                            OR (presence_counter = ?4 AND ?2 = 0))",
        params![id, online as i64, crate::db::now() as i64, counter.map(|v| v as i64)],
    )?;
    Ok(if n == 0 {
        PresenceOutcome::Stale
    } else {
        PresenceOutcome::Recorded(before)
    })
}

/// Counts a message refused by device authentication against a known device.
pub fn count_rejected(c: &Connection, id: &str) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE devices SET auth_rejected = auth_rejected + 1 WHERE id = ?1",
        [id],
    )?;
    Ok(())
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRecord> {
    let tags: String = r.get(2)?;
    let state: Option<String> = r.get(6)?;
    let cred: Option<String> = r.get(7)?;
    Ok(DeviceRecord {
        id: r.get(0)?,
        target: r.get(1)?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        created_at: r.get::<_, i64>(3)? as u64,
        last_seen: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
        online: r.get::<_, i64>(5)? != 0,
        state: state.and_then(|s| serde_json::from_str(&s).ok()),
        provisioned: cred.is_some(),
    })
}

const COLS: &str = "id, target, tags, created_at, last_seen, online, state, cred_hash";

/// Devices matching all `tags` (k=v), by id.
pub fn list(c: &Connection, tags: &[(String, String)]) -> rusqlite::Result<Vec<DeviceRecord>> {
    let mut sql = format!("SELECT {COLS} FROM devices d WHERE 1 = 1");
    let mut args = Vec::new();
    for (k, v) in tags {
        args.push(k.clone());
        args.push(v.clone());
        sql += &format!(
            " AND EXISTS (SELECT 1 FROM device_tags t WHERE t.device = d.id AND t.key = ?{} AND t.value = ?{})",
            args.len() - 1,
            args.len()
        );
    }
    sql += " ORDER BY id";
    let mut q = c.prepare(&sql)?;
    let rows = q.query_map(rusqlite::params_from_iter(args.iter()), row)?;
    rows.collect()
}

/// One device.
pub fn show(c: &Connection, id: &str) -> Result<DeviceRecord, DeviceError> {
    c.query_row(
        &format!("SELECT {COLS} FROM devices WHERE id = ?1"),
        [id],
        row,
    )
    .optional()?
    .ok_or_else(|| DeviceError::NotFound(id.into()))
}
