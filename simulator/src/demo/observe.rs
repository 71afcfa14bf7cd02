//! What the demo checks on the simulated gateways: which bundle each runs, whether the
//! ridge model answers, and polling until a condition holds.

use std::time::{Duration, Instant};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::fleet::SimFleet;

use super::{RIDGE, VIBRATION};

/// Gateways whose vibration model is the bundle `digest`.
pub(super) fn on_model(fleet: &SimFleet, digest: &str) -> usize {
    on_named(fleet, VIBRATION, digest)
}

/// Gateways whose model `name` is the bundle `digest`.
pub(super) fn on_named(fleet: &SimFleet, name: &str, digest: &str) -> usize {
    fleet
        .devices
        .iter()
        .filter(|d| {
            d.agent
                .models
                .get(name)
                .is_some_and(|m| m.info.bundle.to_hex() == digest)
        })
        .count()
}

/// Gateways whose ridge model answers a regression request (ten standardised features, as
/// the diabetes dataset it was trained on; seeded).
pub(super) fn ridge_answers(fleet: &SimFleet, rng: &mut ChaCha8Rng) -> usize {
    fleet
        .devices
        .iter()
        .filter(|d| {
            let row: Vec<f64> = (0..10).map(|_| rng.random_range(-0.1..0.1)).collect();
            d.agent
                .models
                .get(RIDGE)
                .is_some_and(|m| m.score_rows(&[row]).is_ok())
        })
        .count()
}

pub(super) async fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    f()
}
