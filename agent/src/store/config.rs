//! `[store]`: the offline store's budget, its policy when full, and stream priorities.
//!
//! ```toml
//! [store]
//! max_bytes = 67108864       # one budget across all streams, for the store's files on
//!                            # disk (database, WAL, …: at most max_bytes + 352 KiB)
//! when_full = "evict_lowest_oldest"   # or "reject_new"
//! durability = "normal"      # or "full"
//! priority = { captures = 0, telemetry = 1, events = 2 }   # higher is kept longer
//! ```

use std::collections::BTreeMap;

use outpost_protocol::records;
use serde::Deserialize;

use crate::settings::InvalidSetting;

/// Smallest budget, bytes: below it the store's own pages leave no room for records.
pub const MIN_MAX_BYTES: u64 = 64 * 1024;

/// What to do when the budget is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Evict the lowest-priority, oldest records (never ones of higher priority than the
    /// incoming record); refuse the record if that is not enough.
    EvictLowestOldest,
    /// Keep what is stored; refuse new records.
    RejectNew,
}

/// Commit durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous = NORMAL`: crash-safe, may lose the last commits on power loss.
    Normal,
    /// `synchronous = FULL`: every commit synced.
    Full,
}

/// Store settings.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Budget in bytes for the store's files on disk, across all streams (they stay
    /// within `max_bytes + DISK_OVERHEAD`; see the module doc, invariant 3).
    pub max_bytes: u64,
    /// Policy when the budget is reached.
    pub when_full: WhenFull,
    /// Commit durability.
    pub durability: Durability,
    /// Streams and their priority (higher is kept longer).
    pub streams: BTreeMap<String, u8>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 20,
            when_full: WhenFull::EvictLowestOldest,
            durability: Durability::Normal,
            streams: default_streams(),
        }
    }
}

/// The built-in streams: captures are evicted first, then telemetry; events last.
pub fn default_streams() -> BTreeMap<String, u8> {
    [
        (records::CAPTURES, 0u8),
        (records::TELEMETRY, 1),
        (records::EVENTS, 2),
    ]
    .into_iter()
    .map(|(s, p)| (s.to_owned(), p))
    .collect()
}

impl StoreConfig {
    /// Checks the budget and the stream names; the error names the file key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.max_bytes < MIN_MAX_BYTES {
            return Err(InvalidSetting::new(
                "store.max_bytes",
                format!("must be at least {MIN_MAX_BYTES}"),
            ));
        }
        if let Some(k) = self
            .streams
            .keys()
            .find(|k| !outpost_protocol::topics::valid_stream(k))
        {
            return Err(InvalidSetting::new(
                "store.priority",
                format!("{k:?} is not a valid stream name ([a-z0-9_])"),
            ));
        }
        Ok(())
    }
}

/// `[store]` as written in the file: absent keys take [`StoreConfig::default`];
/// `priority` adds streams to, or re-ranks, [`default_streams`].
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    max_bytes: Option<u64>,
    when_full: Option<String>,
    durability: Option<String>,
    priority: Option<BTreeMap<String, u8>>,
}

impl StoreSection {
    /// The validated settings.
    pub fn resolve(self) -> Result<StoreConfig, InvalidSetting> {
        let d = StoreConfig::default();
        let when_full = match self.when_full.as_deref() {
            None => d.when_full,
            Some("evict_lowest_oldest") => WhenFull::EvictLowestOldest,
            Some("reject_new") => WhenFull::RejectNew,
            Some(o) => {
                return Err(InvalidSetting::new(
                    "store.when_full",
                    format!("{o:?} is not evict_lowest_oldest or reject_new"),
                ));
            }
        };
        let durability = match self.durability.as_deref() {
            None => d.durability,
            Some("normal") => Durability::Normal,
            Some("full") => Durability::Full,
            Some(o) => {
                return Err(InvalidSetting::new(
                    "store.durability",
                    format!("{o:?} is not normal or full"),
                ));
            }
        };
        let mut streams = d.streams;
        streams.extend(self.priority.unwrap_or_default());
        let c = StoreConfig {
            max_bytes: self.max_bytes.unwrap_or(d.max_bytes),
            when_full,
            durability,
            streams,
        };
        c.validate()?;
        Ok(c)
    }
}
