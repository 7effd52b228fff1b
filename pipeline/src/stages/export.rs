//! `ember export --format hf`: a policy as a Hugging Face GPT-2 checkpoint that
//! `transformers.GPT2LMHeadModel.from_pretrained` loads (see `policy::hf`).
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use policy::Policy;
use serde::{Deserialize, Serialize};

use crate::stage::{self, Common, NoFlags, Stage, StageArgs};

/// Checkpoint formats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Hugging Face `transformers` GPT-2 (`config.json` + `model.safetensors` + `tokenizer.json`).
    #[default]
    Hf,
}

/// The flags of `ember export`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Target format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Upstream artifacts.
#[derive(Debug, Clone, clap::Args)]
pub struct Inputs {
    /// Policy directory.
    #[arg(long)]
    pub policy: PathBuf,
}

/// The stage: the exported checkpoint.
impl Stage for Config {
    const NAME: &'static str = "export";
    type Inputs = Inputs;

    fn input_paths(inputs: &Inputs) -> Vec<PathBuf> {
        vec![inputs.policy.clone()]
    }

    fn execute(&self, _: &Common, inputs: &Inputs, dir: &Path) -> Result<serde_json::Value> {
        let policy = Policy::load(&inputs.policy, tch::Device::Cpu)?;
        match self.format {
            Format::Hf => policy::hf::export(&policy, dir)?,
        }
        Ok(serde_json::json!({"format": self.format, "parameters": policy.config.n_params()}))
    }
}

pub type Args = StageArgs<Inputs, Config, NoFlags, NoFlags>;

pub fn cli(args: Args) -> Result<ExitCode> {
    let m = stage::run_cli(&args.config, &Common::default(), &args.inputs, &args.out)
        .context("ember export failed")?;
    println!(
        "export: {} parameters → {}",
        m.metrics["parameters"],
        args.out.path.display()
    );
    Ok(ExitCode::SUCCESS)
}
