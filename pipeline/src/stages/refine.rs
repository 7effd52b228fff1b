//! `ember refine`: gradient refinement of policy answers on the energy in a continuous
//! relaxation (soft answers p = softmax(z/τ) fed as p·W_emb; cf. energy-based transformers,
//! Gladstone et al. 2025, and COLD decoding, Qin et al. 2022), keeping the best discrete answer.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use policy::sample::SampleConfig;
use reward::search::io::{write_refined, write_traces, Init};
use reward::search::refined::{refine_prompts, step_diagnostics, summary};
use reward::search::{Method, RefineConfig};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::config::Invalid;
use crate::stage::{self, Common, Stage, StageArgs};

pub const REFINED: &str = "refined.parquet";
pub const TRACES: &str = "traces.parquet";

/// The `[refine]` section of a run config, and the flags of `ember refine`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Start from the policy's greedy answer or from one sample (greedy or sample).
    #[arg(long, default_value_t = Config::default().init)]
    pub init: Init,
    /// Sampling temperature of `init = sample`.
    #[arg(long, default_value_t = Config::default().temperature)]
    pub temperature: f64,
    /// Longest start answer in tokens, EOS included.
    #[arg(long, default_value_t = Config::default().max_new_tokens)]
    pub max_new_tokens: usize,
    /// Sequences generated or scored together.
    #[arg(long, default_value_t = Config::default().batch)]
    pub batch: usize,
    /// Use only the first this many prompts (0 = all).
    #[arg(long, default_value_t = Config::default().max_prompts)]
    pub max_prompts: usize,
    /// The optimiser (`[refine.optimiser]`; flags: `--steps` and [`OptimiserArgs`]).
    #[arg(skip = Config::default().optimiser)]
    pub optimiser: RefineConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            init: Init::Sample,
            temperature: 1.0,
            max_new_tokens: 16,
            batch: 64,
            max_prompts: 32,
            optimiser: RefineConfig::default(),
        }
    }
}

impl Config {
    pub fn sampling(&self, seed: u64) -> SampleConfig {
        SampleConfig {
            n: 1,
            temperature: self.temperature,
            top_k: None,
            top_p: None,
            max_new_tokens: self.max_new_tokens,
            batch: self.batch,
            seed,
        }
    }
}

/// Upstream artifacts: a policy directory, a reward model directory and a prompts file.
pub type Inputs = super::OnPolicy;

/// The stage: `refined.parquet` and `traces.parquet`.
impl Stage for Config {
    const NAME: &'static str = "refine";
    const SHARDS: bool = true;
    type Inputs = Inputs;

    fn input_paths(inputs: &Inputs) -> Vec<PathBuf> {
        inputs.paths()
    }

    fn check(&self) -> Vec<Invalid> {
        let o = &self.optimiser;
        let zero = [
            ("batch", self.batch),
            ("max_new_tokens", self.max_new_tokens),
        ];
        let mut bad: Vec<Invalid> = Invalid::zero(&zero).into_iter().collect();
        bad.extend(Invalid::zero(&[("optimiser.candidates", o.candidates)]));
        for (key, v) in [("lr", o.lr), ("tau", o.tau), ("tau_end", o.tau_end)] {
            bad.extend(Invalid::below(&format!("optimiser.{key}"), v, 0.0, false));
        }
        for (key, v) in [("beta", o.beta), ("noise", o.noise)] {
            bad.extend(Invalid::below(&format!("optimiser.{key}"), v, 0.0, true));
        }
        if self.init == Init::Sample && (self.temperature.is_nan() || self.temperature <= 0.0) {
            bad.push(Invalid::new(
                "temperature",
                "init = sample needs a temperature > 0",
            ));
        }
        bad
    }

