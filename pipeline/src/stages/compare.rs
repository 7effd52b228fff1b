//! `ember compare`: rank (best-of-N) vs gradient refinement vs hybrids at equal energy-model
//! compute, on the same prompts and seeds, with bootstrap CIs over prompts and the Gao et al.
//! (2022) best-of-N fit.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use policy::sample::SampleConfig;
use policy::Policy;
use rand::Rng as _;
use reward::EnergyScorer;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::config::Invalid;
use crate::refine::compare::{best_within, hybrid_samples, spent_within, Row};
use crate::refine::io::{draw, gold_of, load_prompts, Candidate};
use crate::refine::models::{max_answer_positions, PromptEnergy};
use crate::refine::report::{write_outputs, REPORT};
use crate::refine::{refine, Compute, RefineConfig};
use crate::select::bon::{kl_bound, ranking};
use crate::stage::{self, Common, RuntimeArgs, SeedArg, Stage};
use crate::stages::refine::{load_models, logprobs};

pub const NAME: &str = "compare";

/// The `[compare]` section of a run config; also built from the CLI flags.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Budgets in energy-model forward equivalents per prompt.
    pub budgets: Vec<usize>,
    /// Independent repetitions (sampling and noise seeds) on the same prompts.
    pub seeds: usize,
    /// Share of a hybrid's budget spent on best-of-m before refining the winner.
    pub hybrid_share: f64,
    /// Sampling temperature of the policy samples.
    pub temperature: f64,
    /// Longest sampled answer in tokens, EOS included.
    pub max_new_tokens: usize,
    /// Sequences generated or scored together.
    pub batch: usize,
    /// Use only the first this many prompts (0 = all).
    pub max_prompts: usize,
    /// Bootstrap resamples for the CIs.
    pub resamples: usize,
    /// The optimiser of refine and hybrids (`steps` is set by each budget).
    pub optimiser: RefineConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            budgets: vec![1, 2, 4, 8, 16, 32],
            seeds: 1,
            hybrid_share: 0.5,
            temperature: 1.0,
            max_new_tokens: 16,
            batch: 64,
            max_prompts: 16,
            resamples: 1000,
            optimiser: RefineConfig::default(),
        }
    }
}

impl Config {
    fn check(&self) -> Vec<Invalid> {
        let mut bad = Vec::new();
        if self.budgets.is_empty() || self.budgets.contains(&0) {
            bad.push(Invalid::new(
                "budgets",
                "needs positive integers, e.g. [1, 2, 4, 8]",
            ));
        }
        let zero = [("seeds", self.seeds), ("batch", self.batch)];
        bad.extend(Invalid::zero(&zero));
        let zero = [
            ("max_new_tokens", self.max_new_tokens),
            ("resamples", self.resamples),
        ];
        bad.extend(Invalid::zero(&zero));
        if !(self.hybrid_share > 0.0 && self.hybrid_share < 1.0) {
            bad.push(Invalid::new(
                "hybrid_share",
                format!("must be in (0, 1), got {}", self.hybrid_share),
            ));
        }
        let why = "best-of-N needs distinct samples";
        let t = Invalid::below("temperature", self.temperature, 0.0, false);
        bad.extend(t.map(|i| Invalid::new(i.key, format!("{}; {why}", i.message))));
        bad
    }
}

/// Upstream artifacts: a policy directory, a reward model directory and a prompts file.
pub type Inputs = super::OnPolicy;

/// Everything one seed needs: models, prompts, the sampled pool and per-sample costs.
struct SeedRun<'a> {
    cfg: &'a Config,
    policy: &'a Policy,
    scorer: &'a EnergyScorer,
    seed: u64,
    max_len: usize,
    /// Wall seconds per sample to generate and score it.
    sample_s: f64,
}

