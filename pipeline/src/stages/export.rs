//! `ember export --format hf`: a policy as a Hugging Face GPT-2 checkpoint that
//! `transformers.GPT2LMHeadModel.from_pretrained` loads (see `policy::hf`).
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use policy::Policy;
use serde::{Deserialize, Serialize};
use tracing::instrument;

use crate::stage::{Common, Manifest, StageRun};

pub const NAME: &str = "export";

/// Checkpoint formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Hugging Face `transformers` GPT-2 (`config.json` + `model.safetensors` + `tokenizer.json`).
    Hf,
}

/// The `[export]` section of a run config; also built from the CLI flags.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Target format.
    pub format: Format,
}

impl Default for Config {
    fn default() -> Self {
        Self { format: Format::Hf }
    }
}

/// Upstream artifacts.
pub struct Inputs {
    /// Policy directory.
    pub policy: PathBuf,
}

/// The stage: the exported checkpoint in `out`.
#[instrument(skip_all, fields(out = %out.display()))]
pub fn run(cfg: &Config, common: &Common, inputs: &Inputs, out: &Path) -> Result<Manifest> {
    let run = StageRun::begin(NAME, &(cfg, common), &[&inputs.policy], out, false)?;
    let policy = Policy::load(&inputs.policy, tch::Device::Cpu)?;
    match cfg.format {
        Format::Hf => policy::hf::export(&policy, run.dir())?,
    }
    let metrics = serde_json::json!({"format": cfg.format, "parameters": policy.config.n_params()});
    run.finish(metrics, &[]).context("ember export failed")
}

/// Export a policy to another checkpoint format.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Policy directory.
    #[arg(long)]
    pub policy: PathBuf,
    /// Target format.
    #[arg(long, value_enum, default_value_t = Format::Hf)]
    pub format: Format,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn cli(args: Args) -> Result<ExitCode> {
    let cfg = Config {
        format: args.format,
    };
    let m = run(
        &cfg,
        &Common::default(),
        &Inputs {
            policy: args.policy,
        },
        &args.out,
    )?;
    println!(
        "export: {} parameters → {}",
        m.metrics["parameters"],
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
