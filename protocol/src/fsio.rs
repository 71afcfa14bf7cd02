//! Files written whole or not at all, and files read within a size cap: the one
//! implementation the agent, the bridge and the tools share.
//!
//! A write goes to a temporary file in the target's directory (`.{name}.tmp-{pid}-{n}`),
//! which is fsynced, renamed over the target, and the directory fsynced: after a crash or
//! a power cut the target is the old file or the complete new one, never a torn mix
//! (POSIX `rename(2)` is atomic within a file system). A write that fails removes its
//! temporary file and leaves the target as it was.
//!
//! A read checks the file's size against the caller's cap before allocating and reads at
//! most `cap + 1` bytes, so a huge (or growing, or sparse) file costs at most `cap` bytes
//! of memory and is an error, never an allocation of its whole length.
//!
//! This is blocking `std::fs` IO, the only IO in this crate: callers in async code run it
//! on a blocking thread when the file may be large.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a file could not be read or written; each variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The operating system refused (missing file, permissions, disk full, …).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file (or, for the final directory sync, the directory).
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is larger than the caller accepts.
    #[error("{} is {size} bytes, over the {cap}-byte cap", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in bytes as far as it was seen (at least `cap + 1`).
        size: u64,
        /// The cap in bytes.
        cap: u64,
    },
    /// The path ends in `..` or `/`, so there is no file name to write.
    #[error("{}: not a file path", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
}

