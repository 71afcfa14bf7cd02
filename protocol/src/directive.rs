//! Signed deployment directives: the desired state of one device.
//!
//! The bridge publishes one retained directive per device. The agent accepts it only if
//! the signature verifies with a trusted key, it names this device, it has not expired,
//! and its sequence is strictly greater than the last one the agent accepted (persisted
//! across restarts). Rolling back is therefore a *new* directive, with a higher sequence,
//! naming the older bundle: an attacker replaying an old directive gets `Replayed` or
//! `StaleSequence`, never a downgrade.
//!
//! Wire form (JSON): `{"key_id":"…","signature":"<128 hex>","body":"<directive JSON>"}`.
//! The signature covers `"outpost/v1/directive\0" || body` — the exact body bytes, so the
//! verifier never re-serialises anything.

use serde::{Deserialize, Serialize};

use crate::Digest;
use crate::keys::{KeyId, SIGNATURE_LEN, SigningKey, TrustStore};
use crate::limits::Limits;
use crate::manifest::{ModelRef, valid_name};
use crate::topics::valid_device_id;

/// Signature domain for directives.
pub const DIRECTIVE_DOMAIN: &[u8] = b"outpost/v1/directive\0";
/// Directive format written by this build.
pub const DIRECTIVE_FORMAT: u32 = 1;

/// The bundle a directive asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleTarget {
    /// Bundle digest (SHA-256 of its manifest).
    pub digest: Digest,
    /// Model name and version (for reporting; the digest is authoritative).
    pub model: ModelRef,
    /// Head length in bytes (to plan the download).
    pub head_size: u32,
    /// Whole bundle size in bytes (to check disk space before downloading).
    pub size: u64,
}

/// What a device should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directive {
    /// Format number ([`DIRECTIVE_FORMAT`]).
    pub format: u32,
    /// Deployment this directive belongs to.
    pub deployment_id: String,
    /// Target device.
    pub device_id: String,
    /// Per-device sequence; strictly increasing.
    pub sequence: u64,
    /// Issue time, unix seconds.
    pub issued_at: u64,
    /// Expiry, unix seconds; an expired directive is refused.
    pub expires_at: u64,
    /// The bundle to install and activate.
    pub bundle: BundleTarget,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    key_id: String,
    signature: String,
    body: String,
}

/// Why a directive was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DirectiveError {
    /// Message over the size cap.
    #[error("directive of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Size.
        size: usize,
        /// Cap.
        limit: usize,
    },
    /// Envelope is not the expected JSON.
    #[error("malformed directive envelope: {0}")]
    Malformed(String),
    /// Signing key unknown.
    #[error("directive signed by unknown key {0}")]
    UnknownKey(String),
    /// Signature does not verify.
    #[error("directive signature does not verify with key {0}")]
    BadSignature(KeyId),
    /// Body is not a directive.
    #[error("malformed directive body: {0}")]
    MalformedBody(String),
    /// Unknown format.
    #[error("directive format {0} is not supported")]
    UnsupportedFormat(u32),
    /// Directive for another device.
    #[error("directive is for device {actual:?}, this is {expected:?}")]
    WrongDevice {
        /// This device.
        expected: String,
        /// Named device.
        actual: String,
    },
    /// Past its expiry.
    #[error("directive expired at {expires_at} (now {now})")]
    Expired {
        /// Expiry.
        expires_at: u64,
        /// Current time.
        now: u64,
    },
    /// Same sequence as the last accepted one.
    #[error("directive sequence {0} was already applied (replay)")]
    Replayed(u64),
    /// Lower sequence than the last accepted one.
    #[error(
        "directive sequence {sequence} is older than the last accepted {last} (rollback attack or stale retained message)"
    )]
    StaleSequence {
        /// Offered sequence.
        sequence: u64,
        /// Last accepted.
        last: u64,
    },
    /// Internally inconsistent body.
    #[error("invalid directive: {0}")]
    Invalid(String),
}

/// A directive that passed every check; only [`verify`] makes one.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedDirective {
    directive: Directive,
    key_id: KeyId,
}

impl VerifiedDirective {
    /// The directive.
    pub fn directive(&self) -> &Directive {
        &self.directive
    }

    /// The key that signed it.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// Shorthand for the sequence.
    pub fn sequence(&self) -> u64 {
        self.directive.sequence
    }
}

