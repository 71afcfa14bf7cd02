//! The bridge's face on [`outpost_protocol::fsio`], the one implementation of atomic
//! writes and secret files (capped reads go through `fsio` directly). The bridge's error
//! types carry a bare `io::Error` next to the path, so these return the OS error (its kind
//! kept, the path not repeated). Behaviour and guarantees are those of `fsio`.

use std::path::Path;

use outpost_protocol::fsio;

/// Replaces `path` with `data` atomically (temporary file, fsync, rename, directory
/// fsync): a crash leaves the old file or the new one; a failed write leaves the old one.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    fsio::write_atomic(path, data).map_err(fsio::FsError::into_io)
}

/// [`write_atomic`] for a secret: mode 0600 from the file's creation.
pub fn write_secret_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    fsio::write_secret_atomic(path, data).map_err(fsio::FsError::into_io)
}

/// Creates `path` with mode 0600 and writes `data`; refuses (`AlreadyExists`) to
/// overwrite an existing file.
pub fn write_secret_new(path: &Path, data: &[u8]) -> std::io::Result<()> {
    fsio::write_secret_new(path, data).map_err(fsio::FsError::into_io)
}
