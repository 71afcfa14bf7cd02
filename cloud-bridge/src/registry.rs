//! The model registry: names, versions, tags, lineage, validation results, bundles.
//!
//! Registering validates the model with tract (load, self-test, latency p50/p99, peak
//! memory), profiles the optional training-data CSV into a baseline, builds and signs the
//! bundle, stores it content-addressed, and records the version — the next number for
//! that name — in one transaction with its audit entry. A model that fails validation is
//! refused with the reason, and the refusal is recorded (table and audit).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use outpost_protocol::{Digest, SigningKey};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use crate::audit::Audit;
use crate::bundles::BundleStore;
use crate::input;
use crate::packaging::{self, PackError, PackInput, SpecFile, read_capped};
use crate::profile::ValidationProfile;

/// Registry errors.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No model file was given.
    #[error("no model file given")]
    NoModel,
    /// Validation failed: the model is refused.
    #[error("model refused: {0}")]
    Refused(String),
    /// Packing failed.
    #[error(transparent)]
    Pack(#[from] PackError),
    /// No such model version.
    #[error("model {0} not found")]
    NotFound(String),
    /// Input over a cap or not of its form (names, tags, reasons, filters).
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    /// A deployment uses it.
    #[error("model {model} is still needed: {deployments}")]
    InUse {
        /// `name:version`.
        model: String,
        /// What needs it (deployments, devices).
        deployments: String,
    },
    /// The chunk (or head piece) messages would not fit the broker's packet limit.
    #[error(
        "{what} of {size} bytes make {message}-byte MQTT messages, over the broker's {limit}-byte packet limit (serve --max-packet-bytes){}",
        if *what == "chunks" { format!(": use --chunk-size {largest} or less") } else { String::from(": the broker must accept at least that") }
    )]
    PacketLimit {
        /// `chunks` or `head pieces` (fixed at 64 KiB by the protocol).
        what: &'static str,
        /// Their size, bytes.
        size: u32,
        /// Resulting message size.
        message: usize,
        /// The broker's limit.
        limit: usize,
        /// Largest chunk size that fits.
        largest: u32,
    },
    /// Database failure.
    #[error("registry database: {0}")]
    Db(#[from] rusqlite::Error),
    /// Bundle storage failure.
    #[error("bundle storage: {0}")]
    Storage(#[from] std::io::Error),
    /// The signing key cannot be loaded.
    #[error("signing key: {0}")]
    Signing(String),
}

/// A registration request.
#[derive(Debug, Clone, Default)]
pub struct RegisterRequest {
    /// Model name.
    pub name: String,
    /// The ONNX file, then any extra files the model needs.
    pub files: Vec<PathBuf>,
    /// Spec file (default: `spec.toml` next to the model, if there is one; none is
    /// needed).
    pub spec: Option<PathBuf>,
    /// Tags `k=v`.
    pub tags: Vec<String>,
    /// Why.
    pub reason: String,
    /// Who.
    pub created_by: String,
    /// Training-data sample (CSV with a header naming the spec's features).
    pub baseline_csv: Option<PathBuf>,
    /// Chunk size override.
    pub chunk_size: Option<u32>,
    /// Memory the model needs on a device, bytes (declared; default: measured here).
    pub memory_bytes: Option<u64>,
    /// Lineage overrides.
    pub source_commit: Option<String>,
    /// Dataset id override.
    pub dataset_id: Option<String>,
    /// Dataset hash override.
    pub dataset_sha256: Option<String>,
}

/// A registered model version.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ModelRecord {
    /// Name.
    pub name: String,
    /// Version.
    pub version: u32,
    /// Bundle digest.
    pub digest: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Who.
    pub created_by: String,
    /// Why.
    pub reason: String,
    /// Description.
    pub description: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Lineage.
    pub lineage: serde_json::Value,
    /// Validation profile.
    pub validation: serde_json::Value,
    /// The model contract (inputs, outputs, task).
    pub contract: serde_json::Value,
    /// Bundle size, bytes.
    pub bundle_size: u64,
    /// Chunks.
    pub chunks: u32,
}

