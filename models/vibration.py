"""The vibration signal model and the 16 features, shared by the fixture generator.

The Rust side implements the same model (the simulated ADXL345 in the agent's sensor
module) and the same features (the agent's pipeline). `features-reference.json`, written
by generate.py, pins the two feature implementations to each other: the Rust test computes
features from the committed raw windows and compares them with the values below.

Signal model (per window, all amplitudes in g, sample rate FS, WINDOW samples, 3 axes):
  f_rot   = 25 Hz * (1 + 0.08 * drift) * U(0.98, 1.02)        shaft rotation
  x(t)    = A1 sin(2 pi f_rot t + p1) + A2 sin(4 pi f_rot t + p2) + n_x(t) + 0.05 * drift
  y(t)    = A1 sin(2 pi f_rot t + p1 + pi/2) + A2 sin(4 pi f_rot t + p2 + pi/2) + n_y(t)
  z(t)    = 1.0 + 0.2 * A1 sin(2 pi f_rot t + p1) + n_z(t)     gravity on z
  n_*     ~ N(0, sigma^2), sigma = 0.015 * (1 + 2 * drift)
  normal:        A1 ~ U(0.02, 0.06), A2 ~ U(0.005, 0.02)
  imbalance:     A1 ~ U(0.25, 0.60), A2 ~ U(0.005, 0.02)
  bearing_fault: as normal, plus impacts at f_imp = 3.58 * f_rot (outer-race defect):
                 each impact k at t_k = t0 + k / f_imp adds
                 B exp(-(t - t_k) / 0.002) sin(2 pi 520 (t - t_k)) for t >= t_k
                 to x (and 0.6 times that to y), B ~ U(0.3, 0.8) per window.
  p1, p2, t0 ~ U(0, 2 pi), U(0, 2 pi), U(0, 1 / f_imp)
The ADXL345 runs in full-resolution mode at +-16 g: 3.9 mg/LSB, 13-bit signed, so every
sample is quantised to round(g / 0.0039) clamped to [-4096, 4095] LSB.
"""

import numpy as np

FS = 1600.0  # ADXL345 output data rate, Hz
WINDOW = 1024  # samples per window (0.64 s)
LSB_G = 0.0039  # full-resolution scale factor, g per LSB
LSB_MIN, LSB_MAX = -4096, 4095
MODES = ["normal", "imbalance", "bearing_fault"]
BANDS_HZ = [(5, 40), (40, 80), (80, 160), (160, 320), (320, 640), (640, 800)]
FEATURE_NAMES = [
    "rms_x", "rms_y", "rms_z", "peak_x", "crest_x", "kurtosis_x", "skewness_x",
    "rms_radial",
    "band_5_40", "band_40_80", "band_80_160", "band_160_320", "band_320_640",
    "band_640_800",
    "dominant_hz", "centroid_hz",
]


def window_lsb(rng, mode, drift=0.0):
    """One 3 x WINDOW window of quantised samples (int LSB counts) for a machine mode."""
    t = np.arange(WINDOW) / FS
    f_rot = 25.0 * (1.0 + 0.08 * drift) * rng.uniform(0.98, 1.02)
    sigma = 0.015 * (1.0 + 2.0 * drift)
    if mode == "imbalance":
        a1 = rng.uniform(0.25, 0.60)
    else:
        a1 = rng.uniform(0.02, 0.06)
    a2 = rng.uniform(0.005, 0.02)
    p1 = rng.uniform(0, 2 * np.pi)
    p2 = rng.uniform(0, 2 * np.pi)
    w1 = 2 * np.pi * f_rot * t
    x = a1 * np.sin(w1 + p1) + a2 * np.sin(2 * w1 + p2) + 0.05 * drift
    y = a1 * np.sin(w1 + p1 + np.pi / 2) + a2 * np.sin(2 * w1 + p2 + np.pi / 2)
    z = 1.0 + 0.2 * a1 * np.sin(w1 + p1)
    if mode == "bearing_fault":
        f_imp = 3.58 * f_rot
        b = rng.uniform(0.3, 0.8)
        t0 = rng.uniform(0, 1.0 / f_imp)
        burst = np.zeros(WINDOW)
        tk = t0
        while tk < t[-1]:
            dt = t - tk
            on = dt >= 0
            burst[on] += b * np.exp(-dt[on] / 0.002) * np.sin(2 * np.pi * 520.0 * dt[on])
            tk += 1.0 / f_imp
        x = x + burst
        y = y + 0.6 * burst
    x = x + rng.normal(0, sigma, WINDOW)
    y = y + rng.normal(0, sigma, WINDOW)
    z = z + rng.normal(0, sigma, WINDOW)
    g = np.stack([x, y, z])
    return np.clip(np.round(g / LSB_G), LSB_MIN, LSB_MAX).astype(np.int16)


def features(win_lsb):
    """The 16 features of one window (3 x WINDOW int LSB counts), as float64."""
    g = win_lsb.astype(np.float64) * LSB_G
    c = g - g.mean(axis=1, keepdims=True)
    x, y, z = c
    rms = np.sqrt((c * c).mean(axis=1))
    peak_x = np.abs(x).max()
    m2 = (x * x).mean()
    crest = peak_x / rms[0] if rms[0] > 0 else 0.0
    kurt = (x ** 4).mean() / (m2 * m2) if m2 > 0 else 0.0
    skew = (x ** 3).mean() / (m2 ** 1.5) if m2 > 0 else 0.0
    rms_radial = np.sqrt((x * x + y * y).mean())
    spec = np.fft.rfft(x)
    power = (np.abs(spec) ** 2) * 2.0 / (WINDOW * WINDOW)  # one-sided power per bin
    df = FS / WINDOW
    freqs = np.arange(len(power)) * df
    bands = []
    for lo, hi in BANDS_HZ:
        k0 = int(np.ceil(lo / df))
        k1 = min(int(np.ceil(hi / df)), len(power))
        if hi >= FS / 2:
            k1 = len(power)
        bands.append(np.log10(power[k0:k1].sum() + 1e-9))
    mag = np.abs(spec)
    dominant = float(np.argmax(mag[1:]) + 1) * df
    p = power[1:]
    centroid = float((freqs[1:] * p).sum() / p.sum()) if p.sum() > 0 else 0.0
    return np.array(
        [rms[0], rms[1], rms[2], peak_x, crest, kurt, skew, rms_radial, *bands, dominant, centroid],
        dtype=np.float64,
    )
