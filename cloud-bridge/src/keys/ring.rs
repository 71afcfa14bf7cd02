//! The key ring: which signing key is active, next or retired (`signing_keys`), the
//! [`Keyring`] every signer reads it through, and the rotation commands.
//!
//! Rotation (see `outpost_protocol::rotation` for the wire side):
//! 1. [`rotate`] makes the next key and re-issues every device's directive, signed by the
//!    active key and carrying the next key's public half;
//! 2. devices persist it and list it in `trusted_keys` in their reported state; [`rows`]
//!    counts them;
//! 3. [`activate`] makes the next key active — refused while any known device (online or
//!    not) has not reported trusting it, unless forced — retires the old one, and re-issues
//!    every directive signed by the new key with the old key's id under `trust.remove`.
//!
//! Commands run in other processes than `serve`; a generation counter in `settings` tells
//! a running bridge's [`Keyring`] to reload, so the next directive it signs uses the new
//! state. Every change is audited (`keys.init`, `keys.rotate`, `keys.activate`,
//! `keys.retire`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use outpost_protocol::rotation::{MAX_TRUST_REMOVE, TrustUpdate, TrustedKey};
use outpost_protocol::wire::ReportedState;
use outpost_protocol::{KeyId, PublicKey, SigningKey};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use super::{KeyFiles, KeysError, PRIVATE_KEY_FILE, key_dir, load_private, write_pair};
use crate::audit::Audit;

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Signs everything.
    Active,
    /// Distributed to devices, not signing yet.
    Next,
    /// No longer signs; devices are told to stop trusting it.
    Retired,
}

impl KeyState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Next => "next",
            Self::Retired => "retired",
        }
    }

    fn parse(s: &str) -> Result<Self, KeysError> {
        match s {
            "active" => Ok(Self::Active),
            "next" => Ok(Self::Next),
            "retired" => Ok(Self::Retired),
            o => Err(KeysError::Corrupt(format!("unknown key state {o:?}"))),
        }
    }
}

/// One key as `keys show` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyRow {
    /// Key id.
    pub key_id: KeyId,
    /// State.
    pub state: KeyState,
    /// Private key file.
    pub path: PathBuf,
    /// Created (or adopted), unix seconds.
    pub created_at: u64,
    /// Became active, unix seconds.
    pub activated_at: Option<u64>,
    /// Retired, unix seconds.
    pub retired_at: Option<u64>,
    /// Devices whose latest reported state lists this key as trusted.
    pub trusted_by: usize,
    /// Devices known to the bridge.
    pub devices: usize,
    #[serde(skip)]
    public: PublicKey,
}

/// What the bridge signs with now: the active key, and the trust changes every directive
/// carries (the next key to add, the most recently retired keys to remove).
#[derive(Debug)]
pub struct Signer {
    key: Arc<SigningKey>,
    next: Option<PublicKey>,
    retired: Vec<KeyId>,
}

impl Signer {
    /// A signer with no rotation under way (tests, tools).
    pub fn single(key: Arc<SigningKey>) -> Self {
        Self {
            key,
            next: None,
            retired: Vec::new(),
        }
    }

    /// The active key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The active key, shared.
    pub fn shared(&self) -> Arc<SigningKey> {
        self.key.clone()
    }

    /// The directive `trust` member for the current rotation state, if any.
    pub fn trust_update(&self) -> Option<TrustUpdate> {
        let u = TrustUpdate {
            add: self.next.iter().map(TrustedKey::of).collect(),
            remove: self.retired.clone(),
        };
        (!u.is_empty()).then_some(u)
    }

    /// Public keys a newly provisioned device should trust: the active key and the next.
    pub fn device_trust(&self) -> Vec<PublicKey> {
        std::iter::once(self.key.public_key())
            .chain(self.next.clone())
            .collect()
    }
}

/// The bridge's view of its keys, reloaded when a command changes them.
#[derive(Clone)]
pub struct Keyring {
    pinned: Option<Arc<SigningKey>>,
    cache: Arc<Mutex<Option<Cached>>>,
}

/// The ring's generation when it was loaded, and the signer loaded.
type Cached = (i64, Arc<Signer>);

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").finish_non_exhaustive()
    }
}

