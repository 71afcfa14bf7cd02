//! The slow parts of an update, run off the IO loop: install (assemble, load, self-test,
//! write the slot), slot load (read, verify, load) and slot removal. Each reports back
//! with a [`JobDone`] that the loop hands to the model's lifecycle.
//!
//! Every job of one model runs under that model's [`SlotGuard`] lock, so slot files are
//! never written and read at once, and an install writes only while its ticket is the
//! guard's: a newer install or directive replaces it ([`SlotGuard::allow`],
//! [`SlotGuard::supersede`]) and the older install is abandoned before it writes. Together
//! with the lifecycle only ever installing into the inactive slot, the active slot file is
//! never written.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use outpost_inference::Model;
use outpost_protocol::bundle::{VerifiedBundle, VerifiedManifest, Verifier};
use outpost_protocol::directive::ModelTarget;
use outpost_protocol::wire::InstalledModel;
use outpost_protocol::{Digest, TrustStore};
use tokio::sync::mpsc;

use super::disk::{Slot, UpdateDisk};
use crate::models::ActiveModel;

/// Largest bundle file read from a slot.
const MAX_SLOT_BYTES: u64 = 600 * 1024 * 1024;

/// One model's slot lock and the ticket of the one install allowed to write.
#[derive(Debug, Default)]
pub struct SlotGuard {
    lock: tokio::sync::Mutex<()>,
    write_ticket: AtomicU64,
}

impl SlotGuard {
    /// Lets install `ticket` (and no other) write.
    pub fn allow(&self, ticket: u64) {
        self.write_ticket.store(ticket, Ordering::SeqCst);
    }

    /// Abandons every install started before now.
    pub fn supersede(&self) {
        self.write_ticket.store(0, Ordering::SeqCst);
    }

    fn may_write(&self, ticket: u64) -> bool {
        self.write_ticket.load(Ordering::SeqCst) == ticket
    }
}

/// What to do.
pub enum Job {
    /// Install `target` into `slot` (the manifest from the download, or read back from disk).
    Install {
        /// The directive entry.
        target: ModelTarget,
        /// The inactive slot.
        slot: Slot,
        /// Its verified manifest, if the download is still in memory.
        manifest: Option<Box<VerifiedManifest>>,
        /// The lifecycle's ticket.
        ticket: u64,
    },
    /// Load `slot`, which should hold bundle `expect`.
    Load {
        /// The slot.
        slot: Slot,
        /// The lifecycle's ticket.
        ticket: u64,
        /// The bundle it should hold.
        expect: Option<Digest>,
    },
    /// Delete the model's slots and downloads.
    Free,
}

/// How a job ended.
pub enum Outcome {
    /// An install.
    Installed {
        /// The lifecycle's ticket.
        ticket: u64,
        /// The bundle.
        digest: Digest,
        /// The slot written.
        slot: Slot,
        /// The loaded, self-tested model, or why not.
        result: Result<Arc<ActiveModel>, String>,
    },
    /// A slot load.
    Loaded {
        /// The lifecycle's ticket.
        ticket: u64,
        /// The slot.
        slot: Slot,
        /// The loaded model, or why not.
        result: Result<Arc<ActiveModel>, String>,
    },
    /// A removal.
    Freed(Result<(), String>),
}

/// A finished job of model `name`.
pub struct JobDone {
    /// The model.
    pub name: String,
    /// What happened.
    pub outcome: Outcome,
}

/// What a job needs.
pub struct JobContext {
    /// The model.
    pub name: String,
    /// Its disk.
    pub disk: UpdateDisk,
    /// Trusted keys.
    pub trust: TrustStore,
    /// The model's guard.
    pub guard: Arc<SlotGuard>,
    /// Where to report.
    pub done: mpsc::UnboundedSender<JobDone>,
}

