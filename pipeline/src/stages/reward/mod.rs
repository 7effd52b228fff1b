//! `ember reward train|eval|score|doctor`: the energy-based reward model (LeCun et al. 2006,
//! "A Tutorial on Energy-Based Learning") — contrastive training, evaluation, scoring of
//! (prompt, answer) rows and a preflight doctor. `train` is the pipeline stage; the other three
//! are in [`tools`].
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use polars::prelude::{Column, DataFrame};
use reward::loss::{LossKind, TieMode};
use reward::model::{Pooling, Score};

use crate::config::Invalid;
use crate::error::usage;
use crate::stage::{self, Common, LrArg, OutArg, RuntimeArgs, SeedArg, Stage};

mod tools;

pub use tools::{eval_table, prompts_answers, read_rows};

/// The `[reward]` section of a run config: the trainer's settings (its `seed` is the run's).
pub type Config = reward::train::TrainConfig;

/// Upstream artifacts the stage reads.
pub struct Inputs {
    /// Directory with `train.parquet` and `val.parquet` (from `ember ingest` or `ember synth`).
    pub data: PathBuf,
    /// `tokenizer.json`; defaults to the init checkpoint's.
    pub tokenizer: Option<PathBuf>,
    /// A policy (SFT) checkpoint directory whose trunk initialises the model.
    pub init: Option<PathBuf>,
    /// The policy that `sampled_negatives` are drawn from (default: `init`).
    pub negatives_from: Option<PathBuf>,
}

impl Inputs {
    /// A model started from an SFT policy's trunk, with its tokenizer.
    pub fn from_sft(data: PathBuf, sft: PathBuf) -> Self {
        Self {
            data,
            tokenizer: None,
            init: Some(sft),
            negatives_from: None,
        }
    }
}

/// The stage: the energy model's directory (resumable: a killed run re-run with the same config
/// continues from `OUT.partial/ckpt`).
impl Stage for Config {
    const NAME: &'static str = "reward";
    const RESUMABLE: bool = true;
    const SCRATCH: &'static [&'static str] = &["ckpt", "ckpt.old", "ckpt.tmp", "best"];
    const RESUME_FROM: &'static [&'static str] = &["ckpt", "ckpt.old"];
    type Inputs = Inputs;

    /// The data, the tokenizer, the init policy, then the negatives' policy when it is another.
    fn input_paths(inputs: &Inputs) -> Vec<PathBuf> {
        let mut paths = vec![inputs.data.clone()];
        paths.extend(inputs.tokenizer.clone());
        paths.extend(inputs.init.clone());
        let other = inputs
            .negatives_from
            .as_ref()
            .filter(|n| Some(*n) != inputs.init.as_ref());
        paths.extend(other.cloned());
        paths
    }

    fn check(&self) -> Vec<Invalid> {
        self.problems()
            .into_iter()
            .map(|(key, message)| Invalid::new(key, message))
            .collect()
    }

    /// The trainer's config with the run's seed written in.
    fn hashed(&self, common: &Common) -> serde_json::Value {
        serde_json::to_value((&seeded(self, common), common)).expect("configs serialise")
    }

    fn execute(&self, common: &Common, inputs: &Inputs, dir: &Path) -> Result<serde_json::Value> {
        let (device, _amp) = common.device()?;
        let negatives_from = (self.sampled_negatives > 0)
            .then(|| {
                inputs
                    .negatives_from
                    .clone()
                    .or_else(|| inputs.init.clone())
            })
            .flatten();
        let train_inputs = reward::train::TrainInputs {
            data: inputs.data.clone(),
            tokenizer: inputs.tokenizer.clone(),
            init: inputs.init.clone(),
            negatives_from,
        };
        let summary = reward::train::train(&seeded(self, common), &train_inputs, dir, device)
            .with_context(|| format!("training the energy model on {}", inputs.data.display()))?;
        write_val_energies(&inputs.data.join("val.parquet"), &summary.val_energies, dir)?;
        Ok(serde_json::to_value(&summary)?)
    }
}

/// The trainer's config with `seed` set to the run's: one seed reaches every RNG.
fn seeded(cfg: &Config, common: &Common) -> Config {
    Config {
        seed: common.seed,
        ..cfg.clone()
    }
}

/// `VAL_ENERGIES`: the trained model's energies of the validation pairs it was evaluated on
/// (`prompt`, `e_chosen`, `e_rejected`, plus `gold_chosen`/`gold_rejected` on synth), for the
/// report's histograms; the energies come from training's final evaluation, not a re-scoring.
pub const VAL_ENERGIES: &str = "val_energies.parquet";

