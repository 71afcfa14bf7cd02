//! Reading device reports and canary behaviour out of the database for the rollout engine.

use std::collections::BTreeMap;

use outpost_protocol::wire::{ReportedState, UpdatePhase};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::machine::{Observation, Report};

/// The device's report about the latest directive the bridge sent it.
pub fn report(c: &Connection, device: &str) -> rusqlite::Result<Option<Report>> {
    let state: Option<String> = c
        .query_row("SELECT state FROM devices WHERE id = ?1", [device], |r| {
            r.get(0)
        })
        .optional()?
        .flatten();
    let Some(s) = state.and_then(|s| serde_json::from_str::<ReportedState>(&s).ok()) else {
        return Ok(None);
    };
    let latest: Option<i64> = c.query_row(
        "SELECT MAX(sequence) FROM directives WHERE device = ?1",
        [device],
        |r| r.get(0),
    )?;
    // Only a report about our latest directive says anything about this deployment.
    if latest.map(|l| l as u64) != s.update.sequence {
        return Ok(Some(Report {
            active: None,
            sequence: s.update.sequence,
            failed: None,
        }));
    }
    let active = s.active.as_ref().map(|a| a.bundle.to_hex());
    Ok(Some(match s.update.phase {
        UpdatePhase::Succeeded => Report {
            active,
            sequence: s.update.sequence,
            failed: None,
        },
        UpdatePhase::Failed | UpdatePhase::RolledBack => Report {
            active,
            sequence: s.update.sequence,
            failed: Some(
                s.last_error
                    .unwrap_or_else(|| format!("{:?}", s.update.phase)),
            ),
        },
        _ => Report {
            active: None,
            sequence: s.update.sequence,
            failed: None,
        },
    }))
}

#[derive(Default)]
struct Agg {
    requests: u64,
    samples: u64,
    errors: u64,
    buckets: Vec<u64>,
    bounds: Vec<Option<u64>>,
    labels: BTreeMap<String, u64>,
}

fn aggregate(
    c: &Connection,
    devices: &[String],
    bundle: &str,
    since_ms: u64,
    until_ms: u64,
) -> rusqlite::Result<Agg> {
    let mut agg = Agg::default();
    let mut q = c.prepare(
        "SELECT body FROM telemetry WHERE device = ?1 AND kind = 'inference' AND ts_ms >= ?2 AND ts_ms < ?3",
    )?;
    for d in devices {
        let rows = q.query_map(params![d, since_ms as i64, until_ms as i64], |r| {
            r.get::<_, String>(0)
        })?;
        for body in rows.flatten() {
            let Ok(v) = serde_json::from_str::<Value>(&body) else {
                continue;
            };
            if v["bundle"].as_str() != Some(bundle) {
                continue;
            }
            agg.requests += v["requests"].as_u64().unwrap_or(0);
            agg.samples += v["samples"].as_u64().unwrap_or(0);
            agg.errors += v["errors"].as_u64().unwrap_or(0);
            if let Some(counts) = v["latency_counts"].as_array() {
                if agg.buckets.len() < counts.len() {
                    agg.buckets.resize(counts.len(), 0);
                    agg.bounds = v["latency_buckets_us"]
                        .as_array()
                        .map(|b| b.iter().map(Value::as_u64).collect())
                        .unwrap_or_default();
                }
                for (i, n) in counts.iter().enumerate() {
                    agg.buckets[i] += n.as_u64().unwrap_or(0);
                }
            }
            if let Some(l) = v["labels"].as_object() {
                for (k, n) in l {
                    *agg.labels.entry(k.clone()).or_default() += n.as_u64().unwrap_or(0);
                }
            }
        }
    }
    Ok(agg)
}

fn p99(agg: &Agg) -> Option<u64> {
    let total: u64 = agg.buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((0.99 * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, n) in agg.buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(agg.bounds.get(i).copied().flatten().unwrap_or(u64::MAX));
        }
    }
    None
}

/// Total-variation distance between two label count maps.
pub fn tvd(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> Option<f64> {
    let (na, nb) = (a.values().sum::<u64>(), b.values().sum::<u64>());
    if na == 0 || nb == 0 {
        return None;
    }
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    Some(
        keys.into_iter()
            .map(|k| {
                (*a.get(k).unwrap_or(&0) as f64 / na as f64
                    - *b.get(k).unwrap_or(&0) as f64 / nb as f64)
                    .abs()
            })
            .sum::<f64>()
            / 2.0,
    )
}

/// Canary behaviour since `since_ms`: the new model's error rate, p99 and label mix
/// against the previous model's label mix on the same devices (from before `since_ms`).
pub fn canary(
    c: &Connection,
    devices: &[String],
    target: &str,
    previous: &[(String, String)],
    since_ms: u64,
    now_ms: u64,
) -> rusqlite::Result<Observation> {
    let new = aggregate(c, devices, target, since_ms, now_ms + 1)?;
    let mut old_labels: BTreeMap<String, u64> = BTreeMap::new();
    for (dev, prev) in previous {
        let a = aggregate(c, std::slice::from_ref(dev), prev, 0, since_ms)?;
        for (k, n) in a.labels {
            *old_labels.entry(k).or_default() += n;
        }
    }
    Ok(Observation {
        samples: new.samples,
        error_rate: if new.requests == 0 {
            0.0
        } else {
            new.errors as f64 / new.requests as f64
        },
        p99_us: p99(&new),
        output_shift: tvd(&new.labels, &old_labels),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tvd_of_label_mixes() {
        let m = |v: &[(&str, u64)]| {
            v.iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(tvd(&m(&[("a", 10)]), &m(&[("a", 3)])), Some(0.0));
        assert_eq!(tvd(&m(&[("a", 10)]), &m(&[("b", 3)])), Some(1.0));
        assert_eq!(tvd(&m(&[("a", 1), ("b", 1)]), &m(&[("a", 1)])), Some(0.5));
        assert_eq!(tvd(&m(&[]), &m(&[("a", 1)])), None);
    }
}