/// Runs `job` in the background.
pub fn spawn(ctx: JobContext, job: Job) {
    tokio::spawn(async move {
        let outcome = match job {
            Job::Install {
                target,
                slot,
                manifest,
                ticket,
            } => {
                // Installing holds a few copies of the bundle in memory at once; one
                // install per CPU at a time (a gateway never waits; the simulator keeps a
                // thousand agents from assembling a thousand bundles at once).
                let _permit = install_permits().acquire().await;
                let _lock = ctx.guard.lock.lock().await;
                let digest = target.digest;
                let result = if !ctx.guard.may_write(ticket) {
                    Err("superseded by a newer directive before it was written".to_owned())
                } else {
                    let (disk, trust, name) =
                        (ctx.disk.clone(), ctx.trust.clone(), ctx.name.clone());
                    let guard = ctx.guard.clone();
                    tokio::task::spawn_blocking(move || {
                        install(&disk, &trust, &name, &target, manifest, slot, || {
                            guard.may_write(ticket)
                        })
                    })
                    .await
                    .unwrap_or_else(|e| Err(format!("install task failed: {e}")))
                };
                Outcome::Installed {
                    ticket,
                    digest,
                    slot,
                    result,
                }
            }
            Job::Load {
                slot,
                ticket,
                expect,
            } => {
                let _lock = ctx.guard.lock.lock().await;
                let (disk, trust, name) = (ctx.disk.clone(), ctx.trust.clone(), ctx.name.clone());
                let result = tokio::task::spawn_blocking(move || {
                    load_slot(&disk, &trust, &name, slot, expect)
                })
                .await
                .unwrap_or_else(|e| Err(format!("slot load task failed: {e}")));
                Outcome::Loaded {
                    ticket,
                    slot,
                    result,
                }
            }
            Job::Free => {
                let _lock = ctx.guard.lock.lock().await;
                let (disk, name) = (ctx.disk.clone(), ctx.name.clone());
                let r = tokio::task::spawn_blocking(move || disk.remove_model(&name))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
                Outcome::Freed(r.map_err(|e| e.to_string()))
            }
        };
        let _ = ctx.done.send(JobDone {
            name: ctx.name,
            outcome,
        });
    });
}

/// Reads, re-verifies and loads a slot, checking it holds the expected bundle of model
/// `name`.
pub fn load_slot(
    disk: &UpdateDisk,
    trust: &TrustStore,
    name: &str,
    slot: Slot,
    expect: Option<Digest>,
) -> Result<Arc<ActiveModel>, String> {
    let bytes = disk
        .read_slot(name, slot, MAX_SLOT_BYTES)
        .map_err(|e| e.to_string())?;
    let bundle = Verifier::new(trust)
        .verify_bundle(&bytes)
        .map_err(|e| e.to_string())?;
    if expect.is_some_and(|d| d != bundle.digest()) {
        return Err(format!(
            "slot {slot:?} holds bundle {} instead of {}",
            bundle.digest(),
            expect.map(|d| d.to_string()).unwrap_or_default()
        ));
    }
    activate(name, &bundle, None)
}

fn activate(
    name: &str,
    bundle: &VerifiedBundle,
    model: Option<Model>,
) -> Result<Arc<ActiveModel>, String> {
    let m = bundle.manifest();
    if m.model.name != name {
        return Err(format!(
            "the bundle is model {:?}, not {name:?}",
            m.model.name
        ));
    }
    let model = match model {
        Some(m) => m,
        None => Model::load(bundle.model_bytes(), &m.contract).map_err(|e| e.to_string())?,
    };
    Ok(Arc::new(ActiveModel::new(
        model,
        InstalledModel {
            bundle: bundle.digest(),
            model: m.model.clone(),
        },
        bundle.baseline_bytes().map(<[u8]>::to_vec),
    )))
}

/// Assembles from disk, loads and self-tests, then writes the slot (if `still_current`
/// just before the write).
fn install(
    disk: &UpdateDisk,
    trust: &TrustStore,
    name: &str,
    target: &ModelTarget,
    manifest: Option<Box<VerifiedManifest>>,
    slot: Slot,
    still_current: impl Fn() -> bool,
) -> Result<Arc<ActiveModel>, String> {
    let digest = target.digest;
    let manifest = match manifest {
        Some(m) => *m,
        None => {
            let head = disk
                .read_head(name, digest)
                .ok_or("the downloaded head is missing on disk")?;
            Verifier::new(trust)
                .verify_head(&head)
                .and_then(|m| m.expect_digest(digest))
                .map_err(|e| format!("downloaded head rejected: {e}"))?
        }
    };
    let mut chunks = Vec::with_capacity(manifest.chunk_count() as usize);
    for i in 0..manifest.chunk_count() {
        chunks.push(
            disk.read_chunk(name, digest, i)
                .ok_or_else(|| format!("chunk {i} missing on disk"))?,
        );
    }
    let bundle = manifest
        .assemble(chunks.iter().map(Vec::as_slice))
        .map_err(|e| format!("bundle rejected: {e}"))?;
    drop(chunks);
    let m = bundle.manifest();
    let model = Model::load(bundle.model_bytes(), &m.contract)
        .map_err(|e| format!("model rejected: {e}"))?;
    let samples = bundle
        .self_tests()
        .map_err(|e| format!("self-test samples rejected: {e}"))?;
    model
        .self_test(&samples)
        .map_err(|e| format!("self-test failed: {e}"))?;
    let active = activate(name, &bundle, Some(model))?;
    if !still_current() {
        return Err("superseded by a newer directive before it was written".into());
    }
    disk.install(name, slot, &bundle)
        .map_err(|e| format!("writing slot {slot:?}: {e}"))?;
    disk.remove_download(name, digest);
    Ok(active)
}

fn install_permits() -> &'static tokio::sync::Semaphore {
    static P: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        tokio::sync::Semaphore::new(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        )
    })
}
