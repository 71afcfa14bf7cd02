//! How `max_bytes` is split between record data, the database's fixed pages and the WAL,
//! so that the store's files on disk stay within `max_bytes + DISK_OVERHEAD`.
//!
//! Every figure here is derived from the configured budget alone; the module doc of the
//! store states the resulting invariant and why each term holds.

/// Database page size (set when the file is created).
pub const PAGE: u64 = 4096;
/// Bytes accounted per record on top of its body (row header, key, cell pointer; B-tree
/// pages are rarely completely full).
pub const ROW_OVERHEAD: u64 = 64;
/// Largest accounted size stored entirely on a table leaf page; larger records spill
/// into overflow pages and are accounted in whole pages.
const LOCAL_MAX: u64 = 4000;
/// Bounds of the transaction step `S` (see [`Layout::step`]).
const STEP_MIN: u64 = 16 << 10;
const STEP_MAX: u64 = 4 << 20;
/// Database pages that are not record data: page 1, `meta`, `counters`, the eviction
/// log (1000 rows), one root page and the partly filled first and last leaf of each
/// stream table, interior, pointer-map and freelist trunk pages.
const FIXED_DB: u64 = 128 << 10;
/// WAL frames one transaction writes beyond its records: for each stream it touches, the
/// part-full leaf at either end and the interior pages above them; counters, `meta`, the
/// eviction log, page 1, pointer-map and freelist trunk pages; and the WAL header. 32
/// frames: appends to and evictions from the three built-in streams in one transaction
/// measured at most 17 with a 1 MiB budget; deeper trees add a page per stream end.
const TX_FRAMES: u64 = 32 * (PAGE + 24) + 32;
/// The wal-index (`store.db-shm`): 32 KiB per 4096 WAL frames; the WAL never holds more
/// than 4096 frames below `STEP_MAX`.
const SHM: u64 = 32 << 10;
/// `store.seq`: one decimal number.
const SEQ_FILE: u64 = 32;

/// What the store's files may occupy on disk beyond `max_bytes` (352 KiB): fixed
/// database pages (128 KiB), the WAL's floor (three steps of [`STEP_MIN`] plus one
/// transaction's fixed frames: 177 KiB), the wal-index (32 KiB) and the sequence file,
/// rounded up to 16 KiB. The WAL above its floor comes out of the record budget instead,
/// so this stays constant whatever the budget.
pub const DISK_OVERHEAD: u64 = 352 << 10;

const _: () = {
    let parts = FIXED_DB + wal_max(STEP_MIN) + SHM + SEQ_FILE;
    assert!(parts <= DISK_OVERHEAD && DISK_OVERHEAD - parts < 16 << 10);
};

/// The largest the WAL grows with transaction step `step`: it is checkpointed once it
/// holds `step` bytes of frames, and one transaction writes at most `step` of new
/// records and `step` of deleted ones (each frame is a page plus a 24-byte header).
const fn wal_max(step: u64) -> u64 {
    3 * step * (PAGE + 24) / PAGE + TX_FRAMES
}

/// The split of one budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The configured budget.
    pub max_bytes: u64,
    /// `S = clamp(max_bytes / 32, 16 KiB, 4 MiB)`: the WAL auto-checkpoint threshold, the
    /// most record bytes one transaction inserts (or deletes), and the largest record.
    pub step: u64,
    /// Accounted record bytes held at most (evictions and refusals keep to it):
    /// `max_bytes` less the WAL's share above its floor.
    pub records: u64,
    /// The database file's cap in pages (`max_page_count`): the record budget plus
    /// [`FIXED_DB`].
    pub max_pages: u64,
    /// The largest accounted record accepted: `min(records, step)`.
    pub max_record: u64,
}

impl Layout {
    /// The split of `max_bytes`.
    pub fn new(max_bytes: u64) -> Self {
        let step = (max_bytes / 32).clamp(STEP_MIN, STEP_MAX);
        let records = max_bytes.saturating_sub(wal_max(step) - wal_max(STEP_MIN));
        Self {
            max_bytes,
            step,
            records,
            max_pages: (records + FIXED_DB) / PAGE,
            max_record: records.min(step),
        }
    }

    /// WAL auto-checkpoint threshold, in pages.
    pub fn checkpoint_pages(&self) -> u64 {
        self.step / PAGE
    }

    /// The most the store's files occupy: `max_bytes + DISK_OVERHEAD`.
    pub fn disk_bound(&self) -> u64 {
        self.max_bytes + DISK_OVERHEAD
    }
}

/// Bytes a record with a body of `len` bytes is accounted for: its body plus
/// [`ROW_OVERHEAD`], rounded up to whole pages once it no longer fits on a leaf page
/// (overflow pages are not shared between records).
pub fn accounted(len: usize) -> u64 {
    let s = len as u64 + ROW_OVERHEAD;
    if s <= LOCAL_MAX {
        s
    } else {
        s.div_ceil(PAGE) * PAGE
    }
}

/// The same as an SQL expression over `length(body)`, for rows migrated from schema 1.
pub const ACCOUNTED_SQL: &str = "CASE WHEN length(body) + 64 <= 4000 THEN length(body) + 64 \
     ELSE (length(body) + 64 + 4095) / 4096 * 4096 END";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_budgets_keep_every_byte_for_records_and_large_ones_pay_for_their_wal() {
        let small = Layout::new(10_000);
        assert_eq!((small.records, small.max_record), (10_000, 10_000));
        assert_eq!(Layout::new(512 << 10).records, 512 << 10);
        let mib = Layout::new(1 << 20);
        assert_eq!((mib.step, mib.max_record), (32 << 10, 32 << 10));
        assert_eq!(mib.records, (1 << 20) - 3 * (16 << 10) * (PAGE + 24) / PAGE);
        let big = Layout::new(64 << 20);
        assert_eq!(big.step, 2 << 20);
        assert!(big.records > 57 << 20 && big.records < 64 << 20);
        for b in [64 << 10, 1 << 20, 64 << 20, 4 << 30] {
            let l = Layout::new(b);
            let worst = l.max_pages * PAGE + wal_max(l.step) + SHM + SEQ_FILE;
            assert!(worst <= l.disk_bound(), "{b}: {worst} > {}", l.disk_bound());
        }
    }

    #[test]
    fn records_past_a_leaf_page_are_accounted_in_pages() {
        assert_eq!(accounted(936), 1000);
        assert_eq!(accounted(3936), 4000);
        assert_eq!(accounted(3937), 4096);
        assert_eq!(accounted(9000), 12288);
    }
}