impl Keyring {
    /// Opens the key ring of `data_dir`. `key_file` (`--key FILE`) signs instead of the
    /// recorded path and must hold the active key. A data directory without a recorded key
    /// adopts `key_file`, else an existing `DATA_DIR/keys/signing.key` (directories from
    /// before the ring), else gets a new key there (logged; `keys init` is the audited way).
    ///
    /// # Errors
    /// [`KeysError`]: a key file missing, readable by others or not a key; `key_file` not
    /// the active key; the database.
    pub fn open(
        c: &Connection,
        audit: &Audit,
        data_dir: &Path,
        key_file: Option<&Path>,
    ) -> Result<Self, KeysError> {
        let pinned = key_file.map(load_private).transpose()?.map(Arc::new);
        match active_id(c)? {
            Some(active) => {
                if let (Some(k), Some(p)) = (&pinned, key_file)
                    && k.id() != &active
                {
                    return Err(KeysError::NotActive {
                        path: p.to_path_buf(),
                        key: k.id().clone(),
                        active,
                    });
                }
            }
            None => {
                let (public, path, how) = match (&pinned, key_file) {
                    (Some(k), Some(p)) => (k.public_key(), absolute(p), "adopted"),
                    _ => {
                        let legacy = key_dir(data_dir).join(PRIVATE_KEY_FILE);
                        if legacy.exists() {
                            (load_private(&legacy)?.public_key(), legacy, "adopted")
                        } else {
                            let (k, f) = write_pair(&legacy, false, None)?;
                            tracing::info!(key = %k.id(), path = %f.private.display(), "created the bridge signing key");
                            (k.public_key(), f.private, "created")
                        }
                    }
                };
                publish_public(data_dir, &public)?;
                // A key made or adopted on first use is not an operator's act: it is
                // logged and listed (`keys show`), and the audit trail starts with what
                // people do (`keys init`, rotations), as it did before the ring.
                let _ = audit;
                record(c, None, &public, &path, "bridge", how)?;
            }
        }
        let ring = Self {
            pinned,
            cache: Arc::new(Mutex::new(None)),
        };
        ring.signer(c)?;
        Ok(ring)
    }

    /// The current signer, reloaded if a command changed the ring since the last call
    /// (one indexed read when nothing changed).
    ///
    /// # Errors
    /// [`KeysError`]: the active key's file missing, open to others or not the recorded
    /// key; the database.
    pub fn signer(&self, c: &Connection) -> Result<Arc<Signer>, KeysError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(key), Some((FIXED, s))) = (&self.pinned, cache.as_ref()) {
            debug_assert_eq!(key.id(), s.key().id());
            return Ok(s.clone());
        }
        let generation = generation(c)?;
        if let Some((g, s)) = cache.as_ref()
            && *g == generation
        {
            return Ok(s.clone());
        }
        let s = Arc::new(load_signer(c, self.pinned.as_ref())?);
        *cache = Some((generation, s.clone()));
        Ok(s)
    }

    /// A ring of one key that never reloads and carries no rotation (tests and tools that
    /// sign with a key of their own, without a data directory's ring).
    pub fn fixed(key: Arc<SigningKey>) -> Self {
        let signer = Arc::new(Signer::single(key.clone()));
        Self {
            pinned: Some(key),
            cache: Arc::new(Mutex::new(Some((FIXED, signer)))),
        }
    }

    /// The active key.
    ///
    /// # Errors
    /// As [`Keyring::signer`].
    pub fn active(&self, c: &Connection) -> Result<Arc<SigningKey>, KeysError> {
        Ok(self.signer(c)?.shared())
    }
}

/// The cache generation of a [`Keyring::fixed`] ring (stored generations are ≥ 0).
const FIXED: i64 = -1;

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Writes `DATA_DIR/keys/{id}.pub` (what `audit --verify` trusts by default).
fn publish_public(data_dir: &Path, key: &PublicKey) -> Result<(), KeysError> {
    let dir = key_dir(data_dir);
    let p = dir.join(format!("{}.pub", key.id()));
    std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&p, key.to_file_contents()))
        .map_err(|source| KeysError::Io { path: p, source })
}

fn record(
    c: &Connection,
    audit: Option<&Audit>,
    key: &PublicKey,
    path: &Path,
    actor: &str,
    how: &str,
) -> Result<(), KeysError> {
    c.execute(
        "INSERT INTO signing_keys (key_id, state, public_key, path, created_at, activated_at)
         VALUES (?1, 'active', ?2, ?3, ?4, ?4)",
        params![
            key.id().as_str(),
            key.to_file_contents(),
            path.display().to_string(),
            crate::db::now() as i64
        ],
    )?;
    bump(c)?;
    if let Some(audit) = audit {
        audit.append(
            c,
            actor,
            "keys.init",
            key.id().as_str(),
            "",
            &serde_json::json!({"how": how, "path": path}),
        )?;
    }
    Ok(())
}

