//! `ember import --format hf DIR`: a Hugging Face GPT-2 checkpoint (`config.json`,
//! `model.safetensors`, a `tokenizer.json` there or given) as an Ember policy directory.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use policy::Tokenizer;
use serde::{Deserialize, Serialize};
use tracing::instrument;

use crate::error::usage;
use crate::stage::{Common, Manifest, StageRun};
use crate::stages::export::Format;

pub const NAME: &str = "import";

/// The `[import]` section of a run config; also built from the CLI flags.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Source format.
    pub format: Format,
}

impl Default for Config {
    fn default() -> Self {
        Self { format: Format::Hf }
    }
}

/// Upstream artifacts.
pub struct Inputs {
    /// The checkpoint directory to import.
    pub dir: PathBuf,
    /// `tokenizer.json` when the checkpoint has none.
    pub tokenizer: Option<PathBuf>,
}

/// The stage: a policy directory in `out`.
#[instrument(skip_all, fields(out = %out.display()))]
pub fn run(cfg: &Config, common: &Common, inputs: &Inputs, out: &Path) -> Result<Manifest> {
    let mut paths: Vec<&Path> = vec![&inputs.dir];
    if let Some(t) = &inputs.tokenizer {
        paths.push(t);
    }
    let run = StageRun::begin(NAME, &(cfg, common), &paths, out, false)?;
    let tokenizer = inputs.tokenizer.as_ref().map(Tokenizer::load).transpose()?;
    let policy = match cfg.format {
        Format::Hf => policy::hf::import(&inputs.dir, tokenizer, tch::Device::Cpu)
            .map_err(|e| usage(format!("importing {}: {e}", inputs.dir.display())))?,
    };
    policy.save(run.dir())?;
    let metrics = serde_json::json!({"format": cfg.format, "parameters": policy.config.n_params()});
    run.finish(metrics, &[]).context("ember import failed")
}

/// Import a checkpoint from another format as a policy directory.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Source format.
    #[arg(long, value_enum, default_value_t = Format::Hf)]
    pub format: Format,
    /// `tokenizer.json` to use when DIR has none.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Output policy directory.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn cli(args: Args) -> Result<ExitCode> {
    let cfg = Config {
        format: args.format,
    };
    let inputs = Inputs {
        dir: args.dir,
        tokenizer: args.tokenizer,
    };
    let m = run(&cfg, &Common::default(), &inputs, &args.out)?;
    println!(
        "import: {} parameters → {}",
        m.metrics["parameters"],
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
