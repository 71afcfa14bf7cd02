//! The 16 vibration features, computed exactly as `models/vibration.py` computes them
//! (the test `features_match_python_reference` holds the two together).
//!
//! Cost per 1024-sample window: one 1024-point complex FFT (≈ 50 k flops) plus a few
//! passes over the samples; no allocation beyond the FFT buffer.

use super::{SAMPLE_RATE_HZ, WINDOW};

/// Feature names, in model input order.
pub const FEATURE_NAMES: [&str; 16] = [
    "rms_x",
    "rms_y",
    "rms_z",
    "peak_x",
    "crest_x",
    "kurtosis_x",
    "skewness_x",
    "rms_radial",
    "band_5_40",
    "band_40_80",
    "band_80_160",
    "band_160_320",
    "band_320_640",
    "band_640_800",
    "dominant_hz",
    "centroid_hz",
];

const BANDS_HZ: [(f64, f64); 6] = [
    (5.0, 40.0),
    (40.0, 80.0),
    (80.0, 160.0),
    (160.0, 320.0),
    (320.0, 640.0),
    (640.0, 800.0),
];

/// Computes the features of one window given per-axis samples in g. Each axis must have
/// [`WINDOW`] samples.
pub fn compute(axes: [&[f64]; 3]) -> [f64; 16] {
    let n = WINDOW as f64;
    let centred: Vec<Vec<f64>> = axes
        .iter()
        .map(|a| {
            let m = a.iter().sum::<f64>() / n;
            a.iter().map(|v| v - m).collect()
        })
        .collect();
    let (x, y) = (&centred[0], &centred[1]);
    let rms = |v: &[f64]| (v.iter().map(|a| a * a).sum::<f64>() / n).sqrt();
    let rms_x = rms(x);
    let peak_x = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let m2 = x.iter().map(|v| v * v).sum::<f64>() / n;
    let crest = if rms_x > 0.0 { peak_x / rms_x } else { 0.0 };
    let kurt = if m2 > 0.0 {
        x.iter().map(|v| v.powi(4)).sum::<f64>() / n / (m2 * m2)
    } else {
        0.0
    };
    let skew = if m2 > 0.0 {
        x.iter().map(|v| v.powi(3)).sum::<f64>() / n / m2.powf(1.5)
    } else {
        0.0
    };
    let rms_radial = (x.iter().zip(y).map(|(a, b)| a * a + b * b).sum::<f64>() / n).sqrt();

    let spec = rfft(x);
    let power: Vec<f64> = spec
        .iter()
        .map(|(re, im)| (re * re + im * im) * 2.0 / (n * n))
        .collect();
    let df = SAMPLE_RATE_HZ / n;
    let mut f = [0.0f64; 16];
    f[0] = rms_x;
    f[1] = rms(y);
    f[2] = rms(&centred[2]);
    f[3] = peak_x;
    f[4] = crest;
    f[5] = kurt;
    f[6] = skew;
    f[7] = rms_radial;
    for (i, (lo, hi)) in BANDS_HZ.iter().enumerate() {
        let k0 = (lo / df).ceil() as usize;
        let k1 = if *hi >= SAMPLE_RATE_HZ / 2.0 {
            power.len()
        } else {
            ((hi / df).ceil() as usize).min(power.len())
        };
        f[8 + i] = (power[k0..k1].iter().sum::<f64>() + 1e-9).log10();
    }
    // First maximum of |X_k| for k >= 1, as numpy's argmax.
    let mut best = 1;
    for k in 2..spec.len() {
        if power[k] > power[best] {
            best = k;
        }
    }
    f[14] = best as f64 * df;
    let p_sum: f64 = power[1..].iter().sum();
    f[15] = if p_sum > 0.0 {
        power[1..]
            .iter()
            .enumerate()
            .map(|(i, p)| (i + 1) as f64 * df * p)
            .sum::<f64>()
            / p_sum
    } else {
        0.0
    };
    f
}

/// One-sided spectrum (bins 0..=N/2) of a real signal whose length is a power of two.
fn rfft(x: &[f64]) -> Vec<(f64, f64)> {
    let n = x.len();
    debug_assert!(n.is_power_of_two());
    let mut re: Vec<f64> = x.to_vec();
    let mut im = vec![0.0; n];
    // Bit-reversal permutation.
    let bits = n.trailing_zeros();
    for i in 0..n {
        let j = i.reverse_bits() >> (usize::BITS - bits);
        if j > i {
            re.swap(i, j);
            im.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let ang = -2.0 * std::f64::consts::PI / len as f64;
        for start in (0..n).step_by(len) {
            for k in 0..len / 2 {
                let (s, c) = (ang * k as f64).sin_cos();
                let (a, b) = (start + k, start + k + len / 2);
                let tr = re[b] * c - im[b] * s;
                let ti = re[b] * s + im[b] * c;
                re[b] = re[a] - tr;
                im[b] = im[a] - ti;
                re[a] += tr;
                im[a] += ti;
            }
        }
        len <<= 1;
    }
    (0..=n / 2).map(|k| (re[k], im[k])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fft_of_a_pure_tone_peaks_at_its_bin() {
        let x: Vec<f64> = (0..WINDOW)
            .map(|i| (2.0 * std::f64::consts::PI * 50.0 * i as f64 / WINDOW as f64).sin())
            .collect();
        let s = rfft(&x);
        let (k, _) = s
            .iter()
            .enumerate()
            .max_by(|a, b| (a.1.0.hypot(a.1.1)).total_cmp(&b.1.0.hypot(b.1.1)))
            .unwrap();
        assert_eq!(k, 50);
        assert!((s[50].1.abs() - WINDOW as f64 / 2.0).abs() < 1e-6);
    }
}
