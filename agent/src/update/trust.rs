//! The device's trust directory, changed only by verified directives (bridge signing-key
//! rotation, `outpost_protocol::rotation`).
//!
//! Layout: `{trust_dir}/*.pub` are the keys directives and new bundles verify with;
//! `{trust_dir}/retired/*.pub` are keys a directive told the device to stop trusting. A
//! retired key never verifies a directive again; it still verifies the head of a bundle
//! whose digest a directive signed by a *trusted* key names (the digest is the SHA-256 of
//! the manifest, which pins every byte, so the trusted directive vouches for it): bundles
//! installed or registered before a rotation keep loading and stay deployable.
//!
//! Changes come from [`outpost_protocol::directive::VerifiedDirective::trust_changes`], so
//! only a directive signed by a key already trusted can change the set. Each added key is
//! written atomically (temp → fsync → rename → fsync(dir)) *before* it is trusted in
//! memory, so what the device reports trusting (`trusted_keys`) is what it will trust
//! after a restart. The directory holds at most [`MAX_TRUSTED_KEYS`] keys.

use std::path::{Path, PathBuf};

use outpost_protocol::rotation::TrustChanges;
use outpost_protocol::{KeyId, PublicKey, TrustStore};

/// Most keys a device trusts at once (a rotation needs two).
pub const MAX_TRUSTED_KEYS: usize = 16;
/// Sub-directory of the trust directory that holds retired keys.
pub const RETIRED_DIR: &str = "retired";
/// Largest key file read (they are ~200 bytes).
const MAX_KEY_FILE: u64 = 16 * 1024;

/// Why a trust change was not applied (the directive is still accepted: its models are
/// independent of the key set, and the bridge repeats the change in every directive).
#[derive(Debug, thiserror::Error)]
pub enum TrustDirError {
    /// The directory is at its cap.
    #[error(
        "the trust directory holds {have} keys (at most {MAX_TRUSTED_KEYS}); key {key} was not added"
    )]
    Full {
        /// Keys trusted now.
        have: usize,
        /// The key refused.
        key: KeyId,
    },
    /// The directory could not be written.
    #[error("cannot update the trust directory at {path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// What [`apply`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Keys now trusted that were not.
    pub added: Vec<KeyId>,
    /// Keys no longer trusted.
    pub removed: Vec<KeyId>,
}

impl Applied {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// The retired keys under `dir` (none when the sub-directory is missing or empty; a
/// malformed file there is skipped with a warning: retired keys only help reload slots).
pub fn load_retired(dir: &Path) -> TrustStore {
    let mut store = TrustStore::new();
    let Ok(entries) = std::fs::read_dir(dir.join(RETIRED_DIR)) else {
        return store;
    };
    for p in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        if p.extension().is_some_and(|x| x == "pub") {
            match read_key(&p) {
                Ok(k) => store.add(k),
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "unreadable retired key skipped")
                }
            }
        }
    }
    store
}

/// Applies a verified directive's trust changes to `trust` (and to the files in `dir`
/// when given; `None` keeps them in memory only, for tests without a directory). Removed
/// keys move to `retired`. Each change is applied on its own: one that fails is reported
/// and the others still happen; an addition is trusted only once its file is written.
pub fn apply(
    dir: Option<&Path>,
    trust: &mut TrustStore,
    retired: &mut TrustStore,
    changes: &TrustChanges,
) -> (Applied, Vec<TrustDirError>) {
    let mut done = Applied::default();
    let mut errors = Vec::new();
    for key in changes.add() {
        if trust.get(key.id()).is_some() {
            continue;
        }
        if trust.len() >= MAX_TRUSTED_KEYS {
            errors.push(TrustDirError::Full {
                have: trust.len(),
                key: key.id().clone(),
            });
            continue;
        }
        if let Some(d) = dir {
            let path = d.join(format!("{}.pub", key.id()));
            if let Err(e) =
                outpost_protocol::fsio::write_atomic(&path, key.to_file_contents().as_bytes())
            {
                errors.push(TrustDirError::Io {
                    path,
                    source: e.into(),
                });
                continue;
            }
            let _ = std::fs::remove_file(d.join(RETIRED_DIR).join(format!("{}.pub", key.id())));
        }
        retired.remove(key.id());
        trust.add(key.clone());
        done.added.push(key.id().clone());
    }
    for id in changes.remove() {
        // The protocol never lets a directive remove its own signer, so the set cannot
        // empty here; the check keeps that true whatever the caller passes.
        if trust.len() <= 1 {
            break;
        }
        let Some(key) = trust.get(id).cloned() else {
            continue;
        };
        if let Some(d) = dir
            && let Err(e) = retire_files(d, &key)
        {
            errors.push(e);
            continue;
        }
        trust.remove(id);
        retired.add(key);
        done.removed.push(id.clone());
    }
    (done, errors)
}

