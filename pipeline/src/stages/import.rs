//! `ember import`: another tool's checkpoint as an Ember policy directory.
//! - `--format hf DIR`: a Hugging Face checkpoint (`config.json`, `model.safetensors` or shards,
//!   a `tokenizer.json` there or given), see `policy::hf`;
//! - `--format gguf FILE.gguf`: a llama.cpp GGUF model with its tokenizer and chat template,
//!   see `policy::gguf`.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use policy::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::error::usage;
use crate::stage::{self, Common, NoFlags, Stage, StageArgs};

/// Formats `ember import` reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Hugging Face `transformers` (GPT-2, Llama, Qwen2, Mistral): a directory.
    #[default]
    Hf,
    /// llama.cpp GGUF (Llama-family architectures): one file.
    Gguf,
}

/// The flags of `ember import`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Source format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Upstream artifacts.
#[derive(Debug, Clone, clap::Args)]
pub struct Inputs {
    /// The checkpoint: a directory (hf) or a `.gguf` file (gguf).
    pub dir: PathBuf,
    /// `tokenizer.json` to use when DIR has none.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
}

/// The stage: a policy directory.
impl Stage for Config {
    const NAME: &'static str = "import";
    type Inputs = Inputs;

    fn input_paths(inputs: &Inputs) -> Vec<PathBuf> {
        let mut paths = vec![inputs.dir.clone()];
        paths.extend(inputs.tokenizer.clone());
        paths
    }

    fn execute(&self, _: &Common, inputs: &Inputs, dir: &Path) -> Result<serde_json::Value> {
        let tokenizer = inputs.tokenizer.as_ref().map(Tokenizer::load).transpose()?;
        let policy = match self.format {
            Format::Hf => policy::hf::import(&inputs.dir, tokenizer, tch::Device::Cpu),
            Format::Gguf if tokenizer.is_some() => Err(policy::PolicyError::Invalid(
                "--tokenizer does not apply to --format gguf: the file holds its tokenizer".into(),
            )),
            Format::Gguf => policy::gguf::import(&inputs.dir, tch::Device::Cpu),
        }
        .map_err(|e| usage(format!("importing {}: {e}", inputs.dir.display())))?;
        policy.save(dir)?;
        Ok(serde_json::json!({
            "format": self.format,
            "architecture": policy.config.architecture(),
            "parameters": policy.config.n_params(),
        }))
    }
}

pub type Args = StageArgs<Inputs, Config, NoFlags, NoFlags>;

pub fn cli(args: Args) -> Result<ExitCode> {
    let m = stage::run_cli(&args.config, &Common::default(), &args.inputs, &args.out)
        .context("ember import failed")?;
    println!(
        "import: {} parameters → {}",
        m.metrics["parameters"],
        args.out.path.display()
    );
    Ok(ExitCode::SUCCESS)
}
