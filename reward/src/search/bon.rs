//! Best-of-n from N ≥ n samples of one prompt, estimated from all n-subsets at once rather than
//! from one subsample. Sort the N samples by energy (lowest first; ties broken by sample index);
//! the i-th of them is the lowest-energy answer of a uniformly random n-subset with probability
//! C(N−i, n−1)/C(N, n), so the weighted sum over the sorted samples is the exact average over
//! all C(N, n) subsets: an unbiased estimator of E[value of the best of n] (Hoeffding's
//! U-statistic). The bounds are from Beirami et al. 2024, "Theoretical guarantees on the
//! best-of-n alignment policy" (arXiv:2401.01879): KL(π_n‖π) ≤ log n − (n−1)/n, the formula
//! usually quoted as equal, and win rate ≤ n/(n+1).
use std::collections::HashMap;

use policy::pool::ranking;

/// `w[i-1]` = C(N−i, n−1) / C(N, n) for i = 1..=N: the probability that the i-th lowest of N
/// samples is the lowest of a random n-subset. Computed with the ratio recurrence
/// w₁ = n/N, w_{i+1} = w_i·(N−i−n+1)/(N−i), so no binomial coefficient is ever formed.
/// Requires 1 ≤ n ≤ N.
pub fn selection_weights(big_n: usize, n: usize) -> Vec<f64> {
    assert!(
        n >= 1 && n <= big_n,
        "best-of-{n} needs 1 ≤ n ≤ N = {big_n}"
    );
    let mut w = Vec::with_capacity(big_n);
    let mut cur = n as f64 / big_n as f64;
    for i in 1..=big_n {
        w.push(cur);
        cur = if i + n > big_n {
            0.0
        } else {
            cur * (big_n - i - n + 1) as f64 / (big_n - i) as f64
        };
    }
    w
}

/// Unbiased estimate of E[`values` of the lowest-energy answer among n samples]: pass the
/// energies themselves for the selected energy, or gold scores for the selected answer's gold.
pub fn expected_best(energies: &[f32], values: &[f32], n: usize) -> f64 {
    assert_eq!(energies.len(), values.len(), "one value per sample");
    let w = selection_weights(energies.len(), n);
    ranking(energies)
        .iter()
        .zip(&w)
        .map(|(&i, w)| w * values[i] as f64)
        .sum()
}

/// Unbiased estimate of the win rate of best-of-n against one independent sample: the average,
/// over all n-subsets S and all samples j outside S, of 1 when min(S) has lower energy than j,
/// ½ on a tie, 0 otherwise. Needs N ≥ n+1 distinct samples; `None` otherwise.
/// For the sorted sample at rank i the number of subsets selecting it that leave out an
/// opponent j is C(N−i−1, n−1) when j ranks after i and C(N−i, n−1) when it ranks before.
pub fn win_rate(energies: &[f32], n: usize) -> Option<f64> {
    let big_n = energies.len();
    if n == 0 || n + 1 > big_n {
        return None;
    }
    let w = selection_weights(big_n, n);
    let sorted: Vec<f32> = ranking(energies).iter().map(|&i| energies[i]).collect();
    let mut total = 0.0;
    for (i, &e) in sorted.iter().enumerate() {
        let after = w.get(i + 1).copied().unwrap_or(0.0);
        for (j, &o) in sorted.iter().enumerate() {
            let outcome = if o > e {
                1.0
            } else if o == e {
                0.5
            } else {
                0.0
            };
            total += match j.cmp(&i) {
                std::cmp::Ordering::Greater => after * outcome,
                std::cmp::Ordering::Less => w[i] * outcome,
                std::cmp::Ordering::Equal => 0.0,
            };
        }
    }
    Some(total / (big_n - n) as f64)
}