/// Search filters (all must match).
#[derive(Debug, Clone, Default)]
pub struct ModelFilter {
    /// Exact name.
    pub name: Option<String>,
    /// Tags `k=v`.
    pub tags: Vec<(String, String)>,
    /// Lineage fields `source_commit=…`, `dataset_id=…`, `dataset_sha256=…`,
    /// `training_run=…`, `created_by=…`.
    pub lineage: Vec<(String, String)>,
}

fn refuse(c: &Connection, audit: &Audit, name: &str, by: &str, reason: &str) -> RegistryError {
    let _ = c.execute(
        "INSERT INTO model_refusals (name, at, by, reason) VALUES (?1, ?2, ?3, ?4)",
        params![name, crate::db::now() as i64, by, reason],
    );
    let _ = audit.append(c, by, "model.refuse", name, reason, &serde_json::json!({}));
    RegistryError::Refused(reason.to_owned())
}

/// Registers a model version.
pub fn register(
    c: &mut Connection,
    audit: &Audit,
    bundles: &dyn BundleStore,
    key: &SigningKey,
    req: RegisterRequest,
) -> Result<(ModelRecord, ValidationProfile), RegistryError> {
    check_request(&req)?;
    let model_path = req.files.first().ok_or(RegistryError::NoModel)?;
    let spec_path = req.spec.clone().or_else(|| {
        let p = model_path
            .parent()
            .unwrap_or(Path::new("."))
            .join("spec.toml");
        p.exists().then_some(p)
    });
    let spec = match &spec_path {
        Some(p) => SpecFile::load(p).map_err(PackError::from)?,
        None => SpecFile::default(),
    };
    // Every chunk and head piece travels as one MQTT message: it must fit the broker.
    let limit = crate::db::max_packet_bytes(c)?;
    let head = outpost_protocol::limits::HEAD_PIECE_SIZE;
    let chunk = req
        .chunk_size
        .unwrap_or(outpost_protocol::limits::DEFAULT_CHUNK_SIZE);
    for (size, what) in [(head, "head pieces"), (chunk, "chunks")] {
        let message = outpost_protocol::limits::chunk_message_len(size as usize);
        if message > limit {
            return Err(RegistryError::PacketLimit {
                what,
                size,
                message,
                limit,
                largest: outpost_protocol::limits::largest_chunk_for(limit),
            });
        }
    }
    let onnx = read_capped(model_path).map_err(PackError::from)?;
    if !outpost_protocol::manifest::valid_name(&req.name) {
        return Err(RegistryError::Pack(PackError::BadName(req.name)));
    }
    let prepared =
        packaging::prepare(&onnx, &spec, req.baseline_csv.as_deref()).map_err(|e| match e {
            PackError::Refused(_) | PackError::Limit { .. } | PackError::SpecConflict(_) => {
                refuse(c, audit, &req.name, &req.created_by, &e.to_string())
            }
            e => RegistryError::Pack(e),
        })?;
    let validation = prepared.measured.profile.clone();
    let contract_json = serde_json::to_value(&prepared.contract).unwrap_or_default();
    let mut extra = Vec::new();
    for f in &req.files[1..] {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        extra.push((name, read_capped(f).map_err(PackError::from)?));
    }

    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Next version: above every version ever issued for the name (deleted ones included),
    // so a number always means one model.
    let version: u32 = tx.query_row(
        "SELECT MAX(COALESCE((SELECT last_version FROM model_counters WHERE name = ?1), 0),
                    COALESCE((SELECT MAX(version) FROM models WHERE name = ?1), 0)) + 1",
        [&req.name],
        |r| r.get(0),
    )?;
    tx.execute(
        "INSERT INTO model_counters (name, last_version) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET last_version = ?2",
        params![req.name, version],
    )?;
    let input = PackInput {
        name: Some(req.name.clone()),
        version: Some(version),
        chunk_size: req.chunk_size,
        memory_bytes: req.memory_bytes,
        created_by: req.created_by.clone(),
        created_at: crate::db::now(),
        reason: req.reason.clone(),
        source_commit: req.source_commit,
        dataset_id: req.dataset_id,
        dataset_sha256: req.dataset_sha256,
        tags: req.tags,
        extra_files: extra,
    };
    let packed = packaging::pack(onnx, &spec, prepared, input, key)?;
    let m = &packed.bundle.manifest;
    // The spec file adds tags and the description.
    input::tag_map("tags", &m.tags)?;
    input::text("description", &m.description)?;
    bundles.put(packed.bundle.digest, &packed.bundle.bytes)?;
    let rec = ModelRecord {
        name: req.name.clone(),
        version,
        digest: packed.bundle.digest.to_hex(),
        created_at: m.lineage.created_at,
        created_by: m.lineage.created_by.clone(),
        reason: m.lineage.reason.clone(),
        description: m.description.clone(),
        tags: m.tags.clone(),
        lineage: serde_json::to_value(&m.lineage).unwrap_or_default(),
        validation: serde_json::to_value(&validation).unwrap_or_default(),
        contract: contract_json,
        bundle_size: packed.bundle.bytes.len() as u64,
        chunks: m.payload.chunks.len() as u32,
    };
    tx.execute(
        "INSERT INTO models (name, version, digest, created_at, created_by, reason, description, tags, lineage, validation, bundle_size, chunks, contract)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            rec.name,
            rec.version,
            rec.digest,
            rec.created_at as i64,
            rec.created_by,
            rec.reason,
            rec.description,
            serde_json::to_string(&rec.tags).unwrap_or_default(),
            rec.lineage.to_string(),
            rec.validation.to_string(),
            rec.bundle_size as i64,
            rec.chunks,
            rec.contract.to_string()
        ],
    )?;
    for (k, v) in &rec.tags {
        tx.execute(
            "INSERT INTO model_tags (name, version, key, value) VALUES (?1, ?2, ?3, ?4)",
            params![rec.name, rec.version, k, v],
        )?;
    }
    audit.append(
        &tx,
        &rec.created_by,
        "model.register",
        &format!("{}:{}", rec.name, rec.version),
        &rec.reason,
        &serde_json::json!({"digest": rec.digest, "validation": rec.validation, "lineage": rec.lineage}),
    )?;
    tx.commit()?;
    Ok((rec, validation))
}

