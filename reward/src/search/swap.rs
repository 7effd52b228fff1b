//! Gradient-guided token swaps (HotFlip, Ebrahimi et al. 2018; AutoPrompt, Shin et al. 2020;
//! GCG, Zou et al. 2023): refinement that stays on discrete answers. Each step takes the
//! gradient of the energy with respect to the one-hot answer, which ranks every single-token
//! swap by its first-order change of the energy; the `candidates` best swaps (at most
//! ⌈candidates / positions⌉ per position, so they spread over the answer) are scored exactly
//! and the best one is taken when it lowers the objective E(a) − β·log π(a) (`beta`: the
//! policy's log-probability of the answer, one policy forward per scored answer; β = 0, the
//! energy alone). The gradient only chooses where to look.
//!
//! Swaps reach shorter answers (the end-of-answer token at position i cuts the answer there)
//! and longer ones (a token at the row after the answer, up to `extra_positions` − 1 more
//! tokens: the answer and its end-of-answer row fill the start's + `extra_positions` rows).
//! A step costs one relaxed forward and its backward (3 forward equivalents) plus one forward
//! per candidate not scored before; the search stops when no candidate lowers the energy (the
//! next step would look at the same candidates).
use std::collections::HashMap;

use tch::{Kind, Tensor};
use tracing::debug;

use super::compute::Compute;
use super::energy::Energy;
use super::refine::{RefineConfig, RefineOutcome, Spend, StepTrace};
use crate::error::Result;

/// The most a swap step can cost in energy forward equivalents with `candidates` candidates.
pub fn swap_step_cost(candidates: usize) -> f64 {
    3.0 + candidates as f64
}

/// Refines the scored `(start, start_energy)` (token ids, no end-of-answer) by token swaps, for
/// [`super::refine::refine`], whose `cfg.steps`, `cfg.candidates`, `cfg.beta` (the weight of
/// −log π(answer)) and `cfg.extra_positions` apply.
pub(super) fn swap_refine(
    energy: &impl Energy,
    (start, start_energy): (&[i64], f32),
    cfg: &RefineConfig,
    budget: Option<f64>,
    ledger: &mut Compute,
    spend: Spend,
) -> Result<RefineOutcome> {
    // Rows: the answer and one end-of-answer row, within the start's + `extra_positions` rows
    // the caller set the energy up for.
    let max_len = start.len() + cfg.extra_positions.max(1) - 1;
    let mut scored: HashMap<Vec<i64>, (f32, f64)> = HashMap::new();
    let (mut current, mut current_energy) = (start.to_vec(), start_energy);
    let mut current_objective = f64::from(start_energy);
    let mut trace = Vec::new();
    for step in 0..cfg.steps {
        policy::interrupt::check(None)?; // Ctrl-C: refine and compare keep nothing partial
        let cost = swap_step_cost(cfg.candidates.max(1));
        if budget.is_some_and(|b| ledger.energy_fwd + cost > b + 1e-9) {
            break;
        }
        if step == 0 {
            // The start's objective, paid for only when a step runs.
            current_objective = objectives(
                energy,
                &[current.clone()],
                &[start_energy],
                cfg.beta,
                ledger,
            )?[0];
            scored.insert(current.clone(), (start_energy, current_objective));
        }
        let (relaxed, best) = best_candidate(energy, &current, cfg, max_len, &mut scored, ledger)?;
        let discrete = best.as_ref().map_or(current_energy, |b| b.0);
        let accepted = best.as_ref().is_some_and(|b| b.1 < current_objective);
        if let (true, Some((e, o, a))) = (accepted, best) {
            (current, current_energy, current_objective) = (a, e, o);
        }
        debug!(step, relaxed, discrete, best = current_energy, "swap step");
        trace.push(StepTrace {
            relaxed_energy: relaxed,
            objective: current_objective,
            ..spend.trace(
                ledger,
                step,
                (discrete, accepted),
                (&current, current_energy),
            )
        });
        if !accepted {
            break; // a local minimum of single swaps: the next step would look at the same ones
        }
    }
    Ok(spend.finish(
        ledger,
        (start, start_energy),
        (current.clone(), current_energy),
        current,
        trace,
    ))
}

/// A scored answer: (energy, objective, token ids).
type Candidate = (f32, f64, Vec<i64>);

/// One step's search: the one-hot gradient at `current` (returned: its relaxed energy), the best
/// swaps, those not seen before scored into `scored`, and the candidate with the lowest objective
/// as (energy, objective, answer).
fn best_candidate(
    energy: &impl Energy,
    current: &[i64],
    cfg: &RefineConfig,
    max_len: usize,
    scored: &mut HashMap<Vec<i64>, (f32, f64)>,
    ledger: &mut Compute,
) -> Result<(f64, Option<Candidate>)> {
    let (relaxed, grad) = one_hot_grad(energy, current, ledger)?;
    let n = cfg.candidates.max(1);
    let swaps = best_swaps(&grad, current, n, energy.eos_id(), max_len);
    let fresh: Vec<Vec<i64>> = (swaps.iter())
        .filter(|a| !scored.contains_key(*a))
        .cloned()
        .collect();
    score_fresh(energy, &fresh, cfg.beta, scored, ledger)?;
    let best = (swaps.into_iter())
        .map(|a| (scored[&a].0, scored[&a].1, a))
        .min_by(|x, y| x.1.total_cmp(&y.1));
    Ok((relaxed, best))
}