/// `keys init`: a first key for a data directory that has none, at `DATA_DIR/keys/
/// signing.key` or `{out}/signing.key`.
///
/// # Errors
/// [`KeysError::HasActive`] when the ring has a key (rotation is `keys rotate`);
/// [`KeysError::Exists`] when the file exists; IO and database errors.
pub fn init(
    c: &Connection,
    audit: &Audit,
    data_dir: &Path,
    out: Option<&Path>,
    actor: &str,
) -> Result<KeyFiles, KeysError> {
    if let Some(id) = active_id(c)? {
        return Err(KeysError::HasActive(id));
    }
    let dir = out.map_or_else(|| key_dir(data_dir), Path::to_path_buf);
    let (key, mut files) =
        write_pair(&dir.join(PRIVATE_KEY_FILE), false, Some(&key_dir(data_dir)))?;
    files.private = absolute(&files.private);
    record(
        c,
        Some(audit),
        &key.public_key(),
        &files.private,
        actor,
        "init",
    )?;
    Ok(files)
}

/// What [`rotate`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Rotated {
    /// The next key's id.
    pub key_id: String,
    /// Its private key file (0600).
    pub private: PathBuf,
    /// Devices whose directive now carries it.
    pub devices: usize,
}

/// `keys rotate`: makes the next key (`{out or DATA_DIR/keys}/{id}.key`, 0600) and
/// re-issues every device's directive with it under `trust.add`, signed by the active
/// key, at `now` (unix seconds). A running bridge publishes them on its next pass.
///
/// # Errors
/// [`KeysError::NoActive`], [`KeysError::NextExists`]; the active key unusable; IO and
/// database errors; a directive that cannot be issued.
pub fn rotate(
    c: &mut Connection,
    audit: &Audit,
    ring: &Keyring,
    data_dir: &Path,
    out: Option<&Path>,
    actor: &str,
    now: u64,
) -> Result<Rotated, KeysError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let active = active_id(&tx)?.ok_or(KeysError::NoActive)?;
    if let Some(next) = state_ids(&tx, KeyState::Next)?.into_iter().next() {
        return Err(KeysError::NextExists(next));
    }
    let dir = out.map_or_else(|| key_dir(data_dir), Path::to_path_buf);
    let (key, files) = write_pair(&dir, true, Some(&key_dir(data_dir)))?;
    let private = absolute(&files.private);
    tx.execute(
        "INSERT INTO signing_keys (key_id, state, public_key, path, created_at)
         VALUES (?1, 'next', ?2, ?3, ?4)",
        params![
            key.id().as_str(),
            key.public_key().to_file_contents(),
            private.display().to_string(),
            now as i64
        ],
    )?;
    bump(&tx)?;
    audit.append(
        &tx,
        actor,
        "keys.rotate",
        key.id().as_str(),
        "",
        &serde_json::json!({"path": private, "active": active}),
    )?;
    let signer = ring.signer(&tx)?;
    let devices = reissue(&tx, &signer, "keys.rotate", now)?;
    tx.commit()?;
    tracing::info!(next = %key.id(), devices, "next signing key made; directives re-issued");
    Ok(Rotated {
        key_id: key.id().to_string(),
        private,
        devices,
    })
}

/// What [`activate`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Activated {
    /// The key now active.
    pub active: KeyId,
    /// The key retired.
    pub retired: KeyId,
    /// Devices that did not trust the new key (only with `force`).
    pub forced: Vec<String>,
    /// Devices whose directive was re-issued.
    pub devices: usize,
}

