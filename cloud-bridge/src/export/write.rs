//! The export's writers: JSONL, CSV and Parquet, all with the column layout of
//! [`super::Layout`] followed by the fixed columns.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt32Array,
    UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::ser::{SerializeMap, Serializer};

use super::{CaptureRow, Export, ExportError};

/// Rows per Parquet record batch (bounds the writer's buffered columns).
const BATCH_ROWS: usize = 4096;

/// Unix ms → RFC 3339 UTC with milliseconds (`2026-11-21T07:00:00.250Z`); negative times
/// (a device clock before 1970) read as the epoch.
pub fn rfc3339_ms(ms: i64) -> String {
    let ms = ms.max(0) as u64;
    let s = outpost_protocol::time::rfc3339(ms / 1000);
    format!("{}.{:03}Z", s.trim_end_matches('Z'), ms % 1000)
}

/// One row as a JSON object, keys in column order.
struct JsonRow<'a>(&'a Export, &'a CaptureRow);

impl serde::Serialize for JsonRow<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (l, r) = (&self.0.layout, self.1);
        let mut m = s.serialize_map(None)?;
        for (k, v) in l.features.iter().zip(&r.features) {
            m.serialize_entry(k, &v.filter(|v| v.is_finite()))?;
        }
        m.serialize_entry("label", &None::<String>)?;
        m.serialize_entry("prediction", &r.prediction)?;
        m.serialize_entry("score", &r.score.filter(|v| v.is_finite()))?;
        for (k, v) in l.outputs.iter().zip(&r.outputs) {
            m.serialize_entry(k, &v.filter(|v| v.is_finite()))?;
        }
        m.serialize_entry("ts", &rfc3339_ms(r.ts_ms))?;
        m.serialize_entry("device", &r.device)?;
        m.serialize_entry("model", &r.model)?;
        m.serialize_entry("version", &r.version)?;
        m.serialize_entry("seq", &r.seq)?;
        m.serialize_entry("reason", &r.reason)?;
        m.serialize_entry("bundle", &r.bundle)?;
        m.end()
    }
}

