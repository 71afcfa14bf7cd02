//! Signed deployment directives: the desired state of one device.
//!
//! The bridge publishes one retained directive per device listing the **complete set of
//! models** the device should run (format 2): each entry names a model slot (the model
//! name), the bundle (digest, version, sizes) and the deployment that put it there. A
//! model missing from the set is unloaded. The agent accepts a directive only if the
//! signature verifies with a trusted key, it names this device, it has not expired, it is
//! not from the future beyond the allowed clock skew, and its sequence is strictly
//! greater than the last one the agent accepted (persisted across restarts). Rolling back
//! is therefore a *new* directive, with a higher sequence, naming the older bundle: an
//! attacker replaying an old directive gets `Replayed` or `StaleSequence`, never a
//! downgrade.
//!
//! Wire form (JSON): `{"key_id":"…","signature":"<128 hex>","body":"<directive JSON>"}`.
//! The signature covers `"outpost/v1/directive\0" || body` — the exact body bytes, so the
//! verifier never re-serialises anything.

use serde::{Deserialize, Serialize};

use crate::Digest;
use crate::keys::{KeyId, SIGNATURE_LEN, SigningKey, TrustStore};
use crate::limits::Limits;
use crate::manifest::{ModelRef, valid_name};
use crate::rotation::{TrustChanges, TrustUpdate};

use crate::topics::valid_device_id;

/// Signature domain for directives.
pub const DIRECTIVE_DOMAIN: &[u8] = b"outpost/v1/directive\0";
/// Directive format written by this build (2: a set of models).
pub const DIRECTIVE_FORMAT: u32 = 2;
/// Most models one directive may list.
pub const MAX_MODELS: usize = 64;

/// One model the device should run: its slot (the model name) and the bundle for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelTarget {
    /// Model name: the device's slot for it.
    pub name: String,
    /// Bundle digest (SHA-256 of its manifest, lowercase hex); authoritative.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub digest: Digest,
    /// Registry version (for reporting).
    pub version: u32,
    /// Head length in bytes (to plan the download).
    pub head_size: u32,
    /// Whole bundle size in bytes (disk budget).
    pub size: u64,
    /// Peak memory measured at registration, bytes (memory budget), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// The deployment that put this entry here.
    pub deployment_id: String,
}

impl ModelTarget {
    /// Name and version.
    pub fn model_ref(&self) -> ModelRef {
        ModelRef {
            name: self.name.clone(),
            version: self.version,
        }
    }
}

/// What a device should run: the complete set of its models.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directive {
    /// Format number ([`DIRECTIVE_FORMAT`]).
    pub format: u32,
    /// Target device.
    pub device_id: String,
    /// Per-device sequence; strictly increasing.
    pub sequence: u64,
    /// Issue time, unix seconds.
    pub issued_at: u64,
    /// Expiry, unix seconds; an expired directive is refused.
    pub expires_at: u64,
    /// Every model the device should run (any other is unloaded), by name.
    pub models: Vec<ModelTarget>,
    /// Signing-key rotation: bridge keys to start and stop trusting (optional; agents
    /// that predate it ignore it). See [`crate::rotation`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<TrustUpdate>,
}

impl Directive {
    /// The entry for model `name`, if the device should run it.
    pub fn model(&self, name: &str) -> Option<&ModelTarget> {
        self.models.iter().find(|m| m.name == name)
    }
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
    #[error(
        "directive expired at {expires_at} (device clock now {now}; a clock far ahead also looks like this)"
    )]
    Expired {
        /// Expiry.
        expires_at: u64,
        /// Current time.
        now: u64,
    },
    /// Issued further in the future than the allowed clock skew: the device clock is
    /// behind (or the directive is forged with a future time).
    #[error(
        "directive issued at {issued_at} is ahead of the device clock ({now}) by more than {max_skew} s: check the device clock"
    )]
    NotYetValid {
        /// Issue time.
        issued_at: u64,
        /// Current time.
        now: u64,
        /// Allowed skew, seconds.
        max_skew: u64,
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

impl DirectiveError {
    /// A short reason for reports and counters (`expired`, `not_yet_valid`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::Malformed(_) | Self::MalformedBody(_) | Self::Invalid(_) => "malformed",
            Self::UnknownKey(_) => "unknown_key",
            Self::BadSignature(_) => "bad_signature",
            Self::UnsupportedFormat(_) => "unsupported_format",
            Self::WrongDevice { .. } => "wrong_device",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::Replayed(_) => "replayed",
            Self::StaleSequence { .. } => "stale_sequence",
        }
    }
}

/// A directive that passed every check; only [`verify`] makes one.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedDirective {
    directive: Directive,
    key_id: KeyId,
    trust: TrustChanges,
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

    /// The trust changes it carries, checked (caps, each key's id derived from the key,
    /// never the signing key removed). This is the only way to obtain keys from a
    /// directive, so only a directive signed by an already-trusted key can add trust.
    pub fn trust_changes(&self) -> &TrustChanges {
        &self.trust
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
    /// How far ahead of `now` a directive's issue time may be (clock skew), seconds;
    /// `u64::MAX` disables the check (a device without a real-time clock).
    pub max_skew: u64,
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
    if !valid_device_id(&d.device_id) {
        return Err(DirectiveError::Invalid(
            "device id has invalid characters".into(),
        ));
    }
    if d.models.len() > MAX_MODELS {
        return Err(DirectiveError::Invalid(format!(
            "{} models listed (at most {MAX_MODELS})",
            d.models.len()
        )));
    }
    for (i, m) in d.models.iter().enumerate() {
        if !valid_name(&m.name) || m.version == 0 {
            return Err(DirectiveError::Invalid(format!(
                "model entry {i} has an invalid name or version 0"
            )));
        }
        if d.models[..i].iter().any(|o| o.name == m.name) {
            return Err(DirectiveError::Invalid(format!(
                "model {:?} is listed twice",
                m.name
            )));
        }
    }
    let trust = match &d.trust {
        Some(t) => t.check(&key_id).map_err(DirectiveError::Invalid)?,
        None => TrustChanges::default(),
    };
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
    if d.issued_at > ctx.now.saturating_add(ctx.max_skew) {
        return Err(DirectiveError::NotYetValid {
            issued_at: d.issued_at,
            now: ctx.now,
            max_skew: ctx.max_skew,
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
        trust,
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
        max_skew: u64::MAX,
    };
    verify(bytes, trust, ctx, limits)
}

/// What a device reports about a directive it refused: the reason, and the directive's
/// sequence and validity window *as the message claims them*. Those numbers are read from
/// the unverified body (a refused directive may not verify at all), so they are for the
/// operator and the bridge's re-issue decision only, never for acting on.
pub fn rejection(
    bytes: &[u8],
    err: &DirectiveError,
    now: u64,
    limits: &Limits,
) -> crate::wire::DirectiveRejection {
    #[derive(Deserialize)]
    struct Claimed {
        sequence: Option<u64>,
        issued_at: Option<u64>,
        expires_at: Option<u64>,
    }
    let claimed = (bytes.len() <= limits.max_directive)
        .then(|| serde_json::from_slice::<Envelope>(bytes).ok())
        .flatten()
        .and_then(|env| serde_json::from_str::<Claimed>(&env.body).ok());
    crate::wire::DirectiveRejection {
        sequence: claimed.as_ref().and_then(|c| c.sequence),
        kind: err.kind().into(),
        reason: err.to_string(),
        now,
        issued_at: claimed.as_ref().and_then(|c| c.issued_at),
        expires_at: claimed.as_ref().and_then(|c| c.expires_at),
    }
}
