//! Content-addressed bundle storage behind a narrow trait (local files today; an
//! S3-compatible object store later).

use std::path::PathBuf;

use outpost_protocol::Digest;

/// Where signed bundles live, by digest.
pub trait BundleStore: Send + Sync {
    /// Stores a bundle (idempotent: same digest, same bytes).
    fn put(&self, digest: Digest, bytes: &[u8]) -> std::io::Result<()>;
    /// Reads a bundle.
    fn get(&self, digest: Digest) -> std::io::Result<Vec<u8>>;
    /// Removes a bundle.
    fn remove(&self, digest: Digest) -> std::io::Result<()>;
}

/// Bundles as files: `{data_dir}/bundles/{digest}.bundle`.
#[derive(Debug, Clone)]
pub struct FsBundleStore {
    dir: PathBuf,
}

impl FsBundleStore {
    /// A store under `data_dir`.
    pub fn new(data_dir: &std::path::Path) -> std::io::Result<Self> {
        let dir = data_dir.join("bundles");
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    fn path(&self, d: Digest) -> PathBuf {
        self.dir.join(format!("{}.bundle", d.to_hex()))
    }
}

impl BundleStore for FsBundleStore {
    fn put(&self, digest: Digest, bytes: &[u8]) -> std::io::Result<()> {
        crate::fsutil::write_atomic(&self.path(digest), bytes)
    }
    fn get(&self, digest: Digest) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.path(digest))
    }
    fn remove(&self, digest: Digest) -> std::io::Result<()> {
        std::fs::remove_file(self.path(digest))
    }
}
