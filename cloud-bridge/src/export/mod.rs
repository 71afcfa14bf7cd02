//! Exporting captured samples for retraining: Parquet, CSV or JSONL, one column per named
//! feature — the layout of the `model register --baseline` CSV, so a training script reads
//! both with the same code.
//!
//! Columns, in order ([`Layout`]; `docs/architecture.md`, "Capture exports"):
//!
//! | column | Parquet type | meaning |
//! |---|---|---|
//! | one per feature (`rms_x`, …) | DOUBLE, nullable | the raw feature value the model received |
//! | `label` | STRING, nullable, all null | ground truth, for the labeller to fill in |
//! | `prediction` | STRING, nullable | the task's label (classifiers); null otherwise |
//! | `score` | DOUBLE, nullable | the classifier's confidence, or the regression value / anomaly score |
//! | `output:{tensor}[{i}]` | DOUBLE, nullable | each raw output value |
//! | `ts` | TIMESTAMP(MILLIS, UTC) | capture time (RFC 3339 with milliseconds in CSV/JSONL) |
//! | `device`, `model` | STRING | who captured it, with which model |
//! | `version` | UINT32 | model version |
//! | `seq` | UINT64 | the device's record sequence |
//! | `reason` | STRING | why it was captured (`anomaly`, `sample`, …) |
//! | `bundle` | STRING | bundle digest (hex) |
//!
//! Feature names come from each captured version's registered contract (its feature
//! input); the union over the versions exported, newest version's order first, so an
//! export across versions whose features differ has nulls where a version lacked one.
//! Inputs of a version without named features (or whose registry row was deleted) become
//! `input:{tensor}[{i}]` columns instead.
//!
//! The same query backs `outpost-bridge export captures` and `GET /v1/captures/export`,
//! and drift alerts carry it ([`CaptureQuery::command`]) so a pipeline can fetch exactly
//! the drifting window.

mod write;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use outpost_protocol::contract::ModelContract;
use outpost_protocol::tensor::Tensor;
use rusqlite::{Connection, OptionalExtension, params};

pub use write::{rfc3339_ms, write_csv, write_jsonl, write_parquet, write_parquet_file};

/// Export errors.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Bad arguments (the message names the argument and what is accepted).
    #[error("{0}")]
    Invalid(String),
    /// No model of that name was ever registered.
    #[error("model {0:?} is not registered (see `outpost-bridge model list`)")]
    UnknownModel(String),
    /// The model exists but this version was never registered.
    #[error("model {model:?} has no version {version} (versions registered: 1..={last})")]
    UnknownVersion {
        /// Model name.
        model: String,
        /// The version asked for.
        version: u32,
        /// The highest version ever registered (versions are never reused).
        last: u32,
    },
    /// A feature is named like one of the export's own columns.
    #[error(
        "model {model:?} has a feature named {name:?}, which is also an export column; rename the feature in the spec"
    )]
    ColumnClash {
        /// Model name.
        model: String,
        /// The clashing name.
        name: String,
    },
    /// Parquet to a terminal.
    #[error("refusing to write Parquet to a terminal: redirect stdout, or use -o FILE")]
    ParquetToTerminal,
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

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Parquet, zstd-compressed.
    Parquet,
    /// JSON lines: one object per row, keys in column order.
    Jsonl,
    /// CSV (RFC 4180 quoting), header row first.
    Csv,
}

impl std::str::FromStr for Format {
    type Err = ExportError;
    fn from_str(s: &str) -> Result<Self, ExportError> {
        match s {
            "parquet" => Ok(Self::Parquet),
            "jsonl" => Ok(Self::Jsonl),
            "csv" => Ok(Self::Csv),
            other => Err(ExportError::Invalid(format!(
                "format {:?} is not parquet, jsonl or csv",
                other.chars().take(32).collect::<String>()
            ))),
        }
    }
}

impl Format {
    /// Its name, as `--format` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Parquet => "parquet",
            Self::Jsonl => "jsonl",
            Self::Csv => "csv",
        }
    }
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

/// Columns fixed by the export (a feature may not take one of these names).
pub const FIXED_COLUMNS: &[&str] = &[
    "label",
    "prediction",
    "score",
    "ts",
    "device",
    "model",
    "version",
    "seq",
    "reason",
    "bundle",
];

