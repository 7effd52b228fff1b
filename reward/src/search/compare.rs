//! Rank vs refine at equal compute: how each method spends a budget of energy-model forward
//! equivalents, the per-(prompt, method, budget, seed) rows, their aggregation into means with
//! bootstrap 95 % CIs over prompts, and the Gao et al. (2022) fit of best-of-N's gold gain
//! against √KL. [`super::methods`] produces the rows.
//!
//! - best-of-N: N = budget samples, each scored once; KL from the bound log N − (N − 1)/N.
//! - refine: one sample (1 score), then refinement steps while the budget lasts; KL estimated
//!   as log π(start) − log π(final), exact when refinement maps starts to finals injectively
//!   (then q(final) = π(start)) and a lower bound otherwise.
//! - hybrid: best-of-m with m = ⌊share·budget⌋, then refine the winner with the rest; KL = the
//!   best-of-m bound + the refinement's log-prob drop.
use std::collections::BTreeMap;

use datasets::stats::{bootstrap_ci, fit_gao, mean, Ci, GaoFit};
use serde::{Deserialize, Serialize};

use super::refine::RefineOutcome;

/// A named per-cell metric, its accessor and its sign (+1: lower is better).
type Metric = (&'static str, fn(&Cell) -> Option<Ci>, f64);

pub const METHODS: [&str; 3] = ["best-of-n", "refine", "hybrid"];

/// One (prompt, method, budget, seed) result: always a discrete answer scored discretely.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Row {
    pub prompt_id: usize,
    pub prompt: String,
    pub method: String,
    pub budget: usize,
    pub seed: u64,
    pub answer: String,
    pub energy: f32,
    pub gold: Option<f32>,
    /// KL(method ‖ policy) estimate (see the module docs).
    pub kl: f64,
    /// Energy-model forward equivalents actually spent (≤ budget).
    pub energy_fwd: f64,
    pub policy_fwd: f64,
    pub wall_s: f64,
    /// Refinement steps taken (0 for best-of-N).
    pub steps: usize,
}

/// Samples drawn by the best-of-m part of a hybrid at `budget`: ⌊share·budget⌋, at least 1.
pub fn hybrid_samples(budget: usize, share: f64) -> usize {
    ((share * budget as f64).floor() as usize).clamp(1, budget.max(1))
}

/// The best discrete answer a refinement had found within `budget` energy forwards, given that
/// `spent_before` were spent before it started: (energy, answer ids, steps taken, wall seconds).
/// Before any step it is the start answer.
pub fn best_within(
    out: &RefineOutcome,
    spent_before: f64,
    budget: f64,
) -> (f32, Vec<i64>, usize, f64) {
    let mut best = (out.start_energy, out.start.clone(), 0, 0.0);
    for s in &out.trace {
        if spent_before + s.energy_fwd > budget + 1e-9 {
            break;
        }
        best = (s.best_energy, s.best.clone(), s.step + 1, s.wall_s);
    }
    best
}

/// Policy forwards spent by a refinement's steps within `budget` (its last step that fitted).
pub fn policy_within(out: &RefineOutcome, spent_before: f64, budget: f64) -> f64 {
    let fitted = out
        .trace
        .iter()
        .take_while(|s| spent_before + s.energy_fwd <= budget + 1e-9);
    fitted.last().map_or(0.0, |s| s.policy_fwd)
}

/// Energy forwards spent by a refinement within `budget` (its last step that fitted).
pub fn spent_within(out: &RefineOutcome, spent_before: f64, budget: f64) -> f64 {
    let last = out
        .trace
        .iter()
        .map(|s| spent_before + s.energy_fwd)
        .filter(|&c| c <= budget + 1e-9);
    last.fold(spent_before, f64::max)
}

/// Means with bootstrap CIs over prompts for one (method, budget).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub method: String,
    pub budget: usize,
    pub prompts: usize,
    pub energy: Ci,
    pub gold: Option<Ci>,
    pub kl: f64,
    pub energy_fwd: f64,
    pub policy_fwd: f64,
    pub wall_s: f64,
}

/// Per-prompt means over seeds of `f`, in prompt order; `None` values are skipped, a prompt
/// with none is left out.
fn per_prompt(rows: &[&Row], f: impl Fn(&Row) -> Option<f64>) -> Vec<f64> {
    by_prompt(rows, f).into_values().collect()
}

/// [`per_prompt`] keyed by prompt id.
fn by_prompt(rows: &[&Row], f: impl Fn(&Row) -> Option<f64>) -> BTreeMap<usize, f64> {
    let mut by: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for r in rows {
        if let Some(v) = f(r) {
            by.entry(r.prompt_id).or_default().push(v);
        }
    }
    by.into_iter()
        .map(|(p, v)| (p, mean(&v).expect("a prompt has a value")))
        .collect()
}

