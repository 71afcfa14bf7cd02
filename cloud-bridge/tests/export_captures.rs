//! `export captures` for retraining: one column per named feature (the `--baseline` CSV's
//! layout), typed timestamps, a null ground-truth `label`; Parquet, CSV and JSONL, to a
//! file or stdout; unknown models refused; a drift alert's export command runs as printed.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampMillisecondType, UInt32Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use common::{bridge, models, run, text};
use outpost_bridge::ingest::{IngestJob, IngestStats, write};
use outpost_protocol::Limits;
use outpost_protocol::manifest::ModelRef;
use outpost_protocol::records::{
    self, CaptureReason, CaptureRecord, DriftSummary, InferenceReport, Source, Telemetry,
};
use outpost_protocol::tensor::{Tensor, TensorData};
use outpost_protocol::uplink::{Record, UplinkBatch};
use serde::Deserialize;

/// Where capture 0 would be: captures 1..=30 are one second apart from here, all within
/// the last minute.
fn t0() -> u64 {
    outpost_bridge::db::now_ms() - 60_000
}

fn cli(data: &Path, args: &[&str]) -> std::process::Output {
    run(bridge()
        .arg("--data-dir")
        .arg(data)
        .args(["--actor", "tester"])
        .args(args))
}

fn ok(o: std::process::Output) -> std::process::Output {
    assert!(o.status.success(), "{}", text(&o));
    o
}

/// Registers vibration-anomaly (16 named features) as `vib` through the CLI.
fn register(data: &Path, extra: &[&str]) {
    let model = models().join("vibration-anomaly/model.onnx");
    let mut args = vec![
        "model",
        "register",
        model.to_str().unwrap(),
        "--name",
        "vib",
    ];
    args.extend_from_slice(extra);
    ok(cli(data, &args));
}

/// Feature `k` of capture `i`: distinct per row and column, within the training range.
fn value(i: u64, k: usize) -> f32 {
    0.05 + i as f32 * 0.01 + k as f32 * 0.001
}

fn ingest(data: &Path, stream: &str, t0: u64, bodies: Vec<(u64, Vec<u8>)>) {
    let db = outpost_bridge::db::Db::open(data).unwrap();
    let batch = UplinkBatch {
        stream: stream.into(),
        batch_id: 1,
        records: bodies
            .into_iter()
            .map(|(seq, body)| Record {
                seq,
                ts_ms: t0 + seq * 1000,
                body,
            })
            .collect(),
    };
    let job = IngestJob {
        device: "gw-x".into(),
        stream: stream.into(),
        payload: batch.encode(3).unwrap(),
    };
    write(
        &mut db.connect().unwrap(),
        &[job],
        &Limits::default(),
        &IngestStats::default(),
    )
    .unwrap();
}

fn captures(data: &Path, t0: u64) {
    let capture = |i: u64| {
        records::encode(&CaptureRecord {
            ts_ms: t0 + i * 1000,
            model: ModelRef {
                name: "vib".into(),
                version: 1,
            },
            bundle: outpost_protocol::Digest::of(b"ab"),
            reason: CaptureReason::Anomaly,
            source: Source::Pipeline,
            inputs: vec![
                Tensor::new(
                    "features",
                    vec![1, 16],
                    TensorData::Fp32((0..16).map(|k| value(i, k)).collect()),
                )
                .unwrap(),
            ],
            outputs: vec![
                Tensor::new(
                    "probabilities",
                    vec![1, 3],
                    TensorData::Fp32(vec![0.125, 0.25, 0.625]),
                )
                .unwrap(),
            ],
            interpretation: None,
            features: None,
            label: "bearing_fault".into(),
            confidence: Some(0.625),
        })
    };
    ingest(
        data,
        "captures",
        t0,
        (1..=30).map(|i| (i, capture(i))).collect(),
    );
}

fn parquet(bytes: Vec<u8>) -> RecordBatch {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::from(bytes),
    )
    .unwrap()
    .build()
    .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    assert_eq!(batches.len(), 1, "a small export is one batch");
    batches[0].clone()
}

/// One JSONL row, typed: the named features and outputs flattened beside the fixed
/// columns (serde cannot deny unknown fields next to a flatten; the count is checked).
#[derive(Debug, Deserialize)]
struct Row {
    label: Option<String>,
    prediction: Option<String>,
    score: Option<f64>,
    ts: String,
    device: String,
    model: String,
    version: u32,
    seq: u64,
    reason: String,
    bundle: String,
    #[serde(flatten)]
    values: std::collections::BTreeMap<String, Option<f64>>,
}