fn write_val_energies(
    val: &Path,
    energies: &[reward::train::ValEnergy],
    model_dir: &Path,
) -> Result<()> {
    let rows = reward::data::load_pairs(val)?;
    let rows: Vec<_> = energies.iter().map(|e| &rows[e.row]).collect();
    let prompts: Vec<&str> = rows.iter().map(|r| r.prompt.as_str()).collect();
    let ec: Vec<f32> = energies.iter().map(|e| e.chosen).collect();
    let er: Vec<f32> = energies.iter().map(|e| e.rejected).collect();
    let mut cols = vec![
        Column::new("prompt".into(), prompts),
        Column::new("e_chosen".into(), ec),
        Column::new("e_rejected".into(), er),
    ];
    if rows.iter().all(|r| r.gold_chosen.is_some()) {
        let gc: Vec<Option<f32>> = rows.iter().map(|r| r.gold_chosen).collect();
        let gr: Vec<Option<f32>> = rows.iter().map(|r| r.gold_rejected).collect();
        cols.push(Column::new("gold_chosen".into(), gc));
        cols.push(Column::new("gold_rejected".into(), gr));
    }
    let path = model_dir.join(VAL_ENERGIES);
    let mut df = DataFrame::new(rows.len(), cols)?;
    datasets::table::write_parquet(&path, &mut df)?;
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train an energy model on preference pairs.
    Train(Box<TrainArgs>),
    /// Pairwise accuracy, gap, calibration, length baseline of a model on preference tables.
    Eval(tools::EvalArgs),
    /// Add an `energy` column to rows with `prompt` and `answer` (Parquet or JSONL).
    Score(tools::ScoreArgs),
    /// Preflight checks of the classic reward-model bugs, each PASS/FAIL with its numbers.
    Doctor(tools::DoctorArgs),
}

/// `ember reward train`: the flags over the trainer's config.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Directory with train.parquet and val.parquet.
    #[arg(long)]
    pub data: PathBuf,
    /// tokenizer.json, or the directory holding it (defaults to the one in --init).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Policy (SFT) checkpoint directory whose trunk initialises the model (recommended).
    #[arg(long)]
    pub init: Option<PathBuf>,
    #[command(flatten)]
    pub out: OutArg,
    /// Loss: log (Bradley–Terry), hinge, square-square, square-exp, nll (InfoNCE).
    #[arg(long, default_value_t = Config::default().loss.kind)]
    pub loss: LossKind,
    /// Optimiser steps.
    #[arg(long, default_value_t = Config::default().steps)]
    pub steps: u64,
    /// Pairs per step.
    #[arg(long, default_value_t = Config::default().batch)]
    pub batch: usize,
    #[command(flatten)]
    pub lr: LrArg,
    /// Longest sequence (prompt + answer); prompts are truncated from the left.
    #[arg(long, default_value_t = Config::default().max_len)]
    pub max_len: usize,
    /// Margin m of hinge / square-square.
    #[arg(long, default_value_t = Config::default().loss.margin)]
    pub margin: f64,
    /// Weight λ of the zero-anchor term λ·mean(E⁺²).
    #[arg(long, default_value_t = Config::default().loss.anchor)]
    pub anchor: f64,
    /// What the score reads: head (a linear head at the EOS), or head+nll (plus the answer's
    /// negative log-likelihood under the trunk; start it from an SFT trunk with --init).
    #[arg(long, default_value_t = Config::default().score)]
    pub score: Score,
    /// Where the head reads the trunk: eos (the end-of-answer token) or mean (the mean over the
    /// answer's tokens; what probes of a frozen pretrained trunk read best).
    #[arg(long, default_value_t = Config::default().pooling)]
    pub pooling: Pooling,
    /// Tie rows: skip, or equal (trained towards equal energy).
    #[arg(long, default_value_t = Config::default().ties)]
    pub ties: TieMode,
    /// nll: other prompts' chosen answers used as extra negatives of each prompt.
    #[arg(long, default_value_t = Config::default().in_batch_negatives)]
    pub in_batch_negatives: usize,
    /// nll: a policy to sample extra negatives from (default: --init when -k is set).
    #[arg(long, value_name = "DIR")]
    pub negatives_from: Option<PathBuf>,
    /// nll: answers sampled from that policy per training prompt, used as extra negatives.
    #[arg(short = 'k', long = "sampled-negatives", default_value_t = Config::default().sampled_negatives)]
    pub sampled_negatives: usize,
    /// Validate every N steps.
    #[arg(long, default_value_t = Config::default().eval_every)]
    pub eval_every: u64,
    /// Write a resumable checkpoint every N steps.
    #[arg(long, default_value_t = Config::default().checkpoint_every)]
    pub checkpoint_every: u64,
    /// Early stopping: evaluations without improvement before stopping (0 = off).
    #[arg(long, default_value_t = Config::default().patience)]
    pub patience: u64,
    /// From scratch: width, layers, heads of the trunk.
    #[arg(long, default_value_t = Config::default().d_model)]
    pub d_model: i64,
    #[arg(long, default_value_t = Config::default().n_layer)]
    pub n_layer: i64,
    #[arg(long, default_value_t = Config::default().n_head)]
    pub n_head: i64,
    /// Train only the top K blocks of the trunk (with its final norm and the head); the rest
    /// stays as --init has it. 0: the head and final norm only. Default: the whole trunk.
    #[arg(long, value_name = "K")]
    pub train_blocks: Option<u64>,
    /// With --train-blocks: recompute the frozen blocks every step instead of caching their
    /// output per sequence (saves memory: f32 T × d_model per sequence).
    #[arg(long)]
    pub no_cache_frozen: bool,
    /// Validation pairs scored at each evaluation (0 = all).
    #[arg(long, default_value_t = Config::default().eval_pairs)]
    pub eval_pairs: usize,
    /// Train on N usable pairs drawn by the seed (0 = all): fewer pairs for more epochs, where
    /// a pretrained trunk's first epoch is what costs.
    #[arg(long, default_value_t = Config::default().train_pairs)]
    pub train_pairs: usize,
    /// Training pairs summarised in energy_stats.json after training (one forward pass each).
    #[arg(long, default_value_t = Config::default().stats_pairs)]
    pub stats_pairs: usize,
    #[command(flatten)]
    pub seed: SeedArg,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