/// Scores `fresh` answers (energy and objective) into `scored`: one energy forward each, and
/// one policy forward each when β > 0.
pub(super) fn score_fresh(
    energy: &impl Energy,
    fresh: &[Vec<i64>],
    beta: f64,
    scored: &mut HashMap<Vec<i64>, (f32, f64)>,
    ledger: &mut Compute,
) -> Result<()> {
    ledger.energy_rescore(fresh.len());
    let e = energy.score(fresh)?;
    let o = objectives(energy, fresh, &e, beta, ledger)?;
    for ((a, e), o) in fresh.iter().zip(e).zip(o) {
        scored.insert(a.clone(), (e, o));
    }
    Ok(())
}

/// E(a) + β·(−log π(a)) of each answer (its energy `e`, the policy's log-probability of its
/// tokens and end-of-answer): the policy prior keeps the search near answers the policy would
/// write, as the KL term does for the soft relaxation. One policy forward per answer; with β = 0
/// the energy alone, and no policy forward.
pub(super) fn objectives(
    energy: &impl Energy,
    answers: &[Vec<i64>],
    e: &[f32],
    beta: f64,
    ledger: &mut Compute,
) -> Result<Vec<f64>> {
    if beta == 0.0 {
        return Ok(e.iter().map(|&x| f64::from(x)).collect());
    }
    let mut out = Vec::with_capacity(answers.len());
    for (a, &e) in answers.iter().zip(e) {
        let mut rows = a.clone();
        rows.push(energy.eos_id());
        let ids = Tensor::from_slice(&rows).to_device(energy.device());
        let p = ids.one_hot(energy.vocab_size()).to_kind(Kind::Float); // [L + 1, V]
        let log_q = energy.prior_log_probs(&p)?; // [L + 1, V]
        ledger.policy_forward(1);
        let log_pi = log_q.gather(1, &ids.unsqueeze(1), false).sum(Kind::Float); // []
        out.push(f64::from(e) - beta * log_pi.double_value(&[]));
    }
    Ok(out)
}

/// The relaxed energy of `answer` as one-hot rows followed by one end-of-answer row (where a
/// swap appends a token), and its gradient with respect to those rows `[L + 1, V]`.
fn one_hot_grad(
    energy: &impl Energy,
    answer: &[i64],
    ledger: &mut Compute,
) -> Result<(f64, Tensor)> {
    let mut rows = answer.to_vec();
    rows.push(energy.eos_id());
    let p = Tensor::from_slice(&rows)
        .to_device(energy.device())
        .one_hot(energy.vocab_size())
        .to_kind(Kind::Float) // [L + 1, V]
        .set_requires_grad(true);
    let e = energy.soft_energy(&p)?;
    ledger.energy_forward(1);
    e.backward();
    ledger.energy_backward(1);
    Ok((e.double_value(&[]), p.grad()))
}

/// The `n` answers one swap away from `answer` whose first-order energy change, read off `grad`
/// `[L + 1, V]`, is lowest; at most ⌈n / rows⌉ per row; no answer longer than `max_len`.
pub(crate) fn best_swaps(
    grad: &Tensor,
    answer: &[i64],
    n: usize,
    eos: i64,
    max_len: usize,
) -> Vec<Vec<i64>> {
    let grad = grad.to_device(tch::Device::Cpu).to_kind(Kind::Float);
    let (rows, vocab) = (grad.size()[0], grad.size()[1]);
    let mut current = answer.to_vec();
    current.push(eos);
    let now = grad.gather(1, &Tensor::from_slice(&current).unsqueeze(1), false); // [R, 1]
                                                                                 // Energy decrease to first order of putting token t at row i: g[i, now_i] − g[i, t].
    let mut gain = now - &grad; // [R, V]
    let _ = gain.scatter_(
        1,
        &Tensor::from_slice(&current).unsqueeze(1),
        &Tensor::full(
            [rows, 1],
            f64::NEG_INFINITY,
            (Kind::Float, tch::Device::Cpu),
        ),
    );
    if answer.len() >= max_len {
        let _ = gain.narrow(0, rows - 1, 1).fill_(f64::NEG_INFINITY); // no room to append
    }
    let per_row = n.div_ceil(rows as usize).min(vocab as usize) as i64;
    let (values, tokens) = gain.topk(per_row, 1, true, true); // [R, k]
    let values = Vec::<f32>::try_from(values.reshape([-1])).unwrap_or_default();
    let tokens = Vec::<i64>::try_from(tokens.reshape([-1])).unwrap_or_default();
    let mut found: Vec<(f32, usize, i64)> = (0..values.len())
        .filter(|&j| values[j].is_finite())
        .map(|j| (values[j], j / per_row as usize, tokens[j]))
        .collect();
    found.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    found
        .into_iter()
        .take(n)
        .map(|(_, i, t)| swapped(answer, i, t, eos))
        .collect()
}