#[test]
fn parquet_csv_and_jsonl_share_the_baseline_layout() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    register(&data, &[]);
    let t0 = t0();
    captures(&data, t0);

    // Parquet: typed columns, features first, the ground-truth label nullable and null.
    let pq = d.path().join("c.parquet");
    ok(cli(
        &data,
        &[
            "export",
            "captures",
            "--model",
            "vib:1",
            "--since",
            &((t0 + 5000) / 1000).to_string(),
            "-o",
            pq.to_str().unwrap(),
        ],
    ));
    let b = parquet(std::fs::read(&pq).unwrap());
    assert_eq!(b.num_rows(), 26, "from the 5th second: captures 5..=30");
    let schema = b.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    // The vibration-anomaly model's features, named and in the order the agent computes them.
    assert_eq!(
        &names[..16],
        outpost_agent::sensors::features::FEATURE_NAMES
    );
    assert_eq!(
        &names[16..],
        [
            "label",
            "prediction",
            "score",
            "output:probabilities[0]",
            "output:probabilities[1]",
            "output:probabilities[2]",
            "ts",
            "device",
            "model",
            "version",
            "seq",
            "reason",
            "bundle"
        ]
    );
    let field = |n: &str| schema.field_with_name(n).unwrap().clone();
    assert_eq!(field("rms_x").data_type(), &DataType::Float64);
    assert!(field("label").is_nullable());
    assert_eq!(field("label").data_type(), &DataType::Utf8);
    assert_eq!(b.column_by_name("label").unwrap().null_count(), 26);
    assert_eq!(
        field("ts").data_type(),
        &DataType::Timestamp(TimeUnit::Millisecond, Some(Arc::from("UTC")))
    );
    let ts = b.column_by_name("ts").unwrap();
    let ts = ts.as_primitive::<TimestampMillisecondType>();
    assert_eq!(ts.value(0), (t0 + 5000) as i64);
    let col = |n: &str| {
        b.column_by_name(n)
            .unwrap()
            .as_primitive::<Float64Type>()
            .clone()
    };
    assert_eq!(col("band_5_40").value(0), f64::from(value(5, 8)));
    assert_eq!(col("centroid_hz").value(25), f64::from(value(30, 15)));
    assert_eq!(col("output:probabilities[2]").value(3), 0.625);
    assert_eq!(
        b.column_by_name("version")
            .unwrap()
            .as_primitive::<UInt32Type>()
            .value(0),
        1
    );
    assert_eq!(
        b.column_by_name("prediction")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "bearing_fault"
    );

    // CSV to stdout: the same columns; registering a next version with the export as its
    // `--baseline` proves the baseline reader takes the layout as it is.
    let o = ok(cli(
        &data,
        &[
            "export", "captures", "--model", "vib", "--format", "csv", "-o", "-",
        ],
    ));
    let csv = String::from_utf8(o.stdout).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header, names, "CSV and Parquet columns match");
    let first: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(first[0].parse::<f64>().unwrap(), f64::from(value(1, 0)));
    assert_eq!(first[16], "", "label is empty (null)");
    assert_eq!(
        first[22],
        outpost_bridge::export::rfc3339_ms((t0 + 1000) as i64)
    );
    assert_eq!(lines.count(), 29);
    assert!(!csv.contains("exported"), "notes go to stderr");
    let exported = d.path().join("exported.csv");
    std::fs::write(&exported, &csv).unwrap();
    register(&data, &["--baseline", exported.to_str().unwrap()]);

    // JSONL: the same keys in the same order, typed values, RFC 3339 times.
    let jl = d.path().join("c.jsonl");
    ok(cli(
        &data,
        &[
            "export",
            "captures",
            "--model",
            "vib",
            "--format",
            "jsonl",
            "--device",
            "gw-x",
            "-o",
            jl.to_str().unwrap(),
        ],
    ));
    let body = std::fs::read_to_string(&jl).unwrap();
    let rows: Vec<Row> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 30);
    let r = &rows[4];
    assert_eq!(r.values["rms_y"], Some(f64::from(value(5, 1))));
    assert_eq!(r.values.len(), 16 + 3, "16 features and 3 outputs");
    assert_eq!(
        (r.label.as_deref(), r.prediction.as_deref(), r.score),
        (None, Some("bearing_fault"), Some(0.625))
    );
    assert_eq!(r.ts, outpost_bridge::export::rfc3339_ms((t0 + 5000) as i64));
    assert_eq!(
        (r.device.as_str(), r.model.as_str(), r.version, r.seq),
        ("gw-x", "vib", 1, 5)
    );
    assert_eq!((r.reason.as_str(), r.bundle.len()), ("anomaly", 64));
    let first_line = body.lines().next().unwrap();
    let at = |k: &str| first_line.find(&format!("\"{k}\":")).unwrap();
    assert!(at("rms_x") < at("centroid_hz") && at("centroid_hz") < at("label"));
    assert!(at("label") < at("ts") && at("ts") < at("bundle"));

    // Parquet into a pipe works (the writer never seeks).
    let o = ok(cli(
        &data,
        &["export", "captures", "--model", "vib:1", "-o", "-"],
    ));
    assert!(String::from_utf8_lossy(&o.stderr).contains("exported 30 captures to stdout"));
    assert_eq!(parquet(o.stdout).num_rows(), 30);
}