impl TrainArgs {
    fn config(&self) -> Config {
        let mut cfg = Config {
            steps: self.steps,
            batch: self.batch,
            max_len: self.max_len,
            score: self.score,
            pooling: self.pooling,
            ties: self.ties,
            in_batch_negatives: self.in_batch_negatives,
            sampled_negatives: self.sampled_negatives,
            eval_every: self.eval_every,
            patience: self.patience,
            checkpoint_every: self.checkpoint_every,
            d_model: self.d_model,
            n_layer: self.n_layer,
            n_head: self.n_head,
            train_blocks: self.train_blocks,
            cache_frozen: !self.no_cache_frozen,
            eval_pairs: self.eval_pairs,
            train_pairs: self.train_pairs,
            stats_pairs: self.stats_pairs,
            ..Config::default()
        };
        cfg.loss.kind = self.loss;
        cfg.loss.margin = self.margin;
        cfg.loss.anchor = self.anchor;
        self.lr.apply(&mut cfg.optim);
        cfg
    }
}

pub fn cli(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Train(a) => train_cli(*a),
        Command::Eval(a) => tools::eval_cli(a),
        Command::Score(a) => tools::score_cli(a),
        Command::Doctor(a) => tools::doctor_cli(a),
    }
}

fn train_cli(a: TrainArgs) -> Result<ExitCode> {
    if !a.data.join("train.parquet").exists() {
        return Err(usage(format!(
            "{} has no train.parquet (run `ember ingest` or `ember synth`)",
            a.data.display()
        )));
    }
    let (cfg, common) = (a.config(), Common::new(&a.seed, &a.runtime));
    let inputs = Inputs {
        data: a.data,
        tokenizer: a.tokenizer,
        init: a.init,
        negatives_from: a.negatives_from,
    };
    let m = stage::run_cli(&cfg, &common, &inputs, &a.out)?;
    let v = &m.metrics["val"];
    println!(
        "val accuracy {:.4} (length heuristic {:.4}) over {} pairs; best step {}; {:.0} tokens/s; model in {}",
        v["accuracy"].as_f64().unwrap_or(f64::NAN),
        v["length_heuristic_accuracy"].as_f64().unwrap_or(f64::NAN),
        v["pairs"],
        m.metrics["best_step"],
        m.metrics["tokens_per_s"].as_f64().unwrap_or(0.0),
        a.out.path.display()
    );
    Ok(ExitCode::SUCCESS)
}
