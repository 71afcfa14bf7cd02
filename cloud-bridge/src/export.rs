//! Exporting captured inputs/outputs for retraining: JSONL or Parquet.
//!
//! Columns: device, seq, ts_ms, model, version, bundle, reason, label, confidence,
//! input (list of f32), output (list of f32). The same query backs
//! `outpost-bridge export captures` and `GET /v1/captures/export`, and drift alerts carry
//! it ([`CaptureQuery::command`]) so a pipeline can fetch exactly the drifting window.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{Float32Builder, ListBuilder};
use arrow_array::{
    ArrayRef, Float32Array, Int64Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rusqlite::{Connection, params};
use serde::Serialize;

/// Export errors.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Bad arguments.
    #[error("{0}")]
    Invalid(String),
    /// Database.
    #[error("export query: {0}")]
    Db(#[from] rusqlite::Error),
    /// Output.
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    /// Parquet.
    #[error("writing parquet: {0}")]
    Parquet(String),
}

/// Which captures.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CaptureQuery {
    /// Model name.
    pub model: String,
    /// Version (None: all).
    pub version: Option<u32>,
    /// From (unix ms, inclusive).
    pub since_ms: Option<u64>,
    /// Until (unix ms, exclusive).
    pub until_ms: Option<u64>,
    /// Only these devices (empty: all).
    pub devices: Vec<String>,
}

/// One exported row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaptureRow {
    /// Device.
    pub device: String,
    /// Record sequence.
    pub seq: u64,
    /// Capture time, unix ms.
    pub ts_ms: i64,
    /// Model name.
    pub model: String,
    /// Version.
    pub version: u32,
    /// Bundle digest.
    pub bundle: String,
    /// Why it was captured.
    pub reason: String,
    /// Predicted label.
    pub label: String,
    /// Confidence.
    pub confidence: f32,
    /// Model input.
    pub input: Vec<f32>,
    /// Model output.
    pub output: Vec<f32>,
}

/// Parses `name` or `name:version`.
pub fn parse_model(s: &str) -> Result<(String, Option<u32>), ExportError> {
    match s.rsplit_once(':') {
        Some((n, v)) => Ok((
            n.to_owned(),
            Some(
                v.parse()
                    .map_err(|_| ExportError::Invalid(format!("bad version in {s:?}")))?,
            ),
        )),
        None => Ok((s.to_owned(), None)),
    }
}

/// Parses a time: unix seconds, RFC 3339 (`2026-11-21T07:00:00Z`, `2026-11-21`), or an age
/// (`30m`, `24h`, `7d`) relative to now. Returns unix ms.
pub fn parse_time(s: &str, now_s: u64) -> Result<u64, ExportError> {
    let bad = || {
        ExportError::Invalid(format!(
            "cannot read time {s:?}: use unix seconds, 2026-11-21T07:00:00Z, or an age like 24h"
        ))
    };
    if let Ok(v) = s.parse::<u64>() {
        return Ok(v * 1000);
    }
    if let Some(t) = outpost_protocol::time::parse_rfc3339(s) {
        return Ok(t * 1000);
    }
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(bad()),
    };
    Ok(now_s.saturating_sub(secs) * 1000)
}

impl CaptureQuery {
    /// The CLI command that exports these captures (carried by drift alerts).
    pub fn command(&self) -> String {
        let mut s = format!("outpost-bridge export captures --model {}", self.model);
        if let Some(v) = self.version {
            s += &format!(":{v}");
        }
        if let Some(t) = self.since_ms {
            s += &format!(" --since {}", outpost_protocol::time::rfc3339(t / 1000));
        }
        if let Some(t) = self.until_ms {
            s += &format!(
                " --until {}",
                outpost_protocol::time::rfc3339(t.div_ceil(1000))
            );
        }
        for d in &self.devices {
            s += &format!(" --device {d}");
        }
        s + " --format parquet -o captures.parquet"
    }

