//! `bench-scale` on a tiny fleet: the benchmark still runs end to end and its report adds
//! up (the figures themselves are measured in `docs/benchmarks.md`, not asserted here).

use outpost_sim::bench::{self, ScaleOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_fleet_converges_and_the_report_adds_up() {
    let r = bench::run(ScaleOptions {
        devices: 3,
        bundle_mb: 0.3,
        broker: None,
    })
    .await
    .unwrap();
    assert_eq!((r.devices, r.converged), (3, 3), "{r:?}");
    assert!(r.bundle_bytes >= 300_000, "{r:?}");
    // Every device needs the whole bundle, read from storage (at least once: concurrent
    // first requests may each miss the cache).
    assert!(r.bytes_per_device_ratio >= 1.0, "{r:?}");
    assert!((1..=3).contains(&r.disk_reads), "{r:?}");
    assert!(r.converge_secs > 0.0 && r.bridge_cpu_secs >= 0.0, "{r:?}");
}
