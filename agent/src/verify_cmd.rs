//! `outpost-agent verify-bundle`: offline verification of a bundle file.

use std::path::Path;

use outpost_protocol::bundle::{BundleError, Verifier};
use outpost_protocol::keys::KeyError;
use outpost_protocol::{Limits, TrustStore};

use outpost_inference::{InferenceError, Model, SelfTestReport};

/// Why `verify-bundle` failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyFileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is larger than any acceptable bundle.
    #[error("{path} is {size} bytes, larger than any acceptable bundle ({limit})")]
    TooLarge {
        /// Path.
        path: String,
        /// Size.
        size: u64,
        /// Limit.
        limit: u64,
    },
    /// The trust directory is unusable.
    #[error(transparent)]
    Trust(#[from] KeyError),
    /// The bundle is invalid or untrusted.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The bundle verified but its model fails to load or self-test.
    #[error(transparent)]
    Model(#[from] InferenceError),
}

impl VerifyFileError {
    /// Process exit code: 1 for a bad bundle, 2 for a problem with the invocation.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Bundle(_) | Self::Model(_) | Self::TooLarge { .. } => 1,
            Self::Read { .. } | Self::Trust(_) => 2,
        }
    }
}

/// What a valid bundle contains.
#[derive(Debug)]
pub struct VerifySummary {
    /// One-line description.
    pub line: String,
    /// Self-test result, when requested.
    pub self_test: Option<SelfTestReport>,
}

/// Verifies the bundle at `path` against the keys in `trust_dir`; with `self_test`, also
/// loads the model with tract and runs the bundle's self-test samples.
pub fn verify_bundle_file(
    path: &Path,
    trust_dir: &Path,
    self_test: bool,
) -> Result<VerifySummary, VerifyFileError> {
    let trust = TrustStore::load_dir(trust_dir)?;
    let limits = Limits::default();
    let p = path.display().to_string();
    let size = std::fs::metadata(path)
        .map_err(|source| VerifyFileError::Read {
            path: p.clone(),
            source,
        })?
        .len();
    // The head is at most ~1 MiB; compressed payload never exceeds the payload cap by
    // more than zstd's worst-case expansion, which is far below this slack.
    let limit = limits.max_payload + 16 * 1024 * 1024;
    if size > limit {
        return Err(VerifyFileError::TooLarge {
            path: p,
            size,
            limit,
        });
    }
    let bytes = std::fs::read(path).map_err(|source| VerifyFileError::Read {
        path: p.clone(),
        source,
    })?;
    let b = Verifier::with_limits(&trust, limits).verify_bundle(&bytes)?;
    let m = b.manifest();
    let report = if self_test {
        let model = Model::load(b.model_bytes(), &m.contract)?;
        Some(model.self_test(&b.self_tests()?)?)
    } else {
        None
    };
    let mut line = format!(
        "ok: {} v{} digest={} key={} files={} size={} chunks={}x{}",
        m.model.name,
        m.model.version,
        b.digest(),
        b.key_id(),
        m.files.len(),
        b.size(),
        m.payload.chunks.len(),
        m.payload.chunk_size
    );
    if let Some(r) = &report {
        line.push_str(&format!(
            " self-test={}/{} max_abs_diff={:.2e}",
            r.samples, r.samples, r.max_abs_diff
        ));
    }
    Ok(VerifySummary {
        line,
        self_test: report,
    })
}
