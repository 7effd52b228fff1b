//! Gradient refinement of an answer in a continuous relaxation of the token space, in the spirit
//! of energy-based transformers (Gladstone et al. 2025) and COLD decoding (Qin et al. 2022).
//!
//! The answer is a matrix of logits z ∈ R^{L×V}; the soft answer is p = softmax(z/τ). Each step
//! minimises E(x, p) + β·KL(p ‖ q) with one Adam step on z, where q are the policy's next-token
//! distributions along the answer (the KL keeps it fluent and near the policy). Options: τ
//! annealed geometrically, Langevin noise, straight-through hard decoding, and accepting a step
//! only if the discrete energy does not rise. After every step the discrete answer (argmax per
//! position, cut at the first end-of-answer token) is scored by the energy model on discrete
//! tokens and the best discrete answer so far is kept: results are always discrete; relaxed
//! energies are diagnostics only.
use std::collections::HashMap;

use serde::Serialize;
use tch::{Device, Kind, Tensor};
use tracing::{debug, instrument};

use super::compute::{refine_step_cost, Compute};
use super::energy::Energy;
pub use super::optimiser::{Method, RefineConfig};
use crate::error::Result;

/// One step of a refinement, for the traces file.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct StepTrace {
    pub step: usize,
    pub tau: f64,
    /// Relaxed energy E(x, p) before the step (diagnostic only).
    pub relaxed_energy: f64,
    /// KL(p ‖ q) before the step (diagnostic only).
    pub kl: f64,
    /// E + β·KL before the step: the quantity the step descends.
    pub objective: f64,
    /// Discrete energy of the answer decoded after the step.
    pub discrete_energy: f32,
    pub accepted: bool,
    /// Best discrete energy so far and its answer.
    pub best_energy: f32,
    pub best: Vec<i64>,
    /// Gold reward of the best answer so far, where the task has one (filled by the caller that
    /// knows the prompt, e.g. [`super::refined::refine_prompts`]; `None` otherwise).
    pub best_gold: Option<f32>,
    /// Energy forward equivalents spent so far by this refinement (start score included).
    pub energy_fwd: f64,
    /// Policy forward equivalents spent so far by this refinement (the KL term's, or the
    /// prior's of swaps).
    pub policy_fwd: f64,
    /// Wall-clock seconds since the refinement started.
    pub wall_s: f64,
}

/// The result of refining one answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RefineOutcome {
    pub start: Vec<i64>,
    pub start_energy: f32,
    pub best: Vec<i64>,
    pub best_energy: f32,
    /// The answer decoded at the end (may differ from the best).
    pub last: Vec<i64>,
    pub steps: usize,
    pub trace: Vec<StepTrace>,
}

/// The bookkeeping every optimiser shares: its clock and the ledger's spend when it started.
pub(super) struct Spend {
    clock: std::time::Instant,
    energy: f64,
    policy: f64,
}

impl Spend {
    pub fn start(ledger: &Compute) -> Self {
        Self {
            clock: std::time::Instant::now(),
            energy: ledger.energy_fwd,
            policy: ledger.policy_fwd,
        }
    }

    /// Step `step`'s trace: its discrete result and the best so far, the spend since the start;
    /// the relaxed numbers (τ, relaxed energy, KL, objective) zero for the caller to set.
    pub fn trace(
        &self,
        ledger: &Compute,
        step: usize,
        (discrete_energy, accepted): (f32, bool),
        (best, best_energy): (&[i64], f32),
    ) -> StepTrace {
        StepTrace {
            step,
            tau: 0.0,
            relaxed_energy: 0.0,
            kl: 0.0,
            objective: 0.0,
            discrete_energy,
            accepted,
            best_energy,
            best: best.to_vec(),
            best_gold: None,
            energy_fwd: ledger.energy_fwd - self.energy,
            policy_fwd: ledger.policy_fwd - self.policy,
            wall_s: self.clock.elapsed().as_secs_f64(),
        }
    }

