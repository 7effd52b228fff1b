//! Small statistics shared by the search and fine-tuning logs: the mean, bootstrap standard
//! errors and percentile confidence intervals over prompts (Efron & Tibshirani 1993), the share
//! of distinct answers, and the Gao et al. (2022, "Scaling Laws for Reward Model
//! Overoptimization") best-of-N curve R(d) = d(α − β·d), d = √KL, fitted by least squares.
//! Pure functions, no tensors.
use std::collections::HashSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Arithmetic mean; `None` when empty.
pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The mean of `n` values drawn from `values` with replacement (one bootstrap resample).
fn resample_mean(values: &[f64], rng: &mut impl Rng) -> f64 {
    let n = values.len();
    (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64
}

/// Bootstrap standard error of the mean: the standard deviation of the means of `resamples`
/// resamples with replacement. `None` with fewer than 2 values or no resamples.
pub fn bootstrap_se(values: &[f64], resamples: usize, rng: &mut impl Rng) -> Option<f64> {
    if values.len() < 2 || resamples < 2 {
        return None;
    }
    let means: Vec<f64> = (0..resamples).map(|_| resample_mean(values, rng)).collect();
    let m = mean(&means)?;
    let var = means.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (resamples - 1) as f64;
    Some(var.sqrt())
}

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
    let m = mean(values)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples.max(1))
        .map(|_| resample_mean(values, &mut rng))
        .collect();
    means.sort_by(f64::total_cmp);
    let alpha = (1.0 - level) / 2.0;
    Some(Ci {
        mean: m,
        lo: quantile_sorted(&means, alpha),
        hi: quantile_sorted(&means, 1.0 - alpha),
    })
}

/// Share of distinct strings among `answers` (1 = all different, 1/len = collapsed onto one).
/// `None` when empty.
pub fn distinct_share<S: AsRef<str>>(answers: &[S]) -> Option<f64> {
    if answers.is_empty() {
        return None;
    }
    let distinct: HashSet<&str> = answers.iter().map(AsRef::as_ref).collect();
    Some(distinct.len() as f64 / answers.len() as f64)
}

/// Mean over groups of `group` consecutive answers (one prompt's samples) of their distinct share.
pub fn mean_distinct_share<S: AsRef<str>>(answers: &[S], group: usize) -> Option<f64> {
    if group == 0 {
        return None;
    }
    let shares: Vec<f64> = answers.chunks(group).filter_map(distinct_share).collect();
    mean(&shares)
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
    fn mean_of_nothing_is_none() {
        assert_eq!(mean(&[1.0, 2.0]), Some(1.5));
        assert_eq!(mean(&[]), None);
    }

    #[test]
    fn distinct_share_by_hand() {
        assert_eq!(distinct_share(&["a", "b", "a", "c"]), Some(0.75));
        assert_eq!(distinct_share(&["x"; 4]), Some(0.25));
        assert_eq!(distinct_share::<&str>(&[]), None);
        // Two prompts of 2 samples: {a, a} → ½, {b, c} → 1.
        assert_eq!(mean_distinct_share(&["a", "a", "b", "c"], 2), Some(0.75));
    }

    #[test]
    fn bootstrap_se_is_close_to_the_analytical_standard_error() {
        // Values 0..100: population sd = sqrt((100²−1)/12) ≈ 28.866; se of the mean ≈ 2.887.
        let values: Vec<f64> = (0..100).map(f64::from).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let se = bootstrap_se(&values, 2000, &mut rng).unwrap();
        let want = ((100.0f64 * 100.0 - 1.0) / 12.0).sqrt() / 10.0;
        assert!((se - want).abs() < 0.15, "{se} vs {want}");
        assert_eq!(bootstrap_se(&[1.0, 1.0, 1.0], 100, &mut rng), Some(0.0));
        assert_eq!(bootstrap_se(&[1.0], 100, &mut rng), None);
    }

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
        assert!((a.mean - mean(&v).unwrap()).abs() < 1e-12);
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
        let ci = |mean: f64, lo: f64, hi: f64| Ci { mean, lo, hi };
        let (a, b, c) = (ci(1.0, 0.5, 1.5), ci(2.0, 1.4, 2.6), ci(3.0, 2.7, 3.3));
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
