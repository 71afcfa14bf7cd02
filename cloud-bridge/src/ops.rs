//! The operations layer: one context ([`Ops`]) every face of the bridge acts on — the
//! CLI (`cli`), the HTTP API (`api`), the dashboard (`ui`) and `serve` itself — and the
//! operations whose side effects (audit entries, events, files) must not depend on which
//! face asked.
//!
//! A face adds only what is its own: argument or body parsing, authorisation, rendering.
//! The database calls here are blocking; async faces run them through
//! [`crate::db::Db::run`] or `spawn_blocking` (the one-database rule, `docs/architecture.md`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use outpost_protocol::SigningKey;
use outpost_protocol::manifest::ModelRef;
use outpost_protocol::wire::EventKind;
use tokio::sync::Notify;

use crate::audit::Audit;
use crate::bundles::{BundleStore, FsBundleStore};
use crate::db::{Db, DbError};
use crate::devices::{CertOptions, DeviceError, Placement, Provisioned};
use crate::events::{EventBus, NewEvent};
use crate::fleet::FleetHandle;
use crate::keys::{Keyring, Signer};
use crate::mqtt::MqttOut;
use crate::profile::ValidationProfile;
use crate::registry::{ModelRecord, RegisterRequest, RegistryError};

/// Why the context could not be opened or a key loaded.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The database.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The bundle directory.
    #[error("bundle directory under {path}: {source}")]
    Bundles {
        /// Data directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The signing keys.
    #[error(transparent)]
    Keys(#[from] crate::keys::KeysError),
}

/// What every face of the bridge acts on. Cheap to clone (shared handles).
#[derive(Clone)]
pub struct Ops {
    /// Database.
    pub db: Db,
    /// Audit log.
    pub audit: Audit,
    /// Events (with an MQTT copy under `serve`).
    pub events: EventBus,
    /// Bundles.
    pub bundles: Arc<dyn BundleStore>,
    /// Data directory.
    pub data_dir: PathBuf,
    out: MqttOut,
    wake: Arc<Notify>,
    /// `--key FILE`: sign with this private key file (it must be the active key).
    key_file: Option<PathBuf>,
    // Opened on first use: commands that never sign (listings, audit) must not create a
    // key, or a later `keys init` would find one it did not write.
    keyring: Arc<Mutex<Option<Keyring>>>,
}

impl Ops {
    /// Opens (creating if needed) a data directory for commands run without a broker
    /// connection: directives they record stay unpublished until a running bridge's
    /// engine publishes them on its next pass.
    pub fn open(data_dir: &Path) -> Result<Self, OpsError> {
        let db = Db::open(data_dir)?;
        let events = EventBus::new(db.clone(), None);
        Self::new(
            db,
            data_dir,
            events,
            MqttOut::detached(),
            Arc::new(Notify::new()),
        )
    }

    /// The context `serve` builds: events and directives go out through `out`; `wake`
    /// is notified when devices report (the rollout engine re-evaluates).
    pub fn new(
        db: Db,
        data_dir: &Path,
        events: EventBus,
        out: MqttOut,
        wake: Arc<Notify>,
    ) -> Result<Self, OpsError> {
        let bundles: Arc<dyn BundleStore> = Arc::new(FsBundleStore::new(data_dir).map_err(
            |source| OpsError::Bundles {
                path: data_dir.to_path_buf(),
                source,
            },
        )?);
        Ok(Self {
            audit: Audit::new(data_dir),
            db,
            events,
            bundles,
            data_dir: data_dir.to_path_buf(),
            out,
            wake,
            key_file: None,
            keyring: Arc::default(),
        })
    }

    /// Signs with `key_file` (`--key FILE`, kept outside the data directory; it must be
    /// the active key) instead of the key ring's recorded path.
    pub fn with_key_file(mut self, key_file: Option<PathBuf>) -> Self {
        self.key_file = key_file;
        self.keyring = Arc::default();
        self
    }

    /// The key ring (see [`crate::keys::Keyring`]); a first key is created on first use.
    pub fn keyring(&self) -> Result<Keyring, OpsError> {
        let mut k = self.keyring.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = k.as_ref() {
            return Ok(k.clone());
        }
        let ring = Keyring::open(
            &self.db.lock(),
            &self.audit,
            &self.data_dir,
            self.key_file.as_deref(),
        )?;
        *k = Some(ring.clone());
        Ok(ring)
    }

    /// What the bridge signs with now: the active key and the rotation under way (read
    /// from the database each time, so a running bridge follows `keys activate`).
    pub fn signer(&self) -> Result<Arc<Signer>, OpsError> {
        let ring = self.keyring()?;
        Ok(ring.signer(&self.db.lock())?)
    }

    /// The active signing key (bundles, directives, audit checkpoints).
    pub fn key(&self) -> Result<Arc<SigningKey>, OpsError> {
        let ring = self.keyring()?;
        Ok(ring.active(&self.db.lock())?)
    }

    /// A handle on the rollout engine over this context.
    pub fn fleet(&self) -> Result<FleetHandle, OpsError> {
        Ok(FleetHandle::new(
            self.db.clone(),
            self.audit.clone(),
            self.events.clone(),
            self.keyring()?,
            self.bundles.clone(),
            self.out.clone(),
            self.wake.clone(),
        ))
    }

    /// Registers a model version (validation, signed bundle, audit entry) and raises its
    /// `model_registered` and `bundle_built` events.
    ///
    /// # Errors
    /// [`RegistryError`] for a model that fails validation or a storage failure.
    pub fn register_model(
        &self,
        req: RegisterRequest,
    ) -> Result<(ModelRecord, ValidationProfile), RegistryError> {
        let key = self
            .key()
            .map_err(|e| RegistryError::Signing(e.to_string()))?;
        let (rec, v) = crate::registry::register(
            &mut self.db.lock(),
            &self.audit,
            self.bundles.as_ref(),
            &key,
            req,
        )?;
        let mref = ModelRef {
            name: rec.name.clone(),
            version: rec.version,
        };
        self.events.emit(
            NewEvent::new(
                EventKind::ModelRegistered,
                format!("{} v{} registered", rec.name, rec.version),
            )
            .model(mref.clone()),
        );
        self.events.emit(
            NewEvent::new(
                EventKind::BundleBuilt,
                format!(
                    "bundle {} built for {} v{}",
                    &rec.digest[..12.min(rec.digest.len())],
                    rec.name,
                    rec.version
                ),
            )
            .model(mref),
        );
        Ok((rec, v))
    }

    /// Provisions a device: its row, credentials, a client certificate from the bridge's
    /// CA, and the files for the gateway in `req.out` (default
    /// `DATA_DIR/provisioned/ID`). Audited as `device.add`.
    ///
    /// # Errors
    /// [`DeviceError`] for a bad or taken id, bad tags, or a file that cannot be written.
    pub fn add_device(&self, req: AddDevice<'_>, actor: &str) -> Result<Provisioned, DeviceError> {
        let trust = self
            .signer()
            .map_err(|e| DeviceError::Key(e.to_string()))?
            .device_trust();
        let out = req
            .out
            .clone()
            .unwrap_or_else(|| self.data_dir.join("provisioned").join(req.id));
        let ca = crate::broker::tls::Ca::load_or_create(&self.data_dir)
            .map_err(|e| DeviceError::Key(e.to_string()))?;
        let placement = match req.local {
            Some(port) => {
                // A port free now; the agent binds it when it starts.
                let api_port = match port {
                    Some(p) => p,
                    None => std::net::TcpListener::bind(("127.0.0.1", 0))
                        .and_then(|l| l.local_addr())
                        .map(|a| a.port())
                        .map_err(|source| DeviceError::Io {
                            path: "127.0.0.1:0".into(),
                            source,
                        })?,
                };
                Placement::Local {
                    api_port,
                    seed: u64::from(api_port),
                }
            }
            None => Placement::Gateway,
        };
        crate::devices::add_with(
            &self.db.lock(),
            &self.audit,
            req.id,
            req.tags,
            req.target,
            req.broker_url,
            &trust,
            &out,
            actor,
            CertOptions {
                ca: Some(&ca),
                use_tls: req.tls,
                placement,
            },
        )
    }
}

/// A device to provision ([`Ops::add_device`]).
#[derive(Debug, Clone)]
pub struct AddDevice<'a> {
    /// Device id.
    pub id: &'a str,
    /// Tags `k=v`.
    pub tags: &'a [String],
    /// Target triple.
    pub target: &'a str,
    /// Broker URL written into its `agent.toml`.
    pub broker_url: &'a str,
    /// Where its files go (default `DATA_DIR/provisioned/ID`).
    pub out: Option<PathBuf>,
    /// Mutual TLS with a client certificate.
    pub tls: bool,
    /// Runs on this machine ([`Placement::Local`]): files inside `out`, the simulated
    /// sensor, the local API on this port (None inside: one free now). None: a gateway.
    pub local: Option<Option<u16>>,
}

impl Ops {
    /// The broker URL a new device gets when none is given: the running bridge's (from
    /// its [`crate::server::RunInfo`]) for a local device, else `serve`'s default
    /// listener (`mqtts://…:8883` with TLS).
    pub fn default_broker_url(&self, tls: bool, local: bool) -> String {
        if tls {
            return "mqtts://127.0.0.1:8883".into();
        }
        match crate::server::RunInfo::read(&self.data_dir) {
            Some(info) if local => format!("mqtt://{}", info.mqtt),
            _ => "mqtt://127.0.0.1:1883".into(),
        }
    }
}
