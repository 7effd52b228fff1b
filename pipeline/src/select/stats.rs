//! Small statistics for the rank and finetune logs: means, bootstrap standard errors over
//! prompts and the share of distinct answers.
use std::collections::HashSet;

use rand::Rng;

/// Arithmetic mean; `None` when empty.
pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Bootstrap standard error of the mean: the standard deviation of the means of `resamples`
/// resamples with replacement. `None` with fewer than 2 values or no resamples.
pub fn bootstrap_se(values: &[f64], resamples: usize, rng: &mut impl Rng) -> Option<f64> {
    let n = values.len();
    if n < 2 || resamples < 2 {
        return None;
    }
    let means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    let m = mean(&means)?;
    let var = means.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (resamples - 1) as f64;
    Some(var.sqrt())
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut rng = policy::rng::stream(3, "test", 0);
        let se = bootstrap_se(&values, 2000, &mut rng).unwrap();
        let want = ((100.0f64 * 100.0 - 1.0) / 12.0).sqrt() / 10.0;
        assert!((se - want).abs() < 0.15, "{se} vs {want}");
        assert_eq!(bootstrap_se(&[1.0, 1.0, 1.0], 100, &mut rng), Some(0.0));
        assert_eq!(bootstrap_se(&[1.0], 100, &mut rng), None);
    }

    #[test]
    fn mean_of_nothing_is_none() {
        assert_eq!(mean(&[1.0, 2.0]), Some(1.5));
        assert_eq!(mean(&[]), None);
    }
}
