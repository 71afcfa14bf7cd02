//! Webhook signing per the Standard Webhooks scheme (<https://www.standardwebhooks.com>,
//! spec `standard-webhooks.md`): every delivery carries
//!
//! - `webhook-id`: the message id, the same on every retry (receivers deduplicate on it);
//! - `webhook-timestamp`: unix seconds of this attempt (receivers reject stale ones);
//! - `webhook-signature`: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")),
//!
//! where `key` is the base64-decoded part of the secret after `whsec_`. The bridge keeps one
//! secret in `DATA_DIR/webhook.secret` (mode 0600, made on first use; never logged); give it
//! to receivers, which verify with any Standard Webhooks library (`docs/architecture.md`
//! shows a stdlib-only Python check).

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// The secret file's name in the data directory.
pub const SECRET_FILE: &str = "webhook.secret";
const PREFIX: &str = "whsec_";

/// Why a secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum WebhookSecretError {
    /// The file could not be read or written.
    #[error("webhook secret {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not hold `whsec_` + base64 of 24..=64 bytes.
    #[error("webhook secret {path}: not whsec_ followed by base64 of 24 to 64 bytes")]
    Malformed {
        /// The file.
        path: String,
    },
}

/// A webhook signing secret.
#[derive(Clone)]
pub struct WebhookSecret {
    key: hmac::Key,
}

impl std::fmt::Debug for WebhookSecret {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64>` (24..=64 key bytes).
    pub fn parse(text: &str) -> Option<Self> {
        let raw = B64.decode(text.trim().strip_prefix(PREFIX)?).ok()?;
        (24..=64).contains(&raw.len()).then(|| Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &raw),
        })
    }

    /// Reads `dir/webhook.secret`, making a new random one (0600) if there is none.
    ///
    /// # Errors
    /// The file cannot be read or written, or holds something else.
    pub fn load_or_create(dir: &Path) -> Result<Self, WebhookSecretError> {
        let path = dir.join(SECRET_FILE);
        let shown = path.display().to_string();
        let io = |source| WebhookSecretError::Io {
            path: shown.clone(),
            source,
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut raw = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut raw)
                    .map_err(|_| io(std::io::Error::other("system RNG unavailable")))?;
                let text = format!("{PREFIX}{}", B64.encode(raw));
                crate::fsutil::write_secret_new(&path, text.as_bytes()).map_err(io)?;
                text
            }
            Err(e) => return Err(io(e)),
        };
        Self::parse(&text).ok_or(WebhookSecretError::Malformed { path: shown })
    }

    /// The `webhook-signature` value for message `id` sent at `timestamp` with `body`.
    pub fn signature(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut msg = Vec::with_capacity(id.len() + body.len() + 24);
        msg.extend_from_slice(id.as_bytes());
        msg.push(b'.');
        msg.extend_from_slice(timestamp.to_string().as_bytes());
        msg.push(b'.');
        msg.extend_from_slice(body);
        format!("v1,{}", B64.encode(hmac::sign(&self.key, &msg).as_ref()))
    }

    /// The three headers of one delivery attempt.
    pub fn headers(&self, id: &str, timestamp: u64, body: &[u8]) -> [(&'static str, String); 3] {
        [
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", self.signature(id, timestamp, body)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // The test vector of the Standard Webhooks reference libraries.
        let s = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            s.signature(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_secret_is_made_once_0600_and_malformed_ones_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let a = WebhookSecret::load_or_create(d.path()).unwrap();
        let b = WebhookSecret::load_or_create(d.path()).unwrap();
        assert_eq!(a.signature("m", 1, b"x"), b.signature("m", 1, b"x"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(d.path().join(SECRET_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(d.path().join(SECRET_FILE), "whsec_short").unwrap();
        assert!(matches!(
            WebhookSecret::load_or_create(d.path()),
            Err(WebhookSecretError::Malformed { .. })
        ));
        assert!(format!("{a:?}").starts_with("WebhookSecret(.."));
    }
}