/// A refinement result awaiting its log-probs: row index → (start answer, final answer, KL offset).
type Pending = Vec<(usize, String, String, f64)>;

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
    ) -> Result<crate::refine::RefineOutcome> {
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

    /// Rows of every method and budget for one prompt's candidates (k order).
    fn prompt_rows(
        &self,
        group: &[Candidate],
        rows: &mut Vec<Row>,
        pending: &mut Pending,
    ) -> Result<()> {
        let budgets = &self.cfg.budgets;
        let energies: Vec<f32> = group.iter().map(|c| c.energy).collect();
        let refine_steps = |out: &crate::refine::RefineOutcome, spent: usize, b: usize| {
            let (energy, ids, steps, wall) = best_within(out, spent as f64, b as f64);
            let policy_fwd = steps as f64 * f64::from(u8::from(self.cfg.optimiser.beta > 0.0));
            (
                energy,
                self.scorer.tokenizer.decode(&ids),
                steps,
                wall,
                spent_within(out, spent as f64, b as f64),
                policy_fwd,
            )
        };
        for &b in budgets {
            rows.push(self.row(&group[ranking(&energies[..b])[0]], "best-of-n", b));
        }
        let first = &group[0];
        let max_b = *budgets.iter().max().expect("checked");
        let out = self.refine_from(first, 1, max_b, first.prompt_id as u64 * 2)?;
        for &b in budgets {
            let (energy, answer, steps, wall, spent, pol) = refine_steps(&out, 1, b);
            let mut r = self.row(first, "refine", b);
            (r.energy, r.gold, r.steps, r.energy_fwd) =
                (energy, gold_of(&first.prompt, &answer), steps, spent);
            (r.policy_fwd, r.wall_s, r.kl) = (1.0 + pol, self.sample_s + wall, 0.0);
            pending.push((rows.len(), first.answer.clone(), answer.clone(), 0.0));
            r.answer = answer;
            rows.push(r);
        }
        for &b in budgets {
            let m = hybrid_samples(b, self.cfg.hybrid_share);
            let winner = &group[ranking(&energies[..m])[0]];
            let out = self.refine_from(winner, m, b, first.prompt_id as u64 * 2 + 1)?;
            let (energy, answer, steps, wall, spent, pol) = refine_steps(&out, m, b);
            let mut r = self.row(winner, "hybrid", b);
            (r.energy, r.gold, r.steps, r.energy_fwd) =
                (energy, gold_of(&winner.prompt, &answer), steps, spent);
            (r.policy_fwd, r.wall_s, r.kl) =
                (m as f64 + pol, m as f64 * self.sample_s + wall, kl_bound(m));
            pending.push((
                rows.len(),
                winner.answer.clone(),
                answer.clone(),
                kl_bound(m),
            ));
            r.answer = answer;
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
    let lp_start = logprobs(policy, &prompts, &starts, batch)?;
    let lp_final = logprobs(policy, &prompts, &finals, batch)?;
    for (i, p) in pending.iter().enumerate() {
        rows[p.0].kl = p.3 + f64::from(lp_start[i] - lp_final[i]);
    }
    Ok(())
}

/// The stage, through [`crate::stage::run`].
impl Stage for Config {
    const NAME: &'static str = NAME;
    const RESUMABLE: bool = false;
    const SCRATCH: &'static [&'static str] = &[];
    type Inputs = Inputs;

    fn input_paths(inputs: &Inputs) -> Vec<PathBuf> {
        inputs.paths()
    }

    fn check(&self) -> Vec<Invalid> {
        self.check()
    }

    fn execute(&self, common: &Common, inputs: &Inputs, dir: &Path) -> Result<serde_json::Value> {
        execute(self, common, inputs, dir)
    }
}

/// The stage: typed config in, manifest out.
fn execute(
    cfg: &Config,
    common: &Common,
    inputs: &Inputs,
    dir: &Path,
) -> Result<serde_json::Value> {
    let (device, _amp) = common.device()?;
    let prompts = load_prompts(&inputs.prompts, cfg.max_prompts)?;
    let (policy, scorer) = load_models(&inputs.policy, &inputs.reward, device)?;
    let max_len =
        max_answer_positions(&scorer, &policy).saturating_sub(cfg.optimiser.extra_positions.max(1));
    let n_max = *cfg.budgets.iter().max().expect("checked");
    let mut rows = Vec::new();
    for s in 0..cfg.seeds as u64 {
        let seed = policy::rng::stream(common.seed, "compare-seed", s).random::<u64>();
        let sampling = SampleConfig {
            n: n_max,
            temperature: cfg.temperature,
            top_k: None,
            top_p: None,
            max_new_tokens: cfg.max_new_tokens,
            batch: cfg.batch,
            seed,
        };
        let clock = std::time::Instant::now();
        let cands = draw(&policy, &scorer, &prompts, &sampling)?;
        let sample_s = clock.elapsed().as_secs_f64() / cands.len().max(1) as f64;
        let seed_run = SeedRun {
            cfg,
            policy: &policy,
            scorer: &scorer,
            seed: s,
            max_len,
            sample_s,
        };
        let mut seed_rows = Vec::new();
        let mut pending = Vec::new();
        for group in cands.chunk_by(|a, b| a.prompt_id == b.prompt_id) {
            seed_run.prompt_rows(group, &mut seed_rows, &mut pending)?;
        }
        fill_kl(&policy, &mut seed_rows, &pending, cfg.batch)?;
        info!(seed = s, rows = seed_rows.len(), "compared");
        rows.extend(seed_rows);
    }
    let metrics = write_outputs(
        dir,
        &(cfg, common),
        prompts.len(),
        cfg.seeds,
        &rows,
        cfg.resamples,
        common.seed,
    )?;
    Ok(metrics)
}

/// Compare best-of-N, gradient refinement and hybrids (best-of-m, then refine the winner) at
/// equal energy-model compute; writes compare.parquet, compare.json and report.md with plots.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub on: super::OnPolicy,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Budgets in energy-model forward passes per prompt, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = Config::default().budgets)]
    pub budgets: Vec<usize>,
    /// Independent repetitions (sampling and noise seeds) on the same prompts.
    #[arg(long, default_value_t = Config::default().seeds)]
    pub seeds: usize,
    /// Share of a hybrid's budget spent on best-of-m before refining the winner.
    #[arg(long, default_value_t = Config::default().hybrid_share)]
    pub hybrid_share: f64,
    /// Use only the first this many prompts (0 = all).
    #[arg(long, default_value_t = Config::default().max_prompts)]
    pub max_prompts: usize,
    /// Longest sampled answer in tokens, EOS included.
    #[arg(long, default_value_t = Config::default().max_new_tokens)]
    pub max_new_tokens: usize,
    /// Adam learning rate on the answer logits.
    #[arg(long, default_value_t = RefineConfig::default().lr)]
    pub lr: f64,
    /// Weight of KL(soft answer ‖ policy); 0 = energy only.
    #[arg(long, default_value_t = RefineConfig::default().beta)]
    pub beta: f64,
    /// Softmax temperature at the first step.
    #[arg(long, default_value_t = RefineConfig::default().tau)]
    pub tau: f64,
    /// Langevin noise scale.
    #[arg(long, default_value_t = RefineConfig::default().noise)]
    pub noise: f64,
    #[command(flatten)]
    pub seed: SeedArg,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn cli(args: Args) -> Result<ExitCode> {
    let optimiser = RefineConfig {
        lr: args.lr,
        beta: args.beta,
        tau: args.tau,
        noise: args.noise,
        ..RefineConfig::default()
    };
    let cfg = Config {
        budgets: args.budgets,
        seeds: args.seeds,
        hybrid_share: args.hybrid_share,
        max_prompts: args.max_prompts,
        max_new_tokens: args.max_new_tokens,
        optimiser,
        ..Config::default()
    };
    let common = Common::new(&args.seed, &args.runtime);
    let inputs = args.on.clone();
    stage::run(&cfg, &common, &inputs, &args.out).context("ember compare failed")?;
    let report = std::fs::read_to_string(args.out.join(REPORT)).unwrap_or_default();
    print!("{}", report.split("## Plots").next().unwrap_or_default());
    println!("compare: report → {}", args.out.join(REPORT).display());
    Ok(ExitCode::SUCCESS)
}