/// Aggregates rows into one cell per (method, budget), methods in [`METHODS`] order.
pub fn aggregate(rows: &[Row], resamples: usize, seed: u64) -> Vec<Cell> {
    let mut budgets: Vec<usize> = rows.iter().map(|r| r.budget).collect();
    budgets.sort_unstable();
    budgets.dedup();
    let mut cells = Vec::new();
    for method in METHODS {
        for &budget in &budgets {
            let sel: Vec<&Row> = rows
                .iter()
                .filter(|r| r.method == method && r.budget == budget)
                .collect();
            if sel.is_empty() {
                continue;
            }
            let energy = per_prompt(&sel, |r| Some(r.energy as f64));
            let gold = per_prompt(&sel, |r| r.gold.map(f64::from));
            let avg = |f: fn(&Row) -> f64| {
                mean(&sel.iter().map(|r| f(r)).collect::<Vec<_>>()).expect("non-empty")
            };
            cells.push(Cell {
                method: method.to_string(),
                budget,
                prompts: energy.len(),
                energy: bootstrap_ci(&energy, resamples, 0.95, seed).expect("non-empty"),
                gold: bootstrap_ci(&gold, resamples, 0.95, seed),
                kl: avg(|r| r.kl),
                energy_fwd: avg(|r| r.energy_fwd),
                policy_fwd: avg(|r| r.policy_fwd),
                wall_s: avg(|r| r.wall_s),
            });
        }
    }
    cells
}

/// Who is ahead at one budget on one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub budget: usize,
    /// `energy` (lower is better) or `gold` (higher is better).
    pub metric: String,
    pub leader: String,
    pub runner_up: String,
    /// Whether the leader's CI overlaps the runner-up's.
    pub overlap: bool,
}

/// Per budget and metric: the best method, the next best, and whether their CIs overlap.
pub fn verdicts(cells: &[Cell]) -> Vec<Verdict> {
    let mut budgets: Vec<usize> = cells.iter().map(|c| c.budget).collect();
    budgets.sort_unstable();
    budgets.dedup();
    let mut out = Vec::new();
    for budget in budgets {
        let at: Vec<&Cell> = cells.iter().filter(|c| c.budget == budget).collect();
        let metrics: [Metric; 2] = [
            ("energy", |c| Some(c.energy), 1.0),
            ("gold", |c| c.gold, -1.0),
        ];
        for (metric, get, sign) in metrics {
            let mut scored: Vec<(&Cell, Ci)> = at
                .iter()
                .filter_map(|c| get(c).map(|ci| (*c, ci)))
                .collect();
            if scored.len() < 2 {
                continue;
            }
            scored.sort_by(|a, b| (sign * a.1.mean).total_cmp(&(sign * b.1.mean)));
            out.push(Verdict {
                budget,
                metric: metric.to_string(),
                leader: scored[0].0.method.clone(),
                runner_up: scored[1].0.method.clone(),
                overlap: scored[0].1.overlaps(&scored[1].1),
            });
        }
    }
    out
}

/// The question users bring, per budget and metric: the better of refine and hybrid against
/// best-of-N, by how much, and whether their CIs separate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadToHead {
    pub budget: usize,
    /// `energy` (lower is better) or `gold` (higher is better).
    pub metric: String,
    /// `refine` or `hybrid`, whichever is better at this budget on this metric.
    pub challenger: String,
    pub challenger_mean: f64,
    pub best_of_n_mean: f64,
    /// Whether the challenger is better than best-of-N (lower energy, higher gold).
    pub challenger_ahead: bool,
    /// Whether the two 95% CIs are disjoint.
    pub separated: bool,
    /// Challenger − best-of-N, paired: the bootstrap 95% CI over prompts of the per-prompt
    /// difference (both methods answer the same prompts with the same samples, so this is the
    /// sharper test; it excludes 0 when the difference is real at that level).
    pub difference: Option<Ci>,
}