impl Directive {
    /// Signs and encodes the directive for the wire.
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        let body = serde_json::to_string(self).expect("directive serialises");
        let sig = key.sign(DIRECTIVE_DOMAIN, body.as_bytes());
        let env = Envelope {
            key_id: key.id().to_string(),
            signature: hex::encode(sig),
            body,
        };
        serde_json::to_vec(&env).expect("envelope serialises")
    }
}

/// What the agent knows when checking a directive.
#[derive(Debug, Clone, Copy)]
pub struct DirectiveContext<'a> {
    /// This device's id.
    pub device_id: &'a str,
    /// Highest sequence accepted so far (persisted), if any.
    pub last_sequence: Option<u64>,
    /// Current time, unix seconds.
    pub now: u64,
}

/// Parses and verifies a directive message.
pub fn verify(
    bytes: &[u8],
    trust: &TrustStore,
    ctx: DirectiveContext<'_>,
    limits: &Limits,
) -> Result<VerifiedDirective, DirectiveError> {
    if bytes.len() > limits.max_directive {
        return Err(DirectiveError::TooLarge {
            size: bytes.len(),
            limit: limits.max_directive,
        });
    }
    let env: Envelope =
        serde_json::from_slice(bytes).map_err(|e| DirectiveError::Malformed(e.to_string()))?;
    let key_id = KeyId::parse(&env.key_id)
        .ok_or_else(|| DirectiveError::Malformed("key_id is not a valid key id".into()))?;
    let key = trust
        .get(&key_id)
        .ok_or_else(|| DirectiveError::UnknownKey(env.key_id.clone()))?;
    let sig = hex::decode(&env.signature)
        .ok()
        .filter(|s| s.len() == SIGNATURE_LEN)
        .ok_or_else(|| DirectiveError::Malformed("signature is not 64 bytes of hex".into()))?;
    if !key.verify(DIRECTIVE_DOMAIN, env.body.as_bytes(), &sig) {
        return Err(DirectiveError::BadSignature(key_id));
    }
    let d: Directive = serde_json::from_str(&env.body)
        .map_err(|e| DirectiveError::MalformedBody(e.to_string()))?;
    if d.format != DIRECTIVE_FORMAT {
        return Err(DirectiveError::UnsupportedFormat(d.format));
    }
    if !valid_device_id(&d.device_id) || !valid_name(&d.bundle.model.name) {
        return Err(DirectiveError::Invalid(
            "device id or model name has invalid characters".into(),
        ));
    }
    if d.expires_at <= d.issued_at {
        return Err(DirectiveError::Invalid(
            "expires_at is not after issued_at".into(),
        ));
    }
    if d.device_id != ctx.device_id {
        return Err(DirectiveError::WrongDevice {
            expected: ctx.device_id.into(),
            actual: d.device_id,
        });
    }
    if ctx.now >= d.expires_at {
        return Err(DirectiveError::Expired {
            expires_at: d.expires_at,
            now: ctx.now,
        });
    }
    match ctx.last_sequence {
        Some(last) if d.sequence == last => return Err(DirectiveError::Replayed(last)),
        Some(last) if d.sequence < last => {
            return Err(DirectiveError::StaleSequence {
                sequence: d.sequence,
                last,
            });
        }
        _ => {}
    }
    Ok(VerifiedDirective {
        directive: d,
        key_id,
    })
}

/// Re-verifies a directive this device already accepted and persisted (to resume applying
/// it after a restart): signature, format and device are checked again; sequence and
/// expiry are not, because they were checked when it was accepted and the sequence has
/// since been recorded as used.
pub fn reverify_accepted(
    bytes: &[u8],
    trust: &TrustStore,
    device_id: &str,
    limits: &Limits,
) -> Result<VerifiedDirective, DirectiveError> {
    if bytes.len() > limits.max_directive {
        return Err(DirectiveError::TooLarge {
            size: bytes.len(),
            limit: limits.max_directive,
        });
    }
    let env: Envelope =
        serde_json::from_slice(bytes).map_err(|e| DirectiveError::Malformed(e.to_string()))?;
    let body: Directive = serde_json::from_str(&env.body)
        .map_err(|e| DirectiveError::MalformedBody(e.to_string()))?;
    let ctx = DirectiveContext {
        device_id,
        last_sequence: None,
        now: body.issued_at,
    };
    verify(bytes, trust, ctx, limits)
}