/// KL(π_n‖π) of best-of-n (with replacement) over the empirical distribution of the samples:
/// identical answers are one outcome with probability count/N, ranked by energy (lowest first,
/// ties by first occurrence). With outcomes sorted best first and tail mass S_j = Σ_{l≥j} p_l,
/// best-of-n picks outcome j with probability q_j = S_j^n − S_{j+1}^n, and KL = Σ q_j log(q_j/p_j).
/// A plug-in estimate: below the bound whenever answers repeat, which is the case the bound
/// over-states.
pub fn kl_empirical(energies: &[f32], answers: &[&str], n: usize) -> f64 {
    assert_eq!(energies.len(), answers.len(), "one answer per sample");
    let mut groups: Vec<(f32, usize)> = Vec::new(); // (energy, count) in first-occurrence order
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for &i in &ranking(energies) {
        match seen.get(answers[i]) {
            Some(&g) => groups[g].1 += 1,
            None => {
                seen.insert(answers[i], groups.len());
                groups.push((energies[i], 1));
            }
        }
    }
    let big_n = energies.len() as f64;
    let mut tail = 1.0f64;
    let mut kl = 0.0;
    for &(_, count) in &groups {
        let p = count as f64 / big_n;
        let next = (tail - p).max(0.0);
        let q = tail.powi(n as i32) - next.powi(n as i32);
        if q > 0.0 {
            kl += q * (q / p).ln();
        }
        tail = next;
    }
    kl
}

/// The usual analytical KL of best-of-n, log n − (n−1)/n: an upper bound (Beirami et al. 2024).
pub fn kl_bound(n: usize) -> f64 {
    let n = n as f64;
    n.ln() - (n - 1.0) / n
}

/// Upper bound on the win rate of best-of-n against the reference policy: n/(n+1).
pub fn win_rate_bound(n: usize) -> f64 {
    n as f64 / (n as f64 + 1.0)
}

/// The n of the summary table: 1, 2, 4, … up to N, and N itself when it is not a power of two.
pub fn table_ns(big_n: usize) -> Vec<usize> {
    let mut ns: Vec<usize> = std::iter::successors(Some(1usize), |n| Some(n * 2))
        .take_while(|&n| n <= big_n)
        .collect();
    if big_n > 0 && ns.last() != Some(&big_n) {
        ns.push(big_n);
    }
    ns
}

#[cfg(test)]
mod tests {
    use super::*;

