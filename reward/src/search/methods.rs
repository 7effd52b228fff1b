//! The three decoding methods of the comparison, run on each prompt at every budget from one
//! shared pool of policy samples per seed: best-of-N (the lowest energy of the first N samples),
//! refine (refinement of the first sample) and hybrid (best-of-m, then refinement of the winner).
//! Budgets count energy-model forward equivalents ([`super::compute`]); the rows go to
//! [`super::compare::aggregate`].
use policy::pool::{by_prompt, draw, gold_of, ranking, Candidate};
use policy::sample::SampleConfig;
use policy::Policy;
use rand::Rng as _;
use tracing::{info, instrument};

use super::bon::kl_bound;
use super::compare::{best_within, hybrid_samples, policy_within, spent_within, Row};
use super::compute::Compute;
use super::energy::{max_answer_positions, PromptEnergy};
use super::refine::{refine, RefineConfig, RefineOutcome};
use super::refined::answer_logprobs;
use crate::error::Result;
use crate::EnergyScorer;

/// The settings of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareConfig {
    /// Budgets in energy-model forward equivalents per prompt (positive).
    pub budgets: Vec<usize>,
    /// Independent repetitions (sampling and noise seeds) on the same prompts.
    pub seeds: usize,
    /// Share of a hybrid's budget spent on best-of-m before refining the winner.
    pub hybrid_share: f64,
    /// The sampler of the shared pool (`n` and `seed` are set per seed).
    pub sampling: SampleConfig,
    /// The optimiser of refine and hybrids (`steps` is set by each budget).
    pub optimiser: RefineConfig,
    /// The run seed.
    pub seed: u64,
}

/// Everything one seed needs: models, the sampled pool's per-sample cost and the settings.
struct SeedRun<'a> {
    cfg: &'a CompareConfig,
    policy: &'a Policy,
    scorer: &'a EnergyScorer,
    seed: u64,
    max_len: usize,
    /// Wall seconds per sample to generate and score it.
    sample_s: f64,
}

/// A refinement result awaiting its log-probs: row index → (start answer, final answer, KL offset).
type Pending = Vec<(usize, String, String, f64)>;

/// What a refinement had reached within one budget: the row's energy, answer, steps, wall
/// seconds, energy forwards spent and policy forwards of its steps.
struct Reached {
    energy: f32,
    answer: String,
    steps: usize,
    wall_s: f64,
    energy_fwd: f64,
    policy_fwd: f64,
}

impl SeedRun<'_> {
    fn ids_of(&self, c: &Candidate) -> Vec<i64> {
        let eos = self.policy.tokenizer.eos_id();
        c.answer_ids
            .iter()
            .copied()
            .take_while(|&t| t != eos)
            .take(self.max_len)
            .collect()
    }

    fn row(&self, c: &Candidate, method: &str, budget: usize) -> Row {
        Row {
            prompt_id: c.prompt_id,
            prompt: c.prompt.clone(),
            method: method.into(),
            budget,
            seed: self.seed,
            answer: c.answer.clone(),
            energy: c.energy,
            gold: c.gold,
            kl: kl_bound(budget),
            energy_fwd: budget as f64,
            policy_fwd: budget as f64,
            wall_s: budget as f64 * self.sample_s,
            steps: 0,
        }
    }

    /// Refines `start` (already scored, `spent` forwards so far) within the largest `budget`.
    fn refine_from(
        &self,
        c: &Candidate,
        spent: usize,
        budget: usize,
        stream: u64,
    ) -> Result<RefineOutcome> {
        let start = self.ids_of(c);
        let positions = start.len() + self.cfg.optimiser.extra_positions.max(1);
        let energy = PromptEnergy::new(self.scorer, self.policy, &c.prompt, positions)?;
        tch::manual_seed(policy::rng::torch_seed(self.seed, "compare-noise", stream));
        let mut ledger = Compute {
            energy_fwd: spent as f64,
            ..Compute::default()
        };
        let opt = RefineConfig {
            steps: budget,
            ..self.cfg.optimiser.clone()
        };
        refine(
            &energy,
            &start,
            Some(c.energy),
            &opt,
            Some(budget as f64),
            &mut ledger,
        )
    }

    /// What `out` (started after `spent` forwards) had reached within budget `b`.
    fn reached(&self, out: &RefineOutcome, spent: usize, b: usize) -> Reached {
        let (energy, ids, steps, wall_s) = best_within(out, spent as f64, b as f64);
        let policy_fwd = policy_within(out, spent as f64, b as f64);
        Reached {
            energy,
            answer: self.scorer.tokenizer.decode(&ids),
            steps,
            wall_s,
            energy_fwd: spent_within(out, spent as f64, b as f64),
            policy_fwd,
        }
    }

    /// A refinement row of `method` at budget `b` from `start` after `m` samples (KL offset
    /// `kl`); its KL is completed by [`fill_kl`].
    fn refined_row(&self, start: &Candidate, method: &str, b: usize, m: usize, r: Reached) -> Row {
        let mut row = self.row(start, method, b);
        (row.energy, row.gold, row.steps, row.energy_fwd) = (
            r.energy,
            gold_of(&start.prompt, &r.answer),
            r.steps,
            r.energy_fwd,
        );
        (row.policy_fwd, row.wall_s) =
            (m as f64 + r.policy_fwd, m as f64 * self.sample_s + r.wall_s);
        row.answer = r.answer;
        row
    }

    /// [`Self::prompt_rows`] of every prompt, in order, with their pending KL fills. Under a
    /// process group the ranks share the prompts (policy::dist::map_chunks): each prompt's
    /// refinements have their own noise streams, so the rows are one process's.
    fn all_prompt_rows(&self, groups: &[&[Candidate]]) -> Result<(Vec<Row>, Pending)> {
        let per_prompt =
            policy::dist::try_map_chunks(policy::dist::group(), groups.len(), "compare", |g| {
                let (mut rows, mut pending) = (Vec::new(), Vec::new());
                self.prompt_rows(groups[g], &mut rows, &mut pending)
                    .map(|()| (rows, pending))
            })?;
        let (mut rows, mut pending) = (Vec::new(), Vec::new());
        for (r, p) in per_prompt {
            let base = rows.len();
            pending.extend(p.into_iter().map(|(i, a, b, k)| (i + base, a, b, k)));
            rows.extend(r);
        }
        Ok((rows, pending))
    }

    /// Rows of every method and budget for one prompt's candidates (k order).
    fn prompt_rows(
        &self,
        group: &[Candidate],
        rows: &mut Vec<Row>,
        pending: &mut Pending,
    ) -> Result<()> {
        let budgets = &self.cfg.budgets;
        let energies: Vec<f32> = group.iter().map(|c| c.energy).collect();
        for &b in budgets {
            rows.push(self.row(&group[ranking(&energies[..b])[0]], "best-of-n", b));
        }
        let first = &group[0];
        let max_b = *budgets.iter().max().expect("budgets are checked non-empty");
        let out = self.refine_from(first, 1, max_b, first.prompt_id as u64 * 2)?;
        for &b in budgets {
            let mut r = self.refined_row(first, "refine", b, 1, self.reached(&out, 1, b));
            r.kl = 0.0;
            pending.push((rows.len(), first.answer.clone(), r.answer.clone(), 0.0));
            rows.push(r);
        }
        for &b in budgets {
            let m = hybrid_samples(b, self.cfg.hybrid_share);
            let winner = &group[ranking(&energies[..m])[0]];
            let out = self.refine_from(winner, m, b, first.prompt_id as u64 * 2 + 1)?;
            let mut r = self.refined_row(winner, "hybrid", b, m, self.reached(&out, m, b));
            r.kl = kl_bound(m);
            pending.push((
                rows.len(),
                winner.answer.clone(),
                r.answer.clone(),
                kl_bound(m),
            ));
            rows.push(r);
        }
        Ok(())
    }
}

