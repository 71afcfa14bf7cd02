//! The scoring spec file (`S.toml`) that accompanies a model at packing/registration.
//!
//! ```toml
//! self_test_file = "selftest.json"   # optional; JSON list of {input, expected, tolerance}
//! [model]                            # optional defaults for name/description/version
//! name = "vibration-anomaly"
//! [input]                            # outpost_protocol::spec::InputSpec
//! [output]                           # outpost_protocol::spec::OutputSpec
//! [lineage]                          # optional: source_commit, dataset_id, dataset_sha256,
//! [lineage.metrics]                  #           training_run, metrics
//! [tags]                             # optional k = "v"
//! [[self_test]]                      # inline samples: input, expected, tolerance
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use outpost_protocol::manifest::SelfTestSample;
use outpost_protocol::spec::{InputSpec, OutputSpec, ScoringSpec};
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    self_test_file: Option<PathBuf>,
    #[serde(default)]
    model: ModelSection,
    input: InputSpec,
    output: OutputSpec,
    #[serde(default)]
    lineage: LineageSection,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    self_test: Vec<SelfTestSample>,
    drift: Option<outpost_protocol::spec::DriftSpec>,
}

/// A parsed spec file with its self-test samples resolved.
#[derive(Debug, Clone)]
pub struct SpecFile {
    /// `[model]` defaults.
    pub model: ModelSection,
    /// The scoring spec (validated).
    pub spec: ScoringSpec,
    /// Lineage defaults.
    pub lineage: LineageSection,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Inline samples followed by those from `self_test_file`.
    pub self_test: Vec<SelfTestSample>,
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
    /// Parsed but inconsistent.
    #[error("{path}: {message}")]
    Invalid {
        /// Path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Reads a file of at most [`MAX_SPEC_FILE`] bytes.
pub fn read_capped(path: &Path) -> Result<Vec<u8>, SpecFileError> {
    let io = |source| SpecFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    if std::fs::metadata(path).map_err(io)?.len() > MAX_SPEC_FILE {
        return Err(SpecFileError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    std::fs::read(path).map_err(io)
}

impl SpecFile {
    /// Reads and validates a spec file; `self_test_file` is relative to the spec's folder.
    pub fn load(path: &Path) -> Result<Self, SpecFileError> {
        let text = String::from_utf8(read_capped(path)?).map_err(|_| SpecFileError::Parse {
            path: path.to_path_buf(),
            message: "not UTF-8".into(),
        })?;
        let raw: Raw = toml::from_str(&text).map_err(|e| SpecFileError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let spec = ScoringSpec {
            input: raw.input,
            output: raw.output,
            drift: raw.drift,
        };
        spec.validate().map_err(|e| SpecFileError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut self_test = raw.self_test;
        if let Some(rel) = raw.self_test_file {
            let p = path.parent().unwrap_or(Path::new(".")).join(rel);
            let more: Vec<SelfTestSample> =
                serde_json::from_slice(&read_capped(&p)?).map_err(|e| SpecFileError::Parse {
                    path: p.clone(),
                    message: e.to_string(),
                })?;
            self_test.extend(more);
        }
        Ok(Self {
            model: raw.model,
            spec,
            lineage: raw.lineage,
            tags: raw.tags,
            self_test,
        })
    }
}