/// The variable columns of an export: its feature (input) columns and output columns, in
/// order. The fixed columns are [`FIXED_COLUMNS`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Layout {
    /// Feature columns: named features, then `input:{tensor}[{i}]` for unnamed inputs.
    pub features: Vec<String>,
    /// `output:{tensor}[{i}]` columns.
    pub outputs: Vec<String>,
}

/// One exported row; `features` and `outputs` line up with the [`Layout`]'s columns.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureRow {
    /// Capture time, unix ms.
    pub ts_ms: i64,
    /// Device.
    pub device: String,
    /// Model name.
    pub model: String,
    /// Version.
    pub version: u32,
    /// The device's record sequence.
    pub seq: u64,
    /// Why it was captured.
    pub reason: String,
    /// Bundle digest (hex).
    pub bundle: String,
    /// Per feature column (None: this capture's version lacks it).
    pub features: Vec<Option<f64>>,
    /// The task's label (None for raw, regression and anomaly-score models).
    pub prediction: Option<String>,
    /// Confidence or value, when the task gives one.
    pub score: Option<f64>,
    /// Per output column.
    pub outputs: Vec<Option<f64>>,
}

/// An export: its layout and rows, oldest first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Export {
    /// Columns.
    pub layout: Layout,
    /// Rows.
    pub rows: Vec<CaptureRow>,
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
        return v.checked_mul(1000).ok_or_else(bad);
    }
    if let Some(t) = outpost_protocol::time::parse_rfc3339(s) {
        return Ok(t * 1000);
    }
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => return Err(bad()),
    }
    .ok_or_else(bad)?;
    Ok(now_s.saturating_sub(secs) * 1000)
}

/// Single-quotes `s` for a POSIX shell when it holds anything but plain path characters.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The data directory of the bridge database `c` is connected to (None in memory).
pub fn data_dir_of(c: &Connection) -> Option<PathBuf> {
    let db = c.path().filter(|p| !p.is_empty())?;
    let dir = Path::new(db).parent()?;
    Some(std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()))
}

impl CaptureQuery {
    /// The CLI command that exports these captures as Parquet (carried by drift alerts):
    /// runnable as printed from any directory — `--data-dir` names `data_dir` (absolute
    /// when it came from [`data_dir_of`]) and `-o` a file named after the model version.
    pub fn command(&self, data_dir: Option<&Path>) -> String {
        let mut s = "outpost-bridge".to_owned();
        if let Some(d) = data_dir {
            s += &format!(" --data-dir {}", shell_word(&d.to_string_lossy()));
        }
        s += &format!(" export captures --model {}", shell_word(&self.model));
        if let Some(v) = self.version {
            s += &format!(":{v}");
        }
        if let Some(t) = self.since_ms {
            // Floored: the window's first second is included whole.
            s += &format!(" --since {}", outpost_protocol::time::rfc3339(t / 1000));
        }
        if let Some(t) = self.until_ms {
            s += &format!(
                " --until {}",
                outpost_protocol::time::rfc3339(t.div_ceil(1000))
            );
        }
        for d in &self.devices {
            s += &format!(" --device {}", shell_word(d));
        }
        let file = match self.version {
            Some(v) => format!("{}-v{v}-captures.parquet", self.model),
            None => format!("{}-captures.parquet", self.model),
        };
        s + &format!(" --format parquet -o {}", shell_word(&file))
    }

    /// Checks the model (and version) were registered: an export of a name never
    /// registered is a typo, not an empty result.
    ///
    /// Errors: [`ExportError::UnknownModel`], [`ExportError::UnknownVersion`].
    pub fn check_model(&self, c: &Connection) -> Result<(), ExportError> {
        // model_counters keeps a name's highest version even after its rows are deleted,
        // so captures of a deleted version stay exportable.
        let last: Option<u32> = c
            .query_row(
                "SELECT last_version FROM model_counters WHERE name = ?1",
                [&self.model],
                |r| r.get(0),
            )
            .optional()?;
        let last = match last {
            Some(l) => l,
            None => c
                .query_row(
                    "SELECT MAX(version) FROM models WHERE name = ?1",
                    [&self.model],
                    |r| r.get::<_, Option<u32>>(0),
                )?
                .ok_or_else(|| ExportError::UnknownModel(self.model.clone()))?,
        };
        match self.version {
            Some(v) if v == 0 || v > last => Err(ExportError::UnknownVersion {
                model: self.model.clone(),
                version: v,
                last,
            }),
            _ => Ok(()),
        }
    }