/// `answer` with token `t` at position `i` (`i` = its length appends; the end-of-answer token
/// cuts the answer at `i`).
fn swapped(answer: &[i64], i: usize, t: i64, eos: i64) -> Vec<i64> {
    let mut out = answer[..i.min(answer.len())].to_vec();
    if t != eos {
        out.push(t);
        out.extend(answer.iter().skip(i + 1));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::analytic::TargetEnergy;
    use super::super::refine::refine;
    use super::*;

    const V: i64 = 12;
    const EOS: i64 = 11;

    fn swap_cfg(steps: usize, candidates: usize) -> RefineConfig {
        RefineConfig {
            method: super::super::Method::Swap,
            steps,
            candidates,
            beta: 0.0,
            ..RefineConfig::default()
        }
    }

    #[test]
    fn swapped_replaces_cuts_and_appends() {
        assert_eq!(swapped(&[1, 2, 3], 1, 7, EOS), vec![1, 7, 3]);
        assert_eq!(swapped(&[1, 2, 3], 1, EOS, EOS), vec![1]);
        assert_eq!(swapped(&[1, 2, 3], 3, 4, EOS), vec![1, 2, 3, 4]);
    }

    #[test]
    fn swaps_walk_to_the_target_and_lower_the_energy_every_step() {
        let target = vec![3, 1, 4, 1, 5];
        let energy = TargetEnergy::new(target.clone(), V, EOS);
        // Two wrong tokens, one missing at the end.
        let start = vec![3, 7, 4, 2];
        let mut ledger = Compute::default();
        let out = refine(&energy, &start, None, &swap_cfg(10, 4), None, &mut ledger).unwrap();
        assert_eq!(out.best, target);
        assert_eq!(out.best_energy, 0.0);
        let accepted: Vec<f32> = (out.trace.iter().filter(|s| s.accepted))
            .map(|s| s.best_energy)
            .collect();
        assert_eq!(
            accepted,
            [2.0, 1.0, 0.0],
            "the append first (two positions), then the fixes"
        );
        // Three swaps (two fixes and an append), then a step that finds nothing better.
        assert_eq!(out.steps, 4);
        assert!(!out.trace.last().unwrap().accepted);
    }

    #[test]
    fn the_ledger_counts_exactly_what_was_run() {
        let energy = TargetEnergy::new(vec![3, 1, 4, 1, 5], V, EOS);
        let mut ledger = Compute::default();
        let out = refine(
            &energy,
            &[0, 0, 0],
            None,
            &swap_cfg(6, 5),
            None,
            &mut ledger,
        )
        .unwrap();
        let (soft, scored) = (energy.soft_calls.get(), energy.scored.get());
        assert_eq!(soft, out.steps);
        assert_eq!(ledger.energy_fwd, 3.0 * soft as f64 + scored as f64);
        assert_eq!(ledger.rescores as usize, scored);
        assert_eq!(out.trace.last().unwrap().energy_fwd, ledger.energy_fwd);
        assert_eq!(energy.prior_calls.get(), 0);
    }

    /// A prior that makes token 3 unlikely holds the search off the swap to 3 that the energy
    /// alone takes; each scored answer costs one policy forward.
    #[test]
    fn the_policy_prior_weighs_against_unlikely_tokens() {
        let mut energy = TargetEnergy::new(vec![3, 1], V, EOS);
        energy.prior = (0..V).map(|v| if v == 3 { -20.0 } else { -1.0 }).collect();
        let start = vec![0, 1];
        let mut plain = Compute::default();
        let out = refine(&energy, &start, None, &swap_cfg(3, 4), None, &mut plain).unwrap();
        assert_eq!(out.best, vec![3, 1]);
        let cfg = RefineConfig {
            beta: 0.2,
            ..swap_cfg(3, 4)
        };
        let mut ledger = Compute::default();
        let (calls, scored) = (energy.prior_calls.get(), energy.scored.get());
        let out = refine(&energy, &start, None, &cfg, None, &mut ledger).unwrap();
        assert_ne!(out.best.first(), Some(&3), "{:?}", out.best);
        // One policy forward for every answer scored (the start's included).
        assert_eq!(ledger.policy_fwd, (energy.prior_calls.get() - calls) as f64);
        assert_eq!(ledger.policy_fwd, (energy.scored.get() - scored) as f64);
    }

    #[test]
    fn a_budget_stops_before_a_step_that_would_pass_it() {
        let energy = TargetEnergy::new(vec![3, 1, 4, 1, 5], V, EOS);
        let mut ledger = Compute {
            energy_fwd: 1.0, // the start's score, paid by the caller
            ..Compute::default()
        };
        let out = refine(
            &energy,
            &[0, 0, 0, 0, 0],
            Some(5.0),
            &swap_cfg(50, 4),
            Some(16.0),
            &mut ledger,
        )
        .unwrap();
        // 1 + 7 + 7 = 15 ≤ 16 < 22.
        assert_eq!(out.steps, 2);
        assert!(ledger.energy_fwd <= 16.0);
        assert_eq!(out.best_energy, 3.0);
    }
}
