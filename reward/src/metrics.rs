//! Evaluation metrics of an energy model on preference pairs, in plain Rust on `f32` vectors:
//! pairwise accuracy (E⁺ < E⁻), mean energy gap, expected calibration error of
//! P(chosen ≻ rejected) = σ(E⁻ − E⁺), the shares of chosen answers with E⁺ < ε and of rejected
//! answers with E⁻ > m, accuracy per source, and the choose-the-longer-answer heuristic (its own
//! accuracy and how often the model agrees with it).
use std::collections::BTreeMap;

use datasets::stats::{bootstrap_ci, Ci};
use serde::{Deserialize, Serialize};

/// Fraction of pairs with E⁺ < E⁻ (strict: equal energies count as wrong). 0 for no pairs.
pub fn pairwise_accuracy(e_pos: &[f32], e_neg: &[f32]) -> f64 {
    if e_pos.is_empty() {
        return 0.0;
    }
    let right = e_pos.iter().zip(e_neg).filter(|(p, n)| p < n).count();
    right as f64 / e_pos.len() as f64
}

/// Mean of E⁻ − E⁺ (positive when the model separates the pairs the right way).
pub fn mean_gap(e_pos: &[f32], e_neg: &[f32]) -> f64 {
    if e_pos.is_empty() {
        return 0.0;
    }
    let sum: f64 = e_pos.iter().zip(e_neg).map(|(p, n)| (*n - *p) as f64).sum();
    sum / e_pos.len() as f64
}

/// σ(x) in f64.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Expected calibration error of p = σ(E⁻ − E⁺) over `bins` equal-width confidence bins.
/// Each pair predicts the side with p ≥ 0.5 at confidence max(p, 1−p); it is right when it
/// predicts the chosen side. ECE = Σ_b (n_b / N)·|accuracy_b − mean confidence_b|.
pub fn ece(e_pos: &[f32], e_neg: &[f32], bins: usize) -> f64 {
    if e_pos.is_empty() || bins == 0 {
        return 0.0;
    }
    let mut count = vec![0usize; bins];
    let mut conf = vec![0f64; bins];
    let mut right = vec![0f64; bins];
    for (p, n) in e_pos.iter().zip(e_neg) {
        let prob = sigmoid((*n - *p) as f64);
        let c = prob.max(1.0 - prob); // in [0.5, 1]
        let b = (((c - 0.5) * 2.0 * bins as f64) as usize).min(bins - 1);
        count[b] += 1;
        conf[b] += c;
        right[b] += if prob > 0.5 { 1.0 } else { 0.0 };
    }
    let total = e_pos.len() as f64;
    (0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| {
            let n = count[b] as f64;
            n / total * (right[b] / n - conf[b] / n).abs()
        })
        .sum()
}

/// Share of values strictly below `eps` (chosen energies near zero).
pub fn share_below(e: &[f32], eps: f32) -> f64 {
    share(e, |x| x < eps)
}

/// Share of values strictly above `m` (rejected energies pushed above the margin).
pub fn share_above(e: &[f32], m: f32) -> f64 {
    share(e, |x| x > m)
}

fn share(e: &[f32], pred: impl Fn(f32) -> bool) -> f64 {
    if e.is_empty() {
        return 0.0;
    }
    e.iter().filter(|&&x| pred(x)).count() as f64 / e.len() as f64
}

/// Accuracy of "the longer answer (in characters) is the chosen one"; pairs of equal length
/// count ½ (a coin flip).
pub fn length_heuristic_accuracy(len_chosen: &[usize], len_rejected: &[usize]) -> f64 {
    if len_chosen.is_empty() {
        return 0.0;
    }
    let score: f64 = len_chosen
        .iter()
        .zip(len_rejected)
        .map(|(c, r)| match c.cmp(r) {
            std::cmp::Ordering::Greater => 1.0,
            std::cmp::Ordering::Equal => 0.5,
            std::cmp::Ordering::Less => 0.0,
        })
        .sum();
    score / len_chosen.len() as f64
}

/// How often the model prefers the longer answer, over pairs whose lengths differ (the model
/// prefers the answer with the lower energy). `None` when every pair has equal lengths.
pub fn length_agreement(
    e_pos: &[f32],
    e_neg: &[f32],
    len_chosen: &[usize],
    len_rejected: &[usize],
) -> Option<f64> {
    let mut n = 0usize;
    let mut agree = 0usize;
    for i in 0..e_pos.len() {
        if len_chosen[i] == len_rejected[i] {
            continue;
        }
        n += 1;
        let model_picks_chosen = e_pos[i] < e_neg[i];
        let longer_is_chosen = len_chosen[i] > len_rejected[i];
        if model_picks_chosen == longer_is_chosen {
            agree += 1;
        }
    }
    (n > 0).then(|| agree as f64 / n as f64)
}