/// The request's own strings within [`crate::input`]'s caps.
fn check_request(req: &RegisterRequest) -> Result<(), RegistryError> {
    input::tag_pairs("tags", &req.tags)?;
    input::text("reason", &req.reason)?;
    for (field, v) in [
        ("source_commit", &req.source_commit),
        ("dataset_id", &req.dataset_id),
        ("dataset_sha256", &req.dataset_sha256),
    ] {
        if let Some(v) = v {
            input::bounded(field, v, input::MAX_TAG_VALUE)?;
        }
    }
    Ok(())
}

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<ModelRecord> {
    let tags: String = r.get(7)?;
    let lineage: String = r.get(8)?;
    let validation: String = r.get(9)?;
    let contract: Option<String> = r.get(12)?;
    Ok(ModelRecord {
        name: r.get(0)?,
        version: r.get(1)?,
        digest: r.get(2)?,
        created_at: r.get::<_, i64>(3)? as u64,
        created_by: r.get(4)?,
        reason: r.get(5)?,
        description: r.get(6)?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        lineage: serde_json::from_str(&lineage).unwrap_or_default(),
        validation: serde_json::from_str(&validation).unwrap_or_default(),
        contract: contract
            .and_then(|c| serde_json::from_str(&c).ok())
            .unwrap_or_default(),
        bundle_size: r.get::<_, i64>(10)? as u64,
        chunks: r.get(11)?,
    })
}

const COLS: &str = "name, version, digest, created_at, created_by, reason, description, tags, lineage, validation, bundle_size, chunks, contract";

