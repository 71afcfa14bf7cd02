//! The bundle head's byte layout (see the module doc of [`crate::bundle`]).

use crate::keys::{KeyId, MAX_KEY_ID_LEN, SIGNATURE_LEN};
use crate::limits::Limits;

use super::BundleError;

/// File magic.
pub const MAGIC: &[u8; 8] = b"OUTPOSTB";
/// Bundle format written by this build.
pub const FORMAT: u16 = 1;
/// Bytes before the variable part of the head: magic, format, H.
pub const PREFIX_LEN: usize = 14;
/// Signature domain for bundle manifests.
pub const BUNDLE_DOMAIN: &[u8] = b"outpost/v1/bundle\0";

/// A head parsed for structure but not yet trusted.
#[derive(Debug, Clone)]
pub struct RawHead<'a> {
    /// Claimed signing key.
    pub key_id: KeyId,
    /// Claimed signature.
    pub signature: &'a [u8],
    /// Manifest bytes (untrusted until the signature verifies).
    pub manifest: &'a [u8],
}

/// Reads the first [`PREFIX_LEN`] bytes and returns the total head length
/// (`PREFIX_LEN + H`), after checking magic, format and the cap.
pub fn head_len(prefix: &[u8], limits: &Limits) -> Result<usize, BundleError> {
    if prefix.len() < MAGIC.len() {
        return Err(truncated("magic", MAGIC.len(), prefix.len()));
    }
    if &prefix[..8] != MAGIC {
        return Err(BundleError::BadMagic);
    }
    if prefix.len() < PREFIX_LEN {
        return Err(truncated("head prefix", PREFIX_LEN, prefix.len()));
    }
    let format = u16::from_le_bytes([prefix[8], prefix[9]]);
    if format != FORMAT {
        return Err(BundleError::UnsupportedFormat(format));
    }
    let h = u32::from_le_bytes(prefix[10..14].try_into().expect("4 bytes")) as u64;
    let max = max_head_rest(limits);
    if h > max {
        return Err(BundleError::TooLarge {
            what: "bundle head",
            size: h,
            limit: max,
        });
    }
    Ok(PREFIX_LEN + h as usize)
}

fn max_head_rest(limits: &Limits) -> u64 {
    1 + MAX_KEY_ID_LEN as u64 + SIGNATURE_LEN as u64 + 4 + u64::from(limits.max_manifest)
}

fn truncated(what: &'static str, needed: usize, available: usize) -> BundleError {
    BundleError::Truncated {
        what,
        needed: needed as u64,
        available: available as u64,
    }
}

/// Parses the head at the start of `bytes`; returns it and the head length (where the
/// payload starts). Never trusts a length before checking it against `bytes` and caps.
pub fn parse_head<'a>(
    bytes: &'a [u8],
    limits: &Limits,
) -> Result<(RawHead<'a>, usize), BundleError> {
    let total = head_len(bytes, limits)?;
    if bytes.len() < total {
        return Err(truncated("bundle head", total, bytes.len()));
    }
    let rest = &bytes[PREFIX_LEN..total];
    let k = *rest
        .first()
        .ok_or_else(|| BundleError::MalformedHead("empty head".into()))? as usize;
    if k == 0 || k > MAX_KEY_ID_LEN {
        return Err(BundleError::BadKeyId);
    }
    let need_fixed = 1 + k + SIGNATURE_LEN + 4;
    if rest.len() < need_fixed {
        return Err(BundleError::MalformedHead(format!(
            "head length {} too short for key id and signature",
            rest.len()
        )));
    }
    let key_id = std::str::from_utf8(&rest[1..1 + k])
        .ok()
        .and_then(KeyId::parse)
        .ok_or(BundleError::BadKeyId)?;
    let signature = &rest[1 + k..1 + k + SIGNATURE_LEN];
    let m_off = 1 + k + SIGNATURE_LEN;
    let m = u32::from_le_bytes(rest[m_off..m_off + 4].try_into().expect("4 bytes")) as u64;
    if m > u64::from(limits.max_manifest) {
        return Err(BundleError::TooLarge {
            what: "manifest",
            size: m,
            limit: u64::from(limits.max_manifest),
        });
    }
    if (need_fixed as u64) + m != rest.len() as u64 {
        return Err(BundleError::MalformedHead(format!(
            "head length {} disagrees with manifest length {m}",
            rest.len()
        )));
    }
    let manifest = &rest[need_fixed..];
    Ok((
        RawHead {
            key_id,
            signature,
            manifest,
        },
        total,
    ))
}

/// Writes a head. Callers sign; this only lays bytes out.
pub(crate) fn write_head(
    key_id: &KeyId,
    signature: &[u8; SIGNATURE_LEN],
    manifest: &[u8],
) -> Vec<u8> {
    let k = key_id.as_str().as_bytes();
    let h = 1 + k.len() + SIGNATURE_LEN + 4 + manifest.len();
    let mut out = Vec::with_capacity(PREFIX_LEN + h);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&(h as u32).to_le_bytes());
    out.push(k.len() as u8);
    out.extend_from_slice(k);
    out.extend_from_slice(signature);
    out.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
    out.extend_from_slice(manifest);
    out
}