    /// Feature names per registered version that has a contract with a feature input.
    fn feature_names(
        &self,
        c: &Connection,
    ) -> Result<BTreeMap<u32, (String, Vec<String>)>, ExportError> {
        let mut q = c.prepare("SELECT version, contract FROM models WHERE name = ?1")?;
        let rows = q.query_map([&self.model], |r| {
            Ok((r.get::<_, u32>(0)?, r.get::<_, Option<String>>(1)?))
        })?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (v, contract) = row?;
            let Some(k) = contract.and_then(|s| serde_json::from_str::<ModelContract>(&s).ok())
            else {
                continue;
            };
            if let Some(f) = k.feature_input() {
                for n in &f.features {
                    if FIXED_COLUMNS.contains(&n.as_str()) {
                        return Err(ExportError::ColumnClash {
                            model: self.model.clone(),
                            name: n.clone(),
                        });
                    }
                }
                out.insert(v, (f.name.clone(), f.features.clone()));
            }
        }
        Ok(out)
    }

    /// Runs the query: the model must be registered ([`Self::check_model`]); rows oldest
    /// first, columns as described in the module docs.
    pub fn export(&self, c: &Connection) -> Result<Export, ExportError> {
        self.check_model(c)?;
        let names = self.feature_names(c)?;
        let mut q = c.prepare(
            "SELECT device, seq, ts_ms, model, version, bundle, reason, label, confidence, input, output FROM captures
             WHERE model = ?1 AND (?2 IS NULL OR version = ?2) AND ts_ms >= ?3 AND ts_ms < ?4 ORDER BY ts_ms, device, seq",
        )?;
        let raw = q.query_map(
            params![
                self.model,
                self.version,
                self.since_ms.unwrap_or(0).min(i64::MAX as u64) as i64,
                self.until_ms
                    .map(|v| v.min(i64::MAX as u64) as i64)
                    .unwrap_or(i64::MAX)
            ],
            |r| {
                Ok(Raw {
                    device: r.get(0)?,
                    seq: r.get::<_, i64>(1)? as u64,
                    ts_ms: r.get(2)?,
                    model: r.get(3)?,
                    version: r.get(4)?,
                    bundle: r.get(5)?,
                    reason: r.get(6)?,
                    label: r.get(7)?,
                    confidence: r.get(8)?,
                    input: r.get(9)?,
                    output: r.get(10)?,
                })
            },
        )?;
        let mut raws = Vec::new();
        for r in raw {
            let r = r?;
            if self.devices.is_empty() || self.devices.contains(&r.device) {
                raws.push(r);
            }
        }
        // With no rows, the columns still name the features (of the version asked for,
        // else the newest registered): a script reading an empty window needs them.
        let empty = self.version.or_else(|| names.keys().max().copied());
        Ok(assemble(&names, raws, empty))
    }
}

/// A captures row as stored (tensors still JSON).
struct Raw {
    device: String,
    seq: u64,
    ts_ms: i64,
    model: String,
    version: u32,
    bundle: String,
    reason: String,
    label: String,
    confidence: Option<f64>,
    input: String,
    output: String,
}

/// `{prefix}:{tensor}[{i}]` → value, for each value of each tensor.
fn flatten(prefix: &str, ts: &[Tensor], skip: Option<&str>) -> Vec<(String, f64)> {
    ts.iter()
        .filter(|t| Some(t.name.as_str()) != skip)
        .flat_map(|t| {
            t.data
                .to_f64()
                .into_iter()
                .enumerate()
                .map(move |(i, v)| (format!("{prefix}:{}[{i}]", t.name), v))
        })
        .collect()
}

