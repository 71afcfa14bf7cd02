//! The update state on disk: A/B slots, downloads in progress, and the small state file
//! that says which slot is active.
//!
//! ```text
//! {data_dir}/update/state.json              UpdateState (JSON), replaced atomically
//! {data_dir}/update/slots/a.bundle          a full bundle file, re-verified at every start
//! {data_dir}/update/slots/b.bundle
//! {data_dir}/update/download/{digest}/head  verified head of the bundle being fetched
//! {data_dir}/update/download/{digest}/{i}   verified payload chunk i
//! ```
//!
//! Invariants that make a power cut at any point safe:
//! - the active slot's file is never written; installs go to the inactive slot;
//! - every file is written as temp file → fsync → rename → fsync(dir), so it is either
//!   absent, the old version or the complete new version;
//! - the switch is one atomic replace of `state.json`, done only after the new slot's
//!   file is durable; at start the active slot is re-verified and, should it fail, the
//!   other slot is tried.
//!
//! Chunks are re-verified against the manifest when a download resumes, so a torn or
//! corrupted chunk file is simply fetched again.

use std::io::Write;
use std::path::{Path, PathBuf};

use outpost_protocol::Digest;
use outpost_protocol::wire::InstalledModel;
use serde::{Deserialize, Serialize};

/// A or B.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// Probation that survives restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbationState {
    /// Deployment the switch belongs to.
    pub deployment_id: String,
    /// Directive sequence.
    pub sequence: u64,
    /// Agent starts since the switch (a crash loop rolls back).
    pub boots: u32,
}

/// The persisted update state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UpdateState {
    /// Highest directive sequence accepted.
    pub last_sequence: Option<u64>,
    /// Active slot.
    pub active: Option<Slot>,
    /// What slot A holds.
    pub slot_a: Option<InstalledModel>,
    /// What slot B holds.
    pub slot_b: Option<InstalledModel>,
    /// The accepted directive being applied (raw, re-verified at start).
    pub pending: Option<String>,
    /// Probation in progress.
    pub probation: Option<ProbationState>,
    /// Outcome of the last directive (reported after restarts).
    pub last_outcome: Option<outpost_protocol::wire::UpdatePhase>,
    /// Deployment of the last directive.
    pub last_deployment: Option<String>,
    /// Sequence of the last directive.
    pub last_directive_sequence: Option<u64>,
    /// Last error.
    pub last_error: Option<String>,
}

impl UpdateState {
    /// What a slot holds.
    pub fn slot(&self, s: Slot) -> Option<&InstalledModel> {
        match s {
            Slot::A => self.slot_a.as_ref(),
            Slot::B => self.slot_b.as_ref(),
        }
    }
    /// Records what a slot holds.
    pub fn set_slot(&mut self, s: Slot, m: Option<InstalledModel>) {
        match s {
            Slot::A => self.slot_a = m,
            Slot::B => self.slot_b = m,
        }
    }
}

/// Files under `{data_dir}/update`.
#[derive(Debug, Clone)]
pub struct UpdateDisk {
    root: PathBuf,
}

/// Largest state file read.
const MAX_STATE_FILE: u64 = 256 * 1024;

impl UpdateDisk {
    /// Creates the directories.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let root = data_dir.join("update");
        std::fs::create_dir_all(root.join("slots"))?;
        std::fs::create_dir_all(root.join("download"))?;
        Ok(Self { root })
    }

    /// Loads the state; a missing file is a fresh device. A corrupt file is moved aside
    /// (`state.json.corrupt-{unix}`) and a fresh state returned with the error, so a bad
    /// file never stops the agent from starting.
    pub fn load_state(&self) -> (UpdateState, Option<String>) {
        let p = self.root.join("state.json");
        let text = match std::fs::metadata(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return (UpdateState::default(), None);
            }
            Ok(m) if m.len() > MAX_STATE_FILE => Err(format!("{} bytes", m.len())),
            _ => std::fs::read_to_string(&p).map_err(|e| e.to_string()),
        };
        match text.and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string())) {
            Ok(s) => (s, None),
            Err(e) => {
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

    /// Replaces the state atomically.
    pub fn save_state(&self, s: &UpdateState) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(s).expect("state serialises");
        write_atomic(&self.root.join("state.json"), &json)
    }

    /// A slot's bundle file path.
    pub fn slot_path(&self, s: Slot) -> PathBuf {
        self.root.join("slots").join(s.file())
    }

    /// Writes a bundle into a slot (which must not be the active one).
    pub fn write_slot(&self, s: Slot, bundle: &[u8]) -> std::io::Result<()> {
        write_atomic(&self.slot_path(s), bundle)
    }

    /// Reads a slot's bundle, capped.
    pub fn read_slot(&self, s: Slot, cap: u64) -> std::io::Result<Vec<u8>> {
        read_capped(&self.slot_path(s), cap)
    }

    fn download_dir(&self, d: Digest) -> PathBuf {
        self.root.join("download").join(d.to_hex())
    }

    /// Persists a verified head.
    pub fn write_head(&self, d: Digest, head: &[u8]) -> std::io::Result<()> {
        let dir = self.download_dir(d);
        std::fs::create_dir_all(&dir)?;
        write_atomic(&dir.join("head"), head)
    }

    /// Reads a persisted head.
    pub fn read_head(&self, d: Digest) -> Option<Vec<u8>> {
        read_capped(&self.download_dir(d).join("head"), 2 << 20).ok()
    }

    /// Persists a verified chunk.
    pub fn write_chunk(&self, d: Digest, index: u32, data: &[u8]) -> std::io::Result<()> {
        write_atomic(&self.download_dir(d).join(index.to_string()), data)
    }

    /// Reads a persisted chunk.
    pub fn read_chunk(&self, d: Digest, index: u32) -> Option<Vec<u8>> {
        read_capped(&self.download_dir(d).join(index.to_string()), 256 * 1024).ok()
    }

    /// Deletes downloads except `keep`.
    pub fn clear_downloads(&self, keep: Option<Digest>) {
        let keep = keep.map(|d| d.to_hex());
        if let Ok(rd) = std::fs::read_dir(self.root.join("download")) {
            for e in rd.flatten() {
                if Some(e.file_name().to_string_lossy().into_owned()) != keep {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

fn read_capped(p: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    let len = std::fs::metadata(p)?.len();
    if len > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is {len} bytes, over the {cap} byte cap", p.display()),
        ));
    }
    std::fs::read(p)
}

/// temp → fsync → rename → fsync(dir).
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
