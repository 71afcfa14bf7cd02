//! Signing-key rotation carried inside directives: which bridge keys a device should
//! start trusting and which it should stop trusting.
//!
//! The bridge rotates its signing key in three steps (`docs/architecture.md`, Trust model):
//! 1. a *next* key is made; every directive the bridge sends lists its public half under
//!    `trust.add` — signed by the *active* key, so a device only ever learns keys vouched
//!    for by a key it already trusts;
//! 2. once every device reports the next key among its `trusted_keys`, it becomes the
//!    active key and signs from then on;
//! 3. the old key is *retired*: directives (now signed by the new key) list its id under
//!    `trust.remove`, and a device that applied that no longer verifies anything with it.
//!
//! Wire form, an optional member of the directive body (format 2; agents that predate it
//! ignore unknown body members, so the field needs no format bump):
//!
//! ```json
//! "trust": {"add": [{"key_id": "ba6668c465ed7ac5", "public_key": "<64 hex>"}],
//!           "remove": ["0f3c…"]}
//! ```
//!
//! Only [`crate::directive::verify`] turns this into [`TrustChanges`], after the signature
//! verified, so unverified bytes can never add trust. Caps: at most [`MAX_TRUST_ADD`]
//! additions and [`MAX_TRUST_REMOVE`] removals per directive (the whole directive is also
//! under `Limits::max_directive`).

use serde::{Deserialize, Serialize};

use crate::keys::{KeyId, PublicKey};

/// Most keys one directive may ask a device to start trusting (the bridge sends one: its
/// next key).
pub const MAX_TRUST_ADD: usize = 4;
/// Most keys one directive may ask a device to stop trusting (the bridge sends its most
/// recently retired keys).
pub const MAX_TRUST_REMOVE: usize = 8;

/// A public key as a directive carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    /// The key's id; must be the id derived from `public_key`.
    pub key_id: KeyId,
    /// Raw Ed25519 public key, 32 bytes as 64 lowercase hex characters.
    pub public_key: String,
}

impl TrustedKey {
    /// The wire form of `key`.
    pub fn of(key: &PublicKey) -> Self {
        Self {
            key_id: key.id().clone(),
            public_key: hex::encode(key.bytes()),
        }
    }

    /// Decodes the key and checks that its id is the one derived from it.
    ///
    /// # Errors
    /// A reason naming the key id: not 64 hex characters, or an id that is not the key's.
    pub fn decode(&self) -> Result<PublicKey, String> {
        let raw = hex::decode(&self.public_key)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                format!(
                    "trust.add key {} is not 32 bytes of hex",
                    self.key_id.as_str()
                )
            })?;
        let key = PublicKey::from_bytes(raw);
        if key.id() != &self.key_id {
            return Err(format!(
                "trust.add names key {} but the key's id is {}",
                self.key_id,
                key.id()
            ));
        }
        Ok(key)
    }
}

/// The optional `trust` member of a directive body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustUpdate {
    /// Keys to start trusting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<TrustedKey>,
    /// Ids of keys to stop trusting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<KeyId>,
}

impl TrustUpdate {
    /// Whether it asks for nothing.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    /// Checks the update of a directive signed by `signer` and decodes its keys.
    ///
    /// # Errors
    /// A reason: over a cap, a malformed or mislabelled key, a key listed twice or both
    /// added and removed, or a removal of `signer` (a directive cannot revoke the key that
    /// vouches for it; the bridge retires a key only with directives signed by its
    /// successor).
    pub fn check(&self, signer: &KeyId) -> Result<TrustChanges, String> {
        if self.add.len() > MAX_TRUST_ADD {
            return Err(format!(
                "trust.add lists {} keys (at most {MAX_TRUST_ADD})",
                self.add.len()
            ));
        }
        if self.remove.len() > MAX_TRUST_REMOVE {
            return Err(format!(
                "trust.remove lists {} keys (at most {MAX_TRUST_REMOVE})",
                self.remove.len()
            ));
        }
        let mut add: Vec<PublicKey> = Vec::with_capacity(self.add.len());
        for k in &self.add {
            let key = k.decode()?;
            if add.iter().any(|a| a.id() == key.id()) {
                return Err(format!("trust.add lists key {} twice", key.id()));
            }
            add.push(key);
        }
        for (i, id) in self.remove.iter().enumerate() {
            if KeyId::parse(id.as_str()).is_none() {
                return Err("trust.remove holds an invalid key id".into());
            }
            if self.remove[..i].contains(id) {
                return Err(format!("trust.remove lists key {id} twice"));
            }
            if id == signer {
                return Err(format!(
                    "trust.remove names {id}, the key that signed this directive"
                ));
            }
            if add.iter().any(|a| a.id() == id) {
                return Err(format!("key {id} is both added and removed"));
            }
        }
        Ok(TrustChanges {
            add,
            remove: self.remove.clone(),
        })
    }
}