/// Lays the stored rows out in columns (see the module docs for the order); with no rows,
/// the feature columns are `empty_version`'s.
fn assemble(
    names: &BTreeMap<u32, (String, Vec<String>)>,
    raws: Vec<Raw>,
    empty_version: Option<u32>,
) -> Export {
    let mut versions: BTreeSet<u32> = raws.iter().map(|r| r.version).collect();
    if raws.is_empty() {
        versions.extend(empty_version);
    }
    let mut layout = Layout::default();
    // Newest version first: its order is the one a retraining script most likely wants.
    for v in versions.iter().rev() {
        for f in names.get(v).map(|(_, f)| f.as_slice()).unwrap_or_default() {
            if !layout.features.contains(f) {
                layout.features.push(f.clone());
            }
        }
    }
    let mut cells: Vec<(BTreeMap<String, f64>, BTreeMap<String, f64>)> = Vec::new();
    for r in &raws {
        // A row whose tensors do not parse (a newer agent's encoding) keeps its metadata
        // with null values rather than failing the whole export.
        let inputs: Vec<Tensor> = serde_json::from_str(&r.input).unwrap_or_default();
        let outputs: Vec<Tensor> = serde_json::from_str(&r.output).unwrap_or_default();
        let mut fin = BTreeMap::new();
        let named = names.get(&r.version);
        if let Some((tensor, feats)) = named
            && let Some(t) = inputs.iter().find(|t| t.name == *tensor)
        {
            for (k, f) in feats.iter().enumerate() {
                if let Some(v) = t.data.get_f64(k) {
                    fin.insert(f.clone(), v);
                }
            }
        }
        for (k, v) in flatten("input", &inputs, named.map(|(t, _)| t.as_str())) {
            if !layout.features.contains(&k) {
                layout.features.push(k.clone());
            }
            fin.insert(k, v);
        }
        let mut fout = BTreeMap::new();
        for (k, v) in flatten("output", &outputs, None) {
            if !layout.outputs.contains(&k) {
                layout.outputs.push(k.clone());
            }
            fout.insert(k, v);
        }
        cells.push((fin, fout));
    }
    let rows = raws
        .into_iter()
        .zip(cells)
        .map(|(r, (fin, fout))| CaptureRow {
            features: layout
                .features
                .iter()
                .map(|c| fin.get(c).copied())
                .collect(),
            outputs: layout
                .outputs
                .iter()
                .map(|c| fout.get(c).copied())
                .collect(),
            ts_ms: r.ts_ms,
            device: r.device,
            model: r.model,
            version: r.version,
            seq: r.seq,
            reason: r.reason,
            bundle: r.bundle,
            prediction: Some(r.label).filter(|l| !l.is_empty()),
            score: r.confidence,
        })
        .collect();
    Export { layout, rows }
}

/// Where an export goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Standard output (`-o -`).
    Stdout,
    /// A file (Parquet is written to a temporary name and renamed).
    File(PathBuf),
}

impl Target {
    /// `-` → stdout, else a file.
    pub fn from_arg(p: &Path) -> Self {
        if p.as_os_str() == "-" {
            Self::Stdout
        } else {
            Self::File(p.to_path_buf())
        }
    }
}

/// Writes `e` in `format` to `target`. Parquet goes to stdout only when stdout is not a
/// terminal (the file is binary; the writer needs no seeking, so a pipe works).
///
/// Errors: [`ExportError::ParquetToTerminal`], I/O and Parquet failures.
pub fn write(e: &Export, format: Format, target: &Target) -> Result<(), ExportError> {
    use std::io::{IsTerminal, Write};
    match (format, target) {
        (Format::Parquet, Target::File(p)) => write_parquet_file(e, p),
        (Format::Parquet, Target::Stdout) => {
            let out = std::io::stdout();
            if out.is_terminal() {
                return Err(ExportError::ParquetToTerminal);
            }
            // Stdout (not its lock, which is not Send) behind a buffer: the writer
            // emits many small pages.
            write_parquet(e, std::io::BufWriter::new(out))
        }
        (f, t) => {
            let mut w: Box<dyn Write> = match t {
                Target::Stdout => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
                Target::File(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p)?)),
            };
            if f == Format::Csv {
                write_csv(e, &mut w)?;
            } else {
                write_jsonl(e, &mut w)?;
            }
            w.flush()?;
            Ok(())
        }
    }
}

/// The line for stderr after an export: the count and where it went, and when nothing
/// matched, that the model is known but had no captures in the range (exit status 0: an
/// empty window is an answer, not a failure).
pub fn summary(q: &CaptureQuery, e: &Export, target: &Target) -> String {
    let to = match target {
        Target::Stdout => "stdout".to_owned(),
        Target::File(p) => p.display().to_string(),
    };
    if e.rows.is_empty() {
        let model = match q.version {
            Some(v) => format!("{}:{v}", q.model),
            None => q.model.clone(),
        };
        return format!(
            "note: no captures of {model} in the range; wrote the {} columns with 0 rows to {to}",
            e.layout.features.len() + e.layout.outputs.len() + FIXED_COLUMNS.len()
        );
    }
    format!("exported {} captures to {to}", e.rows.len())
}

#[cfg(test)]
mod tests;