/// Per-source pairwise accuracy: source → (pairs, accuracy).
pub fn accuracy_by_source(
    sources: &[String],
    e_pos: &[f32],
    e_neg: &[f32],
) -> BTreeMap<String, (usize, f64)> {
    let mut acc: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for ((s, p), n) in sources.iter().zip(e_pos).zip(e_neg) {
        let entry = acc.entry(s.clone()).or_default();
        entry.0 += 1;
        entry.1 += usize::from(p < n);
    }
    acc.into_iter()
        .map(|(s, (n, r))| (s, (n, r as f64 / n as f64)))
        .collect()
}

/// Thresholds of the share metrics.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// ε: a chosen answer is "compatible" when E⁺ < ε.
    pub eps: f32,
    /// m: a rejected answer is "pushed up" when E⁻ > m.
    pub margin: f32,
}

/// Every metric of one evaluation set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalReport {
    pub pairs: usize,
    pub accuracy: f64,
    pub mean_gap: f64,
    pub ece: f64,
    pub mean_e_chosen: f64,
    pub mean_e_rejected: f64,
    pub share_chosen_below_eps: f64,
    pub share_rejected_above_margin: f64,
    pub length_heuristic_accuracy: f64,
    pub length_agreement: Option<f64>,
    /// source → {pairs, accuracy}
    pub by_source: BTreeMap<String, SourceAccuracy>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceAccuracy {
    pub pairs: usize,
    pub accuracy: f64,
}

/// Inputs of [`EvalReport::compute`], one entry per pair.
pub struct EvalInputs<'a> {
    pub e_pos: &'a [f32],
    pub e_neg: &'a [f32],
    pub len_chosen: &'a [usize],
    pub len_rejected: &'a [usize],
    pub sources: &'a [String],
}

fn mean(x: &[f32]) -> f64 {
    if x.is_empty() {
        0.0
    } else {
        x.iter().map(|v| *v as f64).sum::<f64>() / x.len() as f64
    }
}

impl EvalReport {
    pub fn compute(inp: &EvalInputs, th: Thresholds) -> Self {
        let (p, n) = (inp.e_pos, inp.e_neg);
        Self {
            pairs: p.len(),
            accuracy: pairwise_accuracy(p, n),
            mean_gap: mean_gap(p, n),
            ece: ece(p, n, 10),
            mean_e_chosen: mean(p),
            mean_e_rejected: mean(n),
            share_chosen_below_eps: share_below(p, th.eps),
            share_rejected_above_margin: share_above(n, th.margin),
            length_heuristic_accuracy: length_heuristic_accuracy(inp.len_chosen, inp.len_rejected),
            length_agreement: length_agreement(p, n, inp.len_chosen, inp.len_rejected),
            by_source: accuracy_by_source(inp.sources, p, n)
                .into_iter()
                .map(|(s, (pairs, accuracy))| (s, SourceAccuracy { pairs, accuracy }))
                .collect(),
        }
    }
}

/// The model against the choose-the-longer-answer heuristic on the same pairs, each accuracy
/// with a percentile bootstrap CI over pairs; the difference (model − longer) is bootstrapped
/// pair by pair, so its interval says whether the model knows more than answer length does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgainstLength {
    pub pairs: usize,
    pub model: Ci,
    pub longer: Ci,
    pub difference: Ci,
}

