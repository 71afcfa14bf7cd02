//! The sensor pipeline: sample the accelerometer, cut windows, compute features, run the
//! active model, hand results to subscribers (the store, the drift monitor).
//!
//! It runs on its own OS thread: I2C is blocking and inference is CPU work. A window is
//! taken every `interval` (a duty cycle: 0.64 s of samples, then idle), so a gateway's
//! CPU is not pinned by one sensor. Sensor errors are logged, counted and retried with a
//! pause; they never end the thread. Subscribers receive results through bounded
//! channels with blocking sends: a slow store slows the pipeline down (back-pressure)
//! instead of results being dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use embedded_hal::i2c::I2c;
use outpost_protocol::contract::Interpretation;
use outpost_protocol::wire::InstalledModel;
use tokio::sync::{mpsc, watch};

use crate::models::ModelHandle;
use crate::recorder::{Served, Source};
use crate::sensors::WINDOW;
use crate::sensors::adxl345::{Adxl345, DataRate};
use crate::sensors::features::{self, FEATURE_NAMES};
use crate::sensors::sim::{SimAdxl345, SimHandle};
use crate::sensors::{SensorConfig, SensorKind};

/// One classified window.
#[derive(Debug, Clone)]
pub struct PipelineResult {
    /// Window end, unix ms.
    pub ts_ms: u64,
    /// The 16 features.
    pub features: Vec<f32>,
    /// The model's answer with its tensors (None if no model or the model failed).
    pub served: Option<Arc<Served>>,
    /// Inference latency, µs.
    pub latency_us: u64,
    /// Why there is no answer.
    pub error: Option<String>,
}

impl PipelineResult {
    /// The task's reading of the window, if the model answered.
    pub fn interpretation(&self) -> Option<&Interpretation> {
        self.served.as_ref()?.scored.interpretations.first()
    }

    /// Which model answered.
    pub fn model(&self) -> Option<&InstalledModel> {
        self.served.as_ref().map(|s| &s.model.info)
    }
}

/// Counters.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Windows processed.
    pub windows: AtomicU64,
    /// Sensor read failures.
    pub sensor_errors: AtomicU64,
    /// Windows whose inference failed.
    pub inference_errors: AtomicU64,
    /// Windows with no active model.
    pub no_model: AtomicU64,
}

/// A running pipeline.
pub struct PipelineHandle {
    /// Counters.
    pub stats: Arc<PipelineStats>,
    /// Control of the simulated sensor, when simulated.
    pub sim: Option<SimHandle>,
    thread: std::thread::JoinHandle<()>,
}

impl PipelineHandle {
    /// Waits for the thread to end (after shutdown).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// Starts the pipeline for `cfg`; `None` when the sensor kind is `none`.
pub fn spawn(
    cfg: &SensorConfig,
    models: ModelHandle,
    subscribers: Vec<mpsc::Sender<Arc<PipelineResult>>>,
    shutdown: watch::Receiver<bool>,
) -> Option<PipelineHandle> {
    let stats = Arc::new(PipelineStats::default());
    let interval = cfg.interval;
    let bound = cfg.model.clone();
    let (sim, thread) = match cfg.kind.clone() {
        SensorKind::None => return None,
        SensorKind::Simulated { seed, mode, drift } => {
            let dev = SimAdxl345::new(0x53, seed, mode, drift);
            let h = dev.handle();
            let st = stats.clone();
            let t = std::thread::Builder::new()
                .name("outpost-pipeline".into())
                .spawn(move || {
                    run(
                        move || Ok(dev.clone()),
                        0x53,
                        Schedule { interval, bound },
                        models,
                        subscribers,
                        st,
                        shutdown,
                    )
                })
                .ok()?;
            (Some(h), t)
        }
        #[cfg(target_os = "linux")]
        SensorKind::Adxl345 { bus, address } => {
            let st = stats.clone();
            let t = std::thread::Builder::new()
                .name("outpost-pipeline".into())
                .spawn(move || {
                    let open = move || {
                        linux_embedded_hal::I2cdev::new(&bus)
                            .map_err(|e| format!("{}: {e}", bus.display()))
                    };
                    let schedule = Schedule { interval, bound };
                    run(open, address, schedule, models, subscribers, st, shutdown)
                })
                .ok()?;
            (None, t)
        }
        #[cfg(not(target_os = "linux"))]
        SensorKind::Adxl345 { .. } => {
            tracing::error!("the adxl345 sensor needs Linux /dev/i2c; pipeline disabled");
            return None;
        }
    };
    Some(PipelineHandle { stats, sim, thread })
}

fn stopping(s: &watch::Receiver<bool>) -> bool {
    *s.borrow()
}

/// Sleeps up to `d`, waking early on shutdown; returns whether shutting down.
fn nap(d: Duration, s: &watch::Receiver<bool>) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stopping(s) {
            return true;
        }
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
    }
    stopping(s)
}

/// When to take windows and which model they feed.
struct Schedule {
    interval: Duration,
    /// The model the pipeline feeds (None: the only active model).
    bound: Option<String>,
}

