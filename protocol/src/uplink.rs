//! Uplink batches: sequenced records of one stream, zstd-compressed, agent → bridge.
//!
//! Frame layout (all integers little-endian):
//!
//! ```text
//! "OPUB"  version u8 (1)  S u8  stream (S bytes, [a-z0-9_])  batch_id u64
//! count u32  uncompressed_len u32  compressed_len u32  zstd(records)
//! record := seq u64  ts_ms u64  len u32  body (len bytes)
//! ```
//!
//! Sequences are per device and strictly increasing within a batch. The bridge
//! deduplicates by (device, stream, seq), stores durably, then sends a
//! [`crate::wire::BatchAck`]; the agent deletes only what was acked.

use crate::capped::{self, CappedError};
use crate::limits::Limits;
use crate::topics::valid_stream;

const MAGIC: &[u8; 4] = b"OPUB";
const VERSION: u8 = 1;
const RECORD_HEADER: usize = 8 + 8 + 4;

/// One record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Per-device sequence.
    pub seq: u64,
    /// Creation time, unix milliseconds.
    pub ts_ms: u64,
    /// Body (JSON by convention).
    pub body: Vec<u8>,
}

/// A batch of records of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkBatch {
    /// Stream name.
    pub stream: String,
    /// Batch id (unique per device and stream; the agent uses the first sequence).
    pub batch_id: u64,
    /// Records, strictly increasing `seq`.
    pub records: Vec<Record>,
}

/// Why an uplink frame was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UplinkError {
    /// Not an uplink frame.
    #[error("not an uplink batch (bad magic)")]
    BadMagic,
    /// Unknown version.
    #[error("uplink batch version {0} is not supported")]
    UnsupportedVersion(u8),
    /// Frame ends early or fields disagree.
    #[error("malformed uplink batch: {0}")]
    Malformed(String),
    /// Stream name invalid.
    #[error("invalid stream name")]
    BadStream,
    /// Count or size over the caps.
    #[error("uplink batch {what} {size} exceeds the limit of {limit}")]
    TooLarge {
        /// Which field.
        what: &'static str,
        /// Value.
        size: u64,
        /// Cap.
        limit: u64,
    },
    /// Inflation failed or was capped.
    #[error("uplink batch payload: {0}")]
    Payload(#[from] CappedError),
    /// Sequences not strictly increasing.
    #[error("record sequences are not strictly increasing at record {0}")]
    NotIncreasing(usize),
}

impl UplinkBatch {
    /// Sequence of the first record (`None` when empty).
    pub fn first_seq(&self) -> Option<u64> {
        self.records.first().map(|r| r.seq)
    }

    /// Sequence of the last record.
    pub fn last_seq(&self) -> Option<u64> {
        self.records.last().map(|r| r.seq)
    }

    /// Uncompressed record bytes (what raw JSON would roughly cost).
    pub fn raw_len(&self) -> usize {
        self.records
            .iter()
            .map(|r| RECORD_HEADER + r.body.len())
            .sum()
    }

    /// Encodes and compresses the batch at zstd `level`.
    pub fn encode(&self, level: i32) -> std::io::Result<Vec<u8>> {
        let mut raw = Vec::with_capacity(self.raw_len());
        for r in &self.records {
            raw.extend_from_slice(&r.seq.to_le_bytes());
            raw.extend_from_slice(&r.ts_ms.to_le_bytes());
            raw.extend_from_slice(&(r.body.len() as u32).to_le_bytes());
            raw.extend_from_slice(&r.body);
        }
        let z = capped::compress(&raw, level)?;
        let s = self.stream.as_bytes();
        let mut v = Vec::with_capacity(6 + s.len() + 20 + z.len());
        v.extend_from_slice(MAGIC);
        v.push(VERSION);
        v.push(s.len() as u8);
        v.extend_from_slice(s);
        v.extend_from_slice(&self.batch_id.to_le_bytes());
        v.extend_from_slice(&(self.records.len() as u32).to_le_bytes());
        v.extend_from_slice(&(raw.len() as u32).to_le_bytes());
        v.extend_from_slice(&(z.len() as u32).to_le_bytes());
        v.extend_from_slice(&z);
        Ok(v)
    }

    /// Decodes a frame under `limits`.
    pub fn decode(b: &[u8], limits: &Limits) -> Result<Self, UplinkError> {
        let mut r = Reader { b, at: 0 };
        if r.take(4)? != MAGIC {
            return Err(UplinkError::BadMagic);
        }
        let v = r.take(1)?[0];
        if v != VERSION {
            return Err(UplinkError::UnsupportedVersion(v));
        }
        let s = r.take(1)?[0] as usize;
        let stream = std::str::from_utf8(r.take(s)?)
            .ok()
            .filter(|s| valid_stream(s))
            .ok_or(UplinkError::BadStream)?
            .to_owned();
        let batch_id = r.u64()?;
        let count = r.u32()?;
        let raw_len = r.u32()?;
        let z_len = r.u32()? as usize;
        if count == 0 || count > limits.max_batch_records {
            return Err(UplinkError::TooLarge {
                what: "record count",
                size: count.into(),
                limit: limits.max_batch_records.into(),
            });
        }
        let z = r.take(z_len)?;
        if r.at != b.len() {
            return Err(UplinkError::Malformed(format!(
                "{} bytes after the payload",
                b.len() - r.at
            )));
        }
        let raw = capped::decompress(z, raw_len.into(), limits.max_batch_bytes.into())?;
        let mut rr = Reader { b: &raw, at: 0 };
        let mut records = Vec::with_capacity((count as usize).min(raw.len() / RECORD_HEADER + 1));
        for i in 0..count as usize {
            let seq = rr.u64()?;
            let ts_ms = rr.u64()?;
            let len = rr.u32()? as usize;
            let body = rr.take(len)?.to_vec();
            if records.last().is_some_and(|p: &Record| p.seq >= seq) {
                return Err(UplinkError::NotIncreasing(i));
            }
            records.push(Record { seq, ts_ms, body });
        }
        if rr.at != raw.len() {
            return Err(UplinkError::Malformed(
                "record data continues past the declared count".into(),
            ));
        }
        Ok(Self {
            stream,
            batch_id,
            records,
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], UplinkError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| UplinkError::Malformed(format!("truncated at byte {}", self.at)))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, UplinkError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, UplinkError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}