/// Fills the refinement rows' KL: offset + log π(start) − log π(final).
fn fill_kl(policy: &Policy, rows: &mut [Row], pending: &Pending, batch: usize) -> Result<()> {
    let prompts: Vec<String> = pending.iter().map(|p| rows[p.0].prompt.clone()).collect();
    let starts: Vec<String> = pending.iter().map(|p| p.1.clone()).collect();
    let finals: Vec<String> = pending.iter().map(|p| p.2.clone()).collect();
    let lp_start = answer_logprobs(policy, &prompts, &starts, batch)?;
    let lp_final = answer_logprobs(policy, &prompts, &finals, batch)?;
    for (i, p) in pending.iter().enumerate() {
        rows[p.0].kl = p.3 + f64::from(lp_start[i] - lp_final[i]);
    }
    Ok(())
}

/// Every method at every budget on every prompt, `cfg.seeds` times: the rows, seed by seed
/// and prompt by prompt. Models are used frozen.
#[instrument(skip_all, fields(prompts = prompts.len(), seeds = cfg.seeds))]
pub fn compare(
    cfg: &CompareConfig,
    policy: &Policy,
    scorer: &EnergyScorer,
    prompts: &[String],
) -> Result<Vec<Row>> {
    let max_len =
        max_answer_positions(scorer, policy).saturating_sub(cfg.optimiser.extra_positions.max(1));
    let n_max = *cfg
        .budgets
        .iter()
        .max()
        .expect("budgets are checked non-empty");
    let mut rows = Vec::new();
    for s in 0..cfg.seeds as u64 {
        let seed = policy::rng::stream(cfg.seed, "compare-seed", s).random::<u64>();
        let sampling = SampleConfig {
            n: n_max,
            seed,
            ..cfg.sampling.clone()
        };
        let clock = std::time::Instant::now();
        let cands = draw(policy, scorer, prompts, &sampling, sampling.batch)?;
        let sample_s = clock.elapsed().as_secs_f64() / cands.len().max(1) as f64;
        let seed_run = SeedRun {
            cfg,
            policy,
            scorer,
            seed: s,
            max_len,
            sample_s,
        };
        let (seed_rows, pending) = seed_run.all_prompt_rows(&by_prompt(&cands))?;
        let mut seed_rows = seed_rows;
        fill_kl(policy, &mut seed_rows, &pending, sampling.batch)?;
        info!(seed = s, rows = seed_rows.len(), "compared");
        rows.extend(seed_rows);
    }
    Ok(rows)
}
