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
use crate::stage::{self, Common, Stage, StageArgs};

/// The `[compare]` section of a run config, and the flags of `ember compare`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Budgets in energy-model forward equivalents per prompt (comma-separated on the CLI).
    #[arg(long, value_delimiter = ',', default_values_t = Config::default().budgets)]
    pub budgets: Vec<usize>,
    /// Independent repetitions (sampling and noise seeds) on the same prompts.
    #[arg(long, default_value_t = Config::default().seeds)]
    pub seeds: usize,
    /// Share of a hybrid's budget spent on best-of-m before refining the winner.
    #[arg(long, default_value_t = Config::default().hybrid_share)]
    pub hybrid_share: f64,
    /// Sampling temperature of the policy samples.
    #[arg(long, default_value_t = Config::default().temperature)]
    pub temperature: f64,
    /// Longest sampled answer in tokens, EOS included.
    #[arg(long, default_value_t = Config::default().max_new_tokens)]
    pub max_new_tokens: usize,
    /// Sequences generated or scored together.
    #[arg(long, default_value_t = Config::default().batch)]
    pub batch: usize,
    /// Use only the first this many prompts (0 = all).
    #[arg(long, default_value_t = Config::default().max_prompts)]
    pub max_prompts: usize,
    /// Bootstrap resamples for the CIs.
    #[arg(long, default_value_t = Config::default().resamples)]
    pub resamples: usize,
    /// The optimiser of refine and hybrids (`steps` is set by each budget; flags: the
    /// optimiser flags of `ember refine`).
    #[arg(skip = Config::default().optimiser)]
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

/// The stage: `compare.parquet`, `compare.json`, `report.md` and the plots.
impl Stage for Config {
    const NAME: &'static str = "compare";
    const SHARDS: bool = true;
    type Inputs = Inputs;

    fn input_paths(inputs: &Inputs) -> Vec<PathBuf> {
        inputs.paths()
    }

    fn check(&self) -> Vec<Invalid> {
        let mut bad = Vec::new();
        if self.budgets.is_empty() || self.budgets.contains(&0) {
            bad.push(Invalid::new(
                "budgets",
                "needs positive integers, e.g. [1, 2, 4, 8]",
            ));
        }
        let zero = [
            ("seeds", self.seeds),
            ("batch", self.batch),
            ("optimiser.candidates", self.optimiser.candidates),
        ];
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
        bad.extend(super::sampled_temperature(self.temperature));
        bad
    }

    fn execute(&self, common: &Common, inputs: &Inputs, dir: &Path) -> Result<serde_json::Value> {
        let cfg = self;
        let on = inputs.load(common, cfg.max_prompts, None)?;
        let rows = compare(
            &compare_config(cfg, common.seed),
            &on.policy,
            &on.scorer,
            &on.prompts,
        )?;
        let metrics = write_outputs(
            dir,
            &(cfg, common),
            on.prompts.len(),
            cfg.seeds,
            &rows,
            cfg.resamples,
            common.seed,
        )?;
        Ok(metrics)
    }
}

pub type Args = StageArgs<Inputs, Config, super::refine::OptimiserArgs>;

pub fn cli(args: Args) -> Result<ExitCode> {
    let mut cfg = args.config;
    cfg.optimiser = args.extra.apply(&cfg.optimiser);
    let (common, inputs) = (Common::from(&args.run), &args.inputs);
    stage::run_cli(&cfg, &common, inputs, &args.out).context("ember compare failed")?;
    let report = std::fs::read_to_string(args.out.path.join(REPORT)).unwrap_or_default();
    print!("{}", report.split("## Plots").next().unwrap_or_default());
    println!("compare: report → {}", args.out.path.join(REPORT).display());
    Ok(ExitCode::SUCCESS)
}