    /// Adds the wall time to the ledger and returns the outcome.
    pub fn finish(
        self,
        ledger: &mut Compute,
        (start, start_energy): (&[i64], f32),
        (best, best_energy): (Vec<i64>, f32),
        last: Vec<i64>,
        trace: Vec<StepTrace>,
    ) -> RefineOutcome {
        ledger.wall_s += self.clock.elapsed().as_secs_f64();
        RefineOutcome {
            start: start.to_vec(),
            start_energy,
            best,
            best_energy,
            last,
            steps: trace.len(),
            trace,
        }
    }
}

/// Argmax per row of `z` [L, V], cut at the first `eos`.
pub fn decode(z: &Tensor, eos: i64) -> Vec<i64> {
    let ids = Vec::<i64>::try_from(z.argmax(-1, false).to_device(Device::Cpu)).unwrap_or_default();
    ids.into_iter().take_while(|&t| t != eos).collect()
}

/// τ at step `k` of `steps`: geometric from `tau` to `tau_end`.
pub fn tau_at(k: usize, steps: usize, tau: f64, tau_end: f64) -> f64 {
    if steps <= 1 {
        return tau;
    }
    tau * (tau_end / tau).powf(k as f64 / (steps - 1) as f64)
}

/// KL(p ‖ q) summed over positions, from log p and log q [L, V]: a scalar.
pub fn kl_rows(log_p: &Tensor, log_q: &Tensor) -> Tensor {
    (log_p.exp() * (log_p - log_q)).sum(Kind::Float)
}

/// Adam (Kingma & Ba 2015) state for one tensor.
pub struct Adam {
    m: Tensor,
    v: Tensor,
    t: i32,
}

impl Adam {
    const B1: f64 = 0.9;
    const B2: f64 = 0.999;
    const EPS: f64 = 1e-8;

    pub fn new(like: &Tensor) -> Self {
        Self {
            m: like.zeros_like(),
            v: like.zeros_like(),
            t: 0,
        }
    }

    /// The update Δ to add to the parameters for gradient `g` (bias-corrected).
    pub fn delta(&mut self, g: &Tensor, lr: f64) -> Tensor {
        self.t += 1;
        self.m = &self.m * Self::B1 + g * (1.0 - Self::B1);
        self.v = &self.v * Self::B2 + g.square() * (1.0 - Self::B2);
        let m_hat = &self.m / (1.0 - Self::B1.powi(self.t));
        let v_hat = &self.v / (1.0 - Self::B2.powi(self.t));
        -(m_hat / (v_hat.sqrt() + Self::EPS)) * lr
    }
}

/// Initial logits [L, V]: `scale` on the start answer's tokens, then `extra` end-of-answer rows.
fn init_logits(energy: &impl Energy, start: &[i64], cfg: &RefineConfig) -> Tensor {
    let mut ids = start.to_vec();
    ids.extend(std::iter::repeat_n(
        energy.eos_id(),
        cfg.extra_positions.max(1),
    ));
    let ids = Tensor::from_slice(&ids).to_device(energy.device());
    ids.one_hot(energy.vocab_size()).to_kind(Kind::Float) * cfg.init_scale // [L, V]
}

/// The relaxed objective at `z` and its gradient: (energy, kl, objective, dz).
fn objective_and_grad(
    energy: &impl Energy,
    z: &Tensor,
    tau: f64,
    cfg: &RefineConfig,
    ledger: &mut Compute,
) -> Result<(f64, f64, f64, Tensor)> {
    let z = z.detach().set_requires_grad(true);
    let log_p = (&z / tau).log_softmax(-1, Kind::Float); // [L, V]
    let p = log_p.exp();
    let p_in = if cfg.straight_through {
        let hard = p
            .argmax(-1, false)
            .one_hot(energy.vocab_size())
            .to_kind(Kind::Float);
        &hard + &p - p.detach()
    } else {
        p
    };
    let e = energy.soft_energy(&p_in)?;
    ledger.energy_forward(1);
    let kl = if cfg.beta > 0.0 {
        let log_q = energy.prior_log_probs(&p_in.detach())?;
        ledger.policy_forward(1);
        kl_rows(&log_p, &log_q)
    } else {
        Tensor::zeros([], (Kind::Float, z.device()))
    };
    let obj = &e + &kl * cfg.beta;
    obj.backward();
    ledger.energy_backward(1);
    Ok((
        e.double_value(&[]),
        kl.double_value(&[]),
        obj.double_value(&[]),
        z.grad(),
    ))
}

