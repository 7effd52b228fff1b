//! `ember compare`: rank (best-of-N) vs gradient refinement vs hybrids at equal energy-model
//! compute, on the same prompts and seeds, with bootstrap CIs over prompts and the Gao et al.
//! (2022) best-of-N fit.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use policy::sample::SampleConfig;
use reward::search::methods::{compare, CompareConfig};
use reward::search::RefineConfig;
use serde::{Deserialize, Serialize};

use crate::compare_report::{write_outputs, REPORT};
use crate::config::Invalid;
use crate::stage::{self, Common, RuntimeArgs, SeedArg, Stage};
use crate::stages::rank::load_prompts;
use crate::stages::refine::load_models;

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

/// The library's settings for this config under the run seed.
fn compare_config(cfg: &Config, seed: u64) -> CompareConfig {
    CompareConfig {
        budgets: cfg.budgets.clone(),
        seeds: cfg.seeds,
        hybrid_share: cfg.hybrid_share,
        sampling: SampleConfig {
            n: 1,
            temperature: cfg.temperature,
            top_k: None,
            top_p: None,
            max_new_tokens: cfg.max_new_tokens,
            batch: cfg.batch,
            seed,
        },
        optimiser: cfg.optimiser.clone(),
        seed,
    }
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
    let rows = compare(
        &compare_config(cfg, common.seed),
        &policy,
        &scorer,
        &prompts,
    )?;
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
