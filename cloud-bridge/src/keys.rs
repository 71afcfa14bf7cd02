//! `outpost-bridge keys init`: creates the bundle/directive signing key.

use std::path::{Path, PathBuf};

use outpost_protocol::SigningKey;
use outpost_protocol::keys::KeyError;

use crate::fsutil::write_secret_new;

/// File name of the private key inside a key directory.
pub const PRIVATE_KEY_FILE: &str = "signing.key";

/// Why key initialisation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// A key already exists; never overwrite a signing key silently.
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
    /// Key generation failed.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// The files `init` wrote.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    /// Private key (0600).
    pub private: PathBuf,
    /// Public key, named `{key_id}.pub` so several can share a trust directory.
    pub public: PathBuf,
    /// Key id.
    pub key_id: String,
}

/// Generates a key pair into `dir` (created if missing).
pub fn init(dir: &Path) -> Result<KeyFiles, KeysError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KeysError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let private = dir.join(PRIVATE_KEY_FILE);
    if private.exists() {
        return Err(KeysError::Exists(private));
    }
    let key = SigningKey::generate()?;
    let public = dir.join(format!("{}.pub", key.id()));
    write_secret_new(&private, key.to_file_contents().as_bytes()).map_err(io(&private))?;
    std::fs::write(&public, key.public_key().to_file_contents()).map_err(io(&public))?;
    Ok(KeyFiles {
        private,
        public,
        key_id: key.id().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_0600_private_and_loadable_public_and_refuses_overwrite() {
        let d = tempfile::tempdir().unwrap();
        let f = init(d.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&f.private).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let key = SigningKey::load(&f.private).unwrap();
        let trust = outpost_protocol::TrustStore::load_dir(d.path()).unwrap();
        assert!(trust.get(key.id()).is_some());
        assert!(matches!(init(d.path()), Err(KeysError::Exists(_))));
    }
}
