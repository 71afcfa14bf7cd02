//! Reading device reports and canary behaviour out of the database for the rollout engine.

use std::collections::BTreeMap;

use outpost_protocol::wire::{ModelState, ReportedState, UpdatePhase};
use rusqlite::{Connection, params};

use outpost_protocol::records::{self, Telemetry};

use super::machine::{Observation, Report};

/// The device's report about model `model`, for a deployment that wants it to run
/// `expect`: whether it has accepted the bridge's latest directive, what it runs, whether
/// its update of the model is finished, and a failure (an update of `expect` that failed
/// or was rolled back, or the latest directive refused by the device) with the reason.
pub fn report(
    c: &Connection,
    device: &str,
    model: &str,
    expect: &str,
) -> rusqlite::Result<Option<Report>> {
    let Some(s) = super::desired::reported(c, device)? else {
        return Ok(None);
    };
    let latest: Option<i64> = c.query_row(
        "SELECT MAX(sequence) FROM directives WHERE device = ?1",
        [device],
        |r| r.get(0),
    )?;
    Ok(Some(judge(&s, latest.map(|l| l as u64), model, expect)))
}

/// [`report`] on a state already read: `latest` is the sequence of the newest directive
/// the bridge issued to the device.
///
/// A refused directive carries the device's whole set, so it fails only the deployments
/// it would have changed: a deployment whose model already runs `expect`, or is being
/// moved to it under a directive the device accepted, goes on whatever else in the set
/// the device refused (the device keeps what it runs and finishes what it started).
/// Failing it too would roll back a deployment that reached its target because a later
/// deployment of another model asked for too much.
pub fn judge(s: &ReportedState, latest: Option<u64>, model: &str, expect: &str) -> Report {
    let m = s.model(model);
    let active = m.and_then(|m| m.active.as_ref()).map(|a| a.bundle.to_hex());
    let settled = m.is_none_or(|m| {
        matches!(
            m.phase,
            UpdatePhase::Idle
                | UpdatePhase::Succeeded
                | UpdatePhase::Failed
                | UpdatePhase::RolledBack
        )
    });
    let toward = |m: &ModelState| {
        m.target
            .as_ref()
            .is_some_and(|t| t.bundle.to_hex() == expect)
    };
    let failed = m.and_then(|m| {
        (toward(m) && matches!(m.phase, UpdatePhase::Failed | UpdatePhase::RolledBack)).then(|| {
            m.last_error
                .clone()
                .unwrap_or_else(|| format!("{:?}", m.phase))
        })
    });
    if let Some(rej) = &s.directive_rejected
        && rej.sequence.is_some()
        && rej.sequence == latest
    {
        // Already there, or on the way under a directive the device accepted.
        let unaffected = (settled && active.as_deref() == Some(expect)) || m.is_some_and(toward);
        let refused = || format!("the device refused the directive: {}", rej.reason);
        return Report {
            current: true,
            active,
            settled,
            failed: failed.or_else(|| (!unaffected).then(refused)),
        };
    }
    let current = latest.is_some() && s.directive_sequence >= latest;
    Report {
        current,
        active,
        settled,
        failed,
    }
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
            let Ok(Telemetry::Inference(r)) = records::decode::<Telemetry>(body.as_bytes()) else {
                continue;
            };
            if r.bundle.to_hex() != bundle {
                continue;
            }
            agg.requests += r.requests;
            agg.samples += r.samples;
            agg.errors += r.errors;
            if agg.buckets.len() < r.latency_counts.len() {
                agg.buckets.resize(r.latency_counts.len(), 0);
                agg.bounds = r.latency_buckets_us.clone();
            }
            for (i, n) in r.latency_counts.iter().enumerate() {
                agg.buckets[i] += n;
            }
            for (k, n) in r.labels {
                *agg.labels.entry(k).or_default() += n;
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

/// Whether bundle `digest` of `model` is known bad: a deployment of it was rolled back
/// (by a trip or an operator) or paused by a tripped gate.
fn known_bad(c: &Connection, model: &str, digest: &str) -> rusqlite::Result<bool> {
    let n: i64 = c.query_row(
        "SELECT COUNT(*) FROM deployments WHERE model = ?1 AND digest = ?2
         AND (state IN ('rolled_back', 'rolling_back')
              OR (state = 'paused' AND json_extract(machine, '$.state.reason') LIKE '%gate%'))",
        params![model, digest],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

/// The version a canary is compared against on a device that ran `previous`: that
/// version, unless it is known bad — then the last *good* one (the newest bundle of the
/// model whose deployment succeeded and that is not known bad).
pub fn baseline(c: &Connection, model: &str, previous: &str) -> rusqlite::Result<Option<String>> {
    if !known_bad(c, model, previous)? {
        return Ok(Some(previous.to_owned()));
    }
    let mut q = c.prepare(
        "SELECT digest FROM deployments WHERE model = ?1 AND state = 'succeeded' AND digest != ?2
         ORDER BY created_at DESC",
    )?;
    let rows: Vec<String> = q
        .query_map(params![model, previous], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for d in rows {
        if !known_bad(c, model, &d)? {
            return Ok(Some(d));
        }
    }
    Ok(None)
}

/// Canary behaviour since `since_ms`: the new model's error rate, p99 and label mix
/// against the label mix of the baseline version ([`baseline`]: the previous model, or
/// the last good one if the previous is known bad) — on the same devices from before
/// `since_ms`, or fleet-wide if those devices never ran the baseline.
pub fn canary(
    c: &Connection,
    model: &str,
    devices: &[String],
    target: &str,
    previous: &[(String, String)],
    since_ms: u64,
    now_ms: u64,
) -> rusqlite::Result<Observation> {
    let new = aggregate(c, devices, target, since_ms, now_ms + 1)?;
    let mut old_labels: BTreeMap<String, u64> = BTreeMap::new();
    for (dev, prev) in previous {
        let Some(base) = baseline(c, model, prev)? else {
            continue;
        };
        let mut a = aggregate(c, std::slice::from_ref(dev), &base, 0, since_ms)?;
        if a.labels.is_empty() && &base != prev {
            let all: Vec<String> = {
                let mut q = c.prepare("SELECT id FROM devices")?;
                let rows = q.query_map([], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            a = aggregate(c, &all, &base, 0, since_ms)?;
        }
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

    use outpost_protocol::Digest;
    use outpost_protocol::manifest::ModelRef;
    use outpost_protocol::wire::{DirectiveRejection, Health, InstalledModel};

    fn installed(name: &str, b: u8) -> InstalledModel {
        InstalledModel {
            bundle: Digest([b; 32]),
            model: ModelRef {
                name: name.into(),
                version: u32::from(b),
            },
        }
    }

    fn slot(name: &str, active: u8, phase: UpdatePhase) -> ModelState {
        ModelState {
            name: name.into(),
            phase,
            active: Some(installed(name, active)),
            previous: None,
            target: Some(installed(name, active)),
            deployment_id: None,
            sequence: Some(1),
            chunks_done: 0,
            chunks_total: 0,
            health: Health::Ok,
            last_error: None,
        }
    }

    /// Device state after refusing directive 2 (the set `vib` + `cnn`, over the memory
    /// budget) while running `vib` at bundle 1.
    fn refused_second_set(vib_phase: UpdatePhase) -> ReportedState {
        ReportedState {
            device_id: "gw".into(),
            agent_version: "0".into(),
            at: 0,
            directive_sequence: Some(1),
            directive_rejected: Some(DirectiveRejection {
                sequence: Some(2),
                kind: "budget".into(),
                reason: "over the 33554432 byte budget".into(),
                now: 0,
                issued_at: None,
                expires_at: None,
            }),
            models: vec![slot("vib", 1, vib_phase)],
            health: Health::Ok,
            last_error: None,
            budget: Default::default(),
            tags: Default::default(),
            trusted_keys: Vec::new(),
        }
    }

    #[test]
    fn a_refused_set_fails_the_deployment_that_changed_it_not_one_already_met() {
        let s = refused_second_set(UpdatePhase::Succeeded);
        let vib = Digest([1; 32]).to_hex();
        let cnn = Digest([9; 32]).to_hex();
        // vib's deployment reached its target: the refusal is not about it.
        let r = judge(&s, Some(2), "vib", &vib);
        assert!(r.current && r.settled && r.failed.is_none(), "{r:?}");
        assert_eq!(r.active.as_deref(), Some(vib.as_str()));
        // cnn's deployment asked for what was refused.
        let r = judge(&s, Some(2), "cnn", &cnn);
        assert!(
            r.failed.as_deref().unwrap().contains("byte budget"),
            "{r:?}"
        );
        // vib still on its way (probation) under the accepted directive: it goes on, and
        // its deployment waits for it to settle.
        let mut s = refused_second_set(UpdatePhase::Probation);
        let r = judge(&s, Some(2), "vib", &vib);
        assert!(r.current && !r.settled && r.failed.is_none(), "{r:?}");
        // ... and fails if its own update fails.
        s.models[0].phase = UpdatePhase::RolledBack;
        s.models[0].last_error = Some("self-test failed".into());
        let r = judge(&s, Some(2), "vib", &vib);
        assert_eq!(r.failed.as_deref(), Some("self-test failed"));
        // A deployment moving vib to another bundle was what the refused set asked for.
        let s = refused_second_set(UpdatePhase::Succeeded);
        let vib2 = Digest([2; 32]).to_hex();
        assert!(judge(&s, Some(2), "vib", &vib2).failed.is_some());
        // A refusal of an older directive says nothing about the newest one.
        let s = refused_second_set(UpdatePhase::Succeeded);
        let r = judge(&s, Some(3), "cnn", &cnn);
        assert!(!r.current && r.failed.is_none(), "{r:?}");
    }

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
