//! Ed25519 signing keys, key ids and the trust store.
//!
//! A key id is the first 8 bytes of SHA-256(public key), in hex: it is derived, so a key
//! file cannot claim another key's id. The trust store holds several public keys at once,
//! which is how signing keys rotate: ship the new public key to devices, start signing
//! with the new private key, then drop the old public key.
//!
//! Key files are small JSON documents:
//! - public: `{"type":"outpost-ed25519-public","key_id":"…","public_key":"<64 hex>"}`
//! - private: `{"type":"outpost-ed25519-private","key_id":"…","pkcs8":"<hex>"}` — the
//!   writer must create it with mode 0600; [`SigningKey`]'s `Debug` never prints it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::Digest;

/// Ed25519 signature length.
pub const SIGNATURE_LEN: usize = 64;
/// Longest key id accepted on the wire.
pub const MAX_KEY_ID_LEN: usize = 64;
const PUBLIC_TYPE: &str = "outpost-ed25519-public";
const PRIVATE_TYPE: &str = "outpost-ed25519-private";
/// Largest key file read (they are ~200 bytes).
const MAX_KEY_FILE: u64 = 16 * 1024;

/// Errors about keys and key files.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Key generation failed (the system RNG is unavailable).
    #[error("could not generate a key pair: system random source unavailable")]
    Generate,
    /// The key file is not valid.
    #[error("invalid key file {path}: {reason}")]
    BadKeyFile {
        /// File path (or `<memory>`).
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading a key file or trust directory failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// File path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A trust directory holds no public keys.
    #[error("trust directory {0} holds no *.pub key files")]
    EmptyTrustDir(String),
}

/// A key identifier: 16 lowercase hex characters derived from the public key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    /// The id of an Ed25519 public key.
    pub fn of_public_key(public: &[u8]) -> Self {
        Self(hex::encode(&Digest::of(public).0[..8]))
    }

    /// Accepts an id read off the wire if it is plausible (1..=64 printable ASCII,
    /// no whitespace); whether it is *known* is the trust store's business.
    pub fn parse(s: &str) -> Option<Self> {
        let ok =
            !s.is_empty() && s.len() <= MAX_KEY_ID_LEN && s.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| Self(s.to_owned()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

/// An Ed25519 private key with its id.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
    id: KeyId,
}

impl fmt::Debug for SigningKey {
    // Never print key material: only the id.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct PrivateKeyFile {
    #[serde(rename = "type")]
    kind: String,
    key_id: KeyId,
    pkcs8: String,
}

#[derive(Serialize, Deserialize)]
struct PublicKeyFile {
    #[serde(rename = "type")]
    kind: String,
    key_id: KeyId,
    public_key: String,
}

impl SigningKey {
    /// Generates a fresh key pair from the system RNG.
    pub fn generate() -> Result<Self, KeyError> {
        let doc =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Generate)?;
        Self::from_pkcs8(doc.as_ref()).map_err(|_| KeyError::Generate)
    }

    /// Loads a key from PKCS#8 (v1 or v2) bytes.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).map_err(|e| {
            KeyError::BadKeyFile {
                path: "<memory>".into(),
                reason: format!("not an Ed25519 PKCS#8 key ({e})"),
            }
        })?;
        let id = KeyId::of_public_key(pair.public_key().as_ref());
        Ok(Self {
            pair,
            pkcs8: pkcs8.to_vec(),
            id,
        })
    }

    /// This key's id.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        let mut b = [0u8; 32];
        b.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey {
            id: self.id.clone(),
            bytes: b,
        }
    }

    /// Signs `domain || message`. The domain separates bundle and directive signatures
    /// so that one can never be replayed as the other.
    pub fn sign(&self, domain: &[u8], message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut m = Vec::with_capacity(domain.len() + message.len());
        m.extend_from_slice(domain);
        m.extend_from_slice(message);
        let sig = self.pair.sign(&m);
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(sig.as_ref());
        out
    }

    /// The private key file's contents (JSON). Write it with mode 0600.
    pub fn to_file_contents(&self) -> String {
        let f = PrivateKeyFile {
            kind: PRIVATE_TYPE.into(),
            key_id: self.id.clone(),
            pkcs8: hex::encode(&self.pkcs8),
        };
        serde_json::to_string_pretty(&f).expect("key file serialises") + "\n"
    }

    /// Parses a private key file's contents.
    pub fn from_file_contents(text: &str, path: &str) -> Result<Self, KeyError> {
        let bad = |reason: String| KeyError::BadKeyFile {
            path: path.into(),
            reason,
        };
        let f: PrivateKeyFile =
            serde_json::from_str(text).map_err(|e| bad(format!("not a key file ({e})")))?;
        if f.kind != PRIVATE_TYPE {
            return Err(bad(format!(
                "type is {:?}, expected {PRIVATE_TYPE:?}",
                f.kind
            )));
        }
        let der = hex::decode(f.pkcs8.trim()).map_err(|_| bad("pkcs8 is not hex".into()))?;
        let key = Self::from_pkcs8(&der).map_err(|_| bad("pkcs8 is not an Ed25519 key".into()))?;
        if key.id != f.key_id {
            return Err(bad(format!(
                "key_id {} does not match the key (its id is {})",
                f.key_id, key.id
            )));
        }
        Ok(key)
    }

    /// Reads a private key file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = read_small(path)?;
        Self::from_file_contents(&text, &path.display().to_string())
    }
}