impl FsError {
    /// Whether the file does not exist (a fresh device, a file not written yet).
    pub fn is_not_found(&self) -> bool {
        matches!(self, FsError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

impl FsError {
    /// The bare OS error, for callers whose own error already names the path (so it is
    /// not shown twice); a file over its cap becomes `InvalidData` with the sizes.
    pub fn into_io(self) -> std::io::Error {
        match self {
            FsError::Io { source, .. } => source,
            other => std::io::Error::from(other),
        }
    }
}

impl From<FsError> for std::io::Error {
    /// For callers that speak `io::Result`: the OS error's kind is kept, a file over its
    /// cap is `InvalidData`; the message names the path.
    fn from(e: FsError) -> Self {
        let kind = match &e {
            FsError::Io { source, .. } => source.kind(),
            FsError::TooLarge { .. } => std::io::ErrorKind::InvalidData,
            FsError::NotAFile { .. } => std::io::ErrorKind::InvalidInput,
        };
        std::io::Error::new(kind, e.to_string())
    }
}

/// Who may read a written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The process umask decides (typically 0644).
    Default,
    /// Mode 0600 from the moment the file exists (keys, passwords): the secret is never
    /// readable by others, not even briefly. Only on Unix; elsewhere as `Default`.
    Secret,
}

/// Reads the whole of `path` if it is at most `cap` bytes.
///
/// Errors: [`FsError::TooLarge`] when the file has more than `cap` bytes (checked before
/// reading and again while reading, so a file that grows is caught too); [`FsError::Io`]
/// otherwise. Memory used is at most `cap` bytes plus one read buffer.
pub fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, FsError> {
    let io = |source| FsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    if len > cap {
        return Err(FsError::TooLarge {
            path: path.to_path_buf(),
            size: len,
            cap,
        });
    }
    // The length is a hint (a file can change after `metadata`): read at most one byte
    // past the cap to tell "exactly cap" from "more".
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    f.take(cap.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() as u64 > cap {
        return Err(FsError::TooLarge {
            path: path.to_path_buf(),
            size: buf.len() as u64,
            cap,
        });
    }
    Ok(buf)
}

/// [`read_capped`], as UTF-8 text; invalid UTF-8 is an [`FsError::Io`] of kind
/// `InvalidData`.
pub fn read_capped_string(path: &Path, cap: u64) -> Result<String, FsError> {
    String::from_utf8(read_capped(path, cap)?).map_err(|_| FsError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"),
    })
}

/// Replaces `path` with `data` atomically (see the module doc); the directory must exist.
///
/// Errors: [`FsError::Io`] naming the temporary file, the target or the directory;
/// [`FsError::NotAFile`] for a path without a file name. On error the target is unchanged.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), FsError> {
    write_atomic_with(path, Access::Default, |f| f.write_all(data))
}

/// [`write_atomic`] for a secret: the file is mode 0600 from its creation.
pub fn write_secret_atomic(path: &Path, data: &[u8]) -> Result<(), FsError> {
    write_atomic_with(path, Access::Secret, |f| f.write_all(data))
}

/// Replaces `path` with `data` without waiting for the disk: readers see the old file or
/// the complete new one (the rename is atomic), but after a power cut the file may be
/// missing, empty or torn. Only for data every reader verifies before use (downloaded
/// chunks, checked against their SHA-256 when a download resumes): it saves the two
/// fsyncs of [`write_atomic`], which on a gateway's flash are most of the cost of writing
/// a 64 KiB chunk, and its wear. Errors as [`write_atomic`].
pub fn write_replaceable(path: &Path, data: &[u8]) -> Result<(), FsError> {
    replace(path, Access::Default, false, |f| f.write_all(data))
}

/// Creates `path` with mode 0600 and `data`; refuses (kind `AlreadyExists`) when the file
/// exists, so a secret issued once is never silently replaced. The file is fsynced.
pub fn write_secret_new(path: &Path, data: &[u8]) -> Result<(), FsError> {
    let io = |source| FsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = options(Access::Secret)
        .create_new(true)
        .open(path)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Replaces `path` atomically with what `write` puts into the (empty, temporary) file —
/// for content produced by a writer (a Parquet file) rather than held in memory. If
/// `write` fails, the temporary file is removed, the target is unchanged and the error is
/// returned as [`FsError::Io`] naming the target.
pub fn write_atomic_with(
    path: &Path,
    access: Access,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), FsError> {
    replace(path, access, true, write)
}

/// Temporary file, `write`, rename over `path`; with `durable`, the file is fsynced before
/// the rename and the directory after it.
fn replace(
    path: &Path,
    access: Access,
    durable: bool,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), FsError> {
    // Two writers of one path in one process must not share a temporary file.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| FsError::NotAFile {
        path: path.to_path_buf(),
    })?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = options(access)
            .truncate(true)
            .create(true)
            .open(&tmp)
            .map_err(|source| FsError::Io {
                path: tmp.clone(),
                source,
            })?;
        let at = |source| FsError::Io {
            path: path.to_path_buf(),
            source,
        };
        write(&mut f).map_err(at)?;
        if durable {
            f.sync_all().map_err(at)?;
        }
        std::fs::rename(&tmp, path).map_err(at)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if !durable {
        return Ok(());
    }
    // The rename is durable only once the directory entry is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| FsError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

fn options(access: Access) -> OpenOptions {
    let mut o = OpenOptions::new();
    o.write(true);
    #[cfg(unix)]
    if access == Access::Secret {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = access;
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("outpost-fsio-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn leftovers(d: &Path) -> Vec<String> {
        std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect()
    }

    #[test]
    fn reads_up_to_the_cap_and_refuses_more() {
        let d = dir("cap");
        let p = d.join("f");
        std::fs::write(&p, b"12345").unwrap();
        assert_eq!(read_capped(&p, 5).unwrap(), b"12345");
        match read_capped(&p, 4) {
            Err(FsError::TooLarge {
                size: 5, cap: 4, ..
            }) => {}
            other => panic!("{other:?}"),
        }
        let e = read_capped(&d.join("missing"), 4).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert_eq!(
            std::io::Error::from(read_capped(&p, 4).unwrap_err()).kind(),
            std::io::ErrorKind::InvalidData
        );
        std::fs::write(&p, [0xff, 0xfe]).unwrap();
        assert!(read_capped_string(&p, 10).is_err());
    }

    #[test]
    fn a_huge_file_is_refused_without_reading_it() {
        // A sparse 1 TiB file: reading (or allocating) its length would take the machine
        // down; the cap refuses it at once.
        let d = dir("huge");
        let p = d.join("huge");
        let f = File::create(&p).unwrap();
        f.set_len(1 << 40).unwrap();
        drop(f);
        let e = read_capped(&p, 1 << 20).unwrap_err();
        assert!(
            matches!(e, FsError::TooLarge { size, .. } if size == 1 << 40),
            "{e}"
        );
        assert!(e.to_string().contains("over the 1048576-byte cap"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn writes_replace_the_file_and_leave_no_temporary() {
        let d = dir("write");
        let p = d.join("state.json");
        write_atomic(&p, b"old").unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
        assert!(matches!(
            write_atomic(Path::new("/"), b"x"),
            Err(FsError::NotAFile { .. })
        ));
        let e = write_atomic(&d.join("no-such-dir").join("f"), b"x").unwrap_err();
        assert!(e.is_not_found(), "{e}");
        // Without the fsyncs, the same replace-or-nothing for other readers.
        let c = d.join("7");
        write_replaceable(&c, b"chunk v1").unwrap();
        write_replaceable(&c, b"chunk v2").unwrap();
        assert_eq!(std::fs::read(&c).unwrap(), b"chunk v2");
        assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
        let e = write_replaceable(&d.join("no-such-dir").join("f"), b"x").unwrap_err();
        assert!(e.is_not_found(), "{e}");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_intact() {
        let d = dir("fail");
        let p = d.join("bundle");
        write_atomic(&p, b"the old bundle").unwrap();
        let e = write_atomic_with(&p, Access::Default, |f| {
            f.write_all(b"half of the new")?;
            Err(std::io::Error::other("source went away"))
        })
        .unwrap_err();
        assert!(e.to_string().contains("source went away"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"the old bundle");
        assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
    }

    #[cfg(unix)]
    #[test]
    fn secrets_are_0600_and_new_ones_are_not_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir("secret");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let p = d.join("device.key");
        write_secret_new(&p, b"k1").unwrap();
        assert_eq!(mode(&p), 0o600);
        let e = write_secret_new(&p, b"k2").unwrap_err();
        assert!(
            matches!(&e, FsError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
            "{e}"
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"k1");
        let q = d.join("passwd");
        write_secret_atomic(&q, b"a").unwrap();
        write_secret_atomic(&q, b"b").unwrap();
        assert_eq!(
            (mode(&q), std::fs::read(&q).unwrap()),
            (0o600, b"b".to_vec())
        );
    }
}
