//! zstd with a hard cap on inflated size: the only zstd decoder this workspace may use
//! (`clippy.toml` bans the unbounded ones).
//!
//! The caller states how many bytes it expects (`declared`, from a signed manifest or a
//! frame header) and the global limit. Inflation stops one byte past `declared`, so a
//! decompression bomb costs at most `declared + 1` bytes of memory before it is refused.

use std::io::Read;

/// Largest zstd window the decoder accepts (2^27 = 128 MiB); bounds decoder memory.
const WINDOW_LOG_MAX: u32 = 27;
/// Pre-allocation cap: a declared size is trusted for checking, not for allocating.
const PREALLOC_MAX: u64 = 16 * 1024 * 1024;

/// Why capped inflation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CappedError {
    /// The declared size is over the global limit.
    #[error("declared size {declared} bytes exceeds the limit of {limit} bytes")]
    DeclaredTooLarge {
        /// Declared size.
        declared: u64,
        /// Global limit.
        limit: u64,
    },
    /// The data inflates to more than declared.
    #[error("data inflates past its declared size of {declared} bytes (decompression bomb)")]
    Bomb {
        /// Declared size.
        declared: u64,
    },
    /// The data inflates to less than declared.
    #[error("data inflates to {actual} bytes, but {declared} were declared")]
    Short {
        /// Declared size.
        declared: u64,
        /// Actual size.
        actual: u64,
    },
    /// The compressed stream is corrupt.
    #[error("corrupt zstd stream: {0}")]
    Corrupt(String),
}

/// Inflates `input`, which must produce exactly `declared` bytes, `declared <= limit`.
#[allow(clippy::disallowed_methods)] // this is the capped wrapper the ban points to
pub fn decompress(input: &[u8], declared: u64, limit: u64) -> Result<Vec<u8>, CappedError> {
    if declared > limit {
        return Err(CappedError::DeclaredTooLarge { declared, limit });
    }
    let mut dec = zstd::stream::read::Decoder::with_buffer(input)
        .map_err(|e| CappedError::Corrupt(e.to_string()))?;
    dec.window_log_max(WINDOW_LOG_MAX)
        .map_err(|e| CappedError::Corrupt(e.to_string()))?;
    let mut out = Vec::with_capacity(declared.min(PREALLOC_MAX) as usize);
    dec.take(declared + 1)
        .read_to_end(&mut out)
        .map_err(|e| CappedError::Corrupt(e.to_string()))?;
    let actual = out.len() as u64;
    if actual > declared {
        return Err(CappedError::Bomb { declared });
    }
    if actual < declared {
        return Err(CappedError::Short { declared, actual });
    }
    Ok(out)
}

/// Compresses `data` at `level` (1..=19). Compression of our own bytes cannot fail short
/// of memory exhaustion; the error is still surfaced rather than unwrapped.
pub fn compress(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    zstd::bulk::compress(data, level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_caps() {
        let data = vec![7u8; 100_000];
        let z = compress(&data, 3).unwrap();
        assert!(z.len() < 1000);
        assert_eq!(decompress(&z, 100_000, 1 << 20).unwrap(), data);
        assert_eq!(
            decompress(&z, 10, 1 << 20),
            Err(CappedError::Bomb { declared: 10 })
        );
        assert_eq!(
            decompress(&z, 200_000, 1 << 20),
            Err(CappedError::Short {
                declared: 200_000,
                actual: 100_000
            })
        );
        assert!(matches!(
            decompress(&z, 100_000, 1000),
            Err(CappedError::DeclaredTooLarge { .. })
        ));
        assert!(matches!(
            decompress(b"not zstd at all", 5, 100),
            Err(CappedError::Corrupt(_))
        ));
        let mut trailing = z.clone();
        trailing.extend_from_slice(b"junk");
        assert!(decompress(&trailing, 100_000, 1 << 20).is_err());
    }
}
