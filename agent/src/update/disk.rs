//! The update state on disk: per-model A/B slots, downloads in progress, and the small
//! state file that says which slot of each model is active.
//!
//! ```text
//! {data_dir}/update/state.json                           UpdateState (JSON), replaced atomically
//! {data_dir}/update/models/{name}/slots/a.bundle         a full bundle file, re-verified at every start
//! {data_dir}/update/models/{name}/slots/b.bundle
//! {data_dir}/update/models/{name}/download/{digest}/head verified head of the bundle being fetched
//! {data_dir}/update/models/{name}/download/{digest}/{i}  verified payload chunk i
//! ```
//!
//! Invariants that make a power cut at any point safe:
//! - a model's active slot file is never written; installs go to its inactive slot;
//! - every file but a download's chunks is written as temp file → fsync → rename →
//!   fsync(dir), so it is either absent, the old version or the complete new version
//!   (chunks skip the fsyncs: see below);
//! - a switch is one atomic replace of `state.json`, done only after the new slot's file
//!   is durable; at start each active slot is re-verified and, should it fail, the other
//!   slot is tried.
//!
//! Chunks are re-verified against the manifest when a download resumes, so a torn or
//! corrupted chunk file is simply fetched again; that is why they are written without
//! fsync (`fsio::write_replaceable`). A state file of the single-model layout
//! (format 1: `update/slots/`, one model) is migrated at start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use outpost_protocol::Digest;
use outpost_protocol::fsio::{read_capped, read_capped_string, write_atomic, write_replaceable};
use outpost_protocol::wire::{DirectiveRejection, InstalledModel};
use serde::{Deserialize, Serialize};

use super::lifecycle::{Lifecycle, Phase};

/// A or B.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    /// Slot A.
    A,
    /// Slot B.
    B,
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Self {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
    fn file(self) -> &'static str {
        match self {
            Slot::A => "a.bundle",
            Slot::B => "b.bundle",
        }
    }
}

/// Current state-file format.
pub const STATE_FORMAT: u32 = 2;

/// The persisted update state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateState {
    /// [`STATE_FORMAT`].
    pub format: u32,
    /// Highest directive sequence accepted.
    pub last_sequence: Option<u64>,
    /// The accepted directive (raw, re-verified at start).
    pub directive: Option<String>,
    /// Every model slot, by name.
    pub models: BTreeMap<String, Lifecycle>,
    /// The last directive refused.
    pub rejected: Option<DirectiveRejection>,
}

impl Default for UpdateState {
    fn default() -> Self {
        Self {
            format: STATE_FORMAT,
            last_sequence: None,
            directive: None,
            models: BTreeMap::new(),
            rejected: None,
        }
    }
}

/// The single-model state of format 1 (read only to migrate).
#[derive(Deserialize)]
struct StateV1 {
    last_sequence: Option<u64>,
    active: Option<Slot>,
    slot_a: Option<InstalledModel>,
    slot_b: Option<InstalledModel>,
    last_error: Option<String>,
}

/// Files under `{data_dir}/update`.
#[derive(Debug, Clone)]
pub struct UpdateDisk {
    root: PathBuf,
}

/// Largest state file read.
const MAX_STATE_FILE: u64 = 4 << 20;
/// Largest bundle head read.
const MAX_HEAD: u64 = 2 << 20;
/// Largest chunk file read.
const MAX_CHUNK: u64 = 256 * 1024;

/// Whether `name` is usable as a directory name (the protocol's model name rules, checked
/// again here because it becomes a path).
fn safe(name: &str) -> bool {
    outpost_protocol::manifest::valid_name(name)
}