    fn execute(&self, common: &Common, inputs: &Inputs, dir: &Path) -> Result<serde_json::Value> {
        let cfg = self;
        let on = inputs.load(
            common,
            cfg.max_prompts,
            Some(policy::rng::torch_seed(common.seed, "refine", 0)),
        )?;
        let refined = refine_prompts(
            &on.policy,
            &on.scorer,
            &on.prompts,
            cfg.init,
            &cfg.sampling(common.seed),
            &cfg.optimiser,
            common.seed,
        )?;
        write_refined(&dir.join(REFINED), &refined.rows)?;
        write_traces(&dir.join(TRACES), &refined.traces)?;
        let mut metrics = summary(&refined.rows);
        metrics["step_diagnostics"] = step_diagnostics(&refined.rows, &refined.traces);
        info!(%metrics, "refined");
        Ok(metrics)
    }
}

pub type Args = StageArgs<Inputs, Config, Flags>;

/// `ember refine`'s own flags: the steps and the optimiser.
#[derive(Debug, clap::Args)]
pub struct Flags {
    /// Gradient steps per answer.
    #[arg(long, default_value_t = RefineConfig::default().steps)]
    pub steps: usize,
    #[command(flatten)]
    pub optimiser: OptimiserArgs,
}

/// The refinement optimiser's flags, shared by `ember refine` and `ember compare` (in a run
/// config: `[refine.optimiser]`, `[compare.optimiser]`).
#[derive(Debug, Clone, clap::Args)]
pub struct OptimiserArgs {
    /// soft (Adam on a continuous relaxation of the answer) or swap (gradient-guided token
    /// swaps, each scored exactly).
    #[arg(long, value_enum, default_value_t = RefineConfig::default().method)]
    pub method: Method,
    /// swap: candidate swaps scored per step.
    #[arg(long, default_value_t = RefineConfig::default().candidates)]
    pub candidates: usize,
    /// Adam learning rate on the answer logits.
    #[arg(long, default_value_t = RefineConfig::default().lr)]
    pub lr: f64,
    /// Weight of KL(soft answer ‖ policy); 0 = energy only.
    #[arg(long, default_value_t = RefineConfig::default().beta)]
    pub beta: f64,
    /// Softmax temperature at the first step.
    #[arg(long, default_value_t = RefineConfig::default().tau)]
    pub tau: f64,
    /// Temperature at the last step (geometric annealing).
    #[arg(long, default_value_t = RefineConfig::default().tau_end)]
    pub tau_end: f64,
    /// Langevin noise scale.
    #[arg(long, default_value_t = RefineConfig::default().noise)]
    pub noise: f64,
    /// Straight-through: feed the hard argmax forward, gradients through the soft answer.
    #[arg(long)]
    pub straight_through: bool,
    /// Undo steps whose decoded answer has a higher energy.
    #[arg(long)]
    pub accept_if_lower: bool,
}

impl OptimiserArgs {
    /// The optimiser of a config with these flags' values.
    pub fn apply(&self, optimiser: &RefineConfig) -> RefineConfig {
        RefineConfig {
            method: self.method,
            candidates: self.candidates,
            lr: self.lr,
            beta: self.beta,
            tau: self.tau,
            tau_end: self.tau_end,
            noise: self.noise,
            straight_through: self.straight_through,
            accept_if_lower: self.accept_if_lower,
            ..optimiser.clone()
        }
    }
}

pub fn cli(args: Args) -> Result<ExitCode> {
    let mut cfg = args.config;
    cfg.optimiser = args.extra.optimiser.apply(&cfg.optimiser);
    cfg.optimiser.steps = args.extra.steps;
    let (common, inputs) = (Common::from(&args.run), &args.inputs);
    let m = stage::run_cli(&cfg, &common, inputs, &args.out).context("ember refine failed")?;
    let g = |k: &str| {
        m.metrics[k]
            .as_f64()
            .map(|v| format!("{v:.3}"))
            .unwrap_or_else(|| "–".into())
    };
    println!(
        "refine: {} prompts, energy {} → {} ({} improved), gold {} → {} → {}",
        m.metrics["prompts"],
        g("start_energy"),
        g("best_energy"),
        g("improved"),
        g("start_gold"),
        g("gold"),
        args.out.path.display()
    );
    Ok(ExitCode::SUCCESS)
}