/// [`HeadToHead`] at every budget where best-of-N and a refinement method both have the metric;
/// the paired differences are bootstrapped from `rows` as [`aggregate`] does.
pub fn head_to_head(cells: &[Cell], rows: &[Row], resamples: usize, seed: u64) -> Vec<HeadToHead> {
    let metrics: [Metric; 2] = [
        ("energy", |c| Some(c.energy), 1.0),
        ("gold", |c| c.gold, -1.0),
    ];
    let mut budgets: Vec<usize> = cells.iter().map(|c| c.budget).collect();
    budgets.sort_unstable();
    budgets.dedup();
    let mut out = Vec::new();
    for budget in budgets {
        let at = |method: &str| {
            cells
                .iter()
                .find(|c| c.budget == budget && c.method == method)
        };
        for (metric, get, sign) in metrics {
            let Some(bon) = at("best-of-n").and_then(get) else {
                continue;
            };
            let challenger = ["refine", "hybrid"]
                .iter()
                .filter_map(|m| Some((*m, get(at(m)?)?)))
                .min_by(|a, b| (sign * a.1.mean).total_cmp(&(sign * b.1.mean)));
            if let Some((method, ci)) = challenger {
                let difference = paired_difference(rows, method, budget, metric, resamples, seed);
                out.push(HeadToHead {
                    budget,
                    metric: metric.to_string(),
                    challenger: method.to_string(),
                    challenger_mean: ci.mean,
                    best_of_n_mean: bon.mean,
                    challenger_ahead: sign * ci.mean < sign * bon.mean,
                    separated: !ci.overlaps(&bon),
                    difference,
                });
            }
        }
    }
    out
}

/// The bootstrap CI over prompts of `method` − best-of-N on `metric` at `budget`, prompt by
/// prompt (seeds averaged first), over the prompts both have.
fn paired_difference(
    rows: &[Row],
    method: &str,
    budget: usize,
    metric: &str,
    resamples: usize,
    seed: u64,
) -> Option<Ci> {
    let value = |r: &Row| match metric {
        "energy" => Some(f64::from(r.energy)),
        _ => r.gold.map(f64::from),
    };
    let of = |m: &str| {
        let sel: Vec<&Row> = (rows.iter())
            .filter(|r| r.method == m && r.budget == budget)
            .collect();
        by_prompt(&sel, value)
    };
    let (challenger, bon) = (of(method), of("best-of-n"));
    let diffs: Vec<f64> = (challenger.iter())
        .filter_map(|(p, c)| Some(c - bon.get(p)?))
        .collect();
    bootstrap_ci(&diffs, resamples, 0.95, seed)
}

/// The Gao fit of best-of-N's gold gain over N = 1 against d = √KL(bound).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GaoSummary {
    pub fit: GaoFit,
    /// Gold of best-of-1, the origin of the fitted gains.
    pub gold_at_1: f64,
    /// (d, gold gain) points the fit used.
    pub points: Vec<(f64, f64)>,
}

/// Fits the Gao curve to the best-of-N cells with gold; `None` without gold or with fewer than
/// two budgets above 1.
pub fn gao_summary(cells: &[Cell]) -> Option<GaoSummary> {
    let bon: Vec<&Cell> = cells.iter().filter(|c| c.method == "best-of-n").collect();
    let gold_at_1 = bon.iter().find(|c| c.budget == 1)?.gold?.mean;
    let points: Vec<(f64, f64)> = bon
        .iter()
        .filter_map(|c| c.gold.map(|g| (c.kl.max(0.0).sqrt(), g.mean - gold_at_1)))
        .collect();
    let (d, r): (Vec<f64>, Vec<f64>) = points.iter().copied().unzip();
    Some(GaoSummary {
        fit: fit_gao(&d, &r)?,
        gold_at_1,
        points,
    })
}

#[cfg(test)]
mod tests {
    use super::super::refine::StepTrace;
    use super::*;

    fn step(step: usize, best_energy: f32, energy_fwd: f64) -> StepTrace {
        StepTrace {
            step,
            tau: 1.0,
            relaxed_energy: 0.0,
            kl: 0.0,
            objective: 0.0,
            discrete_energy: best_energy,
            accepted: true,
            best_energy,
            best: vec![step as i64],
            best_gold: None,
            energy_fwd,
            policy_fwd: step as f64,
            wall_s: step as f64,
        }
    }

    #[test]
    fn head_to_head_takes_the_better_refinement_method_against_best_of_n() {
        let ci = |mean: f64, half: f64| Ci {
            mean,
            lo: mean - half,
            hi: mean + half,
        };
        let cell = |method: &str, energy: Ci, gold: Ci| Cell {
            method: method.into(),
            budget: 8,
            prompts: 10,
            energy,
            gold: Some(gold),
            kl: 0.0,
            energy_fwd: 8.0,
            policy_fwd: 8.0,
            wall_s: 0.0,
        };
        let cells = [
            cell("best-of-n", ci(2.0, 0.1), ci(0.30, 0.02)),
            cell("refine", ci(1.5, 0.1), ci(0.10, 0.02)),
            cell("hybrid", ci(1.95, 0.1), ci(0.29, 0.02)),
        ];
        let h = head_to_head(&cells, &[], 100, 0);
        assert_eq!(h.len(), 2);
        let (energy, gold) = (&h[0], &h[1]);
        assert_eq!(
            (energy.metric.as_str(), energy.challenger.as_str()),
            ("energy", "refine")
        );
        assert!(energy.challenger_ahead && energy.separated);
        assert_eq!(
            (gold.metric.as_str(), gold.challenger.as_str()),
            ("gold", "hybrid")
        );
        assert!(!gold.challenger_ahead && !gold.separated);
        assert_eq!((gold.challenger_mean, gold.best_of_n_mean), (0.29, 0.30));
        assert_eq!(gold.difference, None, "no rows, no paired difference");
    }

