//! The bridge's signing keys: where they live, how they are loaded, and their rotation.
//!
//! One key is **active**: it signs bundles, directives and audit checkpoints. During a
//! rotation a **next** key exists, which devices learn (through directives signed by the
//! active key) before it signs anything; after `keys activate` the old key is **retired**
//! and directives tell devices to stop trusting it. States, paths and times are rows of
//! `signing_keys` in the bridge database ([`ring`]); the private halves are files:
//!
//! | file | written by |
//! |---|---|
//! | `DATA_DIR/keys/signing.key` (0600) | `keys init` (or the first command that needs a key) |
//! | `DATA_DIR/keys/{key_id}.key` (0600) | `keys rotate` |
//! | `DATA_DIR/keys/{key_id}.pub` | both, for every key (audit verification reads them) |
//!
//! `--out DIR` puts a private key elsewhere (its path is recorded); `--key FILE` on `serve`,
//! `model register`, `device add` and `bundle pack` signs with a key file kept outside the
//! data directory, which must be the active key. A private key file must be readable by
//! its owner only; key material is never logged or printed.

pub mod ring;

use std::path::{Path, PathBuf};

use outpost_protocol::keys::KeyError;
use outpost_protocol::{KeyId, SigningKey};

use crate::fsutil::write_secret_new;

pub use ring::{KeyRow, KeyState, Keyring, Signer};

/// File name of the private key `keys init` writes.
pub const PRIVATE_KEY_FILE: &str = "signing.key";
/// Key directory inside the data directory.
pub const KEY_DIR: &str = "keys";

/// The data directory's key directory (`DATA_DIR/keys`).
pub fn key_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_DIR)
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// A key file already exists; never overwrite a signing key silently.
    #[error("{0} already exists; refusing to overwrite a signing key")]
    Exists(PathBuf),
    /// Filesystem error.
    #[error("cannot write {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The key file is missing.
    #[error("signing key {0} does not exist: run `outpost-bridge keys init`, or pass --key FILE")]
    Missing(PathBuf),
    /// Others may read the key file.
    #[error(
        "signing key {path} has mode {mode:03o}: it must be readable by its owner only (chmod 600 {path})"
    )]
    Permissions {
        /// Path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Generation failed, or the file is not a key (the message names the file).
    #[error(transparent)]
    Key(#[from] KeyError),
    /// `keys init` on a data directory that already has a key.
    #[error(
        "the data directory already has an active signing key {0} (see `keys show`); `keys rotate` introduces a new one"
    )]
    HasActive(KeyId),
    /// No active key recorded (and none could be adopted).
    #[error("no active signing key: run `outpost-bridge keys init`")]
    NoActive,
    /// `--key FILE` is not the key the bridge signs with.
    #[error(
        "{path} holds key {key}, but the bridge's active signing key is {active} (see `keys show`)"
    )]
    NotActive {
        /// The file given.
        path: PathBuf,
        /// Its key.
        key: KeyId,
        /// The active key.
        active: KeyId,
    },
    /// `keys rotate` while a rotation is under way.
    #[error(
        "key {0} is already the next key; `keys activate` it (see `keys show` for the devices that trust it)"
    )]
    NextExists(KeyId),
    /// `keys activate` without a next key.
    #[error("there is no next key to activate: run `keys rotate` first")]
    NoNext,
    /// `keys activate` while devices do not trust the next key yet.
    #[error(
        "{} of {total} devices do not trust the next key {key} yet: {}; they learn it from their next directive when they connect (`keys show`), or --force activates anyway and leaves them unable to verify anything until they are re-provisioned",
        missing.len(),
        missing.join(", ")
    )]
    NotReady {
        /// The next key.
        key: KeyId,
        /// Devices that have not reported trusting it.
        missing: Vec<String>,
        /// Devices known.
        total: usize,
    },
    /// A recorded row is inconsistent (edited database).
    #[error("signing key table: {0}")]
    Corrupt(String),
    /// Re-issuing directives failed.
    #[error("re-issuing directives: {0}")]
    Fleet(String),
    /// Database.
    #[error("signing key table: {0}")]
    Db(#[from] rusqlite::Error),
}

/// The files a new key was written to.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    /// Private key (0600).
    pub private: PathBuf,
    /// Public key, named `{key_id}.pub` so several can share a trust directory.
    pub public: PathBuf,
    /// Key id.
    pub key_id: String,
}

/// Generates a key pair: the private half at `private` (mode 0600, never overwriting),
/// the public half as `{key_id}.pub` next to it and in `also` (the data directory's key
/// directory, when the private key lives elsewhere). Directories are created.
///
/// # Errors
/// [`KeysError::Exists`] if `private` exists; [`KeysError::Io`]; [`KeysError::Key`].
pub fn write_pair(
    private: &Path,
    name_by_id: bool,
    also: Option<&Path>,
) -> Result<(SigningKey, KeyFiles), KeysError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KeysError::Io { path, source }
    };
    let key = SigningKey::generate()?;
    let private = if name_by_id {
        private.join(format!("{}.key", key.id()))
    } else {
        private.to_path_buf()
    };
    let dir = private
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    if private.exists() {
        return Err(KeysError::Exists(private));
    }
    write_secret_new(&private, key.to_file_contents().as_bytes()).map_err(io(&private))?;
    let public = dir.join(format!("{}.pub", key.id()));
    let text = key.public_key().to_file_contents();
    std::fs::write(&public, &text).map_err(io(&public))?;
    if let Some(also) = also.filter(|a| *a != dir) {
        std::fs::create_dir_all(also).map_err(io(also))?;
        let p = also.join(format!("{}.pub", key.id()));
        std::fs::write(&p, &text).map_err(io(&p))?;
    }
    let files = KeyFiles {
        private,
        public,
        key_id: key.id().to_string(),
    };
    Ok((key, files))
}

/// Loads a private key file, refusing one that is missing or readable by others.
///
/// # Errors
/// [`KeysError::Missing`], [`KeysError::Permissions`], or [`KeysError::Key`] naming the
/// file (unreadable, not a key, an id that does not match the key).
pub fn load_private(path: &Path) -> Result<SigningKey, KeysError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeysError::Missing(path.to_path_buf()));
        }
        Err(source) => {
            return Err(KeysError::Key(KeyError::Io {
                path: path.display().to_string(),
                source,
            }));
        }
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeysError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(SigningKey::load(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_is_0600_loadable_and_never_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let (key, f) = write_pair(&d.path().join(PRIVATE_KEY_FILE), false, None).unwrap();
        let loaded = load_private(&f.private).unwrap();
        assert_eq!(loaded.id(), key.id());
        let trust = outpost_protocol::TrustStore::load_dir(d.path()).unwrap();
        assert!(trust.get(key.id()).is_some());
        assert!(matches!(
            write_pair(&d.path().join(PRIVATE_KEY_FILE), false, None),
            Err(KeysError::Exists(_))
        ));
    }

    #[cfg(unix)]
    #[test]
    fn missing_open_or_garbage_key_files_are_clear_errors() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        assert!(matches!(load_private(&p), Err(KeysError::Missing(_))));
        let (_, f) = write_pair(&p, false, None).unwrap();
        std::fs::set_permissions(&f.private, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_private(&f.private).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&f.private, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&f.private, "not a key").unwrap();
        let e = load_private(&f.private).unwrap_err();
        assert!(e.to_string().contains("invalid key file"), "{e}");
        // The error names the file, never its contents.
        assert!(!e.to_string().contains("not a key\""), "{e}");
    }
}