/// [`AgainstLength`] of one set of pairs at confidence `level`, `resamples` bootstrap draws
/// seeded by `seed` (the three intervals resample the same pairs). `None` for no pairs.
pub fn against_length(
    inp: &EvalInputs,
    resamples: usize,
    level: f64,
    seed: u64,
) -> Option<AgainstLength> {
    let model: Vec<f64> = (inp.e_pos.iter().zip(inp.e_neg))
        .map(|(p, n)| f64::from(u8::from(p < n)))
        .collect();
    let longer: Vec<f64> = (inp.len_chosen.iter().zip(inp.len_rejected))
        .map(|(c, r)| length_heuristic_accuracy(&[*c], &[*r]))
        .collect();
    let difference: Vec<f64> = model.iter().zip(&longer).map(|(m, l)| m - l).collect();
    let ci = |v: &[f64]| bootstrap_ci(v, resamples, level, seed);
    Some(AgainstLength {
        pairs: model.len(),
        model: ci(&model)?,
        longer: ci(&longer)?,
        difference: ci(&difference)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn against_length_pairs_the_bootstrap() {
        // The model is right on pairs 0 and 3; the longer answer is chosen on 1, equal on 2.
        let inp = EvalInputs {
            e_pos: &POS,
            e_neg: &NEG,
            len_chosen: &[1, 5, 3, 2],
            len_rejected: &[2, 4, 3, 3],
            sources: &[],
        };
        let a = against_length(&inp, 500, 0.95, 7).unwrap();
        assert_eq!(a.pairs, 4);
        assert_eq!(a.model.mean, 0.5);
        assert_eq!(a.longer.mean, 0.375); // (0 + 1 + ½ + 0) / 4
        assert_eq!(a.difference.mean, 0.125);
        for ci in [a.model, a.longer, a.difference] {
            assert!(ci.lo <= ci.mean && ci.mean <= ci.hi, "{ci:?}");
        }
        // The same seed, the same intervals; the same resamples of each column.
        assert_eq!(against_length(&inp, 500, 0.95, 7), Some(a));
        let none = EvalInputs {
            e_pos: &[],
            e_neg: &[],
            len_chosen: &[],
            len_rejected: &[],
            sources: &[],
        };
        assert_eq!(against_length(&none, 500, 0.95, 7), None);
    }

    const POS: [f32; 4] = [0.1, 2.0, 0.5, 1.0];
    const NEG: [f32; 4] = [1.1, 1.0, 0.5, 3.0];

    #[test]
    fn accuracy_is_strict() {
        // right: 0.1<1.1, 1.0<3.0; wrong: 2.0>1.0; tie 0.5=0.5 counts wrong → 2/4
        assert_eq!(pairwise_accuracy(&POS, &NEG), 0.5);
        assert_eq!(pairwise_accuracy(&[], &[]), 0.0);
    }

    #[test]
    fn gap_is_mean_difference() {
        // (1.0 - 1.0 + 0 + 2.0)/4 = 0.5
        assert!((mean_gap(&POS, &NEG) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn ece_hand_computed() {
        // pair A: gap 0 → p=0.5, conf 0.5, predicted chosen? p>0.5 false → wrong; bin 0
        // pair B: gap ln 3 → p=0.75, conf 0.75, right; bin 5 of 10
        // ECE = 1/2·|0−0.5| + 1/2·|1−0.75| = 0.25 + 0.125 = 0.375
        let e = ece(&[1.0, 0.0], &[1.0, 3f32.ln()], 10);
        assert!((e - 0.375).abs() < 1e-6, "{e}");
        // perfectly confident and right → ECE ≈ 0
        assert!(ece(&[0.0], &[50.0], 10) < 1e-9);
    }

    #[test]
    fn shares_hand_computed() {
        assert_eq!(share_below(&POS, 0.6), 0.5); // 0.1, 0.5
        assert_eq!(share_above(&NEG, 1.0), 0.5); // 1.1, 3.0
    }

    #[test]
    fn length_heuristic_hand_computed() {
        // chosen longer, shorter, equal → (1 + 0 + 0.5)/3
        let acc = length_heuristic_accuracy(&[10, 3, 5], &[4, 8, 5]);
        assert!((acc - 0.5).abs() < 1e-9);
        // model: pair0 picks chosen (longer) → agree; pair1 picks rejected (longer) → agree;
        // pair2 equal length → skipped
        let agree = length_agreement(&[0.0, 2.0, 0.0], &[1.0, 1.0, 1.0], &[10, 3, 5], &[4, 8, 5]);
        assert_eq!(agree, Some(1.0));
        assert_eq!(length_agreement(&[0.0], &[1.0], &[3], &[3]), None);
    }

    #[test]
    fn per_source_accuracy() {
        let src: Vec<String> = ["a", "b", "a", "b"].iter().map(|s| s.to_string()).collect();
        let by = accuracy_by_source(&src, &POS, &NEG);
        assert_eq!(by["a"], (2, 0.5)); // 0.1<1.1 right, 0.5=0.5 wrong
        assert_eq!(by["b"], (2, 0.5)); // 2>1 wrong, 1<3 right
    }

    #[test]
    fn report_combines_everything() {
        let src: Vec<String> = vec!["s".into(); 4];
        let r = EvalReport::compute(
            &EvalInputs {
                e_pos: &POS,
                e_neg: &NEG,
                len_chosen: &[5, 5, 5, 5],
                len_rejected: &[1, 1, 1, 1],
                sources: &src,
            },
            Thresholds {
                eps: 0.6,
                margin: 1.0,
            },
        );
        assert_eq!(r.pairs, 4);
        assert_eq!(r.accuracy, 0.5);
        assert_eq!(r.length_heuristic_accuracy, 1.0);
        assert_eq!(r.length_agreement, Some(0.5));
        assert!((r.mean_e_chosen - 0.9).abs() < 1e-6);
        assert_eq!(r.by_source["s"].pairs, 4);
    }
}
