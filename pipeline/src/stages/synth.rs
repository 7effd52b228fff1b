//! `ember synth`: the built-in preference task with a gold reward (addition/subtraction and
//! sorting), simulated Bradley–Terry annotators with label noise, SFT demonstrations and
//! held-out evaluation prompts (see `datasets::synth`).
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use datasets::synth::{ProblemSize, SynthConfig, Task};
use serde::{Deserialize, Serialize};

use crate::config::Invalid;
use crate::stage::{self, Common, OutArg, SeedArg, Stage};

/// The `[data]` section of a run config with `kind = "synth"`, and the flags of `ember synth`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// add (addition/subtraction), sort, or mix (half each).
    #[arg(long, default_value = "mix")]
    pub task: Task,
    /// Preference pairs to generate (before de-duplication).
    #[arg(long, default_value_t = Config::default().pairs)]
    pub pairs: usize,
    /// SFT demonstrations to generate.
    #[arg(long, default_value_t = Config::default().demos)]
    pub demos: usize,
    /// Held-out evaluation prompts (never seen in pairs or demonstrations).
    #[arg(long, default_value_t = Config::default().eval_prompts)]
    pub eval_prompts: usize,
    /// Annotator temperature T in P(a ≻ b) = σ((g(a) − g(b)) / T); 0 = always the better one.
    #[arg(long, default_value_t = Config::default().label_temperature)]
    pub label_temperature: f64,
    /// Probability that an annotator's label is flipped.
    #[arg(long, default_value_t = Config::default().flip_rate)]
    pub flip_rate: f64,
    /// Share of SFT demonstrations that are deliberately wrong.
    #[arg(long, default_value_t = Config::default().demo_error_rate)]
    pub demo_error_rate: f64,
    /// Train, validation and test fractions, split by prompt.
    #[arg(long, default_value = "0.9,0.05,0.05", value_parser = crate::config::parse_split)]
    pub split: [f64; 3],
    /// Operands of add have 1..=max_digits digits (at most 9).
    #[arg(long, default_value_t = Config::default().max_digits)]
    pub max_digits: u32,
    /// Lists to sort have at least this many digits.
    #[arg(long, default_value_t = Config::default().min_items)]
    pub min_items: usize,
    /// Lists to sort have at most this many digits.
    #[arg(long, default_value_t = Config::default().max_items)]
    pub max_items: usize,
}

impl Default for Config {
    fn default() -> Self {
        let d = SynthConfig::default();
        Self {
            task: d.task,
            pairs: d.pairs,
            demos: d.demos,
            eval_prompts: d.eval_prompts,
            label_temperature: d.label_temperature,
            flip_rate: d.flip_rate,
            demo_error_rate: d.demo_error_rate,
            split: d.split,
            max_digits: d.size.max_digits,
            min_items: d.size.min_items,
            max_items: d.size.max_items,
        }
    }
}

/// `synth` reads nothing upstream.
pub struct Inputs;

fn library_config(cfg: &Config, common: &Common) -> SynthConfig {
    SynthConfig {
        task: cfg.task,
        pairs: cfg.pairs,
        demos: cfg.demos,
        eval_prompts: cfg.eval_prompts,
        label_temperature: cfg.label_temperature,
        flip_rate: cfg.flip_rate,
        demo_error_rate: cfg.demo_error_rate,
        split: cfg.split,
        size: ProblemSize {
            max_digits: cfg.max_digits,
            min_items: cfg.min_items,
            max_items: cfg.max_items,
        },
        seed: common.seed,
    }
}

/// The stage: the preference splits, SFT demonstrations, evaluation prompts and `stats.json`.
impl Stage for Config {
    const NAME: &'static str = "synth";
    type Inputs = Inputs;

    fn input_paths(_: &Inputs) -> Vec<PathBuf> {
        Vec::new()
    }

    fn check(&self) -> Vec<Invalid> {
        let mut bad = Vec::new();
        if !(1..=9).contains(&self.max_digits) {
            bad.push(Invalid::new(
                "max_digits",
                format!("must be in 1..=9, got {}", self.max_digits),
            ));
        }
        if self.min_items == 0 || self.min_items > self.max_items {
            let got = format!(
                "need 1 ≤ min_items ≤ max_items, got {}..{}",
                self.min_items, self.max_items
            );
            bad.push(Invalid::new("min_items", got));
        }
        bad
    }

    fn execute(&self, common: &Common, _: &Inputs, dir: &Path) -> Result<serde_json::Value> {
        let stats = datasets::synth::generate(&library_config(self, common), dir)?;
        Ok(serde_json::to_value(&stats)?)
    }
}

/// Generate the built-in preference task with a gold reward.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: Config,
    #[command(flatten)]
    pub seed: SeedArg,
    #[command(flatten)]
    pub out: OutArg,
}

pub fn cli(args: Args) -> Result<ExitCode> {
    let common = Common::seeded(&args.seed);
    let manifest =
        stage::run_cli(&args.config, &common, &Inputs, &args.out).context("ember synth failed")?;
    let m = &manifest.metrics;
    println!(
        "synth: {} pairs ({} train / {} val / {} test), {} demos, {} eval prompts → {}",
        m["pairs_generated"],
        m["splits"]["train"],
        m["splits"]["val"],
        m["splits"]["test"],
        m["demos"],
        m["eval_prompts"],
        args.out.path.display()
    );
    Ok(ExitCode::SUCCESS)
}