/// `keys activate`: the next key signs from now on and the active key is retired; every
/// device's directive is re-issued, signed by the new key, telling devices to stop
/// trusting the old one.
///
/// # Errors
/// [`KeysError::NoNext`]; [`KeysError::NotReady`] naming the devices that have not reported
/// trusting the next key (unless `force`); the next key's file unusable (nothing changes);
/// database errors.
pub fn activate(
    c: &mut Connection,
    audit: &Audit,
    ring: &Keyring,
    force: bool,
    actor: &str,
    now: u64,
) -> Result<Activated, KeysError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let old = active_id(&tx)?.ok_or(KeysError::NoActive)?;
    let row = all_rows(&tx)?
        .into_iter()
        .find(|r| r.state == KeyState::Next)
        .ok_or(KeysError::NoNext)?;
    // Load it before anything changes: a missing or open key file must not leave the
    // bridge with an active key it cannot use.
    check_file(&row)?;
    let devices = trust_status(&tx)?;
    let missing: Vec<String> = devices
        .iter()
        .filter(|(_, keys)| !keys.contains(&row.key_id))
        .map(|(d, _)| d.clone())
        .collect();
    if !missing.is_empty() && !force {
        return Err(KeysError::NotReady {
            key: row.key_id,
            missing,
            total: devices.len(),
        });
    }
    tx.execute(
        "UPDATE signing_keys SET state = 'retired', retired_at = ?1 WHERE state = 'active'",
        [now as i64],
    )?;
    tx.execute(
        "UPDATE signing_keys SET state = 'active', activated_at = ?2 WHERE key_id = ?1",
        params![row.key_id.as_str(), now as i64],
    )?;
    bump(&tx)?;
    let reason = if missing.is_empty() {
        String::new()
    } else {
        format!("forced: {} devices do not trust it", missing.len())
    };
    audit.append(
        &tx,
        actor,
        "keys.activate",
        row.key_id.as_str(),
        &reason,
        &serde_json::json!({"retired": old, "forced": missing}),
    )?;
    audit.append(
        &tx,
        actor,
        "keys.retire",
        old.as_str(),
        "",
        &serde_json::json!({"successor": row.key_id}),
    )?;
    let signer = ring.signer(&tx)?;
    let n = reissue(&tx, &signer, "keys.activate", now)?;
    tx.commit()?;
    if !missing.is_empty() {
        tracing::warn!(key = %row.key_id, devices = ?missing, "signing key activated by force: these devices do not trust it");
    }
    tracing::info!(active = %row.key_id, retired = %old, devices = n, "signing key activated");
    Ok(Activated {
        active: row.key_id,
        retired: old,
        forced: missing,
        devices: n,
    })
}

fn check_file(row: &KeyRow) -> Result<Arc<SigningKey>, KeysError> {
    let key = load_private(&row.path)?;
    if key.id() != &row.key_id {
        return Err(KeysError::Corrupt(format!(
            "{} holds key {}, not the recorded {}",
            row.path.display(),
            key.id(),
            row.key_id
        )));
    }
    Ok(Arc::new(key))
}

/// Re-issues every known device's directive with `signer` (its whole desired set, a new
/// sequence); returns how many.
fn reissue(c: &Connection, signer: &Signer, cause: &str, now: u64) -> Result<usize, KeysError> {
    let ids: Vec<String> = {
        let mut q = c.prepare("SELECT id FROM devices ORDER BY id")?;
        let rows = q.query_map([], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for d in &ids {
        crate::fleet::desired::issue(c, signer, d, cause, now)
            .map_err(|e| KeysError::Fleet(format!("device {d}: {e}")))?;
    }
    Ok(ids.len())
}

/// Every known device with the key ids its latest reported state lists as trusted (none
/// for a device that never reported, or runs an agent from before key rotation).
pub fn trust_status(c: &Connection) -> Result<Vec<(String, Vec<KeyId>)>, KeysError> {
    let mut q = c.prepare("SELECT id, state FROM devices ORDER BY id")?;
    let rows = q.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, state) = row?;
        let keys = state
            .and_then(|s| serde_json::from_str::<ReportedState>(&s).ok())
            .map(|s| s.trusted_keys)
            .unwrap_or_default();
        out.push((id, keys));
    }
    Ok(out)
}

/// Every key, newest first, with how many devices report trusting it.
///
/// # Errors
/// Database errors; a row that does not parse.
pub fn rows(c: &Connection) -> Result<Vec<KeyRow>, KeysError> {
    let mut rows = all_rows(c)?;
    let status = trust_status(c)?;
    for r in &mut rows {
        r.devices = status.len();
        r.trusted_by = status.iter().filter(|(_, k)| k.contains(&r.key_id)).count();
    }
    Ok(rows)
}