    #[test]
    fn best_within_reads_the_trace_up_to_the_budget() {
        let out = RefineOutcome {
            start: vec![9],
            start_energy: 3.0,
            best: vec![2],
            best_energy: 1.0,
            last: vec![2],
            steps: 3,
            trace: vec![step(0, 2.0, 4.0), step(1, 2.0, 7.0), step(2, 1.0, 11.0)],
        };
        assert_eq!(best_within(&out, 1.0, 4.0), (3.0, vec![9], 0, 0.0));
        assert_eq!(best_within(&out, 1.0, 5.0), (2.0, vec![0], 1, 0.0));
        assert_eq!(best_within(&out, 1.0, 11.0), (2.0, vec![1], 2, 1.0));
        assert_eq!(best_within(&out, 1.0, 12.0).0, 1.0);
        assert_eq!(spent_within(&out, 1.0, 9.0), 8.0);
        assert_eq!(spent_within(&out, 1.0, 2.0), 1.0);
        assert_eq!(policy_within(&out, 1.0, 9.0), 1.0);
        assert_eq!(policy_within(&out, 1.0, 2.0), 0.0);
    }

    #[test]
    fn hybrid_split() {
        assert_eq!(hybrid_samples(1, 0.5), 1);
        assert_eq!(hybrid_samples(8, 0.5), 4);
        assert_eq!(hybrid_samples(9, 0.25), 2);
        assert_eq!(hybrid_samples(4, 2.0), 4);
    }

    fn row(
        prompt_id: usize,
        method: &str,
        budget: usize,
        seed: u64,
        energy: f32,
        gold: f32,
    ) -> Row {
        Row {
            prompt_id,
            prompt: format!("p{prompt_id}"),
            method: method.into(),
            budget,
            seed,
            answer: String::new(),
            energy,
            gold: Some(gold),
            kl: 0.5,
            energy_fwd: budget as f64,
            policy_fwd: 1.0,
            wall_s: 0.1,
            steps: 0,
        }
    }

    /// The paired difference pairs prompt with prompt: gold differs by exactly +0.1 on every
    /// prompt although the prompts' golds spread widely, so its CI is a point, while the
    /// unpaired CIs of the two methods overlap.
    #[test]
    fn the_paired_difference_is_taken_prompt_by_prompt() {
        let mut rows = Vec::new();
        for p in 0..8 {
            let base = 0.1 * p as f32;
            rows.push(row(p, "best-of-n", 8, 0, 1.0, base));
            rows.push(row(p, "hybrid", 8, 0, 1.0, base + 0.1));
        }
        let cells = aggregate(&rows, 500, 0);
        let h = head_to_head(&cells, &rows, 500, 0);
        let gold = h.iter().find(|h| h.metric == "gold").unwrap();
        assert_eq!(gold.challenger, "hybrid");
        assert!(!gold.separated);
        let d = gold.difference.unwrap();
        assert!(
            (d.mean - 0.1).abs() < 1e-6 && (d.hi - d.lo).abs() < 1e-6,
            "{d:?}"
        );
    }

    #[test]
    fn aggregate_averages_seeds_then_prompts_and_names_the_leader() {
        let mut rows = Vec::new();
        for p in 0..4 {
            for seed in 0..2 {
                rows.push(row(p, "best-of-n", 4, seed, 2.0 + seed as f32, 0.5));
                rows.push(row(p, "refine", 4, seed, 0.1 * p as f32, 0.9));
            }
        }
        let cells = aggregate(&rows, 500, 0);
        assert_eq!(cells.len(), 2);
        assert_eq!(
            (cells[0].method.as_str(), cells[0].prompts),
            ("best-of-n", 4)
        );
        assert!((cells[0].energy.mean - 2.5).abs() < 1e-9);
        assert_eq!((cells[0].energy.lo, cells[0].energy.hi), (2.5, 2.5));
        assert!((cells[1].energy.mean - 0.15).abs() < 1e-6);
        let v = verdicts(&cells);
        assert_eq!(v.len(), 2);
        assert_eq!(
            (v[0].metric.as_str(), v[0].leader.as_str(), v[0].overlap),
            ("energy", "refine", false)
        );
        assert_eq!(
            (v[1].metric.as_str(), v[1].leader.as_str()),
            ("gold", "refine")
        );
    }
}