/// Moves every file in `dir` holding `key` (whatever its name) into `dir/retired/`.
fn retire_files(dir: &Path, key: &PublicKey) -> Result<(), TrustDirError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrustDirError::Io { path, source }
    };
    let retired = dir.join(RETIRED_DIR);
    std::fs::create_dir_all(&retired).map_err(io(&retired))?;
    for p in std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pub"))
    {
        if read_key(&p).is_ok_and(|k| k.id() == key.id()) {
            let to = retired.join(format!("{}.pub", key.id()));
            std::fs::rename(&p, &to).map_err(io(&p))?;
        }
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

fn read_key(p: &Path) -> Result<PublicKey, String> {
    let len = std::fs::metadata(p).map_err(|e| e.to_string())?.len();
    if len > MAX_KEY_FILE {
        return Err(format!("{len} bytes is too large for a key file"));
    }
    let text = std::fs::read_to_string(p).map_err(|e| e.to_string())?;
    PublicKey::from_file_contents(&text, &p.display().to_string()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use outpost_protocol::directive::{self, DIRECTIVE_FORMAT, Directive, DirectiveContext};
    use outpost_protocol::rotation::{TrustUpdate, TrustedKey};
    use outpost_protocol::{Limits, SigningKey};

    use super::*;

    fn changes(signer: &SigningKey, update: TrustUpdate) -> TrustChanges {
        let d = Directive {
            format: DIRECTIVE_FORMAT,
            device_id: "gw-1".into(),
            sequence: 1,
            issued_at: 10,
            expires_at: 20,
            models: vec![],
            trust: Some(update),
        };
        let mut t = TrustStore::new();
        t.add(signer.public_key());
        let ctx = DirectiveContext {
            device_id: "gw-1",
            last_sequence: None,
            now: 15,
            max_skew: 0,
        };
        directive::verify(&d.sign(signer), &t, ctx, &Limits::default())
            .unwrap()
            .trust_changes()
            .clone()
    }

    #[test]
    fn add_then_retire_survives_a_reload_and_keeps_the_retired_key_apart() {
        let d = tempfile::tempdir().unwrap();
        let (old, new) = (
            SigningKey::generate().unwrap(),
            SigningKey::generate().unwrap(),
        );
        // Provisioned under a name that is not its id, as an operator may have done.
        std::fs::write(
            d.path().join("bridge.pub"),
            old.public_key().to_file_contents(),
        )
        .unwrap();
        let mut trust = TrustStore::load_dir(d.path()).unwrap();
        let mut retired = load_retired(d.path());
        let add = changes(
            &old,
            TrustUpdate {
                add: vec![TrustedKey::of(&new.public_key())],
                remove: vec![],
            },
        );
        let (a, e) = apply(Some(d.path()), &mut trust, &mut retired, &add);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(a.added, vec![new.id().clone()]);
        assert_eq!(TrustStore::load_dir(d.path()).unwrap().len(), 2);
        // Again: nothing to do.
        assert!(
            apply(Some(d.path()), &mut trust, &mut retired, &add)
                .0
                .is_empty()
        );

        let remove = changes(
            &new,
            TrustUpdate {
                add: vec![],
                remove: vec![old.id().clone()],
            },
        );
        let (a, e) = apply(Some(d.path()), &mut trust, &mut retired, &remove);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(a.removed, vec![old.id().clone()]);
        let reloaded = TrustStore::load_dir(d.path()).unwrap();
        assert!(reloaded.get(old.id()).is_none() && reloaded.get(new.id()).is_some());
        assert!(load_retired(d.path()).get(old.id()).is_some());
        assert!(!d.path().join("bridge.pub").exists());
    }

    #[test]
    fn a_full_directory_refuses_more_keys_and_an_unwritable_one_trusts_nothing_new() {
        let signer = SigningKey::generate().unwrap();
        let mut trust = TrustStore::new();
        trust.add(signer.public_key());
        for _ in 1..MAX_TRUSTED_KEYS {
            trust.add(SigningKey::generate().unwrap().public_key());
        }
        let extra = SigningKey::generate().unwrap().public_key();
        let add = changes(
            &signer,
            TrustUpdate {
                add: vec![TrustedKey::of(&extra)],
                remove: vec![],
            },
        );
        let (a, e) = apply(None, &mut trust, &mut TrustStore::new(), &add);
        assert!(a.is_empty());
        assert!(matches!(e[..], [TrustDirError::Full { .. }]));

        let mut small = TrustStore::new();
        small.add(signer.public_key());
        let missing = Path::new("/nonexistent/outpost-trust");
        let (a, e) = apply(Some(missing), &mut small, &mut TrustStore::new(), &add);
        assert!(a.is_empty() && small.get(extra.id()).is_none());
        assert!(matches!(e[..], [TrustDirError::Io { .. }]));
    }
}
