//! Langevin dynamics in embedding space with projection to the nearest tokens (MuCoLa, Kumar,
//! Paria & Tsvetkov 2022): the answer is a sequence of continuous vectors in the energy model's
//! token-embedding space, started at the start answer's embeddings (plus `extra_positions`
//! end-of-answer rows). Each step runs the energy on the embeddings projected to their nearest
//! tokens and passes the gradient straight through to the continuous ones, which take an Adam
//! step of `lr` plus Gaussian noise √(2·lr)·`noise`·ξ. The projected answer (cut at its first
//! end-of-answer token) is scored discretely and kept when it lowers the objective
//! E(a) − β·log π(a) that token swaps use ([`super::swap`]): results are always discrete.
//!
//! A step costs a forward and its backward (3 forward equivalents) plus one forward for an
//! answer not scored before (and one policy forward for it when β > 0).
use std::collections::HashMap;

use tch::{Kind, Tensor};
use tracing::debug;

use super::compute::Compute;
use super::energy::Energy;
use super::refine::{Adam, RefineConfig, RefineOutcome, Spend, StepTrace};
use super::swap::{objectives, score_fresh};
use crate::error::Result;

/// The most a Langevin step costs in energy forward equivalents.
pub const LANGEVIN_STEP_COST: f64 = 4.0;

/// The nearest token of each row of `e` `[L, D]` among the embeddings `w` `[V, D]` (squared
/// norms `w_sq` `[V]`) by Euclidean distance.  `[L]` i64
pub fn nearest(e: &Tensor, w: &Tensor, w_sq: &Tensor) -> Tensor {
    // ‖e − w‖² = ‖e‖² − 2 e·w + ‖w‖²; ‖e‖² is the same for every token.
    (w_sq.unsqueeze(0) - e.matmul(&w.tr()) * 2.0).argmin(-1, false)
}

/// Token ids `[L]` as an answer: cut at the first `eos`.
fn answer_of(ids: &Tensor, eos: i64) -> Vec<i64> {
    let ids = Vec::<i64>::try_from(ids.to_device(tch::Device::Cpu)).unwrap_or_default();
    ids.into_iter().take_while(|&t| t != eos).collect()
}

/// Refines the scored `(start, start_energy)` (token ids, no end-of-answer) by Langevin
/// dynamics on its embeddings, for [`super::refine::refine`], whose `cfg.steps`, `cfg.lr`,
/// `cfg.noise`, `cfg.beta` and `cfg.extra_positions` apply. Noise draws come from tch's
/// generator, which the caller seeds.
pub(super) fn langevin_refine(
    energy: &impl Energy,
    (start, start_energy): (&[i64], f32),
    cfg: &RefineConfig,
    budget: Option<f64>,
    ledger: &mut Compute,
    spend: Spend,
) -> Result<RefineOutcome> {
    let eos = energy.eos_id();
    let w = energy.embeddings(); // [V, D]
    let w_sq = w.square().sum_dim_intlist(1, false, Kind::Float); // [V]
    let mut rows = start.to_vec();
    rows.extend(std::iter::repeat_n(eos, cfg.extra_positions.max(1)));
    let mut e = w.index_select(0, &Tensor::from_slice(&rows).to_device(w.device())); // [L, D]
    let mut adam = Adam::new(&e);
    let mut scored: HashMap<Vec<i64>, (f32, f64)> = HashMap::new();
    let (mut best, mut best_energy) = (start.to_vec(), start_energy);
    let mut best_objective = f64::from(start_energy);
    let mut trace = Vec::new();
    for step in 0..cfg.steps {
        policy::interrupt::check(None)?; // Ctrl-C: refine and compare keep nothing partial
        if budget.is_some_and(|b| ledger.energy_fwd + LANGEVIN_STEP_COST > b + 1e-9) {
            break;
        }
        if step == 0 {
            // The start's objective, paid for only when a step runs.
            let start_ids = [start.to_vec()];
            best_objective = objectives(energy, &start_ids, &[start_energy], cfg.beta, ledger)?[0];
            scored.insert(start.to_vec(), (start_energy, best_objective));
        }
        let (relaxed, grad) = projected_grad(energy, &e, &w, &w_sq, ledger)?;
        e = tch::no_grad(|| {
            let mut next = &e + adam.delta(&grad, cfg.lr);
            if cfg.noise > 0.0 {
                next += next.randn_like() * ((2.0 * cfg.lr).sqrt() * cfg.noise);
            }
            next
        });
        let answer = answer_of(&nearest(&e, &w, &w_sq), eos);
        if !scored.contains_key(&answer) {
            score_fresh(
                energy,
                std::slice::from_ref(&answer),
                cfg.beta,
                &mut scored,
                ledger,
            )?;
        }
        let (discrete, objective) = scored[&answer];
        let accepted = objective < best_objective;
        if accepted {
            (best, best_energy, best_objective) = (answer, discrete, objective);
        }
        debug!(step, relaxed, discrete, best = best_energy, "langevin step");
        trace.push(StepTrace {
            relaxed_energy: relaxed,
            objective: best_objective,
            ..spend.trace(ledger, step, (discrete, accepted), (&best, best_energy))
        });
    }
    let last = answer_of(&nearest(&e, &w, &w_sq), eos);
    Ok(spend.finish(
        ledger,
        (start, start_energy),
        (best, best_energy),
        last,
        trace,
    ))
}