/// An Ed25519 public key with its id.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    id: KeyId,
    bytes: [u8; 32],
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id)
    }
}

impl PublicKey {
    /// Wraps raw Ed25519 public key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self {
            id: KeyId::of_public_key(&bytes),
            bytes,
        }
    }

    /// This key's id.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// Checks `signature` over `domain || message`.
    pub fn verify(&self, domain: &[u8], message: &[u8], signature: &[u8]) -> bool {
        let mut m = Vec::with_capacity(domain.len() + message.len());
        m.extend_from_slice(domain);
        m.extend_from_slice(message);
        UnparsedPublicKey::new(&ED25519, &self.bytes)
            .verify(&m, signature)
            .is_ok()
    }

    /// The public key file's contents (JSON); usable as a trust directory entry.
    pub fn to_file_contents(&self) -> String {
        let f = PublicKeyFile {
            kind: PUBLIC_TYPE.into(),
            key_id: self.id.clone(),
            public_key: hex::encode(self.bytes),
        };
        serde_json::to_string_pretty(&f).expect("key file serialises") + "\n"
    }

    /// Parses a public key file's contents.
    pub fn from_file_contents(text: &str, path: &str) -> Result<Self, KeyError> {
        let bad = |reason: String| KeyError::BadKeyFile {
            path: path.into(),
            reason,
        };
        let f: PublicKeyFile =
            serde_json::from_str(text).map_err(|e| bad(format!("not a key file ({e})")))?;
        if f.kind != PUBLIC_TYPE {
            return Err(bad(format!(
                "type is {:?}, expected {PUBLIC_TYPE:?}",
                f.kind
            )));
        }
        let raw =
            hex::decode(f.public_key.trim()).map_err(|_| bad("public_key is not hex".into()))?;
        let bytes: [u8; 32] = raw
            .try_into()
            .map_err(|_| bad("public_key is not 32 bytes".into()))?;
        let key = Self::from_bytes(bytes);
        if key.id != f.key_id {
            return Err(bad(format!(
                "key_id {} does not match the key (its id is {})",
                f.key_id, key.id
            )));
        }
        Ok(key)
    }
}

/// The public keys a verifier trusts, by id.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    keys: BTreeMap<KeyId, PublicKey>,
}

impl TrustStore {
    /// An empty store (trusts nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a key.
    pub fn add(&mut self, key: PublicKey) {
        self.keys.insert(key.id.clone(), key);
    }

    /// Removes a key (end of a rotation); returns whether it was present.
    pub fn remove(&mut self, id: &KeyId) -> bool {
        self.keys.remove(id).is_some()
    }

    /// Looks a key up by id.
    pub fn get(&self, id: &KeyId) -> Option<&PublicKey> {
        self.keys.get(id)
    }

    /// Ids of all trusted keys.
    pub fn ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.keys()
    }

    /// Number of trusted keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the store trusts no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Loads every `*.pub` file in `dir`. Any malformed key file is an error (a typo in
    /// a trust directory must not silently shrink the set of trusted keys).
    pub fn load_dir(dir: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: dir.display().to_string(),
            source,
        };
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pub"))
            .collect();
        paths.sort();
        let mut store = Self::new();
        for p in paths {
            let text = read_small(&p)?;
            store.add(PublicKey::from_file_contents(
                &text,
                &p.display().to_string(),
            )?);
        }
        if store.is_empty() {
            return Err(KeyError::EmptyTrustDir(dir.display().to_string()));
        }
        Ok(store)
    }
}

fn read_small(path: &Path) -> Result<String, KeyError> {
    let io = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    match crate::fsio::read_capped_string(path, MAX_KEY_FILE) {
        Ok(text) => Ok(text),
        Err(crate::fsio::FsError::TooLarge { size, .. }) => Err(KeyError::BadKeyFile {
            path: path.display().to_string(),
            reason: format!("{size} bytes is too large for a key file"),
        }),
        Err(e) => Err(io(e.into_io())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_file_round_trip() {
        let k = SigningKey::generate().unwrap();
        let sig = k.sign(b"d1", b"msg");
        let pk = k.public_key();
        assert!(pk.verify(b"d1", b"msg", &sig));
        assert!(!pk.verify(b"d2", b"msg", &sig), "domain separation");
        assert!(!pk.verify(b"d1", b"msh", &sig));

        let k2 = SigningKey::from_file_contents(&k.to_file_contents(), "x").unwrap();
        assert_eq!(k2.id(), k.id());
        let pk2 = PublicKey::from_file_contents(&pk.to_file_contents(), "x").unwrap();
        assert_eq!(pk2, pk);
        assert!(!format!("{k:?}").contains(&hex::encode(&k.pkcs8)));
    }

    #[test]
    fn key_file_claiming_another_id_is_rejected() {
        let a = SigningKey::generate().unwrap().public_key();
        let b = SigningKey::generate().unwrap().public_key();
        let forged = a
            .to_file_contents()
            .replace(a.id().as_str(), b.id().as_str());
        let err = PublicKey::from_file_contents(&forged, "f").unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }
}
