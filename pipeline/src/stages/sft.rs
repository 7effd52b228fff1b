//! `ember sft`: supervised fine-tuning of the policy on demonstrations (InstructGPT's first
//! step, Ouyang et al. 2022); see `policy::sft`. Resumable: re-running the same command after a
//! kill continues from the last checkpoint in `OUT.partial` and ends with the same weights.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use policy::model::GptConfig;
use policy::sft::SftConfig;
use policy::train::OptimConfig;
use policy::Tokenizer;
use serde::{Deserialize, Serialize};
use tracing::instrument;

use crate::error::usage;
use crate::stage::{Common, Manifest, StageRun};

pub const NAME: &str = "sft";

/// The `[sft]` section of a run config; also built from the CLI flags.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Optimizer steps.
    pub steps: u64,
    /// Sequences per micro-batch.
    pub batch: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Validation loss every this many steps.
    pub eval_every: u64,
    /// Checkpoint every this many steps.
    pub checkpoint_every: u64,
    /// Share of demonstrations held out for validation when the data has no `val.parquet`
    /// (split by a hash of the prompt).
    pub val_fraction: f64,
    /// AdamW, schedule and clipping.
    pub optim: OptimConfig,
    /// Shape of a fresh model (`vocab_size` 0 = the tokenizer's).
    pub model: GptConfig,
}

impl Default for Config {
    fn default() -> Self {
        let lib = SftConfig::default();
        Self {
            steps: lib.steps,
            batch: lib.batch,
            grad_accum: lib.grad_accum,
            eval_every: lib.eval_every,
            checkpoint_every: lib.checkpoint_every,
            val_fraction: 0.05,
            optim: lib.optim,
            model: lib.model,
        }
    }
}

/// Upstream artifacts.
pub struct Inputs {
    /// Data directory: `sft.parquet` (prompt, answer) or `train.parquet`/`val.parquet`
    /// preference splits (their chosen answers are the demonstrations).
    pub data: PathBuf,
    /// `tokenizer.json`, or a directory holding one (a tokenizer stage or a policy).
    pub tokenizer: PathBuf,
    /// A policy directory to start from instead of a fresh model.
    pub init: Option<PathBuf>,
}

fn tokenizer_file(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.join(policy::TOKENIZER_FILE)
    } else {
        p.to_path_buf()
    }
}

/// FNV-1a of a prompt, for the validation hold-out.
fn prompt_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

type Rows = Vec<(String, String)>;

