//! `ember synth`: the built-in preference task with a gold reward (addition/subtraction and
//! sorting), simulated Bradley–Terry annotators with label noise, SFT demonstrations and
//! held-out evaluation prompts (see `datasets::synth`).
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use datasets::split::parse_fractions;
use datasets::synth::{ProblemSize, SynthConfig, Task};
use serde::{Deserialize, Serialize};
use tracing::instrument;

use crate::error::usage;
use crate::stage::{Common, Manifest, StageRun};

pub const NAME: &str = "synth";

/// The `[synth]` section of a run config; also built from the CLI flags.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// add (addition/subtraction), sort, or mix (half each).
    pub task: Task,
    /// Preference pairs to generate (before de-duplication).
    pub pairs: usize,
    /// SFT demonstrations to generate.
    pub demos: usize,
    /// Held-out evaluation prompts (never seen in pairs or demonstrations).
    pub eval_prompts: usize,
    /// Annotator temperature T in P(a ≻ b) = σ((g(a) − g(b)) / T); 0 = always the better one.
    pub label_temperature: f64,
    /// Probability that an annotator's label is flipped.
    pub flip_rate: f64,
    /// Share of SFT demonstrations that are deliberately wrong.
    pub demo_error_rate: f64,
    /// Train, validation and test fractions, split by prompt.
    pub split: [f64; 3],
    /// Operands of add have 1..=max_digits digits.
    pub max_digits: u32,
    /// Lists to sort have min_items..=max_items digits.
    pub min_items: usize,
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

/// The stage: typed config in, manifest out.
#[instrument(skip_all, fields(out = %out.display()))]
pub fn run(cfg: &Config, common: &Common, _inputs: &Inputs, out: &Path) -> Result<Manifest> {
    if !(1..=9).contains(&cfg.max_digits) {
        return Err(usage(format!(
            "synth: max_digits must be in 1..=9, got {}",
            cfg.max_digits
        )));
    }
    if cfg.min_items == 0 || cfg.min_items > cfg.max_items {
        return Err(usage(format!(
            "synth: need 1 ≤ min_items ≤ max_items, got {}..{}",
            cfg.min_items, cfg.max_items
        )));
    }
    let lib = library_config(cfg, common);
    let run = StageRun::begin(NAME, &(cfg, common), &[], out, false)?;
    let staging = run.dir().to_path_buf();
    let result = datasets::synth::generate(&lib, &staging)
        .map_err(|e| {
            if e.is_usage() {
                usage(e.to_string())
            } else {
                anyhow::Error::new(e)
            }
        })
        .and_then(|stats| run.finish(serde_json::to_value(&stats)?, &[]));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result.context("ember synth failed")
}

/// Generate the built-in preference task with a gold reward.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// add (addition/subtraction), sort, or mix.
    #[arg(long, default_value = "mix", value_parser = ["add", "sort", "mix"])]
    pub task: String,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Preference pairs to generate.
    #[arg(long, default_value_t = 4000)]
    pub pairs: usize,
    /// SFT demonstrations to generate.
    #[arg(long, default_value_t = 4000)]
    pub demos: usize,
    /// Held-out evaluation prompts.
    #[arg(long, default_value_t = 200)]
    pub eval_prompts: usize,
    /// Annotator temperature T: P(a ≻ b) = σ((g(a) − g(b)) / T).
    #[arg(long, default_value_t = 0.1)]
    pub label_temperature: f64,
    /// Probability that an annotator's label is flipped.
    #[arg(long, default_value_t = 0.05)]
    pub flip_rate: f64,
    /// Share of SFT demonstrations that are deliberately wrong.
    #[arg(long, default_value_t = 0.2)]
    pub demo_error_rate: f64,
    /// Train,val,test fractions (split by prompt).
    #[arg(long, default_value = "0.9,0.05,0.05")]
    pub split: String,
    /// Operands of add have 1..=N digits.
    #[arg(long, default_value_t = Config::default().max_digits)]
    pub max_digits: u32,
    /// Lists to sort have at least N digits.
    #[arg(long, default_value_t = Config::default().min_items)]
    pub min_items: usize,
    /// Lists to sort have at most N digits.
    #[arg(long, default_value_t = Config::default().max_items)]
    pub max_items: usize,
    /// The seed of every generator.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn cli(args: Args) -> Result<ExitCode> {
    let split = parse_fractions(&args.split).map_err(|e| usage(format!("--split: {e}")))?;
    let task: Task = args.task.parse().map_err(usage)?;
    let cfg = Config {
        task,
        pairs: args.pairs,
        demos: args.demos,
        eval_prompts: args.eval_prompts,
        label_temperature: args.label_temperature,
        flip_rate: args.flip_rate,
        demo_error_rate: args.demo_error_rate,
        split,
        max_digits: args.max_digits,
        min_items: args.min_items,
        max_items: args.max_items,
    };
    let common = Common {
        seed: args.seed,
        ..Common::default()
    };
    let manifest = run(&cfg, &common, &Inputs, &args.out)?;
    let m = &manifest.metrics;
    println!(
        "synth: {} pairs ({} train / {} val / {} test), {} demos, {} eval prompts → {}",
        m["pairs_generated"],
        m["splits"]["train"],
        m["splits"]["val"],
        m["splits"]["test"],
        m["demos"],
        m["eval_prompts"],
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