/// Writes JSON lines: one object per row, keys in column order; null for a missing or
/// non-finite value (JSON has no NaN).
pub fn write_jsonl(e: &Export, w: &mut dyn Write) -> Result<(), ExportError> {
    for r in &e.rows {
        serde_json::to_writer(&mut *w, &JsonRow(e, r)).map_err(|e| ExportError::Io(e.into()))?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// One CSV cell, quoted per RFC 4180 when it holds a separator, quote or line break.
fn cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn num(v: Option<f64>) -> String {
    // `{}` on f64 is the shortest text that parses back to the same value.
    v.filter(|v| v.is_finite())
        .map(|v| v.to_string())
        .unwrap_or_default()
}

/// Writes CSV: a header row of column names, then one line per row; an empty cell is a
/// null (missing value, empty `label`). The feature columns come first, so a reader that
/// splits lines on commas (the `--baseline` reader does) stays aligned on them even past
/// a quoted text cell.
pub fn write_csv(e: &Export, w: &mut dyn Write) -> Result<(), ExportError> {
    let l = &e.layout;
    let header: Vec<String> = l
        .features
        .iter()
        .map(String::as_str)
        .chain(["label", "prediction", "score"])
        .chain(l.outputs.iter().map(String::as_str))
        .chain([
            "ts", "device", "model", "version", "seq", "reason", "bundle",
        ])
        .map(cell)
        .collect();
    writeln!(w, "{}", header.join(","))?;
    for r in &e.rows {
        let line: Vec<String> = r
            .features
            .iter()
            .map(|v| num(*v))
            .chain([
                String::new(),
                cell(r.prediction.as_deref().unwrap_or("")),
                num(r.score),
            ])
            .chain(r.outputs.iter().map(|v| num(*v)))
            .chain([
                rfc3339_ms(r.ts_ms),
                cell(&r.device),
                cell(&r.model),
                r.version.to_string(),
                r.seq.to_string(),
                cell(&r.reason),
                cell(&r.bundle),
            ])
            .collect();
        writeln!(w, "{}", line.join(","))?;
    }
    Ok(())
}

/// The Arrow schema of `e`: features and outputs DOUBLE nullable, `label` STRING nullable,
/// `ts` TIMESTAMP(MILLIS, UTC).
pub fn schema(e: &Export) -> Schema {
    let l = &e.layout;
    let mut fields: Vec<Field> = l
        .features
        .iter()
        .map(|n| Field::new(n, DataType::Float64, true))
        .collect();
    fields.push(Field::new("label", DataType::Utf8, true));
    fields.push(Field::new("prediction", DataType::Utf8, true));
    fields.push(Field::new("score", DataType::Float64, true));
    fields.extend(
        l.outputs
            .iter()
            .map(|n| Field::new(n, DataType::Float64, true)),
    );
    fields.extend([
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("device", DataType::Utf8, false),
        Field::new("model", DataType::Utf8, false),
        Field::new("version", DataType::UInt32, false),
        Field::new("seq", DataType::UInt64, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("bundle", DataType::Utf8, false),
    ]);
    Schema::new(fields)
}

fn doubles(values: impl Iterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(Float64Array::from_iter(values))
}

fn strings<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

/// Writes `e` as zstd-compressed Parquet to `w` (no seeking: a pipe works).
pub fn write_parquet<W: Write + Send>(e: &Export, w: W) -> Result<(), ExportError> {
    let schema = Arc::new(schema(e));
    let pq = |e: parquet::errors::ParquetError| ExportError::Parquet(e.to_string());
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut out = ArrowWriter::try_new(w, schema.clone(), Some(props)).map_err(pq)?;
    let (nf, no) = (e.layout.features.len(), e.layout.outputs.len());
    for chunk in e.rows.chunks(BATCH_ROWS) {
        let mut cols: Vec<ArrayRef> = (0..nf)
            .map(|k| doubles(chunk.iter().map(|r| r.features[k])))
            .collect();
        cols.push(Arc::new(StringArray::new_null(chunk.len())));
        cols.push(Arc::new(StringArray::from_iter(
            chunk.iter().map(|r| r.prediction.as_deref()),
        )));
        cols.push(doubles(chunk.iter().map(|r| r.score)));
        cols.extend((0..no).map(|k| doubles(chunk.iter().map(|r| r.outputs[k]))));
        cols.push(Arc::new(
            TimestampMillisecondArray::from_iter_values(chunk.iter().map(|r| r.ts_ms))
                .with_timezone("UTC"),
        ));
        cols.push(strings(chunk.iter().map(|r| r.device.as_str())));
        cols.push(strings(chunk.iter().map(|r| r.model.as_str())));
        cols.push(Arc::new(UInt32Array::from_iter_values(
            chunk.iter().map(|r| r.version),
        )));
        cols.push(Arc::new(UInt64Array::from_iter_values(
            chunk.iter().map(|r| r.seq),
        )));
        cols.push(strings(chunk.iter().map(|r| r.reason.as_str())));
        cols.push(strings(chunk.iter().map(|r| r.bundle.as_str())));
        let batch = RecordBatch::try_new(schema.clone(), cols)
            .map_err(|e| ExportError::Parquet(e.to_string()))?;
        out.write(&batch).map_err(pq)?;
    }
    // into_inner writes the footer; flushing surfaces a buffered writer's last error.
    out.into_inner().map_err(pq)?.flush()?;
    Ok(())
}

/// Writes Parquet to `path` through a temporary name, renamed when complete, so a failed
/// export never leaves a truncated file behind.
pub fn write_parquet_file(e: &Export, path: &Path) -> Result<(), ExportError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    if let Err(err) = write_parquet(e, file) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err);
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}