    /// Runs the query, oldest first.
    pub fn rows(&self, c: &Connection) -> Result<Vec<CaptureRow>, ExportError> {
        let mut q = c.prepare(
            "SELECT device, seq, ts_ms, model, version, bundle, reason, label, confidence, input, output FROM captures
             WHERE model = ?1 AND (?2 IS NULL OR version = ?2) AND ts_ms >= ?3 AND ts_ms < ?4 ORDER BY ts_ms, device, seq",
        )?;
        let rows = q.query_map(
            params![
                self.model,
                self.version,
                self.since_ms.unwrap_or(0) as i64,
                self.until_ms.map(|v| v as i64).unwrap_or(i64::MAX)
            ],
            |r| {
                let input: String = r.get(9)?;
                let output: String = r.get(10)?;
                // Columns hold the named OIP tensors of the sample; the export flattens
                // their numeric values in contract order.
                let flat = |json: &str| -> Vec<f32> {
                    serde_json::from_str::<Vec<outpost_protocol::tensor::Tensor>>(json)
                        .map(|ts| {
                            ts.iter()
                                .flat_map(|t| t.data.to_f64())
                                .map(|v| v as f32)
                                .collect()
                        })
                        .unwrap_or_default()
                };
                Ok(CaptureRow {
                    device: r.get(0)?,
                    seq: r.get::<_, i64>(1)? as u64,
                    ts_ms: r.get(2)?,
                    model: r.get(3)?,
                    version: r.get(4)?,
                    bundle: r.get(5)?,
                    reason: r.get(6)?,
                    label: r.get(7)?,
                    confidence: r.get::<_, Option<f64>>(8)?.unwrap_or(f64::NAN) as f32,
                    input: flat(&input),
                    output: flat(&output),
                })
            },
        )?;
        let mut v: Vec<CaptureRow> = rows.collect::<Result<_, _>>()?;
        if !self.devices.is_empty() {
            v.retain(|r| self.devices.contains(&r.device));
        }
        Ok(v)
    }
}

/// Writes rows as JSON lines.
pub fn write_jsonl(rows: &[CaptureRow], w: &mut dyn Write) -> Result<(), ExportError> {
    for r in rows {
        serde_json::to_writer(&mut *w, r).map_err(|e| ExportError::Io(e.into()))?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

fn list(values: impl Iterator<Item = Vec<f32>>) -> ArrayRef {
    let mut b = ListBuilder::new(Float32Builder::new());
    for v in values {
        b.values().append_slice(&v);
        b.append(true);
    }
    Arc::new(b.finish())
}

/// Writes rows as a zstd-compressed Parquet file (written to a temporary name, then
/// renamed, so a failed export never leaves a truncated file behind).
pub fn write_parquet(rows: &[CaptureRow], path: &Path) -> Result<(), ExportError> {
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let schema = Arc::new(Schema::new(vec![
        Field::new("device", DataType::Utf8, false),
        Field::new("seq", DataType::UInt64, false),
        Field::new("ts_ms", DataType::Int64, false),
        Field::new("model", DataType::Utf8, false),
        Field::new("version", DataType::UInt32, false),
        Field::new("bundle", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("label", DataType::Utf8, false),
        Field::new("confidence", DataType::Float32, false),
        Field::new("input", DataType::List(item.clone()), false),
        Field::new("output", DataType::List(item), false),
    ]));
    let pq = |e: parquet::errors::ParquetError| ExportError::Parquet(e.to_string());
    let tmp = path.with_extension("parquet.tmp");
    let file = std::fs::File::create(&tmp)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(pq)?;
    for chunk in rows.chunks(4096) {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|r| r.device.as_str()),
            )),
            Arc::new(UInt64Array::from_iter_values(chunk.iter().map(|r| r.seq))),
            Arc::new(Int64Array::from_iter_values(chunk.iter().map(|r| r.ts_ms))),
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|r| r.model.as_str()),
            )),
            Arc::new(UInt32Array::from_iter_values(
                chunk.iter().map(|r| r.version),
            )),
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|r| r.bundle.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|r| r.reason.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|r| r.label.as_str()),
            )),
            Arc::new(Float32Array::from_iter_values(
                chunk.iter().map(|r| r.confidence),
            )),
            list(chunk.iter().map(|r| r.input.clone())),
            list(chunk.iter().map(|r| r.output.clone())),
        ];
        let batch = RecordBatch::try_new(schema.clone(), cols)
            .map_err(|e| ExportError::Parquet(e.to_string()))?;
        w.write(&batch).map_err(pq)?;
    }
    w.close().map_err(pq)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
