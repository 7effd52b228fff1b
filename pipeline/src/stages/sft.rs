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

use crate::config::Invalid;
use crate::error::usage;
use crate::stage::{self, Common, CommonArgs, LrArg, OutArg, Stage};

/// The `[sft]` section of a run config, and the flags of `ember sft`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Optimizer steps; 0 keeps the `--init` policy (a run's `base`) as it is, with no SFT.
    #[arg(long, default_value_t = Config::default().steps)]
    pub steps: u64,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = Config::default().batch)]
    pub batch: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = Config::default().grad_accum)]
    pub grad_accum: usize,
    /// Validation loss every this many steps.
    #[arg(long, default_value_t = Config::default().eval_every)]
    pub eval_every: u64,
    /// Checkpoint every this many steps.
    #[arg(long, default_value_t = Config::default().checkpoint_every)]
    pub checkpoint_every: u64,
    /// Share of demonstrations held out for validation when the data has no `val.parquet`
    /// (split by a hash of the prompt).
    #[arg(skip = Config::default().val_fraction)]
    pub val_fraction: f64,
    /// AdamW, schedule and clipping (`--lr` sets the peak and a tenth of it as the floor).
    #[arg(skip = Config::default().optim)]
    pub optim: OptimConfig,
    /// Shape of a fresh model (`vocab_size` 0 = the tokenizer's; `--model-config FILE`).
    #[arg(skip = Config::default().model)]
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

impl Inputs {
    /// A fresh model on a data directory, with the tokenizer of a tokenizer stage's directory.
    pub fn fresh(data: PathBuf, tokenizer_stage: PathBuf) -> Self {
        Self {
            data,
            tokenizer: tokenizer_stage.join(policy::TOKENIZER_FILE),
            init: None,
        }
    }
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
/// `metrics.jsonl`. Resumes from `OUT.partial/checkpoint`.
impl Stage for Config {
    const NAME: &'static str = "sft";
    const SHARDS: bool = true;
    const RESUMABLE: bool = true;
    const SCRATCH: &'static [&'static str] = &["checkpoint"];
    const RESUME_FROM: &'static [&'static str] = &["checkpoint"];
    type Inputs = Inputs;

    /// The data, the tokenizer file (not its directory), the init policy.
    fn input_paths(inputs: &Inputs) -> Vec<PathBuf> {
        let mut paths = vec![inputs.data.clone(), tokenizer_file(&inputs.tokenizer)];
        paths.extend(inputs.init.clone());
        paths
    }

    fn check(&self) -> Vec<Invalid> {
        let mut bad: Vec<Invalid> = Invalid::zero(&[("eval_every", self.eval_every)])
            .into_iter()
            .collect();
        bad.extend(Invalid::zero(&[
            ("batch", self.batch),
            ("grad_accum", self.grad_accum),
        ]));
        bad.extend(Invalid::below("optim.lr", self.optim.lr, 0.0, false));
        bad.extend(Invalid::below("optim.min_lr", self.optim.min_lr, 0.0, true));
        bad
    }

    fn execute(&self, common: &Common, inputs: &Inputs, dir: &Path) -> Result<serde_json::Value> {
        let (device, _amp) = common.device()?;
        let tokenizer = Tokenizer::load(tokenizer_file(&inputs.tokenizer))?;
        if self.steps == 0 {
            return keep_init(inputs, tokenizer, dir);
        }
        let (train_rows, val_rows) = load_rows(&inputs.data, self.val_fraction)?;
        let lib = SftConfig {
            steps: self.steps,
            batch: self.batch,
            grad_accum: self.grad_accum,
            optim: self.optim.clone(),
            eval_every: self.eval_every,
            checkpoint_every: self.checkpoint_every,
            seed: common.seed,
            model: self.model.clone(),
            ..SftConfig::default()
        };
        let init = inputs.init.as_deref();
        let report = policy::sft::train(&lib, tokenizer, &train_rows, &val_rows, init, dir, device)
            .context(
                "SFT failed (checkpoints are kept in the .partial directory; re-run to resume)",
            )?;
        Ok(serde_json::to_value(&report)?)
    }
}

/// `steps = 0`: the output is the init policy with the stage's tokenizer, unchanged.
fn keep_init(inputs: &Inputs, tokenizer: Tokenizer, dir: &Path) -> Result<serde_json::Value> {
    let Some(init) = &inputs.init else {
        return Err(usage(
            "sft steps = 0 keeps a pretrained policy as it is: give one with --init \
             (in a run config, the top-level `base`)",
        ));
    };
    let mut policy = policy::Policy::load(init, tch::Device::Cpu)
        .with_context(|| format!("loading the init policy {}", init.display()))?;
    policy.tokenizer = tokenizer;
    policy.save(dir)?;
    Ok(serde_json::json!({"steps": 0, "init": init}))
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
    #[command(flatten)]
    pub out: OutArg,
    /// JSON file with the model shape (`GptConfig` fields).
    #[arg(long)]
    pub model_config: Option<PathBuf>,
    /// Start from this policy directory instead of a fresh model.
    #[arg(long)]
    pub init: Option<PathBuf>,
    #[command(flatten)]
    pub config: Config,
    #[command(flatten)]
    pub lr: LrArg,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub fn cli(args: Args) -> Result<ExitCode> {
    let mut cfg = args.config;
    args.lr.apply(&mut cfg.optim);
    if let Some(path) = &args.model_config {
        cfg.model = match policy::read_config(path).map_err(|e| usage(e.to_string()))? {
            policy::TrunkConfig::Gpt2(c) => c,
            other => {
                return Err(usage(format!(
                    "--model-config {}: a fresh model is GPT-2, this one is {}; \
                     start from a pretrained policy with --init instead",
                    path.display(),
                    other.architecture()
                )))
            }
        };
    }
    let common = Common::from(&args.common);
    let inputs = Inputs {
        data: args.data,
        tokenizer: args.tokenizer,
        init: args.init,
    };
    let m = stage::run_cli(&cfg, &common, &inputs, &args.out).context("ember sft failed")?;
    if cfg.steps == 0 {
        println!(
            "sft: 0 steps, the init policy as it is → {}",
            args.out.path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "sft: {} steps, train loss {:.4}, val loss {:.4} (ppl {:.3}) → {}",
        m.metrics["steps"],
        m.metrics["train_loss"].as_f64().unwrap_or(f64::NAN),
        m.metrics["val_loss"].as_f64().unwrap_or(f64::NAN),
        m.metrics["val_ppl"].as_f64().unwrap_or(f64::NAN),
        args.out.path.display()
    );
    Ok(ExitCode::SUCCESS)
}