/// (train, val) demonstrations of a data directory.
pub fn load_rows(data: &Path, val_fraction: f64) -> Result<(Rows, Rows)> {
    let sft = data.join("sft.parquet");
    let (rows, val) = if sft.exists() {
        (
            datasets::table::read_sft(&sft)
                .with_context(|| format!("reading {}", sft.display()))?,
            None,
        )
    } else {
        let chosen = |name: &str| -> Result<Option<Rows>> {
            let path = data.join(name);
            if !path.exists() {
                return Ok(None);
            }
            let pairs = datasets::table::read_pairs(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok(Some(
                pairs
                    .into_iter()
                    .filter(|r| !r.tie)
                    .map(|r| (r.prompt, r.chosen))
                    .collect(),
            ))
        };
        let train = chosen("train.parquet")?.ok_or_else(|| {
            usage(format!(
                "{} has neither sft.parquet nor train.parquet",
                data.display()
            ))
        })?;
        (train, chosen("val.parquet")?)
    };
    Ok(match val {
        Some(val) => (rows, val),
        None => {
            let cut = (val_fraction.clamp(0.0, 1.0) * u64::MAX as f64) as u64;
            rows.into_iter().partition(|(p, _)| prompt_hash(p) >= cut)
        }
    })
}

/// The stage: a policy directory (`config.json`, `model.safetensors`, `tokenizer.json`) plus
/// `metrics.jsonl`.
#[instrument(skip_all, fields(out = %out.display()))]
pub fn run(cfg: &Config, common: &Common, inputs: &Inputs, out: &Path) -> Result<Manifest> {
    let (device, _amp) = common.device()?;
    let tok_path = tokenizer_file(&inputs.tokenizer);
    let mut input_paths: Vec<&Path> = vec![&inputs.data, &tok_path];
    if let Some(init) = &inputs.init {
        input_paths.push(init);
    }
    let tokenizer = Tokenizer::load(&tok_path)?;
    let (train_rows, val_rows) = load_rows(&inputs.data, cfg.val_fraction)?;
    let run = StageRun::begin(NAME, &(cfg, common), &input_paths, out, true)?;
    let lib = SftConfig {
        steps: cfg.steps,
        batch: cfg.batch,
        grad_accum: cfg.grad_accum,
        optim: cfg.optim.clone(),
        eval_every: cfg.eval_every,
        checkpoint_every: cfg.checkpoint_every,
        seed: common.seed,
        model: cfg.model.clone(),
        ..SftConfig::default()
    };
    let report = policy::sft::train(
        &lib,
        tokenizer,
        &train_rows,
        &val_rows,
        inputs.init.as_deref(),
        run.dir(),
        device,
    )
    .context("SFT failed (checkpoints are kept in the .partial directory; re-run to resume)")?;
    run.finish(serde_json::to_value(&report)?, &["checkpoint"])
        .context("ember sft failed")
}

/// Supervised fine-tuning of the policy on demonstrations.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory (`sft.parquet`, or `train.parquet` + `val.parquet` preference splits).
    #[arg(long)]
    pub data: PathBuf,
    /// `tokenizer.json` (or a directory holding one).
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Output policy directory.
    #[arg(long)]
    pub out: PathBuf,
    /// JSON file with the model shape (`GptConfig` fields).
    #[arg(long)]
    pub model_config: Option<PathBuf>,
    /// Start from this policy directory instead of a fresh model.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Optimizer steps.
    #[arg(long, default_value_t = 300)]
    pub steps: u64,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Micro-batches per step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Validation every N steps.
    #[arg(long, default_value_t = 50)]
    pub eval_every: u64,
    /// Checkpoint every N steps.
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: u64,
    /// Seed of initialisation, batch order and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, cuda or auto.
    #[arg(long, value_enum, default_value_t = policy::device::DeviceArg::Cpu)]
    pub device: policy::device::DeviceArg,
    /// fp32, or bf16 (autocast on CUDA; weights and optimizer state stay fp32).
    #[arg(long, value_enum, default_value_t = policy::device::Precision::Fp32)]
    pub precision: policy::device::Precision,
}

pub fn cli(args: Args) -> Result<ExitCode> {
    let mut cfg = Config {
        steps: args.steps,
        batch: args.batch,
        grad_accum: args.grad_accum,
        eval_every: args.eval_every,
        checkpoint_every: args.checkpoint_every,
        ..Config::default()
    };
    cfg.optim.lr = args.lr;
    cfg.optim.min_lr = args.lr / 10.0;
    if let Some(path) = &args.model_config {
        cfg.model = policy::read_config(path).map_err(|e| usage(e.to_string()))?;
    }
    let device = serde_json::to_value(args.device)?
        .as_str()
        .unwrap_or("cpu")
        .to_string();
    let common = Common {
        precision: args.precision,
        seed: args.seed,
        device,
    };
    let inputs = Inputs {
        data: args.data,
        tokenizer: args.tokenizer,
        init: args.init,
    };
    let m = run(&cfg, &common, &inputs, &args.out)?;
    println!(
        "sft: {} steps, train loss {:.4}, val loss {:.4} (ppl {:.3}) → {}",
        m.metrics["steps"],
        m.metrics["train_loss"].as_f64().unwrap_or(f64::NAN),
        m.metrics["val_loss"].as_f64().unwrap_or(f64::NAN),
        m.metrics["val_ppl"].as_f64().unwrap_or(f64::NAN),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