    /// All k-subsets of 0..n, as index vectors.
    fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
        if k == 0 {
            return vec![vec![]];
        }
        if n < k {
            return vec![];
        }
        let mut out = subsets(n - 1, k);
        for mut s in subsets(n - 1, k - 1) {
            s.push(n - 1);
            out.push(s);
        }
        out
    }

    /// Brute-force best of a subset: lowest energy, ties by index.
    fn best(energies: &[f32], s: &[usize]) -> usize {
        *s.iter()
            .min_by(|&&a, &&b| energies[a].total_cmp(&energies[b]).then(a.cmp(&b)))
            .unwrap()
    }

    // Energies with ties, gold not monotone in energy.
    const E: [f32; 7] = [0.9, 0.2, 1.5, 0.2, 0.7, 3.0, 0.9];
    const G: [f32; 7] = [0.5, 1.0, 0.0, 0.25, 0.75, 0.0, 1.0];

    #[test]
    fn weights_match_binomials_by_hand() {
        // N = 4, n = 2: C(3,1)/6, C(2,1)/6, C(1,1)/6, 0.
        let w = selection_weights(4, 2);
        let want = [0.5, 1.0 / 3.0, 1.0 / 6.0, 0.0];
        for (a, b) in w.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{w:?}");
        }
        assert_eq!(selection_weights(3, 1), vec![1.0 / 3.0; 3]);
        assert_eq!(selection_weights(3, 3), vec![1.0, 0.0, 0.0]);
        // Large N stays finite and sums to one.
        let w = selection_weights(2000, 700);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn expected_best_matches_enumeration_of_all_subsets() {
        for n in 1..=E.len() {
            let subs = subsets(E.len(), n);
            let brute_e: f64 = subs.iter().map(|s| E[best(&E, s)] as f64).sum::<f64>();
            let brute_g: f64 = subs.iter().map(|s| G[best(&E, s)] as f64).sum::<f64>();
            let k = subs.len() as f64;
            assert!(
                (expected_best(&E, &E, n) - brute_e / k).abs() < 1e-9,
                "energy n={n}"
            );
            assert!(
                (expected_best(&E, &G, n) - brute_g / k).abs() < 1e-9,
                "gold n={n}"
            );
        }
        // By hand for n = N: the best answer (index 1, energy 0.2, gold 1.0).
        assert!((expected_best(&E, &G, 7) - 1.0).abs() < 1e-12);
        // n = 1 is the plain mean.
        let mean = E.iter().map(|&e| e as f64).sum::<f64>() / 7.0;
        assert!((expected_best(&E, &E, 1) - mean).abs() < 1e-9);
    }

    #[test]
    fn win_rate_matches_enumeration_of_subsets_and_opponents() {
        for n in 1..E.len() {
            let (mut sum, mut count) = (0.0, 0.0);
            for s in subsets(E.len(), n) {
                let b = E[best(&E, &s)];
                for j in (0..E.len()).filter(|j| !s.contains(j)) {
                    sum += if E[j] > b {
                        1.0
                    } else if E[j] == b {
                        0.5
                    } else {
                        0.0
                    };
                    count += 1.0;
                }
            }
            let got = win_rate(&E, n).unwrap();
            assert!(
                (got - sum / count).abs() < 1e-9,
                "n={n}: {got} vs {}",
                sum / count
            );
        }
        assert_eq!(win_rate(&E, 7), None);
        // n = 1 against one sample is a fair coin whatever the energies.
        assert!((win_rate(&E, 1).unwrap() - 0.5).abs() < 1e-12);
        // Distinct energies reach the bound n/(n+1) exactly.
        let distinct = [0.3f32, 0.1, 0.8, 0.5, 0.9, 0.2];
        for n in 1..6 {
            assert!((win_rate(&distinct, n).unwrap() - win_rate_bound(n)).abs() < 1e-12);
        }
    }

    #[test]
    fn kl_empirical_matches_enumeration_with_replacement() {
        let answers = ["a", "b", "c", "b", "d", "e", "a"];
        let energies = [0.9f32, 0.2, 1.5, 0.2, 0.7, 3.0, 0.9];
        // Outcome probabilities and best-of-n probabilities by enumerating all 7^n draws.
        for n in 1..=3usize {
            let mut q: HashMap<&str, f64> = HashMap::new();
            let total = 7usize.pow(n as u32);
            for code in 0..total {
                let draw: Vec<usize> = (0..n).map(|d| code / 7usize.pow(d as u32) % 7).collect();
                let b = best(&energies, &draw);
                *q.entry(answers[b]).or_default() += 1.0 / total as f64;
            }
            let brute: f64 = q
                .iter()
                .map(|(a, &qa)| {
                    let p = answers.iter().filter(|x| *x == a).count() as f64 / 7.0;
                    qa * (qa / p).ln()
                })
                .sum();
            let got = kl_empirical(&energies, &answers, n);
            assert!((got - brute).abs() < 1e-9, "n={n}: {got} vs {brute}");
            assert!(got <= kl_bound(n) + 1e-12);
        }
        assert!(kl_empirical(&energies, &answers, 1).abs() < 1e-12);
        // One repeated answer: best-of-n is the reference policy, KL 0.
        assert!(kl_empirical(&[1.0, 1.0, 1.0], &["x", "x", "x"], 4).abs() < 1e-12);
    }

    #[test]
    fn kl_empirical_of_distinct_answers_approaches_the_bound() {
        let n_samples = 4000;
        let energies: Vec<f32> = (0..n_samples).map(|i| i as f32).collect();
        let names: Vec<String> = (0..n_samples).map(|i| i.to_string()).collect();
        let answers: Vec<&str> = names.iter().map(String::as_str).collect();
        for n in [2, 4, 8] {
            let got = kl_empirical(&energies, &answers, n);
            assert!(
                got <= kl_bound(n) && got > kl_bound(n) - 0.01,
                "n={n}: {got}"
            );
        }
    }

    #[test]
    fn bounds_and_table_by_hand() {
        assert_eq!(kl_bound(1), 0.0);
        assert!((kl_bound(2) - (2f64.ln() - 0.5)).abs() < 1e-12);
        assert!((kl_bound(4) - (4f64.ln() - 0.75)).abs() < 1e-12);
        assert_eq!(win_rate_bound(3), 0.75);
        assert_eq!(table_ns(8), vec![1, 2, 4, 8]);
        assert_eq!(table_ns(6), vec![1, 2, 4, 6]);
        assert_eq!(table_ns(1), vec![1]);
        assert!(table_ns(0).is_empty());
    }
}