/// The trust changes of a *verified* directive: keys decoded and checked. Obtained from
/// [`crate::directive::VerifiedDirective::trust_changes`] only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustChanges {
    add: Vec<PublicKey>,
    remove: Vec<KeyId>,
}

impl TrustChanges {
    /// Keys to start trusting, each with its id checked against the key.
    pub fn add(&self) -> &[PublicKey] {
        &self.add
    }

    /// Ids of keys to stop trusting (never the key that signed the directive).
    pub fn remove(&self) -> &[KeyId] {
        &self.remove
    }

    /// Whether there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SigningKey;

    fn key() -> PublicKey {
        SigningKey::generate().unwrap().public_key()
    }

    #[test]
    fn a_key_must_carry_its_own_id() {
        let (a, b) = (key(), key());
        assert_eq!(TrustedKey::of(&a).decode().unwrap(), a);
        let lying = TrustedKey {
            key_id: b.id().clone(),
            public_key: TrustedKey::of(&a).public_key,
        };
        assert!(lying.decode().unwrap_err().contains("the key's id is"));
        let short = TrustedKey {
            key_id: a.id().clone(),
            public_key: "abcd".into(),
        };
        assert!(short.decode().unwrap_err().contains("32 bytes"));
    }

    #[test]
    fn caps_duplicates_and_self_removal_are_refused() {
        let signer = key();
        let keys: Vec<PublicKey> = (0..MAX_TRUST_ADD + 1).map(|_| key()).collect();
        let over = TrustUpdate {
            add: keys.iter().map(TrustedKey::of).collect(),
            remove: vec![],
        };
        assert!(over.check(signer.id()).unwrap_err().contains("at most"));
        let ids: Vec<KeyId> = (0..MAX_TRUST_REMOVE + 1)
            .map(|_| key().id().clone())
            .collect();
        let over = TrustUpdate {
            add: vec![],
            remove: ids,
        };
        assert!(over.check(signer.id()).unwrap_err().contains("at most"));
        let twice = TrustUpdate {
            add: vec![TrustedKey::of(&keys[0]), TrustedKey::of(&keys[0])],
            remove: vec![],
        };
        assert!(twice.check(signer.id()).unwrap_err().contains("twice"));
        let both = TrustUpdate {
            add: vec![TrustedKey::of(&keys[0])],
            remove: vec![keys[0].id().clone()],
        };
        assert!(both.check(signer.id()).unwrap_err().contains("both"));
        let own = TrustUpdate {
            add: vec![],
            remove: vec![signer.id().clone()],
        };
        assert!(own.check(signer.id()).unwrap_err().contains("signed this"));
        let ok = TrustUpdate {
            add: vec![TrustedKey::of(&keys[0])],
            remove: vec![keys[1].id().clone()],
        };
        let c = ok.check(signer.id()).unwrap();
        assert_eq!(c.add(), &[keys[0].clone()]);
        assert_eq!(c.remove(), &[keys[1].id().clone()]);
    }

    #[test]
    fn unknown_members_are_refused() {
        let e = serde_json::from_str::<TrustUpdate>(r#"{"add":[],"replace_all":true}"#);
        assert!(e.is_err());
    }
}
