//! Monte-Carlo KL(π‖π_ref) from answers sampled from π, given each answer's log-probability under
//! both models (J. Schulman, "Approximating KL divergence", 2020). With log r = log π_ref − log π:
//! k1 = mean(−log r) is unbiased but can come out negative on few samples (reported as is);
//! k3 = mean((r − 1) − log r) is unbiased too (E_π[r] = 1) and never negative, term by term.
use datasets::stats::mean;

/// The mean over samples of `term(log π, log π_ref)`, in f64. `None` without samples.
fn mean_of(logp: &[f32], logp_ref: &[f32], term: impl Fn(f64, f64) -> f64) -> Option<f64> {
    assert_eq!(
        logp.len(),
        logp_ref.len(),
        "one reference log-prob per sample"
    );
    let terms: Vec<f64> = logp
        .iter()
        .zip(logp_ref)
        .map(|(&p, &q)| term(p as f64, q as f64))
        .collect();
    mean(&terms)
}

/// k1 = mean(log π − log π_ref) over samples drawn from π. `None` without samples.
pub fn k1(logp: &[f32], logp_ref: &[f32]) -> Option<f64> {
    mean_of(logp, logp_ref, |p, q| p - q)
}

/// k3 = mean((r − 1) − log r) with r = π_ref/π over samples drawn from π. `None` without samples.
/// Each term is ≥ 0 (since x − 1 ≥ log x); computed in f64 from the log ratio.
pub fn k3(logp: &[f32], logp_ref: &[f32]) -> Option<f64> {
    mean_of(logp, logp_ref, |p, q| {
        let log_r = q - p;
        log_r.exp_m1() - log_r
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const P: [f64; 4] = [0.5, 0.25, 0.125, 0.125];
    const Q: [f64; 4] = [0.25, 0.25, 0.25, 0.25];

    fn exact_kl(p: &[f64], q: &[f64]) -> f64 {
        p.iter().zip(q).map(|(p, q)| p * (p / q).ln()).sum()
    }

    /// Log-probs under P and Q of a list of outcomes.
    fn logs(outcomes: &[usize]) -> (Vec<f32>, Vec<f32>) {
        outcomes
            .iter()
            .map(|&i| (P[i].ln() as f32, Q[i].ln() as f32))
            .unzip()
    }

    #[test]
    fn exact_expectation_over_the_support_is_the_kl() {
        // KL(P‖Q) by hand: ½ln2 + 0 + 2·⅛·ln½ = ¼ ln 2.
        let kl = exact_kl(&P, &Q);
        assert!((kl - 0.25 * 2f64.ln()).abs() < 1e-12);
        // A multiset of 8 outcomes with exactly the frequencies of P.
        let (lp, lq) = logs(&[0, 0, 0, 0, 1, 1, 2, 3]);
        assert!((k1(&lp, &lq).unwrap() - kl).abs() < 1e-6);
        assert!((k3(&lp, &lq).unwrap() - kl).abs() < 1e-6);
    }

    #[test]
    fn monte_carlo_estimates_converge_to_the_exact_kl() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let draws: Vec<usize> = (0..40_000)
            .map(|_| {
                let u: f64 = rng.random();
                let mut acc = 0.0;
                P.iter()
                    .position(|p| {
                        acc += p;
                        u < acc
                    })
                    .unwrap_or(P.len() - 1)
            })
            .collect();
        let (lp, lq) = logs(&draws);
        let kl = exact_kl(&P, &Q);
        assert!(
            (k1(&lp, &lq).unwrap() - kl).abs() < 0.01,
            "k1 {:?}",
            k1(&lp, &lq)
        );
        assert!(
            (k3(&lp, &lq).unwrap() - kl).abs() < 0.01,
            "k3 {:?}",
            k3(&lp, &lq)
        );
    }

    #[test]
    fn k1_can_be_negative_and_k3_cannot() {
        // One sample where π_ref gives more mass than π: log π − log π_ref = ln ½ < 0.
        let (lp, lq) = logs(&[2]);
        assert!((k1(&lp, &lq).unwrap() - 0.5f64.ln()).abs() < 1e-6);
        // r = 2: (2 − 1) − ln 2.
        assert!((k3(&lp, &lq).unwrap() - (1.0 - 2f64.ln())).abs() < 1e-6);
        assert_eq!(k1(&[], &[]), None);
        assert_eq!(k3(&[1.0], &[1.0]), Some(0.0));
    }
}