impl UpdateDisk {
    /// Creates the directories.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let root = data_dir.join("update");
        std::fs::create_dir_all(root.join("models"))?;
        Ok(Self { root })
    }

    fn model_dir(&self, name: &str) -> PathBuf {
        debug_assert!(safe(name));
        self.root.join("models").join(name)
    }

    /// Loads the state; a missing file is a fresh device; a format-1 file is migrated. A
    /// corrupt file is moved aside (`state.json.corrupt-{unix}`) and a fresh state returned
    /// with the error, so a bad file never stops the agent from starting.
    pub fn load_state(&self) -> (UpdateState, Option<String>) {
        let p = self.root.join("state.json");
        let text = match read_capped_string(&p, MAX_STATE_FILE) {
            Err(e) if e.is_not_found() => return (UpdateState::default(), None),
            r => r.map_err(|e| e.to_string()),
        };
        let parsed = text.and_then(|t| {
            let v: serde_json::Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
            if v.get("format").and_then(serde_json::Value::as_u64) == Some(u64::from(STATE_FORMAT))
            {
                serde_json::from_value::<UpdateState>(v).map_err(|e| e.to_string())
            } else {
                let old: StateV1 = serde_json::from_value(v).map_err(|e| e.to_string())?;
                self.migrate(old)
                    .map_err(|e| format!("migrating format 1: {e}"))
            }
        });
        match parsed {
            Ok(s) if s.models.keys().all(|k| safe(k)) => (s, None),
            Ok(_) | Err(_) => {
                let e = parsed
                    .err()
                    .unwrap_or_else(|| "a model name is not a valid name".into());
                let aside = self
                    .root
                    .join(format!("state.json.corrupt-{}", crate::clock::unix_now()));
                let _ = std::fs::rename(&p, &aside);
                (
                    UpdateState::default(),
                    Some(format!(
                        "update state was unreadable ({e}); moved to {}",
                        aside.display()
                    )),
                )
            }
        }
    }

    /// Moves a single-model layout into the per-model one.
    fn migrate(&self, old: StateV1) -> std::io::Result<UpdateState> {
        let mut s = UpdateState {
            last_sequence: old.last_sequence,
            ..UpdateState::default()
        };
        let name = old
            .slot_a
            .as_ref()
            .or(old.slot_b.as_ref())
            .map(|m| m.model.name.clone())
            .filter(|n| safe(n));
        if let Some(name) = name {
            let mut l = Lifecycle::new(&name);
            let dir = self.model_dir(&name).join("slots");
            std::fs::create_dir_all(&dir)?;
            for (slot, held) in [(Slot::A, &old.slot_a), (Slot::B, &old.slot_b)] {
                let from = self.root.join("slots").join(slot.file());
                if held.as_ref().is_some_and(|m| m.model.name == name) && from.exists() {
                    std::fs::rename(&from, dir.join(slot.file()))?;
                    l.slots[usize::from(slot == Slot::B)] = held.clone();
                }
            }
            l.active = old.active.filter(|a| l.slot(*a).is_some());
            l.phase = Phase::Idle;
            l.last_error = old.last_error;
            s.models.insert(name, l);
        }
        let _ = std::fs::remove_dir_all(self.root.join("download"));
        let _ = std::fs::remove_dir_all(self.root.join("slots"));
        self.save_state(&s)?;
        Ok(s)
    }

    /// Replaces the state atomically.
    pub fn save_state(&self, s: &UpdateState) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(s).expect("state serialises");
        Ok(write_atomic(&self.root.join("state.json"), &json)?)
    }

    /// A slot's bundle file path.
    pub fn slot_path(&self, name: &str, s: Slot) -> PathBuf {
        self.model_dir(name).join("slots").join(s.file())
    }

    /// Writes a bundle into a slot (which must not be the active one).
    pub fn write_slot(&self, name: &str, s: Slot, bundle: &[u8]) -> std::io::Result<()> {
        let p = self.slot_path(name, s);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        Ok(write_atomic(&p, bundle)?)
    }

    /// Reads a slot's bundle, capped.
    pub fn read_slot(&self, name: &str, s: Slot, cap: u64) -> std::io::Result<Vec<u8>> {
        Ok(read_capped(&self.slot_path(name, s), cap)?)
    }

    fn download_dir(&self, name: &str, d: Digest) -> PathBuf {
        self.model_dir(name).join("download").join(d.to_hex())
    }

    /// Persists a verified head.
    pub fn write_head(&self, name: &str, d: Digest, head: &[u8]) -> std::io::Result<()> {
        let dir = self.download_dir(name, d);
        std::fs::create_dir_all(&dir)?;
        Ok(write_atomic(&dir.join("head"), head)?)
    }

    /// Reads a persisted head.
    pub fn read_head(&self, name: &str, d: Digest) -> Option<Vec<u8>> {
        read_capped(&self.download_dir(name, d).join("head"), MAX_HEAD).ok()
    }

    /// Stores a verified chunk, without fsync: a chunk torn by a power cut fails its
    /// digest check when the download resumes and is fetched again, so durability here
    /// would buy nothing for two flushes per chunk (the assembled slot file is durable).
    pub fn write_chunk(
        &self,
        name: &str,
        d: Digest,
        index: u32,
        data: &[u8],
    ) -> std::io::Result<()> {
        let dir = self.download_dir(name, d);
        std::fs::create_dir_all(&dir)?;
        Ok(write_replaceable(&dir.join(index.to_string()), data)?)
    }

    /// Reads a persisted chunk.
    pub fn read_chunk(&self, name: &str, d: Digest, index: u32) -> Option<Vec<u8>> {
        read_capped(
            &self.download_dir(name, d).join(index.to_string()),
            MAX_CHUNK,
        )
        .ok()
    }

    /// Deletes a model's downloads except `keep`.
    pub fn clear_downloads(&self, name: &str, keep: Option<Digest>) {
        let keep = keep.map(|d| d.to_hex());
        if let Ok(rd) = std::fs::read_dir(self.model_dir(name).join("download")) {
            for e in rd.flatten() {
                if Some(e.file_name().to_string_lossy().into_owned()) != keep {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }

    /// Deletes one download of a model (after its install).
    pub fn remove_download(&self, name: &str, d: Digest) {
        let _ = std::fs::remove_dir_all(self.download_dir(name, d));
    }

    /// Deletes everything of a model (slots and downloads).
    pub fn remove_model(&self, name: &str) -> std::io::Result<()> {
        match std::fs::remove_dir_all(self.model_dir(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Bytes used by a model's slots and downloads.
    pub fn model_bytes(&self, name: &str) -> u64 {
        fn walk(p: &Path) -> u64 {
            match std::fs::read_dir(p) {
                Ok(rd) => rd
                    .flatten()
                    .map(|e| match e.metadata() {
                        Ok(m) if m.is_dir() => walk(&e.path()),
                        Ok(m) => m.len(),
                        Err(_) => 0,
                    })
                    .sum(),
                Err(_) => 0,
            }
        }
        walk(&self.model_dir(name))
    }

    /// Model directories present on disk (to remove leftovers of models no longer known).
    pub fn model_dirs(&self) -> Vec<String> {
        std::fs::read_dir(self.root.join("models"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}