/// The discrete energy of `answer`, scored (and recorded in the ledger) only the first time.
pub(super) fn score_cached(
    energy: &impl Energy,
    answer: &[i64],
    cache: &mut HashMap<Vec<i64>, f32>,
    ledger: &mut Compute,
) -> Result<f32> {
    if let Some(&e) = cache.get(answer) {
        return Ok(e);
    }
    ledger.energy_rescore(1);
    let e = energy.score(&[answer.to_vec()])?[0];
    cache.insert(answer.to_vec(), e);
    Ok(e)
}

/// The start answer's discrete energy: `given` when the caller has it, else scored (1 forward).
fn start_energy_of(
    energy: &impl Energy,
    start: &[i64],
    given: Option<f32>,
    ledger: &mut Compute,
) -> Result<f32> {
    match given {
        Some(e) => Ok(e),
        None => {
            ledger.energy_rescore(1);
            Ok(energy.score(&[start.to_vec()])?[0])
        }
    }
}

/// One step of the logits: Adam's update of `grad`, plus Gaussian noise of scale
/// sqrt(2·lr)·`cfg.noise` (Langevin dynamics; none when the noise is 0).
fn langevin_step(z: &Tensor, adam: &mut Adam, grad: &Tensor, cfg: &RefineConfig) -> Tensor {
    tch::no_grad(|| {
        let mut next = z + adam.delta(grad, cfg.lr);
        if cfg.noise > 0.0 {
            next += next.randn_like() * ((2.0 * cfg.lr).sqrt() * cfg.noise);
        }
        next
    })
}

/// Refines `start` (token ids, no end-of-answer) against `energy` by `cfg.method`: the soft
/// relaxation here, token swaps ([`super::swap`]) or Langevin dynamics ([`super::langevin`]).
/// `start_energy` is its discrete energy when the caller already has it (otherwise it is scored
/// here). Stops after `cfg.steps` steps or before a step would take the ledger's energy cost
/// past `budget`. Noise draws come from tch's generator, which the caller seeds
/// (`tch::manual_seed`).
#[instrument(skip_all, fields(len = start.len()))]
pub fn refine(
    energy: &impl Energy,
    start: &[i64],
    start_energy: Option<f32>,
    cfg: &RefineConfig,
    budget: Option<f64>,
    ledger: &mut Compute,
) -> Result<RefineOutcome> {
    let spend = Spend::start(ledger);
    let start = (start, start_energy_of(energy, start, start_energy, ledger)?);
    match cfg.method {
        Method::Soft => soft_refine(energy, start, cfg, budget, ledger, spend),
        Method::Swap => super::swap::swap_refine(energy, start, cfg, budget, ledger, spend),
        Method::Langevin => {
            super::langevin::langevin_refine(energy, start, cfg, budget, ledger, spend)
        }
    }
}

