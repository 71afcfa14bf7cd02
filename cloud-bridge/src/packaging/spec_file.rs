//! The spec file (`S.toml`) that may accompany a model at packing/registration. It is
//! optional: the model contract comes from the graph, and the spec only adds what the
//! graph cannot say (see [`outpost_inference::spec`] for those sections).
//!
//! ```toml
//! self_test_file = "selftest.json"   # optional; JSON list of self-test entries
//! [model]                            # optional defaults for name/description/version
//! name = "vibration-anomaly"
//! [input] / [[input]], [task], [drift], [[self_test]]   # outpost_inference::spec
//! [output]                           # Outpost 0.1's classification section, still read
//! [lineage]                          # optional: source_commit, dataset_id, dataset_sha256,
//! [lineage.metrics]                  #           training_run, metrics
//! [tags]                             # optional k = "v"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use outpost_inference::spec::{self, SelfTestEntry, SpecOverlay};
use serde::Deserialize;

/// Largest spec or self-test file read.
const MAX_SPEC_FILE: u64 = 64 * 1024 * 1024;

/// Optional `[model]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Default model name.
    pub name: Option<String>,
    /// Default version (the registry assigns versions itself).
    pub version: Option<u32>,
    /// Description.
    pub description: Option<String>,
}

/// Optional `[lineage]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineageSection {
    /// Source commit.
    pub source_commit: Option<String>,
    /// Dataset id.
    pub dataset_id: Option<String>,
    /// Dataset hash.
    pub dataset_sha256: Option<String>,
    /// Training run.
    pub training_run: Option<String>,
    /// Metrics.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

/// The spec file's own sections (everything but the overlay).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Rest {
    self_test_file: Option<PathBuf>,
    #[serde(default)]
    model: ModelSection,
    #[serde(default)]
    lineage: LineageSection,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

/// A parsed spec file with its self-test entries resolved.
#[derive(Debug, Clone, Default)]
pub struct SpecFile {
    /// `[model]` defaults.
    pub model: ModelSection,
    /// What the spec adds to the graph's contract.
    pub overlay: SpecOverlay,
    /// Lineage defaults.
    pub lineage: LineageSection,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// Why a spec file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum SpecFileError {
    /// Unreadable.
    #[error("cannot read {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Too large.
    #[error("{path} is larger than {MAX_SPEC_FILE} bytes")]
    TooLarge {
        /// Path.
        path: PathBuf,
    },
    /// Not valid TOML / JSON for the schema.
    #[error("{path}: {message}")]
    Parse {
        /// Path.
        path: PathBuf,
        /// Parser message (with line/column).
        message: String,
    },
}

/// Reads a file of at most [`MAX_SPEC_FILE`] bytes.
pub fn read_capped(path: &Path) -> Result<Vec<u8>, SpecFileError> {
    use outpost_protocol::fsio::{FsError, read_capped};
    read_capped(path, MAX_SPEC_FILE).map_err(|e| match e {
        FsError::TooLarge { .. } => SpecFileError::TooLarge {
            path: path.to_path_buf(),
        },
        e => SpecFileError::Io {
            path: path.to_path_buf(),
            source: e.into_io(),
        },
    })
}

impl SpecFile {
    /// Reads a spec file; `self_test_file` is relative to the spec's folder.
    pub fn load(path: &Path) -> Result<Self, SpecFileError> {
        let parse = |message: String| SpecFileError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let text = String::from_utf8(read_capped(path)?).map_err(|_| parse("not UTF-8".into()))?;
        let (mut overlay, rest) = spec::from_toml(&text).map_err(|e| parse(e.to_string()))?;
        let rest: Rest = toml::Value::Table(rest)
            .try_into()
            .map_err(|e: toml::de::Error| parse(e.to_string()))?;
        if let Some(rel) = rest.self_test_file {
            let p = path.parent().unwrap_or(Path::new(".")).join(rel);
            let more: Vec<SelfTestEntry> =
                serde_json::from_slice(&read_capped(&p)?).map_err(|e| SpecFileError::Parse {
                    path: p.clone(),
                    message: e.to_string(),
                })?;
            overlay.self_test.extend(more);
        }
        Ok(Self {
            model: rest.model,
            overlay,
            lineage: rest.lineage,
            tags: rest.tags,
        })
    }
}
