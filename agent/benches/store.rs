//! Store ingest rate as a ratio of raw SQLite inserts (same batch size, same run, same
//! durability), and uplink bytes on the wire as a ratio of the raw JSON.
//!
//! `cargo bench -p outpost-agent --bench store`

use std::time::Instant;

use outpost_agent::store::{Durability, NewRecord, Store, StoreConfig};
use outpost_protocol::uplink::{Record, UplinkBatch};
use rusqlite::{Connection, params};

const N: usize = 100_000;

fn bodies() -> Vec<(&'static str, Vec<u8>)> {
    // Realistic bodies: telemetry reports and captures as the agent writes them.
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % 10_000) as f64 / 10_000.0
    };
    (0..N)
        .map(|i| {
            if i % 4 == 0 {
                let feats: Vec<f32> = (0..16).map(|_| rnd() as f32).collect();
                let body = serde_json::json!({
                    "ts_ms": 1_795_000_000_000u64 + i as u64 * 150, "model": {"name": "vibration-anomaly", "version": 3},
                    "bundle": "e788cf90df574808e73e89fc1a4f559f4f154996e0026906f4bdda75f456a260", "reason": "sampled",
                    "features": feats, "input": feats, "output": [0.98, 0.01, 0.01], "label": "normal", "confidence": 0.98
                });
                ("captures", serde_json::to_vec(&body).unwrap())
            } else {
                let body = serde_json::json!({
                    "kind": "inference", "ts_ms": 1_795_000_000_000u64 + i as u64 * 1000, "window_s": 1.0,
                    "model": {"name": "vibration-anomaly", "version": 3}, "requests": 7 + i % 3, "samples": 7 + i % 3,
                    "errors": 0, "rejected": 0, "latency_sum_us": 700 + (i % 50) as u64,
                    "latency_counts": [0, 6, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], "p50_us": 100, "p99_us": 200,
                    "labels": {"normal": 7}
                });
                ("telemetry", serde_json::to_vec(&body).unwrap())
            }
        })
        .collect()
}

fn raw_sqlite(dir: &std::path::Path, recs: &[(&str, Vec<u8>)], batch: usize, full: bool) -> f64 {
    let c = Connection::open(dir.join("raw.db")).unwrap();
    c.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {}; CREATE TABLE r (seq INTEGER PRIMARY KEY, stream TEXT, ts INTEGER, body BLOB);",
        if full { "FULL" } else { "NORMAL" }
    ))
    .unwrap();
    let t = Instant::now();
    let mut seq = 0i64;
    for chunk in recs.chunks(batch) {
        let tx = c.unchecked_transaction().unwrap();
        {
            let mut q = tx
                .prepare_cached("INSERT INTO r (seq, stream, ts, body) VALUES (?1, ?2, ?3, ?4)")
                .unwrap();
            for (s, b) in chunk {
                seq += 1;
                q.execute(params![seq, s, seq, b]).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    recs.len() as f64 / t.elapsed().as_secs_f64()
}

fn ours(dir: &std::path::Path, recs: &[(&str, Vec<u8>)], batch: usize, full: bool) -> f64 {
    let cfg = StoreConfig {
        max_bytes: 4 << 30,
        durability: if full {
            Durability::Full
        } else {
            Durability::Normal
        },
        ..StoreConfig::default()
    };
    let (mut s, _) = Store::open(dir, cfg).unwrap();
    let t = Instant::now();
    for chunk in recs.chunks(batch) {
        let nr: Vec<NewRecord<'_>> = chunk
            .iter()
            .map(|(st, b)| NewRecord {
                stream: st,
                ts_ms: 1,
                body: b,
            })
            .collect();
        s.append(&nr).unwrap();
    }
    recs.len() as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let recs = bodies();
    println!(
        "store ingest, {N} records (~{} bytes each), rows/s",
        recs.iter().map(|r| r.1.len()).sum::<usize>() / N
    );
    println!(
        "{:<9} {:>6} {:>12} {:>12} {:>7}",
        "sync", "batch", "raw sqlite", "outpost", "ratio"
    );
    for full in [false, true] {
        for batch in [1usize, 100, 1000] {
            // FULL with batch 1 is ~500 rows/s: measure a slice.
            let n = if full && batch == 1 { 2_000 } else { N };
            let d1 = tempfile::tempdir().unwrap();
            let d2 = tempfile::tempdir().unwrap();
            let raw = raw_sqlite(d1.path(), &recs[..n], batch, full);
            let us = ours(d2.path(), &recs[..n], batch, full);
            println!(
                "{:<9} {:>6} {:>12.0} {:>12.0} {:>7.2}",
                if full { "FULL" } else { "NORMAL" },
                batch,
                raw,
                us,
                us / raw
            );
        }
    }

    println!("\nbytes on the wire vs raw JSON (batches of 500 records, zstd level 3)");
    for stream in ["telemetry", "captures"] {
        let sel: Vec<&(&str, Vec<u8>)> =
            recs.iter().filter(|r| r.0 == stream).take(20_000).collect();
        let (mut raw, mut wire) = (0usize, 0usize);
        for (i, chunk) in sel.chunks(500).enumerate() {
            let b = UplinkBatch {
                stream: stream.into(),
                batch_id: i as u64,
                records: chunk
                    .iter()
                    .enumerate()
                    .map(|(j, r)| Record {
                        seq: (i * 500 + j + 1) as u64,
                        ts_ms: 1,
                        body: r.1.clone(),
                    })
                    .collect(),
            };
            raw += chunk.iter().map(|r| r.1.len() + 1).sum::<usize>(); // JSON lines
            wire += b.encode(3).unwrap().len();
        }
        println!(
            "{stream:<10} raw JSON {raw:>10} B  wire {wire:>9} B  ratio {:.3}",
            wire as f64 / raw as f64
        );
    }
}
