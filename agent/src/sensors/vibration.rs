//! The vibration signal model: the same model `models/vibration.py` uses to train the
//! classifier, so the simulated machine produces what the model was trained on.
//!
//! Per window of [`WINDOW`] samples (parameters redrawn every window):
//!
//! ```text
//! f_rot = 25 Hz · (1 + 0.08·drift) · U(0.98, 1.02)
//! x = A1 sin(ω t + p1) + A2 sin(2ω t + p2) + n_x + 0.05·drift
//! y = A1 sin(ω t + p1 + π/2) + A2 sin(2ω t + p2 + π/2) + n_y
//! z = 1 + 0.2·A1 sin(ω t + p1) + n_z           n ~ N(0, σ²), σ = 0.015 (1 + 2·drift)
//! normal:     A1 ~ U(0.02, 0.06), A2 ~ U(0.005, 0.02)
//! imbalance:  A1 ~ U(0.25, 0.60)
//! bearing:    normal + impacts at 3.58·f_rot: B e^{-(t-t_k)/2ms} sin(2π·520 (t-t_k)),
//!             on x and 0.6× on y, B ~ U(0.3, 0.8)
//! ```

use std::f64::consts::PI;
use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{SAMPLE_RATE_HZ, WINDOW};

/// What the simulated machine is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MachineMode {
    /// Healthy.
    Normal,
    /// Rotor imbalance: strong 1× component.
    Imbalance,
    /// Outer-race bearing defect: periodic impacts exciting a 520 Hz resonance.
    BearingFault,
}

impl MachineMode {
    /// The classifier label for this mode.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Imbalance => "imbalance",
            Self::BearingFault => "bearing_fault",
        }
    }
}

impl FromStr for MachineMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "normal" => Ok(Self::Normal),
            "imbalance" => Ok(Self::Imbalance),
            "bearing_fault" => Ok(Self::BearingFault),
            _ => Err(format!(
                "{s:?} is not one of normal, imbalance, bearing_fault"
            )),
        }
    }
}

/// Knobs the simulator turns while a device runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Controls {
    /// Machine mode.
    pub mode: MachineMode,
    /// Drift, 0..=1: more noise, faster shaft, DC offset on x.
    pub drift: f64,
}

struct WindowParams {
    w1: f64,
    a1: f64,
    a2: f64,
    p1: f64,
    p2: f64,
    sigma: f64,
    drift: f64,
    impacts: Vec<(f64, f64)>, // (t_k, B)
}

/// A seeded, endless stream of 3-axis samples in g.
pub struct VibrationSource {
    rng: ChaCha8Rng,
    n: usize,
    params: Option<WindowParams>,
    spare_normal: Option<f64>,
}

impl VibrationSource {
    /// A stream seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            n: 0,
            params: None,
            spare_normal: None,
        }
    }

    fn normal(&mut self) -> f64 {
        // Box–Muller, keeping the second value.
        if let Some(v) = self.spare_normal.take() {
            return v;
        }
        let u1: f64 = self.rng.random_range(f64::MIN_POSITIVE..1.0);
        let u2: f64 = self.rng.random();
        let r = (-2.0 * u1.ln()).sqrt();
        self.spare_normal = Some(r * (2.0 * PI * u2).sin());
        r * (2.0 * PI * u2).cos()
    }

    fn draw(&mut self, c: Controls) -> WindowParams {
        let rng = &mut self.rng;
        let f_rot = 25.0 * (1.0 + 0.08 * c.drift) * rng.random_range(0.98..1.02);
        let a1 = match c.mode {
            MachineMode::Imbalance => rng.random_range(0.25..0.60),
            _ => rng.random_range(0.02..0.06),
        };
        let a2 = rng.random_range(0.005..0.02);
        let p1 = rng.random_range(0.0..2.0 * PI);
        let p2 = rng.random_range(0.0..2.0 * PI);
        let mut impacts = Vec::new();
        if c.mode == MachineMode::BearingFault {
            let f_imp = 3.58 * f_rot;
            let b = rng.random_range(0.3..0.8);
            let mut tk = rng.random_range(0.0..1.0 / f_imp);
            let t_last = (WINDOW - 1) as f64 / SAMPLE_RATE_HZ;
            while tk < t_last {
                impacts.push((tk, b));
                tk += 1.0 / f_imp;
            }
        }
        WindowParams {
            w1: 2.0 * PI * f_rot,
            a1,
            a2,
            p1,
            p2,
            sigma: 0.015 * (1.0 + 2.0 * c.drift),
            drift: c.drift,
            impacts,
        }
    }

    /// The next sample (x, y, z) in g; window parameters follow `controls` from the next
    /// window boundary on.
    pub fn next_sample(&mut self, controls: Controls) -> [f64; 3] {
        if self.n.is_multiple_of(WINDOW) || self.params.is_none() {
            self.params = Some(self.draw(controls));
        }
        let t = (self.n % WINDOW) as f64 / SAMPLE_RATE_HZ;
        self.n += 1;
        let (nx, ny, nz) = (self.normal(), self.normal(), self.normal());
        let p = self.params.as_ref().expect("drawn above");
        let ph = p.w1 * t;
        let mut x = p.a1 * (ph + p.p1).sin() + p.a2 * (2.0 * ph + p.p2).sin() + 0.05 * p.drift;
        let mut y = p.a1 * (ph + p.p1 + PI / 2.0).sin() + p.a2 * (2.0 * ph + p.p2 + PI / 2.0).sin();
        let z = 1.0 + 0.2 * p.a1 * (ph + p.p1).sin();
        // Impacts decay with a 2 ms time constant; older than 50 ms contribute < 1e-10 g.
        let burst: f64 = p
            .impacts
            .iter()
            .filter(|(tk, _)| t >= *tk && t - tk < 0.05)
            .map(|(tk, b)| b * (-(t - tk) / 0.002).exp() * (2.0 * PI * 520.0 * (t - tk)).sin())
            .sum();
        x += burst;
        y += 0.6 * burst;
        [x + p.sigma * nx, y + p.sigma * ny, z + p.sigma * nz]
    }
}
