//! Per-phase accounting for the demo: what each phase produced on the devices, what
//! reached the bridge, what was lost (must be zero), and the bytes on the wire.
//!
//! At every phase boundary the next sequence number of each device's store is noted, so a
//! phase owns a sequence range per device. After the final drain, a phase's records are
//! `produced = Σ range sizes`, `received` = those (device, seq) held by the bridge, and
//! `lost = produced − received − evicted` (evicted records are counted by the store, in
//! ranges, and shown separately). Nothing is estimated.

use std::collections::BTreeMap;
use std::time::Duration;

use outpost_bridge::server::Bridge;

use crate::fleet::SimFleet;

/// A phase's boundary snapshot.
#[derive(Debug, Clone)]
pub struct Mark {
    /// Next sequence per device.
    pub next_seq: BTreeMap<String, u64>,
    /// Proxy bytes (both ways) per device.
    pub wire: u64,
}

/// One finished phase.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Name.
    pub name: String,
    /// Duration.
    pub took: Duration,
    /// Devices on the expected model at the end.
    pub converged: usize,
    /// What was expected.
    pub expect: String,
    /// Start and end marks.
    pub start: Mark,
    /// End mark.
    pub end: Mark,
}

/// Final figures of a phase.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    /// Phase.
    pub phase: String,
    /// Seconds.
    pub secs: u64,
    /// Converged devices.
    pub converged: usize,
    /// Fleet size.
    pub devices: usize,
    /// Records produced.
    pub produced: u64,
    /// Records at the bridge.
    pub received: u64,
    /// Records evicted by a full store.
    pub evicted: u64,
    /// Records lost.
    pub lost: u64,
    /// Bytes through the devices' links.
    pub wire_bytes: u64,
}

/// Snapshot now.
pub fn mark(fleet: &SimFleet) -> Mark {
    let mut next_seq = BTreeMap::new();
    let mut wire = 0;
    for d in &fleet.devices {
        if let Some(s) = &d.agent.store {
            next_seq.insert(d.id.clone(), outpost_agent::sync::lock(s).next_seq());
        }
        wire += d.proxy.stats.up.load(std::sync::atomic::Ordering::Relaxed)
            + d.proxy
                .stats
                .down
                .load(std::sync::atomic::Ordering::Relaxed);
    }
    Mark { next_seq, wire }
}

/// Computes the rows once every phase's records are drained.
pub fn rows(phases: &[Phase], bridge: &Bridge, fleet: &SimFleet) -> Vec<Row> {
    let evicted: BTreeMap<String, Vec<(u64, u64)>> = fleet
        .devices
        .iter()
        .filter_map(|d| {
            let s = d.agent.store.as_ref()?;
            let r = outpost_agent::sync::lock(s).evicted_ranges().ok()?;
            Some((
                d.id.clone(),
                r.into_iter().map(|(_, a, z, _)| (a, z)).collect(),
            ))
        })
        .collect();
    let c = bridge.db.lock();
    let mut q = c
        .prepare("SELECT seq FROM records WHERE device = ?1 AND seq >= ?2 AND seq < ?3")
        .expect("static query");
    phases
        .iter()
        .map(|p| {
            let (mut produced, mut received, mut ev) = (0, 0, 0);
            for (dev, start) in &p.start.next_seq {
                let end = p.end.next_seq.get(dev).copied().unwrap_or(*start);
                produced += end - start;
                let held: std::collections::BTreeSet<u64> = q
                    .query_map(rusqlite::params![dev, *start as i64, end as i64], |r| {
                        r.get::<_, i64>(0)
                    })
                    .map(|rows| rows.filter_map(Result::ok).map(|v| v as u64).collect())
                    .unwrap_or_default();
                received += held.len() as u64;
                let ranges = evicted.get(dev).cloned().unwrap_or_default();
                ev += (*start..end)
                    .filter(|s| {
                        !held.contains(s) && ranges.iter().any(|(a, z)| (a..=z).contains(&s))
                    })
                    .count() as u64;
            }
            Row {
                phase: p.name.clone(),
                secs: p.took.as_secs(),
                converged: p.converged,
                devices: fleet.devices.len(),
                produced,
                received,
                evicted: ev,
                lost: produced - received - ev,
                wire_bytes: p.end.wire - p.start.wire,
            }
        })
        .collect()
}

fn mb(b: u64) -> String {
    if b >= 10 << 20 {
        format!("{:.0} MB", b as f64 / 1e6)
    } else {
        format!("{:.2} MB", b as f64 / 1e6)
    }
}

/// The summary table.
pub fn table(rows: &[Row]) -> String {
    let mut out = vec![format!(
        "{:<26} {:>5} {:>9} {:>9} {:>9} {:>8} {:>5} {:>10}",
        "PHASE", "SECS", "CONVERGED", "PRODUCED", "RECEIVED", "EVICTED", "LOST", "WIRE"
    )];
    for r in rows {
        out.push(format!(
            "{:<26} {:>5} {:>9} {:>9} {:>9} {:>8} {:>5} {:>10}",
            r.phase,
            r.secs,
            format!("{}/{}", r.converged, r.devices),
            r.produced,
            r.received,
            r.evicted,
            r.lost,
            mb(r.wire_bytes)
        ));
    }
    let t = |f: fn(&Row) -> u64| rows.iter().map(f).sum::<u64>();
    out.push(format!(
        "{:<26} {:>5} {:>9} {:>9} {:>9} {:>8} {:>5} {:>10}",
        "TOTAL",
        t(|r| r.secs),
        "",
        t(|r| r.produced),
        t(|r| r.received),
        t(|r| r.evicted),
        t(|r| r.lost),
        mb(t(|r| r.wire_bytes))
    ));
    out.join("\n")
}