/// Lists versions matching `f`, by name then version.
pub fn list(c: &Connection, f: &ModelFilter) -> Result<Vec<ModelRecord>, RegistryError> {
    if let Some(n) = &f.name {
        input::bounded("name", n, input::MAX_NAME)?;
    }
    input::tag_list("tag", &f.tags)?;
    input::count("lineage", f.lineage.len(), input::MAX_TAGS)?;
    let mut sql = format!("SELECT {COLS} FROM models m WHERE 1 = 1");
    let mut args: Vec<String> = Vec::new();
    if let Some(n) = &f.name {
        args.push(n.clone());
        sql += &format!(" AND name = ?{}", args.len());
    }
    for (k, v) in &f.tags {
        args.push(k.clone());
        args.push(v.clone());
        sql += &format!(
            " AND EXISTS (SELECT 1 FROM model_tags t WHERE t.name = m.name AND t.version = m.version AND t.key = ?{} AND t.value = ?{})",
            args.len() - 1,
            args.len()
        );
    }
    for (k, v) in &f.lineage {
        let field = match k.as_str() {
            "source_commit" | "dataset_id" | "dataset_sha256" | "training_run" | "created_by"
            | "reason" => k.as_str(),
            _ => {
                return Err(input::InputError::NotOneOf {
                    field: "lineage field",
                    value: k.chars().take(64).collect(),
                    allowed: "source_commit, dataset_id, dataset_sha256, training_run, created_by, reason",
                }
                .into());
            }
        };
        input::bounded(field, v, input::MAX_TEXT)?;
        args.push(v.clone());
        sql += &format!(" AND json_extract(lineage, '$.{field}') = ?{}", args.len());
    }
    sql += " ORDER BY name, version";
    let mut q = c.prepare(&sql)?;
    let rows = q.query_map(rusqlite::params_from_iter(args.iter()), row_to_record)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One version (`version = None`: the latest).
pub fn show(
    c: &Connection,
    name: &str,
    version: Option<u32>,
) -> Result<ModelRecord, RegistryError> {
    let r = match version {
        Some(v) => c
            .query_row(
                &format!("SELECT {COLS} FROM models WHERE name = ?1 AND version = ?2"),
                params![name, v],
                row_to_record,
            )
            .optional()?,
        None => c
            .query_row(
                &format!("SELECT {COLS} FROM models WHERE name = ?1 ORDER BY version DESC LIMIT 1"),
                [name],
                row_to_record,
            )
            .optional()?,
    };
    r.ok_or_else(|| {
        RegistryError::NotFound(format!(
            "{name}:{}",
            version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "latest".into())
        ))
    })
}

/// The bundle digest of a version.
pub fn digest_of(c: &Connection, name: &str, version: u32) -> Result<Digest, RegistryError> {
    let d: String = show(c, name, Some(version))?.digest;
    d.parse()
        .map_err(|_| RegistryError::NotFound(format!("{name}:{version} has a malformed digest")))
}

/// Deletes a version unless an active deployment uses it (as target or rollback target).
pub fn delete(
    c: &mut Connection,
    audit: &Audit,
    bundles: &dyn BundleStore,
    name: &str,
    version: u32,
    actor: &str,
    reason: &str,
) -> Result<(), RegistryError> {
    input::text("reason", reason)?;
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let rec = show(&tx, name, Some(version))?;
    let using = crate::fleet::in_use(&tx, name, &rec.digest).map_err(|e| match e {
        crate::fleet::FleetError::Db(e) => RegistryError::Db(e),
        e => RegistryError::InUse {
            model: format!("{name}:{version}"),
            deployments: e.to_string(),
        },
    })?;
    if !using.is_empty() {
        return Err(RegistryError::InUse {
            model: format!("{name}:{version}"),
            deployments: using.join("; "),
        });
    }
    tx.execute(
        "DELETE FROM models WHERE name = ?1 AND version = ?2",
        params![name, version],
    )?;
    tx.execute(
        "DELETE FROM model_tags WHERE name = ?1 AND version = ?2",
        params![name, version],
    )?;
    let still: i64 = tx.query_row(
        "SELECT COUNT(*) FROM models WHERE digest = ?1",
        [&rec.digest],
        |r| r.get(0),
    )?;
    audit.append(
        &tx,
        actor,
        "model.delete",
        &format!("{name}:{version}"),
        reason,
        &serde_json::json!({"digest": rec.digest}),
    )?;
    tx.commit()?;
    if still == 0
        && let Ok(d) = rec.digest.parse()
    {
        let _ = bundles.remove(d);
    }
    Ok(())
}
