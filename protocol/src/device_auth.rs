//! End-to-end device authentication: every message a device publishes is sealed with its
//! own Ed25519 key, so the bridge never trusts the topic a message arrived on.
//!
//! A broker's ACL confines a device to its own topics — when the broker is configured
//! right. The seal makes a misconfigured or compromised broker cost confidentiality at
//! most: the bridge accepts a message for device `D` only if it verifies with one of `D`'s
//! provisioned keys, over the device id, the message kind (its topic under
//! `outpost/v1/dev/D/`) and the body, so a message cannot be moved to another device or
//! reused as another kind.
//!
//! Wire form (binary, prepended to the unchanged body):
//!
//! ```text
//! "OPDS"  version u8 = 1  K u8 (1..=64)  key id (K bytes, ASCII)  counter u64 LE
//! signature (64 bytes)  body
//! signature = Ed25519(key, "outpost/v1/device\0" || device_id || 0x00 || kind || 0x00
//!                          || counter (8 bytes LE) || body)
//! ```
//!
//! `counter` strictly increases per device across messages and restarts (the agent uses
//! `boot_seconds << 32 | n`); the bridge uses it to refuse replays of messages whose
//! freshness matters (reported state, presence). Idempotent messages (uplink batches,
//! chunk requests) are safe to replay: the bridge deduplicates them.

use crate::keys::{KeyId, SIGNATURE_LEN, SigningKey, TrustStore};

/// Signature domain of device messages.
pub const DEVICE_DOMAIN: &[u8] = b"outpost/v1/device\0";
const MAGIC: &[u8; 4] = b"OPDS";
const VERSION: u8 = 1;

/// Why a sealed message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceAuthError {
    /// Not a sealed message (no magic, truncated header, bad key id).
    #[error("not a sealed device message: {0}")]
    Malformed(String),
    /// Larger than the cap for its kind.
    #[error("sealed message of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Size.
        size: usize,
        /// Cap.
        limit: usize,
    },
    /// The key is not one of the device's.
    #[error("signed by key {0}, which is not one of this device's keys")]
    UnknownKey(String),
    /// The signature does not verify (wrong device, kind or body).
    #[error("signature does not verify with key {0}")]
    BadSignature(KeyId),
}

impl DeviceAuthError {
    /// A short reason for counters (`malformed`, `too_large`, `unknown_key`,
    /// `bad_signature`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::TooLarge { .. } => "too_large",
            Self::UnknownKey(_) => "unknown_key",
            Self::BadSignature(_) => "bad_signature",
        }
    }
}

/// A message whose seal verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened<'a> {
    /// The key that sealed it.
    pub key_id: KeyId,
    /// The device's counter.
    pub counter: u64,
    /// The message body.
    pub body: &'a [u8],
}

fn signed_bytes(device_id: &str, kind: &str, counter: u64, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(device_id.len() + kind.len() + 10 + body.len());
    m.extend_from_slice(device_id.as_bytes());
    m.push(0);
    m.extend_from_slice(kind.as_bytes());
    m.push(0);
    m.extend_from_slice(&counter.to_le_bytes());
    m.extend_from_slice(body);
    m
}

/// Seals `body` as device `device_id`'s message of `kind` (its topic tail, e.g. `state`,
/// `up/telemetry`) with `counter`.
pub fn seal(key: &SigningKey, device_id: &str, kind: &str, counter: u64, body: &[u8]) -> Vec<u8> {
    let sig = key.sign(DEVICE_DOMAIN, &signed_bytes(device_id, kind, counter, body));
    let id = key.id().as_str().as_bytes();
    let mut out = Vec::with_capacity(4 + 2 + id.len() + 8 + SIGNATURE_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    out.extend_from_slice(&counter.to_le_bytes());
    out.extend_from_slice(&sig);
    out.extend_from_slice(body);
    out
}

/// The key id a sealed message names, without verifying it (to look the key up).
pub fn key_id(bytes: &[u8]) -> Result<KeyId, DeviceAuthError> {
    Ok(header(bytes)?.0)
}

/// A parsed header: key id, counter, signature, and the body after it.
type Header<'a> = (KeyId, u64, [u8; SIGNATURE_LEN], &'a [u8]);