fn run<I, F>(
    mut open: F,
    address: u8,
    schedule: Schedule,
    models: ModelHandle,
    subscribers: Vec<mpsc::Sender<Arc<PipelineResult>>>,
    stats: Arc<PipelineStats>,
    shutdown: watch::Receiver<bool>,
) where
    I: I2c,
    F: FnMut() -> Result<I, String>,
{
    let retry = Duration::from_secs(2);
    'outer: while !stopping(&shutdown) {
        let mut sensor =
            match open().and_then(|bus| Adxl345::new(bus, address).map_err(|e| e.to_string())) {
                Ok(mut s) => match s.configure(DataRate::Hz1600) {
                    Ok(()) => s,
                    Err(e) => {
                        stats.sensor_errors.fetch_add(1, Relaxed);
                        tracing::warn!(error = %e, "sensor configuration failed; retrying");
                        if nap(retry, &shutdown) {
                            break;
                        }
                        continue;
                    }
                },
                Err(e) => {
                    stats.sensor_errors.fetch_add(1, Relaxed);
                    tracing::warn!(error = %e, "sensor unavailable; retrying");
                    if nap(retry, &shutdown) {
                        break;
                    }
                    continue;
                }
            };
        let mut next = Instant::now();
        loop {
            if nap(next.saturating_duration_since(Instant::now()), &shutdown) {
                break 'outer;
            }
            next += schedule.interval;
            let window = match read_window(&mut sensor, &shutdown) {
                Ok(Some(w)) => w,
                Ok(None) => break 'outer,
                Err(e) => {
                    stats.sensor_errors.fetch_add(1, Relaxed);
                    tracing::warn!(error = %e, "sensor read failed; reopening");
                    if nap(retry, &shutdown) {
                        break 'outer;
                    }
                    continue 'outer;
                }
            };
            let result = classify(&window, &models, schedule.bound.as_deref(), &stats);
            models.touch();
            let result = Arc::new(result);
            for s in &subscribers {
                // Blocking send: back-pressure rather than loss. A closed subscriber is
                // gone for good (shutdown), so just skip it.
                let _ = s.blocking_send(result.clone());
            }
        }
    }
}

/// Reads one window: three axes of [`WINDOW`] samples in g. `None` on shutdown.
pub fn read_window<I: I2c>(
    sensor: &mut Adxl345<I>,
    shutdown: &watch::Receiver<bool>,
) -> Result<Option<[Vec<f64>; 3]>, String> {
    let mut axes = [
        Vec::with_capacity(WINDOW),
        Vec::with_capacity(WINDOW),
        Vec::with_capacity(WINDOW),
    ];
    while axes[0].len() < WINDOW {
        let n = sensor.fifo_entries().map_err(|e| e.to_string())?;
        if n == 0 {
            // At 1600 Hz the 32-entry FIFO fills in 20 ms.
            if nap(Duration::from_millis(10), shutdown) {
                return Ok(None);
            }
            continue;
        }
        for _ in 0..usize::from(n).min(WINDOW - axes[0].len()) {
            let g = sensor.read_g().map_err(|e| e.to_string())?;
            for (a, v) in axes.iter_mut().zip(g) {
                a.push(v);
            }
        }
    }
    Ok(Some(axes))
}

/// Features and inference for one window, on the `bound` model (or the only one).
pub fn classify(
    window: &[Vec<f64>; 3],
    models: &ModelHandle,
    bound: Option<&str>,
    stats: &PipelineStats,
) -> PipelineResult {
    stats.windows.fetch_add(1, Relaxed);
    let feats = features::compute([&window[0], &window[1], &window[2]]);
    let features: Vec<f32> = feats.iter().map(|v| *v as f32).collect();
    let ts_ms = crate::clock::unix_ms();
    let active = match bound {
        Some(name) => models.get(name),
        None => models.only(),
    };
    let Some(active) = active else {
        stats.no_model.fetch_add(1, Relaxed);
        return PipelineResult {
            ts_ms,
            features,
            served: None,
            latency_us: 0,
            error: Some(match bound {
                Some(n) => format!("model {n:?} is not active"),
                None => "no model active (or several: bind the sensor to one)".into(),
            }),
        };
    };
    // Feed the model what it asks for: the 16 features, or the raw 3 × WINDOW window.
    let row = active.model.row_input();
    let uses_features =
        row.is_some_and(|i| i.features.iter().map(String::as_str).eq(FEATURE_NAMES));
    let raw_window = row.is_some_and(|i| {
        i.shape.get(1..).is_some_and(|s| {
            s.iter().map(|d| d.fixed()).collect::<Vec<_>>() == [Some(3), Some(WINDOW as u64)]
        })
    });
    let input: Option<Vec<f64>> = if uses_features {
        Some(feats.to_vec())
    } else if raw_window {
        Some(window.iter().flatten().copied().collect())
    } else {
        None
    };
    let start = Instant::now();
    let (served, error) = match &input {
        None => (
            None,
            Some(format!(
                "model {} does not take the pipeline's 16 features or a raw 3 x {WINDOW} window",
                active.name()
            )),
        ),
        Some(x) => match active.score_rows(std::slice::from_ref(x)) {
            Ok(scored) => (
                Some(Arc::new(Served {
                    ts_ms,
                    model: active.clone(),
                    scored,
                    source: Source::Pipeline,
                })),
                None,
            ),
            Err(e) => {
                stats.inference_errors.fetch_add(1, Relaxed);
                (None, Some(e.to_string()))
            }
        },
    };
    PipelineResult {
        ts_ms,
        features,
        served,
        latency_us: start.elapsed().as_micros() as u64,
        error,
    }
}
