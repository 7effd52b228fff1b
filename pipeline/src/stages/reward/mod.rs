//! `ember reward train|eval|score|doctor`: the energy-based reward model (LeCun et al. 2006,
//! "A Tutorial on Energy-Based Learning") — contrastive training, evaluation, scoring of
//! (prompt, answer) rows and a preflight doctor. `train` is the pipeline stage; the other three
//! are in [`tools`].
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use polars::prelude::{Column, DataFrame};

use crate::config::Invalid;
use crate::error::usage;
use crate::stage::{self, Common, LrArg, Stage, StageArgs};

mod tools;

pub use tools::{prompts_answers, read_rows};

/// The `[reward]` section of a run config: the trainer's settings (its `seed` is the run's).
pub type Config = reward::train::TrainConfig;

/// Upstream artifacts the stage reads.
#[derive(Debug, Clone, clap::Args)]
pub struct Inputs {
    /// Directory with train.parquet and val.parquet (from `ember ingest` or `ember synth`).
    #[arg(long)]
    pub data: PathBuf,
    /// tokenizer.json, or the directory holding it (defaults to the one in --init).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Policy (SFT) checkpoint directory whose trunk initialises the model (recommended).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// nll: a policy to sample extra negatives from (default: --init when -k is set).
    #[arg(long, value_name = "DIR")]
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
    const SHARDS: bool = true;
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
    Eval(crate::stages::eval::Args),
    /// Add an `energy` column to rows with `prompt` and `answer` (Parquet or JSONL).
    Score(tools::ScoreArgs),
    /// Preflight checks of the classic reward-model bugs, each PASS/FAIL with its numbers.
    Doctor(tools::DoctorArgs),
}

/// `ember reward train`: the trainer's config as flags, with `--lr`.
pub type TrainArgs = StageArgs<Inputs, Config, LrArg>;

pub fn cli(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Train(a) => train_cli(*a),
        Command::Eval(a) => crate::stages::eval::cli(a),
        Command::Score(a) => tools::score_cli(a),
        Command::Doctor(a) => tools::doctor_cli(a),
    }
}

fn train_cli(a: TrainArgs) -> Result<ExitCode> {
    let data = &a.inputs.data;
    if !data.join("train.parquet").exists() {
        return Err(usage(format!(
            "{} has no train.parquet (run `ember ingest` or `ember synth`)",
            data.display()
        )));
    }
    let (mut cfg, common, inputs) = (a.config, Common::from(&a.run), &a.inputs);
    a.extra.apply(&mut cfg.optim);
    let m = stage::run_cli(&cfg, &common, inputs, &a.out)?;
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