#[test]
fn unknown_models_fail_and_empty_windows_succeed_with_a_note() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    register(&data, &[]);
    let o = cli(&data, &["export", "captures", "--model", "nope", "-o", "-"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("model \"nope\" is not registered"),
        "{}",
        text(&o)
    );
    let o = cli(
        &data,
        &["export", "captures", "--model", "vib:9", "-o", "-"],
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("has no version 9 (versions registered: 1..=1)"),
        "{}",
        text(&o)
    );
    let o = cli(
        &data,
        &[
            "export", "captures", "--model", "vib", "--format", "xlsx", "-o", "-",
        ],
    );
    assert!(!o.status.success() && text(&o).contains("not parquet, jsonl or csv"));
    let o = cli(
        &data,
        &[
            "export",
            "captures",
            "--model",
            "vib",
            "--since",
            "last tuesday",
            "-o",
            "-",
        ],
    );
    assert!(!o.status.success() && text(&o).contains("cannot read time"));

    let o = ok(cli(
        &data,
        &[
            "export", "captures", "--model", "vib", "--format", "csv", "-o", "-",
        ],
    ));
    let csv = String::from_utf8(o.stdout.clone()).unwrap();
    assert_eq!(csv.lines().count(), 1, "a header and no rows: {csv}");
    assert!(
        csv.starts_with("rms_x,"),
        "named features even with no rows"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("note: no captures of vib in the range"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_drift_alerts_export_command_runs_as_printed() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    register(&data, &[]);
    let t0 = t0();
    captures(&data, t0);
    let window_start = t0 + 10_000;
    let report = Telemetry::Inference(InferenceReport {
        ts_ms: outpost_bridge::db::now_ms(),
        window_s: 1.0,
        model: ModelRef {
            name: "vib".into(),
            version: 1,
        },
        bundle: outpost_protocol::Digest::of(b"ab"),
        requests: 30,
        samples: 30,
        errors: 0,
        rejected: 0,
        latency_sum_us: 0,
        latency_buckets_us: vec![],
        latency_counts: vec![],
        p50_us: None,
        p99_us: None,
        labels: Default::default(),
        drift: Some(DriftSummary {
            drifting: true,
            samples: 30,
            psi_max: 0.9,
            ks_max: 0.5,
            output_shift: None,
            top: vec![],
            reasons: vec!["psi".into()],
            since_ms: window_start,
            window_start_ms: window_start,
        }),
    });
    // Telemetry must be recent for the fleet view: its record time is now.
    let now = outpost_bridge::db::now_ms();
    ingest(
        &data,
        "telemetry",
        now - 1000,
        vec![(1, records::encode(&report))],
    );

    let o = ok(cli(&data, &["drift", "show"]));
    let out = String::from_utf8(o.stdout).unwrap();
    let cmd = out
        .lines()
        .find_map(|l| l.strip_prefix("retrain from: "))
        .unwrap_or_else(|| panic!("no export command in:\n{out}"));
    let words = shell_words(cmd);
    assert_eq!(words[0], "outpost-bridge");
    // Run as printed, from another directory: every option it needs is on the line.
    let elsewhere = tempfile::tempdir().unwrap();
    let o = ok(run(std::process::Command::new(env!(
        "CARGO_BIN_EXE_outpost-bridge"
    ))
    .args(&words[1..])
    .current_dir(elsewhere.path())));
    let file = elsewhere.path().join("vib-v1-captures.parquet");
    let b = parquet(std::fs::read(&file).unwrap_or_else(|e| panic!("{e}: {}", text(&o))));
    assert_eq!(b.num_rows(), 21, "captures 10..=30 of the drifting window");
}

/// Splits a POSIX shell line into words (plain words and single-quoted strings: what
/// the export command uses).
fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in s.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any || !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// The same pandas loader reads the training CSV and all three export formats.
#[test]
fn pandas_reads_the_baseline_and_the_exports_with_the_same_code() {
    let Some(py) = common::python::with("pandas, pyarrow", "pip install pandas pyarrow") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    register(&data, &[]);
    captures(&data, t0());
    let mut files = Vec::new();
    for format in ["csv", "parquet", "jsonl"] {
        let f = d.path().join(format!("export.{format}"));
        ok(cli(
            &data,
            &[
                "export",
                "captures",
                "--model",
                "vib",
                "--format",
                format,
                "-o",
                f.to_str().unwrap(),
            ],
        ));
        files.push(f);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/export_check.py");
    let o = ok(run(std::process::Command::new(py)
        .arg(script)
        .arg(models().join("vibration-anomaly/training-sample.csv"))
        .args(&files)
        .arg("30")));
    assert!(String::from_utf8_lossy(&o.stdout).contains("ok 16 features"));
}
