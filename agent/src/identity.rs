//! The device's own identity: its Ed25519 key and a message counter, sealing everything
//! the device publishes (see [`outpost_protocol::device_auth`]).
//!
//! The counter is `boot << 32 | n`: `boot` is at least the previous boot's value + 1 and at
//! least the wall clock's seconds at start (persisted in `{data_dir}/auth.boot` before
//! use), `n` counts messages since start. So it strictly increases across messages and
//! restarts — and stays ahead of an earlier life of the device even if the data directory
//! is wiped, as long as the clock is right.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use outpost_protocol::SigningKey;
use outpost_protocol::device_auth;
use outpost_protocol::keys::KeyError;

/// The device's key and counter.
#[derive(Debug)]
pub struct DeviceIdentity {
    device_id: String,
    key: SigningKey,
    counter: AtomicU64,
}

/// Why the identity could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key file is unusable.
    #[error("device key: {0}")]
    Key(#[from] KeyError),
    /// The boot counter could not be persisted.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

const BOOT_FILE: &str = "auth.boot";

impl DeviceIdentity {
    /// Loads the key and starts a new boot of the counter.
    pub fn load(device_id: &str, key_file: &Path, data_dir: &Path) -> Result<Self, IdentityError> {
        let key = SigningKey::load(key_file)?;
        let path = data_dir.join(BOOT_FILE);
        // A decimal u64; anything longer is not ours.
        let previous: u64 = outpost_protocol::fsio::read_capped_string(&path, 64)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let boot = (previous + 1)
            .max(crate::clock::unix_now())
            .min(u64::from(u32::MAX));
        outpost_protocol::fsio::write_atomic(&path, boot.to_string().as_bytes()).map_err(|e| {
            IdentityError::Io {
                path,
                source: e.into(),
            }
        })?;
        Ok(Self {
            device_id: device_id.to_owned(),
            key,
            counter: AtomicU64::new(boot << 32),
        })
    }

    /// The next counter value.
    pub fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Seals `body` as a message of `kind` (its topic tail) with the next counter.
    pub fn seal(&self, kind: &str, body: &[u8]) -> Vec<u8> {
        self.seal_with(kind, self.next(), body)
    }

    /// Seals with a given counter (presence: one counter per connection, shared by the
    /// online message and the Last-Will).
    pub fn seal_with(&self, kind: &str, counter: u64, body: &[u8]) -> Vec<u8> {
        device_auth::seal(&self.key, &self.device_id, kind, counter, body)
    }

    /// The key id (reported so operators see which key a device uses).
    pub fn key_id(&self) -> &str {
        self.key.id().as_str()
    }
}