/// The soft relaxation from the scored `(start, start_energy)`; the rest as [`refine`].
fn soft_refine(
    energy: &impl Energy,
    (start, start_energy): (&[i64], f32),
    cfg: &RefineConfig,
    budget: Option<f64>,
    ledger: &mut Compute,
    spend: Spend,
) -> Result<RefineOutcome> {
    let eos = energy.eos_id();
    let mut cache: HashMap<Vec<i64>, f32> = HashMap::from([(start.to_vec(), start_energy)]);
    let mut z = init_logits(energy, start, cfg);
    let mut adam = Adam::new(&z);
    let (mut current, mut current_energy) = (start.to_vec(), start_energy);
    let (mut best, mut best_energy) = (start.to_vec(), start_energy);
    let mut trace = Vec::new();
    for step in 0..cfg.steps {
        policy::interrupt::check(None)?; // Ctrl-C: refine and compare keep nothing partial
        if budget.is_some_and(|b| ledger.energy_fwd + refine_step_cost(true) > b + 1e-9) {
            break;
        }
        let tau = tau_at(step, cfg.steps, cfg.tau, cfg.tau_end);
        let (relaxed_energy, kl, objective, grad) =
            objective_and_grad(energy, &z, tau, cfg, ledger)?;
        let previous = z.shallow_clone();
        z = langevin_step(&z, &mut adam, &grad, cfg);
        let answer = decode(&z, eos);
        let e = score_cached(energy, &answer, &mut cache, ledger)?;
        let accepted = !(cfg.accept_if_lower && e > current_energy);
        if accepted {
            (current, current_energy) = (answer, e);
        } else {
            z = previous;
        }
        if current_energy < best_energy {
            (best, best_energy) = (current.clone(), current_energy);
        }
        debug!(
            step,
            relaxed_energy,
            kl,
            discrete = e,
            best = best_energy,
            "refine step"
        );
        trace.push(StepTrace {
            tau,
            relaxed_energy,
            kl,
            objective,
            ..spend.trace(ledger, step, (e, accepted), (&best, best_energy))
        });
    }
    let last = decode(&z, eos);
    Ok(spend.finish(
        ledger,
        (start, start_energy),
        (best, best_energy),
        last,
        trace,
    ))
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::super::analytic::TargetEnergy;
    use super::*;

    const V: i64 = 12;
    const EOS: i64 = 11;

    fn target() -> Vec<i64> {
        vec![3, 1, 4, 1, 5, 9]
    }

    fn random_answer(rng: &mut ChaCha8Rng, len: usize) -> Vec<i64> {
        (0..len).map(|_| rng.random_range(0..EOS)).collect()
    }

    #[test]
    fn decode_cuts_at_eos_and_tau_anneals() {
        let z = Tensor::from_slice(&[0.0f32, 2.0, 1.0, 5.0, 0.0, 0.0, 0.0, 0.0, 9.0]).view([3, 3]);
        assert_eq!(decode(&z, 2), vec![1, 0]);
        assert_eq!(decode(&z, 0), vec![1]);
        assert_eq!(tau_at(0, 5, 1.0, 0.25), 1.0);
        assert!((tau_at(4, 5, 1.0, 0.25) - 0.25).abs() < 1e-12);
        assert!((tau_at(2, 5, 1.0, 0.25) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn kl_rows_hand_value() {
        // p = (0.5, 0.5), q = (0.25, 0.75): KL = 0.5 ln 2 + 0.5 ln(2/3).
        let log_p = Tensor::from_slice(&[0.5f32, 0.5]).log().view([1, 2]);
        let log_q = Tensor::from_slice(&[0.25f32, 0.75]).log().view([1, 2]);
        let want = 0.5 * 2f64.ln() + 0.5 * (2.0f64 / 3.0).ln();
        assert!((kl_rows(&log_p, &log_q).double_value(&[]) - want).abs() < 1e-6);
    }

    #[test]
    fn adam_first_step_is_lr_times_sign() {
        let g = Tensor::from_slice(&[2.0f32, -0.5, 0.0]);
        let mut adam = Adam::new(&g);
        let d = Vec::<f32>::try_from(adam.delta(&g, 0.1)).unwrap();
        assert!((d[0] + 0.1).abs() < 1e-6 && (d[1] - 0.1).abs() < 1e-6 && d[2] == 0.0);
    }

    #[test]
    fn refinement_reaches_target_where_best_of_n_at_same_compute_does_not() {
        tch::manual_seed(0);
        let energy = TargetEnergy::new(target(), V, EOS);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let start = random_answer(&mut rng, 6);
        let cfg = RefineConfig {
            steps: 20,
            beta: 0.0,
            tau_end: 1.0,
            ..RefineConfig::default()
        };
        let mut ledger = Compute::default();
        let out = refine(&energy, &start, None, &cfg, None, &mut ledger).unwrap();
        assert!(out.start_energy > 0.0);
        assert_eq!(out.best, target());
        assert_eq!(out.best_energy, 0.0);
        assert!(out.trace.iter().position(|s| s.best_energy == 0.0).unwrap() < 20);
        // Best-of-N from the (uniform) policy with the same energy compute: one score per sample.
        let n = ledger.energy_fwd as usize;
        let samples: Vec<Vec<i64>> = (0..n).map(|_| random_answer(&mut rng, 6)).collect();
        let best = energy
            .score(&samples)
            .unwrap()
            .into_iter()
            .fold(f32::INFINITY, f32::min);
        assert!(best >= 2.0, "best-of-{n} reached {best}");
    }

    #[test]
    fn small_steps_decrease_the_relaxed_objective_monotonically() {
        let mut energy = TargetEnergy::new(target(), V, EOS);
        // A non-uniform prior so the KL term pulls against the energy.
        energy.prior = (0..V).map(|v| -1.0 - 0.2 * v as f32).collect();
        let lse = energy.prior.iter().map(|&x| x.exp()).sum::<f32>().ln();
        energy.prior.iter_mut().for_each(|x| *x -= lse);
        let start = vec![0, 2, 2, 7, 8, 10];
        let cfg = RefineConfig {
            steps: 40,
            lr: 0.01,
            beta: 0.3,
            tau_end: 1.0,
            ..RefineConfig::default()
        };
        let out = refine(&energy, &start, None, &cfg, None, &mut Compute::default()).unwrap();
        let objs: Vec<f64> = out.trace.iter().map(|s| s.objective).collect();
        assert_eq!(objs.len(), 40);
        for w in objs.windows(2) {
            assert!(w[1] < w[0], "objective rose: {objs:?}");
        }
    }

    #[test]
    fn ledger_matches_the_calls_actually_made() {
        tch::manual_seed(2);
        let energy = TargetEnergy::new(target(), V, EOS);
        let cfg = RefineConfig {
            steps: 10,
            noise: 0.3,
            ..RefineConfig::default()
        };
        let mut ledger = Compute::default();
        let out = refine(&energy, &[0, 0, 0], None, &cfg, None, &mut ledger).unwrap();
        let (soft, prior, scored) = (
            energy.soft_calls.get(),
            energy.prior_calls.get(),
            energy.scored.get(),
        );
        assert_eq!(soft, 10);
        assert_eq!(prior, 10);
        assert_eq!(ledger.energy_fwd, (3 * soft + scored) as f64);
        assert_eq!(ledger.rescores as usize, scored);
        assert_eq!(ledger.policy_fwd, prior as f64);
        assert_eq!(out.trace.last().unwrap().energy_fwd, ledger.energy_fwd);
        // Re-decoding an answer already scored costs nothing: fewer scores than steps + 1 here.
        assert!(scored <= 11);
    }

    #[test]
    fn budget_caps_the_energy_compute() {
        let energy = TargetEnergy::new(target(), V, EOS);
        let mut ledger = Compute::default();
        let cfg = RefineConfig {
            steps: 100,
            ..RefineConfig::default()
        };
        let out = refine(&energy, &[1, 2], Some(2.0), &cfg, Some(13.0), &mut ledger).unwrap();
        // Steps cost 3 (answer unchanged) or 4 (re-scored); stop when 4 more might not fit.
        assert!(
            ledger.energy_fwd <= 13.0 && ledger.energy_fwd + 4.0 > 13.0,
            "{}",
            ledger.energy_fwd
        );
        assert!(out.steps >= 3 && out.steps <= 4);
        assert_eq!(
            energy.scored.get() + 3 * energy.soft_calls.get(),
            ledger.energy_fwd as usize
        );
    }

    #[test]
    fn accept_if_lower_never_lets_the_current_energy_rise() {
        tch::manual_seed(4);
        let energy = TargetEnergy::new(target(), V, EOS);
        let cfg = RefineConfig {
            steps: 15,
            noise: 2.0,
            accept_if_lower: true,
            straight_through: true,
            ..RefineConfig::default()
        };
        let out = refine(
            &energy,
            &[5, 5, 5, 5],
            None,
            &cfg,
            None,
            &mut Compute::default(),
        )
        .unwrap();
        let mut current = out.start_energy;
        for s in &out.trace {
            if s.accepted {
                assert!(s.discrete_energy <= current);
                current = s.discrete_energy;
            }
        }
        assert!(
            out.trace.iter().any(|s| !s.accepted),
            "noise this large must be rejected once"
        );
    }
}