/// The energy of `e`'s projection to its nearest tokens, and its gradient passed straight
/// through to `e` `[L, D]`.
fn projected_grad(
    energy: &impl Energy,
    e: &Tensor,
    w: &Tensor,
    w_sq: &Tensor,
    ledger: &mut Compute,
) -> Result<(f64, Tensor)> {
    let x = e.detach().set_requires_grad(true);
    let projected = w.index_select(0, &nearest(&x.detach(), w, w_sq));
    let input = &projected + &x - x.detach(); // the projection forward, the identity backward
    let en = energy.embedded_energy(&input)?;
    ledger.energy_forward(1);
    en.backward();
    ledger.energy_backward(1);
    Ok((en.double_value(&[]), x.grad()))
}

#[cfg(test)]
mod tests {
    use super::super::analytic::TargetEnergy;
    use super::super::refine::refine;
    use super::*;

    const V: i64 = 12;
    const EOS: i64 = 11;

    fn cfg(steps: usize, lr: f64, noise: f64) -> RefineConfig {
        RefineConfig {
            method: super::super::Method::Langevin,
            steps,
            lr,
            noise,
            beta: 0.0,
            ..RefineConfig::default()
        }
    }

    #[test]
    fn nearest_is_by_euclidean_distance() {
        let w = Tensor::from_slice(&[0.0f32, 0.0, 1.0, 0.0, 0.0, 3.0]).view([3, 2]);
        let w_sq = w.square().sum_dim_intlist(1, false, Kind::Float);
        let e = Tensor::from_slice(&[0.9f32, 0.2, 0.1, 1.9, 0.1, 0.1]).view([3, 2]);
        let got = Vec::<i64>::try_from(nearest(&e, &w, &w_sq)).unwrap();
        assert_eq!(got, vec![1, 2, 0]);
    }

    /// On the distance-to-target energy, Langevin steps reach the target from a start with two
    /// wrong tokens, and the best energy never rises along the path.
    #[test]
    fn langevin_reaches_the_target_of_an_analytic_energy() {
        let target = vec![3, 1, 4, 1, 5];
        let energy = TargetEnergy::new(target.clone(), V, EOS);
        let mut ledger = Compute::default();
        tch::manual_seed(0);
        let start = vec![3, 7, 4, 2, 5];
        let out = refine(&energy, &start, None, &cfg(20, 0.2, 0.0), None, &mut ledger).unwrap();
        assert_eq!(out.start_energy, 2.0);
        assert_eq!(out.best, target);
        assert_eq!(out.best_energy, 0.0);
        let best: Vec<f32> = out.trace.iter().map(|s| s.best_energy).collect();
        assert!(best.windows(2).all(|w| w[1] <= w[0]), "{best:?}");
        // The ledger: the start's score, 3 per step, 1 per distinct answer scored after it.
        let scored = energy.scored.get() as f64;
        assert_eq!(ledger.energy_fwd, 3.0 * out.steps as f64 + scored);
        assert_eq!(out.trace.last().unwrap().energy_fwd, ledger.energy_fwd);
    }

    #[test]
    fn a_budget_stops_before_a_step_that_would_pass_it() {
        let energy = TargetEnergy::new(vec![3, 1, 4], V, EOS);
        let mut ledger = Compute::default();
        let out = refine(
            &energy,
            &[0, 0, 0],
            Some(3.0),
            &cfg(50, 0.05, 0.5),
            Some(10.0),
            &mut ledger,
        )
        .unwrap();
        // A step costs 3, or 4 when its answer is new: it runs only while 4 more fit in 10.
        assert!(out.steps >= 2, "{}", out.steps);
        assert!(ledger.energy_fwd <= 10.0 && ledger.energy_fwd + 4.0 > 10.0);
        let scored = energy.scored.get() as f64;
        assert_eq!(ledger.energy_fwd, 3.0 * out.steps as f64 + scored);
    }
}