fn all_rows(c: &Connection) -> Result<Vec<KeyRow>, KeysError> {
    let mut q = c.prepare(
        "SELECT key_id, state, public_key, path, created_at, activated_at, retired_at
         FROM signing_keys ORDER BY created_at DESC, rowid DESC",
    )?;
    let raw = q.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, Option<i64>>(5)?,
            r.get::<_, Option<i64>>(6)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in raw {
        let (id, state, public, path, created, activated, retired) = row?;
        let public = PublicKey::from_file_contents(&public, "signing_keys")
            .map_err(|e| KeysError::Corrupt(e.to_string()))?;
        if public.id().as_str() != id {
            return Err(KeysError::Corrupt(format!(
                "row {id} holds the public key of {}",
                public.id()
            )));
        }
        out.push(KeyRow {
            key_id: public.id().clone(),
            state: KeyState::parse(&state)?,
            path: PathBuf::from(path),
            created_at: created as u64,
            activated_at: activated.map(|t| t as u64),
            retired_at: retired.map(|t| t as u64),
            trusted_by: 0,
            devices: 0,
            public,
        });
    }
    Ok(out)
}

fn state_ids(c: &Connection, state: KeyState) -> Result<Vec<KeyId>, KeysError> {
    Ok(all_rows(c)?
        .into_iter()
        .filter(|r| r.state == state)
        .map(|r| r.key_id)
        .collect())
}

fn active_id(c: &Connection) -> Result<Option<KeyId>, KeysError> {
    let id: Option<String> = c
        .query_row(
            "SELECT key_id FROM signing_keys WHERE state = 'active'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(id.and_then(|s| KeyId::parse(&s)))
}

fn load_signer(c: &Connection, pinned: Option<&Arc<SigningKey>>) -> Result<Signer, KeysError> {
    let rows = all_rows(c)?;
    let active = rows
        .iter()
        .find(|r| r.state == KeyState::Active)
        .ok_or(KeysError::NoActive)?;
    let key = match pinned {
        Some(k) if k.id() == &active.key_id => k.clone(),
        _ => check_file(active)?,
    };
    let mut retired: Vec<&KeyRow> = rows
        .iter()
        .filter(|r| r.state == KeyState::Retired)
        .collect();
    retired.sort_by_key(|r| std::cmp::Reverse(r.retired_at));
    Ok(Signer {
        key,
        next: rows
            .iter()
            .find(|r| r.state == KeyState::Next)
            .map(|r| r.public.clone()),
        // The most recent ones: a device that missed older retirements still holds only
        // keys it can no longer be sent anything with, and is re-provisioned.
        retired: retired
            .into_iter()
            .take(MAX_TRUST_REMOVE)
            .map(|r| r.key_id.clone())
            .collect(),
    })
}

fn generation(c: &Connection) -> rusqlite::Result<i64> {
    let v: Option<String> = c
        .query_row(
            "SELECT value FROM settings WHERE key = 'signing_keys_generation'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

fn bump(c: &Connection) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO settings (key, value) VALUES ('signing_keys_generation', '1')
         ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
        [],
    )?;
    Ok(())
}

impl KeyRow {
    /// The state as the CLI prints it.
    pub fn state_name(&self) -> &'static str {
        self.state.as_str()
    }
}

/// The active key's private key file as recorded (what `bundle pack` signs with when no
/// `--key` is given).
///
/// # Errors
/// [`KeysError::NoActive`]; database errors.
pub fn active_path(c: &Connection) -> Result<PathBuf, KeysError> {
    all_rows(c)?
        .into_iter()
        .find(|r| r.state == KeyState::Active)
        .map(|r| r.path)
        .ok_or(KeysError::NoActive)
}

/// `keys show` as text: one row per key, then what a rotation under way is waiting for.
pub fn show_text(rows: &[KeyRow]) -> String {
    let when = |t: Option<u64>| t.map(outpost_protocol::time::rfc3339).unwrap_or_default();
    let mut out = crate::cli::table(
        &[
            "KEY",
            "STATE",
            "CREATED",
            "ACTIVATED",
            "RETIRED",
            "TRUSTED BY",
            "PATH",
        ],
        &rows
            .iter()
            .map(|r| {
                vec![
                    r.key_id.to_string(),
                    r.state_name().into(),
                    outpost_protocol::time::rfc3339(r.created_at),
                    when(r.activated_at),
                    when(r.retired_at),
                    format!("{}/{}", r.trusted_by, r.devices),
                    r.path.display().to_string(),
                ]
            })
            .collect::<Vec<_>>(),
    );
    if let Some(n) = rows.iter().find(|r| r.state == KeyState::Next) {
        out += &format!(
            "\nnext key {}: {} of {} devices trust it{}",
            n.key_id,
            n.trusted_by,
            n.devices,
            if n.trusted_by == n.devices {
                "; `keys activate` can switch signing to it"
            } else {
                "; `keys activate` waits for the rest"
            }
        );
    }
    out
}
