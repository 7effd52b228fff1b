//! Statistics for the rank-vs-refine comparison: percentile bootstrap confidence intervals over
//! prompts (Efron & Tibshirani 1993) and the Gao et al. (2022, "Scaling Laws for Reward Model
//! Overoptimization") best-of-N curve R(d) = d(α − β·d), d = √KL, fitted by least squares.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// A mean with its bootstrap confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ci {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Ci {
    /// Whether two intervals share any point.
    pub fn overlaps(&self, other: &Ci) -> bool {
        self.lo <= other.hi && other.lo <= self.hi
    }
}

/// Mean of a slice (NaN when empty).
pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// The `q`-quantile (0 ≤ q ≤ 1) of sorted values, linearly interpolated.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos - pos.floor());
    if i + 1 >= sorted.len() {
        return sorted[sorted.len() - 1];
    }
    sorted[i] * (1.0 - frac) + sorted[i + 1] * frac
}

/// Percentile bootstrap CI at `level` (e.g. 0.95) of the mean of per-prompt values: resample the
/// prompts with replacement `resamples` times with a ChaCha8 RNG seeded by `seed`.
/// Returns `None` for an empty slice; a single value gives a zero-width interval.
pub fn bootstrap_ci(values: &[f64], resamples: usize, level: f64, seed: u64) -> Option<Ci> {
    if values.is_empty() {
        return None;
    }
    let m = mean(values);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = values.len();
    let mut means: Vec<f64> = (0..resamples.max(1))
        .map(|_| (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let alpha = (1.0 - level) / 2.0;
    Some(Ci {
        mean: m,
        lo: quantile_sorted(&means, alpha),
        hi: quantile_sorted(&means, 1.0 - alpha),
    })
}

/// The fitted Gao et al. (2022) best-of-N curve R(d) = d(α − β·d).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GaoFit {
    pub alpha: f64,
    pub beta: f64,
}

impl GaoFit {
    pub fn predict(&self, d: f64) -> f64 {
        d * (self.alpha - self.beta * d)
    }
}

/// Least-squares fit of R(d) = α·d − β·d² through the origin (closed form: the 2 × 2 normal
/// equations). `None` when fewer than two distinct non-zero d make it singular.
pub fn fit_gao(d: &[f64], r: &[f64]) -> Option<GaoFit> {
    let (mut s2, mut s3, mut s4, mut sdr, mut sd2r) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (&d, &r) in d.iter().zip(r) {
        s2 += d * d;
        s3 += d * d * d;
        s4 += d * d * d * d;
        sdr += d * r;
        sd2r += d * d * r;
    }
    // Features (d, -d²): [[s2, -s3], [-s3, s4]] · [α, β] = [Σ d·r, -Σ d²·r].
    let det = s2 * s4 - s3 * s3;
    if det.abs() <= 1e-12 * (s2 * s4).max(1e-300) {
        return None;
    }
    let alpha = (s4 * sdr - s3 * sd2r) / det;
    let beta = (s3 * sdr - s2 * sd2r) / det;
    Some(GaoFit { alpha, beta })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate() {
        let s = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile_sorted(&s, 0.0), 1.0);
        assert_eq!(quantile_sorted(&s, 1.0), 5.0);
        assert_eq!(quantile_sorted(&s, 0.5), 3.0);
        assert!((quantile_sorted(&s, 0.125) - 1.5).abs() < 1e-12);
    }

    #[test]
    fn bootstrap_brackets_the_mean_and_is_seeded() {
        let v: Vec<f64> = (0..40).map(|i| (i % 7) as f64).collect();
        let a = bootstrap_ci(&v, 2000, 0.95, 3).unwrap();
        let b = bootstrap_ci(&v, 2000, 0.95, 3).unwrap();
        assert_eq!(a, b);
        assert!((a.mean - mean(&v)).abs() < 1e-12);
        assert!(a.lo < a.mean && a.mean < a.hi);
        // Standard error of the mean is sd/√n ≈ 2.0/√40 ≈ 0.32: the 95 % width is ≈ 4 × that.
        let width = a.hi - a.lo;
        assert!(width > 0.9 && width < 1.6, "width {width}");
        let single = bootstrap_ci(&[2.5], 100, 0.95, 0).unwrap();
        assert_eq!((single.lo, single.mean, single.hi), (2.5, 2.5, 2.5));
        assert!(bootstrap_ci(&[], 100, 0.95, 0).is_none());
    }

    #[test]
    fn overlap_is_symmetric() {
        let a = Ci {
            mean: 1.0,
            lo: 0.5,
            hi: 1.5,
        };
        let b = Ci {
            mean: 2.0,
            lo: 1.4,
            hi: 2.6,
        };
        let c = Ci {
            mean: 3.0,
            lo: 2.7,
            hi: 3.3,
        };
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c) && !c.overlaps(&a));
    }

    #[test]
    fn gao_fit_recovers_exact_curve() {
        // R = d(0.8 - 0.1 d) at d = 1, 2, 3: 0.7, 1.2, 1.5.
        let fit = fit_gao(&[1.0, 2.0, 3.0], &[0.7, 1.2, 1.5]).unwrap();
        assert!(
            (fit.alpha - 0.8).abs() < 1e-9 && (fit.beta - 0.1).abs() < 1e-9,
            "{fit:?}"
        );
        assert!((fit.predict(4.0) - 1.6).abs() < 1e-9);
    }

    #[test]
    fn gao_fit_hand_least_squares() {
        // d = 1, 2; r = 1, 1 fits exactly: α − β = 1, 2α − 4β = 1 → β = 0.5, α = 1.5.
        let fit = fit_gao(&[1.0, 2.0], &[1.0, 1.0]).unwrap();
        assert!((fit.alpha - 1.5).abs() < 1e-9 && (fit.beta - 0.5).abs() < 1e-9);
        // Over-determined: d = 1, 2, 3, r = 1, 1, 1. Normal equations with s2 = 14, s3 = 36,
        // s4 = 98, Σdr = 6, Σd²r = 14: det = 1372 − 1296 = 76, α = (588 − 504)/76,
        // β = (216 − 196)/76.
        let fit = fit_gao(&[1.0, 2.0, 3.0], &[1.0, 1.0, 1.0]).unwrap();
        assert!((fit.alpha - 84.0 / 76.0).abs() < 1e-9);
        assert!((fit.beta - 20.0 / 76.0).abs() < 1e-9);
        assert!(fit_gao(&[0.0, 2.0], &[0.0, 1.0]).is_none());
    }
}