fn header(b: &[u8]) -> Result<Header<'_>, DeviceAuthError> {
    let bad = |m: &str| DeviceAuthError::Malformed(m.to_owned());
    let rest = b
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| bad("no OPDS magic"))?;
    let (&version, rest) = rest.split_first().ok_or_else(|| bad("truncated"))?;
    if version != VERSION {
        return Err(DeviceAuthError::Malformed(format!("version {version}")));
    }
    let (&k, rest) = rest.split_first().ok_or_else(|| bad("truncated"))?;
    if k == 0 || k > 64 {
        return Err(bad("key id length"));
    }
    let (id, rest) = rest
        .split_at_checked(k as usize)
        .ok_or_else(|| bad("truncated key id"))?;
    let id = std::str::from_utf8(id)
        .ok()
        .and_then(KeyId::parse)
        .ok_or_else(|| bad("key id is not a valid key id"))?;
    let (counter, rest) = rest
        .split_at_checked(8)
        .ok_or_else(|| bad("truncated counter"))?;
    let counter = u64::from_le_bytes(counter.try_into().expect("8 bytes"));
    let (sig, body) = rest
        .split_at_checked(SIGNATURE_LEN)
        .ok_or_else(|| bad("truncated signature"))?;
    Ok((id, counter, sig.try_into().expect("64 bytes"), body))
}

/// Checks the cap, parses and verifies a sealed message from device `device_id` of `kind`
/// against that device's `keys`.
pub fn open<'a>(
    bytes: &'a [u8],
    device_id: &str,
    kind: &str,
    keys: &TrustStore,
    limit: usize,
) -> Result<Opened<'a>, DeviceAuthError> {
    if bytes.len() > limit {
        return Err(DeviceAuthError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    let (key_id, counter, sig, body) = header(bytes)?;
    let key = keys
        .get(&key_id)
        .ok_or_else(|| DeviceAuthError::UnknownKey(key_id.to_string()))?;
    if !key.verify(
        DEVICE_DOMAIN,
        &signed_bytes(device_id, kind, counter, body),
        &sig,
    ) {
        return Err(DeviceAuthError::BadSignature(key_id));
    }
    Ok(Opened {
        key_id,
        counter,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &SigningKey) -> TrustStore {
        let mut t = TrustStore::new();
        t.add(k.public_key());
        t
    }

    #[test]
    fn seal_open_and_every_kind_of_forgery() {
        let a = SigningKey::generate().unwrap();
        let b = SigningKey::generate().unwrap();
        let sealed = seal(&a, "gw-a", "up/telemetry", 42, b"batch");
        let o = open(&sealed, "gw-a", "up/telemetry", &keys(&a), 1 << 20).unwrap();
        assert_eq!((o.body, o.counter), (&b"batch"[..], 42));
        assert_eq!(key_id(&sealed).unwrap(), *a.id());
        // Moved to another device, or reused as another kind: refused.
        assert!(matches!(
            open(&sealed, "gw-b", "up/telemetry", &keys(&a), 1 << 20),
            Err(DeviceAuthError::BadSignature(_))
        ));
        assert!(matches!(
            open(&sealed, "gw-a", "state", &keys(&a), 1 << 20),
            Err(DeviceAuthError::BadSignature(_))
        ));
        // Another device's key.
        assert!(matches!(
            open(&sealed, "gw-a", "up/telemetry", &keys(&b), 1 << 20),
            Err(DeviceAuthError::UnknownKey(_))
        ));
        // Any flipped byte in the counter, signature or body.
        let header = 4 + 2 + a.id().as_str().len();
        for i in header..sealed.len() {
            let mut m = sealed.clone();
            m[i] ^= 0x01;
            assert!(
                open(&m, "gw-a", "up/telemetry", &keys(&a), 1 << 20).is_err(),
                "byte {i}"
            );
        }
        // Unsealed, truncated, oversized.
        assert!(matches!(
            open(b"batch", "gw-a", "up/telemetry", &keys(&a), 1 << 20),
            Err(DeviceAuthError::Malformed(_))
        ));
        for cut in 0..header + 8 + 64 {
            assert!(open(&sealed[..cut], "gw-a", "up/telemetry", &keys(&a), 1 << 20).is_err());
        }
        assert!(matches!(
            open(&sealed, "gw-a", "up/telemetry", &keys(&a), 10),
            Err(DeviceAuthError::TooLarge { .. })
        ));
    }
}
